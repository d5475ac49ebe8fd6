"""The error model of SPEC §5: what a correct fast path may differ from the exact result by.

Dequantizer
    The exact value W = (v - z) * s is rounded once (RN) to the output dtype. A
    candidate may be at most 1 ulp from RN(W), and must equal it where W is itself
    a number of the output dtype. ULPs are counted on the number line of the format
    (reference.rounding.ordinal), not with a spacing, so a binade edge is exact.
    Two roundings in fp16 ((v - z) in fp16, then * s) reach 2 ulps; fp16
    intermediates overflow to inf: both fail.

Linear: one design reference per correct design, one residual bound each
    Rather than one wide bound, the weight's rounding point is modelled exactly:
      design "w in x.dtype": W_d = RN_x(W)   (dequantize to x.dtype, then GEMM)
      design "w in fp32":    W_d = W         (dequantize to fp32 registers)
    y_d = x @ W_d^T + bias + scaling * (x @ A_i^T) @ B_i^T, in float64. A candidate
    passes if, for one design (the same for the whole output; tried in this order, the first that
    explains the result is reported), every element obeys
    |got - y_d| <= allowed, where allowed sums the errors that design may still make
    (u32 = 2**-24, u_x = unit roundoff of x.dtype, K = in_features; one rounding to a
    format errs by at most u |t| + eta, where eta, half its subnormal spacing, is the absolute
    error of a rounding that underflows: eta32 = 2**-150, eta_x = 2**-25 for fp16):

    1. fp32 accumulation of K + 1 terms (products and bias). Worst case is K*u32*S,
       S = sum_k |x_k||W_dk| + |bias|; rounding errors of random data are independent
       and mean-zero, so Higham & Mary (SIAM J. Sci. Comput. 2019) bound it by
       LAMBDA * sqrt(K + 1) * u32 * S with probability >= 1 - 2 exp(-LAMBDA**2 / 2) * K
       per element; LAMBDA = 8 makes a false alarm < 1e-9 per element even at K = 14336.
       This is what rejects fp16 accumulation at K >= 1024: its error grows like
       u16 * K * |x||w| (u16 = 2**-11), 2**13 times u32 against a sqrt(K) allowance.
    2. Products of fp32 operands round once: u32 * S (exact for fp16/bf16 operands), plus
       (K + 1) * eta32 for products that underflow fp32 (bf16 operands below ~2**-75).
    3. Where W is computed in fp32 before its last rounding: |error| <= WINDOW * (u32 *
       (|v| + |z|) * |s| + eta32) per weight (covers (v - z) * s and v * s - z * s, with or
       without FMA). For "w in fp32" this is added as sum_k |x_k| * window_k. For
       "w in x.dtype" it can only change the rounding of W near a tie: the weights
       whose RN_x flips inside the window contribute |x_k| * |W_hi - W_lo|, and no
       other weight may differ from RN_x(W) at all.
    4. LoRA: per token and rank, t_r = x @ A_ir^T accumulated in fp32 (term 1 with
       S_t = sum_k |x_k||A_irk|, plus K eta32), optionally rounded to x.dtype (u_x * |t_r| + eta_x,
       the "fp32 or x.dtype intermediate" of the issue; eta_x matters once t_r is subnormal
       there), scaled and expanded in fp32, whose products may come from a 3xTF32 tensor-core
       dot (error <= 2**-21 = EXPAND_PRODUCT u32):
       |scaling| * sum_r [(LAMBDA sqrt(K) u32 S_t,r + K eta32 + u_x |t_r| + eta_x) |B_r|
                          + (rank + 2 + EXPAND_PRODUCT) u32 |t_r||B_r|] + (rank + 2) eta32.
    5. The fp32 sum of base and LoRA: u32 * (|y_base| + |y_lora|).
    6. The final rounding to x.dtype: got = RN_x(y') for some |y' - y_d| <= (1..5), so
       |got - y_d| <= (1..5) + spacing_x(got) / 2. The reported ratio is the error
       beyond that half spacing over (1..5): how much of the modelled budget was used.
    Overflow: got may be +-inf only where |y_d| + (1..5) reaches x.dtype's overflow
    threshold, and must be where |y_d| - (1..5) does. NaN never passes.
"""
from dataclasses import dataclass

import numpy as np

from int4_lora_harness.reference.dequantize import dequantize_exact
from int4_lora_harness.reference.granularity import expand
from int4_lora_harness.reference.packing import unpack
from int4_lora_harness.reference.rounding import FORMATS, float_format, ordinal, round_to, spacing

LAMBDA = 8.0  # probabilistic accumulation constant (term 1)
U32 = FORMATS["fp32"].unit_roundoff  # 2**-24: unit roundoff of the fp32 accumulator
ETA32 = FORMATS["fp32"].underflow_error  # 2**-150: absolute error of one fp32 rounding that underflows
WINDOW = 4.0  # fp32 roundings allowed while computing one weight (term 3)
EXPAND_PRODUCT = 8.0  # a 3xTF32 product in the LoRA expand, in units of u32 (term 4)


@dataclass
class ErrorReport:
    """Per-element numbers behind a verdict; `ratio <= 1` everywhere means within tolerance."""
    design: str  # which correct design explains the result best
    got: np.ndarray  # float64, the candidate's values
    expected: np.ndarray  # float64, the design reference (dequantizer: the correctly rounded value)
    allowed: np.ndarray  # float64 bound per element: linear, absolute, before the final rounding; dequantizer, ulps
    ratio: np.ndarray  # error / allowed (0/0 = 0, x/0 = inf)
    ulps: np.ndarray  # distance from RN(expected) in ulps of the dtype (inf for NaN)

    @property
    def max_ratio(self):
        return float(np.max(self.ratio, initial=0.0))

    @property
    def passed(self):
        return self.max_ratio <= 1.0

    def worst(self):
        """The element with the largest error / allowed: index, expected, got, ulps, allowed, ratio."""
        if self.ratio.size == 0:
            return None
        index = np.unravel_index(int(np.argmax(self.ratio)), self.ratio.shape)
        pick = lambda a: float(a[index])  # noqa: E731
        return dict(index=tuple(int(i) for i in index), expected=pick(self.expected), got=pick(self.got),
                    ulps=pick(self.ulps), allowed=pick(self.allowed), ratio=pick(self.ratio), design=self.design)


def _ratio(error, allowed):
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(error == 0, 0.0, error / allowed)
    return np.where(np.isnan(ratio), np.inf, ratio)


def ulp_distance(got, expected, dtype):
    """|ordinal(got) - ordinal(expected)| as float64; inf where either is NaN."""
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    bad = np.isnan(got) | np.isnan(expected)
    distance = np.abs(ordinal(np.where(bad, 0, got), dtype) - ordinal(np.where(bad, 0, expected), dtype))
    return np.where(bad, np.inf, distance.astype(np.float64))


def dequant_error(got, packed_weights, scales, zero_points, group_size, output_dtype):
    """got: float64 [out, in] values of `output_dtype` -> ErrorReport (allowed in ulps: 0 or 1)."""
    exact = dequantize_exact(packed_weights, scales, zero_points, group_size)
    with np.errstate(over="ignore"):
        expected = round_to(exact, output_dtype).astype(np.float64)
    ulps = ulp_distance(got, expected, output_dtype)
    allowed = np.where(expected == exact, 0.0, 1.0)  # exact where representable, else 1 ulp
    return ErrorReport("correctly rounded", np.asarray(got, np.float64), expected, allowed, _ratio(ulps, allowed), ulps)


def _lora_terms(x, lora_a, lora_b, lora_indices, scaling, u_x, eta_x):
    """(y_lora [M, out], bound [M, out], |y_lora| terms [M, out]) in float64; zeros without adapters."""
    m, k = x.shape
    num_loras, rank, _ = lora_a.shape
    out_features = lora_b.shape[1]
    a = lora_a.astype(np.float64).reshape(num_loras * rank, k)
    mine = (lora_indices[:, None] == np.arange(num_loras)[None, :])[:, :, None]  # [M, L, 1]
    t = np.where(mine, (x @ a.T).reshape(m, num_loras, rank), 0.0).reshape(m, -1)  # [M, L*rank]
    t_abs_sum = np.where(mine, (np.abs(x) @ np.abs(a).T).reshape(m, num_loras, rank), 0.0).reshape(m, -1)
    b = lora_b.astype(np.float64).transpose(0, 2, 1).reshape(num_loras * rank, out_features)  # [L*rank, out]
    y_lora = scaling * (t @ b)
    t_error = LAMBDA * np.sqrt(k) * U32 * t_abs_sum + k * ETA32 + u_x * np.abs(t) + eta_x
    t_error = np.where(mine, t_error.reshape(m, num_loras, rank), 0.0).reshape(m, -1)  # unused adapters add 0
    magnitude = abs(scaling) * (np.abs(t) @ np.abs(b))
    bound = abs(scaling) * (t_error @ np.abs(b)) + (rank + 2 + EXPAND_PRODUCT) * U32 * magnitude + (rank + 2) * ETA32
    return y_lora, bound, magnitude


def _weight_window(packed_weights, scales, zero_points, group_size):
    """float64 [out, in]: how far a weight computed in fp32 may stray before its last rounding (term 3)."""
    v = np.abs(unpack(packed_weights).astype(np.float64))
    out_features, in_features = v.shape
    s = np.abs(expand(scales, out_features, in_features, group_size, "scales"))
    z = 0.0 if zero_points is None else np.abs(expand(zero_points, out_features, in_features, group_size,
                                                      "zero_points"))
    return WINDOW * (U32 * (v + z) * s + ETA32)


def linear_error(got, case):
    """got: float64 [M, out] values of case.x_dtype; case: int4_lora_harness.verify.cases.LinearCase -> ErrorReport."""
    w = case.weights
    x = case.x.astype(np.float64)
    dtype, fmt = case.x_dtype, float_format(case.x_dtype)
    k = x.shape[1]
    exact = dequantize_exact(w.packed, w.scales, w.zero_points, w.group_size)  # [out, in]
    window = _weight_window(w.packed, w.scales, w.zero_points, w.group_size)
    with np.errstate(over="ignore", invalid="ignore"):
        w_x = round_to(exact, dtype).astype(np.float64)
        flips = np.abs(round_to(exact + window, dtype).astype(np.float64) - round_to(exact - window, dtype))
    bias = np.zeros(exact.shape[0]) if case.bias is None else case.bias.astype(np.float64)
    y_lora = bound_lora = mag_lora = 0.0
    if case.lora_a is not None:
        y_lora, bound_lora, mag_lora = _lora_terms(x, case.lora_a, case.lora_b, case.lora_indices, case.scaling,
                                                        fmt.unit_roundoff, fmt.underflow_error)
    got = np.asarray(got, np.float64)
    reports = []
    for design, w_d, slack in (("w in x.dtype", w_x, flips), ("w in fp32", exact, window)):
        with np.errstate(over="ignore", invalid="ignore"):
            y_base = x @ w_d.T + bias
            s_abs = np.abs(x) @ np.abs(w_d).T + np.abs(bias)
            bound = (LAMBDA * np.sqrt(k + 1) + 1) * U32 * s_abs + (k + 1) * ETA32 + np.abs(x) @ slack.T  # terms 1-3
            bound = bound + bound_lora + U32 * (np.abs(y_base) + mag_lora)  # terms 4-5
            expected = y_base + y_lora
            reports.append(_linear_report(design, got, expected, bound, dtype))
        if reports[-1].passed:  # a design that explains the result: no need to try the next
            break
    return min(reports, key=lambda r: r.max_ratio)


def _linear_report(design, got, expected, bound, dtype):
    """Apply term 6 and the overflow rule to one design reference.

    got = RN_x(y') with |y' - y_d| <= bound passes: |got - y_d| <= bound + spacing(got) / 2.
    The ratio is the error beyond that final half spacing, over `bound`.
    """
    fmt = float_format(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        threshold = fmt.max_finite + 0.5 * float(spacing(fmt.max_finite, dtype))  # RN overflows from here on
        may_overflow = np.abs(expected) + bound >= threshold
        must_overflow = np.abs(expected) - bound >= threshold
        excess = np.maximum(np.abs(got - expected) - 0.5 * spacing(got, dtype), 0.0)
        ratio = _ratio(excess, bound)
        inf_ok = np.isinf(got) & may_overflow & (np.sign(got) == np.sign(expected))
        ratio = np.where(inf_ok, 0.0, ratio)
        ratio = np.where(must_overflow & ~np.isinf(got), np.inf, ratio)
        rounded = round_to(expected, dtype)
    return ErrorReport(design, got, expected, bound, ratio, ulp_distance(got, rounded, dtype))
