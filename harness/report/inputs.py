"""The files the page is made from, read and checked; nothing here runs a kernel or raises on a bad file.

    REPORTS/verify/<run-id>.json   one per verify run (docs/verify_schema.md); REPORTS/verify.json, the
                                   latest run's copy, is read only when it is not one of them (older layout)
    REPORTS/bench/*.parquet        benchmark rows (int4_lora_harness.bench.store, docs/bench_schema.md)
    REPORTS/real_weights.json      `python -m int4_lora_harness real-weights` (docs/real_weights.md)

The page may read several reports folders (`report --reports A B`): each file is read only inside its own.
Each loader returns (what it read, notes): one line per file that could not be read, or read only in part,
naming the file and what was wrong with it. Every file is read through report.files: only regular files
inside the reports folder, each up to a cap of bytes (a FIFO, a device or a link out is named, never opened).
"""
import datetime
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from int4_lora_harness.bench import store as perf_store
from int4_lora_harness.report import files, verdicts
from int4_lora_harness.report.fields import Notes, dicts, read

MAX_BENCH_ROWS = 1_000_000  # rows per benchmark file; a full grid is a few thousand
MAX_BENCH_DECODED = 1024 * 2**20  # bytes of a benchmark file once decoded, as its footer declares them
RUN_ID = re.compile(r"^(\d{8}T\d{6}Z)-[0-9a-f]+$")  # verify's and the benchmarks' run ids start with the UTC time


def read_json(path, root):
    """(the parsed JSON | None, note | None) of one file inside the folder `root`, read by files.read_capped (a
    regular file of at most MAX_JSON_BYTES): a file not read, not UTF-8 or not valid JSON is a note."""
    data, why = files.read_capped(path, root, files.MAX_JSON_BYTES)
    if why:
        return None, f"{path}: {why}: left out"
    try:
        return json.loads(data.decode("utf-8")), None
    except (ValueError, RecursionError) as error:  # ValueError: bad UTF-8, bad JSON, an integer of 5000 digits
        return None, f"{path}: not readable JSON ({type(error).__name__}: {str(error)[:200]}): left out"


def verify_files(reports_dir):
    """(every REPORTS/verify/*.json and REPORTS/verify.json, notes on what was not listed). verify.json is
    checked against the others by run id in load_verify_runs."""
    folder = Path(reports_dir)
    paths, notes = files.listing(folder / "verify", "*.json", folder)
    latest = folder / "verify.json"
    return paths + ([latest] if os.path.lexists(latest) else []), notes


def started(run, path):
    """When a run started, for ordering newest first: its run id's UTC time, else the file's modification time."""
    match = RUN_ID.match(run.get("run_id") or "")
    try:
        if match:
            return datetime.datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError:  # the run id's form without a real time (month 13): the file's time instead
        pass
    try:
        return datetime.datetime.fromtimestamp(Path(path).stat().st_mtime, datetime.timezone.utc)
    except OSError:
        return datetime.datetime.min.replace(tzinfo=datetime.timezone.utc)


def modified(path):
    """The file's modification time (seconds), 0 when it cannot be read: orders runs that started in one second."""
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return 0.0


def folders_of(reports_dirs):
    """A folder or a list of folders -> [Path], each once, in the order given."""
    single = isinstance(reports_dirs, (str, os.PathLike))
    return list(dict.fromkeys(Path(f) for f in ([reports_dirs] if single else reports_dirs)))


def load_verify_runs(reports_dirs):
    """(runs newest first, as report.verdicts.run makes them, each with `reports_dir` (its folder) and `started`;
    notes) of one reports folder or a list of them (`report --reports A B`, one per `verify --report` run).

    REPORTS/verify.json is left out when a file of the verify/ folder holds the same run id (it is that run's
    copy); a run id read already from another folder is a copy too: read once, and named in a note."""
    runs, notes, seen = [], [], {}
    for folder in folders_of(reports_dirs):
        paths, listing_notes = verify_files(folder)
        notes += listing_notes
        for path in paths:
            obj, note = read_json(path, folder)
            if note:
                notes.append(note)
                continue
            if not isinstance(obj, dict):
                notes.append(f"{path}: a JSON {type(obj).__name__}, not a verdict object: left out")
                continue
            file_notes = Notes(path)
            run = verdicts.run(obj, file_notes, path)
            first = seen.get(run["run_id"]) if run["run_id"] else None
            if first is not None:
                if path.name != "verify.json" or Path(first).parent.parent != folder:  # not the folder's own copy
                    notes.append(f"{path}: run {run['run_id']} was read already from {first}: a copy, read once")
                continue
            if run["run_id"]:
                seen[run["run_id"]] = path
            run.update(reports_dir=folder, started=started(run, path), modified=modified(path))
            runs.append(run)
            notes += file_notes.lines()
    runs.sort(key=lambda r: (r["started"], r["modified"]), reverse=True)
    if not runs and not notes:
        where = ", ".join(map(str, folders_of(reports_dirs)))
        notes.append(f"no verification results in {where}: no verify/*.json or verify.json")
    return runs, notes


def read_parquet(path, root):
    """(one benchmark file's rows as a DataFrame of perf_store.SCHEMA's columns and `file` | None, notes).

    Read from its bytes (files.read_capped: a regular file inside `root` of at most MAX_PARQUET_BYTES), and only
    when its footer declares at most MAX_BENCH_ROWS rows and MAX_BENCH_DECODED bytes once decoded."""
    data, why = files.read_capped(path, root, files.MAX_PARQUET_BYTES)
    if why:
        return None, [f"benchmark file {path}: {why}: left out"]
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        meta = parquet.metadata
        decoded = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        if meta.num_rows > MAX_BENCH_ROWS or decoded > MAX_BENCH_DECODED:
            return None, [f"benchmark file {path}: {meta.num_rows} rows, {decoded / 2**20:.0f} MiB decoded: over the "
                          f"cap of {MAX_BENCH_ROWS} rows and {MAX_BENCH_DECODED / 2**20:.0f} MiB: left out"]
        table, filled = perf_store.with_schema_columns(parquet.read(), path)
        return table.to_pandas().assign(file=path.name), [f"benchmark file {filled}"] if filled else []
    except (OSError, ValueError, pa.ArrowException) as error:
        return None, [f"benchmark file {path}: unreadable ({type(error).__name__}: {str(error)[:200]})"]


def load_bench(folder, root):
    """(every benchmark row in `folder` (REPORTS/bench) as one DataFrame of perf_store.SCHEMA, notes).

    root: the reports folder no file is read outside of. Rows that cannot be drawn are kept and named: a
    null backend or operation reads as '?'; median_s that is not a positive number is NaN (left out of the
    charts and comparisons, counted in a note).
    """
    paths, notes = files.listing(folder, "*.parquet", root)
    frames = []
    for path in paths:
        frame, file_notes = read_parquet(path, root)
        notes += file_notes
        frames += [] if frame is None else [frame]
    empty = perf_store.SCHEMA.empty_table().to_pandas().assign(file=pd.Series(dtype=str))
    df = pd.concat(frames, ignore_index=True) if frames else empty
    for column in ("run_id", "backend", "operation", "layer", "device_name", "dtype", "cache_mode", "popularity"):
        missing = df[column].isna()
        for file, count in df.loc[missing, "file"].value_counts().items():
            notes.append(f"{file}: {count} row(s) with no {column} (shown as '?')")
        df[column] = df[column].where(~missing, "?").astype(str)
    seconds = pd.to_numeric(df["median_s"], errors="coerce")
    bad = ~(seconds > 0) | ~np.isfinite(seconds)
    for file, count in df.loc[bad, "file"].value_counts().items():
        notes.append(f"{file}: {count} row(s) whose median_s is 0, negative or NaN: left out of charts and comparisons")
    flags = perf_store.flags(df)  # an impossible time or a result that differs: no timing (harness.bench.honesty)
    for file, flag in zip(df.loc[(flags != "") & ~bad, "file"], flags[(flags != "") & ~bad]):
        notes.append(f"{file}: a row flagged, not a result: {flag}")
    bad = bad | (flags != "")
    df["median_s"] = seconds.where(~bad, math.nan)
    return df, notes


def load_bench_folders(folders):
    """(every benchmark row of each folder's bench/ (load_bench), one DataFrame; notes). A run id found in two
    folders is a copy: the first folder's rows are kept and the other is named in a note."""
    frames, notes = [], []
    for folder in folders_of(folders):
        frame, folder_notes = load_bench(folder / "bench", folder)
        notes += folder_notes
        if frames:
            before = set().union(*(set(f["run_id"]) for f in frames))
            copies = sorted(set(frame["run_id"]) & before)
            notes += [f"{folder / 'bench'}: benchmark run {run} was read already from another folder: a copy, "
                      "read once" for run in copies]
            frame = frame[~frame["run_id"].isin(copies)]
        frames.append(frame)
    kept = [f for f in frames if not f.empty] or frames[:1]  # pandas warns on concatenating empty frames
    return (pd.concat(kept, ignore_index=True) if len(kept) > 1 else kept[0]), notes


REAL_WEIGHTS_ROW = [("group_size", "int", None), ("symmetric", "bool", None), ("layers", "int", None),
                    ("sqnr_db_min", "float", None), ("sqnr_db_median", "float", None)]


def load_real_weights(path, root):
    """({generated, package, blocks, rows}, notes) of the file `real-weights` wrote, read only inside the folder
    `root`; (None, []) when absent."""
    path = Path(path)
    if not os.path.lexists(path):
        return None, []
    obj, note = read_json(path, root)
    if note or not isinstance(obj, dict):
        return None, [note or f"{path}: not a JSON object: left out"]
    notes = Notes(path)
    rows = [{name: read(r, name, kind, notes, f"summary[{i}].", default) for name, kind, default in REAL_WEIGHTS_ROW}
            for i, r in enumerate(dicts(obj, "summary", notes, required=True))]
    table = dict(generated=read(obj, "generated", "str", notes, default="?"),
                 harness_version=read(obj, "harness_version", "str", notes, default="?"),
                 package=read(obj, "package", "str", notes, default="?"),
                 package_version=read(obj, "package_version", "str", notes, default="?"),
                 blocks=read(obj, "blocks", "list", notes, default=[]), rows=rows)
    return table, notes.lines()


def load_power(path, root):
    """({profile, killed, correct}, notes) of the power table benchmarks/power.py wrote, read only inside the
    folder `root`; (None, []) when absent.

    killed: rows of planted defects (name, contract, passed, killed_by, shape, failed, seconds); correct: rows
    of correct candidates (name, contract, passed, bound_used, designs, seconds)."""
    path = Path(path)
    if not os.path.lexists(path):
        return None, []
    obj, note = read_json(path, root)
    if note or not isinstance(obj, dict) or not isinstance(obj.get("rows"), list):
        return None, [note or f"{path}: no 'rows' list: the power table is left out"]
    rows = [r for r in obj["rows"] if isinstance(r, dict) and isinstance(r.get("name"), str)]
    notes = [f"{path}: {len(obj['rows']) - len(rows)} row(s) that are not objects left out"] if len(rows) < len(
        obj["rows"]) else []
    # "; " between items: a design's name may hold a comma ("unfused, w in x.dtype")
    text = lambda v: v if isinstance(v, str) else "; ".join(map(str, v)) if isinstance(v, list) else ""  # noqa: E731
    killed = [dict(name=r["name"], contract=text(r.get("contract")), passed=r.get("passed") is True,
                   killed_by=text(r.get("killed_by")), shape=text(r.get("shape")), failed=text(r.get("failed")),
                   seconds=r.get("seconds")) for r in rows if r.get("expected") == "fail"]
    correct = [dict(name=r["name"], contract=text(r.get("contract")), passed=r.get("passed") is True,
                    bound_used=r.get("bound_used") if isinstance(r.get("bound_used"), dict) else {},
                    designs=text(r.get("designs")), seconds=r.get("seconds")) for r in rows if r.get("expected") == "pass"]
    return dict(profile=text(obj.get("profile")), killed=killed, correct=correct), notes
