"""A long plan as several tasks (harness.verify.parts): its parts hold every explicit example once, and their
results merge into the result of one candidate (counts summed, the first failure in plan order)."""
import pytest

from int4_lora_harness.shapes import LARGE_TIER
from int4_lora_harness.verify.domain import FULL
from int4_lora_harness.verify.parts import SMALL, merge, split
from int4_lora_harness.verify.run import Candidate, explicit_cases

OPTIONS = dict(domain=FULL, layout="canonical", checkpoint={})


@pytest.mark.parametrize("contract", ["dequantizer", "linear"])
def test_the_parts_of_a_long_plan_hold_each_explicit_example_once(contract):
    candidate = Candidate("k", "k.py:f", contract, "third-party", seed=3)
    parts = split(candidate)
    assert [p.part for p in parts] == [SMALL, *LARGE_TIER]
    whole = [(group, name) for group, name, _ in explicit_cases(candidate, OPTIONS)]
    in_parts = [[(group, name) for group, name, _ in explicit_cases(p, OPTIONS)] for p in parts]
    assert sorted(case for cases in in_parts for case in cases) == sorted(whole)
    for cases in in_parts:  # each part in the whole plan's order (the large tier's shapes one part after another)
        rest = iter(whole)
        assert all(case in rest for case in cases)  # a subsequence of the whole plan
    assert all(cases for cases in in_parts)  # no part without work
    assert {g for g, _ in in_parts[0]} == {g for g, _ in whole} - {"large tier", "probes"}


def test_a_plan_without_the_large_tier_is_one_task():
    candidate = Candidate("k", "k.py:f", "linear", "third-party", large_tier_skipped="--no-large-tier")
    assert split(candidate) == [candidate]


def line(name, status, cases, message=""):
    return dict(name=name, status=status, passed=status == "passed", cases=cases, not_judged=0, message=message)


def part_result(part, passed, cases, samples, failure=None, seconds=1.0):
    return dict(candidate="k", contract="linear", part=part, task=f"t {part}", node=dict(id=part), passed=passed,
                fuzzed_cases=40 if part == SMALL else 0, seconds=seconds, max_ratio=0.5 if passed else 9.0,
                worst=dict(ratio=0.5 if passed else 9.0), failure=failure, repro=None if passed else f"repro {part}",
                properties=[line("within tolerance", "passed" if passed else "failed", cases,
                                 "" if passed else f"wrong in {part}"),
                            line("deterministic", "passed" if cases else "not run", cases)],
                explicit=[dict(group=part, shape=str(i)) for i in range(cases)], planned={part: cases},
                designs={"w in x.dtype": dict(cases=cases, words="w")}, samples=samples,
                timing=dict(candidate_s=seconds, judge_s=2 * seconds, calls=3),
                sandbox=dict(sandboxed=True), exit_note=None)


def sample(seen, count):
    return [dict(dtype="fp16", granularity="grouped", elements_seen=seen, ulps=[float(seen)] * count,
                 ratio=[0.0] * count)]


def test_merged_parts_sum_their_counts_and_keep_the_first_failure_in_plan_order():
    results = [part_result(SMALL, True, 3, sample(3000, 2048)),
               part_result("a", False, 2, sample(1000, 1000), failure=dict(kind="wrong", message="a")),
               part_result("b", False, 1, [], failure=dict(kind="raised", message="b"))]
    merged = merge(results)
    assert merged["passed"] is False and merged["failure"] == dict(kind="wrong", message="a")
    assert merged["repro"] == "repro a" and "part" not in merged
    assert (merged["task"], merged["node"]) == ("t a", dict(id="a"))  # where the failure was judged
    assert merged["fuzzed_cases"] == 40 and merged["seconds"] == 3.0
    assert [e["group"] for e in merged["explicit"]] == [SMALL] * 3 + ["a"] * 2 + ["b"]
    assert merged["planned"] == {SMALL: 3, "a": 2, "b": 1}
    assert merged["properties"] == [line("within tolerance", "failed", 6, "wrong in a"),
                                    line("deterministic", "passed", 6)]
    assert merged["designs"] == {"w in x.dtype": dict(cases=6, words="w")}
    assert merged["timing"] == dict(candidate_s=3.0, judge_s=6.0, calls=9)
    assert merged["max_ratio"] == 9.0 and merged["worst"] == dict(ratio=9.0)
    [s] = merged["samples"]
    assert s["elements_seen"] == 4000 and len(s["ulps"]) == 2048  # 3/4 of the kept values from the first part
    assert s["ulps"].count(3000.0) == 1536 and s["ulps"].count(1000.0) == 512
    assert [(p["part"], p["passed"], p["node"]) for p in merged["parts"]] == [
        (SMALL, True, dict(id=SMALL)), ("a", False, dict(id="a")), ("b", False, dict(id="b"))]


def test_parts_whose_candidate_died_at_import_merge_into_a_failure_without_a_sandbox():
    results = [part_result(SMALL, False, 0, [], failure=dict(kind="crashed", message="import")),
               part_result("a", False, 0, [], failure=dict(kind="crashed", message="import"))]
    for result in results:
        del result["sandbox"]  # as harness.verify.run.ended_at_import leaves it: no child ever reported one
    merged = merge(results)
    assert merged["passed"] is False and merged["failure"]["kind"] == "crashed" and merged.get("sandbox") is None


def test_merged_parts_that_all_pass_pass_and_the_weakest_sandbox_is_reported():
    results = [part_result(SMALL, True, 3, []), part_result("a", True, 2, [])]
    results[1]["sandbox"] = dict(sandboxed=False, files="unavailable")
    merged = merge(results)
    assert merged["passed"] is True and merged["failure"] is None and "repro" not in merged
    assert (merged["task"], merged["node"]) == (f"t {SMALL}", dict(id=SMALL))
    assert merged["sandbox"] == dict(sandboxed=False, files="unavailable")
