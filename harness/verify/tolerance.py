"""The error model of docs/contract.md#linear: what a correct fast path may differ from the exact result by.

Dequantizer: harness.verify.dequantizer (at most 1 ulp from the exact value rounded once, equal where exact).

Linear: one design reference per correct design (harness.verify.designs), one residual bound each
    y_d = reference.linear_from_weights(x, W_d, ...) in float64, with W_d = RN_x(W) ("w in x.dtype")
    or W itself ("w in fp32"). A candidate passes if, for one design (the same for the whole output;
    tried in order, the first that explains the result is reported), every element obeys
    |got - y_d| <= allowed, where allowed sums the errors that design may still make (u32 = 2**-24,
    u_x = unit roundoff of x.dtype, K = in_features; one rounding to a format errs by at most
    u |t| + eta, eta being half its subnormal spacing: eta32 = 2**-150, eta_x = 2**-25 for fp16).
    One function below per term, each with its reason:
    1-2 `accumulation`: fp32 accumulation of K + 1 terms (products and bias), Higham & Mary's
        probabilistic bound (SIAM J. Sci. Comput. 2019), LAMBDA sqrt(K + 1) u32 S, plus one rounding
        of each product: u32 S + (K + 1) eta32, S = sum_k |x_k||W_dk| + |bias|.
    3   `weight_window` / `weight_flips`: a weight computed in fp32 strays by at most WINDOW
        (u32 (|v| + |z|) |s| + eta32) before its last rounding; "w in fp32" adds |x| @ window, "w in
        x.dtype" adds |x_k| |W_hi - W_lo| only for the weights whose RN_x flips inside the window.
    4   `lora`: per rank, t_r = x @ A_r^T accumulated in fp32 (term 1 on S_t), optionally rounded to
        x.dtype (u_x |t_r| + eta_x), scaled and expanded in fp32, whose products may come from a
        3xTF32 dot (error <= EXPAND_PRODUCT u32).
    5   `fp32_sum`: the fp32 sum of base and LoRA: u32 (|y_base| + |y_lora|).
    +   `unfused_roundings` (unfused designs only, tokens that have an adapter): the base rounded to
        x.dtype, u_x (|y_base| + terms 1-3) + eta_x, and the delta rounded to x.dtype up to twice
        (written by the expand, then scaled), 2 u_x (|y_lora| + term 4) + 2 eta_x.
    6   `final_excess`: got = RN_x(y') for some |y' - y_d| <= (1..5), so |got - y_d| <= (1..5) +
        spacing_x(got) / 2. The ratio is the error beyond that half spacing over (1..5).
    Overflow: got may be +-inf only where |y_d| + bound reaches x.dtype's overflow threshold, and must
    be where |y_d| - bound does. NaN never passes.
What the bound cannot see: at K = 14336 it is about one product term, so a defect only large shapes
reach (fp16 split-K partials, a double-rounded weight, a narrower LoRA intermediate) is exposed by
the probes of harness.verify.probes, whose inputs make every correct design bit-exact.

Everything is computed in blocks of weight rows (BLOCK_ELEMENTS float64 values per [rows, in] array),
so judging a 14336 x 4096 layer never holds a float64 copy of the whole weight.
"""
import functools

import numpy as np

from int4_lora_harness.reference.granularity import from_groups, in_groups, per_group, weights_width
from int4_lora_harness.reference.linear import base_exact, lora_exact
from int4_lora_harness.reference.packing import unpack
from int4_lora_harness.reference.rounding import FORMATS, float_format, ordinal, round_to, rounded, spacing
from int4_lora_harness.verify import gemm
from int4_lora_harness.verify.designs import DESIGNS
from int4_lora_harness.verify.judgement import ErrorReport, Judgement, Tally, row_blocks, weight_rows
from int4_lora_harness.verify.tables import block_weights

LAMBDA = 8.0  # probabilistic accumulation constant (term 1): a false alarm < 1e-9 per element at K = 14336
U32 = FORMATS["fp32"].unit_roundoff  # 2**-24: unit roundoff of the fp32 accumulator
ETA32 = FORMATS["fp32"].underflow_error  # 2**-150: absolute error of one fp32 rounding that underflows
WINDOW = 4.0  # fp32 roundings allowed while computing one weight (term 3)
EXPAND_PRODUCT = 8.0  # a 3xTF32 product in the LoRA expand, in units of u32 (term 4)


# --- the terms -----------------------------------------------------------------------------------

def accumulation(s_abs, k):
    """Terms 1-2: fp32 accumulation of k + 1 terms of magnitude sum s_abs, and one rounding per product."""
    return (LAMBDA * np.sqrt(k + 1) + 1) * U32 * s_abs + (k + 1) * ETA32


def weight_window(packed_weights, scales, zero_points, group_size):
    """Term 3, float64 [rows, in]: how far a weight computed in fp32 may stray before its last rounding."""
    values = unpack(packed_weights)
    rows, in_features = values.shape
    width = weights_width(scales, zero_points, rows, in_features, group_size)
    v = np.abs(in_groups(values.astype(np.float64), width))  # [rows, groups, width]
    s = np.abs(per_group(scales, rows, in_features, group_size, "scales", width))
    if zero_points is not None:
        v = v + np.abs(per_group(zero_points, rows, in_features, group_size, "zero_points", width))
    return from_groups(WINDOW * (U32 * v * s + ETA32), in_features)


def weight_flips(exact, window, dtype):
    """Term 3 for "w in x.dtype": |RN_x(W + window) - RN_x(W - window)|, nonzero only where W lies within the
    window of a midpoint of x.dtype's grid (then a weight computed in fp32 may round either way)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.abs(rounded(exact + window, dtype) - rounded(exact - window, dtype))


def weight_slack(weights_kind, x_dtype, packed_weights, scales, zero_points, group_size, exact):
    """Term 3 per weight, float64 [rows, in], before its product with |x|: the window ("fp32" weights) or the
    flips of RN_x inside it ("x" weights). A function of each weight's nibble, scale and zero point only, so the
    judge computes it on its tables (harness.verify.tables.block_weights: per_weight)."""
    window = weight_window(packed_weights, scales, zero_points, group_size)
    return weight_flips(exact, window, x_dtype) if weights_kind == "x" else window


def fp32_exact(weights):
    """True when fp32 computes every weight exactly, by (v - z) * s or v * s - z * s alike: fp16 (11-bit) or bf16
    (8-bit) scales and no zero points or integer ones with |z| + 8 < 2**(24 - bits). Then term 3 is zero."""
    bits = {"fp16": 11, "bf16": 8}.get(weights.scales_dtype)
    if bits is None:
        return False
    z = weights.zero_points
    if z is None:
        return True
    if not weights.zero_points_dtype.startswith(("int", "uint")):
        return False
    return float(np.max(np.abs(z), initial=0)) + 8 < 2.0 ** (24 - bits)


def lora(x, lora_a, lora_b, lora_indices, scaling, dtype):
    """Term 4, once per case: (y_lora [M, out] from reference.lora_exact, bound [M, out], |y_lora| magnitude
    [M, out]) in float64, each token's from its own adapter only (another adapter's NaN or inf never reaches it)."""
    fmt = float_format(dtype)
    m, k = x.shape
    rank = lora_a.shape[1]
    bound, magnitude = np.zeros((m, lora_b.shape[1])), np.zeros((m, lora_b.shape[1]))
    with np.errstate(invalid="ignore", over="ignore"):
        for i in range(lora_a.shape[0]):
            rows = np.asarray(lora_indices) == i
            if not rows.any():
                continue
            a, b = lora_a[i].astype(np.float64), np.abs(lora_b[i].astype(np.float64))  # [rank, in], [out, rank]
            t = x[rows] @ a.T  # [tokens, rank]: the shrink result
            t_error = LAMBDA * np.sqrt(k) * U32 * (np.abs(x[rows]) @ np.abs(a).T) + k * ETA32 \
                + fmt.unit_roundoff * np.abs(t) + fmt.underflow_error
            magnitude[rows] = abs(scaling) * (np.abs(t) @ b.T)
            bound[rows] = abs(scaling) * (t_error @ b.T) + (rank + 2 + EXPAND_PRODUCT) * U32 * magnitude[rows] \
                + (rank + 2) * ETA32
    return lora_exact(x, lora_a, lora_b, lora_indices, scaling), bound, magnitude


def fp32_sum(y_base, lora_magnitude):
    """Term 5: the fp32 addition of base and LoRA."""
    return U32 * (np.abs(y_base) + lora_magnitude)


def unfused_roundings(y_base, base_bound, lora_magnitude, lora_bound, has_lora, dtype):
    """The unfused design's extra roundings, for tokens with an adapter (elsewhere the base rounding is the final
    one): the base output rounded to x.dtype, and the delta rounded to x.dtype up to twice (the expand writes it,
    then `* scaling` does again: peft's lora_B(lora_A(x)) * scaling)."""
    fmt = float_format(dtype)
    extra = fmt.unit_roundoff * (np.abs(y_base) + base_bound + 2 * (lora_magnitude + lora_bound)) \
        + 3 * fmt.underflow_error
    return np.where(has_lora[:, None], extra, 0.0)


def final_excess(got, expected, dtype):
    """Term 6: |got - expected| beyond half a spacing of got (the final rounding's own error)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.maximum(np.abs(got - expected) - 0.5 * spacing(got, dtype), 0.0)


def ratio_with_overflow(got, expected, bound, dtype):
    """error / allowed per element after term 6, with docs/contract.md#dequantizer's overflow rule: inf allowed (same sign) only
    where |expected| + bound reaches the overflow threshold, required where |expected| - bound does. Where the
    exact result itself is not finite (a token whose adapter holds NaN or inf, a non-finite scaling), got must
    not be finite either, and may be NaN or inf as the kernel's order of operations makes it."""
    fmt = float_format(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        ratio = _finite_ratio(got, expected, bound, dtype, fmt)
        return np.where(np.isfinite(expected), ratio, np.where(np.isfinite(got), np.inf, 0.0))


def _finite_ratio(got, expected, bound, dtype, fmt):
    """ratio_with_overflow's rule for finite exact results."""
    with np.errstate(over="ignore", invalid="ignore"):
        threshold = fmt.max_finite + 0.5 * float(spacing(fmt.max_finite, dtype))  # RN overflows from here on
        ratio = ratio_of(final_excess(got, expected, dtype), bound)
        inf_ok = np.isinf(got) & (np.abs(expected) + bound >= threshold) & (np.sign(got) == np.sign(expected))
        ratio = np.where(inf_ok, 0.0, ratio)
        return np.where((np.abs(expected) - bound >= threshold) & ~np.isinf(got), np.inf, ratio)


def ratio_of(error, allowed):
    """error / allowed per element (0/0 = 0, x/0 = inf, NaN = inf)."""
    error = np.asarray(error, np.float64)
    if not error.any():  # every element exact (the usual verdict): no division to make
        return np.zeros(np.broadcast_shapes(error.shape, np.shape(allowed)))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(error == 0, 0.0, error / allowed)
    return np.where(np.isnan(ratio), np.inf, ratio)


def ulp_distance(got, expected, dtype):
    """|ordinal(got) - ordinal(expected)| as float64; inf where either is NaN. Equal values are 0 ulps apart
    (+0 and -0 too), so only the elements that differ are placed on the number line."""
    got, expected = np.broadcast_arrays(np.asarray(got, np.float64), np.asarray(expected, np.float64))
    distance = np.zeros(got.shape)
    differ = got != expected  # NaN included
    if differ.any():
        g, e = got[differ], expected[differ]
        bad = np.isnan(g) | np.isnan(e)
        apart = np.abs(ordinal(np.where(bad, 0, g), dtype) - ordinal(np.where(bad, 0, e), dtype))
        distance[differ] = np.where(bad, np.inf, apart.astype(np.float64))
    return distance


# --- linear ---------------------------------------------------------------------------------------

def _lora_parts(case):
    """Term 4 once per case, or zeros without adapters: (y_lora, bound, magnitude, has_lora [M])."""
    m, out_features = case.x.shape[0], case.weights.shape[0]
    if case.lora_a is None:
        zeros = np.zeros((m, out_features))
        return zeros, zeros, zeros, np.zeros(m, bool)
    y, bound, magnitude = lora(case.x.astype(np.float64), case.lora_a, case.lora_b, case.lora_indices, case.scaling,
                               case.x_dtype)
    return y, bound, magnitude, np.asarray(case.lora_indices) >= 0


def _base_block(case, rows, weights_kind, space=None):
    """For weight rows `rows`: (y_base [M, rows], bound of terms 1-3 [M, rows], s_abs) for "x" or "fp32" weights.
    space: scratch arrays the blocks of one case reuse (harness.verify.tables.scratch)."""
    w = case.weights
    x = case.x.astype(np.float64)
    x_abs = np.abs(case.x).astype(np.float32)  # exact: x holds values of fp16, bf16 or fp32
    packed, scales, zeros = weight_rows(w, rows)
    dtype = case.x_dtype if weights_kind == "x" else None  # "fp32": the exact weights themselves
    term_3 = None if fp32_exact(w) else functools.partial(weight_slack, weights_kind, case.x_dtype)
    w_d, _, w_abs, slack = block_weights(packed, scales, zeros, w.group_size, dtype, need_exact=False, need_abs=True,
                                         space=space, per_weight=term_3)
    bias = None if case.bias is None else case.bias.astype(np.float64)[rows]
    with np.errstate(over="ignore", invalid="ignore"):
        slack = 0.0 if slack is None else abs_products(x_abs, slack)
        y_base = base_exact(x, w_d, bias, gemm.products)
        s_abs = abs_products(x_abs, w_abs) + (0.0 if bias is None else np.abs(bias))
        bound = accumulation(s_abs, x.shape[1]) + slack
    return y_base, bound, s_abs


def abs_products(x_abs, weights_abs):
    """An upper bound of |x| @ |W|^T [M, rows] (both non-negative) by an fp32 GEMM: its relative error is below
    K u32 (K additions of non-negative terms, each product exact or rounded once), so it is scaled up by that."""
    k = x_abs.shape[1]
    product = gemm.products(x_abs, weights_abs.astype(np.float32, copy=False))
    return product.astype(np.float64) * (1 + (k + 2) * U32) + (k + 1) * ETA32


def _design_tallies(got, case, weights_kind, designs, lora_parts):
    """{design: _Tally} for the accepted designs of one weight kind, over every block of weight rows."""
    y_lora, lora_bound, lora_mag, has_lora = lora_parts
    out_features = case.weights.shape[0]
    tallies, space = {d: Tally(d, got.size) for d in designs}, {}
    for rows in row_blocks(out_features, case.weights.shape[1]):
        y_base, base_bound, s_abs = _base_block(case, rows, weights_kind, space)
        yl, lb, lm = y_lora[:, rows], lora_bound[:, rows], lora_mag[:, rows]
        with np.errstate(over="ignore", invalid="ignore"):
            fused = base_bound + lb + fp32_sum(y_base, lm)
            expected = y_base + yl
            nearest = round_to(expected, case.x_dtype)
        g = got[:, rows]
        ulps = ulp_distance(g, nearest, case.x_dtype)
        for design in designs:
            bound = fused + (unfused_roundings(y_base, base_bound, lm, lb, has_lora, case.x_dtype)
                             if DESIGNS[design].unfused else 0.0)
            ratio = ratio_with_overflow(g, expected, bound, case.x_dtype)

            def describe(i, j, rows=rows, bound=bound, ratio=ratio, y_base=y_base, yl=yl, s_abs=s_abs, g=g,
                         expected=expected, ulps=ulps):
                o = rows.start + int(j)
                return dict(index=(int(i), o), expected=float(expected[i, j]), got=float(g[i, j]),
                            ulps=float(ulps[i, j]), allowed=float(bound[i, j]), ratio=float(ratio[i, j]),
                            inputs=dict(lora_index=int(case.lora_indices[i]), y_base=float(y_base[i, j]),
                                        y_lora=float(yl[i, j]), sum_abs_products=float(s_abs[i, j]),
                                        bias=None if case.bias is None else float(case.bias[o])))
            tallies[design].add(ratio, ulps, describe)
    return tallies


def linear_judgement(got, case, designs=tuple(DESIGNS)):
    """got: [M, out] values of case.x_dtype; case: harness.verify.cases.LinearCase -> Judgement.

    Designs are tried in order; the first that explains every element is reported. When none of
    `designs` does, the closest is reported, with a hint if a design outside `designs` would."""
    got = np.asarray(got, np.float64)
    lora_parts = _lora_parts(case)
    results = {}
    for design in (*designs, *(d for d in DESIGNS if d not in designs)):
        if design not in results:
            kind = DESIGNS[design].weights
            same_kind = [d for d in DESIGNS if DESIGNS[d].weights == kind and d not in results]
            results.update({d: t.judgement() for d, t in _design_tallies(got, case, kind, same_kind,
                                                                           lora_parts).items()})
        if results[design].passed:
            if design in designs:
                return results[design]
            best = min((results[d] for d in designs), key=lambda j: j.max_ratio)
            best.hint = f"the result is explained by the design {design!r}, which --designs excludes"
            return best
    return min((results[d] for d in designs), key=lambda j: j.max_ratio)


# --- per-element reports (tests, repro): the same numbers, every element kept ----------------------

def linear_error(got, case, designs=tuple(DESIGNS)):
    """got: float64 [M, out] -> ErrorReport with every element for the design linear_judgement reports."""
    design = linear_judgement(got, case, designs).design
    got = np.asarray(got, np.float64)
    y_lora, lora_bound, lora_mag, has_lora = _lora_parts(case)
    blocks, space = [], {}
    for rows in row_blocks(case.weights.shape[0], case.weights.shape[1]):
        y_base, base_bound, _ = _base_block(case, rows, DESIGNS[design].weights, space)
        lb, lm = lora_bound[:, rows], lora_mag[:, rows]
        with np.errstate(over="ignore", invalid="ignore"):
            bound = base_bound + lb + fp32_sum(y_base, lm)
            if DESIGNS[design].unfused:
                bound = bound + unfused_roundings(y_base, base_bound, lm, lb, has_lora, case.x_dtype)
            blocks.append((y_base + y_lora[:, rows], bound))
    expected = np.concatenate([b[0] for b in blocks], axis=1)
    allowed = np.concatenate([b[1] for b in blocks], axis=1)
    with np.errstate(over="ignore", invalid="ignore"):
        ulps = ulp_distance(got, round_to(expected, case.x_dtype), case.x_dtype)
    return ErrorReport(design, got, expected, allowed, ratio_with_overflow(got, expected, allowed, case.x_dtype), ulps)
