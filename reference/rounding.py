"""Round float64 values once, to nearest even, into fp16, bf16 or fp32.

NumPy has no bfloat16, so every format is described by three numbers and rounded
by one rule: scale the value so that its last kept bit is the unit, `np.rint`
(which rounds half to even), scale back. Values past the largest finite number
become +-inf, as IEEE 754 round-to-nearest says.

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


def float_format(dtype):
    """'fp16' | 'bf16' | 'fp32' -> FloatFormat."""
    if dtype not in FORMATS:
        raise ValueError(f"dtype must be one of {sorted(FORMATS)}, got {dtype!r}")
    return FORMATS[dtype]


def spacing(values, dtype):
    """Distance from |value| to the next larger number of `dtype` (1 ulp), float64.

    For values in [2**e, 2**(e+1)) that is 2**(e - precision + 1); below the
    smallest normal number the spacing of the subnormals applies.
    """
    fmt = float_format(dtype)
    magnitude = np.abs(np.asarray(values, dtype=np.float64))
    _, exponent = np.frexp(magnitude)  # magnitude = m * 2**exponent, m in [0.5, 1)
    exponent = np.where(magnitude > 0, np.maximum(exponent - 1, fmt.min_exponent), fmt.min_exponent)
    return np.ldexp(1.0, exponent - fmt.precision + 1)


def round_to(values, dtype):
    """float64 array -> values of `dtype`, rounded once to nearest even.

    Returns np.float16 for fp16 and np.float32 for bf16 and fp32.
    """
    fmt = float_format(dtype)
    values = np.asarray(values, dtype=np.float64)
    quantum = spacing(values, dtype)
    with np.errstate(invalid="ignore"):
        rounded = np.rint(values / quantum) * quantum  # exact: quantum is a power of two
    rounded = np.where(np.isfinite(values), rounded, values)
    rounded = np.where(np.abs(rounded) > fmt.max_finite, np.copysign(np.inf, values), rounded)
    return rounded.astype(fmt.storage)


def is_representable(values, dtype):
    """True where a float64 value is exactly a number of `dtype` (infinities included)."""
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return round_to(values, dtype).astype(np.float64) == values


def bf16_bits(values):
    """bf16 values held in float32 -> their uint16 bit patterns."""
    values = np.asarray(values, dtype=np.float32)
    if not np.all(is_representable(values, "bf16") | np.isnan(values)):
        raise ValueError("values must be bf16 values (float32 with 16 zero low bits)")
    return (values.view(np.uint32) >> 16).astype(np.uint16)


def ordinal(values, dtype):
    """Position of each `dtype` value on the number line, as int64.

    Consecutive numbers of the format have consecutive ordinals (+0 and -0 share
    0, inf is one past the largest finite number), so `|ordinal(a) - ordinal(b)|`
    is the distance in ulps. Values must be numbers of `dtype`; NaN is refused.
    """
    values = np.asarray(values, dtype=np.float64)
    if np.isnan(values).any():
        raise ValueError("ordinal of NaN is undefined")
    if dtype == "fp16":
        magnitude = values.astype(np.float16).view(np.uint16).astype(np.int64) & 0x7FFF
    else:
        magnitude = values.astype(np.float32).view(np.uint32).astype(np.int64) & 0x7FFFFFFF
        if dtype == "bf16":
            magnitude >>= 16  # bf16 is the top half of float32
    return np.where(np.signbit(values), -magnitude, magnitude)
