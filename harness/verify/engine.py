"""Judge one candidate on one contract: a Hypothesis search, then the explicit examples of harness.verify.plan.

`verify_candidate` runs the shared properties (harness.verify.properties) through an executor on
fuzzed cases until one fails (Hypothesis then shrinks it towards a minimal case, within --shrink-budget cases:
harness.verify.shrink) or the budget is spent,
then on the coverage floor, the large tier, the probes and any checkpoint layer, stopping at the
first failure. It returns a plain dict (harness.verify.record documents it): a verdict per property
with the cases it held on, the numbers judged by (largest error / allowed, worst element, a bounded
sample of per-element ulps and ratios), the designs that explained the results, the failure with its
kind (raised, hung, crashed, wrong), a hint naming the domain flag where the candidate refused part of the
domain (harness.verify.hints), and where the time went (candidate, judge, shrinking, the child process).
"""
import time
from collections import Counter, defaultdict

import numpy as np
from hypothesis import Phase, given, seed, settings
from hypothesis.reporting import with_reporter

from int4_lora_harness.verify.candidate_text import raised_at
from int4_lora_harness.verify.cases import DequantCase
from int4_lora_harness.verify.designs import words
from int4_lora_harness.verify.domain import FULL
from int4_lora_harness.verify.executor import CandidateFailure
from int4_lora_harness.verify.hints import domain_hint
from int4_lora_harness.verify.numerics import judged
from int4_lora_harness.verify.properties import EACH, PROPERTIES, QUICK, REPEAT, REPEATED, fitted, run_properties
from int4_lora_harness.verify.shrink import SHRINK_BUDGET, Shrinking
from int4_lora_harness.verify.strategies import QUIET, dequant_cases, linear_cases

STRATEGIES = {"dequantizer": dequant_cases, "linear": linear_cases}
SAMPLES_PER_GROUP = 2048  # per (dtype, granularity): what the report's histograms are drawn from


class Record:
    """What a verification accumulates across cases: counts, designs, samples, timings, the failure."""

    def __init__(self):
        self.counts = defaultdict(Counter)  # property -> Counter(passed / failed / not judged)
        self.designs = Counter()
        self.samples = defaultdict(lambda: dict(ulps=[], ratio=[], seen=0))
        self.rng = np.random.default_rng(0)
        self.explicit, self.candidate_s, self.judge_s, self.failure = [], 0.0, 0.0, None
        self.max_ratio, self.worst, self.last_run = 0.0, None, None
        self.shrink = None  # harness.verify.shrink.Shrinking.finish() of the search, once it failed
        self.shrinking = False  # the search failed: what runs now is timed as shrinking, not candidate and judge

    def add(self, run, case):
        for o in run.outcomes:
            self.counts[o.name]["passed" if o.passed else "failed" if o.passed is False else "not judged"] += 1
            if o.judgement is not None:
                self._judged(o.judgement, case)
        if not self.shrinking:  # a case run while shrinking is timed as shrinking (timing.shrink_s)
            self.candidate_s += run.candidate_s
            self.judge_s += run.judge_s

    def _judged(self, judgement, case):
        if judgement.passed:  # a design explained this case; a failing one is the failure's, not a design's
            self.designs[judgement.design] += 1
        if judgement.max_ratio >= self.max_ratio and judgement.worst is not None:
            self.max_ratio, self.worst = judgement.max_ratio, dict(judgement.worst, case=case.describe())
        key = (case.output_dtype if isinstance(case, DequantCase) else case.x_dtype, _granularity(case))
        group = self.samples[key]
        for ulps, ratio in zip(judgement.ulps, judgement.ratio):  # a reservoir: every case equally likely kept
            group["seen"] += 1
            if len(group["ulps"]) < SAMPLES_PER_GROUP:
                group["ulps"].append(float(ulps))
                group["ratio"].append(float(ratio))
            elif (j := int(self.rng.integers(group["seen"]))) < SAMPLES_PER_GROUP:
                group["ulps"][j], group["ratio"][j] = float(ulps), float(ratio)

    def property_lines(self):
        failed = {} if self.failure is None else {o.name: o for o in self.failure.get("outcomes") or []
                                                   if o.passed is False}
        lines = []
        for name in PROPERTIES:
            c = self.counts[name]
            status = property_status(name in failed, c["passed"], c["not judged"])
            lines.append(dict(name=name, status=status, passed=status == "passed", cases=c["passed"] + c["failed"],
                              not_judged=c["not judged"], message=failed[name].message if name in failed else ""))
        return lines


def property_status(failed, passed, not_judged):
    """A property's line status: 'failed' where it failed, else 'passed' where it held on some case, else 'not judged'
    where some case could not judge it, else 'not run'."""
    return "failed" if failed else "passed" if passed else "not judged" if not_judged else "not run"


def _granularity(case):
    from int4_lora_harness.reference.granularity import granularity
    w = case.weights
    return granularity(w.scales, *w.shape, w.group_size, "scales")


def attempt(executor, case, record, options):
    """Run every property on `case`; None if all hold, else the failure dict (also kept in `record`)."""
    if record.failure is not None and record.failure["kind"] in ("hung", "crashed"):
        return record.failure  # the candidate's process is gone: keep the case that ended it, no shrinking
    try:
        run = run_properties(executor, case, options["designs"], options["layout"], options["updates"],
                             options.get("repeat", 0))
    except CandidateFailure as failure:
        record.failure = dict(kind=failure.kind, message=failure.message, exception=failure.exception, case=case,
                              where=raised_at(failure.traceback, failure.message), outcomes=None)
        return record.failure
    record.last_run = run
    failed = [o for o in run.outcomes if o.passed is False]
    if failed:
        record.failure = dict(kind="wrong", message="; ".join(f"{o.name}: {o.message}" for o in failed),
                              exception=None, case=case, outcomes=run.outcomes, run=run)
        return record.failure
    record.add(run, case)
    return None


def search(executor, contract, record, options, progress):
    """The Hypothesis search; the smallest failing case found (or None) is in record.failure, how its shrinking
    went in record.shrink. report_multiple_bugs=False: the search stops at its first failure (Hypothesis would
    otherwise go on looking for others for up to 10 s of wall time, so the case found would depend on the
    machine's speed)."""
    budget = options.get("shrink_budget")
    shrinking = Shrinking(SHRINK_BUDGET if budget is None else budget)

    @seed(options["seed"])  # same seed, same cases, same verdict
    @settings(max_examples=options["examples"], database=None, deadline=None, print_blob=False,
              report_multiple_bugs=False, phases=[Phase.explicit, Phase.generate, Phase.shrink],
              suppress_health_check=list(QUIET))  # too_slow is wall time: a busy machine would fail the run
    @given(case=STRATEGIES[contract](options["domain"]).map(lambda c: fitted(c, options["layout"])))
    def fuzz(case):
        if not shrinking.may_run(case):
            return  # past the shrink budget: not run (harness.verify.shrink)
        failure = attempt(executor, case, record, dict(options, updates=EACH))
        shrinking.ran(case, failure is not None)
        record.shrinking = shrinking.started
        progress.update(1)
        if failure is not None:
            raise AssertionError(failure["message"])

    def heard(text):  # Hypothesis's own reports: its five-minute stop becomes failure.shrink.stopped
        if shrinking.heard(text) is not None:
            progress.write(text)

    try:
        with with_reporter(heard):
            fuzz()
    except Exception:  # AssertionError, or Hypothesis's own error around it (e.g. a flaky candidate)
        if record.failure is None:
            raise
    record.shrink = shrinking.finish()
    if record.failure is not None and record.failure.get("run") is not None:
        record.add(record.failure["run"], record.failure["case"])  # the minimal failing case counts as run


@judged  # the judge's own NumPy error state and torch defaults, whatever the caller's process set
def verify_candidate(contract, executor, explicit, options, progress):
    """The result dict of `executor`'s candidate on `contract` (see the module docstring).

    explicit: [(group, name, case)] run after the search; options: seed, examples, domain, designs,
    layout; progress: has update(n) and write(text) (a tqdm bar, or harness.verify.progress.Quiet)."""
    start = time.perf_counter()
    record = Record()
    if options["examples"]:  # 0: a part of a plan (harness.verify.parts) runs its explicit examples only
        search(executor, contract, record, options, progress)
    fuzzed = record.counts[PROPERTIES[0]]["passed"] + record.counts[PROPERTIES[0]]["failed"]
    if record.failure is None and explicit:
        from int4_lora_harness.verify.plan import coverage_line
        progress.write(plan_line(explicit, options.get("label", contract)))
        progress.write(coverage_line(contract, explicit, options["domain"]))
    import resource
    rss_before, estimated = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, False
    for group, name, case in explicit if record.failure is None else []:
        record.last_run, begun = None, time.perf_counter()
        failure = attempt(executor, case, record, dict(options, updates=QUICK,  # each input in turn: the fuzz
                                                       repeat=REPEAT if group == REPEATED else 0))
        progress.update(1)
        judgement, run = _judgement(record.last_run), record.last_run
        record.explicit.append(dict(group=group, shape=name, passed=failure is None,
                                    max_ratio=None if judgement is None else judgement.max_ratio,
                                    design=None if judgement is None else judgement.design,
                                    seconds=round(time.perf_counter() - begun, 3),
                                    candidate_s=None if run is None else round(run.candidate_s, 3)))
        if failure is not None:
            if failure.get("run"):
                record.add(failure["run"], case)
            break
        if group == "large tier" and not estimated:
            estimated = True
            progress.write(estimate_line(explicit, len(record.explicit) - 1, record.explicit[-1]["seconds"], rss_before,
                                         options.get("label", contract)))
    return dict(contract=contract, passed=record.failure is None, fuzzed_cases=fuzzed,
                properties=record.property_lines(), explicit=record.explicit,
                planned=planned(explicit),
                designs={d: dict(cases=n, words=words(d)) for d, n in record.designs.most_common()},
                max_ratio=record.max_ratio, worst=record.worst, samples=_samples(record),
                failure=_failure(record.failure, record.shrink, options.get("domain", FULL)),
                seconds=round(time.perf_counter() - start, 2),
                timing=dict(candidate_s=round(record.candidate_s, 3), judge_s=round(record.judge_s, 3),
                            shrink_s=round((record.shrink or {}).get("seconds", 0.0), 3),
                            shrink_cases=(record.shrink or {}).get("cases", 0),
                            cases_s=round(options.get("cases_s", 0.0), 3),
                            child_start_s=round(getattr(executor, "start_s", 0.0), 3),
                            transfer_s=round(getattr(executor, "transfer_s", 0.0), 3),
                            transfer_mb=round(getattr(executor, "transfer_bytes", 0) / 1e6, 1),
                            calls=getattr(executor, "calls", 0))), record.failure


def planned(explicit):
    """{group: cases} of the explicit examples, in their order: what the run set out to check after the search."""
    return dict(Counter(group for group, _, _ in explicit))


def weights_of(case):
    return case.weights.shape[0] * case.weights.shape[1]


def plan_line(explicit, label):
    """What the explicit examples hold, before they run."""
    groups = {}
    for group, _, case in explicit:
        count, weights = groups.get(group, (0, 0))
        groups[group] = (count + 1, weights + weights_of(case))
    return f"{label}: next " + ", ".join(f"{n} {g} ({w / 1e6:.0f} M weights)" for g, (n, w) in groups.items())


PROBE_COST = {"probes": 0.35}  # a probe costs about a third of a large-tier case of the same size (one call)


def estimate_line(explicit, done, seconds_first, rss_before, label):
    """After the first large-tier case: the time left and the memory peak, extrapolated by weights from it."""
    import resource
    first = weights_of(explicit[done][2])
    rest = sum(weights_of(c) * PROBE_COST.get(g, 1.0) for g, _, c in explicit[done + 1:])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (Linux reports KiB)
    biggest = max(weights_of(c) for _, _, c in explicit)
    peak = rss_before + max(rss - rss_before, 0.0) * biggest / max(first, 1)
    return (f"{label}: the first large-tier case ({first / 1e6:.0f} M weights) took {seconds_first:.1f} s: "
            f"about {seconds_first * rest / max(first, 1):.0f} s to go, this process at about {peak:.1f} GiB at the peak")


def _judgement(run):
    """The tolerance judgement of one case's run, or None (the call raised, or the shape was wrong)."""
    return next((o.judgement for o in run.outcomes if o.judgement is not None), None) if run else None


def _samples(record):
    return [dict(dtype=dtype, granularity=granularity, elements_seen=g["seen"], ulps=_rounded(g["ulps"]),
                 ratio=_rounded(g["ratio"])) for (dtype, granularity), g in sorted(record.samples.items())]


def _rounded(values):
    return [float(f"{v:.4g}") if np.isfinite(v) else (None if np.isnan(v) else float(v)) for v in values]


def _failure(failure, shrink=None, domain=FULL):
    """The failure as the verdict records it: kind, message, the case in words (and its values when small), how
    its shrinking went (None: found among the explicit examples) and the domain flag a refusal points to."""
    if failure is None:
        return None
    from int4_lora_harness.verify.values import case_values
    outcomes = failure.get("outcomes") or []
    worst = next((o.worst for o in outcomes if o.worst and o.passed is False), None)
    hint = domain_hint(failure.get("exception"), failure["message"], domain) if failure["kind"] == "raised" else None
    return dict(kind=failure["kind"], message=failure["message"], exception=failure.get("exception"),
                where=failure.get("where"), case=failure["case"].describe(), values=case_values(failure["case"]),
                failed=[o.name for o in outcomes if o.passed is False] or [f"a call ({failure['kind']})"],
                worst=worst, design_words=worst and words(worst.get("design", "")), shrink=shrink, hint=hint)


def batch_invariance(executor, domain=FULL, seed=0, m=33):
    """Reported, never failed on: does row m of a batch equal the same row computed alone?"""
    from dataclasses import replace

    from int4_lora_harness.verify.cases import make_linear_case
    case = make_linear_case(seed, 48, 256, m, domain.dtypes[0], rank=min(8, domain.max_rank),
                            num_loras=min(3, domain.max_loras), bias=domain.bias, group_size=64,
                            popularity=domain.popularities[0])
    from int4_lora_harness.verify.cases import TORCH_DTYPES
    expect = (str(TORCH_DTYPES[case.x_dtype]).removeprefix("torch."), [m, case.weights.shape[0]])
    executor.start_case(case.torch_kwargs("cpu"), expect)
    batch = executor.call()["out"].double()
    differ, worst = [], 0.0
    for row in (0, m // 2, m - 1):
        alone = replace(case, x=case.x[row:row + 1], lora_indices=case.lora_indices[row:row + 1])
        executor.start_case(alone.torch_kwargs("cpu"), (expect[0], [1, expect[1][1]]))
        diff = float((executor.call()["out"].double()[0] - batch[row]).abs().max())
        worst = max(worst, diff)
        if diff:
            differ.append(row)
    return dict(invariant=not differ, rows_checked=3, rows_that_differ=differ, max_abs_diff=worst)

