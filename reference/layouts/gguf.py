"""GGUF / ggml Q4_0 and Q4_1 blocks <-> canonical. NumPy only; byte layouts: docs/layouts/gguf-q4_0.md, gguf-q4_1.md.

A row of `in` weights is in / 32 blocks of 32 consecutive columns; a tensor is `blocks` uint8
[out, in / 32 * bytes_per_block], row-major, as gguf-py's quants.quantize returns it (ggml writes
the shape reversed, ne = (in, out)). Each block:

| format | bytes | layout                                              | W of element j      |
| ------ | ----- | --------------------------------------------------- | ------------------- |
| Q4_0   | 18    | fp16 d (little-endian), 16 bytes qs                 | (q_j - 8) * d       |
| Q4_1   | 20    | fp16 d, fp16 m, 16 bytes qs                         | q_j * d + m         |

qs byte j (0 <= j < 16) holds element j in its low nibble and element j + 16 in its high nibble.
In canonical terms v = q - 8 (the same nibble values), s = d per block, and
  Q4_0: z = 0;  Q4_1: z = -8 - m / d (a fractional zero point, exact only when m / d is a dyadic).
"""
import numpy as np

from int4_lora_harness.reference.layouts.canonical import Canonical, exact_sum, fp16_values, no_perm, per_block
from int4_lora_harness.reference.packing import pack, unpack

BLOCK = 32  # columns per block
BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20}  # fp16 d [, fp16 m], 16 bytes of nibbles


# --- nibbles <-> the 16 qs bytes of a block ----------------------------------------------

def values_to_qs(values):
    """v: int8 [out, in] in [-8, 7], in % 32 == 0 -> qs uint8 [out, in / 32, 16]."""
    q = (values.astype(np.int16) + 8).astype(np.uint8).reshape(values.shape[0], -1, BLOCK)  # [out, nb, 32]
    return q[..., :16] | (q[..., 16:] << 4)  # byte j: element j low, element j + 16 high


def qs_to_values(qs):
    """qs uint8 [out, nb, 16] -> v: int8 [out, nb * 32] in [-8, 7]."""
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # [out, nb, 32]: elements 0..15, then 16..31
    return q.reshape(qs.shape[0], -1).astype(np.int8) - 8


def half_bytes(d):
    """fp16 [out, nb] -> uint8 [out, nb, 2], little-endian."""
    return np.ascontiguousarray(d, dtype="<f2").view(np.uint8).reshape(*d.shape, 2)


def half_from_bytes(b):
    """uint8 [out, nb, 2] little-endian -> float64 [out, nb] of fp16 values."""
    return np.ascontiguousarray(b).view("<f2")[..., 0].astype(np.float64)


# --- the shapes ---------------------------------------------------------------------------

def _columns(in_features, fmt):
    if in_features % BLOCK:
        raise ValueError(f"packed: GGUF {fmt} stores blocks of {BLOCK} columns; in_features {in_features} "
                         f"is not a multiple of {BLOCK}")


def _blocks(blocks, shape, fmt):
    """blocks, shape -> (blocks uint8 [out, nb, bytes_per_block], out, in), or ValueError naming them."""
    if len(shape) != 2 or any(not isinstance(n, (int, np.integer)) or n <= 0 for n in shape):
        raise ValueError(f"shape must be (out_features, in_features) of positive ints, got {shape!r}")
    out_features, in_features = (int(n) for n in shape)
    _columns(in_features, fmt)
    blocks = np.asarray(blocks)
    width = in_features // BLOCK * BLOCK_BYTES[fmt]
    if blocks.dtype != np.uint8 or blocks.shape != (out_features, width):
        raise ValueError(f"blocks must be uint8 [{out_features}, {width}] ({in_features} // {BLOCK} blocks of "
                         f"{BLOCK_BYTES[fmt]} bytes per row), got {blocks.dtype} {list(blocks.shape)}")
    return blocks.reshape(out_features, -1, BLOCK_BYTES[fmt]), out_features, in_features


# --- Q4_0 ---------------------------------------------------------------------------------

def to_gguf_q4_0(c):
    """Canonical -> {"blocks": uint8 [out, in / 32 * 18], "shape": (out, in)}.

    in % 32 == 0; scales fp16 values, grouped ones with group_size % 32 == 0 (one d per block);
    no zero points (None or all 0); no perm.
    """
    no_perm(c, "GGUF Q4_0")
    values = unpack(c.packed)  # v: [out, in]
    out_features, in_features = values.shape
    _columns(in_features, "Q4_0")
    if c.zero_points is not None and np.any(c.zero_points):
        raise ValueError("zero_points: Q4_0 has no zero point (W = (q - 8) * d); they must be None or all 0")
    d = fp16_values(per_block(c.scales, out_features, in_features, c.group_size, BLOCK, "scales"), "scales")
    blocks = np.concatenate([half_bytes(d), values_to_qs(values)], axis=-1)  # [out, nb, 18]
    return {"blocks": blocks.reshape(out_features, -1), "shape": (out_features, in_features)}


def from_gguf_q4_0(blocks, shape):
    """Q4_0 blocks uint8 [out, in / 32 * 18], shape (out, in) -> Canonical (fp16 scales [out, in / 32], group 32)."""
    blocks, out_features, in_features = _blocks(blocks, shape, "Q4_0")
    d = half_from_bytes(blocks[..., :2]).astype(np.float16)  # [out, nb]
    return Canonical(pack(qs_to_values(blocks[..., 2:])), d, None, BLOCK)


# --- Q4_1 ---------------------------------------------------------------------------------

def to_gguf_q4_1(c):
    """Canonical -> {"blocks": uint8 [out, in / 32 * 20], "shape": (out, in)}, m = (-8 - z) * d.

    As Q4_0, but with zero points of any granularity (grouped ones with group_size % 32 == 0);
    every block's m = (-8 - z) * d must be exactly an fp16 number (docs/layouts/gguf-q4_1.md says
    how verify.layouts draws such z). A zero m is written +0.
    """
    no_perm(c, "GGUF Q4_1")
    values = unpack(c.packed)  # v: [out, in]
    out_features, in_features = values.shape
    _columns(in_features, "Q4_1")
    d = fp16_values(per_block(c.scales, out_features, in_features, c.group_size, BLOCK, "scales"), "scales")
    z = np.zeros(d.shape) if c.zero_points is None else \
        per_block(c.zero_points, out_features, in_features, c.group_size, BLOCK, "zero_points")
    m = (d.astype(np.float64) * (-8.0 - z)).astype(np.float16)  # [out, nb]
    m[m == 0] = 0  # +0, never -0
    ratio, exact = exact_ratio(m.astype(np.float64), d.astype(np.float64))
    zero, exact_zero = exact_sum(-8.0, -ratio)
    bad = ~((exact & exact_zero & (zero == z)) | ((d == 0) & (m == 0)))
    if np.any(bad):
        o, b = np.argwhere(bad)[0]
        raise ValueError(f"zero_points: Q4_1 stores m = (-8 - z) * d as fp16; z = {z[o, b]!r} with "
                         f"d = {float(d[o, b])!r} (row {o}, block {b}) gives no fp16 m with m / d = -8 - z exactly")
    blocks = np.concatenate([half_bytes(d), half_bytes(m), values_to_qs(values)], axis=-1)  # [out, nb, 20]
    return {"blocks": blocks.reshape(out_features, -1), "shape": (out_features, in_features)}


def from_gguf_q4_1(blocks, shape):
    """Q4_1 blocks uint8 [out, in / 32 * 20], shape (out, in) -> Canonical with float64 zero points z = -8 - m / d.

    ValueError for a block whose m / d is not a dyadic number that float64 holds with -8 - m / d
    exact (the canonical (v - z) * s could not equal q * d + m), or whose d is 0 and m is not.
    """
    blocks, out_features, in_features = _blocks(blocks, shape, "Q4_1")
    d, m = half_from_bytes(blocks[..., :2]), half_from_bytes(blocks[..., 2:4])  # [out, nb] each
    ratio, exact = exact_ratio(m, d)
    z, exact_zero = exact_sum(-8.0, -ratio)
    z = np.where(d == 0, 0.0, z)  # d = 0 and m = 0: every W is 0, any z does
    bad = ~(exact & exact_zero) & ~((d == 0) & (m == 0))
    if np.any(bad):
        o, b = np.argwhere(bad)[0]
        raise ValueError(f"blocks: Q4_1 block {b} of row {o} has d = {d[o, b]!r}, m = {m[o, b]!r}: m / d is not exact "
                         f"in float64, so no canonical zero point z = -8 - m / d reproduces q * d + m")
    return Canonical(pack(qs_to_values(blocks[..., 4:])), d.astype(np.float16), z, BLOCK)


def exact_ratio(numerator, denominator):
    """(n / d in float64, True where that quotient is exact), for n, d fp16 values (d != 0).

    n / d is a dyadic rational exactly when the odd part of d's integer significand divides n's;
    it then has at most 11 significant bits, so the float64 division returns it exactly.
    """
    def significand(t):  # |t| = M * 2**e with M an integer of at most 11 bits (0 for inf, nan)
        fraction, _ = np.frexp(np.where(np.isfinite(t), np.abs(t), 0.0))
        return np.rint(fraction * 2.0**11).astype(np.int64)
    n_sig, d_sig = significand(numerator), significand(denominator)
    d_odd = np.where(d_sig > 0, d_sig // np.maximum(d_sig & -d_sig, 1), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(denominator != 0, numerator / np.where(denominator != 0, denominator, 1.0), np.nan)
    finite = np.isfinite(numerator) & np.isfinite(denominator)
    return ratio, finite & (denominator != 0) & (n_sig % d_odd == 0)
