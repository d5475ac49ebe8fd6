"""Hypothesis strategies that draw whole, valid cases for the two contracts.

Each strategy draws a handful of named parameters (shapes, dtypes, granularities,
magnitudes, adapters) and a seed; int4_lora_harness.verify.cases builds the arrays from them. So a
shrunk counterexample reads as parameters ("M=1, out=3, in=26, group_size=24, ...")
and is rebuilt exactly from them.

A `Domain` narrows the space for kernels that support only part of it; the default
is the whole of docs/contract.md#packed-weight, #dequantizer, #linear.
"""
import math
from dataclasses import replace

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from int4_lora_harness.verify.domain import (DTYPES, FULL, GRANULARITIES, GROUP_SIZES, LINEAR_SCALE_EXPONENTS,
                                             PROFILE_EXAMPLES, SCALE_EXPONENTS, SCALINGS, Domain)
from int4_lora_harness.verify.cases import DequantCase, make_linear_case, make_weights



# The settings a harness search runs under, by profile (domain.PROFILE_EXAMPLES). Nothing is registered on import: a user's own
# profiles stay theirs; `harness_settings` hands out a settings object to decorate a test with.
# Cases are whole layers (slow to build and to judge), so no deadline and no too-slow health checks;
# the fixtures our tests take (device, backend) are plain values, so function scope is harmless.
QUIET = (HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture)
# The big path, drawn often enough that 40 cases reach it (harness.verify.bigpath): K from 4096 (4160: a ragged
# last group of 128), where real kernels split K, and M from 128 tokens (520: a prefill), where they change
# tiles; each list shrinks towards its first entry, the smallest case on that path.
LONG_K = (4096, 4160, 2050)
LARGE_M = (128, 136, 520)


def harness_settings(profile="ci", **overrides):
    """hypothesis.settings for a search of `profile` ('ci': 40 cases, 'thorough': 600), e.g. as a decorator."""
    if profile not in PROFILE_EXAMPLES:
        raise ValueError(f"profile must be one of {sorted(PROFILE_EXAMPLES)}, got {profile!r}")
    return settings(**{**dict(max_examples=PROFILE_EXAMPLES[profile], deadline=None, print_blob=True,
                              suppress_health_check=list(QUIET)), **overrides})


@st.composite
def shapes(draw, domain=FULL):
    """(out_features, in_features, group_size) inside `domain`: odd and even out, in a multiple of group_size or not."""
    out_unit, in_unit = domain.out_multiple_of, domain.in_multiple_of
    long_k = domain.long_k and draw(st.integers(0, 3)) >= 2  # one case in two; shrinks towards the short branch
    out_features = out_unit * max(1, draw(st.one_of(st.integers(1, 40), st.integers(41, 200))) // out_unit)
    if long_k:
        in_features = draw(st.sampled_from(LONG_K))  # shrinks towards 4096: where real kernels split K
    else:
        in_features = 2 * draw(st.integers(1, 160))
    in_features = in_unit * max(1, in_features // in_unit)
    if domain.group_sizes is not None:
        group_size = draw(st.sampled_from(domain.group_sizes))
    else:
        group_size = draw(st.one_of(st.sampled_from(GROUP_SIZES), st.integers(2, in_features + 10)))
    if not domain.ragged:  # whole groups only: round in_features up to a multiple of the group size
        unit = math.lcm(group_size, in_unit)
        in_features = unit * -(-in_features // unit)
    return out_features, in_features, group_size


@st.composite
def weight_params(draw, domain, dtype, exponents):
    """Keyword arguments of int4_lora_harness.verify.cases.make_weights, drawn independently inside `domain`."""
    low, high = exponents[dtype]
    scales_dtype = draw(st.sampled_from(domain.scale_dtype_choices(dtype)))
    if scales_dtype == "fp16":
        high = min(high, 14)  # scales up to 2**15 stay finite in fp16; larger W needs bf16/fp32 scales
    scale_granularity = draw(st.sampled_from(domain.granularities))
    zero_granularity, zero_kind = None, "int32"
    if domain.zero_kinds():
        zero_granularity = draw(st.one_of(st.none(), st.just(scale_granularity) if domain.same_granularity
                                          else st.sampled_from(domain.granularities)))
        zero_kind = draw(st.sampled_from(domain.zero_kinds()))
    return dict(scale_granularity=scale_granularity, zero_granularity=zero_granularity, zero_kind=zero_kind,
                scales_dtype=scales_dtype, scale_exponent=float(draw(st.integers(low, high))))


@st.composite
def dequant_cases(draw, domain=FULL):
    """A DequantCase covering docs/contract.md#packed-weight, #dequantizer."""
    out_features, in_features, group_size = draw(shapes(domain))
    output_dtype = draw(st.sampled_from(domain.dtypes))
    params = draw(weight_params(domain, output_dtype, SCALE_EXPONENTS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return DequantCase(make_weights(rng, out_features, in_features, group_size=group_size, **params), output_dtype)


POISONS = (None, "nan in lora_a", "inf in lora_b", "inf scaling", "nan scaling")


@st.composite
def linear_cases(draw, domain=FULL):
    """A LinearCase covering docs/contract.md#linear: M = 1, multiples of 16 and not, 128 and more; ranks 1..max_rank; 0..max_loras
    adapters; sometimes an adapter holding NaN or inf, or a non-finite scaling (tokens without that adapter must not see
    it), and sometimes one of the probes of harness.verify.probes at the drawn shape."""
    large_m = draw(st.integers(0, 2)) == 2  # one case in three; shrinks towards the short branch
    out_features, in_features, group_size = draw(shapes(domain))
    x_dtype = draw(st.sampled_from(domain.dtypes))
    if draw(st.integers(0, 9)) == 9:  # shrinks towards the random case
        return draw(probe_cases(domain, out_features, in_features, group_size, x_dtype))
    if large_m:  # a prefill only at a short K: M x K is what a case costs
        m = draw(st.sampled_from(LARGE_M if in_features < 1024 else LARGE_M[:2]))
    else:
        m = draw(st.one_of(st.just(1), st.sampled_from([16, 32, 48]), st.integers(2, 70)))
    num_loras = draw(st.integers(0, domain.max_loras))
    case = _linear_case(draw, domain, out_features, in_features, group_size, x_dtype, m, num_loras)
    poison = draw(st.sampled_from(POISONS)) if num_loras and draw(st.integers(0, 7)) == 7 else None
    return poisoned(case, poison, draw(st.integers(0, num_loras - 1)) if poison else 0)


def poisoned(case, poison, adapter):
    """`case` with one adapter (or the scaling) non-finite, as drawn by linear_cases; None: as is."""
    if poison is None:
        return case
    notes = dict(case.notes, poison=f"{poison} (adapter {adapter})")
    if poison.endswith("scaling"):
        return replace(case, scaling=float("inf" if poison.startswith("inf") else "nan"), notes=notes)
    name = "lora_a" if poison.endswith("lora_a") else "lora_b"
    values = getattr(case, name).copy()
    values[adapter].flat[0] = np.nan if poison.startswith("nan") else np.inf
    return replace(case, **{name: values}, notes=notes)


@st.composite
def probe_cases(draw, domain, out_features, in_features, group_size, x_dtype):
    """One of the exact, columns and lora probes at a drawn shape (the large tier has them at real ones)."""
    from int4_lora_harness.verify.probes import columns_probe, exact_probe, lora_probe
    kind = draw(st.sampled_from(("exact", "columns", "lora") if domain.max_loras else ("exact", "columns")))
    seed = draw(st.integers(0, 2**32 - 1))
    granularity = draw(st.sampled_from(domain.granularities))
    zero = draw(st.sampled_from(domain.zero_kinds() or ("int8",)))
    scales_dtype = draw(st.sampled_from(domain.scale_dtype_choices(x_dtype)))
    if kind == "exact":
        return exact_probe(seed, out_features, in_features, x_dtype, group_size, granularity,
                           granularity if domain.zero_kinds() else None, zero, scales_dtype)
    if kind == "lora":
        return lora_probe(seed, out_features, in_features, x_dtype, num_loras=min(4, domain.max_loras),
                          rank=min(8, domain.max_rank), m=min(80, 2 * out_features + 17))
    weights = make_weights(np.random.default_rng(seed), out_features, in_features, group_size, granularity,
                           granularity if domain.zero_kinds() else None, zero, scales_dtype, scale_exponent=-3.0)
    return columns_probe(weights, x_dtype, seed)


def _linear_case(draw, domain, out_features, in_features, group_size, x_dtype, m, num_loras):
    return make_linear_case(
        seed=draw(st.integers(0, 2**32 - 1)), out_features=out_features, in_features=in_features, m=m,
        x_dtype=x_dtype, rank=draw(st.integers(1, domain.max_rank)), num_loras=num_loras,
        popularity=draw(st.sampled_from(domain.popularities)), scaling=draw(st.sampled_from(SCALINGS)),
        bias=domain.bias and draw(st.booleans()), index_dtype=draw(st.sampled_from(["int32", "int64"])),
        group_size=group_size, **draw(weight_params(domain, x_dtype, LINEAR_SCALE_EXPONENTS)))
