"""python -m int4_lora_harness report: one self-contained HTML page from what `verify` and the benchmarks wrote.

    python -m int4_lora_harness report                         # reports/verify.json + bench/*.parquet -> reports/index.html
    python -m int4_lora_harness report --compare RUN_A RUN_B   # the two benchmark runs section 6 compares

The page is harness/templates/report.html.j2 filled with plain tables (made here by small
functions, one DataFrame each) and charts (harness/charts.py). Charts are matplotlib figures
rendered to inline SVG: no JavaScript and no network, so the one file opens offline; vectors
print sharply; and matplotlib is the only plotting dependency.

A missing or unreadable input (no verify.json yet, no benchmark runs, a corrupt parquet or
JSON file) becomes a line in the page naming it, never a traceback.
"""
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from int4_lora_harness.bench import devices
from int4_lora_harness.bench import store as perf_store
from int4_lora_harness.report.charts import memory_chart, ratio_chart, roofline_chart, small_multiples, ulps_chart
from int4_lora_harness.verify.cases import DequantCase, make_linear_case, make_weights
from int4_lora_harness.shapes import LAYER_SHAPES, MODELS
from int4_lora_harness.verify.strategies import DTYPES, GRANULARITIES
from int4_lora_harness.verify.tolerance import dequant_error, linear_error

TEMPLATES = Path(__file__).parent / "templates"
from int4_lora_harness.report.cli import REGRESSION_THRESHOLD
BASELINE = "dense"  # the backend speedups are measured against: weights dequantized ahead of time
MAX_TABLE_ROWS = 2000  # per table: keeps the page under 10 MB whatever the history (~0.3 KB per row)

# The values at which "vs M" charts hold the other axes (when the run has them; else its most common value).
HEADLINE = dict(group_size=128, dtype="fp16", cache_mode="warm", rank=16, num_loras=4, popularity="uniform")
LORA_AXES = ("rank", "num_loras", "popularity")  # only gemm_lora rows vary these

# Section 5. Packed layout of SPEC §1-2 with group size 128 and fp16 scales, no zero points.
MEMORY_GROUP_SIZE = 128
SCALE_BYTES = 2
# Section 3: one seeded case per backend, contract, dtype and granularity. K = 1024 is where
# the accumulation order starts to show; fp32 scales with fractional zero points make every
# dequantized value round, in every output dtype.
ERROR_DEQUANT_SHAPE = (128, 512)  # out, in
ERROR_LINEAR_SHAPE = (32, 256, 1024)  # M, out, in
ERROR_RANK, ERROR_LORAS = 16, 4


# --- inputs ----------------------------------------------------------------------------------------

def load_verify(path):
    """(verdict dict | None, problems): reports/verify.json as `python -m int4_lora_harness verify` wrote it."""
    path = Path(path)
    if not path.is_file():
        return None, [f"no verification results: {path} does not exist (run `python -m int4_lora_harness verify`)"]
    try:
        verify = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, [f"{path} is not readable JSON ({type(error).__name__}: {error}): skipped"]
    if not isinstance(verify, dict) or not isinstance(verify.get("results"), list):
        return None, [f"{path} has no 'results' list: skipped"]
    results = [r for r in verify["results"] if isinstance(r, dict)]
    problems = [f"{path}: {len(verify['results']) - len(results)} result(s) that are not objects skipped"] \
        if len(results) < len(verify["results"]) else []
    return dict(verify, results=results), problems


def load_bench(folder):
    """(every run in `folder` as one DataFrame of perf_store.SCHEMA, problems naming each skipped file)."""
    folder = Path(folder)
    if not folder.is_dir():
        return perf_store.SCHEMA.empty_table().to_pandas(), [
            f"no benchmark runs: {folder} does not exist (run `tox -e bench`)"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # load_runs warns about skipped files; the page names them instead
        df = perf_store.load_runs(folder)
    problems = [f"skipped {skipped}" for skipped in df.attrs.get("skipped_files", [])]
    if df.empty:
        problems.append(f"no benchmark rows in {folder}/*.parquet (run `tox -e bench`)")
    return df, problems


def git_commit():
    """'abc1234' (+ ' (uncommitted changes)') of the checkout holding this code; 'unknown' outside git."""
    commit, dirty = devices.git_state()
    return commit[:7] + (" (uncommitted changes)" if dirty else "")


# --- section 1 and 2: verification ------------------------------------------------------------------

def verdicts(verify, backends=()):
    """One row per verified candidate and contract: candidate, kind, contract, passed, cases, seconds, domain.

    backends: the project's backend names (kernels.registry.BACKENDS); other candidates are
    third-party implementations given to `verify --linear/--dequantizer`.
    """
    rows = [dict(candidate=str(r.get("candidate", "?")), contract=r.get("contract", "?"),
                 kind="backend" if r.get("candidate") in backends else "third-party", passed=bool(r.get("passed")),
                 fuzzed_cases=r.get("fuzzed_cases", 0), large_tier=len(r.get("large_tier") or []),
                 seconds=r.get("seconds"), domain=", ".join(r.get("domain") or ["?"]))
            for r in (verify or {}).get("results", [])]
    return pd.DataFrame(rows, columns=["candidate", "kind", "contract", "passed", "fuzzed_cases", "large_tier",
                                       "seconds", "domain"])


def overall_verdicts(table, backends=()):
    """One row per candidate: PASS if every contract it was verified on passed; backends never run: NOT RUN."""
    rows = [dict(candidate=name, kind=group["kind"].iloc[0], verdict="PASS" if group["passed"].all() else "FAIL",
                 contracts=", ".join(f"{c}: {'PASS' if p else 'FAIL'}" for c, p in zip(group["contract"],
                                                                                   group["passed"])))
            for name, group in table.groupby("candidate", sort=False)]
    rows += [dict(candidate=name, kind="backend", verdict="NOT RUN", contracts="not in verify.json")
             for name in backends if name not in set(table["candidate"])]
    return pd.DataFrame(rows, columns=["candidate", "kind", "verdict", "contracts"])


def repro_link(repro, reports_dir, page_dir):
    """(href relative to the page | None, text) for a result's `repro` path (as verify wrote it)."""
    if not repro:
        return None, None
    path = Path(repro)
    for candidate in (path, Path(reports_dir) / path.name):
        if candidate.is_file():
            return Path(os.path.relpath(candidate.resolve(), Path(page_dir).resolve())).as_posix(), str(repro)
    return None, f"{repro} (file not found)"


def verification_blocks(verify, reports_dir, page_dir):
    """Per result: its verdict, property lines, explicit examples (large tier, checkpoint layers), failure and
    repro link, ready for the template."""
    blocks = []
    for r in (verify or {}).get("results", []):
        href, text = repro_link(r.get("repro"), reports_dir, page_dir)
        failure = r.get("failure") or None
        explicit = [dict(t, kind=kind)  # each: shape, passed, max_ratio
                    for key, kind in (("large_tier", "large tier"), ("checkpoint", "checkpoint layer"))
                    for t in r.get(key) or []]
        blocks.append(dict(candidate=r.get("candidate", "?"), contract=r.get("contract", "?"),
                           passed=bool(r.get("passed")), device=r.get("device", "?"),
                           domain=", ".join(r.get("domain") or ["?"]), seed=r.get("seed"),
                           fuzzed_cases=r.get("fuzzed_cases", 0), seconds=r.get("seconds"),
                           properties=r.get("properties") or [], large_tier=r.get("large_tier") or [],
                           large_tier_skipped=r.get("large_tier_skipped"), explicit=explicit,
                           failure=failure, case_json=json.dumps(failure.get("case"), indent=1) if failure else "",
                           batch_invariance=r.get("batch_invariance"), repro_href=href, repro_text=text))
    return blocks


# --- section 3: numerical error ---------------------------------------------------------------------

def _dequant_samples(backend, dtype, granularity, device, seed):
    w = make_weights(np.random.default_rng(seed), *ERROR_DEQUANT_SHAPE, group_size=128, scale_granularity=granularity,
                     zero_granularity=granularity, zero_kind="float", scales_dtype="fp32")
    out = backend.dequantize(**DequantCase(w, dtype).torch_kwargs(device))  # [out, in]
    got = out.float().cpu().numpy().astype(np.float64)
    return dequant_error(got, w.packed, w.scales, w.zero_points, w.group_size, dtype)


def _linear_samples(backend, dtype, granularity, device, seed):
    m, out_features, in_features = ERROR_LINEAR_SHAPE
    case = make_linear_case(seed, out_features, in_features, m, dtype, rank=ERROR_RANK, num_loras=ERROR_LORAS,
                            group_size=128, scale_granularity=granularity, zero_granularity=granularity)
    got = backend.linear(*case.torch_args(device)).float().cpu().numpy().astype(np.float64)  # [M, out]
    return linear_error(got, case)


def error_samples(backends=None, device="cpu", dtypes=DTYPES, granularities=GRANULARITIES, seed=0):
    """(tidy DataFrame, problems): one row per output element of seeded cases run through `backends`.

    Columns: backend, contract ('dequantizer' | 'linear'), dtype, granularity (of scales and
    zero points), ulps and ratio (int4_lora_harness.verify.tolerance's per-element numbers: distance from the
    correctly rounded value in ulps, and error / allowed). backends: {name: kernels.registry.Backend},
    default every backend available on `device`. A backend that raises is named in `problems`.
    """
    if backends is None:
        from int4_lora_harness.kernels.registry import available
        backends = available(device)
    frames, problems = [], []
    for name, backend in backends.items():
        for contract, sample in (("dequantizer", _dequant_samples), ("linear", _linear_samples)):
            for dtype in dtypes:
                for granularity in granularities:
                    try:
                        report = sample(backend, dtype, granularity, device, seed)
                    except Exception as error:  # the page says which case could not be sampled, and why
                        problems.append(f"error samples: {name} {contract} {dtype} {granularity} raised "
                                        f"{type(error).__name__}: {error}")
                        continue
                    frames.append(pd.DataFrame(dict(backend=name, contract=contract, dtype=dtype,
                                                    granularity=granularity, ulps=report.ulps.ravel(),
                                                    ratio=report.ratio.ravel())))
    columns = ["backend", "contract", "dtype", "granularity", "ulps", "ratio"]
    samples = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    order = dict(backend=list(backends), contract=["dequantizer", "linear"], dtype=list(dtypes),
                 granularity=list(granularities))
    for column, categories in order.items():  # categories in the order the charts and tables show them
        samples[column] = pd.Categorical(samples[column], categories=categories)
    return samples, problems


def error_summary(samples):
    """Per backend, contract, dtype and granularity: elements, max ulps, max and median ratio, share at 0."""
    keys = ["backend", "contract", "dtype", "granularity"]
    summary = samples.groupby(keys, observed=True, sort=False).agg(
        elements=("ratio", "size"), max_ulps=("ulps", "max"), max_ratio=("ratio", "max"),
        median_ratio=("ratio", "median"), share_zero=("ratio", lambda r: float((r == 0).mean())))
    return summary.reset_index()


# --- section 4 and 6: performance -------------------------------------------------------------------

def run_table(bench):
    """One row per benchmark run, newest first: run_id, started, device_name, grid, git_commit, rows, backends."""
    if bench.empty:
        return pd.DataFrame(columns=["run_id", "started", "device_name", "grid", "git_commit", "rows", "backends"])
    runs = bench.groupby("run_id", sort=False).agg(
        started=("timestamp", "min"), device_name=("device_name", "first"), grid=("grid", "first"),
        git_commit=("git_commit", "first"), rows=("run_id", "size"),
        backends=("backend", lambda b: ", ".join(sorted(b.unique()))))
    return runs.reset_index().sort_values(["started", "run_id"], ascending=False, ignore_index=True)


class UnknownRun(ValueError):
    """A run id asked for (--run, --compare) that no benchmark file holds: the caller's to fix."""


def _known(runs, run):
    if run not in set(runs["run_id"]):
        raise UnknownRun(f"no benchmark run {run!r}; the runs found: {', '.join(runs['run_id']) or 'none'}")


def latest_run(bench, run=None):
    """`run` if given (UnknownRun if it is not in `bench`), else the run that started last; None without runs."""
    runs = run_table(bench)
    if run is not None:
        _known(runs, run)
        return run
    return None if runs.empty else runs["run_id"].iloc[0]


def _matches(series, value):
    return series.isna() if pd.isna(value) else series == value


def headline(rows):
    """(rows at one value per non-M axis, the values chosen): HEADLINE's where present, else the most common.

    The adapter axes (rank, num_loras, popularity) only filter gemm_lora rows.
    """
    keep, chosen = pd.Series(True, index=rows.index), {}
    lora = rows["operation"] == "gemm_lora"
    for axis, preferred in HEADLINE.items():
        pool = rows.loc[lora, axis] if axis in LORA_AXES else rows[axis]
        if pool.empty:
            continue
        value = preferred if (pool == preferred).any() else pool.mode(dropna=False).iloc[0]
        chosen[axis] = value
        match = _matches(rows[axis], value)
        keep &= (match | ~lora) if axis in LORA_AXES else match
    return rows[keep], chosen


def _join_keys(rows, drop):
    return [c for c in perf_store.CASE_COLUMNS if c not in drop and c in rows.columns]


def speedup_vs_dense(rows):
    """Rows of one run merged with the dense baseline's same case: speedup = dense median_s / median_s."""
    keys = _join_keys(rows, ["backend"])
    base = rows.loc[rows["backend"] == BASELINE, [*keys, "median_s"]].rename(columns={"median_s": "dense_s"})
    merged = rows[rows["backend"] != BASELINE].merge(base, on=keys)
    merged["speedup"] = merged["dense_s"] / merged["median_s"]
    return merged


def lora_overhead(rows):
    """gemm_lora rows merged with the same backend's gemm on the same layer and M: overhead = lora_s / gemm_s - 1."""
    keys = _join_keys(rows, ["operation", *LORA_AXES])
    gemm = rows.loc[rows["operation"] == "gemm", [*keys, "median_s"]].rename(columns={"median_s": "gemm_s"})
    merged = rows[rows["operation"] == "gemm_lora"].merge(gemm, on=keys)
    merged["overhead"] = merged["median_s"] / merged["gemm_s"] - 1.0
    return merged


def pick_runs(bench, run_a=None, run_b=None):
    """(older run, newer run) to compare: the given pair, else the newest two runs that share a device.

    None when there is no such pair; UnknownRun when a given run is not in `bench`.
    """
    runs = run_table(bench)  # newest first
    if run_a is not None or run_b is not None:
        for run in (run_a, run_b):
            _known(runs, run)
        return run_a, run_b
    for i, newer in runs.iterrows():
        older = runs.loc[i + 1:][runs.loc[i + 1:, "device_name"] == newer["device_name"]]
        if not older.empty:
            return older["run_id"].iloc[0], newer["run_id"]
    return None


def comparison(bench, run_a, run_b, threshold=REGRESSION_THRESHOLD):
    """perf_store.compare(run_a -> run_b) plus time_ratio = b / a and a verdict per case.

    regression / faster: the ratio is past 1 + threshold (or its inverse) and the medians differ by
    more than the two runs' IQRs together; noise: past the threshold but within that spread (a
    noisy machine, not a change); same: within the threshold.
    """
    compared = perf_store.compare(bench, run_a, run_b)
    compared["time_ratio"] = compared["median_s_b"] / compared["median_s_a"]
    ratio = compared["time_ratio"]
    spread = compared["iqr_s_a"].fillna(0.0) + compared["iqr_s_b"].fillna(0.0)
    beyond = (compared["median_s_b"] - compared["median_s_a"]).abs() > spread
    slower, faster = ratio > 1 + threshold, ratio < 1 / (1 + threshold)
    compared["verdict"] = np.select([slower & beyond, faster & beyond, slower | faster],
                                    ["regression", "faster", "noise"], "same")
    return compared.sort_values("time_ratio", ascending=False, ignore_index=True)


def case_label(row):
    """One line naming a benchmark case, e.g. 'torch gemm_lora llama3-8b.k_proj M=16 g128 r16x4 uniform fp16'."""
    parts = [row["backend"], row["operation"], row["layer"]]
    if pd.notna(row["m"]):
        parts.append(f"M={int(row['m'])}")
    group = fmt_group(row["group_size"])
    parts.append(group if group == "per-channel" else f"g{group}")
    if row["operation"] == "gemm_lora":
        parts += [f"r{int(row['rank'])}x{int(row['num_loras'])}", row["popularity"]]
    parts += [row["dtype"], row["cache_mode"]]
    return " ".join(str(p) for p in parts)


# --- section 5: memory ------------------------------------------------------------------------------

def layer_bytes(out_features, in_features, group_size=MEMORY_GROUP_SIZE):
    """(packed, fp16) bytes of one layer: nibbles + one fp16 scale per group; the dense fp16 weight."""
    groups = -(-in_features // group_size)  # the last group may be ragged
    return out_features * in_features // 2 + out_features * groups * SCALE_BYTES, out_features * in_features * 2


def memory_per_layer(shapes=LAYER_SHAPES):
    """One row per layer shape: out, in, packed_bytes, fp16_bytes, ratio = fp16 / packed."""
    rows = [dict(layer=name, out_features=o, in_features=i, **dict(zip(("packed_bytes", "fp16_bytes"),
                                                                       layer_bytes(o, i))))
            for name, (o, i) in shapes.items()]
    table = pd.DataFrame(rows)
    table["ratio"] = table["fp16_bytes"] / table["packed_bytes"]
    return table


def memory_per_model(models=MODELS):
    """Per model: packed and fp16 bytes of every linear layer, and what materializing costs on top.

    materialized_cached: an fp16 copy of every layer kept (the seed caches by id(module));
    materialized_transient: the largest layer's fp16 copy, made and freed one layer at a time.
    """
    rows = []
    for model, (blocks, projections) in models.items():
        sizes = [layer_bytes(o, i) for o, i in projections.values()]
        packed, fp16 = (blocks * sum(s[k] for s in sizes) for k in (0, 1))
        rows.append(dict(model=model, blocks=blocks, projections=", ".join(projections), packed_bytes=packed,
                         fp16_bytes=fp16, materialized_cached=packed + fp16,
                         materialized_transient=packed + max(s[1] for s in sizes)))
    return pd.DataFrame(rows)


# --- the page ---------------------------------------------------------------------------------------

def fmt_group(group_size):
    """A group size as the page shows it: '128', or 'per-channel' where there is none (None or NaN)."""
    return "per-channel" if group_size is None or pd.isna(group_size) else str(int(group_size))


def fmt_seconds(s):
    """3 significant digits in s, ms, µs or ns; '–' when missing."""
    if s is None or not np.isfinite(s):
        return "–"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(s) >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def fmt_bytes(n):
    """4 significant digits in B, KiB, MiB, GiB or TiB; '–' when missing (peak memory on a CPU)."""
    if n is None or not np.isfinite(n):
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.4g} {unit}"
        n /= 1024
    return f"{n:.4g} TiB"


def fmt_num(x, digits=3):
    """`digits` significant digits ('inf' stays 'inf'); '–' when missing."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}g}"


def _records(df):
    """Rows as dicts, for the template."""
    return df.to_dict("records")


def performance(bench, run=None):
    """The template's section 4: the run shown, its headline axes, charts and tables; notes for what is missing."""
    run = latest_run(bench, run)
    if run is None:
        return None
    rows = bench[bench["run_id"] == run].copy()
    rows["case"] = rows.apply(case_label, axis=1)
    timed = rows[rows["operation"].isin(["gemm", "gemm_lora"])]
    top, chosen = headline(timed)
    speedups, overheads = speedup_vs_dense(rows), lora_overhead(rows)
    top_speedups, _ = headline(speedups) if not speedups.empty else (speedups, {})
    top_overheads, _ = headline(overheads) if not overheads.empty else (overheads, {})
    dequant = rows[rows["operation"] == "dequantize"].sort_values(["layer", "backend"])
    return dict(
        run=run, device=rows["device_name"].iloc[0], peak_source=rows["peak_source"].iloc[0],
        commit=rows["git_commit"].iloc[0], rows=len(rows), chosen=chosen,
        latency_svg=small_multiples(top, "median_s", "median latency (s)", "latency") if not top.empty else None,
        speedup_svg=small_multiples(top_speedups, "speedup", f"speedup over {BASELINE}", "speedup", reference=1.0)
        if not top_speedups.empty else None,
        overhead_svg=small_multiples(top_overheads.assign(overhead_pct=100 * top_overheads["overhead"]),
                                     "overhead_pct", "LoRA overhead (%)", "overhead", log_y=False, reference=0.0)
        if not top_overheads.empty else None,
        roofline_svg=roofline_chart(rows) if np.isfinite(rows["achieved_tflops"]).any() else None,
        speedups=_records(speedups.sort_values(["layer", "operation", "m", "backend"])),
        overheads=_records(overheads.sort_values(["layer", "m", "backend", "rank", "num_loras"])),
        dequant=_records(dequant), all_rows=_records(rows.sort_values(["layer", "operation", "m", "backend"])))


def compare_section(bench, run_a=None, run_b=None, threshold=REGRESSION_THRESHOLD):
    """The template's section 6: (context dict | None, problems). UnknownRun for a given run id `bench` lacks."""
    pair = pick_runs(bench, run_a, run_b)
    if pair is None:
        return None, [] if bench.empty else ["comparison: needs two benchmark runs on the same device; "
                                              f"found {bench['run_id'].nunique()} run(s)"]
    try:
        compared = comparison(bench, *pair, threshold)
    except ValueError as error:  # perf_store.compare refuses duplicated cases: say so
        return None, [f"comparison of {pair[0]} and {pair[1]}: {error}"]
    compared["case"] = compared.apply(case_label, axis=1)
    counts = compared["verdict"].value_counts()
    only = {run: int((bench["run_id"] == run).sum()) - len(compared) for run in pair}
    return dict(run_a=pair[0], run_b=pair[1], threshold=threshold, cases=len(compared),
                regressions=int(counts.get("regression", 0)), faster=int(counts.get("faster", 0)),
                noise=int(counts.get("noise", 0)),
                geomean=float(np.exp(np.log(compared["time_ratio"]).mean())) if len(compared) else math.nan,
                only=only, rows=_records(compared)), []


def summary_lines(verify, bench, samples_info):
    """What was run, one line each."""
    lines = []
    if verify:
        lines.append(f"verify: {len(verify['results'])} result(s) on {verify.get('device', '?')}, profile "
                     f"{verify.get('profile', '?')} ({verify.get('examples', '?')} fuzzed cases per contract), "
                     f"seed {verify.get('seed', '?')}, torch {verify.get('torch', '?')}, "
                     f"written {verify.get('generated', '?')}")
    if not bench.empty:
        lines.append(f"benchmarks: {bench['run_id'].nunique()} run(s), {len(bench)} rows, on "
                     f"{', '.join(sorted(bench['device_name'].dropna().unique()))}")
    if samples_info:
        lines.append(samples_info)
    return lines


def real_weights_section():
    """(rows of int4_lora_harness.checkpoints.real_weights.summary, problem | None): RTN on MiniLM-L6's real layers (a few seconds)."""
    from int4_lora_harness.checkpoints import real_weights
    try:
        table = real_weights.quantization_table()
    except FileNotFoundError as error:  # the model package is not installed: say so in the page
        return None, f"real weights: {error}"
    rows = real_weights.summary(table)
    return _records(rows), None


def build_report(reports_dir="reports", out=None, run=None, run_a=None, run_b=None, threshold=REGRESSION_THRESHOLD,
                 errors=True, device="cpu"):
    """Write the page and return its path (default reports_dir/index.html).

    reports_dir: holds verify.json and bench/*.parquet; run: the benchmark run section 4 shows
    (default the latest); run_a, run_b: the runs section 6 compares (default the latest two on
    one device); threshold: a time ratio above 1 + threshold is a regression; errors: run the
    backends on `device` for section 3 (a few seconds).
    """
    from int4_lora_harness.kernels.registry import BACKENDS
    reports_dir = Path(reports_dir)
    out = Path(out) if out else reports_dir / "index.html"
    verify, problems = load_verify(reports_dir / "verify.json")
    bench, bench_problems = load_bench(reports_dir / "bench")
    problems += bench_problems
    table = verdicts(verify, BACKENDS)
    perf = performance(bench, run)  # first: an unknown run id stops here, before any kernel runs
    compared, compare_problems = compare_section(bench, run_a, run_b, threshold)

    samples, samples_info, error_context = None, None, None
    if errors:
        start = time.perf_counter()
        samples, sample_problems = error_samples(device=device)
        problems += sample_problems
        if samples.empty:
            problems.append(f"error samples: no backend available on {device}")
        else:
            samples_info = (f"error samples: {', '.join(samples['backend'].unique())} on {device}, "
                            f"{len(samples)} elements in {time.perf_counter() - start:.1f} s")
            by_contract = {c: samples[samples["contract"] == c] for c in ("dequantizer", "linear")}
            error_context = dict(
                ulps_svg=ulps_chart(by_contract["dequantizer"]) if len(by_contract["dequantizer"]) else None,
                ratio_svg=ratio_chart(by_contract["linear"]) if len(by_contract["linear"]) else None,
                summary=_records(error_summary(samples)), dequant_shape=ERROR_DEQUANT_SHAPE,
                linear_shape=ERROR_LINEAR_SHAPE, rank=ERROR_RANK, loras=ERROR_LORAS, device=device)

    real, real_problem = real_weights_section() if errors else (None, None)
    problems += [real_problem] if real_problem else []
    problems += compare_problems
    per_layer = memory_per_layer()

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(seconds=fmt_seconds, bytes=fmt_bytes, num=fmt_num, group=fmt_group)
    page = env.get_template("report.html.j2").render(
        generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"), commit=git_commit(), problems=problems,
        what_ran=summary_lines(verify, bench, samples_info), overall=_records(overall_verdicts(table, BACKENDS)),
        verify=verify, blocks=verification_blocks(verify, reports_dir, out.parent), errors=error_context, real=real,
        runs=_records(run_table(bench)), perf=perf, baseline=BASELINE, compared=compared,
        memory_layers=_records(per_layer), memory_models=_records(memory_per_model()),
        memory_svg=memory_chart(per_layer), models=MODELS, group_size=MEMORY_GROUP_SIZE, max_rows=MAX_TABLE_ROWS)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
