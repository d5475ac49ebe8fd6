"""INT4 base + multi-LoRA linear of docs/contract.md#linear, in float64, rounded once to x's dtype.

    y[m] = x[m] @ W^T + bias + scaling * (x[m] @ A[i_m]^T) @ B[i_m]^T   (if i_m >= 0)

Any size may be 0 (M = 0 tokens, empty weights); lora_a/lora_b with 0 adapters are accepted when
every index is -1, and give the base result. scaling may be inf or NaN: it only reaches the tokens
that have an adapter.
"""
import numpy as np

from int4_lora_harness.reference.checks import INTEGER_KINDS, check_format_name, check_scaling, real_array
from int4_lora_harness.reference.dequantize import dequantize_exact
from int4_lora_harness.reference.rounding import round_to


def check_lora(lora_a, lora_b, lora_indices, m, out_features, in_features):
    """Validate the adapter arguments of docs/contract.md#linear; raise ValueError (TypeError for None indices) naming the argument."""
    indices = real_array(lora_indices, "lora_indices", INTEGER_KINDS)
    if indices.shape != (m,):
        raise ValueError(f"lora_indices must be an integer array of shape [{m}], got {indices.dtype} {indices.shape}")
    if lora_a is None or lora_b is None:
        if lora_a is not None or lora_b is not None:
            raise ValueError("lora_a and lora_b must both be given or both be None")
        if (indices != -1).any():
            raise ValueError("lora_indices must all be -1 when there are no adapters")
        return
    a, b = real_array(lora_a, "lora_a"), real_array(lora_b, "lora_b")
    if a.ndim != 3 or a.shape[2] != in_features:
        raise ValueError(f"lora_a must have shape [num_loras, rank, {in_features}], got {a.shape}")
    num_loras, rank = a.shape[:2]
    if b.shape != (num_loras, out_features, rank):
        raise ValueError(f"lora_b must have shape [{num_loras}, {out_features}, {rank}], got {b.shape}")
    if indices.size and (indices.min() < -1 or indices.max() >= num_loras):
        raise ValueError(f"lora_indices must lie in [-1, {num_loras - 1}], got min {indices.min()} max {indices.max()}")


def base_exact(x, w, bias, products=None):
    """float64 [M, out]: x @ W^T + bias on already-dequantized weights. x: [M, in]; w: [out, in]; bias: [out] | None.
    products(a, b) -> a @ b.T of two float64 arrays: NumPy's by default (the judge passes its own BLAS's)."""
    x, w = real_array(x, "x").astype(np.float64, copy=False), real_array(w, "w").astype(np.float64, copy=False)
    if w.ndim != 2:
        raise ValueError(f"w must be 2-D [out, in], got shape {w.shape}")
    if x.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"x must have shape [M, {w.shape[1]}], got {x.shape}")
    y = x @ w.T if products is None else products(x, w)  # [M, out]
    if bias is None:
        return y
    bias = real_array(bias, "bias")
    if bias.shape != (w.shape[0],):
        raise ValueError(f"bias must have shape [{w.shape[0]}], got {bias.shape}")
    return y + bias.astype(np.float64)


def lora_exact(x, lora_a, lora_b, lora_indices, scaling):
    """float64 [M, out]: scaling * (x[m] @ A[i_m]^T) @ B[i_m]^T per token, 0 where i_m = -1 or without adapters.

    x: [M, in]; lora_a: [L, rank, in] | None; lora_b: [L, out, rank] | None; lora_indices: int [M];
    scaling: a real number (see reference.checks.check_scaling). Without adapters out is 0.
    """
    check_scaling(scaling)
    x = real_array(x, "x").astype(np.float64)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D [M, in], got shape {x.shape}")
    out_features = np.shape(lora_b)[1] if np.ndim(lora_b) == 3 else 0
    check_lora(lora_a, lora_b, lora_indices, x.shape[0], out_features, x.shape[1])
    delta = np.zeros((x.shape[0], out_features))
    if lora_a is None:
        return delta
    a = np.asarray(lora_a, dtype=np.float64)
    b = np.asarray(lora_b, dtype=np.float64)
    for m, i in enumerate(np.asarray(lora_indices)):  # one token at a time: slow on purpose
        if i >= 0:
            delta[m] = scaling * (b[i] @ (a[i] @ x[m]))  # [out] <- [out, rank] @ [rank]
    return delta


def linear_from_weights(x, w, lora_a, lora_b, lora_indices, scaling, bias):
    """float64 [M, out]: docs/contract.md#linear before its final rounding, on already-dequantized weights w [out, in].

    The one formula every design reference of the tolerance model is built from."""
    check_scaling(scaling)
    y = base_exact(x, w, bias)  # checks x, w and bias
    check_lora(lora_a, lora_b, lora_indices, y.shape[0], y.shape[1], np.shape(w)[1])
    return y if lora_a is None else y + lora_exact(x, lora_a, lora_b, lora_indices, scaling)


def linear_exact(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias):
    """float64 [M, out]: the exact result of docs/contract.md#linear before the final rounding.

    x: real [M, in]; packed_weights: uint8 [out, in // 2]; scales/zero_points/group_size as in
    dequantize; lora_a: real [L, rank, in] | None; lora_b: real [L, out, rank] | None;
    lora_indices: integer [M], -1 = no adapter; scaling: real number; bias: real [out] | None.
    """
    w = dequantize_exact(packed_weights, scales, zero_points, group_size)  # [out, in]
    return linear_from_weights(x, w, lora_a, lora_b, lora_indices, scaling, bias)


def linear(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias,
           x_dtype="fp16"):
    """docs/contract.md#linear rounded once to `x_dtype` ('fp16', 'bf16', 'fp32'); arguments as in linear_exact."""
    check_format_name(x_dtype, "x_dtype")
    y = linear_exact(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias)
    with np.errstate(over="ignore"):
        return round_to(y, x_dtype)
