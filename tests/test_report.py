"""The report's data preparation, and the page it writes from a small synthetic run (and from nothing).

Synthetic inputs: a verify.json with a passing backend, a failing linear with its repro
and a third-party dequantizer; benchmark runs whose numbers are chosen so that speedups,
LoRA overheads and regressions are known exactly.
"""
import argparse
import datetime
import json
import re

import numpy as np
import pandas as pd
import pytest

from int4_lora_harness.bench import store as perf_store
from int4_lora_harness.report import cli as report_cli
from int4_lora_harness.report import page as report
from int4_lora_harness.shapes import LAYER_SHAPES

PROPERTY_NAMES = ["shape, dtype and device", "within tolerance", "inputs unchanged", "deterministic",
                  "tracks input updates"]
WORST = dict(index=[0, 14], expected=-0.1453857421875, got=-0.144775390625, ulps=5.0, allowed=1.0, ratio=5.0,
             design="correctly rounded")
# Seconds per call of the synthetic runs: the INT4 path beats dense 2x on the base and pays 25 % for LoRA.
DENSE_S, TORCH_S, LORA_FACTOR = 2e-4, 1e-4, 1.25


def _result(candidate, contract, failed=(), repro=None):
    lines = [dict(name=n, passed=n not in failed, cases=12, message="worst element ..." if n in failed else "")
             for n in PROPERTY_NAMES]
    failure = None
    if failed:
        failure = dict(case=dict(out_features=1, in_features=1024, scales="fp32 [1]", zero_points=None,
                                 group_size=None, output_dtype="fp16"), raised=None, worst=WORST, failed=list(failed))
    result = dict(contract=contract, device="cpu", domain=["full"], seed=0, max_examples=12, fuzzed_cases=12,
                  large_tier=[] if failed else [dict(shape="llama3-8b.q_proj", passed=True, max_ratio=1.5e-4)],
                  properties=lines, failure=failure, passed=not failed, seconds=1.5, candidate=candidate)
    if repro:
        result["repro"] = repro
    if candidate == "theirs:deq":
        result["checkpoint"] = [dict(shape="model.layers.0.mlp.down_proj", passed=True, max_ratio=0.0)]
    return result


def synthetic_verify(repro=None):
    """torch passes both contracts; 'mine.py:linear' fails within tolerance; 'theirs:deq' passes."""
    return dict(generated="2025-01-01T00:00:00", device="cpu", profile="ci", examples=12, seed=0, torch="2.x",
                results=[_result("torch", "dequantizer"), _result("torch", "linear"),
                         _result("mine.py:linear", "linear", failed=["within tolerance"], repro=repro),
                         _result("theirs:deq", "dequantizer")])


def synthetic_rows(run_id, slower=1.0, device="Test GPU", day=1):
    """Rows of perf_store.SCHEMA: torch and dense on two layers, M = 1 and 16, gemm and gemm_lora.

    torch takes TORCH_S (x LORA_FACTOR with adapters, x `slower`), dense DENSE_S (x LORA_FACTOR);
    torch also has one dequantize row. Peaks: 1000 GB/s, 100 TFLOP/s.
    """
    start = datetime.datetime(2025, 1, day, tzinfo=datetime.timezone.utc)
    rows = []
    for layer in ("llama3-8b.q_proj", "llama3-8b.k_proj"):
        n, k = LAYER_SHAPES[layer]
        for backend, base in (("torch", TORCH_S * slower), ("dense", DENSE_S)):
            for operation in ("dequantize", "gemm", "gemm_lora"):
                if operation == "dequantize" and backend == "dense":
                    continue
                for m in ((None,) if operation == "dequantize" else (1, 16)):
                    lora = operation == "gemm_lora"
                    rows.append(perf_store.with_rates(dict(
                        run_id=run_id, timestamp=start, git_commit="abc123", git_dirty=False, host="h",
                        device_name=device, torch_version="2.x", triton_version="3.x", grid="synthetic",
                        test_id=f"{backend}-{operation}-{layer}-{m}", backend=backend, operation=operation,
                        layer=layer, m=m, n=n, k=k, group_size=128, scale_granularity="grouped",
                        zero_granularity="grouped", rank=16 if lora else 0, num_loras=4 if lora else 0,
                        popularity="uniform" if lora else "none", dtype="fp16", cache_mode="warm", verified_m=m,
                        verification="passed 5 properties", timer="cuda events",
                        median_s=base * (LORA_FACTOR if lora else 1.0), iqr_s=1e-6, min_s=base, rounds=50,
                        bytes_moved=n * k // 2 + 2 * (m or 1) * (n + k), flops=2 * (m or 1) * n * k,
                        peak_gbps=1000.0, peak_tflops=100.0, peak_source="datasheet", packed_weight_bytes=n * k // 2,
                        fp16_weight_bytes=2 * n * k, peak_memory_bytes=float("nan"))))
    return rows


RUN_A, RUN_B = "20250101T000000Z-aaaaaa", "20250102T000000Z-bbbbbb"


def write_bench(folder, runs=((RUN_A, 1.0, 1), (RUN_B, 1.3, 2))):
    for run_id, slower, day in runs:
        perf_store.write_rows(synthetic_rows(run_id, slower, day=day), folder / "bench" / f"{run_id}.parquet")


@pytest.fixture(scope="module")
def full_page(tmp_path_factory):
    """(folder, html) of a report built from the synthetic verify.json and two runs, error samples included."""
    folder = tmp_path_factory.mktemp("reports")
    (folder / "repro_mine.py").write_text("print('repro')\n")
    (folder / "verify.json").write_text(json.dumps(synthetic_verify(repro=str(folder / "repro_mine.py"))))
    write_bench(folder)
    page = report.build_report(folder)
    return folder, page.read_text()


def section(html, name):
    """The HTML of <section id=name>."""
    match = re.search(rf'<section id="{name}">(.*?)</section>', html, re.S)
    assert match, f"section {name} missing"
    return re.sub(r">\s+<", "><", match.group(1))  # the template's line breaks between tags do not matter


# --- data preparation -------------------------------------------------------------------------------

def test_layer_bytes_count_nibbles_and_one_fp16_scale_per_group_of_128():
    assert report.layer_bytes(4096, 4096) == (4096 * 2048 + 4096 * 32 * 2, 4096 * 4096 * 2)
    assert report.layer_bytes(4672, 4544)[0] == 4672 * 2272 + 4672 * 36 * 2  # 35.5 groups: the last is ragged


def test_model_presets_agree_with_the_layer_shapes():
    from int4_lora_harness.shapes import MODELS
    for name, shape in LAYER_SHAPES.items():
        model, projection = name.split(".")
        assert MODELS[model][1][projection] == shape, name


def test_memory_per_model_sums_every_linear_layer_of_every_block():
    models = report.memory_per_model().set_index("model")
    per_block = 2 * 4096 * 4096 + 2 * 1024 * 4096 + 3 * 14336 * 4096
    assert models.loc["llama3-8b", "fp16_bytes"] == 32 * 2 * per_block
    assert models.loc["llama3-8b", "packed_bytes"] == 32 * (per_block // 2 + per_block // 128 * 2)
    packed = 32 * (per_block // 2 + per_block // 128 * 2)
    assert models.loc["llama3-8b", "materialized_cached"] == packed + 32 * 2 * per_block
    layers = report.memory_per_layer().set_index("layer")
    assert layers.loc["llama3-8b.q_proj", "ratio"] == pytest.approx(2 * 4096 * 4096 / (4096 * 2048 + 4096 * 32 * 2))


def test_a_candidate_fails_overall_when_any_contract_fails_and_unrun_backends_say_so():
    table = report.verdicts(synthetic_verify(), backends=("torch", "triton"))
    assert table.set_index(["candidate", "contract"])["kind"].to_dict() == {
        ("torch", "dequantizer"): "backend", ("torch", "linear"): "backend",
        ("mine.py:linear", "linear"): "third-party", ("theirs:deq", "dequantizer"): "third-party"}
    overall = report.overall_verdicts(table, ("torch", "triton")).set_index("candidate")["verdict"].to_dict()
    assert overall == {"torch": "PASS", "mine.py:linear": "FAIL", "theirs:deq": "PASS", "triton": "NOT RUN"}


def test_load_verify_names_a_missing_a_corrupt_and_a_shapeless_file(tmp_path):
    verify, problems = report.load_verify(tmp_path / "verify.json")
    assert verify is None and "does not exist" in problems[0]
    (tmp_path / "verify.json").write_text('{"results": [')
    verify, problems = report.load_verify(tmp_path / "verify.json")
    assert verify is None and "not readable JSON" in problems[0] and "verify.json" in problems[0]
    (tmp_path / "verify.json").write_text('[1, 2]')
    verify, problems = report.load_verify(tmp_path / "verify.json")
    assert verify is None and "no 'results' list" in problems[0]


def test_load_bench_skips_and_names_a_corrupt_parquet_file(tmp_path):
    write_bench(tmp_path, runs=((RUN_A, 1.0, 1),))
    (tmp_path / "bench" / "broken.parquet").write_bytes(b"not a parquet file")
    bench, problems = report.load_bench(tmp_path / "bench")
    assert set(bench["run_id"]) == {RUN_A}
    assert len(problems) == 1 and "broken.parquet" in problems[0]


def test_speedup_is_the_dense_median_over_the_backend_median_on_the_same_case():
    rows = pd.DataFrame(synthetic_rows(RUN_A))
    speedups = report.speedup_vs_dense(rows)
    assert set(speedups["backend"]) == {"torch"} and set(speedups["operation"]) == {"gemm", "gemm_lora"}
    assert len(speedups) == 8 and np.allclose(speedups["speedup"], DENSE_S / TORCH_S)


def test_lora_overhead_compares_gemm_lora_with_the_same_backends_gemm():
    overheads = report.lora_overhead(pd.DataFrame(synthetic_rows(RUN_A)))
    assert len(overheads) == 8 and np.allclose(overheads["overhead"], LORA_FACTOR - 1)


def test_headline_keeps_the_preferred_values_or_else_the_most_common():
    rows = pd.DataFrame(synthetic_rows(RUN_A))
    rows.loc[rows.index[:3], "dtype"] = "bf16"
    kept, chosen = report.headline(rows)
    assert chosen["dtype"] == "fp16" and (kept["dtype"] == "fp16").all()
    rows["cache_mode"] = "cold"  # the preferred 'warm' is absent: the most common value is taken
    _, chosen = report.headline(rows)
    assert chosen["cache_mode"] == "cold"


def test_pick_runs_takes_the_newest_two_on_one_device():
    bench = pd.DataFrame(synthetic_rows("r1", day=1) + synthetic_rows("r2", day=2) + synthetic_rows("r3", day=3)
                         + synthetic_rows("other", device="Other GPU", day=4))
    assert report.pick_runs(bench) == ("r2", "r3")
    assert report.pick_runs(bench, "r1", "r3") == ("r1", "r3")
    assert report.pick_runs(pd.DataFrame(synthetic_rows("r1"))) is None
    with pytest.raises(ValueError, match="nope"):
        report.pick_runs(bench, "r1", "nope")


def test_comparison_flags_cases_slower_than_the_threshold_as_regressions():
    bench = pd.DataFrame(synthetic_rows(RUN_A) + synthetic_rows(RUN_B, slower=1.3, day=2))
    compared = report.comparison(bench, RUN_A, RUN_B, threshold=0.10)
    verdicts = compared.groupby("backend")["verdict"].agg(set).to_dict()
    assert verdicts == {"torch": {"regression"}, "dense": {"same"}}
    assert np.allclose(compared.loc[compared["backend"] == "torch", "time_ratio"], 1.3)
    assert (report.comparison(bench, RUN_A, RUN_B, threshold=0.5)["verdict"] == "same").all()


def test_a_slowdown_within_the_runs_spread_is_noise_not_a_regression():
    bench = pd.DataFrame(synthetic_rows(RUN_A) + synthetic_rows(RUN_B, slower=1.3, day=2))
    bench["iqr_s"] = bench["median_s"]  # timings as spread out as they are long
    verdicts = set(report.comparison(bench, RUN_A, RUN_B, threshold=0.10)["verdict"])
    assert verdicts == {"noise", "same"}


def test_error_samples_of_the_torch_path_stay_within_their_bounds():
    from int4_lora_harness.kernels.registry import BACKENDS
    samples, problems = report.error_samples({"torch": BACKENDS["torch"]})
    assert problems == []
    assert list(samples.columns) == ["backend", "contract", "dtype", "granularity", "ulps", "ratio"]
    summary = report.error_summary(samples)
    assert len(summary) == 2 * 3 * 3  # contracts x dtypes x granularities
    assert (summary["max_ratio"] <= 1).all()
    dequant = summary[summary["contract"] == "dequantizer"]
    assert (dequant["max_ulps"] == 0).all()  # the torch path rounds once: correctly rounded everywhere
    assert (dequant["elements"] == np.prod(report.ERROR_DEQUANT_SHAPE)).all()


def test_a_backend_that_raises_is_named_not_fatal():
    class Broken:
        def dequantize(self, **kwargs):
            raise RuntimeError("no kernel for this")
        linear = dequantize
    samples, problems = report.error_samples({"broken": Broken()}, dtypes=("fp16",), granularities=("grouped",))
    assert samples.empty and len(problems) == 2 and "no kernel for this" in problems[0]


# --- the page -------------------------------------------------------------------------------------

def test_every_section_is_there_in_order(full_page):
    _, html = full_page
    ids = re.findall(r'<section id="([a-z]+)">', html)
    assert ids == ["summary", "verification", "error", "performance", "memory", "comparison"]


def test_the_page_is_one_offline_file_under_10_mb(full_page):
    folder, html = full_page
    assert len(html.encode()) < 10_000_000
    assert "<script" not in html and "<link" not in html and "@import" not in html
    links = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert all(link.startswith("#") or link == "repro_mine.py" for link in links), links
    outside = set(re.findall(r"https?://[^\s\"'<>)]+", html))
    assert outside <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink",
                       "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd"}  # XML namespace names, never fetched
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids))  # six inline SVGs, no id twice


def test_the_summary_gives_an_overall_verdict_per_backend_and_third_party(full_page):
    summary = section(full_page[1], "summary")
    for candidate, badge in (("torch", "PASS"), ("mine.py:linear", "FAIL"), ("theirs:deq", "PASS"),
                             ("triton", "NOTRUN")):
        assert re.search(rf"<code>{re.escape(candidate)}</code>.*?badge {badge}", summary, re.S), candidate
    assert "profile ci (12 fuzzed cases per contract)" in summary
    assert "2 run(s), 36 rows, on Test GPU" in summary


def test_the_verification_section_shows_the_failure_its_worst_element_and_repro(full_page):
    verification = section(full_page[1], "verification")
    assert verification.count("<h3>") == 4
    assert verification.count('<td class="n">12</td>') == 4 * 5  # 5 properties x 4 results, 12 cases each
    failed = verification[verification.index("mine.py:linear"):]
    assert re.search(r"within tolerance</td><td class=\"FAIL\">FAIL", failed)
    assert "&#34;in_features&#34;: 1024" in failed  # the minimal case, escaped JSON
    assert "-0.1453857421875" in failed and "-0.144775390625" in failed  # the worst element
    assert '<a href="repro_mine.py">' in failed
    assert "<td>large tier</td><td>llama3-8b.q_proj</td>" in verification and "0.00015" in verification
    assert "<td>checkpoint layer</td><td>model.layers.0.mlp.down_proj</td>" in verification


def test_the_error_section_has_both_histograms_and_a_row_per_case(full_page):
    errors = section(full_page[1], "error")
    assert errors.count("<svg") == 2
    assert errors.count("<tr><td>torch</td>") == 18


def test_the_performance_section_has_its_charts_and_exact_numbers(full_page):
    perf = section(full_page[1], "performance")
    assert perf.count("<svg") == 4  # latency, speedup, roofline, LoRA overhead
    assert f"Run <code>{RUN_B}</code> on Test GPU" in perf
    assert perf.count('<td class="n">1.54×</td>') == 8  # run B: DENSE_S / (1.3 TORCH_S), 2 layers x 2 M x 2 ops
    assert perf.count('<td class="n">+25.0%</td>') == 8  # torch and dense, 2 layers x 2 M


def test_the_memory_section_has_packed_and_fp16_bytes_per_layer_and_model(full_page):
    memory = section(full_page[1], "memory")
    assert re.search(r"llama3-8b.q_proj</td><td class=\"n\">4096 × 4096</td><td class=\"n\">8.25 MiB</td>"
                     r"<td class=\"n\">32 MiB</td><td class=\"n\">3.88×", memory)
    assert "llama3-70b" in memory and "falcon-7b" in memory and "<svg" in memory


def test_the_comparison_highlights_regressions(full_page):
    comparison = section(full_page[1], "comparison")
    assert f"<code>{RUN_A}</code> (older, A) against <code>{RUN_B}</code>" in comparison
    assert "18 cases in both" in comparison and "10 regression(s)" in comparison  # every torch case is 1.3x slower
    assert comparison.count('<tr class="regression">') == 10 and comparison.count('<tr class="same">') == 8


def test_no_inputs_give_a_page_saying_what_is_missing(tmp_path):
    html = report.build_report(tmp_path / "nothing", errors=False).read_text()
    assert "verify.json does not exist" in html and "bench does not exist" in html
    assert "No benchmark runs" in html and "No verification results" in html and "No error samples" in html
    assert "Traceback" not in html and "<svg" in html  # the memory section needs no input


def test_corrupt_inputs_are_named_and_skipped(tmp_path):
    (tmp_path / "verify.json").write_text("{ not json")
    write_bench(tmp_path, runs=((RUN_A, 1.0, 1),))
    (tmp_path / "bench" / "zz-truncated.parquet").write_bytes(b"PAR1\x00\x01")
    html = report.build_report(tmp_path, errors=False).read_text()
    problems = html[html.index('class="problems"'):]
    assert "verify.json is not readable JSON" in problems and "zz-truncated.parquet" in problems
    assert f"Run <code>{RUN_A}</code>" in html  # the good run is still shown
    assert "needs two benchmark runs on the same device; found 1 run(s)" in html


def test_the_command_line_writes_the_page(tmp_path, capsys):
    write_bench(tmp_path)
    args = report_cli.add_arguments(argparse.ArgumentParser()).parse_args(
        ["--reports", str(tmp_path), "--out", str(tmp_path / "page.html"), "--no-error-samples",
         "--compare", RUN_B, RUN_A, "--threshold", "0.5"])
    assert report_cli.run(args) == 0
    html = (tmp_path / "page.html").read_text()
    assert f"<code>{RUN_B}</code> (older, A)" in html and "0 regression(s)" in html
    assert "report written to" in capsys.readouterr().out


@pytest.mark.parametrize("flags", [["--run", "no-such-run"], ["--compare", RUN_A, "no-such-run"]])
def test_an_unknown_run_id_is_a_usage_error_and_writes_no_page(tmp_path, capsys, flags):
    write_bench(tmp_path)
    args = report_cli.add_arguments(argparse.ArgumentParser()).parse_args(
        ["--reports", str(tmp_path), "--no-error-samples", *flags])
    assert report_cli.run(args) == 2
    err = capsys.readouterr().err
    assert "no benchmark run 'no-such-run'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "index.html").exists()


def test_long_tables_are_cut_and_say_so(tmp_path, monkeypatch):
    write_bench(tmp_path)
    monkeypatch.setattr(report, "MAX_TABLE_ROWS", 5)
    html = report.build_report(tmp_path, errors=False).read_text()
    comparison = section(html, "comparison")
    assert comparison.count("<tr class=") == 5 and "13 more rows not shown" in comparison  # 18 cases in both
