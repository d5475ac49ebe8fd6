"""The explicit examples every verification runs after its fuzzed search, in order:

coverage   each combination that matters, as small cases: granularity x zero-point kind (none,
           int8, int32, fractional in the scales' dtype, fractional in fp32: wider than an fp16 or
           bf16 output) x dtype x ragged last group or not, with the zero points' granularity turning
           with the dtype (so every pair of scale and zero-point granularities meets), inside the
           domain; so that 40 fuzzed
           cases never miss a whole class (a fractional zero point rounded to the output dtype
           shows on per-channel scales only if such a case is drawn)
big K      every pair of values of the domain's dimensions (dtypes, scales, granularities, zero
           points, group size, M bucket, rank, adapters, bias, index pattern) at K = 4096 and N = 72:
           the pairwise design of harness.verify.bigpath, as exact and column probes (the linear) or
           cases (the dequantizer); an interpreted candidate runs them in seconds
large      the LARGE_TIER real layer shapes (harness.shapes; a wide layer's first WIDE_ROWS rows),
           adapted to the domain, each shape one row of bigpath's strength-1 design, so that every
           value of every dimension meets a real shape; the linear's wide layer (an LM head) is judged
           by its columns probe alone (its row goes to a narrow layer too): a float64 judgement of
           2**16 rows cost more than the rest of the tier
probes     (linear) at every large-tier shape, with that shape's row: the exact (with its adapters and
           bias), columns (with its M) and lora (its rank and adapters) probes of harness.verify.probes;
           a wide layer only the columns probe (exact arithmetic over 2**16 rows costs seconds)
checkpoint a real layer given with --checkpoint, one case per dtype
Each entry is (group, name, case); cases are seeded from the run's seed. `plan_coverage` counts how many
big-path cases hold each value and pair of values.
"""
import math
from dataclasses import replace

import numpy as np

from int4_lora_harness.reference.rounding import round_to
from int4_lora_harness.shapes import LARGE_TIER, judged_shape
from int4_lora_harness.verify import bigpath
from int4_lora_harness.verify.cases import DequantCase, make_linear_case, make_weights, weights_from_tensors
from int4_lora_harness.verify.covering import coverage_counts
from int4_lora_harness.verify.domain import FULL
from int4_lora_harness.verify.probes import EXACT_M

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
    return cases + bigpath.big_k_cases(contract, domain, seed)


WIDE = 2 ** 15  # out_features from which a layer is wide (an LM head): exact and lora probes cost seconds there


def large_tier_rows(contract, domain=FULL, shapes=LARGE_TIER):
    """[(name, (out, in, group size), row)]: bigpath's strength-1 design over the large-tier shapes (every row at
    some shape, every shape some row); the linear's rows with the most tokens go to the smallest shapes, and a row
    placed on a wide layer (an LM head: its columns probe only) is placed on a narrow one as well."""
    rows = bigpath.design(contract, domain, strength=1)
    by_size = sorted(shapes, key=lambda name: math.prod(judged_shape(name)))
    if contract == "linear":
        rows = sorted(rows, key=lambda r: -bigpath.M_BUCKETS[r["M"]] * (1 + r.get("adapters", 0) * r.get("rank", 0)))
    narrow = [n for n in by_size if contract != "linear" or judged_shape(n)[0] < WIDE] or by_size
    placed = []
    for i in range(max(len(rows), len(shapes))):
        name, row = by_size[i % len(shapes)], rows[i % len(rows)]
        placed.append((name, bigpath.shape_of(row, domain, *judged_shape(name)), row))
        if name not in narrow:  # the linear's wide layer gets only its columns probe: the row is judged narrow too
            other = narrow[i % len(narrow)]
            placed.append((other, bigpath.shape_of(row, domain, *judged_shape(other)), row))
    return sorted(placed, key=lambda p: shapes.index(p[0]))


def _label(name, shape):
    return name if shape[:2] == judged_shape(name) else f"{name} as {shape[0]}x{shape[1]}"


def large_tier_cases(contract, domain=FULL, seed=0, shapes=LARGE_TIER, only=None):
    """[(group, name, case)]: one case per large_tier_rows entry, with its row's dtypes, granularities, zero
    points, group size, adapters and bias; the linear at M = 16 (1 for a row of M 1: the column probes take
    the row's M). only: the names of `shapes` to build (the rows stay placed over all of them); None: all."""
    cases = []
    for i, (name, shape, row) in enumerate(large_tier_rows(contract, domain, shapes)):
        if only is not None and name not in only or contract == "linear" and shape[0] >= WIDE:
            continue  # a wide layer's linear: its columns probe (probe_cases), not 2**16 rows judged in float64
        out_features, in_features, group_size = shape
        params = bigpath.weight_params(row, group_size)
        exponent = bigpath.SCALE_SHIFT if row["scales"] == bigpath.BEYOND_FP16 else None
        if contract == "dequantizer":
            weights = make_weights(np.random.default_rng(seed + i), out_features, in_features, **params,
                                   scale_exponent=exponent or -4.0)
            cases.append(("large tier", _label(name, shape), DequantCase(weights, row["x"])))
        else:
            tokens = bigpath.tokens_of(row)
            cases.append(("large tier", _label(name, shape), make_linear_case(
                seed + i, out_features, in_features, min(16, bigpath.M_BUCKETS[row["M"]]), row["x"],
                rank=tokens["rank"], num_loras=tokens["num_loras"], popularity=tokens["popularity"],
                bias=tokens["bias"], scale_exponent=exponent or -4.0, **params)))
    return cases


def probe_cases(domain=FULL, seed=0, shapes=LARGE_TIER, only=None):
    """[(group, name, case)]: at every large_tier_rows entry the exact probe (the row's weights, adapters and
    bias, M 20), the columns probe (the row's weights, M) and the lora probe (its rank and adapters); a wide
    layer only the columns probe. only: as in large_tier_cases."""
    cases = []
    for i, (name, shape, row) in enumerate(large_tier_rows("linear", domain, shapes)):
        if only is not None and name not in only:
            continue
        for kind, case in bigpath.row_cases("linear", row, shape, seed + 10 * i, m=EXACT_M,
                                            columns_m=bigpath.M_BUCKETS[row["M"]], kinds=probe_kinds(shape, domain)):
            cases.append(("probes", f"{kind} {_label(name, shape)} {row['x']}", case))
    return cases


def probe_kinds(shape, domain=FULL):
    """The probes at a large-tier shape (out, in, group size): the columns probe; below WIDE rows the exact one,
    and the lora one where the domain has adapters."""
    if shape[0] >= WIDE:
        return ("columns",)
    return ("exact", "columns") + (("lora",) if domain.max_loras else ())


def plan_coverage(contract, cases, domain=FULL):
    """{"big K": counts, "large N": counts} (harness.verify.covering.coverage_counts): how many of `cases`
    ([(group, name, case)]) with in_features >= 4096 hold each value and pair of values of bigpath's dimensions,
    and how many of those with out_features >= 4096 too (the large tier and its probes)."""
    factors, valid = bigpath.factors(contract, domain), bigpath.valid_rule(contract, domain)
    big_k = [bigpath.dimensions_of(c) for _, _, c in cases if c.weights.shape[1] >= bigpath.BIG_K]
    large_n = [bigpath.dimensions_of(c) for _, _, c in cases
               if c.weights.shape[1] >= bigpath.BIG_K and c.weights.shape[0] >= bigpath.BIG_K]
    return {"big K": coverage_counts(big_k, factors, valid), "large N": coverage_counts(large_n, factors, valid)}


def coverage_line(contract, cases, domain=FULL):
    """One line: how many big-path cases each value and pair got (the fewest), and what none got."""
    counts = plan_coverage(contract, cases, domain)
    big, large = counts["big K"], counts["large N"]
    fewest = lambda c: min((n, f"{k} {v}") for k, per in c["values"].items() for v, n in per.items())  # noqa: E731
    pair = min(big["pairs"].items(), key=lambda item: item[1])
    values = sum(len(per) for per in big["values"].values())
    line = (f"plan coverage [{contract}]: at K >= 4096 each of {values} values of {len(big['values'])} dimensions "
            f"in >= {fewest(big)[0]} cases (fewest: {fewest(big)[1]}) and each of {len(big['pairs'])} pairs in >= "
            f"{pair[1]} (e.g. {' & '.join(f'{k} {v}' for k, v in pair[0])})")
    missing = [f"K >= 4096: {dict(t)}" for t in big["missing"]]
    if any(large["pairs"].values()):  # the large tier ran
        line += f"; at N >= 4096 too each value in >= {fewest(large)[0]}"
        missing += [f"N >= 4096: {dict(t)}" for t in large["missing"] if len(t) == 1]
    return line + (f"; NOT MET: {'; '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}" if missing else "")


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
