"""What "correct" means for a layer (docs/contract.md#layer), judged from the ranks' replies to one case (serving.ranks).

Reused from int4_lora_harness.verify.properties: Outcome, same_bits and the names of the properties the
linear shares; from verify.tolerance (through serving.tolerance): the error model. Each property returns
one Outcome with the numbers behind it, and every rank gets a line of its own (which rank's block was
wrong, which rank modified its inputs).

Properties:
  shape, dtype and device   every rank returns [M, out / tp] (column styles) or [M, out] (row) in x.dtype (row:
                            x.dtype or fp32) on its device
  within tolerance          the combined output against the unsharded reference (serving.tolerance.layer_error)
  slot rewrite              after a lower-rank adapter is written into a used slot (in place, reset first, as
                            reference.layer.write_slot says), that slot's tokens are within tolerance of the
                            reference on the new slots, and every other token is bitwise what it was
  inputs unchanged          every input tensor, on every rank, bitwise the same after the call
  deterministic             a second call gives bitwise the same result on every rank
  refuses a group-splitting shard   (row, tp > 1) every rank raises ValueError on a shard that splits a group
"""
import numpy as np
import torch

from int4_lora_harness.serving.tolerance import layer_error, rank_errors
from int4_lora_harness.verify.cases import DTYPE_NAMES
from int4_lora_harness.verify.properties import PROPERTIES, Outcome, same_bits
from int4_lora_harness.verify.judgement import Judgement
from int4_lora_harness.reference.layer import combine

SHAPE, TOLERANCE, UNCHANGED, DETERMINISTIC = PROPERTIES[:4]
SLOT_REWRITE, REFUSES = "slot rewrite", "refuses a group-splitting shard"
LAYER_PROPERTIES = (SHAPE, TOLERANCE, SLOT_REWRITE, UNCHANGED, DETERMINISTIC, REFUSES)


def _values(t):
    """float64 NumPy values of a CPU tensor (bf16 through fp32: exact)."""
    return t.to(torch.float32).numpy().astype(np.float64)


def _combined(replies, step, style, case):
    """float64 [M, out]: rank 0's combination of call `step` (gathered blocks reassembled, or the all-reduce)."""
    combined = replies[0]["calls"][step]["combined"]
    if style == "row":
        return _values(combined)
    return combine([_values(block) for block in combined], style, case.output_slices)


def _tolerance_outcome(name, report, rows, words):
    """Outcome of `report` (an ErrorReport) on the token rows `rows`, with its worst element in words."""
    ratio = np.where(rows[:, None], report.ratio, 0.0)
    if not rows.any() or ratio.size == 0:
        return Outcome(name, True, f"no {words} to judge", Judgement(report.design, 0.0, None))
    index = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    pick = lambda a: float(a[index])  # noqa: E731
    worst = dict(index=tuple(int(i) for i in index), expected=pick(report.expected), got=pick(report.got),
                 ulps=pick(report.ulps), allowed=pick(report.allowed), ratio=pick(ratio), design=report.design)
    message = (f"{words}: worst element {worst['index']}: expected {worst['expected']!r}, got {worst['got']!r}, "
               f"{worst['ulps']:g} ulp, error/allowed {worst['ratio']:.3g} (allowed {worst['allowed']:.3g}, "
               f"design: {worst['design']})")
    return Outcome(name, worst["ratio"] <= 1.0, message, Judgement(report.design, worst["ratio"], worst))


def _reduce_dtype(replies, step):
    """The dtype name the row all-reduce added in: the partials' dtype."""
    return DTYPE_NAMES[replies[0]["calls"][step]["out"].dtype]


def _judge(replies, step, case, style):
    """(combined ErrorReport, [rank ErrorReport]) of call `step` on `case`."""
    rank_results = [_values(r["calls"][step]["out"]) for r in replies]
    report = layer_error(_combined(replies, step, style, case), rank_results, case, style,
                         _reduce_dtype(replies, step))
    return report, rank_errors(rank_results, case, style)


def _rewrite_outcome(replies, case, style):
    """Slot rewrite: the rewritten slot's tokens within tolerance of the new reference, the others bitwise kept."""
    rewritten, slot = case.rewritten(), case.rewrite.slot
    mine = case.lora_indices == slot
    before, after = _combined(replies, 0, style, case), _combined(replies, 2, style, rewritten)
    kept = np.array([same_bits(torch.from_numpy(a), torch.from_numpy(b)) for a, b in zip(before, after)])
    changed = [int(m) for m in np.flatnonzero(~mine & ~kept)]
    if changed:
        return Outcome(SLOT_REWRITE, False, f"writing slot {slot} changed tokens {changed[:8]} of other slots "
                                            f"(slots {case.lora_indices[changed[:8]].tolist()})"), None
    report, ranks = _judge(replies, 2, rewritten, style)
    ranks_text = f"tokens of slot {slot} after writing ranks {case.rewrite.describe()['ranks']} into it"
    return _tolerance_outcome(SLOT_REWRITE, report, mine, ranks_text), ranks


def _rank_lines(replies, rank_reports, rewrite_reports, case):
    """dict(rank, passed, message) per rank: its own block or partial sum, its inputs, its determinism."""
    lines = []
    every = np.ones(case.x.shape[0], bool)
    mine = None if case.rewrite is None else case.lora_indices == case.rewrite.slot
    for rank, reply in enumerate(replies):
        problems = []
        own = _tolerance_outcome(TOLERANCE, rank_reports[rank], every, "its own result")
        if not own.passed:
            problems.append(own.message)
        if rewrite_reports is not None:
            again = _tolerance_outcome(SLOT_REWRITE, rewrite_reports[rank], mine, "after the slot rewrite")
            problems += [] if again.passed else [again.message]
        if reply["modified"]:
            problems.append(f"modified its inputs {reply['modified']}")
        if not same_bits(reply["calls"][0]["out"], reply["calls"][1]["out"]):
            problems.append("two calls differ")
        lines.append(dict(rank=rank, passed=not problems, max_ratio=own.max_ratio, message="; ".join(problems) or
                          f"ok (own result: max error/allowed {own.max_ratio:.3g})"))
    return lines


def layer_outcomes(replies, case, style):
    """([Outcome] per property, [dict(rank, passed, message)]) of one case from every rank's reply."""
    wrong = [r for r in replies if r["status"] == "wrong"]
    if wrong:
        message = "; ".join(f"rank {r['rank']} ({r['step']} call): {r['message']}" for r in wrong)
        lines = [dict(rank=r["rank"], passed=r["status"] != "wrong", message=r["message"]) for r in replies]
        return [Outcome(SHAPE, False, message)], lines
    tp, out_features = len(replies), sum(case.output_slices)
    width = out_features if style == "row" else out_features // tp
    shape = Outcome(SHAPE, True, f"{tp} ranks x [{case.x.shape[0]}, {width}] {case.x_dtype}")
    report, rank_reports = _judge(replies, 0, case, style)
    tolerance = _tolerance_outcome(TOLERANCE, report, np.ones(case.x.shape[0], bool), "combined output")
    rewrite, rewrite_reports = Outcome(SLOT_REWRITE, True, "no rewrite in this case"), None
    if case.rewrite is not None:
        rewrite, rewrite_reports = _rewrite_outcome(replies, case, style)
    modified = [f"rank {r['rank']}: {r['modified']}" for r in replies if r["modified"]]
    unchanged = Outcome(UNCHANGED, not modified, "; ".join(modified) or "all inputs intact on every rank")
    differ = [r["rank"] for r in replies if not same_bits(r["calls"][0]["out"], r["calls"][1]["out"])]
    deterministic = Outcome(DETERMINISTIC, not differ, f"two calls differ on ranks {differ}" if differ else
                            "two calls bitwise equal on every rank")
    lines = _rank_lines(replies, rank_reports, rewrite_reports, case)
    return [shape, tolerance, rewrite, unchanged, deterministic], lines


def refusal_outcome(replies, case):
    """Outcome of a layer whose row shards split a group: every rank must raise ValueError."""
    accepted = [f"rank {r['rank']}: {r['message']}" for r in replies if not r["raised"]]
    rule = f"in_features {case.x.shape[1]} over {len(replies)} ranks with group_size {case.weights.group_size}"
    if accepted:
        return Outcome(REFUSES, False, f"accepted a row shard that splits a group ({rule}): {'; '.join(accepted)}")
    return Outcome(REFUSES, True, f"refused ({rule}): {replies[0]['message']}")
