"""`bench`: time your kernel beside the baselines and the project's backends, on the same cases.

    int4-harness bench --linear mine.py:linear --grid smoke          # one case per operation
    int4-harness bench --dequantizer mypkg.ops:dequantize --grid cpu --bench-dir reports/bench

Each benchmark first checks the candidate on its case (harness.verify.properties, in this process)
and refuses to time it if it fails; then it is timed (harness.bench.timing) beside `dense`,
`materialize` and the project's backends that run here, and one row per case is appended to
<bench-dir>/<run-id>.parquet with backend = the TARGET. `int4-harness report` shows the run.
A timing whose result differs from an untimed call's, or that beats the bytes-moved floor, is written
with its flag (harness.bench.honesty) and printed as the flag, never as a time.
Exit status: 0 every benchmark timed, 1 the candidate was refused or flagged on some case, 2 usage error.
"""
import os
import sys
from functools import partial

from int4_lora_harness.progress import bar, say

OPERATIONS = {"dequantizer": ("dequantize",), "linear": ("gemm", "gemm_lora")}


def add_arguments(b):
    """The `bench` subcommand's flags."""
    target = b.add_mutually_exclusive_group(required=True)
    target.add_argument("--linear", metavar="TARGET", help="a linear (docs/contract.md): pkg.module:function or file.py:function")
    target.add_argument("--dequantizer", metavar="TARGET", help="a dequantizer: pkg.module:function or file.py:function")
    b.add_argument("--grid", default="smoke", help="a grid of harness.bench.grids: smoke, cpu or gpu")
    b.add_argument("--bench-dir", default="reports/bench", help="folder for <run-id>.parquet")
    b.add_argument("--no-project-backends", action="store_true", help="time only the TARGET and the baselines")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="time each benchmark as a Ray task (the TARGET imported on the worker), on a local Ray "
                        "instance or the cluster at ADDRESS; needs pip install 'int4-lora-harness[ray]'")
    return b


def benchmarks(grid, label, contract, project):
    """(backend, operation, point) to run: the TARGET's cases, each also for the baselines and project backends."""
    from int4_lora_harness.bench import grids
    others = [b for b in grid["backends"] if b in ("dense", "materialize") or (project and b not in ("reference",))]
    known = grids.benchmarks(dict(grid, backends=tuple(others) or ("dense",)))
    points = {(op, tuple(p.items())): p for _, op, p in known if op in OPERATIONS[contract]}
    mine = [(label, op, p) for (op, _), p in points.items()]
    return mine + [(b, op, p) for b, op, p in known if op in OPERATIONS[contract] and b in others]


def run(args):
    from int4_lora_harness.bench import grids, honesty, runner
    from int4_lora_harness.bench import store
    from int4_lora_harness.verify.cases import CONTRACT_PARAMETERS
    from int4_lora_harness.verify.record import new_run_id
    from int4_lora_harness.verify.targets import UsageError, load_target
    import torch
    contract = "linear" if args.linear else "dequantizer"
    label = args.linear or args.dequantizer
    try:
        grid = grids.select(args.grid)
        device = grids.device_for(grid, args.grid, torch.cuda.is_available())
        function = load_target(label, CONTRACT_PARAMETERS[contract], contract)
        if args.ray is not None:
            from int4_lora_harness.verify.ray_jobs import require_ray
            require_ray()
    except (ValueError, UsageError) as error:
        print(f"usage error: {error}", file=sys.stderr)
        return 2
    run_id = new_run_id()
    fields = runner.run_fields(run_id, args.grid, device)
    path, rows, verdicts, refused, flagged = f"{args.bench_dir}/{run_id}.parquet", [], {}, [], []
    todo = benchmarks(grid, label, contract, not args.no_project_backends)
    progress = bar(len(todo), f"bench {label}", not args.quiet)
    if args.ray is None:
        measured = (((b, o, p), partial(runner.measure, b, o, p, device, grid, verdicts, targets={label: function}))
                    for b, o, p in todo)
    else:
        measured = measured_on_ray(todo, label, contract, device, grid, run_id, args)
    for (backend, operation, point), measure in measured:
        case = grids.case_id(backend, operation, point)
        try:
            row = measure()
            row = store.with_rates(dict(fields, test_id=f"bench {case}", **row))
            store.append_row(rows, row, path)
            why = honesty.flag(row)
            flagged += [backend] if why else []
            say(f"  {case}: " + (f"FLAGGED, not a result: {why}" if why else
                                 f"{row['median_s'] * 1e3:.3f} ms (IQR {row['iqr_s'] * 1e3:.3f})"))
        except runner.Skipped as reason:
            say(f"  skipped {case}: {reason}")
        except runner.Refused as reason:
            refused.append(str(reason))
            say(f"  REFUSED {case}: {reason}")
        progress.update(1)
    progress.close()
    say(f"{len(rows)} rows -> {path}" + (f"; {len(refused)} benchmark(s) refused" if refused else "")
        + (f"; {len(flagged)} timing(s) flagged" if flagged else ""))
    return 1 if any(label in r for r in refused) or label in flagged else 0


def measured_on_ray(todo, label, contract, device, grid, run_id, args):
    """((backend, operation, point), measure) as each benchmark of `todo` lands from its Ray task; measure() gives
    its row fields (with the worker's host, device and peaks) or raises runner.Skipped / runner.Refused."""
    import ray

    from int4_lora_harness.verify.ray_jobs import run_tasks
    tasks = [(item, (item, label, contract, device, grid, args.grid, run_id, os.getcwd())) for item in todo]
    for item, ref in run_tasks(measure_task, tasks, args.ray, int(device == "cuda")):
        yield item, partial(_outcome, *ray.get(ref))


def measure_task(item, label, contract, device, grid, grid_name, run_id, cwd):
    """One benchmark on a Ray worker, the TARGET imported there: ('row', fields), ('skipped', why) or
    ('refused', why)."""
    from int4_lora_harness.bench import runner
    from int4_lora_harness.verify.cases import CONTRACT_PARAMETERS
    from int4_lora_harness.verify.targets import load_target
    if os.path.isdir(cwd):
        os.chdir(cwd)  # a TARGET file or module of the driver's folder is found where the driver found it
    function = load_target(label, CONTRACT_PARAMETERS[contract], contract)
    try:
        row = runner.measure(*item, device, grid, {}, targets={label: function})
    except runner.Skipped as why:
        return "skipped", str(why)
    except runner.Refused as why:
        return "refused", str(why)
    return "row", dict(runner.run_fields(run_id, grid_name, device), **row)


def _outcome(kind, value):
    """A Ray task's outcome as runner.measure gives it: the row fields, or its Skipped or Refused raised."""
    from int4_lora_harness.bench import runner
    if kind == "row":
        return value
    raise {"skipped": runner.Skipped, "refused": runner.Refused}[kind](value)
