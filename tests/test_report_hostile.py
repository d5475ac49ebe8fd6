"""The report against files planted to attack it: the page reads only regular files inside the reports folder,
each up to its cap, links only to files inside it, draws data as literal text, and caps what it draws.

Each test plants one attack that worked on the page before (a `javascript:` repro, a `$...$` dtype, a FIFO,
300 dtypes, ...) and checks the page is written, says what it left out and why, and that the hostile
content is inert in the HTML. A planted hang would stop the test run rather than fail it, so those tests
run under `no_hang`: past its deadline the test fails (the deadline bounds a hang, it times nothing).
"""
import contextlib
import json
import os
import re
import signal

import pytest
from test_report import RUN_A, result, section, synthetic_rows, verdict_file

from int4_lora_harness.bench import store as perf_store
from int4_lora_harness.report import accuracy, charts, files
from int4_lora_harness.report.charts import MAX_SAMPLE_KINDS
from int4_lora_harness.report.page import build_report

RUN = "20261201T120000Z-dddddd"
HANG_DEADLINE_S = 120  # far past the few seconds these pages take: only a hang reaches it


@contextlib.contextmanager
def no_hang(seconds=HANG_DEADLINE_S):
    """Fail the test (TimeoutError) when its body is still running after `seconds`: a blocked open() or a
    chart that draws for minutes is interrupted instead of holding the test run."""
    def interrupt(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: the page hung")
    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def plant(folder, results, name=f"{RUN}.json", **changes):
    """A verdict file of `results` in folder/verify."""
    (folder / "verify").mkdir(parents=True, exist_ok=True)
    path = folder / "verify" / name
    path.write_text(json.dumps(verdict_file(RUN, results, **changes)))
    return path


def links(html):
    """Every href and src of the page."""
    return re.findall(r'(?:href|src)\s*=\s*["\']([^"\']*)["\']', html, re.I)


def assert_links_stay_in_the_folder(html):
    """Each link is an anchor, or a relative path with no scheme, no leading '/' and no '..'."""
    for link in links(html):
        if link.startswith("#"):
            continue
        assert ":" not in link and not link.startswith(("/", "\\")), link
        assert ".." not in link.split("/"), link


def svgs(html):
    return re.findall(r"<svg.*?</svg>", html, re.S)


def panels(svg):
    """How many axes (panels) a chart drew."""
    return len(re.findall(r'<g id="[^"]*-axes_\d+"', svg))


# --- files that are not regular files inside the folder ------------------------------------------------------

def test_a_fifo_in_verify_is_named_and_never_opened(tmp_path):
    plant(tmp_path, [result("c:f", "linear")])
    os.mkfifo(tmp_path / "verify" / "fifo.json")
    os.mkfifo(tmp_path / "verify.json")
    with no_hang():
        html = build_report(tmp_path).read_text()
    problems = section(html, "summary")
    assert f"{tmp_path / 'verify' / 'fifo.json'}: a FIFO, not a regular file: not read: left out" in problems
    assert f"{tmp_path / 'verify.json'}: a FIFO, not a regular file: not read: left out" in problems
    assert '<span class="badge PASS">PASS</span>' in problems  # the regular file beside them is read


def test_a_fifo_among_the_benchmark_files_is_named_and_never_opened(tmp_path):
    perf_store.write_rows(synthetic_rows(RUN_A), tmp_path / "bench" / f"{RUN_A}.parquet")
    os.mkfifo(tmp_path / "bench" / "fifo.parquet")
    with no_hang():
        html = build_report(tmp_path).read_text()
    assert "fifo.parquet: a FIFO, not a regular file: not read: left out" in section(html, "summary")
    assert f"Run <code>{RUN_A}</code>" in section(html, "performance")


def test_links_out_of_the_folder_are_named_and_never_read(tmp_path):
    reports, outside = tmp_path / "reports", tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.json").write_text(json.dumps(verdict_file(RUN, [result("secret:f", "linear")])))
    (reports / "verify").mkdir(parents=True)
    (reports / "verify" / "secret.json").symlink_to(outside / "secret.json")
    (reports / "verify" / "null.json").symlink_to(os.devnull)  # a device (not /dev/zero: the old page read it whole)
    (reports / "real_weights.json").symlink_to(outside / "secret.json")
    html = build_report(reports).read_text()
    assert "secret:f" not in html
    problems = section(html, "summary")
    for name in ("verify/secret.json", "verify/null.json", "real_weights.json"):
        assert f"{reports / name}: a link out of {reports}" in problems, name


def test_a_verify_folder_that_links_out_is_not_listed(tmp_path):
    reports, outside = tmp_path / "reports", tmp_path / "elsewhere"
    (outside / "verify").mkdir(parents=True)
    (outside / "verify" / f"{RUN}.json").write_text(json.dumps(verdict_file(RUN, [result("secret:f", "linear")])))
    reports.mkdir()
    (reports / "verify").symlink_to(outside / "verify")
    html = build_report(reports).read_text()
    assert "secret:f" not in html
    assert f"{reports / 'verify'}: a link out of {reports} (to {outside / 'verify'}): not read" in html


def test_a_link_planted_at_the_page_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "index.html").symlink_to(victim)
    out = build_report(tmp_path / "reports")
    assert victim.read_text() == "keep me\n"
    assert not out.is_symlink() and "</html>" in out.read_text()


# --- sizes ---------------------------------------------------------------------------------------------

def test_a_verdict_file_past_the_cap_is_named_and_never_read(tmp_path):
    plant(tmp_path, [result("c:f", "linear")])
    huge = tmp_path / "verify" / "huge.json"
    with open(huge, "wb") as f:  # sparse, one byte past the cap: no disk used
        f.truncate(files.MAX_JSON_BYTES + 1)
    html = build_report(tmp_path).read_text()
    assert f"{huge}: {files.MAX_JSON_BYTES + 1} bytes, over the cap of {files.MAX_JSON_BYTES} bytes" in html
    assert '<span class="badge PASS">PASS</span>' in section(html, "summary")


def test_an_integer_of_5000_digits_is_a_note_not_a_crash(tmp_path):
    (tmp_path / "verify").mkdir()
    (tmp_path / "verify" / "digits.json").write_text('{"seed": ' + "9" * 5000 + "}")
    html = build_report(tmp_path).read_text()
    assert "digits.json: not readable JSON (ValueError: Exceeds the limit" in html


def test_a_benchmark_file_declaring_too_many_rows_is_named_and_not_decoded(tmp_path, monkeypatch):
    from int4_lora_harness.report import inputs
    perf_store.write_rows(synthetic_rows(RUN_A), tmp_path / "bench" / f"{RUN_A}.parquet")
    monkeypatch.setattr(inputs, "MAX_BENCH_ROWS", 10)  # the file holds 18 rows
    html = build_report(tmp_path, want_performance=True).read_text()
    assert f"{RUN_A}.parquet: 18 rows" in html and "over the cap of 10 rows" in html
    assert "No benchmark runs" in section(html, "performance")


# --- links --------------------------------------------------------------------------------------------

def test_a_javascript_repro_is_never_a_live_link(tmp_path):
    (tmp_path / "javascript:alert(document.domain)").write_text("print('repro')\n")  # a file of that name exists
    plant(tmp_path, [result("c:f", "linear", failed=["within tolerance"], repro="javascript:alert(document.domain)")])
    html = build_report(tmp_path).read_text()
    assert not re.search(r'href\s*=\s*["\']?\s*javascript:', html, re.I)
    assert_links_stay_in_the_folder(html)
    assert '<a href="javascript%3Aalert%28document.domain%29">' in section(html, "verification")  # a file here


def test_a_repro_outside_the_folder_is_text_not_a_link(tmp_path):
    reports, outside = tmp_path / "reports", tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "repro_evil.py").write_text("import os\n")
    reports.mkdir()
    (reports / "repro_link.py").symlink_to(outside / "repro_evil.py")
    plant(reports, [result("a:f", "linear", failed=["within tolerance"], repro=str(outside / "repro_evil.py")),
                    result("b:f", "linear", failed=["within tolerance"], repro=str(reports / "repro_link.py"))])
    html = build_report(reports).read_text()
    assert_links_stay_in_the_folder(html)
    assert "repro_evil.py" not in "".join(links(html)) and "repro_link.py" not in "".join(links(html))
    assert section(html, "verification").count(f"(outside {reports}: not linked)") == 2


def test_a_repro_is_not_linked_from_a_page_written_outside_the_reports_folder(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "repro_x.py").write_text("print('repro')\n")
    plant(reports, [result("c:f", "linear", failed=["within tolerance"], repro=str(reports / "repro_x.py"))])
    html = build_report(reports, out=tmp_path / "site" / "index.html").read_text()
    assert_links_stay_in_the_folder(html)
    assert "(not below the page&#39;s folder: not linked)" in section(html, "verification")


# --- math text ------------------------------------------------------------------------------------------

DOLLARS = r"$\notacommand{x}$"  # matplotlib's math text raises on it: the page once crashed on this dtype


def test_a_dollar_dtype_is_drawn_as_literal_text(tmp_path):
    sample = dict(dtype=DOLLARS, granularity="$grouped$", elements_seen=4, ulps=[0.0, 1.0], ratio=[0.0, 0.5])
    plant(tmp_path, [result("c:f", "dequantizer", samples=[sample]), result("d:f", "linear", samples=[sample])])
    html = build_report(tmp_path).read_text()
    error = section(html, "error")
    charts = svgs(error)
    assert len(charts) == 2 and "Chart not drawn" not in error
    assert f"dequantizer, {DOLLARS}" in charts[0] and f"linear, {DOLLARS}" in charts[1]  # the panels' titles
    assert all("$grouped$" in chart for chart in charts)  # the legends


def test_a_dollar_backend_and_layer_are_drawn_as_literal_text(tmp_path):
    rows = [{**row, "backend": "$\\oops{$", "layer": "$x^{$"} for row in synthetic_rows(RUN_A)]
    perf_store.write_rows(rows, tmp_path / "bench" / f"{RUN_A}.parquet")
    html = build_report(tmp_path).read_text()
    performance = section(html, "performance")
    assert "$x^{$" in performance and "$\\oops{$ gemm_lora" in performance
    assert len(svgs(performance)) == 3  # latency, roofline, overhead: drawn, with the names as they are


# --- how much is drawn -----------------------------------------------------------------------------------

def test_300_dtypes_draw_at_most_the_panel_cap_and_count_the_rest(tmp_path):
    samples = [dict(dtype=f"dtype{i}", granularity=g, elements_seen=2, ulps=[0.0, 1.0], ratio=[0.0, 0.5])
               for i in range(300) for g in ("grouped", "per-channel")]
    plant(tmp_path, [result("c:f", "dequantizer", samples=samples)])
    with no_hang():
        html = build_report(tmp_path).read_text()
    error = section(html, "error")
    (chart,) = svgs(error)
    assert panels(chart) == MAX_SAMPLE_KINDS
    assert f"{300 - MAX_SAMPLE_KINDS} more dtypes not drawn (at most {MAX_SAMPLE_KINDS} per chart)" in chart
    assert "100 more dtype and granularity rows not shown" in error  # 600 rows, the table keeps 500


def test_many_granularities_draw_at_most_the_series_cap(tmp_path):
    samples = [dict(dtype="fp16", granularity=f"g{i}", elements_seen=2, ulps=[0.0, 1.0], ratio=[0.0, 0.5])
               for i in range(40)]
    plant(tmp_path, [result("c:f", "linear", samples=samples)])
    (chart,) = svgs(section(build_report(tmp_path).read_text(), "error"))
    assert f"{40 - MAX_SAMPLE_KINDS} more granularities not drawn" in chart
    drawn = set(re.findall(r">(g\d+)(?::|<)", chart))  # legend entries and the 'exact' notes
    assert drawn == {f"g{i}" for i in range(MAX_SAMPLE_KINDS)}, drawn


def test_many_backends_and_layers_draw_at_most_the_caps(tmp_path, monkeypatch):
    monkeypatch.setattr(charts, "MAX_PANELS", 3)  # small caps: 24 panels of three charts would take a minute here
    monkeypatch.setattr(charts, "MAX_SERIES", 4)
    rows = [{**row, "backend": f"b{i}", "layer": f"layer{j}", "test_id": f"{row['test_id']}-{i}-{j}"}
            for i in range(5) for j in range(7) for row in synthetic_rows(RUN_A) if row["backend"] == "torch"]
    perf_store.write_rows(rows, tmp_path / "bench" / f"{RUN_A}.parquet")
    performance = section(build_report(tmp_path).read_text(), "performance")
    latency, roofline = svgs(performance)[:2]
    assert panels(latency) == 3 and "4 more layers not drawn (at most 3 per chart)" in latency
    assert "6 more backend and operation pairs not drawn" in latency  # 5 backends x (gemm, gemm_lora)
    assert "11 more backend and operation pairs not drawn" in roofline  # and dequantize


def test_a_chart_matplotlib_cannot_draw_is_named_in_its_place(tmp_path, monkeypatch):
    def broken(samples, title, name):
        raise ValueError("cannot draw this")
    monkeypatch.setattr(accuracy, "ratio_chart", broken)
    plant(tmp_path, [result("c:f", "linear", samples=[dict(dtype="fp16", granularity="grouped", elements_seen=1,
                                                            ulps=[0.0], ratio=[0.0])])])
    error = section(build_report(tmp_path).read_text(), "error")
    assert "Chart not drawn: ValueError: cannot draw this" in error and not svgs(error)
