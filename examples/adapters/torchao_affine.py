"""torchao's dequantize_affine (torchao.quantization.quant_primitives) as a dequantizer in the canonical layout.

    int4-verify --dequantizer examples/adapters/torchao_affine.py:dequantize --no-ragged   # FAIL: 12 ulp
    int4-verify --dequantizer examples/adapters/torchao_affine.py:dequantize --no-ragged --zero-points integer  # PASS

(without --no-ragged the first ragged case is refused, a FAIL (raised): torchao cannot take it.)

The canonical v = q - 8 in [-8, 7] is torchao's int4 (torch.int8 storage, quant_min -8, quant_max 7)
with an integer-domain zero point: torchao computes ((v - zero.to(output_dtype)) * scale) in
output_dtype, so a fractional zero point is first rounded to output_dtype. Where v is close to
z, v - RN(z) loses every bit of v - z (z = 3.0001 in fp32: fp16 gives 3.0 and W = 0). Then the
difference and the product are rounded again (the product in the promoted dtype of output_dtype
and the scales, then to output_dtype). A real deviation the verifier must catch.

torchao takes one block size for scale and zero point and needs it to tile the tensor: ragged
groups are refused; a zero point of another granularity is spread to the scales' grid.
"""
import torch
from torchao.quantization.quant_primitives import dequantize_affine


def _grid(t, out_features, groups):
    """A per-tensor, [out] or [out, G] tensor -> [out, groups] (G == groups when grouped)."""
    return t.reshape(-1, 1).expand(out_features, groups) if t.dim() < 2 else t


def dequantize(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """packed_weights: uint8 [out, in / 2]; scales, zero_points: [1] | [out] | [out, G] -> Tensor [out, in]."""
    low, high = (packed_weights & 0xF).to(torch.int8) - 8, (packed_weights >> 4).to(torch.int8) - 8
    values = torch.stack([low, high], dim=-1).reshape(packed_weights.shape[0], -1)  # v: int8 [out, in]
    out_features, in_features = values.shape
    grouped = any(t is not None and t.dim() == 2 and t.numel() > 1 for t in (scales, zero_points))
    if grouped and in_features % group_size:
        raise ValueError(f"group_size {group_size} must divide in_features {in_features}: torchao's block_size "
                         f"must tile the tensor")
    groups = in_features // group_size if grouped else 1
    scale = _grid(scales, out_features, groups)
    zero = None if zero_points is None else _grid(zero_points, out_features, groups)
    return dequantize_affine(values, (1, in_features // groups), scale, zero, torch.int8, -8, 7,
                             output_dtype=output_dtype)
