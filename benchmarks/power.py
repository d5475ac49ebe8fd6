"""The power table: each planted defect x where verify kills it, and how much of the bound correct designs use.

    PYTHONPATH=tests python benchmarks/power.py [--profile ci] [--out reports/power.json] [--only NAME ...]

Runs `int4-verify` (the given profile, the large tier and the probes included) on every planted defect of
tests/planted (bugs.py, large.py, bigpath.py) and every correct variant (bugs.py, unfused.py, and the project's torch
path), one at a time, and records for each: the exit status, the seconds, the property that failed, and the
smallest case that showed it: the fuzzer's shrunk case (its shapes), or the explicit example (coverage case,
large-tier shape or probe) that first failed. For a correct candidate: the largest error / allowed its
cases used, per group of cases. The table is written as JSON (the report renders it) and as markdown.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Candidates that cheat the properties (tests/planted/hostile.py): each must be caught by the property named.
HOSTILE = [("caches_by_scales_id", "dequantizer"), ("returns_one_buffer", "dequantizer"),
           ("subclass_shows_other_data", "dequantizer"), ("nondeterministic", "dequantizer"),
           ("caches_linear_by_lora_b_id", "linear")]


def candidates():
    """[(name, contract, target, expected 'fail' | 'pass')] from tests/planted and the torch path."""
    sys.path.insert(0, str(ROOT / "tests"))
    from planted.bugs import CORRECT_DEQUANTIZERS, CORRECT_LINEARS, DEQUANTIZER_BUGS, LINEAR_BUGS
    from planted.bigpath import BIG_PATH_BUGS
    from planted.large import LARGE_SHAPE_BUGS
    from planted.unfused import UNFUSED_LINEARS
    rows = [(n, "dequantizer", f"planted.bugs:{n}", "fail") for n in DEQUANTIZER_BUGS]
    rows += [(n, "linear", f"planted.bugs:{n}", "fail") for n in LINEAR_BUGS]
    rows += [(n, "linear", f"planted.large:{n}", "fail") for n in LARGE_SHAPE_BUGS]
    rows += [(n, contract, f"planted.bigpath:{n}", "fail") for n, (contract, _, _) in BIG_PATH_BUGS.items()]
    rows += [(n, c, f"planted.hostile:{n}", "fail") for n, c in HOSTILE]
    rows += [(n, "dequantizer", f"planted.bugs:{n}", "pass") for n in CORRECT_DEQUANTIZERS]
    rows += [(n, "linear", f"planted.bugs:{n}", "pass") for n in CORRECT_LINEARS]
    rows += [(n, "linear", f"planted.unfused:{n}", "pass") for n in UNFUSED_LINEARS]
    rows += [("torch_path", c, f"int4_lora_harness.kernels.torch_path:{f}", "pass")
             for c, f in (("dequantizer", "dequantize"), ("linear", "linear"))]
    return rows


def killed_where(result):
    """(where, shape) of a failing result: 'fuzz' and the minimal case's shapes, or the explicit example."""
    failed = [e for e in result.get("explicit", []) if not e["passed"]]
    if failed:
        return failed[0]["group"], failed[0]["shape"]
    case = (result.get("failure") or {}).get("case") or {}
    shape = f"out {case.get('out_features')} x in {case.get('in_features')}"
    if "M" in case:
        shape += f", M {case['M']}"
    return "fuzz", shape


def bound_used(result):
    """{group: largest error / allowed} over the cases of a passing result (fuzz: the rest)."""
    used = {}
    for e in result.get("explicit", []):
        if e.get("max_ratio") is not None:
            used[e["group"]] = max(used.get(e["group"], 0.0), e["max_ratio"])
    used["all"] = result.get("max_ratio")
    return used


def run_one(name, contract, target, expected, profile, extra=(), env=None):
    """The row of one `int4-verify` run (in a process of its own, flags `extra`, environment changes `env`)."""
    with tempfile.TemporaryDirectory() as report:
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "int4_lora_harness", "verify", f"--{contract}", target, "--profile",
                              profile, "--report", report, "--quiet", *extra], cwd=ROOT, capture_output=True, text=True,
                             env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "tests"), **(env or {})})
        seconds = time.perf_counter() - start
        result = json.loads((Path(report) / "verify.json").read_text())["results"][0]
    row = dict(name=name, contract=contract, target=target, expected=expected, exit_status=run.returncode,
               seconds=round(seconds, 1), passed=result["passed"])
    if not result["passed"]:
        where, shape = killed_where(result)
        failure = result.get("failure") or {}
        row.update(killed_by=where, shape=shape, kind=failure.get("kind"), failed=failure.get("failed"))
    else:
        row.update(bound_used=bound_used(result), designs=list(result.get("designs", {})))
    return row


def markdown(rows):
    lines = ["| candidate | contract | verdict | killed by | smallest case | property | seconds |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if r["expected"] == "fail":
            verdict = "killed" if not r["passed"] else "**MISSED**"
            lines.append(f"| {r['name']} | {r['contract']} | {verdict} | {r.get('killed_by', '')} | "
                         f"{r.get('shape', '')} | {', '.join(r.get('failed') or [])} | {r['seconds']} |")
    lines += ["", "| correct candidate | contract | verdict | largest error / allowed (all; large tier; probes) | "
                  "designs | seconds |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if r["expected"] == "pass":
            used = r.get("bound_used") or {}
            fmt = lambda v: "–" if v is None else f"{v:.3g}"  # noqa: E731
            lines.append(f"| {r['name']} | {r['contract']} | {'PASS' if r['passed'] else '**FALSE ALARM**'} | "
                         f"{fmt(used.get('all'))}; {fmt(used.get('large tier'))}; {fmt(used.get('probes'))} | "
                         f"{'; '.join(r.get('designs') or [])} | {r['seconds']} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="ci", choices=["ci", "thorough"])
    parser.add_argument("--out", default=str(ROOT / "reports" / "power.json"))
    parser.add_argument("--only", nargs="*", help="candidate names to run (default: all)")
    args = parser.parse_args(argv)
    rows = []
    for name, contract, target, expected in candidates():
        if args.only and name not in args.only:
            continue
        rows.append(run_one(name, contract, target, expected, args.profile))
        print(json.dumps(rows[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(dict(profile=args.profile, rows=rows), indent=1))
    print(markdown(rows))
    missed = [r["name"] for r in rows if (r["expected"] == "fail") == r["passed"]]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
