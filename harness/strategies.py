"""Hypothesis strategies that draw whole, valid cases for the two contracts.

Each strategy draws a handful of named parameters (shapes, dtypes, granularities,
magnitudes, adapters) and a seed; harness.cases builds the arrays from them. So a
shrunk counterexample reads as parameters ("M=1, out=3, in=26, group_size=24, ...")
and is rebuilt exactly from them.

A `Domain` narrows the space for kernels that support only part of it; the default
is the whole of SPEC §1-4.
"""
from dataclasses import dataclass, fields

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from harness.cases import POPULARITIES, DequantCase, make_linear_case, make_weights

GRANULARITIES = ("per-tensor", "per-channel", "grouped")
DTYPES = ("fp16", "bf16", "fp32")
GROUP_SIZES = (2, 16, 24, 32, 64, 96, 128)
SCALINGS = (1.0, 0.5, 2.0, 0.0, -1.0, 0.125, -3.5)
# log2 of the scale magnitude: tiny (subnormal weights) to large enough that a half-precision
# intermediate overflows while a bf16/fp32 result stays finite (|W| up to 16 * 2**17).
SCALE_EXPONENTS = {"fp16": (-24, 13), "bf16": (-24, 16), "fp32": (-24, 16)}
LINEAR_SCALE_EXPONENTS = {"fp16": (-16, 2), "bf16": (-16, 14), "fp32": (-16, 14)}  # y stays finite


@dataclass(frozen=True)
class Domain:
    """The part of the input space to draw from; the defaults cover all of it."""
    dtypes: tuple = DTYPES
    group_sizes: tuple | None = None  # None: GROUP_SIZES plus any size from 2 to past in_features
    granularities: tuple = GRANULARITIES  # for scales and zero points alike
    zero_points: bool = True
    bias: bool = True
    max_rank: int = 64
    max_loras: int = 8
    long_k: bool = True  # sometimes draw in_features >= 1024, where fp16 accumulation shows

    def describe(self):
        """One line per narrowed field, so a narrowed run is never mistaken for a full one."""
        full = Domain()
        return [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if getattr(self, f.name) != getattr(full, f.name)]


FULL = Domain()

# The fixtures our tests take (device, backend) are plain values, so function scope is harmless.
_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
settings.register_profile("ci", max_examples=40, deadline=None, print_blob=True, suppress_health_check=_QUIET)
settings.register_profile("thorough", max_examples=600, deadline=None, print_blob=True, suppress_health_check=_QUIET)


@st.composite
def shapes(draw, domain=FULL):
    """(out_features, in_features, group_size): odd and even out, in a multiple of group_size or not."""
    out_features = draw(st.one_of(st.integers(1, 40), st.integers(41, 200)))
    if domain.long_k and draw(st.integers(0, 5)) == 5:  # shrinks towards the short branch
        in_features = draw(st.sampled_from([1024, 1536, 2050, 4096]))
    else:
        in_features = 2 * draw(st.integers(1, 160))
    if domain.group_sizes is not None:
        group_size = draw(st.sampled_from(domain.group_sizes))
    else:
        group_size = draw(st.one_of(st.sampled_from(GROUP_SIZES), st.integers(2, in_features + 10)))
    return out_features, in_features, group_size


@st.composite
def weight_params(draw, domain, dtype, exponents):
    """Keyword arguments of harness.cases.make_weights, drawn independently."""
    low, high = exponents[dtype]
    scales_dtype = draw(st.sampled_from(DTYPES))
    if scales_dtype == "fp16":
        high = min(high, 14)  # scales up to 2**15 stay finite in fp16; larger W needs bf16/fp32 scales
    zero_granularity = None
    if domain.zero_points:
        zero_granularity = draw(st.one_of(st.none(), st.sampled_from(domain.granularities)))
    return dict(scale_granularity=draw(st.sampled_from(domain.granularities)), zero_granularity=zero_granularity,
                zero_kind=draw(st.sampled_from(["int32", "float", "int8", "int64"])), scales_dtype=scales_dtype,
                scale_exponent=float(draw(st.integers(low, high))))


@st.composite
def dequant_cases(draw, domain=FULL):
    """A DequantCase covering SPEC §1-3."""
    out_features, in_features, group_size = draw(shapes(domain))
    output_dtype = draw(st.sampled_from(domain.dtypes))
    params = draw(weight_params(domain, output_dtype, SCALE_EXPONENTS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return DequantCase(make_weights(rng, out_features, in_features, group_size=group_size, **params), output_dtype)


@st.composite
def linear_cases(draw, domain=FULL):
    """A LinearCase covering SPEC §4: M = 1, multiples of 16 and not; ranks 1..max_rank; 0..max_loras adapters."""
    out_features, in_features, group_size = draw(shapes(domain))
    x_dtype = draw(st.sampled_from(domain.dtypes))
    m = draw(st.one_of(st.just(1), st.sampled_from([16, 32, 48]), st.integers(2, 70)))
    num_loras = draw(st.integers(0, domain.max_loras))
    return make_linear_case(
        seed=draw(st.integers(0, 2**32 - 1)), out_features=out_features, in_features=in_features, m=m,
        x_dtype=x_dtype, rank=draw(st.integers(1, domain.max_rank)), num_loras=num_loras,
        popularity=draw(st.sampled_from(POPULARITIES)), scaling=draw(st.sampled_from(SCALINGS)),
        bias=domain.bias and draw(st.booleans()), index_dtype=draw(st.sampled_from(["int32", "int64"])),
        group_size=group_size, **draw(weight_params(domain, x_dtype, LINEAR_SCALE_EXPONENTS)))
