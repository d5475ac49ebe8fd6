"""What a tensor-parallel layer may differ from the unsharded layer by: verify.tolerance's linear model plus the
roundings of the collective that combines the ranks (docs/contract.md#layer).

Reused from int4_lora_harness.verify.tolerance: linear_error (every design and term of the linear),
ratio_with_overflow (term 6 and the overflow rule), ulp_distance, ErrorReport. Added here: allreduce_error.

column, column-fully-sharded
    Every output element is computed by one rank over the whole of in_features (fully sharded adapters
    split the shrink's rank dimension; each part is computed whole on one rank and the all-gather copies it
    exactly), and the all-gather of the blocks moves values without arithmetic. So the gathered output is
    judged as the unsharded layer: linear_error on LayerCase.as_linear() (the slices' adapters as one
    block-diagonal LoRA, whose bound is that of each slice: a column of slice s sees only B_s's rank
    entries; the expand's (rank + 2) u32 term counts S * R entries, conservative by (S - 1) R u32 |t||B|).
row
    Rank r returns a partial sum p_r over its in_features / tp columns. Judged as its own layer
    (LayerCase.shard(r).as_linear(), values rounded to x.dtype): a design reference y_r and a bound a_r with
    |RN_x(p_r) - y_r| <= a_r + spacing_x / 2. The partials' errors add, and the all-reduce adds
    allreduce_error; the combined output is then judged by ratio_with_overflow against sum_r y_r with the
    bound sum_r a_r + allreduce_error. (The unsharded linear's bound is not enough: a rank's fp32 sum
    of K / tp products has its own sqrt(K / tp) term, and the LoRA shrink's partial sums can exceed |t|.)
"""
import numpy as np

from int4_lora_harness.reference.rounding import float_format, round_to, rounded
from int4_lora_harness.verify.judgement import ErrorReport
from int4_lora_harness.verify.tolerance import linear_error, ratio_with_overflow, ulp_distance


def allreduce_error(partials, reduce_dtype, x_dtype):
    """float64 [M, out]: what combining tp row-parallel partial sums adds to the sum of the partials' own bounds.

    partials: float64 [tp, M, out], upper bounds of |p_r| (|y_r| + a_r); reduce_dtype / x_dtype: 'fp16', 'bf16'
    or 'fp32', the dtype the all-reduce adds in (the partials' dtype) and x's. With u, eta the unit roundoff and
    the underflow error of a format (verify.tolerance's notation):
    1. each rank's p_r rounded once to x.dtype: u_x |p_r| + eta_x. The per-rank judgement allows it whether a
       rank returns x.dtype or fp32 partials; for fp32 partials that is conservative by this one rounding.
    2. tp - 1 additions in reduce_dtype, in an order the collective chooses (ring, tree): every intermediate sum
       is at most sum_r |p_r| (to first order), so each addition errs by at most u_d sum_r |p_r| + eta_d.
    For reduce_dtype = x.dtype the last addition is also the final rounding that ratio_with_overflow allows
    (half a spacing of the result): counted twice, conservative by one rounding. An fp32 sum is rounded to
    x.dtype once by the harness: that is the final rounding (term 6) itself.
    """
    fmt_x, fmt_d = float_format(x_dtype), float_format(reduce_dtype)
    tp = partials.shape[0]
    magnitude = partials.sum(axis=0)
    roundings = fmt_x.unit_roundoff * magnitude + tp * fmt_x.underflow_error  # 1.
    additions = (tp - 1) * (fmt_d.unit_roundoff * magnitude + fmt_d.underflow_error)  # 2.
    return roundings + additions


def rank_errors(rank_results, case, style):
    """[ErrorReport] per rank: rank r's result (float64 [M, out / tp] or [M, out]) judged as its own layer,
    values rounded to x.dtype first (see the module docstring). case: a serving.cases.LayerCase."""
    tp = len(rank_results)
    with np.errstate(over="ignore"):
        return [linear_error(rounded(got, case.x_dtype), case.shard(r, tp, style).as_linear())
                for r, got in enumerate(rank_results)]


def layer_error(got, rank_results, case, style, reduce_dtype):
    """ErrorReport of the combined output `got` (float64 [M, out]) against the unsharded layer `case`.

    rank_results: the ranks' own results (float64), rank order; reduce_dtype: the row all-reduce's dtype name."""
    if style != "row" or len(rank_results) == 1:
        return linear_error(got, case.as_linear())
    reports = rank_errors(rank_results, case, style)
    expected = np.sum([r.expected for r in reports], axis=0)
    partials = np.stack([np.abs(r.expected) + r.allowed for r in reports])
    bound = np.sum([r.allowed for r in reports], axis=0) + allreduce_error(partials, reduce_dtype, case.x_dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        ulps = ulp_distance(got, round_to(expected, case.x_dtype), case.x_dtype)
    design = "row-parallel sum of " + " + ".join(r.design for r in reports)
    return ErrorReport(design, got, expected, bound, ratio_with_overflow(got, expected, bound, case.x_dtype), ulps)
