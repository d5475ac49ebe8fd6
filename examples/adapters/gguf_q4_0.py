"""gguf-py's Q4_0 decoder as a dequantizer in the `gguf-q4_0` layout (int4_lora_harness.verify.layouts).

    int4-verify --layout gguf-q4_0 --dequantizer examples/adapters/gguf_q4_0.py:dequantize

gguf.quants.dequantize computes d * (q - 8) in float32, exact for an fp16 d and q - 8 in [-8, 7];
the one rounding is the cast to output_dtype, so this adapter is correctly rounded.
"""
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize


def dequantize(blocks, shape, output_dtype=torch.float16):
    """blocks: uint8 [out, in / 32 * 18]; shape: (out, in) -> Tensor [out, in] of output_dtype, on blocks' device."""
    w = gguf_dequantize(blocks.cpu().numpy(), GGMLQuantizationType.Q4_0)  # float32 [out, in]
    if w.shape != tuple(shape):
        raise ValueError(f"shape {tuple(shape)} does not match the blocks' {w.shape}")
    return torch.from_numpy(w).to(device=blocks.device, dtype=output_dtype)
