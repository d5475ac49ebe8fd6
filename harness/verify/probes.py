"""Probes: inputs built so that a defect only large shapes reach shows as an exact mismatch (docs/contract.md#linear).

A bound on random data at K = 14336 is about one product term, so fp16 split-K partial sums, a
double-rounded weight inside a fused linear or a narrower LoRA intermediate pass it. Three probes
make every correct design give one known answer, whatever its accumulation order or tiling:

exact    small-integer activations (7..15) and weights with power-of-two scales: every product is
         an integer (|.| <= 210) and every partial sum of any subset of products is an integer below
         2**24, so any fp32 accumulation, in any order or split, is exact and every correct design
         returns RN_x(y). The weights' sign alternates every 256 columns (a negative run's groups
         share the scales of the positive run before it), so each aligned 32..256-column partial
         sum is a same-sign run of a few thousand (odd integers above 2048 are not fp16 numbers;
         bf16 keeps 8 bits) while y, a sum of runs that nearly cancel in pairs, stays within a few
         thousand, where x's dtype still resolves the error a half-precision partial sum, a
         skipped tile or a wrong tile offset leaves: judged bit for bit. With adapters and a bias
         (`tokens`): integer biases and sparse adapters of +-1 (a few columns of A per rank, one
         rank of B per output), so the shrink is an integer below 64 and the delta a half-integer
         below 32, exact in every dtype; the two answers docs/contract.md#linear allows (one rounding, or the
         base rounded first and the delta added: unfused) are both computed, and a result must
         equal one of them everywhere. Scales may be shifted far below fp16's range (bf16 or fp32
         scales only), the biases and adapters with them.
columns  one-hot activation rows at tile and group boundaries (first and last column, multiples
         of 16/32/64/128/256 and their neighbours, the ragged last group), so y[m] = W[:, c_m]
         and the weight inside the linear is held to the dequantizer's standard: <= 1 ulp from
         RN_x(W), equal where W is representable (widened only where computing W in fp32 as
         v*s - z*s may cross a tie: term 3's window).
lora     a zero base, one-hot activations and one-hot ranks in B: y[m, o] = scaling * A[i_m][o %
         rank, c_m], with A's values exact in x's dtype but not in a narrower one (fp16: 11-bit
         significands bf16 cannot hold; bf16: magnitudes fp16 cannot hold; fp32: 24 bits);
         tokens alternate adapters across every 16-row tile boundary, past a 64-row one (M = 80).
         Judged bit for bit.
"""
import numpy as np

from int4_lora_harness.reference.packing import pack
from int4_lora_harness.reference.rounding import rounded
from int4_lora_harness.verify.cases import LinearCase, Weights
from int4_lora_harness.verify.designs import PROBE_DESIGN
from int4_lora_harness.verify.judgement import Tally, row_blocks, weight_rows
from int4_lora_harness.verify.tolerance import ratio_of, ulp_distance, weight_window

PROBES = ("exact", "columns", "lora")
RUN = 256  # columns of same-sign products: any aligned 32..256-column partial sum is coherent (> 2048)
EXACT_M = 20  # tokens: more than one 16-row tile
TILES = (16, 32, 64, 128, 256)


def _zero_points(rng, kind, shape, fractional):
    """Integer zero points in [-3, 2], or half-integers k + 0.5 in [-3.5, 2.5], of `shape` [rows, groups]."""
    return rng.integers(-4, 3, size=shape) + 0.5 if fractional else rng.integers(-3, 3, size=shape).astype(np.float64)


def _granular(t, granularity, out_features, groups):
    """A [out, groups] array reduced to the granularity's shape (per-tensor: [1]; per-channel: [out])."""
    if granularity == "per-tensor":
        return t[:1, :1].reshape(1)
    if granularity == "per-channel":
        return t[:, 0].copy()
    return t


def exact_weights(rng, out_features, in_features, group_size, scale_granularity, zero_granularity, zero_kind,
                  scales_dtype, scale_shift=0):
    """Weights W = u * s, the sign of u alternating every RUN columns: |u| in {3, 4, 5} and s in {1, 2}, or with
    half-integer zero points |u| in {1.5, 2.5, 3.5} and s in {2, 4} (W an integer either way, odd or even; the
    nibble v = u + z stays in [-8, 7]), every s times 2**scale_shift. Integer arithmetic on 2u and 2z
    throughout: exact, and cheap."""
    groups = -(-in_features // group_size) if "grouped" in (scale_granularity, zero_granularity) else 1
    fractional = zero_granularity is not None and zero_kind in ("float", "fp32")
    sign = np.where((np.arange(in_features) // RUN) % 2 == 0, 1, -1).astype(np.int8)  # [in]: same-sign runs
    # 2u, then 2v, in one int8 array changed in place (a layer's worth of int8, not a new one per step)
    twice_v = rng.integers(1, 4, size=(out_features, in_features), dtype=np.int8) if fractional else \
        rng.integers(3, 6, size=(out_features, in_features), dtype=np.int8)
    twice_v *= 2
    twice_v += 1 if fractional else 0
    twice_v *= sign  # 2u: odd (half-integer u) or even
    exponents = rng.integers(0, 2, size=(out_features, groups)) + (1 if fractional else 0) + scale_shift
    width = group_size if groups > 1 else in_features
    if groups > 1 and RUN % width == 0:  # a negative run's groups take the scales of the positive run before it
        per_run = RUN // width
        for g in range(groups):
            if (g // per_run) % 2:
                exponents[:, g] = exponents[:, g - per_run]
    scales = _granular(np.exp2(exponents.astype(np.float64)), scale_granularity, out_features, groups)
    zeros, zero_dtype = None, None
    if zero_granularity is not None:
        zeros = _granular(_zero_points(rng, zero_kind, (out_features, groups), fractional), zero_granularity,
                          out_features, groups)
        zero_dtype = (scales_dtype if zero_kind == "float" else zero_kind) if fractional else zero_kind
        zeros = zeros.astype(zero_dtype) if zero_dtype.startswith("int") else zeros
        twice_z = np.rint(2 * np.asarray(zeros, np.float64)).astype(np.int8)
        assert np.all((twice_z & 1) == int(fractional)), "2z must be odd exactly where 2u is: 2v even"
        _add_per_weight(twice_v, twice_z, width)  # 2v = 2u + 2z
    v = np.right_shift(twice_v, 1, out=twice_v)  # v = 2v / 2: exact, 2v being even
    assert -8 <= v.min() and v.max() <= 7, "probe nibbles must lie in [-8, 7]"
    uses_groups = "grouped" in (scale_granularity, zero_granularity)
    return Weights(pack(v), scales, scales_dtype, zeros, zero_dtype, group_size if uses_groups else None)


def _add_per_weight(values, t, width):
    """values [out, in] += t, one value per tensor ([1]), row ([out]) or group of `width` columns ([out, groups]),
    in place."""
    t = np.asarray(t)
    if t.ndim < 2:
        values += t.reshape(-1, 1)
        return
    for g in range(t.shape[1]):
        values[:, g * width:(g + 1) * width] += t[:, g:g + 1]


def exact_probe(seed, out_features, in_features, x_dtype, group_size=128, scale_granularity="grouped",
                zero_granularity=None, zero_kind="int8", scales_dtype=None, m=EXACT_M, tokens=None, scale_shift=0):
    """A LinearCase every correct design computes exactly (module docstring): x [m, in] of integers 7..15;
    tokens: None (no adapters, no bias) or dict(num_loras, rank, popularity, bias) (exact_tokens)."""
    rng = np.random.default_rng(seed)
    weights = exact_weights(rng, out_features, in_features, group_size, scale_granularity, zero_granularity,
                            zero_kind, scales_dtype or x_dtype, scale_shift)
    x = rng.integers(7, 16, size=(m, in_features)).astype(np.float64)  # positive: runs stay coherent
    notes = dict(probe="exact", seed=seed)
    if not tokens:
        return LinearCase(weights, x, x_dtype, None, None, np.full(m, -1, np.int32), 1.0, None, notes, "exact")
    lora_a, lora_b, indices, bias = exact_tokens(rng, m, out_features, in_features, unit=2.0 ** scale_shift,
                                                 **tokens)
    notes = dict(notes, popularity=tokens["popularity"])
    return LinearCase(weights, x, x_dtype, lora_a, lora_b, indices, 0.5, bias, notes, "exact")


def exact_tokens(rng, m, out_features, in_features, num_loras, rank, popularity, bias, unit=1.0):
    """(lora_a [L, rank, in], lora_b [L, out, rank], indices int32 [m], bias [out] | None) for exact_probe:
    each rank of A is +-unit at 4 columns (the shrink of x in 7..15: an integer multiple of unit, |.| <= 60),
    each output's row of B one +-1 at rank o % rank, and the bias integers in [-256, 256] times unit; with
    scaling 0.5 the delta is a half-integer multiple of unit below 32: exact in every dtype."""
    from int4_lora_harness.verify.cases import make_lora_indices
    b = rng.integers(-256, 257, size=out_features) * unit if bias else None
    if not num_loras:
        return None, None, np.full(m, -1, np.int32), b
    lora_a = np.zeros((num_loras, rank, in_features))
    for i in range(num_loras):
        for r in range(rank):
            lora_a[i, r, rng.choice(in_features, size=4, replace=False)] = rng.choice([-unit, unit], size=4)
    lora_b = np.zeros((num_loras, out_features, rank))
    lora_b[:, np.arange(out_features), np.arange(out_features) % rank] = rng.choice([-1.0, 1.0],
                                                                                   size=(num_loras, out_features))
    return lora_a, lora_b, make_lora_indices(rng, m, num_loras, popularity), b


def probe_columns(in_features, group_size):
    """Columns at tile and group boundaries, sorted: first, last, T - 1, T, T + 1 for the tile sizes, the last
    group's first column, and the middle; at most 64."""
    cols = {0, 1, in_features - 2, in_features - 1, in_features // 2}
    for t in TILES:
        cols |= {t - 1, t, t + 1, in_features - t}
    if group_size:
        cols |= {(in_features - 1) // group_size * group_size, group_size - 1, group_size}
    return sorted(c for c in cols if 0 <= c < in_features)[:64]


def columns_probe(weights, x_dtype, seed=0, m=None):
    """A LinearCase of one-hot rows at probe_columns over `weights` (random, inexact scales and zero points):
    one row per probed column, or m rows taking the columns in turn."""
    out_features, in_features = weights.shape
    cols = probe_columns(in_features, weights.group_size)
    cols = cols if m is None else [cols[i % len(cols)] for i in range(m)]
    x = np.zeros((len(cols), in_features))
    x[np.arange(len(cols)), cols] = 1.0
    notes = dict(probe="columns", columns=cols, seed=seed)
    return LinearCase(weights, x, x_dtype, None, None, np.full(len(cols), -1, np.int32), 1.0, None, notes, "columns")


def lora_values(rng, shape, x_dtype):
    """Adapter values exact in x_dtype and not in a narrower format (see the module docstring)."""
    if x_dtype == "fp16":
        odd = 2 * rng.integers(0, 512, size=shape) + 1  # 1 + odd * 2**-10: 11 significant bits
        return (1.0 + odd * 2.0 ** -10) * rng.choice([-1.0, 1.0], size=shape) * 2.0 ** rng.integers(-4, 2, size=shape)
    if x_dtype == "bf16":
        return (1.0 + rng.integers(0, 128, size=shape) * 2.0 ** -7) * rng.choice([-1.0, 1.0], size=shape) * 2.0 ** 17
    return (1.0 + (2 * rng.integers(0, 2 ** 22, size=shape) + 1) * 2.0 ** -23) * rng.choice([-1.0, 1.0], size=shape)


def lora_probe(seed, out_features, in_features, x_dtype, num_loras=4, rank=16, m=80, scaling=0.5):
    """A LinearCase with a zero base whose output is the shrink intermediate itself (module docstring)."""
    rng = np.random.default_rng(seed)
    weights = Weights(np.full((out_features, in_features // 2), 0x88, np.uint8), np.ones(1), "fp16", None, None, None)
    cols = rng.choice(in_features, size=m, replace=in_features < m)
    x = np.zeros((m, in_features))
    x[np.arange(m), cols] = 1.0
    lora_a = np.zeros((num_loras, rank, in_features))
    lora_a[:, :, cols] = lora_values(rng, (num_loras, rank, m), x_dtype)
    lora_b = np.zeros((num_loras, out_features, rank))
    lora_b[:, np.arange(out_features), np.arange(out_features) % rank] = 1.0
    indices = np.arange(m) % (num_loras + 1) - 1  # -1, 0, 1, ...: neighbours differ, across row 16 too
    notes = dict(probe="lora", seed=seed)
    return LinearCase(weights, x, x_dtype, lora_a, lora_b, indices.astype(np.int32), float(scaling), None, notes,
                      "exact")


# --- judging probes -------------------------------------------------------------------------------

def exact_expected(case):
    """(single, unfused): float64 [M, out], RN_x of the exact result, and RN_x(RN_x(x @ W^T + bias) + delta),
    docs/contract.md#linear's unfused answer (the same values without adapters), by row blocks; exact in float64 (integer
    partial sums / one-hot)."""
    from int4_lora_harness.reference.linear import base_exact, lora_exact
    from int4_lora_harness.verify import gemm
    from int4_lora_harness.verify.tables import block_weights
    w = case.weights
    x = case.x.astype(np.float64)
    y = np.zeros((x.shape[0], w.shape[0]))
    zero_base = w.zero_points is None and not np.any(w.packed != 0x88)  # every v = 0: W = 0 (the lora probe)
    space = {}
    for rows in [] if zero_base else row_blocks(*w.shape):
        packed, scales, zeros = weight_rows(w, rows)
        bias = None if case.bias is None else case.bias[rows]
        exact = block_weights(packed, scales, zeros, w.group_size, None, need_exact=False, space=space).w
        y[:, rows] = base_exact(x, exact, bias, gemm.products)
    if zero_base and case.bias is not None:
        y += case.bias
    if case.lora_a is None:
        single = rounded(y, case.x_dtype)
        return single, single
    delta = lora_exact(x, case.lora_a, case.lora_b, case.lora_indices, case.scaling)
    return rounded(y + delta, case.x_dtype), rounded(rounded(y, case.x_dtype) + delta, case.x_dtype)


def exact_judgement(got, case):
    """Bit for bit against one of exact_expected's answers, the one that agrees with `got` in more elements:
    ratio 0 where equal, inf elsewhere (ulps say how far)."""
    got = np.asarray(got, np.float64)
    expected, unfused = exact_expected(case)
    ulps = ulp_distance(got, expected, case.x_dtype)
    if unfused is not expected and np.any(ulps):
        other = ulp_distance(got, unfused, case.x_dtype)
        if np.count_nonzero(other) < np.count_nonzero(ulps):
            expected, ulps = unfused, other
    ratio = np.where(ulps == 0, 0.0, np.inf)
    tally = Tally(PROBE_DESIGN, got.size)
    tally.add(ratio, ulps, lambda i, j: dict(index=(int(i), int(j)), expected=float(expected[i, j]),
                                             got=float(got[i, j]), ulps=float(ulps[i, j]), allowed=0.0,
                                             ratio=float(ratio[i, j]), inputs=dict(probe=case.notes.get("probe"),
                                             lora_index=int(case.lora_indices[i]))))
    return tally.judgement()


def at_columns(weights, cols):
    """The weights of columns `cols` only, as Weights of their own (each column its own group of one), so that
    reference.dequantize_exact computes W[:, cols] without the rest of the layer."""
    from dataclasses import replace

    from int4_lora_harness.reference.packing import unpack
    out_features, in_features = weights.shape
    cols = np.asarray(cols)
    pairs = np.r_[cols, cols[-1:]] if cols.size % 2 else cols  # pack needs an even number of columns

    def pick(t):
        if t is None:
            return None
        t = np.asarray(t)
        if t.size == 1:
            return np.broadcast_to(t.reshape(1, 1), (out_features, pairs.size)).copy()
        if t.ndim == 1:
            return np.repeat(t[:, None], pairs.size, axis=1)
        return t[:, np.minimum(pairs // min(weights.group_size, in_features), t.shape[1] - 1)]
    nibbles = unpack(weights.packed[:, pairs // 2])  # the bytes of the probed columns only: [out, 2 * pairs]
    packed = pack(nibbles[:, 2 * np.arange(pairs.size) + pairs % 2])  # column c: byte c // 2, nibble c % 2
    return replace(weights, packed=packed, scales=pick(weights.scales), zero_points=pick(weights.zero_points),
                   group_size=1), cols.size


def columns_judgement(got, case):
    """Each y[m, o] = W[o, c_m] held to the dequantizer's standard (module docstring), from the probed columns."""
    from int4_lora_harness.reference.dequantize import dequantize_exact
    from int4_lora_harness.verify.tolerance import fp32_exact
    cols = case.notes["columns"]
    got = np.asarray(got, np.float64)
    w, n = at_columns(case.weights, cols)
    exact = dequantize_exact(w.packed, w.scales, w.zero_points, 1)[:, :n].T  # [M, out]
    with np.errstate(over="ignore", invalid="ignore"):
        expected = rounded(exact, case.x_dtype)
        spread = 0.0
        if not fp32_exact(case.weights):  # a weight computed in fp32 may round either way near a tie
            window = weight_window(w.packed, w.scales, w.zero_points, 1)[:, :n].T
            low, high = (rounded(exact + sign * window, case.x_dtype) for sign in (-1, 1))
            spread = np.maximum(ulp_distance(low, expected, case.x_dtype), ulp_distance(high, expected, case.x_dtype))
    ulps = ulp_distance(got, expected, case.x_dtype)
    allowed = np.maximum(np.where(expected == exact, 0.0, 1.0), spread)
    ratio = ratio_of(ulps, allowed)
    tally = Tally(PROBE_DESIGN, got.size)
    tally.add(ratio, ulps, lambda i, j: dict(index=(int(i), int(j)), expected=float(expected[i, j]),
                                             got=float(got[i, j]), ulps=float(ulps[i, j]),
                                             allowed=float(allowed[i, j]), ratio=float(ratio[i, j]),
                                             inputs=dict(probe="columns", column=int(cols[i]),
                                                         exact_weight=float(exact[i, j]))))
    return tally.judgement()


def probe_judgement(got, case):
    """The judgement of a probe case (case.expect 'exact' or 'columns')."""
    return columns_judgement(got, case) if case.expect == "columns" else exact_judgement(got, case)
