"""Hypothesis strategies and named examples for the layer contract: small layers a tp = 4 run judges quickly.

Slices come from real merged layers (harness.shapes.MODELS), scaled down to their ratio: Llama 3's QKV
with grouped-query attention (4096, 1024, 1024) is 4:1:1, gate/up (14336, 14336) 1:1; one unit is tp
times a small number, so every slice shards evenly. Row-parallel layers draw in_features as whole,
even shards of whole groups (the contract refuses the others: `misaligned_row_case`).
"""
import math
from functools import reduce

from hypothesis import strategies as st

from int4_lora_harness.serving.cases import make_layer_case
from int4_lora_harness.shapes import MODELS
from int4_lora_harness.verify.domain import DTYPES, FULL, LINEAR_SCALE_EXPONENTS, POPULARITIES, SCALINGS
from int4_lora_harness.verify.strategies import weight_params

MERGED = {"qkv": ("q_proj", "k_proj", "v_proj"), "gate_up": ("gate_proj", "up_proj"), "o_proj": ("o_proj",)}
GROUP_SIZES = (2, 8, 16, 24, 32)  # small, and one that is not a power of two


def slice_ratio(model, projections):
    """The output sizes of a merged layer of `model`, divided by their gcd: (4096, 1024, 1024) -> (4, 1, 1)."""
    sizes = [MODELS[model][1][p][0] for p in projections]
    unit = reduce(math.gcd, sizes)
    return tuple(n // unit for n in sizes)


SLICE_RATIOS = {f"{name} (llama3-8b)": slice_ratio("llama3-8b", projections) for name, projections in MERGED.items()}


def _in_features(draw, tp, style, group_size, grouped):
    """Even in_features; for a row-parallel layer, tp even shards, each a whole number of groups if grouped."""
    if style != "row":
        return 2 * draw(st.integers(1, 48))
    unit = math.lcm(2, group_size) if grouped else 2
    return tp * unit * draw(st.integers(1, max(1, 96 // (tp * unit))))


@st.composite
def layer_cases(draw, tp=1, style="column"):
    """A LayerCase that rank r of tp can shard in `style`: 1-3 slices, up to 4 slots of rank <= 8, M in 2..12."""
    ratios = SLICE_RATIOS[draw(st.sampled_from(sorted(SLICE_RATIOS)))]
    unit = tp * draw(st.integers(1, max(1, 16 // tp)))
    x_dtype = draw(st.sampled_from(DTYPES))
    params = draw(weight_params(FULL, x_dtype, LINEAR_SCALE_EXPONENTS))
    group_size = draw(st.sampled_from(GROUP_SIZES))
    grouped = "grouped" in (params["scale_granularity"], params["zero_granularity"])
    in_features = _in_features(draw, tp, style, group_size, grouped)
    max_rank = tp * draw(st.integers(1, 2)) if style == "column-fully-sharded" else draw(st.integers(1, 6))
    max_loras = draw(st.integers(1, 4))
    rank = st.integers(0, max_rank)
    ranks = [[draw(rank) for _ in ratios] for _ in range(max_loras - 1)] + [[max_rank] * len(ratios)]
    return make_layer_case(
        seed=draw(st.integers(0, 2**32 - 1)), output_slices=tuple(r * unit for r in ratios), in_features=in_features,
        m=draw(st.integers(2, 12)), x_dtype=x_dtype, max_loras=max_loras, max_rank=max_rank, ranks=ranks,
        rewrite_ranks=[draw(st.integers(1, max(1, max_rank - 1))) for _ in ratios],
        popularity=draw(st.sampled_from(POPULARITIES)), scaling=draw(st.sampled_from(SCALINGS)),
        bias=draw(st.booleans()), index_dtype=draw(st.sampled_from(["int32", "int64"])), group_size=group_size,
        **params)


def named_cases(tp, style, seed=0):
    """[(name, LayerCase)]: every merged layer of SLICE_RATIOS at tp * 4 columns a unit, fp16, grouped (size 16)
    scales with integer zero points, rank-4 slots rewritten with rank 2: examined before any fuzzed case."""
    max_rank = 4 if style != "column-fully-sharded" else math.lcm(4, tp)
    in_features = 16 * 2 * tp if style == "row" else 96
    return [(name, make_layer_case(seed + i, tuple(r * 4 * tp for r in ratios), in_features, 8, "fp16", max_loras=3,
                                   max_rank=max_rank, rewrite_ranks=[max_rank // 2] * len(ratios), group_size=16,
                                   zero_granularity="grouped", zero_kind="int8"))
            for i, (name, ratios) in enumerate(SLICE_RATIOS.items())]


def misaligned_row_case(tp, seed=0):
    """A row-parallel layer whose shards split quantization groups: tp shards of 10 columns, groups of 8."""
    return make_layer_case(seed, (2 * tp,), 10 * tp, 2, "fp16", max_loras=1, max_rank=2, group_size=8)
