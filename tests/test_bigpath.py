"""The big path meets the whole domain: every value and pair of values of harness.verify.bigpath's dimensions is in
some case at K >= 4096 (every value at a real layer too), the plan the default ci verdict runs kills every defect of
the family "big path x X" (tests/planted/bigpath.py) at its smallest shape, and correct candidates pass it."""
import itertools

import pytest

from int4_lora_harness.kernels import torch_path
from int4_lora_harness.shapes import LARGE_TIER
from int4_lora_harness.verify import bigpath, plan
from int4_lora_harness.verify.covering import all_targets, coverage_counts, covering
from int4_lora_harness.verify.domain import FULL, Domain
from int4_lora_harness.verify.properties import QUICK, failures, properties_in_process
from planted.bigpath import BIG_PATH_BUGS, wide
from planted.bugs import CORRECT_DEQUANTIZERS, CORRECT_LINEARS
from planted.unfused import UNFUSED_LINEARS

CONTRACTS = ("linear", "dequantizer")
WIDE_LAYER = "llama3-8b.lm_head"
_PLANS = {}


def verdict_plan(contract, large=()):
    """The explicit cases of the default ci verdict (harness.verify.run.explicit_cases, canonical layout, seed 0):
    the coverage floor with the big K design, then the large tier and the probes at the shapes named in `large`
    (harness.shapes.LARGE_TIER; each keeps the row the whole tier gives it)."""
    key = (contract, tuple(large))
    if key not in _PLANS:
        cases = plan.coverage_cases(contract, FULL, 0)
        if large:
            cases = cases + plan.large_tier_cases(contract, FULL, 0, only=large)
            cases += plan.probe_cases(FULL, 0, only=large) if contract == "linear" else []
        _PLANS[key] = cases
    return _PLANS[key]


def test_the_greedy_covering_holds_every_valid_pair_and_no_invalid_one():
    factors = {"a": (0, 1, 2), "b": ("x", "y"), "c": (True, False), "d": (0, 1, 2, 3)}
    valid = lambda row: not (row.get("a") == 2 and row.get("b") == "y")  # noqa: E731
    rows = covering(factors, valid)
    held = {pair for row in rows for pair in itertools.combinations(sorted(row.items()), 2)}  # a < b < c < d
    expected = {t for t in all_targets(factors, 2) if valid(dict(t))}
    assert held == expected and all(valid(row) for row in rows)
    assert 12 <= len(rows) <= 16  # 3 x 4 values of a and d need 12 rows; greedy stays near


@pytest.mark.parametrize("contract", CONTRACTS)
@pytest.mark.parametrize("domain", [FULL, Domain(dtypes=("fp16",), scale_dtypes=("output",), zero_points="integer",
                                                 same_granularity=True, group_sizes=(32, 128), ragged=False,
                                                 out_multiple_of=8, in_multiple_of=32, max_rank=8, max_loras=2,
                                                 bias=False)])
def test_every_pair_of_values_meets_k_4096_inside_the_domain(contract, domain):
    cases = bigpath.big_k_cases(contract, domain, seed=0)
    counts = coverage_counts([bigpath.dimensions_of(c) for _, _, c in cases], bigpath.factors(contract, domain),
                             bigpath.valid_rule(contract, domain))
    assert counts["missing"] == [] and min(counts["pairs"].values()) >= 1
    for _, _, case in cases:
        w = case.weights
        assert w.shape[1] >= 4096 and domain.allows_shape(*w.shape, w.group_size)
        assert bigpath.dimensions_of(case)["x"] in domain.dtypes


def test_each_big_k_case_holds_its_rows_values():
    rows = bigpath.design("linear", FULL)
    cases = bigpath.big_k_cases("linear", FULL, seed=0)
    kinds = ("exact", "columns", "lora")
    by_kind = {kind: [c for _, name, c in cases if name.startswith(kind + " ")] for kind in kinds}
    assert len(by_kind["exact"]) == len(by_kind["columns"]) == len(rows)
    assert len(cases) == 2 * len(rows) + len(by_kind["lora"])
    lora_rows = {row["x"]: row for row in reversed(rows) if row.get("adapters")}  # the first row of each x dtype
    assert sorted(bigpath.dimensions_of(c)["x"] for c in by_kind["lora"]) == sorted(lora_rows)
    for lora in by_kind["lora"]:
        dims = bigpath.dimensions_of(lora)
        assert (dims["rank"], dims["adapters"]) == (lora_rows[dims["x"]]["rank"], lora_rows[dims["x"]]["adapters"])
    for row, exact, columns in zip(rows, by_kind["exact"], by_kind["columns"]):
        assert bigpath.dimensions_of(exact) == row
        weight_side = ("x", "scales", "scale granularity", "zero points", "zero granularity", "group")
        assert {k: bigpath.dimensions_of(columns)[k] for k in weight_side} == {k: row[k] for k in weight_side}


@pytest.mark.parametrize("contract", CONTRACTS)
def test_the_plan_meets_every_value_at_a_real_layer_and_every_pair_at_k_4096(contract):
    cases = verdict_plan(contract, large=LARGE_TIER)
    counts = plan.plan_coverage(contract, cases)
    assert counts["big K"]["missing"] == []
    assert [t for t in counts["large N"]["missing"] if len(t) == 1] == []
    assert any(c.weights.shape[0] > 2 ** 16 and c.weights.shape[1] >= 4096 for _, _, c in cases)  # an LM head
    assert "NOT MET" not in plan.coverage_line(contract, cases)


def killed_at(name):
    """(group, name) of an explicit case of the verdict that kills the defect: the cases on the big path it needs
    (the others are a correct candidate's), probes before random cases of the same size (cheaper to judge)."""
    contract, candidate, on_its_path = BIG_PATH_BUGS[name]
    large = [WIDE_LAYER] if on_its_path is wide else ()
    cases = [c for c in verdict_plan(contract, large) if on_its_path(c[2])]
    for group, label, case in sorted(cases, key=lambda c: (c[2].weights.packed.size, c[0] != "probes")):
        if failures(properties_in_process(candidate, case, updates=QUICK)):
            return group, label
    return None


@pytest.mark.parametrize("name", sorted(BIG_PATH_BUGS))
def test_every_big_path_defect_is_killed_by_the_default_plan_at_its_smallest_shape(name):
    killed = killed_at(name)
    assert killed is not None, f"{name} passed every case of the plan"
    contract, _, on_its_path = BIG_PATH_BUGS[name]
    assert killed[0] == ("big K" if on_its_path is not wide else "probes" if contract == "linear"
                         else "large tier"), killed  # K = 4096 at N = 72, or the LM head's first 2**16 + 64 rows


CORRECT = {"torch_path": ("linear", torch_path.linear), "torch_path dequantize": ("dequantizer", torch_path.dequantize),
           **{n: ("linear", f) for n, f in {**CORRECT_LINEARS, **UNFUSED_LINEARS}.items()},
           **{n: ("dequantizer", f) for n, f in CORRECT_DEQUANTIZERS.items()}}


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_correct_candidates_pass_the_big_k_design(name):
    """The project's own path on every big K case; the other correct designs on every third (their cost)."""
    contract, candidate = CORRECT[name]
    cases = [(label, c) for group, label, c in verdict_plan(contract) if group == "big K"]
    for label, case in cases if name.startswith("torch_path") else cases[::3]:
        assert failures(properties_in_process(candidate, case, updates=QUICK)) == [], label


@pytest.mark.parametrize("name", ["bf16_lora_intermediate_past_4096", "lora_index_of_the_previous_tile_past_64"])
def test_a_narrower_lora_path_past_k_4096_is_killed_by_the_big_k_lora_probe_without_the_large_tier(name):
    from planted.large import LARGE_SHAPE_BUGS
    lora = [(label, c) for group, label, c in verdict_plan("linear") if group == "big K" and label.startswith("lora")]
    assert {c.x_dtype for _, c in lora} == set(FULL.dtypes)  # one per x dtype
    killed = [label for label, c in lora if "within tolerance" in
              [o.name for o in failures(properties_in_process(LARGE_SHAPE_BUGS[name], c, updates=QUICK))]]
    assert killed, f"{name} passed every lora probe of the big K design"


@pytest.mark.parametrize("contract", CONTRACTS)
def test_every_seeds_forty_ci_cases_reach_k_4096_and_the_linears_reach_m_128(contract):
    from hypothesis import HealthCheck, Phase, given, seed, settings

    from int4_lora_harness.verify.engine import STRATEGIES
    for run_seed in range(8):
        drawn = []

        @seed(run_seed)  # as harness.verify.engine.search draws them: same settings but the shrink
        @settings(max_examples=40, database=None, deadline=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=STRATEGIES[contract](FULL))
        def draw(case):
            drawn.append((case.weights.shape[1], case.x.shape[0] if contract == "linear" else None))

        draw()
        assert len(drawn) == 40 and any(k >= 4096 for k, _ in drawn), (run_seed, drawn)
        assert contract == "dequantizer" or any(m >= 128 for _, m in drawn), (run_seed, drawn)
