"""The dequantizer of docs/contract.md#dequantizer: W[o, c] = (v[o, c] - z[o, c]) * s[o, c], rounded once."""
import numpy as np

from int4_lora_harness.reference.checks import check_format_name, real_array
from int4_lora_harness.reference.granularity import from_groups, in_groups, per_group, weights_width
from int4_lora_harness.reference.packing import unpack
from int4_lora_harness.reference.rounding import round_to


def dequantize_exact(packed_weights, scales, zero_points=None, group_size=None):
    """float64 [out, in]: the exact dequantized weights (no rounding to an output dtype).

    packed_weights: uint8 [out, in // 2] (either may be 0); scales, zero_points: per-tensor, [out] or
    [out, ceil(in / group_size)], any integer or floating dtype (the reference is the ground truth for
    any real values; bool, complex and None scales are refused); group_size: None or an integer,
    >= 1 for grouped tensors.
    """
    values = unpack(packed_weights)  # v: int8 [out, in]
    out_features, in_features = values.shape
    scales = real_array(scales, "scales")
    zero_points = None if zero_points is None else real_array(zero_points, "zero_points")
    width = weights_width(scales, zero_points, out_features, in_features, group_size)
    w = in_groups(values.astype(np.float64), width)  # v: [out, groups, width], a new array: changed in place
    if zero_points is not None:
        w -= per_group(zero_points, out_features, in_features, group_size, "zero_points", width)  # v - z
    w *= per_group(scales, out_features, in_features, group_size, "scales", width)  # (v - z) * s
    return from_groups(w, in_features)


def dequantize(packed_weights, scales, zero_points=None, group_size=None, output_dtype="fp16"):
    """[out, in] dequantized weights rounded once to `output_dtype` ('fp16', 'bf16', 'fp32').

    Returns np.float16 for fp16, np.float32 (holding bf16 values) for bf16 and fp32.
    """
    check_format_name(output_dtype, "output_dtype")
    with np.errstate(over="ignore"):
        return round_to(dequantize_exact(packed_weights, scales, zero_points, group_size), output_dtype)
