"""`report`: write one HTML page from the verify runs and benchmark runs under a reports folder.

The page module (matplotlib, jinja2, pandas) is imported only when the command runs.
"""
import sys

REGRESSION_THRESHOLD = 0.10  # a case 10 % slower than in the older run is a regression


def add_arguments(parser):
    """The `report` subcommand's flags."""
    parser.add_argument("--reports", default="reports", help="folder holding verify.json and bench/*.parquet")
    parser.add_argument("--out", default=None, help="where to write the page (default: REPORTS/index.html)")
    parser.add_argument("--run", default=None, help="benchmark run shown in the performance section (default: latest)")
    parser.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"), default=(None, None),
                        help="two benchmark runs to compare, older first (default: the latest two on one device)")
    parser.add_argument("--threshold", type=float, default=REGRESSION_THRESHOLD,
                        help="a case slower by more than this fraction is flagged as a regression (default 0.10)")
    parser.add_argument("--no-error-samples", action="store_true",
                        help="skip running the backends for the numerical-error histograms")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="where the backends run for the numerical-error histograms")
    return parser



def run(args):
    """Write the page and return 0 (missing or corrupt inputs are named in the page); 2 for a run id
    given on the command line that no benchmark run has, with a one-line message."""
    from int4_lora_harness.report.page import UnknownRun, build_report
    try:
        out = build_report(args.reports, args.out, run=args.run, run_a=args.compare[0], run_b=args.compare[1],
                           threshold=args.threshold, errors=not args.no_error_samples, device=args.device)
    except UnknownRun as error:
        print(f"usage error: {error}", file=sys.stderr)
        return 2
    print(f"report written to {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0
