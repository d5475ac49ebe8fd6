"""A failure's shrinking stays within --shrink-budget and keeps a failing case; a refusal names its domain flag."""
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from int4_lora_harness.__main__ import verify_main
from int4_lora_harness.verify.domain import Domain
from int4_lora_harness.verify.hints import domain_hint
from int4_lora_harness.verify.shrink import SHRINK_BUDGET, Shrinking, case_key

FAST = ["--no-large-tier", "--examples", "5", "--timeout", "20", "--quiet"]
SEARCH = ["--no-large-tier", "--examples", "40", "--timeout", "20", "--quiet"]
BUG = "planted.bugs:half_intermediate"  # its first failing case is not its smallest: shrinking has work to do


def verify(tmp_path, capsys, *args):
    code = verify_main(["--report", str(tmp_path), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def the_result(tmp_path):
    [result] = json.loads((tmp_path / "verify.json").read_text())["results"]
    return result


@dataclass
class Case:
    values: np.ndarray
    dtype: str


def test_past_the_budget_only_cases_seen_failing_run_again():
    shrinking = Shrinking(budget=2)
    first, smaller, other, third = (Case(np.arange(n), "fp16") for n in (8, 4, 3, 2))
    assert shrinking.may_run(first)
    shrinking.ran(first, failed=True)  # the search's failure: shrinking starts
    for case, failed in ((smaller, True), (other, False)):
        assert shrinking.may_run(case)
        shrinking.ran(case, failed)
    assert not shrinking.may_run(third)  # the budget is spent: a new case is not run
    assert shrinking.may_run(smaller) and shrinking.may_run(first)  # Hypothesis's replay of a failing case is
    shrinking.ran(smaller, failed=True)
    summary = shrinking.finish()
    assert summary["cases"] == 2 and summary["budget"] == 2 and summary["stopped"] == "budget"


def test_case_keys_tell_cases_apart_by_every_field():
    a = Case(np.arange(4, dtype=np.float32), "fp16")
    assert case_key(a) == case_key(Case(np.arange(4, dtype=np.float32), "fp16"))
    assert case_key(a) != case_key(Case(np.arange(4, dtype=np.float64), "fp16"))
    assert case_key(a) != case_key(Case(np.arange(4, dtype=np.float32).reshape(2, 2), "fp16"))
    assert case_key(a) != case_key(Case(np.arange(4, dtype=np.float32), "bf16"))


def test_a_small_shrink_budget_stops_shrinking_and_keeps_a_case_that_still_fails(tmp_path, capsys):
    code, out, err = verify(tmp_path / "full", capsys, "--dequantizer", BUG, *SEARCH)
    assert code == 1, out + err
    full = the_result(tmp_path / "full")["failure"]["shrink"]
    assert full["stopped"] is None and full["cases"] > 3 and full["budget"] == SHRINK_BUDGET
    code, out, err = verify(tmp_path / "cut", capsys, "--dequantizer", BUG, "--shrink-budget", "3", *SEARCH)
    assert code == 1, out + err
    result = the_result(tmp_path / "cut")
    shrink = result["failure"]["shrink"]
    assert shrink == dict(shrink, cases=3, budget=3, stopped="budget")
    assert result["timing"]["shrink_cases"] == 3 and result["timing"]["shrink_s"] == shrink["seconds"]
    assert "stopped at --shrink-budget 3: the smallest failing case found so far" in out
    assert f"shrinking {shrink['seconds']:.1f} s (3 cases)" in out  # in the printed time breakdown
    from int4_lora_harness.verify.repro import replay
    assert replay(Path(result["repro"]).with_suffix(".case"), ["--in-process"]) == 1  # the case kept still fails
    assert "the failure is still there" in capsys.readouterr().out


def test_a_shrink_budget_of_zero_reports_the_failure_as_the_search_found_it(tmp_path, capsys):
    code, out, err = verify(tmp_path / "full", capsys, "--dequantizer", BUG, *SEARCH)
    full = the_result(tmp_path / "full")
    code, out, err = verify(tmp_path / "none", capsys, "--dequantizer", BUG, "--shrink-budget", "0", *SEARCH)
    assert code == 1, out + err
    result = the_result(tmp_path / "none")
    assert result["failure"]["shrink"]["cases"] == 0 and result["failure"]["shrink"]["stopped"] == "budget"
    assert result["failure"]["case"] != full["failure"]["case"]  # not shrunk: the case the search found


@pytest.mark.parametrize("exception, message, flag", [
    ("TypeError", "TypeError: Got unsupported ScalarType BFloat16", "--dtypes fp16,fp32"),
    ("RuntimeError", "RuntimeError: \"addmm_impl_cpu_\" not implemented for 'Half'", "--dtypes bf16,fp32"),
    ("AssertionError", "AssertionError: K must be a multiple of 64", "--in-multiple-of 64"),
    ("ValueError", "ValueError: N must be divisible by 8", "--out-multiple-of 8"),
    ("NotImplementedError", "NotImplementedError: group_size 24 is not supported", "--group-sizes"),
    ("AssertionError", "AssertionError: in_features must be a multiple of group_size", "--no-ragged"),
    ("TypeError", "TypeError: zero_points must be an integer tensor", "--zero-points integer"),
    ("NotImplementedError", "NotImplementedError: zero points", "--zero-points none"),
    ("NotImplementedError", "NotImplementedError: per-tensor scales", "--granularity"),
    ("TypeError", "TypeError: bias is not supported", "--no-bias"),
    ("AssertionError", "AssertionError: lora rank must be <= 16", "--max-rank"),
])
def test_a_refusal_names_the_domain_flag_that_states_its_limit(exception, message, flag):
    hint = domain_hint(exception, message)
    assert hint is not None and flag in hint, hint


@pytest.mark.parametrize("exception, message, domain", [
    ("KeyError", "KeyError: 'bf16'", Domain()),  # not how a kernel refuses: no hint
    ("TypeError", "TypeError: Got unsupported ScalarType BFloat16", Domain(dtypes=("bf16",))),  # nothing else left
    ("TypeError", "TypeError: expected fp16 or bf16, got fp32 weights", Domain()),  # no single dtype to leave out
    ("RuntimeError", "RuntimeError: CUDA error: an illegal memory access", Domain()),
])
def test_no_hint_where_no_flag_would_state_the_limit(exception, message, domain):
    assert domain_hint(exception, message, domain) is None


@pytest.mark.parametrize("target, flags", [
    ("planted.refusals:refuses_bf16", ["--dtypes", "fp16,fp32"]),
    ("planted.refusals:refuses_ragged_groups", ["--no-ragged"]),
])
def test_the_hinted_flag_turns_a_refusal_into_a_pass(tmp_path, capsys, target, flags):
    code, out, err = verify(tmp_path / "refused", capsys, "--dequantizer", target, *FAST)
    assert code == 1, out + err
    failure = the_result(tmp_path / "refused")["failure"]
    assert failure["kind"] == "raised" and " ".join(flags) in failure["hint"]
    assert f"the candidate raised: {failure['message']} \u2014 {failure['hint']}" in out
    code, out, err = verify(tmp_path / "narrowed", capsys, "--dequantizer", target, *flags, *FAST)
    assert code == 0, out + err
