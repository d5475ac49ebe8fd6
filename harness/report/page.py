"""python -m int4_lora_harness report: one self-contained HTML page from the files verify, the benchmarks and
`real-weights` wrote. It only reads: no kernel runs to make it, so the numbers are the ones each verdict recorded.

    python -m int4_lora_harness report                         # reports/ -> reports/index.html
    python -m int4_lora_harness report --compare RUN_A RUN_B   # the two benchmark runs the comparison shows

The page is templates/report.html.j2 filled from small modules, one per concern: inputs (finding and
reading the files; fields and verdicts read a verdict file field by field), verification (verdicts per
candidate and run), accuracy (the recorded error samples), performance and comparison (benchmark rows
and the noise model), memory (from shapes), fmt (how numbers are written). Charts (charts.py) are
matplotlib figures as inline SVG: no JavaScript and no network, the file opens offline.

A missing, old or broken input becomes a line in the page naming the file and what could not be read,
and the rest renders. Every table and list is capped (Caps); the page says what it left out.
"""
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import jinja2

from int4_lora_harness import __version__
from int4_lora_harness.report import accuracy, comparison, inputs, memory, performance, verification
from int4_lora_harness.report.charts import BACKEND_COLOURS, memory_chart
from int4_lora_harness.report.comparison import REGRESSION_THRESHOLD
from int4_lora_harness.report.fmt import FILTERS
from int4_lora_harness.report.performance import UnknownRun  # noqa: F401  (raised by build_report)

TEMPLATES = Path(__file__).parent / "templates"


@dataclasses.dataclass(frozen=True)
class Caps:
    """How much the page shows at most; what is left out is counted in the page. 20,000 results gave a 22.8 MB
    page before these: each result block is ~1-3 KB, a table row ~0.3 KB, a chart 50-150 KB."""
    runs: int = 20  # verify runs shown in detail (newest first)
    results: int = 50  # result blocks per run
    rows: int = 500  # rows per table (overall verdicts, benchmark tables, comparison)
    charts: int = 12  # error-sample charts (one per latest candidate and contract)


def harness_line():
    """'int4-lora-harness 0.2.0, commit abc1234' (the commit only when this code is in a git checkout)."""
    from int4_lora_harness.bench.devices import git_state
    commit, dirty = git_state()
    if commit == "unknown":
        return f"int4-lora-harness {__version__}"
    return f"int4-lora-harness {__version__}, commit {commit[:10]}{' (uncommitted changes)' if dirty else ''}"


def todos(runs, bench, want_performance):
    """Notes on what else could go on the page, only where they apply."""
    notes = []
    if not runs:
        notes.append("verify a kernel: `python -m int4_lora_harness verify --linear module:function` "
                     "(or --dequantizer) writes REPORTS/verify/<run-id>.json")
    if want_performance and bench.empty:
        notes.append("no benchmark runs yet: `tox -e bench` (or `pytest benchmarks --benchmark-only`) writes "
                     "REPORTS/bench/<run-id>.parquet")
    return notes


def render(context):
    """The page's HTML from the template and `context`."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(FILTERS)
    return env.get_template("report.html.j2").render(**context)


def build_report(reports_dir="reports", out=None, run=None, run_a=None, run_b=None, threshold=REGRESSION_THRESHOLD,
                 want_performance=None, real_weights=None, caps=Caps()):
    """Write the page and return its path (default reports_dir/index.html).

    reports_dir: holds verify/*.json (or verify.json), bench/*.parquet, real_weights.json and power.json; run: the
    benchmark run the performance section shows (default the latest); run_a, run_b: the runs the comparison
    shows (default the newest two on one device); threshold: the fraction slower worth a flag;
    want_performance: show the performance, memory and comparison sections (default: when there are
    benchmark runs); real_weights: the real-weights file (default reports_dir/real_weights.json).
    UnknownRun for a run id given that no benchmark file holds (before anything is written).
    """
    reports_dir = Path(reports_dir)
    out = Path(out) if out else reports_dir / "index.html"
    runs, notes = inputs.load_verify_runs(reports_dir)
    bench, bench_notes = inputs.load_bench(reports_dir / "bench", reports_dir)
    real_path = Path(real_weights) if real_weights else reports_dir / "real_weights.json"
    real, real_notes = inputs.load_real_weights(real_path, real_path.parent if real_weights else reports_dir)
    power, power_notes = inputs.load_power(reports_dir / "power.json", reports_dir)
    show_performance = (not bench.empty) if want_performance is None else want_performance
    perf = performance.performance(bench, run, caps.rows) if show_performance else None
    compared, compare_notes = (comparison.compare_section(bench, run_a, run_b, threshold, caps.rows)
                               if show_performance else (None, []))
    overall, overall_left_out = verification.overall(runs, caps.rows)
    sections, runs_left_out = verification.run_sections(runs, reports_dir, out.parent, caps.runs, caps.results)
    panels, panels_left_out = accuracy.accuracy_panels(runs, caps.charts)
    per_layer = memory.memory_per_layer()
    html = render(dict(
        generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"), harness=harness_line(), reports_dir=str(reports_dir),
        problems=notes + bench_notes + real_notes + power_notes + compare_notes, power=power,
        todos=todos(runs, bench, show_performance), runs=sections, runs_left_out=runs_left_out,
        overall=overall, overall_left_out=overall_left_out, panels=panels, panels_left_out=panels_left_out,
        real=real, real_path=str(real_path), show_performance=show_performance, perf=perf,
        bench_runs=performance.run_table(bench).head(caps.rows).to_dict("records"), baseline=performance.BASELINE,
        compared=compared, colours=BACKEND_COLOURS, caps=caps,
        memory_layers=per_layer.to_dict("records"), memory_models=memory.memory_per_model().to_dict("records"),
        memory_svg=memory_chart(per_layer) if show_performance else None, models=memory.MODELS,
        group_size=memory.MEMORY_GROUP_SIZE))
    write_page(out, html)
    return out


def write_page(out, html):
    """Write `html` to `out` through a new file beside it and os.replace: a link planted at `out` is replaced,
    never followed (the page never writes outside its folder), and a reader never sees half a page."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=out.parent, prefix=f".{out.name}.", suffix=".tmp",
                                     delete=False) as temp:
        temp.write(html)
    try:
        os.chmod(temp.name, 0o644)  # as a plain write would leave it (the temp file is 0600)
        os.replace(temp.name, out)
    finally:
        if os.path.exists(temp.name):
            os.unlink(temp.name)
