"""The vectorized torch path: SPEC §3 and §4 with the same code on CPU and CUDA.

No Python loop over rows or tokens; scales and zero points broadcast through views
(never expanded to [out, in]); LoRA gathered per token with a one-hot mask, so an
index of -1 adds nothing.

Numerics: the dequantizer computes in fp32 where that is exact (fp16/bf16 scales, no zero
points or small integer ones), else in float64, and rounds once to the output dtype (from
float64: round-to-odd to fp32 first, which makes the nearest-even rounding to fp16/bf16 exact). The linear
dequantizes to x.dtype, accumulates in fp32, keeps the LoRA intermediate in fp32
and rounds once to x.dtype at the end.
"""
import math

import torch

from int4_lora_harness.kernels.checks import validate_linear, validate_output_dtype, validate_weights, integer_zeros_within


def unpack(packed_weights):
    """uint8 [out, in // 2] -> int8 [out, in] in [-8, 7] (low nibble = even column)."""
    low = (packed_weights & 0x0F).to(torch.int8) - 8
    high = (packed_weights >> 4).to(torch.int8) - 8
    return torch.stack((low, high), dim=-1).reshape(packed_weights.shape[0], -1)


def _grouped_view(t, kind, out_features, num_groups):
    """View of scales/zero points that broadcasts against weights shaped [out, groups, group_size]."""
    if kind == "per-tensor":
        return t.reshape(1, 1, 1)
    if kind == "per-channel":
        return t.reshape(out_features, 1, 1)
    return t.reshape(out_features, num_groups, 1)


def round_once(w64, dtype):
    """float64 tensor -> `dtype` with a single round-to-nearest-even.

    float64 -> fp32 rounds to odd (truncate, then set the last bit if inexact): fp32
    keeps >= 2 more bits than fp16/bf16, so the final nearest-even cast is exact.
    """
    w32 = w64.to(torch.float32)
    if dtype == torch.float32:
        return w32
    rounded_away = w32.to(torch.float64).abs() > w64.abs()
    inexact = w32.to(torch.float64) != w64
    bits = w32.view(torch.int32) - rounded_away.to(torch.int32)  # one ulp back toward zero
    bits = bits | inexact.to(torch.int32)  # sticky bit
    return bits.view(torch.float32).to(dtype)


SIGNIFICAND_BITS = {torch.float16: 11, torch.bfloat16: 8}


def exact_in_fp32(scales, zero_points):
    """True when every (v - z) * s is exact in fp32 (24-bit significands): fp16 (11-bit) or bf16
    (8-bit) scales, and integer v - z (v in [-8, 7]) of at most 13 / 16 bits, i.e. no zero points
    or integer ones with |z| <= 2**13 - 8 / 2**16 - 8: 8-bit dtypes always, wider ones by value
    (one reduction). Underflow cannot break it (fp32 reaches below both scale dtypes' subnormals)."""
    bits = SIGNIFICAND_BITS.get(scales.dtype)
    if bits is None:
        return False
    return zero_points is None or integer_zeros_within(zero_points, 2 ** (24 - bits) - 8)


def dequantize(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """uint8 [out, in // 2] + scales/zero points (SPEC §2) -> `output_dtype` [out, in], rounded once.

    Computes in fp32 where that is exact (exact_in_fp32), else in float64 with round_once.
    """
    out_features, in_features, scale_kind, zero_kind = validate_weights(packed_weights, scales, zero_points, group_size)
    validate_output_dtype(output_dtype)
    grouped = "grouped" in (scale_kind, zero_kind)
    width = group_size if grouped else in_features
    num_groups = math.ceil(in_features / width)
    compute = torch.float32 if exact_in_fp32(scales, zero_points) else torch.float64
    v = unpack(packed_weights).to(compute)  # [out, in]
    v = torch.nn.functional.pad(v, (0, num_groups * width - in_features))  # ragged last group
    v = v.view(out_features, num_groups, width)  # [out, groups, group_size]
    if zero_points is not None:
        v = v - _grouped_view(zero_points.to(compute), zero_kind, out_features, num_groups)
    w = v * _grouped_view(scales.to(compute), scale_kind, out_features, num_groups)
    w = w.reshape(out_features, -1)[:, :in_features]
    return w.to(output_dtype) if compute == torch.float32 else round_once(w, output_dtype)


def lora_delta(x, lora_a, lora_b, lora_indices):
    """fp32 [M, out]: (x[m] @ A[i_m]^T) @ B[i_m]^T per token, 0 where i_m = -1.

    x: [M, in]; lora_a: [L, rank, in]; lora_b: [L, out, rank]; lora_indices: int [M].
    """
    num_loras, rank, in_features = lora_a.shape
    m, out_features = x.shape[0], lora_b.shape[1]
    shrunk = x.float() @ lora_a.float().reshape(num_loras * rank, in_features).T  # [M, L * rank]
    adapters = torch.arange(num_loras, device=x.device)
    mine = (lora_indices[:, None] == adapters[None, :])[:, :, None]  # [M, L, 1]; -1 matches none
    shrunk = torch.where(mine, shrunk.view(m, num_loras, rank), 0.0)  # [M, L, rank]
    expand = lora_b.float().permute(0, 2, 1).reshape(num_loras * rank, out_features)  # [L * rank, out]
    return shrunk.reshape(m, num_loras * rank) @ expand


def linear(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias):
    """SPEC §4: x [M, in] (fp16/bf16/fp32) -> [M, out] in x.dtype."""
    validate_linear(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, bias)
    w = dequantize(packed_weights, scales, zero_points, group_size, output_dtype=x.dtype)  # [out, in]
    y = x.float() @ w.float().T  # [M, out], fp32 accumulation
    if bias is not None:
        y = y + bias.float()
    if lora_a is not None:
        y = y + scaling * lora_delta(x, lora_a, lora_b, lora_indices)
    return y.to(x.dtype)
