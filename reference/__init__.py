"""NumPy ground truth for the INT4 + LoRA contract of SPEC.md: float64, readable, slow on purpose.

Imports no torch. Read in this order: packing, rounding, granularity, dequantize, linear, quantize.
"""
from reference.dequantize import dequantize, dequantize_exact
from reference.granularity import expand, granularity
from reference.linear import linear, linear_exact
from reference.packing import pack, unpack
from reference.quantize import quantize
from reference.rounding import FORMATS, float_format, ordinal, round_to, spacing

__all__ = ["FORMATS", "dequantize", "dequantize_exact", "expand", "float_format", "granularity", "linear",
           "linear_exact", "ordinal", "pack", "quantize", "round_to", "spacing", "unpack"]
