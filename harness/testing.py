"""What a kernel author's own pytest suite needs, in one import: strategies, settings, properties, explicit cases.

    from hypothesis import given
    from int4_lora_harness.testing import assert_holds, dequant_cases, dequantizer_properties, harness_settings

    @harness_settings("ci")                 # deadline=None and the harness's health checks; no profile registered
    @given(case=dequant_cases())
    def test_my_dequantizer(case):
        assert_holds(dequantizer_properties(my_dequantize, case))

Nothing here registers a Hypothesis profile or loads one: a user's own profiles stay theirs.
`explicit_cases(contract)` gives the coverage floor with the big K design, the large tier and (for a linear) the
probes as (group, name, case) triples for @pytest.mark.parametrize.
"""
from int4_lora_harness.verify.domain import FULL, Domain
from int4_lora_harness.verify.plan import coverage_cases, large_tier_cases, probe_cases
from int4_lora_harness.verify.properties import (assert_holds, dequantizer_properties, failures, linear_properties,
                                                 properties_in_process)
from int4_lora_harness.verify.strategies import dequant_cases, harness_settings, linear_cases

__all__ = ["Domain", "FULL", "assert_holds", "dequant_cases", "dequantizer_properties", "explicit_cases", "failures",
           "harness_settings", "linear_cases", "linear_properties", "properties_in_process"]


def explicit_cases(contract, domain=FULL, seed=0, large_tier=True):
    """[(group, name, case)]: the coverage floor and the big K design, then (unless large_tier=False) the large tier and
    its probes."""
    cases = coverage_cases(contract, domain, seed)
    if large_tier:
        cases += large_tier_cases(contract, domain, seed)
        cases += probe_cases(domain, seed) if contract == "linear" else []
    return cases
