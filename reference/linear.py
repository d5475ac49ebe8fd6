"""INT4 base + multi-LoRA linear of SPEC §4, in float64, rounded once to x's dtype.

    y[m] = x[m] @ W^T + bias + scaling * (x[m] @ A[i_m]^T) @ B[i_m]^T   (if i_m >= 0)
"""
import numpy as np

from int4_lora_harness.reference.dequantize import dequantize_exact
from int4_lora_harness.reference.rounding import round_to


def check_lora(lora_a, lora_b, lora_indices, m, out_features, in_features):
    """Validate the adapter arguments of SPEC §4; raise ValueError naming the argument."""
    indices = np.asarray(lora_indices)
    if indices.shape != (m,) or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"lora_indices must be an integer array of shape [{m}], got {indices.dtype} {indices.shape}")
    if lora_a is None or lora_b is None:
        if lora_a is not None or lora_b is not None:
            raise ValueError("lora_a and lora_b must both be given or both be None")
        if (indices != -1).any():
            raise ValueError("lora_indices must all be -1 when there are no adapters")
        return
    num_loras, rank = np.shape(lora_a)[:2]
    if np.shape(lora_a) != (num_loras, rank, in_features):
        raise ValueError(f"lora_a must have shape [num_loras, rank, {in_features}], got {np.shape(lora_a)}")
    if np.shape(lora_b) != (num_loras, out_features, rank):
        raise ValueError(f"lora_b must have shape [{num_loras}, {out_features}, {rank}], got {np.shape(lora_b)}")
    if indices.size and (indices.min() < -1 or indices.max() >= num_loras):
        raise ValueError(f"lora_indices must lie in [-1, {num_loras - 1}], got min {indices.min()} max {indices.max()}")


def linear_exact(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias):
    """float64 [M, out]: the exact result of SPEC §4 before the final rounding.

    x: float [M, in]; packed_weights: uint8 [out, in // 2]; scales/zero_points as in
    dequantize; lora_a: [L, rank, in] | None; lora_b: [L, out, rank] | None;
    lora_indices: int [M], -1 = no adapter; scaling: float; bias: [out] | None.
    """
    x = np.asarray(x, dtype=np.float64)
    w = dequantize_exact(packed_weights, scales, zero_points, group_size)  # [out, in]
    out_features, in_features = w.shape
    if x.ndim != 2 or x.shape[1] != in_features:
        raise ValueError(f"x must have shape [M, {in_features}], got {x.shape}")
    check_lora(lora_a, lora_b, lora_indices, x.shape[0], out_features, in_features)
    y = x @ w.T  # [M, out]
    if bias is not None:
        if np.shape(bias) != (out_features,):
            raise ValueError(f"bias must have shape [{out_features}], got {np.shape(bias)}")
        y = y + np.asarray(bias, dtype=np.float64)
    if lora_a is None:
        return y
    a = np.asarray(lora_a, dtype=np.float64)
    b = np.asarray(lora_b, dtype=np.float64)
    for m, i in enumerate(np.asarray(lora_indices)):  # one token at a time: slow on purpose
        if i >= 0:
            y[m] += scaling * (b[i] @ (a[i] @ x[m]))  # [out] <- [out, rank] @ [rank]
    return y


def linear(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias,
           x_dtype="fp16"):
    """SPEC §4 rounded once to `x_dtype` ('fp16', 'bf16', 'fp32'); arguments as in linear_exact."""
    y = linear_exact(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias)
    with np.errstate(over="ignore"):
        return round_to(y, x_dtype)
