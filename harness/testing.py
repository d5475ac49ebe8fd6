"""What a kernel author's own pytest suite needs, in one import: strategies, settings, properties, explicit cases.

    from hypothesis import given
    from int4_lora_harness.testing import assert_holds, dequant_cases, dequantizer_properties, harness_settings

    @harness_settings("ci")                 # deadline=None and the harness's health checks; no profile registered
    @given(case=dequant_cases())
    def test_my_dequantizer(case):
        assert_holds(dequantizer_properties(my_dequantize, case))

Nothing here registers a Hypothesis profile or loads one: a user's own profiles stay theirs. The properties
are judged under the judge's own NumPy error state and torch defaults (harness.verify.numerics), whatever the
test's process set; the candidate, called in this process, runs under them too.
`explicit_cases(contract)` gives the coverage floor with the big K design, the large tier and (for a linear) the
probes as (group, name, case) triples for @pytest.mark.parametrize.
"""
import functools

from hypothesis import strategies as st

from int4_lora_harness.verify import properties, strategies
from int4_lora_harness.verify.domain import FULL, Domain
from int4_lora_harness.verify.numerics import judge_numerics, judged
from int4_lora_harness.verify.plan import coverage_cases, large_tier_cases, probe_cases
from int4_lora_harness.verify.properties import assert_holds, failures
from int4_lora_harness.verify.strategies import harness_settings


def drawn_as_judged(make_strategy):
    """`make_strategy(...)`'s cases drawn under harness.verify.numerics.judge_numerics (their values are computed
    as they are drawn, inside the user's test)."""
    @functools.wraps(make_strategy)
    def make(*args, **kwargs):
        inner = make_strategy(*args, **kwargs)

        @st.composite
        def under_judge(draw):
            with judge_numerics():
                return draw(inner)
        return under_judge()
    return make


# The judge's entry points, each under the judge's own NumPy error state and torch defaults
# (harness.verify.numerics): a user's conftest.py (np.seterr(all="raise"), a float64 default dtype) changes no verdict.
dequantizer_properties = judged(properties.dequantizer_properties)
linear_properties = judged(properties.linear_properties)
properties_in_process = judged(properties.properties_in_process)
dequant_cases = drawn_as_judged(strategies.dequant_cases)
linear_cases = drawn_as_judged(strategies.linear_cases)

__all__ = ["Domain", "FULL", "assert_holds", "dequant_cases", "dequantizer_properties", "explicit_cases", "failures",
           "harness_settings", "linear_cases", "linear_properties", "properties_in_process"]


@judged
def explicit_cases(contract, domain=FULL, seed=0, large_tier=True):
    """[(group, name, case)]: the coverage floor and the big K design, then (unless large_tier=False) the large tier and
    its probes."""
    cases = coverage_cases(contract, domain, seed)
    if large_tier:
        cases += large_tier_cases(contract, domain, seed)
        cases += probe_cases(domain, seed) if contract == "linear" else []
    return cases
