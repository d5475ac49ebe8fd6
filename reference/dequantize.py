"""The dequantizer of SPEC §3: W[o, c] = (v[o, c] - z[o, c]) * s[o, c], rounded once."""
import numpy as np

from int4_lora_harness.reference.granularity import expand
from int4_lora_harness.reference.packing import unpack
from int4_lora_harness.reference.rounding import round_to


def dequantize_exact(packed_weights, scales, zero_points=None, group_size=None):
    """float64 [out, in]: the exact dequantized weights (no rounding to an output dtype).

    packed_weights: uint8 [out, in // 2]; scales, zero_points: per-tensor, [out] or
    [out, ceil(in / group_size)], any real dtype; group_size: int for grouped tensors.
    """
    values = unpack(packed_weights).astype(np.float64)  # v: [out, in]
    out_features, in_features = values.shape
    s = expand(scales, out_features, in_features, group_size, "scales")
    z = 0.0 if zero_points is None else expand(zero_points, out_features, in_features, group_size, "zero_points")
    return (values - z) * s


def dequantize(packed_weights, scales, zero_points=None, group_size=None, output_dtype="fp16"):
    """[out, in] dequantized weights rounded once to `output_dtype` ('fp16', 'bf16', 'fp32').

    Returns np.float16 for fp16, np.float32 (holding bf16 values) for bf16 and fp32.
    """
    with np.errstate(over="ignore"):
        return round_to(dequantize_exact(packed_weights, scales, zero_points, group_size), output_dtype)
