"""Defects that switch on only at production shapes (in_features >= 4096 or M >= 64), where real kernels take
their split-K and big-tile paths: correct below, wrong above. Random data at K = 14336 cannot show the first
three (the bound is about one product term there); the probes of harness.verify.probes must.
"""
import torch

from planted.bugs import _base, _lora, correct_linear_gathered
from planted.bugs import dequantize, unpack

LARGE_K, LARGE_M = 4096, 64


def _finish(y, x, lora_a, lora_b, lora_indices, scaling):
    return (y + _lora(x, lora_a, lora_b, lora_indices, scaling)).to(x.dtype)


def fp16_partial_sums_past_4096(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices,
                                scaling, bias):
    """Split-K partial sums of 64 columns rounded to fp16 before their fp32 sum."""
    if x.shape[1] < LARGE_K:
        return correct_linear_gathered(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b,
                                       lora_indices, scaling, bias)
    w = dequantize(packed_weights, scales, zero_points, group_size, x.dtype).float()
    y = sum((x[:, k:k + 64].float() @ w[:, k:k + 64].T).half().float() for k in range(0, x.shape[1], 64))
    y = y + (0.0 if bias is None else bias.float())
    return _finish(y, x, lora_a, lora_b, lora_indices, scaling)


def seed_dequantization_past_4096(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices,
                                  scaling, bias):
    """The seed's two roundings inside the linear: v - z in x.dtype, then * s in x.dtype."""
    if x.shape[1] < LARGE_K:
        return correct_linear_gathered(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b,
                                       lora_indices, scaling, bias)
    in_features = x.shape[1]
    cols = torch.arange(in_features) // (group_size or in_features)
    per_column = lambda t: t.reshape(1, 1) if t.numel() == 1 else t.reshape(-1, 1) if t.dim() == 1 else \
        t[:, cols.clamp(max=t.shape[1] - 1)]  # noqa: E731
    v = unpack(packed_weights).to(x.dtype)
    if zero_points is not None:
        v = v - per_column(zero_points).to(x.dtype)
    w = (v * per_column(scales).to(x.dtype)).float()
    y = x.float() @ w.T + (0.0 if bias is None else bias.float())
    return _finish(y, x, lora_a, lora_b, lora_indices, scaling)


def bf16_lora_intermediate_past_4096(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b,
                                     lora_indices, scaling, bias):
    """The shrink result x @ A^T kept in bf16 for fp16 activations."""
    y = _base(x, packed_weights, scales, zero_points, group_size, bias)
    if lora_a is None:
        return y.to(x.dtype)
    narrow = torch.bfloat16 if x.shape[1] >= LARGE_K and x.dtype == torch.float16 else torch.float32
    for i in range(lora_a.shape[0]):
        rows = lora_indices == i
        t = (x[rows].float() @ lora_a[i].float().T).to(narrow).float()  # [tokens, rank]
        y[rows] += scaling * (t @ lora_b[i].float().T)
    return y.to(x.dtype)


def last_column_dropped_past_4096(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices,
                                  scaling, bias):
    """A K tail of one column never read (the last column's products are left out)."""
    y = _base(x, packed_weights, scales, zero_points, group_size, bias)
    if x.shape[1] >= LARGE_K:
        w = dequantize(packed_weights, scales, zero_points, group_size, x.dtype).float()
        y = y - x[:, -1:].float() * w[:, -1][None, :]
    return _finish(y, x, lora_a, lora_b, lora_indices, scaling)


def lora_index_of_the_previous_tile_past_64(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b,
                                            lora_indices, scaling, bias):
    """From token 64 on, the adapter index is read at the previous 64-row tile's offset."""
    indices = lora_indices.clone()
    if x.shape[0] >= LARGE_M:
        indices[LARGE_M:] = lora_indices[:x.shape[0] - LARGE_M]
    return _finish(_base(x, packed_weights, scales, zero_points, group_size, bias), x, lora_a, lora_b, indices,
                   scaling)


def bias_dropped_past_64(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling,
                         bias):
    """Tokens from 64 on get no bias (the second tile's epilogue forgets it)."""
    y = _base(x, packed_weights, scales, zero_points, group_size, bias)
    if bias is not None and x.shape[0] >= LARGE_M:
        y[LARGE_M:] -= bias.float()
    return _finish(y, x, lora_a, lora_b, lora_indices, scaling)


LARGE_SHAPE_BUGS = {f.__name__: f for f in (
    fp16_partial_sums_past_4096, seed_dequantization_past_4096, bf16_lora_intermediate_past_4096,
    last_column_dropped_past_4096, lora_index_of_the_previous_tile_past_64, bias_dropped_past_64)}


def dequantize_raises_past_a_million_weights(packed_weights, scales, zero_points=None, group_size=None,
                                             output_dtype=torch.float16):
    """A dequantizer correct below 2**20 weights that raises above (a launch that fails at real layer sizes): every
    large-tier case fails at its first call, and nothing below the large tier does."""
    if packed_weights.shape[0] * packed_weights.shape[1] * 2 > 2 ** 20:
        raise RuntimeError("too many weights for one launch")
    return dequantize(packed_weights, scales, zero_points, group_size, output_dtype)
