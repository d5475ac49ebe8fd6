"""`bench`: time your kernel beside the baselines and the project's backends, on the same cases.

    int4-harness bench --linear mine.py:linear --grid smoke          # one case per operation
    int4-harness bench --linear tinygemm.py:linear --dtypes bf16 --group-sizes 32,64,128,256 --report reports
    int4-harness bench --dequantizer mypkg.ops:dequantize --grid cpu --bench-dir reports/bench

The grid is built in the TARGET's domain, given by the same domain flags as verify (harness.bench.domain_grid):
an axis the grid leaves at its default takes the domain's value where the default lies outside (--dtypes bf16
times bf16), and a grid point outside the domain is not run (counted, with the flag that left it out).
A TARGET with callable `prepare` and `apply` is two-phase (harness.bench.two_phase): its prepare runs once per
case, timed on its own (prepare_s), and apply alone is timed.
Each benchmark first checks the candidate on its case (harness.verify.properties, in this process)
and refuses to time it if it fails; then it is timed (harness.bench.timing) beside `dense`,
`materialize` and the project's backends that run here, and one row per case is appended to
<bench-dir>/<run-id>.parquet (--report DIR: DIR/bench/, where `int4-harness report --reports DIR` reads) with
backend = the TARGET. At the end a table compares the TARGET's median with every other backend's, per case.
A timing whose result differs from an untimed call's, or that beats the bytes-moved floor, is written
with its flag (harness.bench.honesty) and printed as the flag, never as a time. A loaded machine (load average
above one per core, harness.bench.load) is warned of at the start and the end and recorded in every row.
Exit status: 0 every benchmark timed, 1 the candidate was refused or flagged on some case, 2 usage error.
"""
import math
import os
import sys
from dataclasses import fields, replace
from functools import partial
from pathlib import Path

from int4_lora_harness.progress import bar, say
from int4_lora_harness.verify import cli as verify_cli

OPERATIONS = {"dequantizer": ("dequantize",), "linear": ("gemm", "gemm_lora")}
BENCH_FOLDER = "bench"  # under a reports folder: where `int4-harness report --reports DIR` reads benchmark runs


def add_arguments(b):
    """The `bench` subcommand's flags: the TARGET, the grid, where rows go, and verify's domain flags."""
    target = b.add_mutually_exclusive_group(required=True)
    target.add_argument("--linear", metavar="TARGET",
                        help="a linear (docs/contract.md), or a two-phase one: pkg.module:name or file.py:name")
    target.add_argument("--dequantizer", metavar="TARGET",
                        help="a dequantizer, or a two-phase one: pkg.module:name or file.py:name")
    b.add_argument("--grid", default="smoke", help="a grid of harness.bench.grids: smoke, cpu or gpu")
    folder = b.add_mutually_exclusive_group()
    folder.add_argument("--report", metavar="DIR",
                        help=f"reports folder: rows go to DIR/{BENCH_FOLDER}/<run-id>.parquet, where "
                             "`int4-harness report --reports DIR` reads them")
    folder.add_argument("--bench-dir", help="folder for <run-id>.parquet (default reports/bench)")
    b.add_argument("--no-project-backends", action="store_true", help="time only the TARGET and the baselines")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="time each benchmark as a Ray task (the TARGET imported on the worker), on a local Ray "
                        "instance or the cluster at ADDRESS; needs pip install 'int4-lora-harness[ray]'")
    verify_cli.add_domain_arguments(b)
    # a grid names its own ranks and adapter counts: by default none is left out (verify's defaults bound a fuzz)
    b.set_defaults(max_rank=verify_cli.MAX_RANK, max_loras=verify_cli.MAX_LORAS)
    return b


def narrowing(domain):
    """The domain's fields that differ from bench's default (verify's full domain with every rank and adapter count
    a grid names), as 'name=value' strings: [] without domain flags."""
    from int4_lora_harness.verify.domain import FULL
    default = replace(FULL, max_rank=verify_cli.MAX_RANK, max_loras=verify_cli.MAX_LORAS)
    return [f"{f.name}={getattr(domain, f.name)!r}" for f in fields(domain)
            if getattr(domain, f.name) != getattr(default, f.name)]


def output_folder(args):
    """The folder the run's parquet goes to; ValueError naming the flag when it is a file or cannot be made."""
    flag, folder = (("--report", Path(args.report) / BENCH_FOLDER) if args.report else
                    ("--bench-dir", Path(args.bench_dir or f"reports/{BENCH_FOLDER}")))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"{flag}: cannot make the folder {folder}: {error.strerror or error}") from None
    return folder


def benchmarks(grid, domain, label, contract, project):
    """((backend, operation, point) to run: the TARGET's cases, each also for the baselines and project backends,
    all inside `domain`; {why: number of the grid's cases outside it}). ValueError when no case is inside."""
    from int4_lora_harness.bench import domain_grid, grids
    others = [b for b in grid["backends"] if b in ("dense", "materialize") or (project and b not in ("reference",))]
    fitted = domain_grid.fit(dict(grid, backends=tuple(others) or ("dense",)), domain)
    known = [(b, op, p) for b, op, p in grids.benchmarks(fitted) if op in OPERATIONS[contract]]
    inside, outside = domain_grid.split(known, domain)
    if not inside:
        raise ValueError(f"no case of the grid lies inside the domain ({'; '.join(narrowing(domain))}): "
                         + "; ".join(f"{n} outside by {why}" for why, n in outside.items()))
    points = {(op, tuple(p.items())): p for _, op, p in inside}
    mine = [(label, op, p) for (op, _), p in points.items()]
    return mine + [(b, op, p) for b, op, p in inside if b in others], outside


def setup(args):
    """(label, target, grid, device, domain, todo, outside, folder) of a run; UsageError or ValueError
    naming the flag for what is wrong."""
    from int4_lora_harness.bench import grids, two_phase
    import torch
    contract = "linear" if args.linear else "dequantizer"
    label = args.linear or args.dequantizer
    domain = verify_cli.parse_domain(args)
    grid = grids.select(args.grid)
    device = grids.device_for(grid, args.grid, torch.cuda.is_available())
    target = two_phase.resolve(label, contract)
    todo, outside = benchmarks(grid, domain, label, contract, not args.no_project_backends)
    return label, target, grid, device, domain, todo, outside, output_folder(args)


def run(args):
    from int4_lora_harness.bench import closing, load, runner, store
    from int4_lora_harness.verify.record import new_run_id
    from int4_lora_harness.verify.targets import UsageError
    try:
        label, target, grid, device, domain, todo, outside, folder = setup(args)
        if args.ray is not None:
            from int4_lora_harness.verify.ray_jobs import require_ray
            require_ray()
    except (ValueError, UsageError) as error:
        print(f"usage error: {error}", file=sys.stderr)
        return 2
    run_id = new_run_id()
    shared = runner.run_fields(run_id, args.grid, device, domain="; ".join(narrowing(domain)) or "full")
    say_domain(domain, outside)
    say_load(shared["load_per_core_start"], "start")
    path, rows, verdicts, results = folder / f"{run_id}.parquet", [], {}, []
    progress = bar(len(todo), f"bench {label}", not args.quiet)
    if args.ray is None:
        measured = (((b, o, p), partial(runner.measure, b, o, p, device, grid, verdicts, targets={label: target}))
                    for b, o, p in todo)
    else:
        measured = measured_on_ray(todo, label, "linear" if args.linear else "dequantizer", device, grid, args.ray)
    for (backend, operation, point), measure in measured:
        results.append(one_benchmark(backend, operation, point, measure, shared, rows, path))
        progress.update(1)
    progress.close()
    end = load.per_core()
    if rows:  # the load at the end, in every row of the run
        rows[:] = [dict(row, load_per_core_end=end) for row in rows]
        store.write_rows(rows, path)
    for line in closing.lines(results, label):
        say(line)
    say_load(end, "end")
    refused = [r for r in results if r["status"].startswith("REFUSED")]
    flagged = [r for r in results if r["status"].startswith("FLAGGED")]
    say(f"{len(rows)} rows -> {path}" + (f"; {len(refused)} benchmark(s) refused" if refused else "")
        + (f"; {len(flagged)} timing(s) flagged" if flagged else ""))
    return 1 if any(r["backend"] == label for r in refused + flagged) else 0


def one_benchmark(backend, operation, point, measure, shared, rows, path):
    """One benchmark measured, stored (its row appended to `rows` and the file) and said: the closing table's
    result, dict(backend, operation, point, row (None unless its timing stands), status)."""
    from int4_lora_harness.bench import grids, honesty, runner, store
    case = grids.case_id(backend, operation, point)
    result = dict(backend=backend, operation=operation, point=point, row=None, status="")
    try:
        row = measure()  # runner.measure here, or its fields from a Ray task (measured_on_ray)
        row = store.with_rates(dict(shared, test_id=f"bench {case}", **row))
        store.append_row(rows, row, path)
        why = honesty.flag(row)
        result.update(row=None if why else row, status="FLAGGED, not a result" if why else "")
        two_phase = not math.isnan(row["prepare_s"])  # NaN: a one-call backend
        say(f"  {case}: " + (f"FLAGGED, not a result: {why}" if why else
                             f"{row['median_s'] * 1e3:.3f} ms (IQR {row['iqr_s'] * 1e3:.3f})"
                             + (f"; prepare {row['prepare_s'] * 1e3:.3f} ms, once" if two_phase else "")))
    except runner.Skipped as reason:
        result["status"] = "skipped"
        say(f"  skipped {case}: {reason}")
    except runner.Refused as reason:
        result["status"] = "REFUSED (fails its check)"
        say(f"  REFUSED {case}: {reason}")
    return result


def say_domain(domain, outside):
    """Say the domain the grid was built in and how many of its cases lay outside it, by the flag."""
    if narrowing(domain):
        say(f"grid built in the domain: {'; '.join(narrowing(domain))}")
    for why, count in outside.items():
        say(f"  {count} case(s) of the grid outside the domain, not run: {why}")


def say_load(reading, when):
    from int4_lora_harness.bench import load
    line = load.warning(reading, when)
    if line:
        say(line)


def measured_on_ray(todo, label, contract, device, grid, address):
    """((backend, operation, point), measure) as each benchmark of `todo` lands from its Ray task; measure() gives
    its row fields (measured on the worker) or raises runner.Skipped / runner.Refused."""
    import ray

    from int4_lora_harness.verify.ray_jobs import run_tasks
    tasks = [(item, (item, label, contract, device, grid, os.getcwd())) for item in todo]
    for item, ref in run_tasks(measure_task, tasks, address, int(device == "cuda")):
        yield item, partial(_outcome, *ray.get(ref))


def measure_task(item, label, contract, device, grid, cwd):
    """One benchmark on a Ray worker, the TARGET imported there: ('row', fields), ('skipped', why) or
    ('refused', why)."""
    from int4_lora_harness.bench import devices, runner, two_phase
    if os.path.isdir(cwd):
        os.chdir(cwd)  # a TARGET file or module of the driver's folder is found where the driver found it
    target = two_phase.resolve(label, contract)
    try:
        row = runner.measure(*item, device, grid, {}, targets={label: target})
    except runner.Skipped as why:
        return "skipped", str(why)
    except runner.Refused as why:
        return "refused", str(why)
    return "row", dict(row, **devices.describe(device))  # the worker's host, device and peaks, not the driver's


def _outcome(kind, value):
    """A Ray task's outcome as runner.measure gives it: the row fields, or its Skipped or Refused raised."""
    from int4_lora_harness.bench import runner
    if kind == "row":
        return value
    raise {"skipped": runner.Skipped, "refused": runner.Refused}[kind](value)
