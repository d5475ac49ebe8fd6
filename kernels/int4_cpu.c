/* SPEC section 3's dequantizer on the CPU, bit for bit the reference: W = RN_out(fl64(fl64(v - z) * s)).

   The weights of one (row, group) take at most 16 values, one per nibble q (v = q - 8). Each group's
   16 values are computed in float64 in the reference's order (v - z, then * s) and rounded once to the
   output format; the group's packed bytes are then decoded through that table: with SSSE3, 32 weights
   per step, each byte of an output weight looked up by PSHUFB (a 16-entry byte table, indexed by the
   nibble itself); elsewhere, or for the bytes left over, one weight at a time. The cost does not depend
   on the zero point kind or the scale dtype.

   Rounding once from float64: to fp32 by the C cast (one round to nearest even); to fp16 and bf16 by
   integer operations on the float64 bits (round_bits), or, where the 16 values are exact in fp32 and the
   CPU has AVX and F16C, from fp32 by VCVTPS2PH or the integer rounding of the fp32 bits (exact_table).

   Built and loaded by kernels/native.py (ctypes; compiled with -ffp-contract=off: no fused multiply-add).
*/
#define _DEFAULT_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#ifdef __linux__
#include <sys/mman.h>
#endif
#ifdef __SSSE3__
#include <tmmintrin.h>
#endif
#if defined(__AVX__) && defined(__F16C__)
#include <immintrin.h>
#endif

enum { FP16 = 0, BF16 = 1, FP32 = 2 };  /* output formats, as kernels/native.py passes them */

static inline uint32_t bits_of(float f) { uint32_t b; memcpy(&b, &f, 4); return b; }
static inline uint64_t bits64_of(double x) { uint64_t b; memcpy(&b, &x, 8); return b; }

/* The bits of x rounded once, to nearest even, to a binary format with `mantissa` stored significand bits
   and `exponent` exponent bits (fp16: 10, 5; bf16: 7, 8). Integer operations on the float64 bits for
   normals (add half an ulp less one, plus the kept last bit, then shift: a carry into the exponent is the
   right result, up to inf at the tie above the largest finite value), float64 ones for subnormals (|x| in
   units of the smallest subnormal, to the nearest integer by adding 2**52, exact scalings): no branch, so
   that the compiler vectorizes a table's 16 roundings. */
static inline uint32_t round_bits(double x, int mantissa, int exponent) {
    const int bias = (1 << (exponent - 1)) - 1, drop = 52 - mantissa;
    const uint64_t inf = (uint64_t)((1 << exponent) - 1) << mantissa;
    const uint64_t min_normal = (uint64_t)(1023 - bias + 1) << 52;  /* float64 bits of 2**(1 - bias) */
    const uint64_t to_inf = ((uint64_t)(1023 + bias) << 52) | ((1ull << 52) - (1ull << (drop - 1)));  /* the tie */
    const double per_subnormal = ldexp(1.0, bias - 1 + mantissa);  /* 1 / the smallest subnormal */
    uint64_t b = bits64_of(x), a = b & 0x7FFFFFFFFFFFFFFFull;
    uint64_t normal = ((a + (1ull << (drop - 1)) - 1 + ((a >> drop) & 1)) >> drop) - ((uint64_t)(1023 - bias) << mantissa);
    uint64_t subnormal = bits64_of(fabs(x) * per_subnormal + 0x1p52) - bits64_of(0x1p52);
    uint64_t r = a < min_normal ? subnormal : normal;
    r = a >= to_inf ? inf : r;
    r = a > 0x7FF0000000000000ull ? inf | 1ull << (mantissa - 1) : r;  /* NaN: quiet */
    return (uint32_t)(b >> 63) << (mantissa + exponent) | (uint32_t)r;
}

static inline uint32_t fp16_bits(double x) { return round_bits(x, 10, 5); }
static inline uint32_t bf16_bits(double x) { return round_bits(x, 7, 8); }

#if defined(__AVX__) && defined(__F16C__)
/* The exact case, 16 entries in 4 vectors: where all 16 float64 values are fp32 values (fp16 / bf16 scales
   with no or integer zero points: GPTQ, AWQ), they round to fp16 by VCVTPS2PH and to bf16 by the integer
   rounding of their fp32 bits, 4 to 8 a step. Returns 0 (table untouched) where one is not exact. */
static int exact_table(const double w[16], int kind, uint32_t table[16]) {
    __m128 f[4];
    __m128d inexact = _mm_setzero_pd();
    for (int i = 0; i < 4; i++) {
        __m256d w4 = _mm256_loadu_pd(w + 4 * i);
        f[i] = _mm256_cvtpd_ps(w4);  /* to nearest: exact where w is an fp32 value */
        __m256d differs = _mm256_cmp_pd(_mm256_cvtps_pd(f[i]), w4, _CMP_NEQ_UQ);  /* NaN differs */
        inexact = _mm_or_pd(inexact, _mm_or_pd(_mm256_castpd256_pd128(differs), _mm256_extractf128_pd(differs, 1)));
    }
    if (_mm_movemask_pd(inexact) != 0) return 0;
    for (int i = 0; i < 4; i++) {
        __m128i entry;
        if (kind == FP16) {
            entry = _mm_unpacklo_epi16(_mm_cvtps_ph(f[i], _MM_FROUND_TO_NEAREST_INT), _mm_setzero_si128());
        } else {  /* bf16: (b + 0x7FFF + (b >> 16 & 1)) >> 16 */
            __m128i b = _mm_castps_si128(f[i]);
            __m128i odd = _mm_and_si128(_mm_srli_epi32(b, 16), _mm_set1_epi32(1));
            entry = _mm_srli_epi32(_mm_add_epi32(_mm_add_epi32(b, _mm_set1_epi32(0x7FFF)), odd), 16);
        }
        _mm_storeu_si128((__m128i *)(table + 4 * i), entry);
    }
    return 1;
}
#endif

/* table[q] = the output bits of RN_out((q - 8 - z) * s), q in [0, 16): z, s as the reference has them. */
static void weight_table(double s, double z, int kind, uint32_t table[16]) {
    double w[16];
    for (int q = 0; q < 16; q++) w[q] = ((double)(q - 8) - z) * s;
    if (kind == FP32) {
        for (int q = 0; q < 16; q++) table[q] = bits_of((float)w[q]);
        return;
    }
#if defined(__AVX__) && defined(__F16C__)
    if (exact_table(w, kind, table)) return;
#endif
    if (kind == FP16) {
        for (int q = 0; q < 16; q++) table[q] = fp16_bits(w[q]);
    } else {
        for (int q = 0; q < 16; q++) table[q] = bf16_bits(w[q]);
    }
}

/* Columns [start, stop) of one row through `table`, one weight at a time; out: that row. */
static void decode_columns(const uint8_t *row, int64_t start, int64_t stop, const uint32_t table[16],
                           int size, uint8_t *out) {
    for (int64_t c = start; c < stop; c++) {
        uint32_t q = (row[c >> 1] >> ((c & 1) << 2)) & 15u;
        if (size == 2) ((uint16_t *)out)[c] = (uint16_t)table[q];
        else ((uint32_t *)out)[c] = table[q];
    }
}

#ifdef __SSSE3__
/* plane[k][q] = byte k of table[q] (little-endian), k < size: the 16-byte lookup tables of PSHUFB. */
static inline void byte_planes(const uint32_t table[16], int size, __m128i plane[4]) {
    __m128i entries[4], byte = _mm_set1_epi32(0xFF);
    for (int i = 0; i < 4; i++) entries[i] = _mm_loadu_si128((const __m128i *)(table + 4 * i));
    for (int k = 0; k < size; k++) {
        __m128i b[4];
        for (int i = 0; i < 4; i++) b[i] = _mm_and_si128(_mm_srli_epi32(entries[i], 8 * k), byte);
        plane[k] = _mm_packus_epi16(_mm_packs_epi32(b[0], b[1]), _mm_packs_epi32(b[2], b[3]));
    }
}

/* 16 bytes, stored with non-temporal writes where `dst` is 16-byte aligned: the output is written once,
   and is rarely still in cache when it is read. */
static inline void store(__m128i *dst, __m128i v, int aligned) {
    if (aligned) _mm_stream_si128(dst, v);
    else _mm_storeu_si128(dst, v);
}

/* The bytes [0, n) of a group (16 | n) through `table`: 32 weights a step. out: the group's first weight. */
static void decode_bytes_ssse3(const uint8_t *bytes, int64_t n, const uint32_t table[16], int size, uint8_t *out) {
    __m128i plane[4], low_nibbles = _mm_set1_epi8(0x0F);
    byte_planes(table, size, plane);
    int aligned = ((uintptr_t)out & 15) == 0;
    for (int64_t j = 0; j < n; j += 16) {
        __m128i packed = _mm_loadu_si128((const __m128i *)(bytes + j));  /* 16 bytes: 32 weights */
        __m128i lo = _mm_and_si128(packed, low_nibbles), hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low_nibbles);
        __m128i codes[2] = {_mm_unpacklo_epi8(lo, hi), _mm_unpackhi_epi8(lo, hi)};  /* columns in order */
        __m128i *dst = (__m128i *)(out + 2 * j * size);
        for (int half = 0; half < 2; half++) {
            __m128i b0 = _mm_shuffle_epi8(plane[0], codes[half]), b1 = _mm_shuffle_epi8(plane[1], codes[half]);
            __m128i w01_lo = _mm_unpacklo_epi8(b0, b1), w01_hi = _mm_unpackhi_epi8(b0, b1);  /* 2-byte weights */
            if (size == 2) {
                store(dst++, w01_lo, aligned);
                store(dst++, w01_hi, aligned);
                continue;
            }
            __m128i b2 = _mm_shuffle_epi8(plane[2], codes[half]), b3 = _mm_shuffle_epi8(plane[3], codes[half]);
            __m128i w23_lo = _mm_unpacklo_epi8(b2, b3), w23_hi = _mm_unpackhi_epi8(b2, b3);
            store(dst++, _mm_unpacklo_epi16(w01_lo, w23_lo), aligned);  /* 4-byte weights */
            store(dst++, _mm_unpackhi_epi16(w01_lo, w23_lo), aligned);
            store(dst++, _mm_unpacklo_epi16(w01_hi, w23_hi), aligned);
            store(dst++, _mm_unpackhi_epi16(w01_hi, w23_hi), aligned);
        }
    }
}
#endif

/* Columns [start, stop) of one row through `table`: whole 16-byte steps vectorized where the group starts
   on a byte, the rest one weight at a time. */
static void decode_group(const uint8_t *row, int64_t start, int64_t stop, const uint32_t table[16], int size,
                         uint8_t *out) {
#ifdef __SSSE3__
    if ((start & 1) == 0) {
        int64_t n = ((stop - start) / 32) * 16;  /* bytes in whole steps */
        decode_bytes_ssse3(row + start / 2, n, table, size, out + start * size);
        start += 2 * n;
    }
#endif
    decode_columns(row, start, stop, table, size, out);
}

/* out [rows, 2 * half] (output format `kind`, contiguous) <- the dequantized weights of packed [rows, half].

   scales, zeros: float64, element (r, g) at r * *_row + g * *_group (per-tensor: 0, 0; per-channel: 1, 0;
   grouped: groups, 1); zeros may be NULL (no zero points). width: columns per group (>= 1).
*/
void int4_dequantize(const uint8_t *packed, int64_t rows, int64_t half, const double *scales, int64_t scale_row,
                     int64_t scale_group, const double *zeros, int64_t zero_row, int64_t zero_group, int64_t width,
                     int kind, void *out) {
    int size = kind == FP32 ? 4 : 2;
    int64_t in_features = 2 * half;
    uint32_t table[16];
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *row = packed + r * half;
        uint8_t *out_row = (uint8_t *)out + r * in_features * size;
        for (int64_t g = 0, start = 0; start < in_features; g++, start += width) {
            double s = scales[r * scale_row + g * scale_group];
            double z = zeros ? zeros[r * zero_row + g * zero_group] : 0.0;
            weight_table(s, z, kind, table);
            decode_group(row, start, start + width < in_features ? start + width : in_features, table, size,
                         out_row);
        }
    }
#ifdef __SSSE3__
    _mm_sfence();  /* the non-temporal stores are visible before the caller reads */
#endif
}

/* Ask for transparent huge pages on the whole 2 MiB pages inside [address, address + bytes): a new output's
   first writes then fault in 2 MiB at a time, not 4 KiB. Returns madvise's result (0: taken), 1 where
   there is nothing to advise (no whole huge page inside, or not Linux). */
int int4_advise_huge_pages(void *address, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const uintptr_t huge = (uintptr_t)1 << 21;
    uintptr_t first = ((uintptr_t)address + huge - 1) & ~(huge - 1), end = ((uintptr_t)address + bytes) & ~(huge - 1);
    if (end <= first) return 1;
    return madvise((void *)first, end - first, MADV_HUGEPAGE);
#else
    (void)address;
    (void)bytes;
    return 1;
#endif
}
