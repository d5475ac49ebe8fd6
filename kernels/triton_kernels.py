"""The @triton.jit code behind kernels/triton_int4.py: fused INT4 GEMM, LoRA shrink, dequantize.

Imports triton at the top: import it through kernels/triton_int4.py, which copes with its absence.

Nibbles (docs/contract.md#packed-weight): byte [o, j] holds column 2j in its low nibble and 2j + 1 in its high nibble,
v = nibble - 8. A K tile of BLOCK_K columns is BLOCK_K // 2 bytes per row, unpacked into its
even columns (low nibbles) and odd columns (high nibbles); x's tile is split the same way, so the
GEMM costs two tl.dot per tile and never interleaves W.

Unpacking uses no int-to-float conversion: OR-ing a nibble q into the bits of a power of two P
whose last mantissa bit is worth 1 (2**23 in fp32, 2**10 in fp16, 2**7 in bf16) gives the float
P + q exactly, and subtracting P + 8 leaves v, also exactly. In fp16/bf16 the compiler packs
these into two-lane HADD2/HFMA2 instructions.

Scales and zero points, whatever their granularity (docs/contract.md#packed-weight), are read as a [BLOCK_N, CHUNKS]
tile per K tile: the values at the first column of each of CHUNKS equal runs of the tile's
columns, repeated across each run. Per-tensor and per-channel tensors come with zero strides; a
grouped tensor whose groups cover whole K tiles uses CHUNKS = 1, one whose power-of-two groups
tile BLOCK_K one chunk per group, and any other group size one chunk per column pair (the odd
column's group is read separately, for odd group sizes).
"""
import triton
import triton.language as tl

# PTX for unpack_tile when ptx_unpack is asked for (CUDA only; the tl.* form beside it gives the same values): four
# packed bytes b0..b3 (one register; Triton packs element i into bits 8i..8i+7) -> outputs $0, $1 =
# half2 (lo(b0) - 8, lo(b1) - 8), (lo(b2) - 8, lo(b3) - 8) and $2, $3 the same for the high nibbles,
# in 10 instructions where the tl.* form takes ~30. prmt spreads two bytes into the 16-bit lanes;
# lop3 computes (t & mask) | bits(2**10), i.e. 2**10 + q (low nibble) or 2**10 + 16 q (high); then
# (2**10 + q) - 1032 = q - 8 and (2**10 + 16 q) / 16 - 72 = q - 8, both exact. bf16 shifts the high
# nibbles down instead, since 2**7 + 16 q leaves its binade. Constants: 0xE408 = -1032, 0x2C00 =
# 1/16, 0xD480 = -72 (fp16); 0x3F80 = 1, 0xC308 = -136 (bf16).
UNPACK_FP16_ASM = tl.constexpr("""{
.reg .b32 t0, t1, c0, c1, c2;
prmt.b32 t0, $4, 0, 0x4140;
prmt.b32 t1, $4, 0, 0x4342;
lop3.b32 $0, t0, 0x000F000F, 0x64006400, 0xEA;
lop3.b32 $1, t1, 0x000F000F, 0x64006400, 0xEA;
lop3.b32 $2, t0, 0x00F000F0, 0x64006400, 0xEA;
lop3.b32 $3, t1, 0x00F000F0, 0x64006400, 0xEA;
mov.b32 c0, 0xE408E408;
mov.b32 c1, 0x2C002C00;
mov.b32 c2, 0xD480D480;
add.f16x2 $0, $0, c0;
add.f16x2 $1, $1, c0;
fma.rn.f16x2 $2, $2, c1, c2;
fma.rn.f16x2 $3, $3, c1, c2;
}""")
UNPACK_BF16_ASM = tl.constexpr("""{
.reg .b32 t0, t1, t2, t3, c0, c1;
prmt.b32 t0, $4, 0, 0x4140;
prmt.b32 t1, $4, 0, 0x4342;
shr.b32 t2, t0, 4;
shr.b32 t3, t1, 4;
lop3.b32 $0, t0, 0x000F000F, 0x43004300, 0xEA;
lop3.b32 $1, t1, 0x000F000F, 0x43004300, 0xEA;
lop3.b32 $2, t2, 0x000F000F, 0x43004300, 0xEA;
lop3.b32 $3, t3, 0x000F000F, 0x43004300, 0xEA;
mov.b32 c0, 0x3F803F80;
mov.b32 c1, 0xC308C308;
fma.rn.bf16x2 $0, $0, c0, c1;
fma.rn.bf16x2 $1, $1, c0, c1;
fma.rn.bf16x2 $2, $2, c0, c1;
fma.rn.bf16x2 $3, $3, c0, c1;
}""")


@triton.jit
def round_once(x, DTYPE: tl.constexpr):
    """fp32 -> DTYPE, rounded to nearest even; for bf16 by integer ops, since the interpreter's cast truncates."""
    if DTYPE == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).to(tl.float32, bitcast=True)
        x = tl.where(x != x, x, rounded)  # NaN stays NaN
    return x.to(DTYPE)


@triton.jit
def chunk_values(ptr, stride_n, stride_g, offs_n, n_mask, k0, K, group_size, DTYPE: tl.constexpr,
                 CHUNKS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """DTYPE (even, odd), each broadcastable to [BLOCK_N, BLOCK_K // 2]: scale or zero point of each column."""
    first = k0 + tl.arange(0, CHUNKS) * (BLOCK_K // CHUNKS)  # first column of each chunk: [CHUNKS]
    mask = n_mask[:, None] & (first < K)[None, :]
    row = ptr + offs_n[:, None] * stride_n
    even = tl.load(row + (first // group_size)[None, :] * stride_g, mask=mask, other=0).to(DTYPE)
    odd = tl.load(row + ((first + 1) // group_size)[None, :] * stride_g, mask=mask, other=0).to(DTYPE)
    if CHUNKS == 1:
        return even, odd  # [BLOCK_N, 1] broadcasts as it is
    else:
        shape: tl.constexpr = (BLOCK_N, CHUNKS, BLOCK_K // 2 // CHUNKS)
        even = tl.reshape(tl.broadcast_to(even[:, :, None], shape), (BLOCK_N, BLOCK_K // 2))
        odd = tl.reshape(tl.broadcast_to(odd[:, :, None], shape), (BLOCK_N, BLOCK_K // 2))
        return even, odd


@triton.jit
def unpack_tile(w_ptr, stride_wn, stride_wk, z_ptr, stride_zn, stride_zg, offs_n, n_mask, k0, K, group_size,
                V_DTYPE: tl.constexpr, HAS_ZERO: tl.constexpr, ZERO_IS_INT: tl.constexpr, Z_CHUNKS: tl.constexpr,
                EVEN_K: tl.constexpr, USE_ASM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """V_DTYPE (even, odd), each [BLOCK_N, BLOCK_K // 2]: v - z at columns k0 + 2j and k0 + 2j + 1; 0 past K.

    Exact in fp32 for integer zero points (fractional ones: one rounding of v - z); the wrapper
    picks fp16/bf16 only where v - z is exact there too.
    """
    offs_j = k0 // 2 + tl.arange(0, BLOCK_K // 2)  # packed byte columns
    j_mask = offs_j < K // 2
    mask = n_mask[:, None]
    if not EVEN_K:
        mask &= j_mask[None, :]
    packed = tl.load(w_ptr + offs_n[:, None] * stride_wn + offs_j[None, :] * stride_wk, mask=mask, other=0)
    # packed: uint8 [BLOCK_N, BLOCK_K // 2]
    if HAS_ZERO:
        z_even, z_odd = chunk_values(z_ptr, stride_zn, stride_zg, offs_n, n_mask, k0, K, group_size, tl.float32,
                                     Z_CHUNKS, BLOCK_N, BLOCK_K)
    if V_DTYPE == tl.float32:
        bits = packed.to(tl.int32)
        even = ((bits & 0xF) | 0x4B000000).to(tl.float32, bitcast=True)  # 2**23 + q
        odd = ((bits >> 4) | 0x4B000000).to(tl.float32, bitcast=True)
        if HAS_ZERO and ZERO_IS_INT:  # 2**23 + 8 + z is exact: one subtraction
            even -= z_even + 8388616.0
            odd -= z_odd + 8388616.0
        else:
            even -= 8388616.0
            odd -= 8388616.0
            if HAS_ZERO:
                even -= z_even
                odd -= z_odd
    elif USE_ASM:
        if V_DTYPE == tl.float16:
            even, odd = tl.inline_asm_elementwise(UNPACK_FP16_ASM, "=r,=r,=r,=r,r", [packed],
                                                  dtype=(tl.float16, tl.float16), is_pure=True, pack=4)
        else:
            even, odd = tl.inline_asm_elementwise(UNPACK_BF16_ASM, "=r,=r,=r,=r,r", [packed],
                                                  dtype=(tl.bfloat16, tl.bfloat16), is_pure=True, pack=4)
        if HAS_ZERO:
            even -= z_even.to(V_DTYPE)
            odd -= z_odd.to(V_DTYPE)
    else:
        bits = packed.to(tl.int16)
        if V_DTYPE == tl.float16:
            even = ((bits & 0xF) | 0x6400).to(tl.float16, bitcast=True) - 1032.0  # (2**10 + q) - (2**10 + 8)
            odd = ((bits >> 4) | 0x6400).to(tl.float16, bitcast=True) - 1032.0
        else:
            even = ((bits & 0xF) | 0x4300).to(tl.bfloat16, bitcast=True) - 136.0  # (2**7 + q) - (2**7 + 8)
            odd = ((bits >> 4) | 0x4300).to(tl.bfloat16, bitcast=True) - 136.0
        if HAS_ZERO:
            even -= z_even.to(V_DTYPE)
            odd -= z_odd.to(V_DTYPE)
    if not EVEN_K:  # the K tail: x is 0 there, but (0 - z) * s may be inf in x's dtype and 0 * inf is NaN
        even = tl.where(j_mask[None, :], even, 0.0)
        odd = tl.where(j_mask[None, :], odd, 0.0)
    return even, odd


@triton.jit
def lora_expand(shrink_ptr, b_ptr, idx_ptr, offs_m, m_mask, offs_n, n_mask, M, rank, num_loras, num_splits,
                scaling, stride_bl, stride_bn, stride_br,
                FP32_DOT: tl.constexpr, RANK_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """fp32 [BLOCK_M, BLOCK_N]: scaling * shrink[m] @ B[i_m, offs_n]^T, 0 for rows with i_m = -1.

    shrink: fp32 [num_splits, M, RANK_PAD] partial sums, added here in split order (deterministic).
    The loop visits each adapter present in the tile once, in increasing order; -1 is never read.
    """
    offs_r = tl.arange(0, RANK_PAD)
    shrink = tl.zeros((BLOCK_M, RANK_PAD), tl.float32)
    for split in range(num_splits):
        shrink += tl.load(shrink_ptr + (split * M + offs_m[:, None]) * RANK_PAD + offs_r[None, :],
                          mask=m_mask[:, None], other=0.0)
    shrink *= scaling
    idx = tl.load(idx_ptr + offs_m, mask=m_mask, other=-1).to(tl.int64)
    out = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    lora = tl.min(tl.where(idx >= 0, idx, num_loras))
    while lora < num_loras:
        b = tl.load(b_ptr + lora * stride_bl + offs_n[None, :] * stride_bn + offs_r[:, None] * stride_br,
                    mask=n_mask[None, :] & (offs_r < rank)[:, None], other=0.0).to(tl.float32)  # [RANK_PAD, BLOCK_N]
        # tf32x3 keeps the fp32 intermediate to ~2**-22 on tensor cores; fp32 outputs get the FMA path.
        if FP32_DOT:
            part = tl.dot(shrink, b, input_precision="ieee")
        else:
            part = tl.dot(shrink, b, input_precision="tf32x3")
        out = tl.where((idx == lora)[:, None], part, out)
        lora = tl.min(tl.where(idx > lora, idx, num_loras))
    return out


@triton.jit
def int4_lora_gemm_kernel(
        x_ptr, w_ptr, s_ptr, z_ptr, bias_ptr, y_ptr, shrink_ptr, b_ptr, idx_ptr,
        M, N, K, group_size, rank, num_loras, num_splits, scaling,
        stride_xm, stride_xk, stride_wn, stride_wk, stride_sn, stride_sg, stride_zn, stride_zg,
        stride_ym, stride_yn, stride_bl, stride_bn, stride_br,
        HAS_ZERO: tl.constexpr, ZERO_IS_INT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_LORA: tl.constexpr,
        S_CHUNKS: tl.constexpr, Z_CHUNKS: tl.constexpr, EVEN_K: tl.constexpr, FP32_DOT: tl.constexpr,
        NATIVE_V: tl.constexpr, NATIVE_S: tl.constexpr, SCALE_AFTER_DOT: tl.constexpr, GROUP_TILES: tl.constexpr,
        USE_ASM: tl.constexpr, RANK_PAD: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """y[M, N] = x[M, K] @ W^T + bias + LoRA expand, W read from packed uint8 [N, K // 2].

    How W = (v - z) * s meets x (each is W rounded at most once to x's dtype, then exact
    products and fp32 accumulation; FP32_DOT: everything fp32, no TF32):
    - NATIVE_V: v - z is computed in x's dtype, where the wrapper knows it is exact.
    - SCALE_AFTER_DOT (one scale per row of the tile, GROUP_TILES K tiles per group): the
      [BLOCK_M, BLOCK_N] product of x and v - z is multiplied by s in fp32, so W is never rounded.
    - else W = (v - z) * s, in x's dtype where NATIVE_S (exact operands, one rounding) or in fp32.
    Grid: (cdiv(M, BLOCK_M), cdiv(N, BLOCK_N)); axis 0 varies fastest, so the programs that
    share a weight tile run together and the tile is read from HBM about once.
    """
    HALF_K: tl.constexpr = BLOCK_K // 2
    DOT_DTYPE: tl.constexpr = tl.float32 if FP32_DOT else x_ptr.dtype.element_ty
    V_DTYPE: tl.constexpr = DOT_DTYPE if NATIVE_V else tl.float32
    S_DTYPE: tl.constexpr = DOT_DTYPE if NATIVE_S else tl.float32
    PRECISION: tl.constexpr = "ieee" if FP32_DOT else "tf32"  # "tf32" only matters for fp32 operands
    # int64 rows and columns: offs * stride passes 2**31 on large outputs (e.g. 128k-wide lm_head, 17k tokens)
    offs_m = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_mask = offs_m < M
    n_mask = offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        x_mask = m_mask[:, None]
        if not EVEN_K:
            x_mask &= (k0 + offs_k < K)[None, :]
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + (k0 + offs_k)[None, :] * stride_xk, mask=x_mask, other=0.0)
        # x: [BLOCK_M, BLOCK_K]
        x_even, x_odd = tl.split(tl.reshape(x.to(DOT_DTYPE), (BLOCK_M, HALF_K, 2)))  # columns 2j, 2j + 1
        w_even, w_odd = unpack_tile(w_ptr, stride_wn, stride_wk, z_ptr, stride_zn, stride_zg, offs_n, n_mask, k0, K,
                                    group_size, V_DTYPE, HAS_ZERO, ZERO_IS_INT, Z_CHUNKS, EVEN_K, USE_ASM, BLOCK_N,
                                    BLOCK_K)
        if SCALE_AFTER_DOT:
            part = tl.dot(x_even, tl.trans(w_even.to(DOT_DTYPE)), input_precision=PRECISION)
            part = tl.dot(x_odd, tl.trans(w_odd.to(DOT_DTYPE)), part, input_precision=PRECISION)
            group = (k0 // BLOCK_K) // GROUP_TILES  # = k0 // group_size, without a run-time division
            s = tl.load(s_ptr + offs_n * stride_sn + group * stride_sg, mask=n_mask, other=0.0)
            acc += part * s.to(tl.float32)[None, :]
        else:
            s_even, s_odd = chunk_values(s_ptr, stride_sn, stride_sg, offs_n, n_mask, k0, K, group_size, S_DTYPE,
                                         S_CHUNKS, BLOCK_N, BLOCK_K)
            w_even = (w_even.to(S_DTYPE) * s_even).to(DOT_DTYPE)
            w_odd = (w_odd.to(S_DTYPE) * s_odd).to(DOT_DTYPE)
            acc = tl.dot(x_even, tl.trans(w_even), acc, input_precision=PRECISION)
            acc = tl.dot(x_odd, tl.trans(w_odd), acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    if HAS_LORA:
        acc += lora_expand(shrink_ptr, b_ptr, idx_ptr, offs_m, m_mask, offs_n, n_mask, M, rank, num_loras,
                           num_splits, scaling, stride_bl, stride_bn, stride_br, FP32_DOT, RANK_PAD, BLOCK_M, BLOCK_N)
    tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn, round_once(acc, y_ptr.dtype.element_ty),
             mask=m_mask[:, None] & n_mask[None, :])


@triton.jit
def lora_shrink_kernel(x_ptr, a_ptr, idx_ptr, out_ptr, M, K, rank, num_loras, k_per_split,
                       stride_xm, stride_xk, stride_al, stride_ar, stride_ak,
                       FP32_DOT: tl.constexpr, RANK_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """out[split, m, :] = x[m, ks] @ A[i_m, :, ks]^T in fp32 over the split's columns ks; 0 where i_m = -1.

    out: fp32 [num_splits, M, RANK_PAD]. Grid: (cdiv(M, BLOCK_M), num_splits). Each program loads
    each adapter its rows use once per K tile, with only that adapter's rows of x.
    """
    split = tl.program_id(1)
    offs_m = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)  # int64: offsets past 2**31
    offs_r = tl.arange(0, RANK_PAD)
    m_mask = offs_m < M
    k_start = split * k_per_split
    k_end = tl.minimum(K, k_start + k_per_split)
    idx = tl.load(idx_ptr + offs_m, mask=m_mask, other=-1).to(tl.int64)
    acc = tl.zeros((BLOCK_M, RANK_PAD), tl.float32)
    lora = tl.min(tl.where(idx >= 0, idx, num_loras))
    while lora < num_loras:
        rows = m_mask & (idx == lora)
        part = tl.zeros((BLOCK_M, RANK_PAD), tl.float32)
        for k0 in range(k_start, k_end, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_mask = offs_k < k_end
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                        mask=rows[:, None] & k_mask[None, :], other=0.0)  # [BLOCK_M, BLOCK_K]
            a = tl.load(a_ptr + lora * stride_al + offs_r[None, :] * stride_ar + offs_k[:, None] * stride_ak,
                        mask=k_mask[:, None] & (offs_r < rank)[None, :], other=0.0)  # [BLOCK_K, RANK_PAD]
            if FP32_DOT:  # fp32 or mixed dtypes: full fp32 products
                part = tl.dot(x.to(tl.float32), a.to(tl.float32), part, input_precision="ieee")
            else:
                part = tl.dot(x, a, part)
        acc = tl.where(rows[:, None], part, acc)
        lora = tl.min(tl.where(idx > lora, idx, num_loras))
    tl.store(out_ptr + (split * M + offs_m[:, None]) * RANK_PAD + offs_r[None, :], acc, mask=m_mask[:, None])


@triton.jit
def dequantize_kernel(w_ptr, s_ptr, z_ptr, out_ptr, N, K, group_size,
                      stride_wn, stride_wk, stride_sn, stride_sg, stride_zn, stride_zg, stride_on, stride_ok,
                      HAS_ZERO: tl.constexpr, ZERO_IS_INT: tl.constexpr, S_CHUNKS: tl.constexpr,
                      Z_CHUNKS: tl.constexpr, FP64: tl.constexpr, EVEN_K: tl.constexpr,
                      BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """out[N, K] = (v - z) * s, rounded once to out's dtype. Grid: (cdiv(K, BLOCK_K), cdiv(N, BLOCK_N)).

    fp32 math is exact up to the product's one rounding, except with fractional fp32 zero points,
    where v - z rounds too: FP64 (chosen for fp32 output) then computes in fp64, as the reference does.
    """
    k0 = tl.program_id(0) * BLOCK_K
    offs_n = tl.program_id(1).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)  # int64: N * K may pass 2**31
    n_mask = offs_n < N
    MATH: tl.constexpr = tl.float64 if FP64 else tl.float32
    v_even, v_odd = unpack_tile(w_ptr, stride_wn, stride_wk, z_ptr, stride_zn, stride_zg, offs_n, n_mask, k0, K,
                                group_size, tl.float32, HAS_ZERO and not FP64, ZERO_IS_INT, Z_CHUNKS, EVEN_K, False,
                                BLOCK_N, BLOCK_K)
    v_even, v_odd = v_even.to(MATH), v_odd.to(MATH)
    if FP64 and HAS_ZERO:
        z_even, z_odd = chunk_values(z_ptr, stride_zn, stride_zg, offs_n, n_mask, k0, K, group_size, MATH,
                                     Z_CHUNKS, BLOCK_N, BLOCK_K)
        v_even -= z_even
        v_odd -= z_odd
    s_even, s_odd = chunk_values(s_ptr, stride_sn, stride_sg, offs_n, n_mask, k0, K, group_size, MATH,
                                 S_CHUNKS, BLOCK_N, BLOCK_K)
    w = tl.join(v_even * s_even, v_odd * s_odd)  # [BLOCK_N, BLOCK_K // 2, 2]
    w = w.to(out_ptr.dtype.element_ty) if FP64 else round_once(w, out_ptr.dtype.element_ty)
    cols = k0 + 2 * tl.arange(0, BLOCK_K // 2)[None, :, None] + tl.arange(0, 2)[None, None, :]
    tl.store(out_ptr + offs_n[:, None, None] * stride_on + cols * stride_ok, w,
             mask=n_mask[:, None, None] & (cols < K))
