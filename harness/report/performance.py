"""The performance section: one benchmark run's latency, speedup over dense, LoRA overhead, roofline, tables.

Input: the DataFrame of report.inputs.load_bench (rows of int4_lora_harness.bench.store.SCHEMA; median_s
that is not a positive number is NaN there). Every number comes from those rows.
"""
import numpy as np
import pandas as pd

from int4_lora_harness.bench import store as perf_store
from int4_lora_harness.report import noise
from int4_lora_harness.report.charts import backend_colour, roofline_chart, small_multiples
from int4_lora_harness.report.fmt import fmt_group
from int4_lora_harness.report.targets import bench_targets

PROJECT_ONLY = "the project's backends"  # a run that timed no TARGET (the pytest sweeps)
BASELINE = "dense"  # the backend speedups are measured against: weights dequantized ahead of time
# The values at which "vs M" charts hold the other axes (when the run has them; else its most common value).
HEADLINE = dict(group_size=128, dtype="fp16", cache_mode="warm", rank=16, num_loras=4, popularity="uniform")
LORA_AXES = ("rank", "num_loras", "popularity")  # only gemm_lora rows vary these
CPU_NOTE = ("measured on a CPU ({device}): the CPU is not the target device of these kernels; the numbers show "
            "that the benchmarks run, not how fast the kernels are on a GPU")


def text(value, missing="?"):
    """A stored string cell, or `missing` for a null."""
    return value if isinstance(value, str) else missing


def is_true(value):
    """Whether a stored flag (git_dirty: a bool, NumPy bool or null) is true."""
    return isinstance(value, (bool, np.bool_)) and bool(value)


class UnknownRun(ValueError):
    """A run id asked for (--run, --compare) that no benchmark file holds: the caller's to fix."""


def run_table(bench):
    """One row per benchmark run, newest first: run_id, started, device_name, grid, git_commit, git_dirty,
    harness_version, rows, backends, targets (the TARGETs it timed in words: report.targets), target_list (the
    same as a tuple), file."""
    columns = ["run_id", "started", "device_name", "grid", "git_commit", "git_dirty", "harness_version", "rows",
               "backends", "targets", "target_list", "file"]
    if bench.empty:
        return pd.DataFrame(columns=columns)
    runs = bench.groupby("run_id", sort=False).agg(
        started=("timestamp", "min"), device_name=("device_name", "first"), grid=("grid", "first"),
        git_commit=("git_commit", "first"), git_dirty=("git_dirty", "first"),
        harness_version=("harness_version", "first"), rows=("run_id", "size"),
        backends=("backend", lambda b: ", ".join(sorted(b.astype(str).unique()))),
        file=("file", lambda f: ", ".join(sorted(f.astype(str).unique()))))
    runs["git_dirty"] = runs["git_dirty"].map(is_true)
    timed = {run: bench_targets(b.astype(str).unique()) for run, b in bench.groupby("run_id", sort=False)["backend"]}
    runs["target_list"] = [timed[run] for run in runs.index]
    runs["targets"] = runs["target_list"].map(lambda t: ", ".join(t) or PROJECT_ONLY)
    return runs.reset_index().sort_values(["started", "run_id"], ascending=False, ignore_index=True,
                                          na_position="last")[columns]


def known(runs, run):
    """UnknownRun naming the runs found, when `run` is not one of them."""
    if run not in set(runs["run_id"]):
        raise UnknownRun(f"no benchmark run {run!r}; the runs found: {', '.join(runs['run_id']) or 'none'}")


def latest_run(bench, run=None):
    """`run` if given (UnknownRun if it is not in `bench`), else the run that started last; None without runs."""
    runs = run_table(bench)
    if run is not None:
        known(runs, run)
        return run
    return None if runs.empty else runs["run_id"].iloc[0]


def is_cpu(rows):
    """Whether rows were timed on a CPU: the store's timer is 'cuda events' on CUDA, perf_counter on a CPU."""
    return not rows["timer"].astype(str).str.startswith("cuda").any()


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


def _one_per_case(rows, keys):
    return rows.drop_duplicates(keys, keep="last")  # a run holding one case twice: its last row


TIMING = ["median_s", "iqr_s", "min_s", "rounds"]  # what a timing brings to a comparison inside one run


def _paired(rows, keys, pick, prefix):
    """`rows` (the other side) merged with one row per case of rows[pick] on `keys`; the picked side's timing
    columns get `prefix` (dense_median_s ...)."""
    base = rows.loc[pick, [*keys, *TIMING]].rename(columns={c: f"{prefix}{c}" for c in TIMING})
    return _one_per_case(base, keys)


def _noise(merged, prefix, typical):
    """report.noise.reasons of each row's timing against its `prefix` timing."""
    base = merged[[f"{prefix}{c}" for c in TIMING]].set_axis(TIMING, axis=1)
    return noise.reasons(base, merged[TIMING], typical)


def speedup_vs_dense(rows):
    """Rows of one run merged with the dense baseline's same case: speedup = dense median_s / median_s, and
    noise: whether the two timings do not differ beyond the noise, noise_why: why (report.noise)."""
    keys = _join_keys(rows, ["backend"])
    base = _paired(rows, keys, rows["backend"] == BASELINE, "dense_")
    merged = rows[rows["backend"] != BASELINE].merge(base, on=keys)
    merged["dense_s"] = merged["dense_median_s"]
    merged["speedup"] = merged["dense_s"] / merged["median_s"]
    merged["noise_why"] = _noise(merged, "dense_", noise.typical_spread(rows["iqr_s"], rows["median_s"]))
    merged["noise"] = (merged["noise_why"] != "").astype(bool)
    return merged


def lora_overhead(rows):
    """gemm_lora rows merged with the same backend's gemm on the same layer and M: overhead = lora_s / gemm_s - 1.

    noise (noise_why: why, in words): the overhead is not a result: negative (adapters add work: a gemm_lora
    faster than its gemm is timing noise), or within the noise of the two timings (report.noise); such an
    overhead is shown flagged, with the reason.
    """
    keys = _join_keys(rows, ["operation", *LORA_AXES])
    gemm = _paired(rows, keys, rows["operation"] == "gemm", "gemm_")
    merged = rows[rows["operation"] == "gemm_lora"].merge(gemm, on=keys)
    merged["gemm_s"] = merged["gemm_median_s"]
    merged["overhead"] = merged["median_s"] / merged["gemm_s"] - 1.0
    within = _noise(merged, "gemm_", noise.typical_spread(rows["iqr_s"], rows["median_s"]))
    negative = np.where(merged["overhead"] < 0, "negative: adapters only add work", "")
    merged["noise_why"] = pd.Series([n or w for n, w in zip(negative, within)], index=merged.index, dtype=object)
    merged["noise"] = (merged["noise_why"] != "").astype(bool)
    return merged


def case_label(row):
    """One line naming a benchmark case, e.g. 'torch gemm_lora llama3-8b.k_proj M=16 g128 r16x4 uniform fp16'."""
    parts = [row["backend"], row["operation"], row["layer"]]
    if pd.notna(row["m"]):
        parts.append(f"M={int(row['m'])}")
    group = fmt_group(row["group_size"])
    parts.append(group if group == "per-channel" else f"g{group}")
    if row["operation"] == "gemm_lora" and pd.notna(row["rank"]) and pd.notna(row["num_loras"]):
        parts += [f"r{int(row['rank'])}x{int(row['num_loras'])}", row["popularity"]]
    parts += [row["dtype"], row["cache_mode"]]
    return " ".join(str(p) for p in parts)


def _records(df, limit):
    """(the first `limit` rows as dicts, for the template; how many more were left out)."""
    return df.head(limit).to_dict("records"), max(0, len(df) - limit)


def performance(bench, run, max_rows):
    """The section's context for one run: its device, headline axes, charts and tables (at most `max_rows`
    rows each, with how many were left out); None without runs."""
    run = latest_run(bench, run)
    if run is None:
        return None
    rows = bench[bench["run_id"] == run].copy()
    rows["case"] = rows.apply(case_label, axis=1)
    rows["colour"] = rows["backend"].map(backend_colour)
    top, chosen = headline(rows[rows["operation"].isin(["gemm", "gemm_lora"])])
    speedups, overheads = speedup_vs_dense(rows), lora_overhead(rows)
    top_overheads = headline(overheads)[0].assign(overhead_pct=lambda d: 100 * d["overhead"])
    tables = dict(speedups=speedups.sort_values(["layer", "operation", "m", "backend"]),
                  overheads=overheads.sort_values(["layer", "m", "backend", "rank", "num_loras"]),
                  dequant=rows[rows["operation"] == "dequantize"].sort_values(["layer", "backend"]),
                  all_rows=rows.sort_values(["layer", "operation", "m", "backend"]))
    cpu = is_cpu(rows)
    context = dict(
        run=run, device=rows["device_name"].iloc[0], peak_source=rows["peak_source"].iloc[0],
        commit=text(rows["git_commit"].iloc[0]), dirty=is_true(rows["git_dirty"].iloc[0]),
        rows=len(rows), chosen=chosen, cpu_note=CPU_NOTE.format(device=rows["device_name"].iloc[0]) if cpu else None,
        unmeasured=int(rows["median_s"].isna().sum()),
        latency_svg=small_multiples(top, "median_s", "median latency (s)", "latency"),
        speedup_svg=small_multiples(headline(speedups)[0], "speedup", f"speedup over {BASELINE}", "speedup",
                                    reference=1.0, noise="noise"),
        overhead_svg=small_multiples(top_overheads, "overhead_pct", "LoRA overhead (%)", "overhead", log_y=False,
                                     reference=0.0, noise="noise"),
        overhead_noise=int(overheads["noise"].sum()), speedup_noise=int(speedups["noise"].sum()),
        roofline_svg=roofline_chart(rows))
    for name, table in tables.items():
        context[name], context[f"{name}_left_out"] = _records(table, max_rows)
    return context
