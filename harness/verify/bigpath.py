"""The big path: where real kernels switch code paths (split-K past K = 4096, other tile configurations from
M = 128 tokens, row offsets past 2**15 rows), met by every value, and every pair of values, of the domain.

A defect on the big-K path AND in one other corner of the domain (per-channel scales read per tile, ranks
past 16 ignored, bf16 scales through fp16) is what a real kernel ships with; one configuration at every
large shape never meets it. So the domain's dimensions (`factors`, each value below, always inside a Domain):

  x                  x's (the output's) dtype
  scales             the scales' dtype; "bf16 beyond fp16": bf16 scales near 2**-29, which fp16 flushes to 0
                     (never with an fp16 result, which rounds such weights to 0 as well)
  scale granularity  per-tensor, per-channel, grouped
  zero points        none, int8, int32, float (the scales' dtype, half-integers), fp32 (wider than the scales)
  zero granularity   none (no zero points), per-tensor, per-channel, grouped
  group              32, 64, 128, ragged (128 with a last group of 64), no groups (no grouped granularity)
  M                  (linear) 1, 2-63, 64-127, 128-511, 512+ (prefill): cases take 1, 16, 64, 136, 520
  rank, adapters     (linear) 1, 16, the domain's max rank; 1, 4, its max adapters
  bias, pattern      (linear) with and without; how tokens pick adapters (every one but identical has -1)

`big_k_cases` builds a pairwise covering design of them (harness.verify.covering) at K = 4096 (4160 when
ragged) and N = 72: for the linear each row an exact probe (its M, adapters and bias: harness.verify.probes)
and a column probe, and the first row of each x dtype with adapters a lora probe too (a narrower shrink
intermediate past K = 4096); for the dequantizer one case per row; small enough that an interpreted candidate
runs it in seconds. `large_rows` gives each value once (strength 1), for the large tier's real shapes (plan.py).
"""
import math

import numpy as np

from int4_lora_harness.verify.cases import DequantCase, make_weights
from int4_lora_harness.verify.covering import covering
from int4_lora_harness.verify.probes import columns_probe, exact_probe, lora_probe

BIG_K, SMALL_N = 4096, 72  # 72 outputs: past a 64-row tile, and every rank of B at the domain's max rank 64
BEYOND_FP16 = "bf16 beyond fp16"
SCALE_SHIFT = -30  # exact probes: s = 2**(-30 .. -28); random weights: s ~ 2**-30
NO_GROUPS = "no groups"
M_BUCKETS = {"1": 1, "2-63": 16, "64-127": 64, "128-511": 136, "512+": 520}  # bucket -> the M a case takes
ZERO_KINDS = ("none", "int8", "int32", "float", "fp32")  # float: the scales' dtype; fp32: wider than them


def m_bucket(m):
    """The M bucket (a key of M_BUCKETS) of m tokens."""
    return "1" if m == 1 else "2-63" if m < 64 else "64-127" if m < 128 else "128-511" if m < 512 else "512+"


def factors(contract, domain):
    """{dimension: values} of the big-path design inside `domain` (the module docstring)."""
    scales = sorted({s for d in domain.dtypes for s in domain.scale_dtype_choices(d)}, key=("fp16", "bf16",
                                                                                             "fp32").index)
    scales += [BEYOND_FP16] if "bf16" in scales and set(domain.dtypes) - {"fp16"} else []
    zeros = [k for k in ZERO_KINDS if k == "none" or k in domain.zero_kinds()]
    result = {"x": tuple(domain.dtypes), "scales": tuple(scales), "scale granularity": domain.granularities,
              "zero points": tuple(zeros),
              "zero granularity": ("none",) + (domain.granularities if len(zeros) > 1 else ()),
              "group": group_values(domain)}
    if contract == "dequantizer":
        return result
    result["M"] = tuple(M_BUCKETS)
    if domain.max_loras:
        result["rank"] = tuple(sorted({1, min(16, domain.max_rank), domain.max_rank}))
        result["adapters"] = tuple(sorted({1, min(4, domain.max_loras), domain.max_loras}))
        result["pattern"] = domain.popularities
    result["bias"] = (False, True) if domain.bias else (False,)
    return result


def group_values(domain):
    """32, 64, 128 (or the first three group sizes the domain allows), ragged, no groups: those it allows."""
    values = []
    if "grouped" in domain.granularities:
        allowed = domain.group_sizes or (32, 64, 128)
        values = [g for g in (32, 64, 128) if g in allowed] or list(allowed[:3])
        values += ["ragged"] if domain.ragged else []
    return tuple(values + ([NO_GROUPS] if set(domain.granularities) - {"grouped"} else []))


def valid_rule(contract, domain):
    """valid(row) -> False when the values a (partial) row holds cannot go together inside `domain`."""
    def valid(row):
        x, scales, zero, zero_granularity = (row.get(k) for k in ("x", "scales", "zero points", "zero granularity"))
        if x and scales and not _scales_fit(x, scales, domain):
            return False
        if zero and zero_granularity and (zero == "none") != (zero_granularity == "none"):
            return False
        if zero == "fp32" and scales == "fp32":
            return False  # fp32 zero points with fp32 scales are the "float" kind
        granularity = row.get("scale granularity")
        if domain.same_granularity and granularity and zero_granularity not in (None, "none", granularity):
            return False
        return _groups_fit(row.get("group"), granularity, zero_granularity)
    return valid


def _scales_fit(x, scales, domain):
    if scales == BEYOND_FP16:
        return x != "fp16" and "bf16" in domain.scale_dtype_choices(x)
    return scales in domain.scale_dtype_choices(x)


def _groups_fit(group, granularity, zero_granularity):
    """'no groups' exactly when neither the scales nor the zero points are grouped (unknown: still possible)."""
    if group is None:
        return True
    grouped = "grouped" in (granularity, zero_granularity)
    if group == NO_GROUPS:
        return not grouped
    return grouped or granularity is None or zero_granularity is None


def design(contract, domain, strength=2):
    """The covering design's rows ({dimension: value}) for `contract` inside `domain`."""
    return covering(factors(contract, domain), valid_rule(contract, domain), strength)


def shape_of(row, domain, out_features=SMALL_N, in_features=BIG_K):
    """(out, in, group size) of a row inside `domain`: in a multiple of the group size (or ragged: not)."""
    group = row["group"]
    allowed = [g for g in group_values(domain) if isinstance(g, int)] or [128]
    group_size = group if isinstance(group, int) else (128 if 128 in allowed else max(allowed))
    out_features = domain.out_multiple_of * -(-out_features // domain.out_multiple_of)
    unit = domain.in_multiple_of if group == "ragged" or group == NO_GROUPS else \
        math.lcm(domain.in_multiple_of, group_size)
    in_features = unit * -(-in_features // unit)
    while group == "ragged" and in_features % group_size == 0:
        in_features += unit * -(-(group_size // 2) // unit)
    return out_features, in_features, group_size


def weight_params(row, group_size):
    """make_weights / exact_probe keyword arguments of a row (the scales' dtype, granularities, zero points)."""
    zero_granularity = None if row["zero granularity"] == "none" else row["zero granularity"]
    return dict(group_size=group_size, scale_granularity=row["scale granularity"], zero_granularity=zero_granularity,
                zero_kind="int8" if row["zero points"] == "none" else row["zero points"],
                scales_dtype="bf16" if row["scales"] == BEYOND_FP16 else row["scales"])


def tokens_of(row):
    """exact_probe's `tokens` of a row: adapters (if the design has them), pattern and bias."""
    if "adapters" not in row:
        return dict(num_loras=0, rank=1, popularity="none", bias=row["bias"])
    return dict(num_loras=row["adapters"], rank=row["rank"], popularity=row["pattern"], bias=row["bias"])


def row_cases(contract, row, shape, seed, m=None, columns_m=None, kinds=("exact", "columns")):
    """[(kind, case)] realizing one row at shape (out, in, group size): the dequantizer's random case, or the
    linear's exact probe (m tokens, or the row's M), column probe (columns_m rows, or one per column) and, where
    `kinds` has it, lora probe (the row's x dtype, rank and adapters)."""
    out_features, in_features, group_size = shape
    params = weight_params(row, group_size)
    beyond = row["scales"] == BEYOND_FP16
    rng = np.random.default_rng(seed)
    if contract == "dequantizer":
        weights = make_weights(rng, out_features, in_features, scale_exponent=SCALE_SHIFT if beyond else -3.0,
                               **params)
        return [("dequantizer", DequantCase(weights, row["x"]))]
    cases = []
    if "exact" in kinds:
        cases.append(("exact", exact_probe(seed, out_features, in_features, row["x"], **params,
                                           m=m or M_BUCKETS[row["M"]], tokens=tokens_of(row),
                                           scale_shift=SCALE_SHIFT if beyond else 0)))
    if "columns" in kinds:
        weights = make_weights(rng, out_features, in_features, scale_exponent=SCALE_SHIFT if beyond else -3.0,
                               **params)
        cases.append(("columns", columns_probe(weights, row["x"], seed, m=columns_m)))
    if "lora" in kinds:
        cases.append(("lora", lora_probe(seed, out_features, in_features, row["x"], num_loras=row["adapters"],
                                         rank=row["rank"])))
    return cases


def describe_row(row):
    """A row in words, for a case's name."""
    return ", ".join(f"{k} {v}" for k, v in row.items())


def big_k_cases(contract, domain, seed=0):
    """[(group, name, case)]: the pairwise design at K >= 4096, N = 72 (module docstring)."""
    cases, lora_dtypes = [], set()
    for i, row in enumerate(design(contract, domain)):
        shape, kinds = shape_of(row, domain), ("exact", "columns")
        if contract == "linear" and row.get("adapters") and row["x"] not in lora_dtypes:  # a lora probe per x dtype
            lora_dtypes.add(row["x"])
            kinds += ("lora",)
        for kind, case in row_cases(contract, row, shape, seed + 1000 + i, kinds=kinds):
            cases.append(("big K", f"{kind} {shape[0]}x{shape[1]}: {describe_row(row)}", case))
    return cases


def dimensions_of(case):
    """{dimension: value} a case holds, read from the case itself (a dimension it lacks: left out)."""
    from int4_lora_harness.reference.granularity import granularity
    w = case.weights
    out_features, in_features = w.shape
    dims = {"x": getattr(case, "output_dtype", None) or case.x_dtype,
            "scales": w.scales_dtype, "scale granularity": granularity(w.scales, out_features, in_features,
                                                                       w.group_size, "scales")}
    scales = np.abs(np.asarray(w.scales, np.float64))
    if w.scales_dtype == "bf16" and np.any((scales > 0) & (scales < 2.0 ** -24) | (scales > 65504)):
        dims["scales"] = BEYOND_FP16
    dims["zero points"], dims["zero granularity"] = "none", "none"
    if w.zero_points is not None:
        kind = w.zero_points_dtype
        dims["zero points"] = kind if kind.startswith("int") else "float" if kind == w.scales_dtype else "fp32"
        dims["zero granularity"] = granularity(w.zero_points, out_features, in_features, w.group_size, "zero_points")
    dims["group"] = NO_GROUPS if w.group_size is None else "ragged" if in_features % w.group_size else w.group_size
    if isinstance(case, DequantCase):
        return dims
    dims.update({"M": m_bucket(case.x.shape[0]), "bias": case.bias is not None})
    if case.lora_a is not None:
        dims.update({"rank": case.lora_a.shape[1], "adapters": case.lora_a.shape[0]})
        if "popularity" in case.notes:
            dims["pattern"] = case.notes["popularity"]
    return dims
