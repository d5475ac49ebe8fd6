"""The baselines every candidate is timed beside, under the contracts' signatures (called by keyword).

dense        weights dequantized once, ahead of time (a dense x.dtype GEMM via cuBLAS / oneDNN plus the torch
             path's fp32 LoRA): the speed to beat and the memory to save. Its contract form dequantizes on
             every call so that it can be checked; the timed form (`dense_forward`) holds no packed weights.
materialize  dequantize to x.dtype on every call, then the same dense GEMM: what the seed did (it rounds once
             when v - z is an integer and the scales are of x.dtype, as in every grid; it never infers a
             group size).
The seed's own algorithm (two roundings, inferred group size) is harness.bench.seed.
"""
import torch
import torch.nn.functional as F

from int4_lora_harness.kernels.checks import validate_weights
from int4_lora_harness.kernels.torch_path import dequantize, lora_delta, unpack


def dense_forward(x, w, lora_a, lora_b, lora_indices, scaling, bias):
    """x [M, in] @ w[out, in]^T + bias in x.dtype, + the torch path's fp32 LoRA delta."""
    y = F.linear(x, w, bias)  # [M, out]
    if lora_a is None:
        return y
    return (y.float() + scaling * lora_delta(x, lora_a, lora_b, lora_indices)).to(x.dtype)


def dense_linear(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias):
    """The dense baseline under docs/contract.md#linear's contract, for its check: dequantizes on every call."""
    w = dequantize(packed_weights, scales, zero_points, group_size, output_dtype=x.dtype)  # [out, in]
    return dense_forward(x, w, lora_a, lora_b, lora_indices, scaling, bias)


def _per_column(t, kind, in_features, group_size):
    """Scales or zero points -> a tensor that broadcasts against [out, in] (grouped: repeated per column)."""
    if kind == "per-tensor":
        return t.reshape(1, 1)
    if kind == "per-channel":
        return t.reshape(-1, 1)
    return t.repeat_interleave(group_size, dim=1)[:, :in_features]  # [out, in]: what the seed materialized


def materialize_dequantize(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """uint8 [out, in // 2] -> output_dtype [out, in], computed in output_dtype: (v - z) * s."""
    out_features, in_features, scale_kind, zero_kind = validate_weights(packed_weights, scales, zero_points,
                                                                        group_size)
    w = unpack(packed_weights).to(output_dtype)  # [out, in]
    if zero_points is not None:
        w = w - _per_column(zero_points, zero_kind, in_features, group_size).to(output_dtype)
    return w * _per_column(scales, scale_kind, in_features, group_size).to(output_dtype)


def materialize_linear(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling,
                       bias):
    """docs/contract.md#linear by materializing the dense weight in x.dtype on every call, then `dense_forward`."""
    w = materialize_dequantize(packed_weights, scales, zero_points, group_size, output_dtype=x.dtype)
    return dense_forward(x, w, lora_a, lora_b, lora_indices, scaling, bias)


BASELINES = {
    "dense": {"gemm": dense_linear, "gemm_lora": dense_linear},
    "materialize": {"dequantize": materialize_dequantize, "gemm": materialize_linear,
                    "gemm_lora": materialize_linear},
}
