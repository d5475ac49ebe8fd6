"""HQQ's Quantizer.dequantize (hqq.core.quantize) as a dequantizer in the `hqq` layout.

    int4-verify --layout hqq --dequantizer examples/adapters/hqq_4bit.py:dequantize

HQQ computes ((q - zero) * scale) in its compute dtype (here the scales' dtype, as HQQLinear keeps
meta["scale"] and meta["zero"]): q - zero is rounded to that dtype (exact for integer zeros, and
for the fitted fractional ones in fp16 and fp32, not always in bf16), then the product is rounded
to it, then the cast to output_dtype rounds again. Correctly rounded only where output_dtype is
the scales' dtype and q - zero is exact.
"""
import torch
from hqq.core.quantize import Quantizer


def dequantize(W_q, scale, zero, shape, group_size, output_dtype=torch.float16):  # noqa: N803 (HQQ's names)
    """W_q: uint8 [rows / 2, g]; scale, zero: [rows, 1]; shape: (out, in); group_size: int or None
    -> Tensor [out, in] of output_dtype."""
    meta = dict(nbits=4, packing="4bit_u8", view_as_float=False, axis=1, shape=torch.Size(shape),
                group_size=group_size, scale=scale, zero=zero, compute_dtype=scale.dtype)
    return Quantizer.dequantize(W_q, meta).to(output_dtype)
