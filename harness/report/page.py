"""python -m int4_lora_harness report: one self-contained HTML page from the files verify, the benchmarks and
`real-weights` wrote. It only reads: no kernel runs to make it, so the numbers are the ones each verdict recorded.

    python -m int4_lora_harness report                         # reports/ -> reports/index.html
    python -m int4_lora_harness report --reports a b           # several folders (one per verify --report)
    python -m int4_lora_harness report --compare RUN_A RUN_B   # the two benchmark runs (or TARGETs) compared

The page is templates/report.html.j2 filled from small modules, one per concern: inputs (finding and
reading the files; fields and verdicts read a verdict file field by field), targets and summary (one row
per target, contract, domain, layout and device, from its newest complete run; the table of every run),
verification (each run's results), accuracy (the recorded error samples), performance and comparison (benchmark rows
and the noise models: noise.py), memory (from shapes), fmt (how numbers are written). Charts (charts.py) are
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
from int4_lora_harness.report import accuracy, comparison, inputs, memory, performance, summary, verification
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


def first_with(folders, name):
    """The first folder of `folders` holding `name` (the first folder when none does)."""
    return next((f for f in folders if os.path.lexists(f / name)), folders[0])


def build_report(reports_dir="reports", out=None, run=None, run_a=None, run_b=None, threshold=REGRESSION_THRESHOLD,
                 want_performance=None, real_weights=None, caps=Caps()):
    """Write the page and return its path (default: the first folder's index.html).

    reports_dir: a folder, or a list of folders (one per `verify --report` run), each holding verify/*.json (or
    verify.json), bench/*.parquet, real_weights.json and power.json (the last two: from the first folder that has
    one); run: the benchmark run the performance section shows (default the latest); run_a, run_b: the runs
    the comparison shows, each a run id or a TARGET (default the newest two of the same TARGETs on one device);
    threshold: the fraction slower worth a flag; want_performance: show the performance, memory and comparison
    sections (default: when there are benchmark runs); real_weights: the real-weights file (default
    real_weights.json of the first folder with one). UnknownRun for a run id or TARGET given that no benchmark
    file holds (before anything is written).
    """
    folders = inputs.folders_of(reports_dir)
    if not folders:
        raise ValueError("build_report needs at least one reports folder")
    out = Path(out) if out else folders[0] / "index.html"
    runs, notes = inputs.load_verify_runs(folders)
    bench, bench_notes = inputs.load_bench_folders(folders)
    real_root = first_with(folders, "real_weights.json")
    real_path = Path(real_weights) if real_weights else real_root / "real_weights.json"
    real, real_notes = inputs.load_real_weights(real_path, real_path.parent if real_weights else real_root)
    power_root = first_with(folders, "power.json")
    power, power_notes = inputs.load_power(power_root / "power.json", power_root)
    asked = any(name is not None for name in (run, run_a, run_b))  # a run named on the command line is checked
    show_performance = (not bench.empty or asked) if want_performance is None else want_performance
    perf = performance.performance(bench, run, caps.rows) if show_performance else None
    compared, compare_notes = (comparison.compare_section(bench, run_a, run_b, threshold, caps.rows)
                               if show_performance else (None, []))
    rows = summary.rows(runs)
    sections, runs_left_out = verification.run_sections(runs, out.parent, caps.runs, caps.results)
    panels, panels_left_out = accuracy.accuracy_panels(rows, caps.charts)
    per_layer = memory.memory_per_layer()
    html = render(dict(
        generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"), harness=harness_line(),
        reports_dir=", ".join(map(str, folders)),
        problems=notes + bench_notes + real_notes + power_notes + compare_notes, power=power,
        todos=todos(runs, bench, show_performance), runs=sections, runs_left_out=runs_left_out,
        summary_rows=rows[:caps.rows], summary_left_out=max(0, len(rows) - caps.rows),
        unresolved=any(r["unresolved"] for r in rows), all_runs=summary.run_rows(runs), panels=panels,
        panels_left_out=panels_left_out,
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
