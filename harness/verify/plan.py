"""The explicit examples every verification runs after its fuzzed search, in order:

coverage   each combination that matters, as small cases: granularity x zero-point kind (none,
           int8, int32, fractional in the scales' dtype, fractional in fp32: wider than an fp16 or
           bf16 output) x dtype x ragged last group or not, with the zero points' granularity turning
           with the dtype (so every pair of scale and zero-point granularities meets), inside the
           domain; so that 40 fuzzed
           cases never miss a whole class (a fractional zero point rounded to the output dtype
           shows on per-channel scales only if such a case is drawn)
large      the LARGE_TIER real layer shapes (harness.shapes), adapted to the domain (a group size it
           allows, dimensions rounded to its multiples, no ragged group if it forbids them)
probes     (linear) at every large-tier shape: the exact, columns and lora probes of harness.verify.probes
           (every dtype at the first shape, fp16 at the others)
checkpoint a real layer given with --checkpoint, one case per dtype
Each entry is (group, name, case); cases are seeded from the run's seed.
"""
import math
from dataclasses import replace

import numpy as np

from int4_lora_harness.reference.rounding import round_to
from int4_lora_harness.shapes import LARGE_TIER, LAYER_SHAPES
from int4_lora_harness.verify.cases import DequantCase, make_linear_case, make_weights, weights_from_tensors
from int4_lora_harness.verify.domain import FULL
from int4_lora_harness.verify.probes import columns_probe, exact_probe, lora_probe

ZERO_KINDS = (None, "int8", "int32", "float", "fp32")  # None: no zero points; float: the scales' dtype
COVERAGE_SHAPE = (24, 96, 64)  # out, in, group size: 96 = 64 + 32 leaves a ragged last group
COVERAGE_WHOLE = (24, 128, 64)  # two whole groups


def _allowed_zero_kinds(domain):
    kinds = [None] + [k for k in ZERO_KINDS[1:] if k in domain.zero_kinds()]
    return kinds if domain.zero_points != "none" else [None]


def _fit_shape(domain, out_features, in_features, group_size):
    """(out, in, group size) moved inside the domain: a group size it allows, multiples it needs."""
    if domain.group_sizes is not None and group_size not in domain.group_sizes:
        group_size = min(domain.group_sizes, key=lambda g: abs(g - group_size))
    out_features = max(domain.out_multiple_of, out_features // domain.out_multiple_of * domain.out_multiple_of)
    unit = domain.in_multiple_of if domain.ragged else math.lcm(domain.in_multiple_of, group_size)
    in_features = max(unit, in_features // unit * unit)
    return out_features, in_features, group_size


def coverage_cases(contract, domain=FULL, seed=0):
    """[(group, name, case)]: one small case per granularity x zero-point kind x dtype x raggedness."""
    cases = []
    for i, (granularity, zero_kind, (d, dtype), shape) in enumerate(
            (g, z, d, s) for g in domain.granularities for z in _allowed_zero_kinds(domain)
            for d in enumerate(domain.dtypes) for s in (COVERAGE_SHAPE, COVERAGE_WHOLE)):
        out_features, in_features, group_size = _fit_shape(domain, *shape)
        ragged = in_features % group_size != 0
        if shape is COVERAGE_SHAPE and not ragged and granularity == "grouped":
            continue  # the domain made it whole: the next shape covers it
        scales_dtype = domain.scale_dtype_choices(dtype)[i % len(domain.scale_dtype_choices(dtype))]
        # the zero points' granularity turns with the dtype: every (scales, zero points) pair of granularities meets
        zero_granularity = None if zero_kind is None else (granularity if domain.same_granularity else
                                                            domain.granularities[d % len(domain.granularities)])
        params = dict(group_size=group_size, scale_granularity=granularity, zero_granularity=zero_granularity,
                      zero_kind=zero_kind or "int8", scales_dtype=scales_dtype, scale_exponent=-3.0)
        name = f"{granularity}, zero points {zero_kind or 'none'}, {dtype}, {'ragged' if ragged else 'whole'} groups"
        if contract == "dequantizer":
            weights = make_weights(np.random.default_rng(seed + i), out_features, in_features, **params)
            cases.append(("coverage", name, DequantCase(weights, dtype)))
        else:
            m = 17 if shape is COVERAGE_SHAPE else 70  # one 16-row tile and a bit; past a 64-row tile
            case = make_linear_case(seed + i, out_features, in_features, m, dtype, rank=min(4, domain.max_rank),
                                    num_loras=min(3, domain.max_loras), popularity=domain.popularities[
                                        i % len(domain.popularities)], scaling=0.5, bias=domain.bias, **params)
            cases.append(("coverage", name, case))
    return cases


def large_tier_cases(contract, domain=FULL, seed=0, shapes=LARGE_TIER):
    """[(group, name, case)]: one case per large-tier shape (group size 128 or the domain's nearest), fp16 (or the
    domain's first dtype), grouped int8 zero points where allowed, M = 16, rank 16, 4 adapters."""
    dtype = "fp16" if "fp16" in domain.dtypes else domain.dtypes[0]
    granularity = "grouped" if "grouped" in domain.granularities else domain.granularities[0]
    zero_kind = "int8" if "int8" in domain.zero_kinds() else (domain.zero_kinds() or ("int8",))[0]
    zero = granularity if domain.zero_kinds() else None
    cases = []
    for i, name in enumerate(shapes):
        out_features, in_features, group_size = _fit_shape(domain, *LAYER_SHAPES[name], 128)
        label = name if (out_features, in_features) == LAYER_SHAPES[name] else f"{name} as {out_features}x{in_features}"
        params = dict(group_size=group_size, scale_granularity=granularity, zero_granularity=zero, zero_kind=zero_kind,
                      scales_dtype=domain.scale_dtype_choices(dtype)[0])
        if contract == "dequantizer":
            weights = make_weights(np.random.default_rng(seed + i), out_features, in_features, **params)
            cases.append(("large tier", label, DequantCase(weights, dtype)))
        else:
            cases.append(("large tier", label, make_linear_case(
                seed + i, out_features, in_features, 16, dtype, rank=min(16, domain.max_rank),
                num_loras=min(4, domain.max_loras), bias=domain.bias, **params)))
    return cases


def probe_dtypes(domain, i):
    """The dtypes probed at the i-th large-tier shape: every dtype at the first, fp16 (or the first) elsewhere."""
    first = "fp16" if "fp16" in domain.dtypes else domain.dtypes[0]
    return domain.dtypes if i == 0 else (first,)


def probe_cases(domain=FULL, seed=0, shapes=LARGE_TIER):
    """[(group, name, case)]: the exact, columns and lora probes at every large-tier shape (probe_dtypes)."""
    cases = []
    granularity = "grouped" if "grouped" in domain.granularities else domain.granularities[0]
    kinds = domain.zero_kinds()
    for i, name in enumerate(shapes):
        out_features, in_features, group_size = _fit_shape(domain, *LAYER_SHAPES[name], 128)
        for j, dtype in enumerate(probe_dtypes(domain, i)):
            scales_dtype = domain.scale_dtype_choices(dtype)[0]
            zero_kind = next((k for k in ("fp32", "float", "int8") if k in kinds), None)
            cases.append(("probes", f"exact {name} {dtype}", exact_probe(
                seed + 10 * i + j, out_features, in_features, dtype, group_size, granularity,
                granularity if kinds else None, zero_kind or "int8", scales_dtype)))
            weights = make_weights(np.random.default_rng(seed + 10 * i + j), out_features, in_features, group_size,
                                   granularity, granularity if kinds else None, zero_kind or "int8", scales_dtype,
                                   scale_exponent=-3.0)
            cases.append(("probes", f"columns {name} {dtype}", columns_probe(weights, dtype, seed)))
            if domain.max_loras:
                cases.append(("probes", f"lora {name} {dtype}", lora_probe(
                    seed + 10 * i + j, out_features, in_features, dtype, num_loras=min(4, domain.max_loras),
                    rank=min(16, domain.max_rank))))
    return cases


def outside_domain(weights, domain):
    """ValueError naming what of `weights` (harness.verify.cases.Weights) the domain excludes."""
    from int4_lora_harness.reference.granularity import granularity
    out_features, in_features = weights.shape
    kinds = [("scales", granularity(weights.scales, out_features, in_features, weights.group_size, "scales"))]
    if weights.zero_points is not None:
        if not domain.zero_kinds():
            raise ValueError("the layer has zero points, but the domain excludes them (--zero-points none)")
        kinds.append(("zero_points", granularity(weights.zero_points, out_features, in_features, weights.group_size,
                                                 "zero_points")))
    for name, kind in kinds:
        if kind not in domain.granularities:
            raise ValueError(f"the layer's {name} are {kind}, outside --granularity {','.join(domain.granularities)}")
    if domain.group_sizes is not None and weights.group_size is not None and weights.group_size not in domain.group_sizes:
        raise ValueError(f"the layer's group size {weights.group_size} is outside --group-sizes "
                         f"{','.join(map(str, domain.group_sizes))}")


def checkpoint_cases(layer, prefix, domain=FULL, seed=0, m=8):
    """{contract: [(group, name, case)]}: a real layer (harness.checkpoints.safetensors_layer.Layer), one case per
    dtype. ValueError where the layer lies outside `domain`; its bias is dropped under --no-bias. Linear cases
    draw x in the canonical column order (an activation permuted by the layer's act-order `perm`)."""
    weights = weights_from_tensors(layer.packed_weights, layer.scales, layer.zero_points, layer.group_size)
    out_features, in_features = weights.shape
    outside_domain(weights, domain)
    cases = {"dequantizer": [], "linear": []}
    for dtype in domain.dtypes:
        name = f"{prefix} ({layer.fmt}, {dtype})"
        cases["dequantizer"].append(("checkpoint", name, DequantCase(weights, dtype)))
        case = make_linear_case(seed, out_features, in_features, m, dtype, rank=min(16, domain.max_rank),
                                num_loras=min(4, domain.max_loras), bias=False, weights=weights)
        bias = None if layer.bias is None or not domain.bias else round_to(layer.bias.float().numpy(), dtype)
        cases["linear"].append(("checkpoint", name, replace(case, bias=bias)))
    return cases
