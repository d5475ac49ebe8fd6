"""Verdicts under load: the power table's candidates and every backend, judged while 4x as many CPU-bound
processes as cores run. Correct candidates must PASS, planted bugs FAIL as wrong values (not hung, slow or
crashed): the verdict may not depend on the machine's load (harness.verify.limits).

    PYTHONPATH=tests python benchmarks/stress.py [--burners N] [--large-tier] [--only NAME ...]

Not a test (it takes minutes and measures nothing in seconds): a check to run before a release, and its output
in the closing note of any change to the executor or the limits. The burners are `python -c "while True: pass"`
processes, each ended by its own PID when the check ends, however it ends. Exit status 0 when every row is as
expected.
"""
import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from power import candidates, run_one  # noqa: E402  (benchmarks/power.py: one list of planted candidates)


def wide_only():
    """Names of the planted defects that exist only past 2**15 rows (planted.bigpath.wide): the large tier's LM head
    alone reaches them (tests/test_bigpath.py), so their rows run with it."""
    from planted.bigpath import BIG_PATH_BUGS, wide
    return {name for name, (_, _, on_its_path) in BIG_PATH_BUGS.items() if on_its_path is wide}


def rows_to_run():
    """[(name, contract, target, expected, env)]: the power table's candidates and each backend of the registry
    that runs on a CPU (Triton's under its interpreter), both contracts."""
    from int4_lora_harness.kernels.registry import BACKENDS
    rows = [(*row, {}) for row in candidates() if row[0] != "torch_path"]
    for name, backend in BACKENDS.items():
        if backend.cuda_only:
            continue
        env = {"TRITON_INTERPRET": "1"} if backend.cpu_needs_interpreter else {}
        rows += [(name, c, f"{backend.module}:{f}", "pass", env) for c, f in (("dequantizer", "dequantize"),
                                                                               ("linear", "linear"))]
    return rows


def as_expected(row):
    """A correct candidate passed; a planted bug failed as wrong values (its kind 'wrong')."""
    return row["passed"] if row["expected"] == "pass" else (not row["passed"] and row.get("kind") == "wrong")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burners", type=int, default=4 * os.cpu_count(),
                        help="CPU-bound processes (default 4x cores; 0: the load is started outside, e.g. beside a "
                             "fresh clone's `tox -e test`)")
    parser.add_argument("--large-tier", action="store_true", help="include the large tier and probes (slow)")
    parser.add_argument("--only", nargs="*", help="candidate names to run (default: all)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a TERM (or a background job's INT) still ends the burners
    signal.signal(signal.SIGINT, signal.default_int_handler)  # `cmd &` in a script starts with SIGINT ignored
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.burners)]
    print(f"{len(burners)} burners running: pids {' '.join(str(b.pid) for b in burners)}; load "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    rows, todo = [], rows_to_run()
    wide = wide_only()  # after rows_to_run: power.candidates puts tests/ on sys.path
    try:
        for name, contract, target, expected, env in todo:
            if args.only and name not in args.only:
                continue
            extra = [] if args.large_tier or name in wide else ["--no-large-tier"]
            if env.get("TRITON_INTERPRET"):
                extra = ["--no-large-tier"]  # the interpreter runs no layer shapes (harness.verify.main)
            row = run_one(name, contract, target, expected, "ci", extra, env)
            row["as_expected"] = as_expected(row)
            rows.append(row)
            print(f"{'ok ' if row['as_expected'] else 'BAD'} {name} [{contract}] expected {expected}: exit "
                  f"{row['exit_status']}, {'PASS' if row['passed'] else 'FAIL (' + str(row.get('kind')) + ')'}, "
                  f"{row['seconds']} s", flush=True)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
        print(f"burners ended: {len(burners)} killed by pid", flush=True)
    bad = [r for r in rows if not r["as_expected"]]
    print(f"stress: {len(rows) - len(bad)} as expected, {len(bad)} not, with {len(burners)} burners of its own on "
          f"{os.cpu_count()} cores; load {os.getloadavg()[0]:.1f} at the end")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
