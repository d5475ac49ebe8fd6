"""The seed's dequantization (the system this harness replaces), rewritten as a timing baseline under the dequantizer contract.

What it computes, as the system we replace does: unpack every nibble into a full [out, in]
tensor, convert v to `output_dtype`, subtract the zero points in `output_dtype`, multiply by
the scales in `output_dtype` (two roundings, and fp16 overflow for large scales), with grouped
scales and zero points repeated out to [out, in] first. Its group size is inferred, as the
seed's module path does, as in_features // num_groups from the scales (the `group_size`
argument is ignored for them), so a ragged last group is an error. It checks nothing but the
packed dtype.

For benchmarks only: it is not correct (docs/contract.md#dequantizer) and nothing else may call it.
"""
import torch


def seed_unpack(packed_weights):
    """uint8 [out, in // 2] -> int8 [out, in] in [-8, 7], through a zero-filled uint8 [out, in] copy."""
    out_features, half = packed_weights.shape
    nibbles = torch.zeros((out_features, 2 * half), dtype=torch.uint8, device=packed_weights.device)
    nibbles[:, 0::2] = packed_weights & 0x0F  # even columns
    nibbles[:, 1::2] = (packed_weights >> 4) & 0x0F  # odd columns
    return nibbles.to(torch.int8) - 8


def seed_per_column(t, out_features, in_features, group_size):
    """Scales or zero points -> a tensor that broadcasts against [out, in], grouped ones repeated out in full."""
    if t.numel() == 1:
        return t.reshape(())
    if t.dim() == 1 and t.shape[0] == out_features:
        return t.view(-1, 1)
    if t.dim() == 2:
        repeated = t.unsqueeze(2).repeat(1, 1, group_size)  # [out, groups, group_size]
        return repeated.view(out_features, -1)[:, :in_features]  # [out, groups * group_size] cut to [out, in]
    raise ValueError(f"unsupported shape {list(t.shape)}")


def seed_dequantize(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """uint8 [out, in // 2] -> output_dtype [out, in]: ((v - z) in output_dtype) * s in output_dtype.

    scales: [1], [out] or [out, num_groups] (then group_size = in // num_groups); zero_points:
    None or the same kinds of shape; group_size: unused when the scales are grouped (inferred),
    else used for grouped zero points.
    """
    if packed_weights.dtype != torch.uint8:
        raise ValueError(f"packed_weights must be uint8, got {packed_weights.dtype}")
    out_features, in_features = packed_weights.shape[0], 2 * packed_weights.shape[1]
    if scales.dim() == 2:
        group_size = in_features // scales.shape[1]  # the seed's inference
    w = seed_unpack(packed_weights).to(output_dtype)  # [out, in]
    if zero_points is not None:
        w = w - seed_per_column(zero_points, out_features, in_features, group_size).to(output_dtype)
    return w * seed_per_column(scales, out_features, in_features, group_size).to(output_dtype)
