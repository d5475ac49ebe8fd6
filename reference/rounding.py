"""Round float64 values once, to nearest even, into fp16, bf16 or fp32.

Every format is described by three numbers (precision, smallest normal exponent, largest
finite value) and rounded by one rule, written down twice:

- `round_by_scaling`, the definition: scale the value so that its last kept bit is the
  unit, `np.rint` (which rounds half to even), scale back; values past the largest finite
  number become +-inf, as IEEE 754 round-to-nearest says. Readable, and slow (frexp, ldexp
  and rint over float64 arrays).
- `round_to`, what the harness calls: the same function at memory speed. fp16 and fp32 are
  NumPy's float64 casts (which round to nearest even, subnormals and overflow included);
  bf16, which NumPy lacks, rounds to nearest even on the float64 bits (the low fraction bits
  bf16 lacks go) where the result is normal, and adds and subtracts a constant whose float64
  ulp is the bf16 subnormal spacing where it is not. `rounded` is the same values as float64,
  fp16 by the same bit rule (the judge's arrays never pass through float16). tests/test_rounding.py
  checks all of them agree bit for bit on every binade, tie and edge of each format.

bf16 values are returned as float32 arrays (every bf16 value is a float32 value);
`bf16_bits` gives their 16-bit patterns.
"""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FloatFormat:
    name: str
    precision: int  # significand bits, the implicit one included
    min_exponent: int  # exponent of the smallest normal number
    max_finite: float
    storage: type  # NumPy dtype that holds every value of the format

    @property
    def unit_roundoff(self):
        """u = 2**-precision: the relative error bound of one rounding (normal range)."""
        return 2.0 ** -self.precision

    @property
    def underflow_error(self):
        """eta = half the subnormal spacing: the absolute error bound of one rounding below the normal
        range. One rounding of t errs by at most u * |t| + eta (fp16 2**-25, bf16 2**-134, fp32 2**-150)."""
        return 2.0 ** (self.min_exponent - self.precision)


FORMATS = {
    "fp16": FloatFormat("fp16", 11, -14, 65504.0, np.float16),
    "bf16": FloatFormat("bf16", 8, -126, float.fromhex("0x1.fep127"), np.float32),
    "fp32": FloatFormat("fp32", 24, -126, float(np.finfo(np.float32).max), np.float32),
}

BLOCK = 1 << 16  # elements per block of the bit-level paths: their temporaries stay in the L2 cache
F64_FRACTION_BITS, F64_BIAS, F64_EXPONENT_MASK = 52, 1023, 0x7FF


@dataclass(frozen=True)
class BitRounding:
    """The constants of rounding float64 bits to a narrower format (fp16, bf16): see `_round_bits_block`."""
    dropped: int  # low float64 fraction bits that go (fp16 42, bf16 45)
    half_below: np.uint64  # one less than half the last kept bit
    kept: np.uint64  # sign, exponent and the kept fraction bits
    smallest_normal: float
    # x + shifter - shifter rounds x (below the smallest normal) to the format's subnormal grid: the shifter's
    # float64 ulp is the subnormal spacing, and the sum stays in its binade (fp16 [2**28, 2**29), bf16
    # [2**-81, 2**-80)).
    shifter: float


def _bit_rounding(fmt):
    dropped = F64_FRACTION_BITS - (fmt.precision - 1)
    return BitRounding(dropped, np.uint64((1 << (dropped - 1)) - 1), ~np.uint64((1 << dropped) - 1),
                       2.0 ** fmt.min_exponent, 1.5 * 2.0 ** (fmt.min_exponent - fmt.precision + 1 + F64_FRACTION_BITS))


BIT_ROUNDING = {name: _bit_rounding(FORMATS[name]) for name in ("fp16", "bf16")}


def float_format(dtype):
    """'fp16' | 'bf16' | 'fp32' -> FloatFormat."""
    if dtype not in FORMATS:
        raise ValueError(f"dtype must be one of {sorted(FORMATS)}, got {dtype!r}")
    return FORMATS[dtype]


# --- the definition ------------------------------------------------------------------------

def spacing_by_frexp(values, dtype):
    """The definition of `spacing` on finite values: float64 array -> 1 ulp of |value| in `dtype`, float64.

    For values in [2**e, 2**(e+1)) that is 2**(e - precision + 1); below the smallest normal
    number the spacing of the subnormals applies.
    """
    fmt = float_format(dtype)
    magnitude = np.abs(np.asarray(values, dtype=np.float64))
    _, exponent = np.frexp(magnitude)  # magnitude = m * 2**exponent, m in [0.5, 1)
    exponent = np.where(magnitude > 0, np.maximum(exponent - 1, fmt.min_exponent), fmt.min_exponent)
    return np.ldexp(1.0, exponent - fmt.precision + 1)


def round_by_scaling(values, dtype):
    """The definition of `round_to`: float64 array -> values of `dtype`, rounded once to nearest even.

    Scales each value by its quantum (a power of two, so exactly), rounds half to even with
    np.rint, scales back. Returns np.float16 for fp16 and np.float32 for bf16 and fp32.
    """
    fmt = float_format(dtype)
    values = np.asarray(values, dtype=np.float64)
    quantum = spacing_by_frexp(values, dtype)
    with np.errstate(invalid="ignore"):
        rounded = np.rint(values / quantum) * quantum  # exact: quantum is a power of two
    rounded = np.where(np.isfinite(values), rounded, values)
    rounded = np.where(np.abs(rounded) > fmt.max_finite, np.copysign(np.inf, values), rounded)
    return rounded.astype(fmt.storage)


# --- the same functions at memory speed ----------------------------------------------------

def _blockwise(block_fn, values, out_dtype, scratch_dtypes=()):
    """Run block_fn(block, out_block, *scratch) over flat blocks of BLOCK elements of `values`.

    Returns an `out_dtype` array of values' shape. The scratch arrays (one per dtype, BLOCK
    long, reused by every block) spare each NumPy step an allocation of its own.
    """
    flat = np.ascontiguousarray(values).reshape(-1)
    out = np.empty(flat.shape, dtype=out_dtype)
    scratch = [np.empty(min(BLOCK, flat.size), dtype=d) for d in scratch_dtypes]
    for start in range(0, flat.size, BLOCK):
        block = flat[start:start + BLOCK]
        block_fn(block, out[start:start + BLOCK], *(t[:block.size] for t in scratch))
    return out.reshape(np.shape(values))


def _round_bits_block(block, out, kept, magnitude, normal, fmt):
    """float64 [n] -> out [n] (float64, or float32 for bf16) holding RN_fmt(block), fmt fp16 or bf16;
    scratch kept: uint64, magnitude: float64, normal: bool.

    Where |value| >= the smallest normal: add just under half an ulp of the format to the float64 bits
    (exactly half when the last kept bit is 1, so a tie goes to even), clear the dropped low bits; a
    carry out of the fraction moves to the next binade, and a result past the largest finite value is
    inf (the float32 cast does it for bf16 in float32; a float64 `out` is set so). Zero, subnormals and
    NaN take the shifter.
    """
    c = BIT_ROUNDING[fmt.name]
    bits = block.view(np.uint64)
    np.right_shift(bits, c.dropped, out=kept)
    np.bitwise_and(kept, 1, out=kept)  # the last kept bit
    kept += c.half_below
    kept += bits
    kept &= c.kept
    out[...] = kept.view(np.float64)  # exact: the format's significant bits, within float32's exponent range or inf
    np.abs(block, out=magnitude)
    np.greater_equal(magnitude, c.smallest_normal, out=normal)  # False for NaN
    if not normal.all():
        special = ~normal
        small = block[special]
        out[special] = np.copysign((small + c.shifter) - c.shifter, small)  # keeps -0
    if out.dtype == np.float64:
        np.abs(out, out=magnitude)
        past = magnitude > fmt.max_finite  # False for NaN; inf stays inf
        if past.any():
            out[past] = np.copysign(np.inf, block[past])


def round_to(values, dtype):
    """float64 array -> values of `dtype`, rounded once to nearest even; bit for bit `round_by_scaling`.

    Returns np.float16 for fp16 and np.float32 for bf16 and fp32 (shape of `values`).
    Overflow gives +-inf, NaN stays NaN, -0 stays -0.
    """
    fmt = float_format(dtype)
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        if dtype == "bf16":
            return _blockwise(lambda *a: _round_bits_block(*a, fmt), values, np.float32, (np.uint64, np.float64, bool))
        return values.astype(fmt.storage)  # NumPy's cast rounds once, to nearest even


def rounded(values, dtype):
    """`round_to(values, dtype)` as float64 (shape of `values`): what the judge computes with.

    fp16 and bf16 round on the float64 bits, never leaving float64 (NumPy's float16 casts are
    per element in software: float64 -> float16 -> float64 costs about 16 ns a value, this about 3);
    fp32 by NumPy's casts.
    """
    fmt = float_format(dtype)
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        if dtype == "fp32":
            return values.astype(np.float32).astype(np.float64)
        return _blockwise(lambda *a: _round_bits_block(*a, fmt), values, np.float64, (np.uint64, np.float64, bool))


def _spacing_block(block, out, biased, fmt):
    """float64 [n] -> float64 out [n]: 2**(max(e, min_exponent) - precision + 1), e the exponent of |value|.

    biased: int64 [n] scratch, the float64 biased exponent field (0 for zero and float64 subnormals).
    """
    np.right_shift(block.view(np.uint64), F64_FRACTION_BITS, out=biased.view(np.uint64))
    biased &= F64_EXPONENT_MASK  # drops the sign
    non_finite = biased.max() == F64_EXPONENT_MASK
    np.maximum(biased, F64_BIAS + fmt.min_exponent, out=biased)
    biased += 1 - fmt.precision
    np.left_shift(biased, F64_FRACTION_BITS, out=out.view(np.int64))
    if non_finite:
        out[~np.isfinite(block)] = np.nan  # inf and NaN have no ulp


def spacing(values, dtype):
    """Distance from |value| to the next larger number of `dtype` (1 ulp), float64 of values' shape.

    For values in [2**e, 2**(e+1)) that is 2**(e - precision + 1); below the smallest normal
    number the spacing of the subnormals applies (as `spacing_by_frexp`); NaN for +-inf and NaN.
    """
    fmt = float_format(dtype)
    return _blockwise(lambda block, out, biased: _spacing_block(block, out, biased, fmt),
                      np.asarray(values, np.float64), np.float64, (np.int64,))


def is_representable(values, dtype):
    """True where a float64 value is exactly a number of `dtype` (infinities included)."""
    values = np.asarray(values, dtype=np.float64)
    return round_to(values, dtype) == values  # compared in float64, exactly; NaN is never equal


def bf16_bits(values):
    """bf16 values held in float32 -> their uint16 bit patterns."""
    values = np.asarray(values, dtype=np.float32)
    if not np.all(is_representable(values, "bf16") | np.isnan(values)):
        raise ValueError("values must be bf16 values (float32 with 16 zero low bits)")
    return (values.view(np.uint32) >> 16).astype(np.uint16)


# dtype -> (storage whose bits are read, signed view of them, +inf's bits there, low bits below the format)
ORDINAL_LAYOUT = {"fp16": (np.float16, np.int16, 0x7C00, 0), "bf16": (np.float32, np.int32, 0x7F800000, 16),
                  "fp32": (np.float32, np.int32, 0x7F800000, 0)}


def _ordinal_block(block, out, narrow, sign, layout):
    """float64 [n] -> int64 out [n]: sign-magnitude bits of the value in `storage`, as a two's complement.

    narrow: storage [n] scratch; sign: int64 [n] scratch (0 or -1 per element).
    """
    storage, signed, inf_bits, dropped = layout
    narrow[...] = block  # exact for values of the format
    out[...] = narrow.view(signed)  # sign-extended
    np.right_shift(out, 63, out=sign)
    out &= np.iinfo(signed).max  # the magnitude bits
    if out.max() > inf_bits:  # NaN is the only pattern above +inf
        raise ValueError("ordinal of NaN is undefined")
    out >>= dropped  # bf16 is the top half of float32
    out ^= sign
    out -= sign  # -magnitude where negative


def ordinal(values, dtype):
    """Position of each `dtype` value on the number line, as int64 of values' shape.

    Consecutive numbers of the format have consecutive ordinals (+0 and -0 share
    0, inf is one past the largest finite number), so `|ordinal(a) - ordinal(b)|`
    is the distance in ulps. Values must be numbers of `dtype`; NaN is refused.
    """
    float_format(dtype)
    layout = ORDINAL_LAYOUT[dtype]
    with np.errstate(over="ignore", invalid="ignore"):
        return _blockwise(lambda block, out, narrow, sign: _ordinal_block(block, out, narrow, sign, layout),
                          np.asarray(values, np.float64), np.int64, (layout[0], np.int64))
