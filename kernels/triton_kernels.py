"""The @triton.jit code behind kernels/triton_int4.py: fused INT4 GEMM, LoRA shrink, dequantize.

Imports triton at the top: import it through kernels/triton_int4.py, which copes with its absence.

Packed layout (SPEC §1): byte [o, j] holds column 2j in its low nibble and 2j + 1 in its high
nibble, value = nibble - 8. A K tile of BLOCK_K columns is BLOCK_K // 2 bytes per row; it is
unpacked into its even columns (low nibbles) and odd columns (high nibbles), and x's tile is
split the same way, so the GEMM costs two tl.dot per tile and never interleaves W.

Scales and zero points, whatever their granularity (SPEC §2), are read as a [BLOCK_N, CHUNKS]
tile per K tile: the values for the first column of each of CHUNKS equal runs of the tile's
columns, then repeated across each run. Per-tensor and per-channel tensors come with zero
strides (one value for the whole row); a grouped tensor whose groups cover whole K tiles uses
CHUNKS = 1, one whose power-of-two groups tile BLOCK_K uses one chunk per group, and any other
group size (24, 96 with a large tile, odd) one chunk per column pair, with the odd column's
group read separately.
"""
import triton
import triton.language as tl


@triton.jit
def round_once(x, DTYPE: tl.constexpr):
    """fp32 -> DTYPE, rounded to nearest even; for bf16 by integer ops, since the interpreter's cast truncates."""
    if DTYPE == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).to(tl.float32, bitcast=True)
        x = tl.where(x != x, x, rounded)  # NaN stays NaN
    return x.to(DTYPE)


@triton.jit
def _chunk_values(ptr, stride_n, stride_g, offs_n, n_mask, k0, K, group_size,
                  CHUNKS: tl.constexpr, BLOCK_K: tl.constexpr):
    """fp32 ([BLOCK_N, CHUNKS], [BLOCK_N, CHUNKS]): values for the even and odd first columns of each chunk."""
    first = k0 + tl.arange(0, CHUNKS) * (BLOCK_K // CHUNKS)  # first column of each chunk: [CHUNKS]
    mask = n_mask[:, None] & (first < K)[None, :]
    row = ptr + offs_n[:, None] * stride_n
    even = tl.load(row + (first // group_size)[None, :] * stride_g, mask=mask, other=0)
    odd = tl.load(row + ((first + 1) // group_size)[None, :] * stride_g, mask=mask, other=0)
    return even.to(tl.float32), odd.to(tl.float32)


@triton.jit
def _repeat_chunks(t, BLOCK_N: tl.constexpr, CHUNKS: tl.constexpr, HALF_K: tl.constexpr):
    """[BLOCK_N, CHUNKS] -> broadcastable to [BLOCK_N, HALF_K]: each value over its HALF_K // CHUNKS bytes."""
    if CHUNKS == 1:
        return t  # [BLOCK_N, 1] broadcasts as it is
    else:
        return tl.reshape(tl.broadcast_to(t[:, :, None], (BLOCK_N, CHUNKS, HALF_K // CHUNKS)), (BLOCK_N, HALF_K))


@triton.jit
def dequantize_tile(w_ptr, stride_wn, stride_wk, s_ptr, stride_sn, stride_sg, z_ptr, stride_zn, stride_zg,
                    offs_n, n_mask, k0, K, group_size,
                    HAS_ZERO: tl.constexpr, S_CHUNKS: tl.constexpr, Z_CHUNKS: tl.constexpr, EVEN_K: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """fp32 (w_even, w_odd), each [BLOCK_N, BLOCK_K // 2]: W[offs_n, k0 + 2j] and W[offs_n, k0 + 2j + 1].

    W = (v - z) * s in fp32 (SPEC §3); columns past K come out as 0.
    """
    HALF_K: tl.constexpr = BLOCK_K // 2
    offs_j = k0 // 2 + tl.arange(0, HALF_K)  # packed byte columns: [HALF_K]
    j_mask = offs_j < K // 2
    packed = tl.load(w_ptr + offs_n[:, None] * stride_wn + offs_j[None, :] * stride_wk,
                     mask=n_mask[:, None] & j_mask[None, :], other=0x88)  # uint8 [BLOCK_N, HALF_K]
    nibbles = packed.to(tl.int32)
    # q - 8 without an int-to-float conversion: the fp32 with bits 0x4B000000 | q is 2**23 + q exactly.
    v_even = ((nibbles & 0xF) | 0x4B000000).to(tl.float32, bitcast=True) - 8388616.0
    v_odd = ((nibbles >> 4) | 0x4B000000).to(tl.float32, bitcast=True) - 8388616.0
    if HAS_ZERO:
        z_even, z_odd = _chunk_values(z_ptr, stride_zn, stride_zg, offs_n, n_mask, k0, K, group_size, Z_CHUNKS, BLOCK_K)
        v_even -= _repeat_chunks(z_even, BLOCK_N, Z_CHUNKS, HALF_K)
        v_odd -= _repeat_chunks(z_odd, BLOCK_N, Z_CHUNKS, HALF_K)
    s_even, s_odd = _chunk_values(s_ptr, stride_sn, stride_sg, offs_n, n_mask, k0, K, group_size, S_CHUNKS, BLOCK_K)
    w_even = v_even * _repeat_chunks(s_even, BLOCK_N, S_CHUNKS, HALF_K)
    w_odd = v_odd * _repeat_chunks(s_odd, BLOCK_N, S_CHUNKS, HALF_K)
    if not EVEN_K:  # the K tail: x is 0 there, but (0 - z) * s may be inf in x's dtype and 0 * inf is NaN
        w_even = tl.where(j_mask[None, :], w_even, 0.0)
        w_odd = tl.where(j_mask[None, :], w_odd, 0.0)
    return w_even, w_odd


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
        HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_LORA: tl.constexpr,
        S_CHUNKS: tl.constexpr, Z_CHUNKS: tl.constexpr, EVEN_K: tl.constexpr, FP32_DOT: tl.constexpr,
        RANK_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """y[M, N] = x[M, K] @ W^T + bias + LoRA expand, W read from packed uint8 [N, K // 2].

    Grid: (cdiv(M, BLOCK_M), cdiv(N, BLOCK_N)); axis 0 varies fastest, so the programs that share
    a weight tile run together and the tile is read from HBM about once.
    """
    HALF_K: tl.constexpr = BLOCK_K // 2
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask = offs_m < M
    n_mask = offs_n < N
    offs_c = 2 * tl.arange(0, HALF_K)[None, :, None] + tl.arange(0, 2)[None, None, :]  # [1, HALF_K, 2]
    x_rows = x_ptr + offs_m[:, None, None] * stride_xm
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        x = tl.load(x_rows + (k0 + offs_c) * stride_xk, mask=m_mask[:, None, None] & (k0 + offs_c < K), other=0.0)
        x_even, x_odd = tl.split(x)  # [BLOCK_M, HALF_K] each
        w_even, w_odd = dequantize_tile(w_ptr, stride_wn, stride_wk, s_ptr, stride_sn, stride_sg, z_ptr, stride_zn,
                                        stride_zg, offs_n, n_mask, k0, K, group_size,
                                        HAS_ZERO, S_CHUNKS, Z_CHUNKS, EVEN_K, BLOCK_N, BLOCK_K)
        if FP32_DOT:  # fp32 activations (or bf16 in the interpreter): W kept fp32, full fp32 products, no TF32
            acc = tl.dot(x_even.to(tl.float32), tl.trans(w_even), acc, input_precision="ieee")
            acc = tl.dot(x_odd.to(tl.float32), tl.trans(w_odd), acc, input_precision="ieee")
        else:  # W rounded once to x's dtype, exact products, fp32 accumulation
            acc = tl.dot(x_even, tl.trans(w_even.to(x_ptr.dtype.element_ty)), acc)
            acc = tl.dot(x_odd, tl.trans(w_odd.to(x_ptr.dtype.element_ty)), acc)
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
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
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
                      HAS_ZERO: tl.constexpr, S_CHUNKS: tl.constexpr, Z_CHUNKS: tl.constexpr, EVEN_K: tl.constexpr,
                      BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """out[N, K] = (v - z) * s computed in fp32, rounded once to out's dtype. Grid: (cdiv(K, BLOCK_K), cdiv(N, BLOCK_N))."""
    HALF_K: tl.constexpr = BLOCK_K // 2
    k0 = tl.program_id(0) * BLOCK_K
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    w_even, w_odd = dequantize_tile(w_ptr, stride_wn, stride_wk, s_ptr, stride_sn, stride_sg, z_ptr, stride_zn,
                                    stride_zg, offs_n, n_mask, k0, K, group_size,
                                    HAS_ZERO, S_CHUNKS, Z_CHUNKS, EVEN_K, BLOCK_N, BLOCK_K)
    cols = k0 + 2 * tl.arange(0, HALF_K)[None, :, None] + tl.arange(0, 2)[None, None, :]  # [1, HALF_K, 2]
    w = round_once(tl.join(w_even, w_odd), out_ptr.dtype.element_ty)  # [BLOCK_N, HALF_K, 2]
    tl.store(out_ptr + offs_n[:, None, None] * stride_on + cols * stride_ok, w,
             mask=n_mask[:, None, None] & (cols < K))
