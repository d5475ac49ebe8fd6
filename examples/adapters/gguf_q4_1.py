"""gguf-py's Q4_1 decoder as a dequantizer in the `gguf-q4_1` layout (int4_lora_harness.verify.layouts).

    int4-verify --layout gguf-q4_1 --dequantizer examples/adapters/gguf_q4_1.py:dequantize

gguf.quants.dequantize computes d * q + m in float32: for the fitted d (7 significant bits) and
m = r * d (r of 4 bits, a multiple of 2**-4) every value needs at most 16 bits, so float32 is
exact and the cast to output_dtype is the one rounding. For arbitrary fp16 d and m it is not.
"""
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize


def dequantize(blocks, shape, output_dtype=torch.float16):
    """blocks: uint8 [out, in / 32 * 20]; shape: (out, in) -> Tensor [out, in] of output_dtype, on blocks' device."""
    w = gguf_dequantize(blocks.cpu().numpy(), GGMLQuantizationType.Q4_1)  # float32 [out, in]
    if w.shape != tuple(shape):
        raise ValueError(f"shape {tuple(shape)} does not match the blocks' {w.shape}")
    return torch.from_numpy(w).to(device=blocks.device, dtype=output_dtype)
