"""The page's summary from real verify runs: one row per target, contract, domain, layout and device, each from
its newest complete run, one spelling per target, and the numbers of the error tables as the verdicts recorded.

Every verdict file here is written by verify itself (`int4-harness verify`, in this process; the candidates run
in their child processes), on tiny runs (--examples 4) of candidates in a scratch folder built from
tests/planted/bugs.py (a dequantizer that rounds toward zero: it passes, with elements at 1 ulp; the same made
to forget the offset of 8 for fp16 outputs). A complete run's large tier (real layer shapes: minutes on this
machine) is replaced by an empty one while it runs: verify still writes the verdict, with large_tier_skipped
null and status complete, as a full run writes it. A partial run is a plain --no-large-tier run.

The runs, oldest first (scratch folder `work`, reports in `reports`):
  alpha  complete PASS (alpha.py:f, correct)     then  partial FAIL (alpha:f --no-large-tier, made wrong)
  beta   complete FAIL (beta.py:f, wrong on fp16) then  complete PASS (./beta.py:f --dtypes bf16)
  gone   gone.py:f, then ./gone.py:f: a module that ends its process while imported (no source file recorded:
         the key comes from the run's recorded folder)
  usage  a usage error (a TARGET whose module does not exist)
"""
import argparse
import contextlib
import html as html_text
import io
import json
import re
from pathlib import Path
from unittest import mock

import pytest
from test_report import section

from int4_lora_harness.__main__ import main
from int4_lora_harness.report import cli as report_cli
from int4_lora_harness.report import inputs, summary
from int4_lora_harness.report.fmt import fmt_share
from int4_lora_harness.report.page import Caps, build_report
from int4_lora_harness.verify import plan

TOWARD_ZERO = '''
import torch
from planted.bugs import _columns, _per_column, missing_offset, unpack

WRONG_ON = {wrong_on}


def toward_zero(w, dtype):
    """w (float64) rounded toward zero to dtype: within 1 ulp of the correctly rounded value, equal to it where
    w is representable (SPEC 5 allows it), so its sample holds elements at 0 and at 1 ulp."""
    nearest = w.to(dtype)
    past = nearest.double().abs() > w.abs()
    bits = torch.int32 if dtype == torch.float32 else torch.int16
    return torch.where(past, (nearest.view(bits) - 1).view(dtype), nearest)  # one step toward zero


def f(packed_weights, scales, zero_points=None, group_size=None, output_dtype=None):
    if output_dtype == WRONG_ON:  # forgets the offset of 8: every value wrong, often where exact (ratio inf)
        return missing_offset(packed_weights, scales, zero_points, group_size, output_dtype)
    v = unpack(packed_weights).to(torch.float64)
    columns = _columns(v.shape[1], group_size)
    w = (v - _per_column(zero_points, columns)) * _per_column(scales, columns)
    return toward_zero(w, output_dtype)
'''
CORRECT = TOWARD_ZERO.format(wrong_on="None")
WRONG_ON_FP16 = TOWARD_ZERO.format(wrong_on="torch.float16")
GONE = '''
import os

os._exit(3)


def f(packed_weights, scales, zero_points=None, group_size=None, output_dtype=None):
    return None
'''
TINY = ["--examples", "4", "--quiet", "--timeout", "60"]


def verify(reports, *args, complete=False):
    """(exit status, the verdict verify wrote) of `int4-harness verify --report reports ARGS` in this process.
    complete: the large tier and the probes are empty lists for this run (see the module docstring)."""
    patches = contextlib.ExitStack()
    if complete:
        patches.enter_context(mock.patch.object(plan, "large_tier_cases", lambda *a, **k: []))
        patches.enter_context(mock.patch.object(plan, "probe_cases", lambda *a, **k: []))
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")  # main reconfigures stdout: a real text stream
    with patches, contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["verify", "--report", str(reports), *args])
    return code, json.loads((Path(reports) / "verify.json").read_text())


@pytest.fixture(scope="module")
def verified(tmp_path_factory):
    """(reports folder, {name: the verdict verify wrote}) of the runs in the module docstring."""
    root = tmp_path_factory.mktemp("rows")
    work, reports = root / "work", root / "reports"
    work.mkdir()
    runs = {}
    with contextlib.chdir(work):
        (work / "alpha.py").write_text(CORRECT)
        code, runs["alpha complete"] = verify(reports, "--dequantizer", "alpha.py:f", *TINY, complete=True)
        assert code == 0, runs["alpha complete"]["results"]
        (work / "alpha.py").write_text(WRONG_ON_FP16)
        code, runs["alpha partial"] = verify(reports, "--dequantizer", "alpha:f", "--no-large-tier", *TINY)
        assert code == 1
        (work / "beta.py").write_text(WRONG_ON_FP16)
        code, runs["beta wide"] = verify(reports, "--dequantizer", "beta.py:f", *TINY, complete=True)
        assert code == 1
        code, runs["beta narrow"] = verify(reports, "--dequantizer", "./beta.py:f", "--dtypes", "bf16", *TINY,
                                           complete=True)
        assert code == 0, runs["beta narrow"]["results"]
        (work / "gone.py").write_text(GONE)
        for spelling in ("gone.py:f", "./gone.py:f"):
            code, runs[spelling] = verify(reports, "--dequantizer", spelling, *TINY)
            assert code == 1 and runs[spelling]["results"][0]["failure"]["kind"] == "crashed"
        code, runs["usage"] = verify(reports, "--dequantizer", "no_such_module_anywhere:f", *TINY)
        assert code == 2
    return reports, runs


@pytest.fixture(scope="module")
def page(verified):
    reports, _ = verified
    return build_report(reports).read_text()


def summary_rows(html):
    """The summary table's rows as lists of cell texts (tags removed, spaces collapsed)."""
    table = re.search(r"<table>(.*?)</table>", section(html, "summary"), re.S).group(1)
    cells = [re.findall(r"<td>(.*?)</td>", row, re.S) for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)]
    text = lambda cell: re.sub(r" ([:,])", r"\1", " ".join(html_text.unescape(re.sub(r"<[^>]+>", " ", cell)).split()))  # noqa: E731
    return [[text(c) for c in row] for row in cells if row]


def row_of(html, target_file, domain):
    """The one summary row whose target is `target_file` (its file's name) and whose domain is `domain`."""
    found = [r for r in summary_rows(html) if Path(r[0].split(":")[0].split()[0]).name == target_file
             and r[2] == domain]
    assert len(found) == 1, summary_rows(html)
    return found[0]


# --- the summary's rows -------------------------------------------------------------------------------

def test_a_target_spelled_three_ways_is_one_key_from_the_file_verify_recorded(verified):
    reports, runs = verified
    loaded, _ = inputs.load_verify_runs(reports)
    rows = summary.rows(loaded)
    alpha = [r for r in rows if r["target"].endswith("alpha.py:f")]
    beta = [r for r in rows if r["target"].endswith("beta.py:f")]
    assert len(alpha) == 1 and alpha[0]["spellings"] == ["alpha:f", "alpha.py:f"]  # newest first
    assert {r["domain"] for r in beta} == {"full", "dtypes=('bf16',)"}
    assert {tuple(r["spellings"]) for r in beta} == {("beta.py:f",), ("./beta.py:f",)}
    source = runs["alpha complete"]["results"][0]["source"]
    assert alpha[0]["key"] == ("file", source, "f") and not alpha[0]["unresolved"]


def test_a_newer_partial_run_that_failed_never_replaces_the_complete_pass(page, verified):
    _, runs = verified
    target, contract, domain, layout, device, verdict, complete, partial, _ = row_of(page, "alpha.py", "full")
    assert (contract, layout, device, verdict) == ("dequantizer", "canonical", "cpu", "PASS")
    assert complete.startswith(f"PASS in {runs['alpha complete']['run_id']}")
    assert partial.startswith(f"FAIL in {runs['alpha partial']['run_id']}: large tier and probes skipped")


def test_a_narrow_run_that_passed_never_hides_the_wider_failure(page, verified):
    _, runs = verified
    wide, narrow = row_of(page, "beta.py", "full"), row_of(page, "beta.py", "dtypes=('bf16',)")
    assert wide[5] == "FAIL" and wide[6] == f"FAIL in {runs['beta wide']['run_id']}"
    assert narrow[5] == "PASS" and narrow[6].startswith(f"PASS in {runs['beta narrow']['run_id']}")


def test_every_run_is_listed_in_the_table_of_runs_even_past_the_detail_cap(verified, tmp_path):
    reports, runs = verified
    html = build_report(reports, tmp_path / "page.html", caps=Caps(runs=1)).read_text()
    table = section(html, "verification").split(f"<h3>Every run ({len(runs)})</h3>")[1].split("</table>")[0]
    assert all(f"<code>{run['run_id']}</code>" in table for run in runs.values())
    assert f"{len(runs) - 1} older run(s) not shown in detail" in html


# --- the numbers of the error tables ----------------------------------------------------------------

def error_rows(html, run_id):
    """The error table of the panel of run `run_id`: {(dtype, granularity): [cell texts]}."""
    errors = section(html, "error")
    panel = errors[errors.index(f"run {run_id}"):]
    table = panel[panel.index("<table>"):panel.index("</table>")]
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]:
        cells = [" ".join(html_text.unescape(re.sub(r"<[^>]+>", " ", c)).split())
                 for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        rows[(cells[0], cells[1])] = cells
    return rows


def test_infinite_error_over_allowed_is_shown_as_inf_and_counted_never_dropped(page, verified):
    _, runs = verified
    result = runs["beta wide"]["results"][0]
    recorded = {(s["dtype"], s["granularity"]): s for s in result["samples"]}
    infinite = {k: sum(r == float("inf") for r in s["ratio"]) for k, s in recorded.items()}
    assert any(infinite.values()), "the failing fp16 case recorded no infinite ratio"
    rows = error_rows(page, runs["beta wide"]["run_id"])
    assert set(rows) == set(recorded)
    for key, cells in rows.items():
        assert cells[8] == str(infinite[key])  # the inf column: the recorded count
        if infinite[key]:
            assert cells[5] == "inf" and cells[6] != "–"  # max error / allowed: inf, never 0 or dropped


def test_share_at_zero_agrees_with_max_ulps_for_a_dequantizer(page, verified):
    _, runs = verified
    between = 0
    for name in ("beta wide", "alpha complete", "beta narrow"):
        for (dtype, granularity), cells in error_rows(page, runs[name]["run_id"]).items():
            at_zero, sampled = map(int, re.match(r"(\d+) of (\d+)", cells[7]).groups())
            assert (at_zero == sampled) == (cells[4] == "0"), (name, dtype, granularity, cells)  # max ulps 0 iff all 0
            assert ("100.0%" in cells[7]) == (at_zero == sampled) and ("(0.0%)" in cells[7]) == (at_zero == 0)
            between += 0 < at_zero < sampled
    assert between, "no sample held elements both at 0 and away from it: the rule was not exercised"


def test_a_share_is_never_rounded_to_all_or_none():
    assert fmt_share(2047, 2048) == "2047 of 2048 (>99.9%)" and fmt_share(1, 4096) == "1 of 4096 (<0.1%)"
    assert fmt_share(2048, 2048) == "2048 of 2048 (100.0%)" and fmt_share(0, 7) == "0 of 7 (0.0%)"


def test_a_usage_error_of_this_version_is_not_called_an_older_schema(page, verified):
    _, runs = verified
    usage = runs["usage"]
    assert usage["status"] == "usage error" and usage["schema"] == 2
    assert "older schema" not in page and f"verify/{usage['run_id']}.json: fields missing" not in page
    assert "USAGE ERROR" in section(page, "verification")


def test_a_target_with_no_source_file_is_keyed_by_the_runs_recorded_folder(page, verified):
    _, runs = verified
    assert all("source" not in runs[s]["results"][0] for s in ("gone.py:f", "./gone.py:f"))  # it never imported
    (row,) = [r for r in summary_rows(page) if "gone.py:f" in r[0]]
    assert row[0].startswith(f"{runs['gone.py:f']['cwd']}/gone.py:f") and "unresolved" not in row[0]
    assert row[5] == "FAIL" and row[6] == f"FAIL in {runs['./gone.py:f']['run_id']}"


def test_without_a_recorded_folder_a_relative_spelling_is_kept_apart_and_marked_unresolved(verified, tmp_path):
    _, runs = verified
    (tmp_path / "verify").mkdir()
    for spelling in ("gone.py:f", "./gone.py:f"):  # as verify wrote them before it recorded `cwd`
        older = {k: v for k, v in runs[spelling].items() if k != "cwd"}
        (tmp_path / "verify" / f"{older['run_id']}.json").write_text(json.dumps(older))
    (row,) = summary_rows(build_report(tmp_path).read_text())
    assert row[0].startswith("gone.py:f third-party") and "unresolved: a relative file and no folder" in row[0]


# --- a linear in fp32, and several folders -------------------------------------------------------------

@pytest.fixture(scope="module")
def linear_fp32(tmp_path_factory):
    """(reports folder, verdict) of a tiny --no-large-tier run of a correct linear on fp32 inputs only."""
    reports = tmp_path_factory.mktemp("linear")
    code, verdict = verify(reports, "--linear", "planted.bugs:correct_linear_gathered", "--dtypes", "fp32",
                           "--no-large-tier", *TINY)
    assert code == 0, verdict["results"]
    return reports, verdict


def test_an_fp32_linear_row_says_only_error_over_allowed_counts_there(linear_fp32):
    reports, verdict = linear_fp32
    rows = error_rows(build_report(reports).read_text(), verdict["run_id"])
    assert rows and all(dtype == "fp32" for dtype, _ in rows)
    for cells in rows.values():
        assert "not judged: only error / allowed counts in fp32" in cells[4]
        assert float(cells[5]) <= 1  # what counts: error / allowed within the bound


def test_the_report_reads_several_folders_and_a_copied_run_once(verified, linear_fp32, tmp_path, capsys):
    (alpha_dequantizer, runs), (linear, verdict) = verified, linear_fp32
    copy = tmp_path / "copy"
    (copy / "verify").mkdir(parents=True)
    original = alpha_dequantizer / "verify" / f"{runs['alpha complete']['run_id']}.json"
    (copy / "verify" / original.name).write_bytes(original.read_bytes())
    args = report_cli.add_arguments(argparse.ArgumentParser()).parse_args(
        ["--reports", str(alpha_dequantizer), str(linear), str(copy), "--out", str(tmp_path / "page.html")])
    assert report_cli.run(args) == 0 and "report written to" in capsys.readouterr().out
    html = (tmp_path / "page.html").read_text()
    assert len(summary_rows(html)) == len(summary_rows(build_report(alpha_dequantizer, tmp_path / "a.html")
                                                       .read_text())) + 1  # the linear's row added
    assert f"<h3>Every run ({len(runs) + 1})</h3>" in section(html, "verification")
    assert f"{copy / 'verify' / original.name}: run {runs['alpha complete']['run_id']} was read already" in html
