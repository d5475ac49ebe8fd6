"""What CI reads from `int4-verify`: the JUnit XML file, the one-line JSON summary, --list-checks, the help, and a
current directory left as it was.

Runs go through the console script's own entry point (`verify_main`) in this process, the candidate still in its
child process; the runs that must see the process itself (what lands in the cwd, the plugin) are subprocesses.
"""
import json
import os
import re
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from int4_lora_harness.__main__ import verify_main
from int4_lora_harness.verify.properties import PROPERTIES

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}  # the planted candidates are TARGETs planted.*
FAST = ["--no-large-tier", "--examples", "5", "--timeout", "20", "--quiet"]
CORRECT = "planted.bugs:correct_dequantize_fp64_expand"
BUG = "planted.bugs:missing_offset"
LAYER = "int4_lora_harness.kernels.torch_layer:layer"


def verify(tmp_path, capsys, *args):
    """(exit status, stdout, stderr) of `int4-verify --report TMP/reports ARGS` run in this process."""
    code = verify_main(["--report", str(tmp_path / "reports"), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def verdict(tmp_path):
    return json.loads((tmp_path / "reports" / "verify.json").read_text())


def cases_of(suite):
    return {case.get("name"): case for case in suite.iter("testcase")}


def test_junit_of_a_failing_run_names_the_failed_properties_with_message_and_repro(tmp_path, capsys):
    code, out, err = verify(tmp_path, capsys, "--dequantizer", BUG, "--junit-xml", str(tmp_path / "ci" / "bug.xml"),
                            *FAST)
    assert code == 1, out + err
    [result] = verdict(tmp_path)["results"]
    root = ET.parse(tmp_path / "ci" / "bug.xml").getroot()
    [suite] = root.findall("testsuite")
    assert suite.get("name") == f"{BUG} [dequantizer] seed 0"
    cases = cases_of(suite)
    assert {f"property: {p}" for p in PROPERTIES} | {"property: (the process)", "plan: fuzzed"} <= set(cases)
    for name in result["failure"]["failed"]:
        failure = cases[f"property: {name}"].find("failure")
        assert failure is not None and failure.get("type") == result["failure"]["kind"]
        assert f"repro: python {result['repro']}" in failure.text
        assert result["failure"]["message"].split(";")[0][:40] in failure.text
    assert cases["plan: fuzzed"].find("failure") is not None  # the search found it
    assert cases["plan: coverage"].find("skipped") is not None  # the run stopped at its first failure
    failures = sum(c.find("failure") is not None for c in cases.values())
    assert int(suite.get("failures")) == failures == int(root.get("failures")) >= len(result["failure"]["failed"])
    assert int(suite.get("tests")) == len(cases) == int(root.get("tests"))
    assert {p.get("name"): p.get("value") for p in suite.iter("property")}["repro"] == result["repro"]


def test_junit_of_a_passing_run_has_no_failure_and_says_what_it_skipped(tmp_path, capsys):
    code, out, err = verify(tmp_path, capsys, "--dequantizer", CORRECT, "--junit-xml", str(tmp_path / "ok.xml"), *FAST)
    assert code == 0, out + err
    [result] = verdict(tmp_path)["results"]
    root = ET.parse(tmp_path / "ok.xml").getroot()
    assert root.get("failures") == "0" and root.get("errors") == "0"
    assert not list(root.iter("failure")) and not list(root.iter("error"))
    cases = cases_of(root)
    for group, count in result["planned"].items():
        assert cases[f"plan: {group}"].find("system-out").text == f"{count} cases"
    assert cases["plan: large tier"].find("skipped").get("message") == "skipped: --no-large-tier"
    assert [c for c, case in cases.items() if case.find("skipped") is not None] == ["plan: large tier"]


def test_junit_of_a_layer_run_has_a_suite_per_style_with_its_named_cases(tmp_path, capsys):
    code, out, err = verify(tmp_path, capsys, "--layer", LAYER, "--tp", "1", "--styles", "column,row", "--examples",
                            "2", "--quiet", "--junit-xml", str(tmp_path / "layer.xml"))
    assert code == 0, out + err
    suites = ET.parse(tmp_path / "layer.xml").getroot().findall("testsuite")
    assert [s.get("name") for s in suites] == [f"{LAYER} [layer, style {s}, tp 1] seed 0" for s in ("column", "row")]
    for suite in suites:
        assert {"plan: named", "plan: fuzzed", "property: within tolerance"} <= set(cases_of(suite))
        assert suite.get("failures") == "0"


def test_summary_json_is_the_only_line_on_stdout_and_agrees_with_the_verdict(tmp_path, capsys):
    code, out, err = verify(tmp_path, capsys, "--dequantizer", BUG, "--seeds", "0,1", "--summary-json", *FAST)
    assert code == 1
    [line] = out.splitlines()
    summary = json.loads(line)
    run = verdict(tmp_path)
    assert summary["exit_status"] == 1 and summary["status"] == "complete" and summary["run_id"] == run["run_id"]
    assert summary["counts"] == dict(results=2, passed=0, failed=2, skipped=0)
    assert summary["results"] == [dict(target=BUG, candidate=BUG, contract="dequantizer", seed=r["seed"], passed=False,
                                       kind=r["failure"]["kind"]) for r in run["results"]]
    assert json.loads(Path(summary["verdict"]).read_text())["run_id"] == run["run_id"]
    assert "summary:" in err and "overall: 2 of 2 FAILED" in err  # the lines a human reads went to stderr


def test_a_usage_error_still_gets_its_summary_line_and_a_junit_error(tmp_path, capsys):
    code, out, err = verify(tmp_path, capsys, "--dequantizer", "planted.hostile:missing", "--summary-json",
                            "--junit-xml", str(tmp_path / "usage.xml"), "--quiet")
    assert code == 2
    summary = json.loads(out)
    assert summary["exit_status"] == 2 and summary["status"] == "usage error" and summary["counts"]["results"] == 0
    assert "has no function 'missing'" in summary["error"]
    [error] = ET.parse(tmp_path / "usage.xml").getroot().iter("error")
    assert "has no function 'missing'" in error.get("message")


def listed_counts(out):
    """{group: count} from --list-checks' 'cases' lines ('    coverage   90  words')."""
    block = out.split("cases, in the order they run:")[1]
    return {m["group"]: int(m["n"]) for m in re.finditer(r"^    (?P<group>[a-zA-Z ]+?)\s+(?P<n>\d+)(?:  |$)", block,
                                                        re.MULTILINE) if m["group"] != "total"}


@pytest.mark.parametrize("contract, target, flags", [
    ("linear", "planted.bugs:correct_linear_gathered", ["--dtypes", "fp16", "--max-loras", "2"]),
    ("dequantizer", CORRECT, ["--granularity", "grouped,per-channel", "--seed", "3"]),
])
def test_list_checks_counts_what_a_run_with_the_same_flags_runs_and_runs_nothing(tmp_path, capsys, contract, target,
                                                                                 flags):
    flags = [f"--{contract}", target, "--no-large-tier", "--examples", "3", "--quiet", *flags]
    code, out, err = verify(tmp_path, capsys, "--list-checks", *flags)
    assert code == 0, out + err
    assert not (tmp_path / "reports").exists()  # nothing written
    assert all(f"    {p}" in out for p in PROPERTIES)
    listed = listed_counts(out)
    code, out, err = verify(tmp_path, capsys, *flags)
    assert code == 0, out + err
    [result] = verdict(tmp_path)["results"]
    assert listed == {"fuzzed": result["fuzzed_cases"], **result["planned"]}
    assert sum(result["planned"].values()) == len(result["explicit"])


def test_list_checks_with_the_large_tier_counts_each_probe_kind_at_each_shape(tmp_path, capsys):
    from int4_lora_harness.verify import plan
    from int4_lora_harness.verify.domain import FULL
    code, out, err = verify(tmp_path, capsys, "--list-checks", "--linear", "planted.bugs:correct_linear_gathered")
    assert code == 0, out + err
    listed = listed_counts(out)
    rows = plan.large_tier_rows("linear", FULL)
    assert listed["large tier"] == len(rows) and listed["fuzzed"] == 40
    wide = [shape for _, shape, _ in rows if shape[0] >= plan.WIDE]
    assert listed["probes"] == 3 * (len(rows) - len(wide)) + len(wide)  # exact, columns, lora; a wide layer columns


NARROW = ["--dtypes", "fp16", "--granularity", "grouped"]  # fewer explicit cases: a shorter run


def test_a_run_writes_nothing_to_the_current_directory(tmp_path):
    work, report = tmp_path / "work", tmp_path / "reports"
    work.mkdir()
    run = subprocess.run([sys.executable, "-m", "int4_lora_harness", "verify", "--dequantizer", CORRECT, "--report",
                          str(report), *FAST, *NARROW], cwd=work, env=ENV, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert sorted(os.listdir(work)) == []
    assert (report / ".hypothesis" / "constants").is_dir()  # Hypothesis did write its cache: under --report


def test_the_pytest_plugin_writes_nothing_to_the_current_directory(tmp_path):
    work, report = tmp_path / "work", tmp_path / "reports"
    work.mkdir()
    # no:benchmark: pytest-benchmark (installed here for our own sweeps) makes ./.benchmarks in any session
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:benchmark", "-q",
                          "--int4-dequantizer", CORRECT,
                          "--int4-report", str(report), "--int4-no-large-tier", "--int4-examples", "5"],
                         cwd=work, env=ENV, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
    assert sorted(os.listdir(work)) == []
    assert (report / ".hypothesis" / "constants").is_dir()


def test_help_says_int4_verify_cites_the_contracts_sections_and_lists_choice_values(capsys):
    with pytest.raises(SystemExit) as exit_:
        verify_main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: int4-verify") and "SPEC" not in text
    anchors = set(re.findall(r'<a id="([a-z-]+)"></a>', (ROOT / "docs" / "contract.md").read_text()))
    cited = set(re.findall(r"docs/contract\.md#([a-z-]+)", text))
    assert cited and cited <= anchors, cited - anchors
    flat = " ".join(text.split())
    for values in ("fp16, bf16, fp32", "per-tensor, per-channel, grouped", "uniform, distinct, zipf, identical, none",
                   "column, row, column-fully-sharded", "{ci,thorough}", "{none,integer,fractional,any}", "{cpu,cuda}"):
        assert values in flat, values


def test_no_user_doc_cites_a_spec_file_the_repository_does_not_have():
    docs = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    citing = [str(p.relative_to(ROOT)) for p in docs if "SPEC §" in p.read_text()]
    assert not citing and not (ROOT / "SPEC.md").exists()


def test_the_readmes_install_line_brings_pytest_for_its_plugin_line():
    readme = (ROOT / "README.md").read_text()
    [extra] = re.findall(r'pip install -c \S+constraints\.txt "\S+int4-lora-harness\[(\w+)\]"', readme)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(re.match(r"pytest\b", requirement) for requirement in extras[extra])
    assert "pytest --int4-linear" in readme


def test_junit_stays_parseable_whatever_the_candidate_wrote_in_its_exception():
    from int4_lora_harness.verify import junit
    hostile = "TypeError: \x00\x1b[32mPASS\x1b[0m\n</failure><testcase name='forged'/>\ud800\ufffe"
    result = dict(candidate="mine.py:f", target="mine.py:f", contract="linear", seed=0, passed=False, seconds=1.0,
                  properties=[], explicit=[], planned={}, fuzzed_cases=1,
                  failure=dict(kind="raised", message=hostile, case={"M": 1}, failed=["a call (raised)"]))
    text = junit.document(dict(results=[result], status="complete"), Path("v.json"), 1)
    root = ET.fromstring(text.encode("utf-8"))
    failures = list(root.iter("failure"))  # the process (it raised), and the search that found it
    assert "forged" not in {c.get("name") for c in root.iter("testcase")}
    for failure in failures:
        assert "\\x1b[32mPASS" in failure.get("message") and "\n" not in failure.get("message")
    assert root.find("testsuite").get("failures") == str(len(failures)) == "2"
