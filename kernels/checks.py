"""Argument checks of docs/contract.md#packed-weight, #linear for torch implementations, shared by every fast path.

Nothing is guessed. The wrong kind of object (None, a list or a number where a tensor is needed; a
float group_size; a str scaling; an output_dtype that is not a torch.dtype) is a TypeError; a tensor
of the wrong dtype, shape, value or device is a ValueError. Both name the argument and the rule. The
group_size and scaling rules are the reference's own (int4_lora_harness.reference.checks), so the
reference and every fast path accept and refuse the same values. Empty sizes (0 rows, 0 columns,
M = 0 tokens, 0 adapters) are valid.
"""
import torch

from int4_lora_harness.reference.checks import check_scaling
from int4_lora_harness.reference.granularity import granularity  # one rule for the reference and every fast path

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def require_tensor(name, t, optional=False):
    """TypeError naming `name` unless `t` is a torch.Tensor (or None, where `optional`)."""
    if isinstance(t, torch.Tensor) or (optional and t is None):
        return
    raise TypeError(f"{name} must be a torch.Tensor{' or None' if optional else ''}, got {type(t).__name__}")


def validate_weights(packed_weights, scales, zero_points, group_size):
    """Validate the packed base; return (out_features, in_features, scale_kind, zero_kind | None).

    packed_weights: torch.uint8 [out, in // 2]; scales: fp16/bf16/fp32; zero_points: None or a real
    (integer or floating) tensor; group_size: None or an integer, >= 1 where a tensor is grouped.
    """
    require_tensor("packed_weights", packed_weights)
    if packed_weights.dtype != torch.uint8:
        raise ValueError(f"packed_weights must be a torch.uint8 tensor, got {packed_weights.dtype}")
    if packed_weights.dim() != 2:
        raise ValueError(f"packed_weights must be 2-D [out_features, in_features // 2], got shape {list(packed_weights.shape)}")
    out_features, in_features = packed_weights.shape[0], 2 * packed_weights.shape[1]
    require_tensor("scales", scales)
    if scales.dtype not in FLOAT_DTYPES:
        raise ValueError(f"scales must be fp16, bf16 or fp32, got {scales.dtype}")
    scale_kind = granularity(scales, out_features, in_features, group_size, "scales")
    zero_kind = None
    require_tensor("zero_points", zero_points, optional=True)
    if zero_points is not None:
        if zero_points.dtype == torch.bool or zero_points.is_complex():
            raise ValueError(f"zero_points must be a floating point or integer tensor, got {zero_points.dtype}")
        zero_kind = granularity(zero_points, out_features, in_features, group_size, "zero_points")
    same_device("packed_weights", scales=scales, zero_points=zero_points, packed_weights=packed_weights)
    return out_features, in_features, scale_kind, zero_kind


def validate_output_dtype(output_dtype):
    """docs/contract.md#dequantizer: the dequantizer's output dtype is torch.float16, torch.bfloat16 or torch.float32."""
    if not isinstance(output_dtype, torch.dtype):
        raise TypeError(f"output_dtype must be a torch.dtype (torch.float16, torch.bfloat16 or torch.float32), "
                        f"got {type(output_dtype).__name__} {output_dtype!r}")
    if output_dtype not in FLOAT_DTYPES:
        raise ValueError(f"output_dtype must be torch.float16, torch.bfloat16 or torch.float32, got {output_dtype}")


def validate_scaling(scaling):
    """docs/contract.md#linear: scaling is an int, float or NumPy real scalar, finite or not; bool, str and tensors are refused."""
    check_scaling(scaling)


def same_device(first, **tensors):
    """docs/contract.md#dequantizer, #linear: every tensor given (None skipped) lives on the device of tensors[first]."""
    device = tensors[first].device
    for name, t in tensors.items():
        if t is not None and t.device != device:
            raise ValueError(f"{name} must be on {first}'s device {device}, got {t.device}")


def validate_linear(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, bias):
    """Validate docs/contract.md#linear's tensor arguments; return (out_features, in_features, scale_kind, zero_kind).

    x: fp16/bf16/fp32 [M, in] (M may be 0); bias: None or floating [out]; the adapters as in
    validate_lora. scaling has its own check (validate_scaling).
    """
    out_features, in_features, scale_kind, zero_kind = validate_weights(packed_weights, scales, zero_points, group_size)
    require_tensor("x", x)
    require_tensor("lora_indices", lora_indices)
    for name, t in (("lora_a", lora_a), ("lora_b", lora_b), ("bias", bias)):
        require_tensor(name, t, optional=True)
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"x must be fp16, bf16 or fp32, got {x.dtype}")
    if x.dim() != 2 or x.shape[1] != in_features:
        raise ValueError(f"x must have shape [M, {in_features}], got {list(x.shape)}")
    if bias is not None and bias.shape != (out_features,):
        raise ValueError(f"bias must have shape [{out_features}], got {list(bias.shape)}")
    for name, t in (("lora_a", lora_a), ("lora_b", lora_b), ("bias", bias)):
        if t is not None and not t.is_floating_point():
            raise ValueError(f"{name} must be floating point, got {t.dtype}")
    same_device("x", x=x, packed_weights=packed_weights, lora_a=lora_a, lora_b=lora_b, lora_indices=lora_indices,
                bias=bias)
    validate_lora(lora_a, lora_b, lora_indices, x.shape[0], out_features, in_features)
    return out_features, in_features, scale_kind, zero_kind


def validate_lora(lora_a, lora_b, lora_indices, m, out_features, in_features):
    """docs/contract.md#linear's adapters: lora_a [L, rank, in] and lora_b [L, out, rank], or both None (then L = 0);
    lora_indices int32/int64 [m] in [-1, L - 1]. L = 0 is valid (every index must then be -1), rank = 0 too."""
    if lora_indices.dtype not in (torch.int32, torch.int64) or lora_indices.shape != (m,):
        raise ValueError(f"lora_indices must be int32 or int64 of shape [{m}], got {lora_indices.dtype} {list(lora_indices.shape)}")
    if (lora_a is None) != (lora_b is None):
        raise ValueError("lora_a and lora_b must both be tensors or both be None")
    num_loras = 0
    if lora_a is not None:
        if lora_a.dim() != 3 or lora_a.shape[2] != in_features:
            raise ValueError(f"lora_a must have shape [num_loras, rank, {in_features}], got {list(lora_a.shape)}")
        num_loras, rank = lora_a.shape[:2]
        if lora_b.shape != (num_loras, out_features, rank):
            raise ValueError(f"lora_b must have shape [{num_loras}, {out_features}, {rank}], got {list(lora_b.shape)}")
    if m:
        low, high = (int(v) for v in torch.aminmax(lora_indices))  # one reduction, one host sync
        if low < -1 or high >= num_loras:
            raise ValueError(f"lora_indices must lie in [-1, {num_loras - 1}], got min {low} max {high}")


def integer_zeros_within(zero_points, limit, check_values=True):
    """True when `zero_points` are integers with |z| <= limit: by their dtype's range where that decides,
    else, with check_values, by value (one reduction; a host sync on CUDA). False for float zero points."""
    if zero_points.is_floating_point():
        return False
    info = torch.iinfo(zero_points.dtype)
    if -limit <= info.min and info.max <= limit:
        return True
    if not check_values or zero_points.numel() == 0:
        return zero_points.numel() == 0
    low, high = torch.aminmax(zero_points)
    return -limit <= int(low) and int(high) <= limit
