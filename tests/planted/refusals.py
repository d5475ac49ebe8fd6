"""Candidates that refuse part of the domain the way real kernels do: by raising, with the limit in the message.

Correct wherever they run (the project's torch path); the verdict is a FAIL (raised) with a hint naming the
domain flag that states the limit (harness/verify/hints.py), and that flag makes them PASS.
"""
import torch

from int4_lora_harness.kernels.torch_path import dequantize


def refuses_bf16(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """As a kernel built without bf16 support: torch's own words for it."""
    if output_dtype == torch.bfloat16:
        raise TypeError("Got unsupported ScalarType BFloat16")
    return dequantize(packed_weights, scales, zero_points, group_size, output_dtype)


def refuses_ragged_groups(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """As a kernel that tiles whole groups only."""
    in_features = packed_weights.shape[1] * 2
    if group_size is not None and scales.dim() == 2 and in_features % group_size:
        raise NotImplementedError(f"in_features ({in_features}) must be a multiple of group_size ({group_size})")
    return dequantize(packed_weights, scales, zero_points, group_size, output_dtype)
