"""Deliberately wrong implementations (one bug each) and two correct ones written differently.

This is how we know the verifier has teeth: the properties must reject every entry of
DEQUANTIZER_BUGS and LINEAR_BUGS under the `ci` profile and accept every entry of
CORRECT_DEQUANTIZERS and CORRECT_LINEARS. Each bug is a failure class seen in real
kernels (SPEC §6 and the developers' guide); keep the list growing.
"""
import itertools
import math

import torch

from int4_lora_harness.kernels.torch_path import dequantize, lora_delta, round_once, unpack


def _columns(in_features, group_size):
    """The group of each column, c // group_size (group_size None: unused)."""
    return torch.arange(in_features) // (group_size or in_features)


def _per_column(t, group_of_column):
    """Scales or zero points broadcastable to [out, in] (a full copy for grouped: fine in test code)."""
    if t is None:
        return torch.zeros((), dtype=torch.float64)
    t = t.to(torch.float64)
    if t.numel() == 1:
        return t.reshape(1, 1)
    if t.dim() == 1:
        return t.reshape(-1, 1)
    return t[:, group_of_column.clamp(max=t.shape[1] - 1)]


def _finish(v, scales, zero_points, group_size, output_dtype, group_of_column=None):
    """SPEC §3 from signed values v [out, in] on: float64 math, one rounding."""
    if group_of_column is None:
        group_of_column = _columns(v.shape[1], group_size)
    w = (v.double() - _per_column(zero_points, group_of_column)) * _per_column(scales, group_of_column)
    return round_once(w, output_dtype)


# ---- correct dequantizers, written differently from int4_lora_harness.kernels.torch_path ----

def correct_dequantize_fp64_expand(packed_weights, scales, zero_points=None, group_size=None,
                                   output_dtype=torch.float16):
    """Full [out, in] expansion, float64 math, rounded via fp32 (<= 1 ulp, exact where representable)."""
    v = unpack(packed_weights).to(torch.float64)
    cols = _columns(v.shape[1], group_size)
    w = (v - _per_column(zero_points, cols)) * _per_column(scales, cols)
    return w.to(torch.float32).to(output_dtype)


def correct_dequantize_fp32_math(packed_weights, scales, zero_points=None, group_size=None,
                                 output_dtype=torch.float16):
    """(v - z) * s in fp32 registers, then one cast: the usual GPU kernel design."""
    v = unpack(packed_weights).to(torch.float32)
    cols = _columns(v.shape[1], group_size)
    z = _per_column(zero_points, cols).to(torch.float32)
    return ((v - z) * _per_column(scales, cols).to(torch.float32)).to(output_dtype)


# ---- dequantizer bugs ----

def swapped_nibbles(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """High nibble read as the even column."""
    v = torch.stack((packed_weights >> 4, packed_weights & 0x0F), dim=-1).reshape(packed_weights.shape[0], -1)
    return _finish(v.double() - 8, scales, zero_points, group_size, output_dtype)


def twos_complement(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Nibble read as a two's-complement int4 instead of offset binary."""
    q = unpack(packed_weights).double() + 8
    return _finish(torch.where(q >= 8, q - 16, q), scales, zero_points, group_size, output_dtype)


def missing_offset(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Forgets the offset of 8: v = q."""
    return _finish(unpack(packed_weights).double() + 8, scales, zero_points, group_size, output_dtype)


def group_size_inferred(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """group_size = in // num_groups (the seed's guess): wrong when the last group is ragged."""
    in_features = 2 * packed_weights.shape[1]
    grouped = [t for t in (scales, zero_points) if t is not None and t.dim() == 2 and t.numel() > 1]
    if grouped:
        group_size = max(in_features // grouped[0].shape[1], 1)
    return _finish(unpack(packed_weights), scales, zero_points, group_size, output_dtype)


def two_roundings_in_output_dtype(packed_weights, scales, zero_points=None, group_size=None,
                                  output_dtype=torch.float16):
    """The seed: (v - z) and * s computed in the output dtype (two roundings)."""
    v = unpack(packed_weights).to(output_dtype)
    cols = _columns(v.shape[1], group_size)
    return (v - _per_column(zero_points, cols).to(output_dtype)) * _per_column(scales, cols).to(output_dtype)


def half_intermediate(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Computes in fp16 whatever the output dtype: overflows for large scales."""
    return two_roundings_in_output_dtype(packed_weights, scales, zero_points, group_size, torch.float16).to(output_dtype)


def zero_point_added(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """(v + z) * s."""
    neg = None if zero_points is None else -zero_points.double()
    return _finish(unpack(packed_weights).double(), scales, neg, group_size, output_dtype)


def groups_by_column_modulo(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Grouped tensors indexed by c % num_groups instead of c // group_size."""
    in_features = 2 * packed_weights.shape[1]
    num_groups = math.ceil(in_features / group_size) if group_size else 1
    return _finish(unpack(packed_weights), scales, zero_points, group_size, output_dtype,
                   torch.arange(in_features) % num_groups)


def ignores_output_dtype(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Always returns fp32."""
    return dequantize(packed_weights, scales, zero_points, group_size, torch.float32)


def tail_columns_not_written(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Writes only whole tiles of 32 columns; the tail keeps the buffer's zeros."""
    w = dequantize(packed_weights, scales, zero_points, group_size, output_dtype)
    full = (w.shape[1] // 32) * 32
    out = torch.zeros_like(w)
    out[:, :full] = w[:, :full]
    return out


def rounds_scales_in_place(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Converts the caller's scales to fp16 precision in place."""
    scales.copy_(scales.to(torch.float16).to(scales.dtype))
    return dequantize(packed_weights, scales, zero_points, group_size, output_dtype)


_WARM = set()


def rounds_scales_in_place_when_warm(packed_weights, scales, zero_points=None, group_size=None,
                                     output_dtype=torch.float16):
    """Rounds the caller's scales to fp16 precision in place from its second call on the same scales tensor
    (a warm path that "prepares" them): the first call leaves every input as it was."""
    if id(scales) in _WARM:
        scales.copy_(scales.to(torch.float16).to(scales.dtype))
    _WARM.add(id(scales))
    return dequantize(packed_weights, scales, zero_points, group_size, output_dtype)


_CACHE = {}


def cached_by_id(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """The seed: caches the dequantized weight by id(tensor), stale once the tensor is updated."""
    key = (id(packed_weights), output_dtype)
    if key not in _CACHE:
        _CACHE[key] = (packed_weights, dequantize(packed_weights, scales, zero_points, group_size, output_dtype))
    return _CACHE[key][1]


def returns_none_for_bf16(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """The seed: logs and returns None on what it does not support."""
    if output_dtype == torch.bfloat16:
        return None
    return dequantize(packed_weights, scales, zero_points, group_size, output_dtype)


DEQUANTIZER_BUGS = {f.__name__: f for f in (
    swapped_nibbles, twos_complement, missing_offset, group_size_inferred, two_roundings_in_output_dtype,
    half_intermediate, zero_point_added, groups_by_column_modulo, ignores_output_dtype, tail_columns_not_written,
    rounds_scales_in_place, rounds_scales_in_place_when_warm, cached_by_id, returns_none_for_bf16)}
CORRECT_DEQUANTIZERS = {f.__name__: f for f in (correct_dequantize_fp64_expand, correct_dequantize_fp32_math)}


# ---- correct linears, written differently from int4_lora_harness.kernels.torch_path ----

def correct_linear_per_adapter(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices,
                               scaling, bias):
    """fp32 weights, one masked GEMM pair per adapter (a loop over adapters, punica's segments),
    LoRA intermediate rounded to x.dtype."""
    w = correct_dequantize_fp32_math(packed_weights, scales, zero_points, group_size, torch.float32)
    y = x.float() @ w.T
    if bias is not None:
        y = y + bias.float()
    for i in range(0 if lora_a is None else lora_a.shape[0]):
        rows = lora_indices == i
        shrunk = (x[rows].float() @ lora_a[i].float().T).to(x.dtype)  # [tokens, rank] in x.dtype
        y[rows] += scaling * (shrunk.float() @ lora_b[i].float().T)
    return y.to(x.dtype)


def correct_linear_gathered(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices,
                            scaling, bias):
    """Weights rounded to x.dtype, split-K accumulation in two fp32 halves; the shrink of every adapter for every
    token in one GEMM, each token's own gathered from it, and its expand by B gathered per token."""
    w = correct_dequantize_fp64_expand(packed_weights, scales, zero_points, group_size, x.dtype).float()
    half = (x.shape[1] // 4) * 2
    y = x[:, :half].float() @ w[:, :half].T + x[:, half:].float() @ w[:, half:].T
    if bias is not None:
        y = y + bias.float()
    if lora_a is not None:
        num_loras, rank, _ = lora_a.shape
        used = (lora_indices >= 0)[:, None].float()  # [M, 1]
        every = (x.float() @ lora_a.float().reshape(num_loras * rank, -1).T).reshape(-1, num_loras, rank)
        shrunk = every[torch.arange(x.shape[0]), lora_indices.clamp(min=0)][:, :, None]  # [M, rank, 1]
        b = lora_b[lora_indices.clamp(min=0)].float()  # [M, out, rank]
        y = torch.where(used > 0, y + scaling * torch.bmm(b, shrunk)[:, :, 0], y)  # index -1: the base, whatever A, B hold
    return y.to(x.dtype)


def _base(x, packed_weights, scales, zero_points, group_size, bias):
    """Correct x @ W^T + bias in fp32, W rounded once to x.dtype: [M, out] fp32."""
    w = dequantize(packed_weights, scales, zero_points, group_size, x.dtype)
    y = x.float() @ w.float().T
    return y if bias is None else y + bias.float()


def _lora(x, lora_a, lora_b, lora_indices, scaling=1.0):
    """The correct fp32 LoRA delta, scaled, 0 for tokens with index -1 whatever the adapters or scaling hold
    (so that a planted bug shows its own defect, not a NaN spread by the harness's non-finite cases)."""
    return 0.0 if lora_a is None else lora_delta(x, lora_a, lora_b, lora_indices, scaling)


# ---- linear bugs ----

def accumulates_in_half(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices,
                        scaling, bias):
    """An MMA with an x.dtype accumulator: 16 exact products per step, rounded to x.dtype after each."""
    w = dequantize(packed_weights, scales, zero_points, group_size, x.dtype).float()
    acc = torch.zeros(x.shape[0], w.shape[0], dtype=x.dtype)
    for k in range(0, x.shape[1], 16):
        acc = (acc.float() + x[:, k:k + 16].float() @ w[:, k:k + 16].T).to(x.dtype)
    y = acc.float() + (0.0 if bias is None else bias.float())
    return (y + _lora(x, lora_a, lora_b, lora_indices, scaling)).to(x.dtype)


def lora_index_wraps(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias):
    """Index -1 read as the last adapter (Python's negative indexing)."""
    y = _base(x, packed_weights, scales, zero_points, group_size, bias)
    if lora_a is not None:
        wrapped = torch.where(lora_indices < 0, lora_indices + lora_a.shape[0], lora_indices)
        y = y + lora_delta(x, lora_a, lora_b, wrapped, scaling)
    return y.to(x.dtype)


def lora_scaling_ignored(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling,
                         bias):
    y = _base(x, packed_weights, scales, zero_points, group_size, bias)
    return (y + _lora(x, lora_a, lora_b, lora_indices)).to(x.dtype)


def lora_first_token_adapter(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices,
                             scaling, bias):
    """Every token uses the adapter of the first token (one adapter per batch)."""
    y = _base(x, packed_weights, scales, zero_points, group_size, bias)
    return (y + _lora(x, lora_a, lora_b, lora_indices[:1].expand_as(lora_indices), scaling)).to(x.dtype)


def tail_rows_not_written(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling,
                          bias):
    """Only whole tiles of 16 rows are written; the last partial tile stays zero."""
    y = (_base(x, packed_weights, scales, zero_points, group_size, bias)
         + _lora(x, lora_a, lora_b, lora_indices, scaling)).to(x.dtype)
    out = torch.zeros_like(y)
    full = (y.shape[0] // 16) * 16
    out[:full] = y[:full]
    return out


def bias_ignored(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias):
    y = _base(x, packed_weights, scales, zero_points, group_size, None)
    return (y + _lora(x, lora_a, lora_b, lora_indices, scaling)).to(x.dtype)


def lora_intermediate_in_half(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices,
                              scaling, bias):
    """The shrink result kept in fp16 whatever x.dtype: overflow and lost precision."""
    y = _base(x, packed_weights, scales, zero_points, group_size, bias)
    if lora_a is not None:
        t = (x.float() @ lora_a.float().reshape(-1, x.shape[1]).T).to(torch.float16)  # [M, L * rank] in fp16
        num_loras, rank = lora_a.shape[:2]
        mine = (lora_indices[:, None] == torch.arange(num_loras)[None, :])[:, :, None]
        t = torch.where(mine, t.float().view(-1, num_loras, rank), 0.0).reshape(x.shape[0], -1)
        delta = scaling * (t @ lora_b.float().permute(0, 2, 1).reshape(num_loras * rank, -1))
        y = torch.where((lora_indices >= 0)[:, None], y + delta, y)  # the defect is the fp16 intermediate only
    return y.to(x.dtype)


def linear_with_inferred_group_size(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices,
                                    scaling, bias):
    """A correct GEMM on weights from group_size_inferred."""
    w = group_size_inferred(packed_weights, scales, zero_points, group_size, x.dtype)
    y = x.float() @ w.float().T + (0.0 if bias is None else bias.float())
    return (y + _lora(x, lora_a, lora_b, lora_indices, scaling)).to(x.dtype)


_arrivals = itertools.count()


def split_k_in_arrival_order(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices,
                             scaling, bias):
    """Split-K partial sums added in the order they arrive (as atomics land): a different order each call.

    Every order is an fp32 accumulation within tolerance; the bug is that two calls differ bitwise.
    """
    w = dequantize(packed_weights, scales, zero_points, group_size, x.dtype).float()
    parts = [x[:, k].float() @ w[:, k].T for k in torch.arange(x.shape[1]).chunk(4)]  # 4 K slices: [M, out] each
    first = next(_arrivals) % len(parts)
    y = sum(parts[first:] + parts[:first], torch.zeros(()))
    y = y + (0.0 if bias is None else bias.float())
    return (y + _lora(x, lora_a, lora_b, lora_indices, scaling)).to(x.dtype)


LINEAR_BUGS = {f.__name__: f for f in (
    accumulates_in_half, lora_index_wraps, lora_scaling_ignored, lora_first_token_adapter, tail_rows_not_written,
    bias_ignored, lora_intermediate_in_half, linear_with_inferred_group_size, split_k_in_arrival_order)}
# The property each bug must be caught by where values alone would not show it.
CAUGHT_BY = {"rounds_scales_in_place": "inputs unchanged", "rounds_scales_in_place_when_warm": "inputs unchanged", "cached_by_id": "tracks input updates",
             "split_k_in_arrival_order": "deterministic"}
CORRECT_LINEARS = {f.__name__: f for f in (correct_linear_per_adapter, correct_linear_gathered)}


def lora_one_hot_mask_spreads_nan(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices,
                                  scaling, bias):
    """Every adapter's shrink computed for every token, then masked by multiplying with a one-hot matrix: one
    adapter's NaN or inf reaches every token (0 * inf = NaN), those with index -1 too."""
    y = _base(x, packed_weights, scales, zero_points, group_size, bias)
    if lora_a is not None:
        num_loras, rank = lora_a.shape[:2]
        t = x.float() @ lora_a.float().reshape(num_loras * rank, -1).T  # [M, L * rank]
        mask = (lora_indices[:, None] == torch.arange(num_loras)[None, :]).float().repeat_interleave(rank, dim=1)
        y = y + scaling * ((t * mask) @ lora_b.float().permute(0, 2, 1).reshape(num_loras * rank, -1))
    return y.to(x.dtype)


LINEAR_BUGS[lora_one_hot_mask_spreads_nan.__name__] = lora_one_hot_mask_spreads_nan
