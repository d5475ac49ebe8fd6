"""AutoAWQ's dequantize_gemm (awq.utils.packing_utils) as a dequantizer in the `awq` layout.

    int4-verify --layout awq --dequantizer examples/adapters/awq_gemm.py:dequantize

AutoAWQ computes (q - qz) * scales in the scales' dtype and returns [in, out]: the product is
rounded once, to the scales' dtype. So the result is correctly rounded when output_dtype is the
scales' dtype, and rounded twice otherwise (to the scales' dtype, then to output_dtype): an fp32
output from fp16 scales carries fp16's error, and an fp16 product past 65504 is inf even where a
bf16 or fp32 output is finite. A deviation the verifier should report, not a bug of the adapter.
"""
import torch
from awq.utils.packing_utils import dequantize_gemm


def dequantize(qweight, qzeros, scales, group_size, output_dtype=torch.float16):
    """qweight: int32 [in, out / 8]; qzeros: int32 [G, out / 8]; scales: [G, out]; group_size: int
    -> Tensor [out, in] of output_dtype."""
    w = dequantize_gemm(qweight, qzeros, scales, 4, group_size)  # [in, out], scales' dtype
    return w.T.contiguous().to(output_dtype)
