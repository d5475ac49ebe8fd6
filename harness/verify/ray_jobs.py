"""--ray [ADDRESS]: a run's tasks spread over a Ray cluster, one verdict (or parquet) file written by the driver.

Without ADDRESS the driver (this process) starts a local Ray instance and shuts it down when the run ends; with
one it joins that cluster (`auto`, `HOST:6379`, `ray://HOST:10001`) and leaves it running. A process that has Ray
up already (a pytest session, a notebook) is used as it is. A verify task is one candidate x contract x seed: the
same function a --jobs worker runs (harness.verify.run._job), on a Ray worker, where the candidate runs in its own
sandboxed child process as it does everywhere. A long plan (one with the large tier) is several tasks, its parts
(harness.verify.parts: the search and small cases, then each large-tier shape), merged into the candidate's one
result once the last has landed. Only names travel: the TARGET as its module or file name, with the
driver's working folder, found on every node at the same path. A task returns plain dicts; the driver yields each
result as it lands, with its `task` and its `node`, and harness.verify.run.record_run writes the verdict.
On CUDA each task asks Ray for one GPU (Ray sets its CUDA_VISIBLE_DEVICES).

An interrupt (SIGINT, or SIGTERM made one) cancels every unfinished task: KeyboardInterrupt in each running one
(its worker then kills its candidate, as a --jobs worker does), then, after CANCEL_GRACE_S, their workers killed.
"""
import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

from int4_lora_harness.progress import say
from int4_lora_harness.verify.parts import merge, split
from int4_lora_harness.verify.targets import UsageError

EXTRA = "pip install 'int4-lora-harness[ray]'"
CANCEL_GRACE_S = 5.0  # a cancelled task's worker closes its candidate within this, or is killed
TOKEN_NOTICE = "ray._private.authentication.authentication_token_setup"  # Ray 2.5x's logger of it
OBJECT_STORE_BYTES = 256 * 2**20  # a local instance's: results are dicts of at most a few MB (Ray's least is 75 MB)
# Ray starts its workers 15 nice levels below the raylet (RAY_worker_niceness); on a busy machine a task at nice 15
# gets about 1% of a core next to a process at nice 0 (measured: 4 s of CPU in 5 min beside 8 busy processes on 2
# cores). A local instance's workers run at the driver's own niceness; a cluster's are reported (`niced_note`).
WORKER_NICENESS = 0


def require_ray():
    """The ray module; UsageError naming the extra to install when it is not importable."""
    try:
        import ray
    except ImportError as error:
        raise UsageError(f"--ray needs Ray, which cannot be imported here ({error}); install the extra: {EXTRA}") \
            from None
    return ray


def check_usage(args):
    """UsageError for flags that --ray cannot honour, or when Ray is not installed."""
    if args.jobs > 1:
        raise UsageError("--ray and --jobs N: Ray schedules the tasks itself; give one of them")
    if args.in_process:
        raise UsageError("--ray runs each candidate in its own process on a Ray worker; --in-process cannot")
    if args.layer:
        raise UsageError("--ray judges --linear, --dequantizer or the backends; --layer runs its own --tp ranks")
    require_ray()


def connect(address):
    """Ray ready in this process; True when this call started a local instance (then ours to shut down).

    address: '' for a local instance (start_local), else the cluster's address. Ray logs warnings only; the workers'
    output (the judge's plan lines, the candidate's output, escaped) stays in Ray's logs, not on this console; usage
    statistics are not sent unless RAY_USAGE_STATS_ENABLED says so; and SIGTERM keeps the handler it had (ray.init
    installs one that exits without a verdict)."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    previous = signal.getsignal(signal.SIGTERM)
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            start_local()
    except (ConnectionError, ValueError) as error:
        raise UsageError(f"--ray {address or '(local)'}: cannot start or join Ray: {error}") from None
    finally:
        if threading.current_thread() is threading.main_thread() and previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return not address


def start_local(**options):
    """A new local Ray instance in this process (ray.init `options` added, e.g. num_cpus): no dashboard, warnings
    only, the workers' output in Ray's logs, a small object store, workers at this process's niceness, and Ray's
    token authentication (its default) without its notice of it on every start."""
    import ray
    with _quiet(TOKEN_NOTICE):
        ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
                 object_store_memory=OBJECT_STORE_BYTES, _system_config={"worker_niceness": WORKER_NICENESS},
                 **options)


@contextlib.contextmanager
def _quiet(logger_name):
    """The logger `logger_name` at ERROR while the block runs."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def cluster_line(ray):
    """'ray: 2 nodes, 32 CPUs, 2 GPUs': what the tasks will be spread over."""
    resources = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    return (f"ray: {nodes} node{'s' * (nodes != 1)}, {resources.get('CPU', 0):g} CPUs, "
            f"{resources.get('GPU', 0):g} GPUs")


def node():
    """{id, host, nice}: the Ray node this worker runs on, and the worker's niceness."""
    import ray
    return dict(id=ray.get_runtime_context().get_node_id(), host=socket.gethostname(),
                nice=os.getpriority(os.PRIO_PROCESS, 0))


def niced_note(result, noted):
    """The line to print when `result`'s task ran at a higher niceness than this driver (a cluster started with
    Ray's default RAY_worker_niceness), once per host (`noted`: the hosts said already), else None."""
    where, own = result.get("node") or {}, os.getpriority(os.PRIO_PROCESS, 0)
    if where.get("nice", own) <= own or where.get("host") in noted:
        return None
    noted.add(where.get("host"))
    return (f"ray: note: the tasks on {where.get('host')} run at nice {where['nice']} (this process: {own}); on a "
            f"busy node they get a sliver of a core. Start the cluster with RAY_worker_niceness=0")


def task_name(candidate):
    """'dequantizer mykernel.py:dequantize seed 3' (and ' part llama3-8b.q_proj' for a part of its plan): one task
    of a verify run, unique within it."""
    part = f" part {candidate.part}" if candidate.part else ""
    return f"{candidate.contract} {candidate.label} seed {candidate.seed}{part}"


def judge_task(candidate, options, task, cwd):
    """On a Ray worker: the result of harness.verify.run._job with its `task` and `node`, and `repro_files`
    ({name: bytes}) of a repro written into a scratch folder here, for the driver to write into the report folder."""
    from int4_lora_harness.verify.run import _job
    if os.path.isdir(cwd):
        os.chdir(cwd)  # a TARGET file or module of the driver's folder is found where the driver found it
    scratch = tempfile.mkdtemp(prefix="int4-ray-repro-")
    try:
        result = _job(candidate, dict(options, report=scratch, gpus=[]))
        repro = Path(str(result.get("repro", "")))
        files = {p.name: p.read_bytes() for p in (repro, repro.with_suffix(".case")) if p.is_file()} \
            if repro.is_relative_to(scratch) else {}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    part = {"part": candidate.part} if candidate.part else {}
    return dict(result, task=task, node=node(), repro_files=files, **part)


def run_tasks(function, tasks, address, num_gpus=0):
    """Run `function(*args)` for each (key, args) of `tasks` on Ray (connected as `connect(address)` says), each with
    one CPU and `num_gpus`; yield (key, ref) as each lands (ray.get(ref) is its value). Whatever stops the caller
    early (an interrupt, an error, close()) cancels every unfinished task; a local instance started here is shut
    down once the last has landed or been cancelled."""
    ray = require_ray()
    started, pending = connect(address), {}
    try:
        say(cluster_line(ray))
        if num_gpus and not ray.cluster_resources().get("GPU"):
            raise UsageError("--device cuda --ray: the Ray cluster has no GPU (each task asks for one)")
        remote = ray.remote(function).options(num_cpus=1, num_gpus=num_gpus,
                                              max_retries=0)  # a lost task is said, never silently run again
        pending = {remote.remote(*args): key for key, args in tasks}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)  # signals are handled between waits
            for ref in done:
                yield pending.pop(ref), ref
    except BaseException:  # an interrupt, a usage error or a closed iterator: nothing of the run goes on
        cancel(ray, list(pending))
        raise
    finally:
        if started:
            ray.shutdown()


def judge_run(candidates, skipped, options, argv):
    """harness.verify.run.judge_run over Ray: the same verdict file and exit status, with the planned tasks."""
    from int4_lora_harness.verify.run import record_run
    return record_run(judged(candidates, options), skipped, options, argv, layout=options["layout"],
                      domain=options["domain"].describe() or ["full"], printed=True,
                      ray=options["ray"] or "local", tasks=[task_name(c) for c in candidates])


def judged(candidates, options):
    """Each candidate's result (harness.verify.record, with `task` and `node`), printed, in the order they land:
    a long plan's parts (harness.verify.parts) are tasks of their own, merged once the last of them has landed."""
    from int4_lora_harness.verify.printing import print_verdict
    ray = require_ray()
    parts = {c: split(c) for c in candidates}
    tasks = [(p, (p, options, task_name(p), os.getcwd())) for c in candidates for p in parts[c]]
    results, noted = {c: {} for c in candidates}, set()
    with contextlib.closing(run_tasks(judge_task, tasks, options["ray"], int(options["device"] == "cuda"))) as landing:
        for part, ref in landing:  # closed on the way out, however it ends: the tasks left are cancelled
            candidate = replace(part, part=None)
            results[candidate][part.part] = landed(ray, ref, part, options)
            note = niced_note(results[candidate][part.part], noted)
            if note:
                say(note)
            if len(results[candidate]) == len(parts[candidate]):
                result = whole(candidate, [results[candidate][p.part] for p in parts[candidate]], options)
                print_verdict(result)
                yield result


def whole(candidate, results, options):
    """The candidate's result from its parts' (one part: its own), the repro of the first failing part written here."""
    failed = next((r for r in results if not r["passed"]), None)
    for result in results:
        files = result.pop("repro_files", {})
        if result is failed and files:
            for name, data in files.items():
                (Path(options["report"]) / name).write_bytes(data)
            result["repro"] = str(Path(options["report"]) / Path(result["repro"]).name)
    return results[0] if len(results) == 1 else dict(merge(results), task=task_name(candidate))


def landed(ray, ref, candidate, options):
    """The result of a finished task (its repro's files in `repro_files`); a usage error raised as itself."""
    from int4_lora_harness.verify.executor import TargetRefused
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:  # raised by the harness on the worker
        if isinstance(error.cause, (TargetRefused, UsageError)):
            raise error.cause from None
        raise
    except ray.exceptions.RayError as error:  # its worker or its node died: it was never judged
        return lost(candidate, error, options)


def lost(candidate, error, options):
    """The result of a task whose Ray worker ended before it returned: failed, kind 'crashed', never judged."""
    from int4_lora_harness.verify.executor import CandidateFailure
    from int4_lora_harness.verify.run import ended_at_import
    message = f"the Ray worker judging it ended before it returned ({type(error).__name__}): not judged"
    result = ended_at_import(CandidateFailure("crashed", message))
    result["failure"]["failed"] = ["the judge (its Ray worker)"]
    return dict(candidate=candidate.label, target=candidate.target, kind=candidate.kind, contract=candidate.contract,
                device=options["device"], layout=options["layout"], seed=candidate.seed,
                domain=options["domain"].describe() or ["full"], accepted_designs=list(options["designs"]),
                large_tier_skipped=candidate.large_tier_skipped, **result, task=task_name(candidate), node=None)


def cancel(ray, refs):
    """Cancel `refs`: KeyboardInterrupt in each running task (its worker then kills its candidate), then the
    workers of those not ended within CANCEL_GRACE_S killed (the candidates die with them: harness.verify.sandbox)."""
    if not refs:
        return
    for ref in refs:
        ray.cancel(ref)
    _, left = ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_S)
    for ref in left:
        ray.cancel(ref, force=True)
