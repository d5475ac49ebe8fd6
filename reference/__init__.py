"""NumPy ground truth for the INT4 + LoRA contract of docs/contract.md: float64, readable, slow on purpose.

Imports no torch. Read in this order: packing, rounding, granularity, dequantize, linear, quantize;
checks holds the argument rules they share with kernels.checks (TypeError for the wrong kind of
object, ValueError for a wrong dtype, shape or value, each naming the argument).
"""
from int4_lora_harness.reference.dequantize import dequantize, dequantize_exact
from int4_lora_harness.reference.granularity import expand, granularity
from int4_lora_harness.reference.linear import base_exact, linear, linear_exact, linear_from_weights, lora_exact
from int4_lora_harness.reference.packing import pack, unpack
from int4_lora_harness.reference.quantize import quantize
from int4_lora_harness.reference.rounding import FORMATS, float_format, ordinal, round_to, spacing

__all__ = ["FORMATS", "base_exact", "dequantize", "dequantize_exact", "expand", "float_format", "granularity", "linear",
           "linear_exact", "linear_from_weights", "lora_exact", "ordinal", "pack", "quantize", "round_to", "spacing", "unpack"]
