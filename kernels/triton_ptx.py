"""The Triton fast path with its hand-written PTX nibble unpack (UNPACK_*_ASM in triton_kernels.py).

Same kernels and numerics as kernels/triton_int4.py; only the fp16/bf16 unpack of v - 8 differs
(10 PTX instructions per 4 bytes where the portable tl.* form takes ~30). Triton's interpreter
cannot run inline PTX, so this variant is checked only on a CUDA machine: it is registered as its
own backend, verified and timed there beside the portable one, and is not the default until a
GPU run has passed it.
"""
import torch

from int4_lora_harness.kernels import triton_int4

dequantize = triton_int4.dequantize  # the dequantize kernel has no PTX variant


def unavailable_reason():
    """None when this backend can run here, else a one-line reason."""
    if triton_int4.interpreting():
        return "inline PTX cannot run under Triton's CPU interpreter (TRITON_INTERPRET=1)"
    if not torch.cuda.is_available():
        return "inline PTX needs a CUDA device"
    return triton_int4.unavailable_reason()


def linear(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias):
    """docs/contract.md#linear linear, as kernels.triton_int4.linear (same shapes, dtypes and errors), PTX unpack."""
    return triton_int4.linear(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices,
                              scaling, bias, ptx_unpack=True)


def prepare_linear(*args):
    """int4_lora_harness.kernels.triton_int4.prepare_linear with the PTX unpack."""
    return triton_int4.prepare_linear(*args, ptx_unpack=True)
