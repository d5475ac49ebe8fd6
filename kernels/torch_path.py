"""The vectorized torch path: docs/contract.md#dequantizer, #linear with the same code on CPU and CUDA.

Dequantizer: bit for bit the reference, RN_out(fl64(fl64(v - z) * s)), by one of three exact ways,
chosen once per call (`plan_dequantize`). On the CPU, where kernels.native could build it, the C
kernel int4_cpu.c (per-group tables of the 16 values, gathered by PSHUFB: one pass, whatever the
zero points), into an output on huge pages. Otherwise (CUDA, or no C compiler), torch ops:

1. fp32 arithmetic, where it is exact (`exact_in_fp32`: fp16/bf16 scales and no or small integer
   zero points, what GPTQ, AWQ and compressed-tensors checkpoints hold): (q - (8 + z)) * s in fp32
   is the exact value, so one cast rounds it once.
2. Tables, for everything else (fractional zero points, fp32 scales, huge integer zero points):
   the weights of one (row, group) take at most 16 values, one per nibble, so `weight_table`
   computes those in float64 in the reference's order and rounds each once; the weights are then
   gathered by code with one `index_select`. Where a group is wide (at least PAIR_MIN_WIDTH
   columns, an even number), the table holds the 256 byte values instead (`pair_table`: the two
   weights of low and high nibble side by side), so one gather, indexed by the packed byte itself,
   writes two columns. Its cost does not depend on the zero point kind or the scale dtype.

Rows go in blocks (about CPU_BLOCK_ENTRIES elements on the CPU, so temporaries stay in cache; one
block on CUDA for any Llama layer) written straight into the output. A group size larger than
in_features is one group of in_features columns, never a padded one.

Linear: the same row blocks, dequantized to x.dtype ("w in x.dtype": rounded once) into a
scratch block, then an fp32 GEMM into y^T (fp32 accumulation), so no [out, in] weight is kept on
the CPU. Bias and the LoRA delta are added in fp32 and the sum rounds once to x.dtype. The LoRA
delta goes one adapter at a time, selected per token with torch.where, so a non-finite adapter or
scaling reaches only the tokens that use it, and a token with index -1 gets the base output bit for
bit.
"""
import math
from typing import NamedTuple

import torch

from int4_lora_harness.kernels import native
from int4_lora_harness.kernels.checks import (integer_zeros_within, validate_linear, validate_output_dtype,
                                              validate_scaling, validate_weights)

PAIR_MIN_WIDTH = 256  # columns per group from which a byte-pair table beats two nibble gathers (2-core CPU: g128 ties)
CPU_BLOCK_ENTRIES = 1 << 19  # per row block on the CPU: output elements, and table entries, at most this many
CUDA_BLOCK_ENTRIES = 1 << 28  # the same on CUDA: one block for any Llama layer
SIGNIFICAND_BITS = {torch.float16: 11, torch.bfloat16: 8}
SAME_BITS = {2: torch.int16, 4: torch.int32}  # output itemsize -> the integer dtype of one weight's bits
PAIR_BITS = {2: torch.int32, 4: torch.int64}  # output itemsize -> the integer dtype that holds two weights


def nibble_codes(packed_weights):
    """uint8 [out, in // 2] -> uint8 [out, in] of nibbles q in [0, 15] (low nibble = even column).

    Spreads each byte over an int16, low nibble in its low byte and high nibble in its high byte
    (x | x << 4, masked), then reads the int16s back as bytes: no strided byte writes.
    """
    wide = packed_weights.to(torch.int16)
    spread = (wide | (wide << 4)) & 0x0F0F
    return spread.view(torch.uint8)  # little-endian: the low byte, column 2j, comes first


def unpack(packed_weights):
    """uint8 [out, in // 2] -> int8 [out, in] in [-8, 7] (low nibble = even column)."""
    return nibble_codes(packed_weights).view(torch.int8) - 8


def round_once(w64, dtype):
    """float64 tensor -> `dtype` with a single round-to-nearest-even.

    float64 -> fp32 rounds to odd (truncate, then set the last bit if inexact): fp32
    keeps >= 2 more bits than fp16/bf16, so the final nearest-even cast is exact.
    """
    w32 = w64.to(torch.float32)
    if dtype == torch.float32:
        return w32
    back = w32.to(torch.float64)
    rounded_away = back.abs() > w64.abs()
    bits = w32.view(torch.int32) - rounded_away.to(torch.int32)  # one ulp back toward zero
    bits = bits | (back != w64).to(torch.int32)  # sticky bit
    return bits.view(torch.float32).to(dtype)


def exact_in_fp32(scales, zero_points):
    """True when every (v - z) * s is exact in fp32 (24-bit significands): fp16 (11-bit) or bf16
    (8-bit) scales, and integer v - z (v in [-8, 7]) of at most 13 / 16 bits, i.e. no zero points
    or integer ones with |z| <= 2**13 - 8 / 2**16 - 8: 8-bit dtypes always, wider ones by value
    (one reduction). Underflow cannot break it (fp32 reaches below both scale dtypes' subnormals)."""
    bits = SIGNIFICAND_BITS.get(scales.dtype)
    if bits is None:
        return False
    return zero_points is None or integer_zeros_within(zero_points, 2 ** (24 - bits) - 8)


class Plan(NamedTuple):
    """How one dequantization is cut into row blocks, and how each block is computed (see `plan_dequantize`)."""
    packed: torch.Tensor  # uint8 [out, in // 2]
    scales: torch.Tensor
    zero_points: torch.Tensor | None
    scale_kind: str
    zero_kind: str | None
    width: int  # columns per group: group_size, or in_features when nothing is grouped (or the group is larger)
    num_groups: int  # ceil(in_features / width)
    arithmetic: bool  # (v - z) * s exact in fp32 (exact_in_fp32): computed so (way 1), else looked up (way 2)
    pairs: bool  # tables of 256 byte values (two columns a gather) rather than 16 nibble values
    block_rows: int
    offsets: torch.Tensor | None  # tables: int32 [block_rows, units], where each unit's (row, group) table starts
    native: tuple | None  # the C kernel's (scales, zero points | None) operands (native.group_operand), or None


def native_ready(packed_weights):
    """True where the C kernel dequantizes these weights: CPU tensors, and kernels.native could build it."""
    return packed_weights.device.type == "cpu" and native.unavailable_reason() is None


def plan_dequantize(packed_weights, scales, zero_points, group_size):
    """Validate docs/contract.md#packed-weight's arguments and choose how to compute them, block by block; a Plan."""
    out_features, in_features, scale_kind, zero_kind = validate_weights(packed_weights, scales, zero_points, group_size)
    grouped = "grouped" in (scale_kind, zero_kind)
    width = max(1, min(int(group_size), in_features) if grouped else in_features)  # in_features 0: one empty group
    num_groups = math.ceil(in_features / width)
    if native_ready(packed_weights):
        operands = (native.group_operand(scales, scale_kind, num_groups),
                    None if zero_points is None else native.group_operand(zero_points, zero_kind, num_groups))
        block_rows = max(1, min(out_features, CPU_BLOCK_ENTRIES // max(in_features, 1)))
        return Plan(packed_weights.contiguous(), scales, zero_points, scale_kind, zero_kind, width, num_groups,
                    False, False, block_rows, None, operands)
    arithmetic = exact_in_fp32(scales, zero_points)
    pairs = width % 2 == 0 and width >= PAIR_MIN_WIDTH
    entries = 0 if arithmetic else 256 if pairs else 16  # table entries per (row, group)
    budget = CUDA_BLOCK_ENTRIES if packed_weights.is_cuda else CPU_BLOCK_ENTRIES
    block_rows = max(1, min(out_features, budget // max(in_features, num_groups * entries, 1)))
    offsets = None
    if not arithmetic:
        units = in_features // 2 if pairs else in_features  # gathers per row
        group_of_unit = torch.arange(units, device=packed_weights.device) * (2 if pairs else 1) // width
        first_group = torch.arange(block_rows, device=packed_weights.device)[:, None] * num_groups
        offsets = ((first_group + group_of_unit) * entries).to(torch.int32)  # [block_rows, units]
    return Plan(packed_weights, scales, zero_points, scale_kind, zero_kind, width, num_groups, arithmetic, pairs,
                block_rows, offsets, None)


def row_blocks(plan):
    """The row slices the plan works in, in order."""
    out_features = plan.packed.shape[0]
    starts = range(0, out_features, plan.block_rows)
    return [slice(start, min(start + plan.block_rows, out_features)) for start in starts]


def _group_view(t, kind, rows, num_groups, dtype):
    """Scales or zero points of rows `rows` (a slice), in `dtype`: [1 | R, 1 | groups, 1], broadcasting per group."""
    if kind == "per-tensor":
        return t.reshape(1, 1, 1).to(dtype)
    if kind == "per-channel":
        return t[rows].reshape(-1, 1, 1).to(dtype)
    return t[rows].reshape(-1, num_groups, 1).to(dtype)


# --- way 1: exact fp32 arithmetic ----------------------------------------------------------------

def _at_groups(t, groups):
    """A _group_view [1 | R, 1 | G, 1] at `groups` (a slice: [.., groups, 1]; an int: [.., 1]); a float as is."""
    if not torch.is_tensor(t):
        return t
    if t.shape[1] == 1:  # the same value for every group
        return t[:, 0] if isinstance(groups, int) else t
    return t[:, groups]


def _scaled_in_fp32(plan, rows, codes, w32):
    """w32 [R, in] fp32 <- (q - (8 + z)) * s from the nibble codes [R, in], exactly (plan.arithmetic)."""
    w32.copy_(codes)  # q
    offset = 8.0  # q - 8 = v
    if plan.zero_points is not None:
        offset = offset + _group_view(plan.zero_points, plan.zero_kind, rows, plan.num_groups, torch.float32)
    scale = _group_view(plan.scales, plan.scale_kind, rows, plan.num_groups, torch.float32)
    full = w32.shape[1] // plan.width  # whole groups; a ragged last group follows
    whole = slice(0, full)
    w32[:, :full * plan.width].view(-1, full, plan.width).sub_(_at_groups(offset, whole)).mul_(_at_groups(scale, whole))
    if full < plan.num_groups:
        w32[:, full * plan.width:].sub_(_at_groups(offset, full)).mul_(_at_groups(scale, full))  # [R, last group]


def _rows_by_arithmetic(plan, rows, out, scratch):
    """out [R, in] <- way 1 for rows `rows`; scratch: fp32 [>= R, in] unless out is fp32."""
    w32 = out if out.dtype == torch.float32 else scratch[:out.shape[0]]
    _scaled_in_fp32(plan, rows, nibble_codes(plan.packed[rows]), w32)
    if w32 is not out:
        out.copy_(w32)  # the one rounding


# --- way 2: tables -----------------------------------------------------------------------------------

def weight_table(plan, rows, output_dtype):
    """output_dtype [R, groups, 16]: RN((v - z) * s) for v = q - 8, q in [0, 16), of every (row, group) of `rows`.

    float64 in the reference's order (v - z, then * s), rounded once (round_once).
    """
    w = torch.arange(-8, 8, dtype=torch.float64, device=plan.packed.device)  # [16]
    if plan.zero_points is not None:
        w = w - _group_view(plan.zero_points, plan.zero_kind, rows, plan.num_groups, torch.float64)
    w = w * _group_view(plan.scales, plan.scale_kind, rows, plan.num_groups, torch.float64)
    w = w.expand(rows.stop - rows.start, plan.num_groups, 16)
    return round_once(w, output_dtype).contiguous()


def pair_table(table):
    """[R, groups, 16] weights -> integer [R, groups, 256]: entry q_lo + 16 q_hi holds the bits of
    (table[..., q_lo], table[..., q_hi]), the two columns of a packed byte, low column first."""
    size = table.element_size()
    bits = table.view(SAME_BITS[size]).to(PAIR_BITS[size])  # sign-extended
    low = bits & ((1 << 8 * size) - 1)  # zero-extended
    return (low[:, :, None, :] | (bits[:, :, :, None] << 8 * size)).reshape(table.shape[0], table.shape[1], 256)


def _rows_by_table(plan, rows, out):
    """out [R, in] <- the table entries of rows `rows`, one index_select (two columns a gather with pairs)."""
    table = weight_table(plan, rows, out.dtype)  # [R, groups, 16]
    packed = plan.packed[rows]
    if plan.pairs:
        table, codes, out = pair_table(table), packed, out.view(PAIR_BITS[out.element_size()])
    else:
        codes = nibble_codes(packed)
    index = codes.to(torch.int32)  # [R, units]
    index += plan.offsets[:codes.shape[0]]  # one dtype: the vectorized add
    torch.index_select(table.reshape(-1), 0, index.reshape(-1), out=out.reshape(-1))


# --- the contract ----------------------------------------------------------------------------------

def dequantize_rows(plan, rows, out, scratch):
    """Rows `rows` (a slice) of the dequantized weights -> out [R, in] (contiguous), each rounded once.

    scratch: fp32 [>= R, in] (fp32_scratch), for way 1 when out is not fp32.
    """
    if plan.native is not None:
        native.dequantize_into(plan.packed, *plan.native, plan.width, rows, out)
    elif plan.arithmetic:
        _rows_by_arithmetic(plan, rows, out, scratch)
    else:
        _rows_by_table(plan, rows, out)


def fp32_scratch(plan, output_dtype):
    """The fp32 block that dequantize_rows needs for this plan and output dtype, or None."""
    if plan.native is not None or not plan.arithmetic or output_dtype == torch.float32:
        return None
    return torch.empty(plan.block_rows, 2 * plan.packed.shape[1], dtype=torch.float32, device=plan.packed.device)


def dequantize(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """uint8 [out, in // 2] + scales/zero points (docs/contract.md#packed-weight) -> `output_dtype` [out, in], each weight rounded once.

    scales: fp16/bf16/fp32, per-tensor, [out] or [out, ceil(in / group_size)]; zero_points:
    None, integer or floating point, the same kinds of shape; group_size: int (or a NumPy
    integer) for grouped tensors. Bit for bit int4_lora_harness.reference.dequantize.
    """
    plan = plan_dequantize(packed_weights, scales, zero_points, group_size)
    validate_output_dtype(output_dtype)
    shape = (packed_weights.shape[0], 2 * packed_weights.shape[1])
    if plan.native is not None:
        out = native.empty_output(shape, output_dtype)
    else:
        out = torch.empty(shape, dtype=output_dtype, device=packed_weights.device)
    if out.numel():
        scratch = fp32_scratch(plan, output_dtype)
        blocks = [slice(0, shape[0])] if plan.native is not None else row_blocks(plan)  # C: no temporaries
        for rows in blocks:
            dequantize_rows(plan, rows, out[rows], scratch)
    return out


def lora_delta(x, lora_a, lora_b, lora_indices, scaling=1.0):
    """fp32 [M, out]: scaling * (x[m] @ A[i_m]^T) @ B[i_m]^T per token, exactly 0 where i_m = -1.

    x: [M, in]; lora_a: [L, rank, in]; lora_b: [L, out, rank]; lora_indices: int [M]; scaling: float.
    One adapter at a time, kept only for its own tokens (torch.where, never a 0 * mask): NaN or
    inf in an adapter, or a non-finite scaling, reaches no other token.
    """
    x32 = x.float()
    delta = torch.zeros(x.shape[0], lora_b.shape[1], dtype=torch.float32, device=x.device)
    for adapter in range(lora_a.shape[0]):
        mine = (lora_indices == adapter)[:, None]  # [M, 1]
        shrunk = x32 @ lora_a[adapter].float().T  # [M, rank]
        delta = torch.where(mine, scaling * (shrunk @ lora_b[adapter].float().T), delta)  # [M, out]
    return delta


def linear(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias):
    """docs/contract.md#linear: x [M, in] (fp16/bf16/fp32) -> [M, out] in x.dtype.

    Weights rounded once to x.dtype, block by block; fp32 GEMM, bias and LoRA; one final rounding.
    """
    out_features, in_features, _, _ = validate_linear(x, packed_weights, scales, zero_points, group_size, lora_a,
                                                      lora_b, lora_indices, bias)
    validate_scaling(scaling)
    m = x.shape[0]
    if m == 0 or out_features == 0:
        return torch.zeros(m, out_features, dtype=x.dtype, device=x.device)
    plan = plan_dequantize(packed_weights, scales, zero_points, group_size)
    x32 = x.float()  # [M, in]
    y_t = torch.zeros(out_features, m, dtype=torch.float32, device=x.device)  # y^T, fp32
    w = torch.empty(plan.block_rows, in_features, dtype=x.dtype, device=x.device)  # one block of weights, reused
    w32 = w if x.dtype == torch.float32 else torch.empty_like(w, dtype=torch.float32)
    for rows in row_blocks(plan) if in_features else []:  # no columns: y = bias + LoRA
        n = rows.stop - rows.start
        dequantize_rows(plan, rows, w[:n], w32)  # rounded once to x.dtype (w32 as its scratch)
        if w32 is not w:
            w32[:n].copy_(w[:n])  # exact
        torch.mm(w32[:n], x32.T, out=y_t[rows])  # [R, M]
    y = y_t.T  # [M, out]
    if bias is not None:
        y = y + bias.float()
    if lora_a is not None:
        has_adapter = (lora_indices >= 0)[:, None]  # [M, 1]
        y = torch.where(has_adapter, y + lora_delta(x, lora_a, lora_b, lora_indices, scaling), y)
    return y.to(x.dtype, memory_format=torch.contiguous_format)
