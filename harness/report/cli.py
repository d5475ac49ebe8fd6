"""`report`: write one HTML page from the verify runs, benchmark runs and real-weights table under a reports folder.

The page modules (matplotlib, jinja2, pandas) are imported only when the command runs. The page only
reads files: it never runs a kernel.
"""
import sys

REGRESSION_THRESHOLD = 0.10  # a case 10 % slower than in the older run is worth a flag (report/comparison.py)


def add_arguments(parser):
    """The `report` subcommand's flags."""
    parser.add_argument("--reports", nargs="+", default=["reports"], metavar="DIR",
                        help="one or more folders, each holding verify/*.json (or verify.json), bench/*.parquet and "
                             "real_weights.json (one per `verify --report DIR` run; default: reports)")
    parser.add_argument("--out", default=None, help="where to write the page (default: the first DIR/index.html)")
    parser.add_argument("--run", default=None, help="benchmark run shown in the performance section (default: latest)")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), default=(None, None),
                        help="two benchmark runs to compare, older first, each a run id or a TARGET (its newest "
                             "run), two different TARGETs included (default: the newest two runs of the same "
                             "TARGETs on one device)")
    parser.add_argument("--threshold", type=float, default=REGRESSION_THRESHOLD,
                        help="a case slower by more than this fraction, beyond the runs' noise, is a regression "
                             "(default 0.10)")
    parser.add_argument("--performance", dest="performance", action="store_true", default=None,
                        help="show the performance, memory and comparison sections even without benchmark runs "
                             "(default: only when there are some)")
    parser.add_argument("--no-performance", dest="performance", action="store_false",
                        help="leave the performance, memory and comparison sections out")
    parser.add_argument("--real-weights", default=None,
                        help="the file of `real-weights` (default: REPORTS/real_weights.json)")
    return parser


def run(args):
    """Write the page and return 0 (missing or broken inputs are named in the page); 2 for a run id or TARGET
    given on the command line that no benchmark run has, or a threshold that is not a positive fraction."""
    if not args.threshold > 0:
        print(f"usage error: --threshold must be a positive fraction (0.10 is 10 %), got {args.threshold}",
              file=sys.stderr)
        return 2
    from int4_lora_harness.report.page import UnknownRun, build_report
    try:
        out = build_report(args.reports, args.out, run=args.run, run_a=args.compare[0], run_b=args.compare[1],
                           threshold=args.threshold, want_performance=args.performance,
                           real_weights=args.real_weights)
    except UnknownRun as error:
        print(f"usage error: {error}", file=sys.stderr)
        return 2
    print(f"report written to {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0
