"""Triton fast path for docs/contract.md#dequantizer, #linear: a fused INT4 W4A16 GEMM with per-token multi-LoRA.

    y[m] = x[m] @ W^T + bias + scaling * (x[m] @ A[i_m]^T) @ B[i_m]^T     (i_m = -1: no adapter)

`linear` reads the packed uint8 weights directly (no [out, in] copy of W is ever allocated):
`lora_shrink_kernel` writes x @ A[i]^T as fp32 partial sums, then `int4_lora_gemm_kernel`
unpacks each weight tile in registers, accumulates in fp32, and adds bias and the LoRA expand in
its epilogue before one rounding to x's dtype. No atomics: bitwise deterministic. `dequantize`
is the verifier's dequantizer contract. The kernels live in kernels/triton_kernels.py; this
module imports without triton or CUDA (see unavailable_reason).

Which numerics a call gets (each a design of harness/tolerance.py):
  fp16/bf16 x, zero points exact in x's dtype (none, int8/uint8, or checked by value):
      v - z in x's dtype (exact); decode multiplies the tile products by s in fp32 ("w in fp32"),
      prefill rounds W = (v - z) * s once to x's dtype ("w in x.dtype").
  other zero points: W = (v - z) * s in fp32, rounded once to x's dtype ("w in x.dtype").
  fp32 x: W kept in fp32, fp32 products, no TF32 ("w in fp32").
Under Triton's CPU interpreter bf16 runs these same designs: importing this module corrects the
interpreter's bf16 arithmetic (kernels/triton_interpreter.py), which would otherwise blame the kernels.

Nibbles are unpacked with portable tl.* bit tricks; `ptx_unpack=True` (the `triton-ptx` backend,
kernels/triton_ptx.py) swaps in hand-written PTX that only a CUDA machine can run and check.
"""
import os

import torch

from int4_lora_harness.kernels import triton_interpreter
from int4_lora_harness.kernels.checks import (integer_zeros_within, validate_linear, validate_output_dtype,
                                             validate_scaling, validate_weights)

try:
    from int4_lora_harness.kernels import triton_kernels
except ImportError as exc:  # no triton here: the module still imports, and says why it cannot run
    triton_kernels = None
    _IMPORT_ERROR = f"triton is not importable ({exc})"
else:
    _IMPORT_ERROR = None
try:  # under TRITON_INTERPRET=1, bf16 computed as on a GPU; elsewhere a no-op
    triton_interpreter.fix_bf16()
except RuntimeError as exc:  # this Triton's interpreter gets bf16 wrong and cannot be corrected: refuse to run
    _IMPORT_ERROR = str(exc)

# Largest |z| for which v - z (v in [-8, 7]) is an integer that fp16 (<= 2048) / bf16 (<= 256) holds exactly.
EXACT_ZERO_LIMIT = {torch.float16: 2040, torch.bfloat16: 248}
FP32_EXACT_ZERO_LIMIT = 2**23 - 8  # the same in fp32 (unpack_tile computes 2**23 + q - (2**23 + 8 + z))


def interpreting():
    """True when Triton's CPU interpreter is on (TRITON_INTERPRET=1, read when triton is imported)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def unavailable_reason():
    """None when this backend can run here, else a one-line reason."""
    if _IMPORT_ERROR is not None:
        return _IMPORT_ERROR
    if not (torch.cuda.is_available() or interpreting()):
        return "no CUDA device, and Triton's CPU interpreter is off (set TRITON_INTERPRET=1 before importing triton)"
    return None


def launch_config(m, n, k):
    """Tile shape and launch settings for y[m, n] = x[m, k] @ W^T, chosen by the M regime (deterministic).

    decode (m <= 16): one 16-row tile holds every token, so each weight byte is unpacked once;
    narrow N tiles give >= 128 programs on 4096-wide layers and 8 pipeline stages keep ~2 MB of
    weights in flight. m <= 256: 64x64 tensor-core tiles (enough programs at small M); beyond,
    128x128. Chosen from the generated code (wgmma, 16-byte shared stores, no spills), not from
    timings: see benchmarks/gpu_table.py --sweep for the candidates to time on a GPU.
    """
    if m <= 16:
        return dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=128, num_warps=4, num_stages=8)
    if m <= 256:
        return dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=128, num_warps=4, num_stages=4)
    return dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, num_warps=8, num_stages=3)


def shrink_config(m, k, rank_pad):
    """(BLOCK_M, BLOCK_K, num_splits) for the LoRA shrink: split K until ~128 programs run."""
    block_m = 16 if m <= 16 else 64
    block_k = max(16, min(128, 4096 // rank_pad))  # a [BLOCK_K, RANK_PAD] tile of A stays small
    num_splits = max(1, min(cdiv(k, block_k), 128 // cdiv(m, block_m)))
    return block_m, block_k, num_splits


def cdiv(a, b):
    """ceil(a / b) for positive ints."""
    return -(-a // b)


def kernel_group_size(group_size, k):
    """group_size as the kernels and the tile choices take it: a Python int in [1, max(k, 1)].

    NumPy integers become ints; None, or a size of k or more, is one group, which reads no group
    index (its scales come with a zero group stride), so 1 or k stands for it without changing a value.
    """
    return 1 if group_size is None else max(1, min(int(group_size), k))


def next_pow2(n):
    """The smallest power of two >= n (n >= 1)."""
    return 1 << (n - 1).bit_length()


def chunks(kind, t, group_size, block_k):
    """How many values of scales/zero_points `t` a row of a K tile of `block_k` columns reads.

    1 where one value covers the tile (per-tensor, per-channel, one group, or groups that are a
    multiple of the tile); one per group where power-of-two groups tile it; else one per column pair.
    """
    if kind != "grouped" or t.shape[1] == 1 or group_size % block_k == 0:
        return 1
    if group_size >= 2 and block_k % group_size == 0:
        return block_k // group_size
    return block_k // 2


def pick_block_k(block_k, tensors, kinds, group_size):
    """Halve `block_k` (down to 32) until multi-group tensors need no per-pair gather; else keep it."""
    if not any(kind == "grouped" and t.shape[1] > 1 for t, kind in zip(tensors, kinds)):
        return block_k
    for candidate in (block_k >> i for i in range(8)):
        if candidate < 32:
            break
        if group_size % candidate == 0 or (group_size >= 2 and candidate % group_size == 0):
            return candidate
    return block_k


def weight_args(scales, zero_points, kinds, group_size, block_k):
    """Kernel arguments for scales and zero points: (tensor, stride_n, stride_g, chunks) each."""
    args = []
    for t, kind in zip((scales, zero_points), kinds):
        if t is None:
            args.append((scales, 0, 0, 1))  # never read: HAS_ZERO is False
        elif kind == "per-tensor":
            args.append((t, 0, 0, 1))
        elif kind == "per-channel" or t.shape[1] == 1:  # one group: a column of per-channel values
            args.append((t, t.stride(0), 0, 1))
        else:
            args.append((t, t.stride(0), t.stride(1), chunks(kind, t, group_size, block_k)))
    return args


def group_tiles(kind, scales, group_size, block_k):
    """K tiles per scale group where one group covers whole tiles (else 1; the value is then unused)."""
    if kind == "grouped" and scales.shape[1] > 1 and group_size % block_k == 0:
        return group_size // block_k
    return 1


def is_int(zero_points):
    """True for integer zero points: 2**23 + 8 + z is then exact in fp32 (see unpack_tile)."""
    return zero_points is not None and not zero_points.is_floating_point()


def exact_zero(dtype, zero_points, check_values=False):
    """True where v - z is exact in fp16/bf16 `dtype` for every zero point (always without zero points).

    By dtype (int8/uint8 fit fp16, int8 fits bf16); with check_values, wider integer zero points
    are checked by value (one reduction and one host synchronization).
    """
    if zero_points is None:
        return True
    return dtype in EXACT_ZERO_LIMIT and integer_zeros_within(zero_points, EXACT_ZERO_LIMIT[dtype], check_values)


def check_device(first, tensor):
    """Triton runs CUDA tensors, or CPU ones under the interpreter (kernels.checks has made the devices agree)."""
    if tensor.device.type != "cuda" and not interpreting():
        raise ValueError(f"{first} must be a CUDA tensor (or set TRITON_INTERPRET=1), got device {tensor.device}")


def linear(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias, *,
           ptx_unpack=False):
    """docs/contract.md#linear INT4 base + multi-LoRA linear -> [M, out_features] in x.dtype, on x.device.

    x: fp16/bf16/fp32 [M, in]; packed_weights: uint8 [out, in // 2]; scales: float, per-tensor,
    [out] or [out, ceil(in / group_size)]; zero_points: None or int/float of any of those shapes;
    group_size: None or an integer (int or numpy integer), >= 1 for grouped tensors; lora_a: float
    [L, rank, in] | None; lora_b: float [L, out, rank] | None; lora_indices: int32/int64 [M], -1 = no
    adapter; scaling: int, float or numpy real scalar; bias: float [out] | None. Raises TypeError /
    ValueError naming the argument on any violation (kernels.checks). M = 0 launches nothing.
    ptx_unpack: unpack fp16/bf16 nibbles with the inline PTX of triton_kernels (CUDA only; see
    kernels/triton_ptx.py) instead of the portable tl.* form.
    """
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"triton backend unavailable: {reason}")
    _, _, scale_kind, zero_kind = validate_linear(x, packed_weights, scales, zero_points, group_size,
                                               lora_a, lora_b, lora_indices, bias)
    validate_scaling(scaling)
    check_device("x", x)
    return launch_linear(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices,
                         scaling, bias, (scale_kind, zero_kind),
                         zero_is_exact=exact_zero(x.dtype, zero_points, check_values=True), ptx_unpack=ptx_unpack)


def prepare_linear(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias,
                   ptx_unpack=False):
    """`linear`'s checks done once now; returns a zero-argument callable that only launches (no host sync),
    as a serving loop runs a layer whose weights were validated at load time. Benchmarks time this."""
    args = (x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias)
    _, _, scale_kind, zero_kind = validate_linear(*args[:8], bias)
    validate_scaling(scaling)
    check_device("x", x)
    zero_is_exact = exact_zero(x.dtype, zero_points, check_values=True)
    return lambda: launch_linear(*args, (scale_kind, zero_kind), zero_is_exact=zero_is_exact, ptx_unpack=ptx_unpack)


def launch_linear(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias,
                  kinds, config=None, zero_is_exact=None, ptx_unpack=False):
    """`linear` without validation or host synchronization (benchmarks, CUDA graphs); same arguments, plus:

    kinds: (scale_kind, zero_kind) as validate_linear returns them; config: a launch_config() dict
    (default: by M); zero_is_exact: exact_zero()'s answer (default: decided by dtype alone);
    ptx_unpack: as in `linear` (ignored under the interpreter, which cannot run inline PTX).
    """
    m, n, k = x.shape[0], packed_weights.shape[0], 2 * packed_weights.shape[1]
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)  # y: [M, out]
    if y.numel() == 0:
        return y  # M = 0 or out_features = 0: nothing to launch
    group_size = kernel_group_size(group_size, k)
    lora_indices = lora_indices.contiguous()  # the kernels index it (and bias) with unit stride
    bias = None if bias is None else bias.contiguous()
    config = dict(config or launch_config(m, n, k))
    config["BLOCK_K"] = pick_block_k(config["BLOCK_K"], (scales, zero_points), kinds, group_size)
    (s, s_sn, s_sg, s_chunks), (z, z_sn, z_sg, z_chunks) = weight_args(scales, zero_points, kinds, group_size,
                                                                       config["BLOCK_K"])
    fp32_dot = x.dtype == torch.float32
    if zero_is_exact is None:
        zero_is_exact = exact_zero(x.dtype, zero_points)
    native_v = not fp32_dot and zero_is_exact
    shrink, rank, num_loras, num_splits, rank_pad = lora_shrink(x, lora_a, lora_indices, fp32_dot)
    b, b_strides = (x, (0, 0, 0)) if lora_b is None else (lora_b, lora_b.stride())
    grid = (cdiv(m, config["BLOCK_M"]), cdiv(n, config["BLOCK_N"]))
    triton_kernels.int4_lora_gemm_kernel[grid](
        x, packed_weights, s, z, x if bias is None else bias, y, shrink, b, lora_indices,
        m, n, k, group_size, rank, num_loras, num_splits, float(scaling),
        x.stride(0), x.stride(1), packed_weights.stride(0), packed_weights.stride(1), s_sn, s_sg, z_sn, z_sg,
        y.stride(0), y.stride(1), *b_strides,
        HAS_ZERO=zero_points is not None, ZERO_IS_INT=is_int(zero_points), HAS_BIAS=bias is not None,
        HAS_LORA=lora_a is not None, S_CHUNKS=s_chunks, Z_CHUNKS=z_chunks, EVEN_K=k % config["BLOCK_K"] == 0,
        FP32_DOT=fp32_dot, NATIVE_V=native_v, NATIVE_S=native_v and scales.dtype == x.dtype,
        # scaling after the dot needs one scale per row of the tile and v - z exact in the dot's dtype;
        # it pays where the [BLOCK_M, BLOCK_N] product is much smaller than the [BLOCK_N, BLOCK_K] weights
        SCALE_AFTER_DOT=s_chunks == 1 and (native_v or fp32_dot) and 4 * config["BLOCK_M"] <= config["BLOCK_K"],
        GROUP_TILES=group_tiles(kinds[0], scales, group_size, config["BLOCK_K"]),
        USE_ASM=ptx_unpack and native_v and not interpreting(), RANK_PAD=rank_pad, **config)
    return y


def lora_shrink(x, lora_a, lora_indices, fp32_dot):
    """Run the shrink; return (fp32 [num_splits, M, RANK_PAD] partial sums, rank, num_loras, num_splits, RANK_PAD).

    Without adapters: a placeholder that the GEMM never reads (HAS_LORA is False).
    """
    if lora_a is None:
        return x, 0, 0, 0, 16
    m, k = x.shape
    num_loras, rank = lora_a.shape[:2]
    rank_pad = max(16, next_pow2(rank))  # tl.dot needs every dimension >= 16
    block_m, block_k, num_splits = shrink_config(m, k, rank_pad)
    k_per_split = block_k * max(1, cdiv(cdiv(k, block_k), num_splits))
    num_splits = max(1, cdiv(k, k_per_split))
    shrink = torch.empty((num_splits, m, rank_pad), dtype=torch.float32, device=x.device)
    triton_kernels.lora_shrink_kernel[(cdiv(m, block_m), num_splits)](
        x, lora_a, lora_indices, shrink, m, k, rank, num_loras, k_per_split,
        x.stride(0), x.stride(1), lora_a.stride(0), lora_a.stride(1), lora_a.stride(2),
        FP32_DOT=fp32_dot or lora_a.dtype != x.dtype, RANK_PAD=rank_pad, BLOCK_M=block_m, BLOCK_K=block_k)
    return shrink, rank, num_loras, num_splits, rank_pad


def dequantize(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """docs/contract.md#dequantizer dequantizer -> output_dtype [out, in] on packed_weights' device.

    (v - z) * s is computed in fp32 (in fp64 for fp32 output with fractional or huge integer zero
    points, where fp32 could not round once) and rounded once to output_dtype (fp16, bf16 or fp32).
    """
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"triton backend unavailable: {reason}")
    n, k, scale_kind, zero_kind = validate_weights(packed_weights, scales, zero_points, group_size)
    validate_output_dtype(output_dtype)
    check_device("packed_weights", packed_weights)
    out = torch.empty((n, k), dtype=output_dtype, device=packed_weights.device)  # out: [out, in]
    if out.numel() == 0:
        return out  # 0 rows or 0 columns: nothing to launch
    group_size = kernel_group_size(group_size, k)
    kinds = (scale_kind, zero_kind)
    block_n, block_k = 64, pick_block_k(128, (scales, zero_points), kinds, group_size)
    (s, s_sn, s_sg, s_chunks), (z, z_sn, z_sg, z_chunks) = weight_args(scales, zero_points, kinds, group_size, block_k)
    triton_kernels.dequantize_kernel[(cdiv(k, block_k), cdiv(n, block_n))](
        packed_weights, s, z, out, n, k, group_size,
        packed_weights.stride(0), packed_weights.stride(1), s_sn, s_sg, z_sn, z_sg, out.stride(0), out.stride(1),
        HAS_ZERO=zero_points is not None, ZERO_IS_INT=is_int(zero_points), S_CHUNKS=s_chunks, Z_CHUNKS=z_chunks,
        # fp32 output rounds once only if v - z is exact in fp32: not for fractional or huge zero points
        FP64=output_dtype == torch.float32 and zero_points is not None
        and not integer_zeros_within(zero_points, FP32_EXACT_ZERO_LIMIT),
        EVEN_K=k % block_k == 0, BLOCK_N=block_n, BLOCK_K=block_k)
    return out
