"""One verify run: each candidate and contract judged (in parallel with --jobs), the verdict written throughout.

A candidate runs in a spawned child process (harness.verify.executor) unless --in-process; the
TARGET is imported only there. Whatever the candidate does (raise anything, exit, die, hang, leave
a thread running), the run ends with a verdict file and exit status 1, never with the candidate's.
"""
import concurrent.futures
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass

from int4_lora_harness.progress import bar, say
from int4_lora_harness.verify import limits, plan, record
from int4_lora_harness.verify.candidate_text import raised_at
from int4_lora_harness.verify.executor import CandidateFailure, ChildExecutor, TargetRefused
from int4_lora_harness.verify.in_process import InProcessExecutor
from int4_lora_harness.verify.limits import MAX_SLOWDOWN
from int4_lora_harness.verify.parts import SMALL, runs_small
from int4_lora_harness.verify.printing import print_summary, print_verdict
from int4_lora_harness.verify.properties import REPEATED, fitted
from int4_lora_harness.verify.targets import parameters, repro_target


@dataclass(frozen=True)
class Candidate:
    label: str  # what the verdict calls it: a backend name or the TARGET
    target: str  # 'pkg.module:function' or 'file.py:function'
    contract: str  # 'dequantizer' | 'linear'
    kind: str  # 'backend' (kernels.registry) | 'third-party'
    large_tier_skipped: str | None = None  # why the large tier and probes are not run, if they are not
    seed: int = 0
    part: str | None = None  # None: the whole plan; else one part of it (harness.verify.parts)


def open_executor(candidate, options):
    """The executor for `candidate`; TargetRefused for a usage error, CandidateFailure if importing ends it."""
    names = parameters(candidate.contract, options["layout"])
    if options["in_process"]:
        from int4_lora_harness.verify.targets import load_target, source_of
        function = load_target(candidate.target, names, candidate.contract)
        return InProcessExecutor(function, options["device"], options["timeout"], source_of(function))
    return ChildExecutor(candidate.target, names, candidate.contract, options["device"], options["timeout"],
                         options.get("max_slowdown", MAX_SLOWDOWN), options.get("sandbox", True))


def explicit_cases(candidate, options):
    """The explicit examples of harness.verify.plan for this candidate (large tier and probes unless skipped),
    fitted to a native layout; a probe whose values the layout would change is left out (its exactness is
    built from those values: harness.verify.properties.fitted). A part of the plan (candidate.part) holds its share:
    SMALL all but the large tier and probes, a large-tier shape's part those at that shape (harness.verify.parts)."""
    domain, seed, contract, layout = options["domain"], candidate.seed, candidate.contract, options["layout"]
    small, cases = runs_small(candidate), []
    if small:
        coverage = plan.coverage_cases(contract, domain, seed)
        cases = [(REPEATED, *coverage[0][1:])] + coverage  # its first case again, called 256 more times (REPEAT)
    if candidate.large_tier_skipped is None and candidate.part != SMALL:
        only = None if candidate.part is None else {candidate.part}
        cases += plan.large_tier_cases(contract, domain, seed, only=only)
        cases += plan.probe_cases(domain, seed, only=only) if contract == "linear" else []
    if small:
        cases += options["checkpoint"].get(contract, [])
    fitted_cases = [(group, name, fitted(case, layout)) for group, name, case in cases]
    return [(g, n, c) for g, n, c in fitted_cases if g != "probes" or c.expect != "tolerance"]


def verify_one(candidate, options, progress_enabled=True):
    """The result dict for one candidate and contract (harness.verify.record documents it)."""
    base = dict(candidate=candidate.label, target=candidate.target, kind=candidate.kind, contract=candidate.contract,
                device=options["device"], layout=options["layout"], seed=candidate.seed,
                domain=options["domain"].describe() or ["full"], accepted_designs=list(options["designs"]),
                large_tier_skipped=candidate.large_tier_skipped)
    try:
        executor = open_executor(candidate, options)
    except CandidateFailure as failure:  # it ended the process while being imported
        return dict(base, **ended_at_import(failure))
    try:
        result, failure = judge_with(executor, candidate, options, progress_enabled)
    finally:  # an interrupt included: the candidate's processes never outlive the judgement
        executor.close()
    result = dict(base, source=executor.source, sandbox=executor.sandbox, exit_note=executor.exit_note, **result)
    if failure is not None and failure.get("case") is not None:
        result["repro"] = write_repro(candidate, failure, options)
    return result


def judge_with(executor, candidate, options, progress_enabled):
    """(result dict, failure | None) of the candidate behind `executor` (harness.verify.engine)."""
    from int4_lora_harness.verify.engine import batch_invariance, verify_candidate
    begun = time.perf_counter()
    explicit = explicit_cases(candidate, options)
    cases_s = time.perf_counter() - begun
    searched = runs_small(candidate)  # a part of the large tier runs its explicit examples only
    examples = options["examples"] if searched else 0
    progress = bar(examples + len(explicit), f"{candidate.label} [{candidate.contract}]",
                   progress_enabled and options["progress"])
    run_options = dict(seed=candidate.seed, examples=examples, domain=options["domain"],
                       designs=options["designs"], layout=options["layout"], cases_s=cases_s,
                       shrink_budget=options.get("shrink_budget"), label=f"{candidate.label} [{candidate.contract}]")
    result, failure = verify_candidate(candidate.contract, executor, explicit, run_options, progress)
    progress.close()
    if result["passed"] and searched and candidate.contract == "linear" and options["layout"] == "canonical":
        try:
            result["batch_invariance"] = batch_invariance(executor, options["domain"], candidate.seed)
        except CandidateFailure as error:  # informational only: reported, never failed on
            result["batch_invariance"] = dict(invariant=None, error=f"the candidate {error.kind}: {error.message}")
    if failure is not None and failure["kind"] in ("raised", "crashed", "hung", "slow"):
        result["failure"]["output_tail"] = getattr(executor, "output_tail", list)()
    return result, failure


def ended_at_import(failure):
    return dict(passed=False, fuzzed_cases=0, properties=[], explicit=[], designs={}, samples=[], seconds=0.0,
                failure=dict(kind=failure.kind, message=failure.message, exception=failure.exception, case=None,
                             where=raised_at(failure.traceback, failure.message), values=None, failed=["imports"],
                             worst=None))


def write_repro(candidate, failure, options):
    from int4_lora_harness.verify.repro import write_repro as write
    try:
        return str(write(options["report"], repro_target(candidate.label, candidate.contract), candidate.contract,
                         failure["case"], options))
    except OSError as error:  # the verdict stands without it; say why there is none
        return f"not written: {error}"


def _job(candidate, options):
    """One job of a --jobs run, in a worker process: its own GPU where several are present."""
    from int4_lora_harness.verify import hypothesis_home
    hypothesis_home.use(options["report"])  # Hypothesis's files under --report, never the cwd
    gpus = options.get("gpus") or []
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus[os.getpid() % len(gpus)])
    return verify_one(candidate, options, progress_enabled=False)


def interrupt_on_sigterm():
    """SIGTERM and SIGINT raise KeyboardInterrupt here (harness.verify.limits.interrupt, which a lost one does not
    escape): the same clean-up (candidates killed, verdict 'interrupted') whichever signal ends the run."""
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, limits.interrupt)


def judge_all(candidates, options):
    """Results in the candidates' order, run `options['jobs']` at a time (concurrent.futures, spawn)."""
    if options["jobs"] <= 1 or len(candidates) <= 1:
        for candidate in candidates:
            result = verify_one(candidate, options)
            print_verdict(result)
            yield result
        return
    context = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(options["jobs"], mp_context=context, initializer=interrupt_on_sigterm)
    try:
        futures = [pool.submit(_job, c, options) for c in candidates]
        for future in futures:
            result = future.result()
            print_verdict(result)
            yield result
    except BaseException:  # an interrupt: the workers close their candidates (SIGTERM), then go
        stop_workers(pool)
        raise
    pool.shutdown()


def stop_workers(pool):
    """SIGTERM every worker of `pool` (each then kills its candidate's processes), SIGKILL any left after 5 s."""
    workers = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
    deadline = time.monotonic() + 5.0
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            worker.kill()


def judge_run(candidates, skipped, options, argv):
    """Judge every candidate, writing the verdict before, during and after; the exit status (0 or 1)."""
    return record_run(judge_all(candidates, options), skipped, options, argv, layout=options["layout"],
                      domain=options["domain"].describe() or ["full"], printed=True)


def run_layer(results, options, argv):
    """Like `judge_run`, for the --layer results (one per style), which harness.serving computes itself."""
    return record_run(results, [], options, argv, layout="canonical", domain=["full"], printed=False)


def record_run(results, skipped, options, argv, layout, domain, printed, **fields):
    """Write the verdict before, during and after `results` (an iterator that judges as it goes); an interrupt
    (SIGINT, or SIGTERM made one) writes 'interrupted' and propagates. The exit status: 0 all passed, else 1.
    printed: the iterator prints each verdict itself; fields: more run fields (--ray: `ray` and `tasks`, the
    names its results carry as `task`: an interrupted run then lists `finished_tasks` and `unfinished_tasks`)."""
    verdict = record.header(options["run_id"], argv, device=options["device"], profile=options["profile"],
                            examples=options["examples"], seed=options["seed"], seeds=options["seeds"],
                            designs=list(options["designs"]), layout=layout, domain=domain,
                            skipped=[dict(candidate=n, reason=r) for n, r in skipped], **fields)
    path = record.write(options["report"], verdict)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    if main_thread:
        interrupt_on_sigterm()
    try:
        for result in results:
            verdict["results"].append(result)
            record.write(options["report"], verdict)
            if not printed:
                print_verdict(result)
    except KeyboardInterrupt:
        getattr(results, "close", lambda: None)()  # a judge_all interrupted between results stops its workers now
        if "tasks" in verdict:
            finished = [r["task"] for r in verdict["results"]]
            verdict.update(finished_tasks=finished, unfinished_tasks=[t for t in verdict["tasks"] if t not in finished])
        record.write(options["report"], record.finish(verdict, "interrupted", 1))
        say(f"interrupted: the verdict so far is in {path}")
        raise  # the caller stops too (a pytest session under the plugin); the console script exits 1
    finally:
        if main_thread:
            for number, handler in previous.items():
                if handler is not None:  # None: set outside Python, which cannot be put back
                    signal.signal(number, handler)
        limits.forget_interrupts()
    status = 0 if verdict["results"] and all(r["passed"] for r in verdict["results"]) else 1
    record.write(options["report"], record.finish(verdict, "complete", status))
    print_summary(verdict["results"], skipped, path)
    return status


def usage_error_verdict(options, argv, message):
    """Write a verdict that says the run could not judge (the report folder is known to be writable)."""
    verdict = record.header(options["run_id"], argv, device=options.get("device"), error=message)
    record.write(options["report"], record.finish(verdict, "usage error", 2))

