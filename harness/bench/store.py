"""Benchmark rows -> one parquet file per run, written atomically; all runs -> one DataFrame.

A row is a plain dict with exactly SCHEMA's columns (docs/bench_schema.md says what each
means). A run rewrites `reports/bench/<run-id>.parquet` after every row, through a temp
file in the same folder and os.replace, so readers never see a partial file and an
interrupted run keeps every row it completed.
"""
import math
import os
import warnings
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from int4_lora_harness import __version__
from int4_lora_harness.bench import honesty

SCHEMA = pa.schema([
    # the run
    ("run_id", pa.string()), ("timestamp", pa.timestamp("us", tz="UTC")), ("harness_version", pa.string()),
    ("git_commit", pa.string()), ("git_dirty", pa.bool_()), ("host", pa.string()), ("device_name", pa.string()), ("torch_version", pa.string()),
    ("triton_version", pa.string()), ("grid", pa.string()), ("test_id", pa.string()), ("domain", pa.string()),
    ("load_per_core_start", pa.float64()), ("load_per_core_end", pa.float64()),
    # the case
    ("backend", pa.string()), ("operation", pa.string()), ("layer", pa.string()), ("m", pa.int64()),
    ("n", pa.int64()), ("k", pa.int64()), ("group_size", pa.int64()), ("scale_granularity", pa.string()),
    ("zero_granularity", pa.string()), ("scales_dtype", pa.string()), ("zero_points_dtype", pa.string()),
    ("rank", pa.int64()), ("num_loras", pa.int64()), ("popularity", pa.string()),
    ("dtype", pa.string()), ("cache_mode", pa.string()),
    # the check that came before the timing
    ("verified_m", pa.int64()), ("verification", pa.string()),
    # the timing
    ("timer", pa.string()), ("median_s", pa.float64()), ("iqr_s", pa.float64()), ("min_s", pa.float64()),
    ("rounds", pa.int64()), ("prepare_s", pa.float64()),
    # the checks after the timing (harness.bench.honesty)
    ("result_check", pa.string()), ("input_bytes", pa.int64()), ("ceiling_gbps", pa.float64()),
    ("cache_bytes", pa.int64()), ("floor_s", pa.float64()), ("impossible", pa.bool_()),
    # work, rates and peaks
    ("bytes_moved", pa.int64()), ("flops", pa.int64()), ("achieved_gbps", pa.float64()),
    ("achieved_tflops", pa.float64()), ("peak_gbps", pa.float64()), ("peak_tflops", pa.float64()),
    ("peak_source", pa.string()), ("frac_peak_bandwidth", pa.float64()), ("frac_peak_compute", pa.float64()),
    # memory
    ("packed_weight_bytes", pa.int64()), ("fp16_weight_bytes", pa.int64()), ("peak_memory_bytes", pa.float64()),
])

# The columns that name a case: two runs are compared row by row on these.
CASE_COLUMNS = ["backend", "operation", "layer", "m", "n", "k", "group_size", "scale_granularity",
                "zero_granularity", "scales_dtype", "zero_points_dtype", "rank", "num_loras", "popularity", "dtype",
                "cache_mode"]

TIMING_COLUMNS = ["median_s", "iqr_s", "min_s", "rounds"]  # what compare takes from each run
FLAG_COLUMNS = ["result_check", "impossible", "floor_s"]  # what decides whether a timing stands
RATE_COLUMNS = ("achieved_gbps", "achieved_tflops", "frac_peak_bandwidth", "frac_peak_compute")

# Columns added with bench's domain flags, two-phase TARGETs and load readings, and what a row or a file without
# them means: every grid then made scales in x's dtype (None here: the row's `dtype`) and int32 zero points, on
# the full domain, timed one-call kernels (no prepare) and read no load.
IMPLIED = dict(domain="full", scales_dtype=None, zero_points_dtype="int32", prepare_s=math.nan,
               load_per_core_start=math.nan, load_per_core_end=math.nan)


def implied(name, row):
    """What a row without the IMPLIED column `name` means (`row`: a dict or a pyarrow.Table of rows)."""
    if name != "scales_dtype":
        return IMPLIED[name]
    if isinstance(row, pa.Table):
        return row.column("dtype") if "dtype" in row.column_names else None
    return row.get("dtype")


def with_rates(row):
    """`row` plus GB/s, TFLOP/s and fractions of peak, from its bytes_moved, flops, median_s and peaks, and its
    bytes-moved floor (floor_s, impossible: harness.bench.honesty) from input_bytes, cache_bytes and ceiling_gbps."""
    seconds = row["median_s"]
    if not seconds > 0:
        raise ValueError(f"median_s must be a positive number of seconds, got {seconds!r}")
    gbps = row["bytes_moved"] / seconds / 1e9
    tflops = row["flops"] / seconds / 1e12
    floor = honesty.floor_seconds(row["input_bytes"], row["cache_bytes"], row["cache_mode"], row["ceiling_gbps"])
    return {**row, "achieved_gbps": gbps, "achieved_tflops": tflops, "floor_s": floor,
            "impossible": honesty.is_impossible(row["min_s"], floor),
            "frac_peak_bandwidth": gbps / row["peak_gbps"] if row["peak_gbps"] > 0 else math.nan,
            "frac_peak_compute": tflops / row["peak_tflops"] if row["peak_tflops"] > 0 else math.nan}


def to_table(rows):
    """list of dicts with exactly SCHEMA's columns -> pyarrow.Table; ValueError names a row's wrong columns.

    A row without `harness_version` gets this harness's (int4_lora_harness.__version__): the store that writes
    the row is part of the harness whose version it is, so a caller need not pass it. A row without a column of
    IMPLIED (a writer older than it) gets what its absence means.
    """
    expected = set(SCHEMA.names)
    rows = [row if "harness_version" in row else {**row, "harness_version": __version__} for row in rows]
    rows = [{**{name: implied(name, row) for name in IMPLIED if name not in row}, **row} for row in rows]
    for i, row in enumerate(rows):
        missing, extra = sorted(expected - row.keys()), sorted(row.keys() - expected)
        if missing or extra:
            raise ValueError(f"row {i} does not match int4_lora_harness.bench.store.SCHEMA: missing {missing}, unexpected {extra}")
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def write_rows(rows, path):
    """Write `rows` to the parquet file `path`, atomically: a temp file in the same folder, then os.replace."""
    path = Path(path)
    table = to_table(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # not *.parquet: load_runs never reads it
    try:
        pq.write_table(table, temp)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def append_row(rows, row, path):
    """Rewrite `path` with `rows` + `row`, then add `row` to `rows` (which is left as it was if writing fails)."""
    write_rows([*rows, row], path)
    rows.append(row)


def with_schema_columns(table, path):
    """(`table` with every SCHEMA column it lacks added, note | None naming them): a column of IMPLIED as what its
    absence means, any other as nulls of the column's type.

    Files written before a column was added (e.g. harness_version) are read, not skipped.
    """
    absent = [field for field in SCHEMA if field.name not in table.column_names]
    meant = [field for field in absent if field.name in IMPLIED and implied(field.name, table) is not None]
    missing = [field for field in absent if field not in meant]
    for field in meant:
        value = implied(field.name, table)
        column = value if isinstance(value, pa.ChunkedArray) else pa.array([value] * len(table), field.type)
        table = table.append_column(field, column.cast(field.type))
    for field in missing:
        table = table.append_column(field, pa.nulls(len(table), field.type))
    notes = [f"lacks columns {[f.name for f in missing]} (an older schema): read with nulls there"] if missing else []
    notes += [f"written before {[f.name for f in meant]} were recorded: read as every run then was (scales in x's "
              "dtype, int32 zero points, the full domain, no prepare, no load reading)"] if meant else []
    return table, f"{path}: " + "; ".join(notes) if notes else None


def load_runs(folder="reports/bench"):
    """Every `*.parquet` run in `folder` as one DataFrame with SCHEMA's columns (and any extra ones), plus `file`:
    the name of the parquet file each row came from.

    A file that cannot be read is skipped; one that lacks some of SCHEMA's columns (an older schema) is read
    with nulls in them. Neither is silent: each file is named with its reason in one warning and in
    df.attrs["skipped_files"] or df.attrs["filled"].
    """
    frames, skipped, filled = [], [], []
    for path in sorted(Path(folder).glob("*.parquet")):
        try:
            table, note = with_schema_columns(pq.read_table(path), path)
            frame = table.to_pandas()
        except (OSError, ValueError, pa.ArrowException) as error:
            skipped.append(f"{path}: unreadable ({type(error).__name__}: {error})")
            continue
        filled += [note] if note else []
        frames.append(frame.assign(file=path.name))
    empty = SCHEMA.empty_table().to_pandas().assign(file=pd.Series(dtype=str))
    df = pd.concat(frames, ignore_index=True) if frames else empty
    if skipped or filled:
        warnings.warn(f"load_runs in {folder}: " + "; ".join(skipped + filled), stacklevel=2)
    df.attrs["skipped_files"], df.attrs["filled"] = skipped, filled
    return df


def flags(df):
    """Per row of `df`: '' where its timing stands, else why not (harness.bench.honesty.flag)."""
    return pd.Series([honesty.flag(row) for _, row in df.iterrows()], index=df.index, dtype=object)


def compare(df, run_a, run_b):
    """Per case present in both runs: median_s, iqr_s, min_s and rounds of each (suffixes _a, _b) and
    speedup = median_s_a / median_s_b (> 1: b is faster). A case is named by CASE_COLUMNS, those `df` has (a frame
    made by hand before scales_dtype existed is compared on the others).

    flag_a, flag_b: '' or why that run's timing is no result (impossible, or its result differs); a flagged
    side's median_s and min_s are NaN there (its row keeps them), so it gives no speedup."""
    runs = sorted(df["run_id"].unique())
    for run in (run_a, run_b):
        if run not in runs:
            raise ValueError(f"run {run!r} is not in the data; runs: {runs}")
    keys = [c for c in CASE_COLUMNS if c in df.columns]
    columns = [*keys, *TIMING_COLUMNS, *(c for c in FLAG_COLUMNS if c in df.columns)]
    a, b = (df.loc[df["run_id"] == run, columns] for run in (run_a, run_b))
    for run, frame in ((run_a, a), (run_b, b)):
        if frame.duplicated(keys).any():
            raise ValueError(f"run {run!r} holds the same case more than once; compare needs one row per case")
    a, b = (_unflagged_times(frame, keys) for frame in (a, b))
    merged = a.merge(b, on=keys, suffixes=("_a", "_b"))  # null keys (m of dequantize) match null keys
    merged["speedup"] = merged["median_s_a"] / merged["median_s_b"]
    return merged


def _unflagged_times(frame, keys):
    """`frame`'s case (`keys`) and timing columns plus `flag`, with median_s and min_s NaN where the flag is set."""
    flag = flags(frame)
    times = frame[[*keys, *TIMING_COLUMNS]].assign(flag=flag)
    times.loc[flag != "", ["median_s", "min_s"]] = float("nan")
    return times
