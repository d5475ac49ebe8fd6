"""`verify --layer TARGET --tp N [--style ...]`: judge a layer (docs/contract.md#layer) on tp ranks, one verdict per style.

For each style, verify_layer examines the named merged layers of serving.strategies (QKV 4:1:1, gate/up,
one slice), then layers Hypothesis draws, until a property fails (Hypothesis then shrinks the case,
unless a rank hung or died or the ranks failed unalike) or max_examples cases passed; for a row-parallel
layer at tp > 1 it then checks that a shard splitting a quantization group is refused. The ranks are
processes of its own (serving.ranks.RankPool), which load TARGET themselves; a rank that raises, hangs, passes
its CPU budget, dies or breaks the wire format is a verdict with a kind, and every verdict has a line per rank.
"""
import time
from collections import Counter

from hypothesis import Phase, given, seed, settings

from int4_lora_harness.reference.layer import STYLES
from int4_lora_harness.serving.properties import LAYER_PROPERTIES, REFUSES, layer_outcomes, refusal_outcome
from int4_lora_harness.serving.ranks import RankFailure, RankPool
from int4_lora_harness.serving.strategies import layer_cases, misaligned_row_case, named_cases
from int4_lora_harness.verify.limits import MAX_SLOWDOWN
from int4_lora_harness.verify.numerics import judged
from int4_lora_harness.verify.strategies import QUIET
from int4_lora_harness.verify.targets import UsageError


@judged  # the judge's own NumPy error state and torch defaults (harness.verify.numerics)
def verify_layer(target, tp, styles=STYLES, device="cpu", max_examples=20, seed=0, timeout=60.0, *, pool=None,
                 named=True, max_slowdown=MAX_SLOWDOWN):
    """[result dict] per style for TARGET ('pkg.module:function' or 'path/file.py:function') on tp ranks.

    styles: a subset of reference.layer.STYLES; device: 'cpu' or 'cuda'; timeout: seconds of no progress (CPU
    time of the ranks' processes) that end a case as hung; max_slowdown: a rank's CPU budget per case, in dense
    fp32 matmuls of its work (serving.ranks). pool: a RankPool of tp ranks on `device` to reuse (tests); by
    default one is started here (and killed on the way out, KeyboardInterrupt included).
    named: examine serving.strategies.named_cases before the fuzzed ones (False: the fuzzer alone).
    UsageError (verify.targets) when the ranks cannot load TARGET or call it with the contract's arguments.
    """
    bad = [s for s in styles if s not in STYLES]
    if bad or not styles:
        raise ValueError(f"styles must be a non-empty subset of {STYLES}, got {list(styles)}")
    if pool is not None and (pool.tp != tp or pool.device != device):
        raise ValueError(f"pool runs tp={pool.tp} on {pool.device}, not tp={tp} on {device}")
    own = pool is None
    pool = RankPool(tp, device, timeout, max_slowdown, target) if own else pool
    try:
        return [_verify_style(pool, target, style, max_examples, seed, named) for style in styles]
    finally:
        if own:
            pool.close()


class _Search:
    """The state of one style's search: counts of cases per property, the failure kept, each rank's worst."""

    def __init__(self, pool, target, style):
        self.pool, self.target, self.style = pool, target, style
        self.counts, self.last, self.rank_worst = Counter(), {}, {}

    def attempt(self, case):
        """None if every property holds on `case`, else the failure in one line (kept in self.last)."""
        if self.last.get("fatal"):  # after a hang, a crash or a usage error, keep that case: no shrinking
            return self.last["message"]
        try:
            outcomes, lines = layer_outcomes(self.pool.run_case(self.target, self.style, case), case, self.style)
        except UsageError as error:
            self.last.update(usage=error, fatal=True, message=str(error))
            return self.last["message"]
        except RankFailure as failure:
            self.last.update(case=case, outcomes=None, failure=failure, ranks=failure.ranks, fatal=failure.fatal,
                             message=str(failure))
            return self.last["message"]
        failed = [o for o in outcomes if not o.passed]
        if failed:
            self.last.update(case=case, outcomes=outcomes, failure=None, ranks=lines, fatal=False,
                             message="; ".join(f"{o.name}: {o.message}" for o in failed))
            return self.last["message"]
        self.counts.update(o.name for o in outcomes)
        for line in lines:
            self.rank_worst[line["rank"]] = max(self.rank_worst.get(line["rank"], 0.0), line["max_ratio"])
        return None


def _verify_style(pool, target, style, max_examples, random_seed, use_named):
    start = time.perf_counter()
    search = _Search(pool, target, style)
    named = []
    for name, case in named_cases(pool.tp, style, random_seed) if use_named else []:
        message = search.attempt(case)
        named.append(dict(shape=name, passed=message is None))
        if message:
            break

    @seed(random_seed)  # same seed, same cases, same verdict
    @settings(max_examples=max_examples, database=None, deadline=None, print_blob=False,
              suppress_health_check=list(QUIET), phases=[Phase.explicit, Phase.generate, Phase.shrink])
    @given(case=layer_cases(pool.tp, style))
    def fuzz(case):
        message = search.attempt(case)
        if message:
            raise AssertionError(message)

    if not search.last:
        try:
            fuzz()
        except Exception:  # AssertionError, or Hypothesis's own error around it (e.g. a flaky candidate)
            if not search.last:
                raise
    if "usage" in search.last:
        raise search.last["usage"]
    refusal = None
    if style == "row" and pool.tp > 1 and not search.last:
        refusal = _refusal(search, pool, target, style)
    return _result(search, target, style, pool, max_examples, random_seed, named, refusal, start)


def _refusal(search, pool, target, style):
    """The refusal property's Outcome (a rank that raises something else, hangs or dies fails it too)."""
    case = misaligned_row_case(pool.tp)
    try:
        outcome = refusal_outcome(pool.refuse(target, style, case), case)
    except RankFailure as failure:
        search.last.update(case=case, outcomes=None, failure=failure, ranks=failure.ranks, fatal=True,
                           message=str(failure))
        return None
    search.counts[REFUSES] += 1
    if not outcome.passed:
        search.last.update(case=case, outcomes=[outcome], failure=None, ranks=[], fatal=False,
                           message=outcome.message)
    return outcome


def _result(search, target, style, pool, max_examples, random_seed, named, refusal, start):
    """The plain dict of one style's verdict (docs/serving.md)."""
    last = search.last
    failed = {o.name: o for o in last.get("outcomes") or [] if not o.passed}
    if last.get("outcomes"):
        search.counts.update(o.name for o in last["outcomes"])  # the minimal failing case counts as run
    names = [n for n in LAYER_PROPERTIES if n != REFUSES or (style == "row" and pool.tp > 1)]
    properties = [dict(name=n, passed=n not in failed, cases=search.counts[n],
                       message=failed[n].message if n in failed else "") for n in names]
    failure = None
    if last:
        kind = last["failure"].kind if last.get("failure") else "wrong"
        worst = next((o.worst for o in failed.values() if o.worst), None)
        failure = dict(kind=kind, message=last["message"], case=last["case"].describe(), worst=worst,
                       failed=list(failed))
        ranks = last["ranks"] or [dict(rank=r, passed=True, message="") for r in range(pool.tp)]
    else:
        ranks = [dict(rank=r, passed=True, message=f"own result: max error/allowed {search.rank_worst.get(r, 0):.3g} "
                                                   f"over {search.counts[LAYER_PROPERTIES[0]]} cases")
                 for r in range(pool.tp)]
    return dict(contract="layer", candidate=target, style=style, tp=pool.tp, device=pool.device, seed=random_seed,
                max_examples=max_examples, passed=failure is None, properties=properties, failure=failure,
                ranks=[dict(rank=r["rank"], passed=r["passed"], message=r["message"]) for r in ranks],
                named=named, fuzzed_cases=search.counts[LAYER_PROPERTIES[0]] - sum(n["passed"] for n in named),
                refusal=None if refusal is None else refusal.message, seconds=round(time.perf_counter() - start, 2))
