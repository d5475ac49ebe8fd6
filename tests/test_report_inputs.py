"""The report against broken, old and huge inputs: the page is always written, each problem a note naming the file.

One table of broken inputs (verdict files, benchmark rows, the real-weights file); for each, the page
is built with no exception, says what it could not read in which file, and shows the rest.
"""
import json
import math

import pandas as pd
import pytest
from test_report import RUN_A, result, section, synthetic_rows, verdict_file, write_bench

from int4_lora_harness.bench import store as perf_store
from int4_lora_harness.report.page import Caps, build_report

RUN = "20261201T120000Z-cccccc"


def write_verdict(folder, content, name=f"{RUN}.json"):
    (folder / "verify").mkdir(parents=True, exist_ok=True)
    path = folder / "verify" / name
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


def one(changes=None, run_changes=None, drop=()):
    """A verdict file with one result 'c:f' (dequantizer), `changes` to the result and `run_changes` to the run."""
    run = verdict_file(RUN, [{**result("c:f", "dequantizer"), **(changes or {})}], **(run_changes or {}))
    return {k: v for k, v in run.items() if k not in drop}


def bench_rows(folder, **changes):
    """One synthetic benchmark run with `changes` applied to every row."""
    rows = [{**row, **changes} for row in synthetic_rows(RUN_A)]
    perf_store.write_rows(rows, folder / "bench" / f"{RUN_A}.parquet")


def older_bench_file(folder):
    """A run written before harness_version existed."""
    frame = pd.DataFrame(synthetic_rows(RUN_A)).drop(columns=["harness_version"])
    (folder / "bench").mkdir(parents=True)
    frame.to_parquet(folder / "bench" / f"{RUN_A}.parquet")


# (what is broken, how to write it, what the page must say, verdict of c:f it must show or None)
BROKEN = [
    ("invalid JSON", lambda f: write_verdict(f, b"{ not json"), "not readable JSON", None),
    ("not UTF-8", lambda f: write_verdict(f, b"\xff\xfe\x00garbage"), "not readable JSON", None),
    ("nested too deep", lambda f: write_verdict(f, b"[" * 100_000), "not readable JSON", None),
    ("a JSON list", lambda f: write_verdict(f, [1, 2]), "a JSON list, not a verdict object", None),
    ("older schema: no generated, device, profile, examples, seed",
     lambda f: write_verdict(f, one(drop=("schema", "generated", "device", "profile", "examples", "seed"))),
     "missing (shown as '?'; an older schema?): generated, device, profile, examples, seed", "PASS"),
    ("a file of this schema missing a field", lambda f: write_verdict(f, one(drop=("device",))),
     "fields missing (shown as '?'): device", "PASS"),
    ('"passed": "false"', lambda f: write_verdict(f, one({"passed": "false"})),
     "results[0].passed: string 'false', not true or false (only true passes)", "FAIL"),
    ('"passed": "true" is not true either', lambda f: write_verdict(f, one({"passed": "true"})),
     "results[0].passed: string 'true'", "FAIL"),
    ("strings where numbers are", lambda f: write_verdict(f, one({"seconds": "1.5", "max_ratio": "big"})),
     "results[0].seconds: string '1.5', not a number", "PASS"),
    ("lists where objects are", lambda f: write_verdict(f, one({"timing": [1], "failure": [2], "designs": [3],
                                                                 "worst": [4]})),
     "results[0].timing: list [1], not an object", "PASS"),
    ("an object where a list is", lambda f: write_verdict(f, one({"properties": {"a": 1}, "explicit": "x"})),
     "results[0].properties: object {'a': 1}, not a list", "PASS"),
    ("results that are not objects", lambda f: write_verdict(f, verdict_file(RUN, [1, "x", result("c:f", "linear")])),
     "results: 2 entr(y/ies) that are not objects (left out)", "PASS"),
    ("results not a list", lambda f: write_verdict(f, verdict_file(RUN, {"c": 1})), "results: object", None),
    ("text among the samples", lambda f: write_verdict(f, one({"samples": [dict(
        dtype="fp16", granularity="grouped", elements_seen=3, ulps=[0, "one", None], ratio=[0, 1, 2])]})),
     "samples[0].ulps: 1 value(s) that are not numbers (read as NaN)", "PASS"),
    ("NaN and Infinity", lambda f: write_verdict(f, b'{"results": [{"candidate": "c:f", "contract": "linear", '
                                                  b'"passed": true, "max_ratio": NaN, "seconds": Infinity}]}'),
     "missing (shown as '?'; an older schema?): generated", "PASS"),
    ("odd values in a failure", lambda f: write_verdict(f, one({"passed": False, "failure": dict(
        kind={"x": 1}, values="too large: see the repro", worst=dict(index="0,0", inputs=[1]), case=None)})),
     "results[0].failure.kind: object {'x': 1}, not a string, results[0].failure.worst.inputs: list [1]", "FAIL"),
    ("a running file", lambda f: write_verdict(f, one(run_changes=dict(status="running", finished=None))),
     "", "INCOMPLETE"),
    ("an interrupted file", lambda f: write_verdict(f, one(run_changes=dict(status="interrupted"))), "", "INCOMPLETE"),
    ("an unknown status", lambda f: write_verdict(f, one(run_changes=dict(status="weird"))), "", "INCOMPLETE"),
    ("a bench row with a null backend", lambda f: bench_rows(f, backend=None),
     f"{RUN_A}.parquet: 18 row(s) with no backend (shown as '?')", None),
    ("a run whose medians are all 0", lambda f: bench_rows(f, median_s=0.0, iqr_s=0.0, min_s=0.0),
     f"{RUN_A}.parquet: 18 row(s) whose median_s is 0, negative or NaN", None),
    ("a run whose medians are all NaN", lambda f: bench_rows(f, median_s=math.nan),
     f"{RUN_A}.parquet: 18 row(s) whose median_s is 0, negative or NaN", None),
    ("a truncated parquet file", lambda f: ((f / "bench").mkdir(), (f / "bench" / "x.parquet").write_bytes(b"PAR1\0")),
     "x.parquet: unreadable", None),
    ("a run of an older bench schema", older_bench_file, "lacks columns ['harness_version'] (an older schema)", None),
    ("a broken real-weights file", lambda f: (f / "real_weights.json").write_text("[1"),
     "real_weights.json: not readable JSON", None),
    ("real weights with odd fields", lambda f: (f / "real_weights.json").write_text(json.dumps(
        dict(summary=[dict(group_size="32", sqnr_db_min="low")]))),
     "summary[0].sqnr_db_min: string 'low', not a number", None),
]


@pytest.mark.parametrize("write, says, shows", [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_a_broken_input_becomes_a_note_and_the_rest_of_the_page_renders(tmp_path, write, says, shows):
    write(tmp_path)
    html = build_report(tmp_path).read_text()
    assert "Traceback" not in html and "</html>" in html
    assert says in html.replace("&#39;", "'"), says
    if shows:
        verdict = section(html, "summary")
        assert f'<span class="badge {shows}">{shows}</span>' in verdict
        assert shows == "PASS" or '<span class="badge PASS">' not in verdict


def test_a_usage_error_run_shows_its_error_and_no_verdict(tmp_path):
    write_verdict(tmp_path, verdict_file(RUN, [], status="usage error", exit_status=2,
                                         error="--linear: no module named 'mine'"))
    verification = section(build_report(tmp_path).read_text(), "verification")
    assert "USAGE ERROR" in verification and "usage error: --linear: no module named &#39;mine&#39;" in verification


def test_a_legacy_verify_json_without_the_folder_is_read(tmp_path):
    legacy = dict(generated="2025-01-01T00:00:00", device="cpu", profile="ci", examples=12, seed=0, results=[
        dict(candidate="torch", contract="linear", passed=True, fuzzed_cases=12, large_tier=[
            dict(shape="llama3-8b.q_proj", passed=True, max_ratio=1.5e-4)], properties=[])])
    (tmp_path / "verify.json").write_text(json.dumps(legacy))
    html = build_report(tmp_path).read_text()
    assert '<span class="badge PASS">PASS</span>' in section(html, "summary")  # schema 1: no status, read as complete
    assert "<td>large tier</td><td>llama3-8b.q_proj</td>" in section(html, "verification")


def test_a_zero_median_run_draws_no_log_axis_and_no_comparison_regression(tmp_path):
    write_bench(tmp_path)
    perf_store.write_rows([{**row, "median_s": 0.0} for row in synthetic_rows("20250103T000000Z-zzzzzz", day=3)],
                          tmp_path / "bench" / "zero.parquet")
    html = build_report(tmp_path).read_text()
    perf = section(html, "performance")
    assert "No gemm / gemm_lora rows with a usable median in this run." in perf
    assert "0 regression(s)" in section(html, "comparison") and "18 unmeasured" in section(html, "comparison")


def test_20000_results_give_a_capped_page_that_says_what_it_left_out(tmp_path):
    results = [dict(candidate=f"c{i}:f", contract="linear", passed=i % 7 != 0, fuzzed_cases=1, seconds=0.1,
                    properties=[dict(name="within tolerance", passed=i % 7 != 0, cases=1)],
                    samples=[dict(dtype="fp16", granularity="grouped", elements_seen=8, ulps=[0.0] * 8,
                                  ratio=[0.1] * 8)]) for i in range(20_000)]
    write_verdict(tmp_path, verdict_file(RUN, results))
    html = build_report(tmp_path).read_text()
    assert len(html.encode()) < 3_000_000, len(html.encode())
    assert "19500 more rows not shown" in html
    assert "19950 more result(s) of this run not shown" in html
    assert "19988 more candidate(s) with samples not drawn" in html


def test_long_tables_are_cut_and_say_so(tmp_path):
    write_bench(tmp_path)
    html = build_report(tmp_path, caps=Caps(rows=5)).read_text()
    comparison = section(html, "comparison")
    assert comparison.count("<tr class=") == 5 and "13 more rows not shown" in comparison  # 18 cases in both


def test_the_power_table_is_read_from_its_file_and_a_broken_row_is_a_note(tmp_path):
    from int4_lora_harness.report import inputs
    (tmp_path / "power.json").write_text(json.dumps(dict(profile="ci", rows=[
        dict(name="swapped_nibbles", contract="dequantizer", expected="fail", passed=False, killed_by="fuzz",
             shape="out 1 x in 2", failed=["within tolerance"], seconds=3.1),
        dict(name="torch_path", contract="linear", expected="pass", passed=True, bound_used={"all": 7e-4},
             designs=["w in x.dtype"], seconds=20.0), "not a row"])))
    power, notes = inputs.load_power(tmp_path / "power.json", tmp_path)
    assert [r["name"] for r in power["killed"]] == ["swapped_nibbles"] and not power["killed"][0]["passed"]
    assert power["correct"][0]["bound_used"]["all"] == 7e-4
    assert notes and "not objects" in notes[0]
    assert inputs.load_power(tmp_path / "absent.json", tmp_path) == (None, [])


def test_flagged_bench_rows_are_named_and_never_drawn_or_compared(tmp_path):
    write_bench(tmp_path)
    rows = [{**row, "impossible": True, "floor_s": 1.0} for row in synthetic_rows("20250103T000000Z-zzzzzz", day=3)]
    perf_store.write_rows(rows, tmp_path / "bench" / "fast.parquet")
    html = build_report(tmp_path).read_text()
    assert "flagged, not a result: impossible" in html
    assert "No gemm / gemm_lora rows with a usable median in this run." in section(html, "performance")
    assert "0 regression(s)" in section(html, "comparison")


def test_an_unsandboxed_pass_says_so_on_the_page_and_a_run_id_without_a_real_time_is_read(tmp_path):
    walls = dict(processes="off (--no-sandbox)", files="off (--no-sandbox)", sandboxed=False)
    write_verdict(tmp_path, one({"sandbox": walls}))
    write_verdict(tmp_path, {**one(), "run_id": "20261399T999999Z-abcdef"}, name="month13.json")
    html = build_report(tmp_path).read_text()
    assert "unsandboxed: processes off (--no-sandbox); files off (--no-sandbox)" in html
