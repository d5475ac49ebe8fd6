"""The verifier has teeth: the shared properties reject every planted bug and accept the correct variants."""
import pytest
from hypothesis import Phase, given, settings

from planted.bugs import CAUGHT_BY, CORRECT_DEQUANTIZERS, CORRECT_LINEARS, DEQUANTIZER_BUGS, LINEAR_BUGS
from int4_lora_harness.verify.properties import assert_holds, dequantizer_properties, linear_properties
from int4_lora_harness.verify.strategies import dequant_cases, linear_cases


# A correct variant is searched with as many cases as a verify run of the loaded profile draws (ci: 40,
# thorough: 600); test_verify_cli passes each through the whole plan as well.
CORRECT_EXAMPLES = settings().max_examples


def _search(check, candidate, strategy, examples=100):
    # A fixed search (derandomize, no example database) so a kill never depends on luck or a remembered
    # example; no shrinking: a kill needs one counterexample, not the smallest.
    @settings(database=None, derandomize=True, max_examples=examples, phases=[Phase.explicit, Phase.generate])
    @given(case=strategy)
    def holds(case):
        assert_holds(check(candidate, case, "cpu"))
    holds()


@pytest.mark.parametrize("name", sorted(DEQUANTIZER_BUGS))
def test_properties_reject_planted_dequantizer_bug(name):
    with pytest.raises(AssertionError, match=CAUGHT_BY.get(name)):
        _search(dequantizer_properties, DEQUANTIZER_BUGS[name], dequant_cases())


@pytest.mark.parametrize("name", sorted(LINEAR_BUGS))
def test_properties_reject_planted_linear_bug(name):
    with pytest.raises(AssertionError, match=CAUGHT_BY.get(name)):
        _search(linear_properties, LINEAR_BUGS[name], linear_cases())


@pytest.mark.parametrize("name", sorted(CORRECT_DEQUANTIZERS))
def test_properties_accept_correct_dequantizer_written_differently(name):
    _search(dequantizer_properties, CORRECT_DEQUANTIZERS[name], dequant_cases(), CORRECT_EXAMPLES)


@pytest.mark.parametrize("name", sorted(CORRECT_LINEARS))
def test_properties_accept_correct_linear_written_differently(name):
    _search(linear_properties, CORRECT_LINEARS[name], linear_cases(), CORRECT_EXAMPLES)


def test_there_are_at_least_twelve_planted_bugs():
    assert len(DEQUANTIZER_BUGS) + len(LINEAR_BUGS) >= 12
