"""The benchmark machinery without timing anything real: rows -> parquet, loading, comparing, grids, refusal."""
import datetime
import math
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from int4_lora_harness.bench import grids, runner
from int4_lora_harness.bench import store as perf_store
from int4_lora_harness.kernels.torch_path import linear as torch_linear

ROOT = Path(__file__).resolve().parents[1]
TINY = (64, 128)  # out, in: the check runs in milliseconds


def sample_row(**changes):
    row = dict(run_id="run-a", timestamp=datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc),
               git_commit="abc", git_dirty=False, host="h", device_name="cpu", torch_version="t",
               triton_version="3", grid="cpu", test_id="benchmarks/test_bench_kernels.py::test_bench[x]",
               backend="torch", operation="gemm", layer="llama3-8b.k_proj", m=16, n=1024, k=4096, group_size=128,
               scale_granularity="grouped", zero_granularity="grouped", rank=0, num_loras=0, popularity="none",
               dtype="fp16", cache_mode="warm", verified_m=16, verification="passed", timer="perf_counter",
               median_s=0.5, iqr_s=0.1, min_s=0.4, rounds=5, result_check="ok", input_bytes=1_000_000_000,
               ceiling_gbps=80.0, cache_bytes=0, bytes_moved=2_000_000_000, flops=4_000_000_000_000,
               peak_gbps=20.0, peak_tflops=math.nan, peak_source="measured", packed_weight_bytes=1,
               fp16_weight_bytes=4, peak_memory_bytes=math.nan)
    return perf_store.with_rates({**row, **changes})


def test_rates_come_from_the_byte_and_flop_counts():
    row = sample_row()
    assert row["achieved_gbps"] == 4.0 and row["achieved_tflops"] == 8.0
    assert row["frac_peak_bandwidth"] == 0.2 and math.isnan(row["frac_peak_compute"])


def test_docs_list_exactly_the_schema_columns():
    text = (ROOT / "docs" / "bench_schema.md").read_text()
    documented = re.findall(r"^\| `(\w+)` \|", text, flags=re.MULTILINE)
    assert sorted(documented) == sorted(perf_store.SCHEMA.names)


def test_rows_round_trip_through_parquet_with_every_column(tmp_path):
    rows = [sample_row(), sample_row(operation="dequantize", m=None, verified_m=None, group_size=None)]
    perf_store.write_rows(rows, tmp_path / "run-a.parquet")
    df = pd.read_parquet(tmp_path / "run-a.parquet")
    assert list(df.columns) == perf_store.SCHEMA.names
    assert df["m"].tolist()[0] == 16 and math.isnan(df["m"].tolist()[1])


def test_a_row_with_missing_or_extra_columns_is_refused_naming_them(tmp_path):
    row = sample_row(colour="blue")
    del row["median_s"]
    with pytest.raises(ValueError, match=r"missing \['median_s'\], unexpected \['colour'\]"):
        perf_store.write_rows([row], tmp_path / "run.parquet")
    assert list(tmp_path.iterdir()) == []


def _write_half_then_fail(error):
    def write_table(table, path):
        Path(path).write_bytes(b"PAR1 half a file")
        raise error
    return write_table


def test_a_failed_write_leaves_the_previous_file_whole_and_no_temp_file(tmp_path, monkeypatch):
    path, rows = tmp_path / "run.parquet", []
    perf_store.append_row(rows, sample_row(), path)
    monkeypatch.setattr(perf_store.pq, "write_table", _write_half_then_fail(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        perf_store.append_row(rows, sample_row(m=64), path)
    assert [p.name for p in tmp_path.iterdir()] == ["run.parquet"]
    assert len(rows) == 1 and pd.read_parquet(path)["m"].tolist() == [16]


def test_an_interrupted_run_keeps_every_completed_row(tmp_path, monkeypatch):
    path, rows = tmp_path / "run.parquet", []
    for m in (1, 4, 16):
        perf_store.append_row(rows, sample_row(m=m), path)
    monkeypatch.setattr(perf_store.pq, "write_table", _write_half_then_fail(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        perf_store.append_row(rows, sample_row(m=64), path)
    assert pd.read_parquet(path)["m"].tolist() == [1, 4, 16]


def test_load_runs_skips_unreadable_files_and_names_them(tmp_path):
    perf_store.write_rows([sample_row()], tmp_path / "good.parquet")
    (tmp_path / "garbage.parquet").write_bytes(b"not parquet at all")
    with pytest.warns(UserWarning, match="garbage.parquet: unreadable"):
        df = perf_store.load_runs(tmp_path)
    assert df["run_id"].tolist() == ["run-a"] and df["file"].tolist() == ["good.parquet"]
    assert "garbage.parquet: unreadable" in df.attrs["skipped_files"][0]


def test_load_runs_reads_a_file_of_an_older_schema_with_nulls_and_says_so(tmp_path):
    perf_store.write_rows([sample_row()], tmp_path / "new.parquet")
    older = pd.read_parquet(tmp_path / "new.parquet").drop(columns=["harness_version", "rounds"])
    older.assign(run_id="run-old").to_parquet(tmp_path / "old.parquet")
    with pytest.warns(UserWarning, match=r"old.parquet: lacks columns \['harness_version', 'rounds'\]"):
        df = perf_store.load_runs(tmp_path)
    old = df[df["run_id"] == "run-old"].iloc[0]
    assert len(df) == 2 and pd.isna(old["harness_version"]) and pd.isna(old["rounds"]) and old["median_s"] == 0.5
    assert df.attrs["skipped_files"] == [] and "an older schema" in df.attrs["filled"][0]


def test_a_row_without_harness_version_is_stamped_with_this_harness_version(tmp_path):
    from int4_lora_harness import __version__
    row = sample_row()
    assert "harness_version" not in row
    perf_store.write_rows([row, sample_row(harness_version="0.1.0")], tmp_path / "run.parquet")
    assert pd.read_parquet(tmp_path / "run.parquet")["harness_version"].tolist() == [__version__, "0.1.0"]


def test_load_runs_of_an_empty_folder_has_the_schema_columns(tmp_path):
    assert list(perf_store.load_runs(tmp_path).columns) == [*perf_store.SCHEMA.names, "file"]


def test_compare_gives_the_speedup_per_case_including_dequantize(tmp_path):
    deq = dict(operation="dequantize", m=None)
    perf_store.write_rows([sample_row(), sample_row(**deq)], tmp_path / "a.parquet")
    perf_store.write_rows([sample_row(run_id="run-b", median_s=0.25), sample_row(run_id="run-b", median_s=1.0, **deq)],
                          tmp_path / "b.parquet")
    out = perf_store.compare(perf_store.load_runs(tmp_path), "run-a", "run-b").sort_values("operation")
    assert out["operation"].tolist() == ["dequantize", "gemm"] and out["speedup"].tolist() == [0.5, 2.0]
    with pytest.raises(ValueError, match=r"run 'run-c' is not in the data; runs: \['run-a', 'run-b'\]"):
        perf_store.compare(perf_store.load_runs(tmp_path), "run-a", "run-c")


def test_every_named_grid_is_valid_and_the_gemm_is_timed_once_per_m():
    for name in grids.GRIDS:
        grids.select(name)
    cases = grids.benchmarks(grids.GRIDS["cpu"])
    keys = [(b, op, tuple(p.items())) for b, op, p in cases]
    assert len(keys) == len(set(keys))
    gemm = [p for b, op, p in cases if (b, op) == ("torch", "gemm") and p["layer"] == "llama3-8b.k_proj"]
    assert all(p["num_loras"] == 0 for p in gemm) and len(gemm) == len({tuple(p.items()) for p in gemm})


def test_an_unknown_grid_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown benchmark grid 'cpu2'; valid grids: cpu, gpu, smoke"):
        grids.select("cpu2")


@pytest.mark.parametrize("axes, message", [
    ({"layer": ["llama3-8b.qproj"]}, "layer must be a layer of int4_lora_harness.shapes.LAYER_SHAPES"),
    ({"popularity": ["skewed"]}, "popularity must be one of"),
    ({"group_size": [0]}, "group_size must be a positive int, or None"),
    ({"m": 5}, "axis 'm' must be a non-empty list"),
    ({"colour": ["red"]}, "unknown axis 'colour'"),
])
def test_a_bad_grid_axis_is_named_with_its_rule(axes, message):
    grid = dict(grids.GRIDS["smoke"], sweeps={"mine": axes})
    with pytest.raises(ValueError, match=re.escape(f"grid 'bad', sweep 'mine': {message}")):
        grids.select("bad", {"bad": grid})


def test_the_default_grid_follows_bench_grid_then_cuda():
    assert grids.default_name({"BENCH_GRID": "smoke"}, cuda_available=True) == "smoke"
    assert grids.default_name({}, cuda_available=True) == "gpu"
    assert grids.default_name({}, cuda_available=False) == "cpu"
    with pytest.raises(ValueError, match="grid 'gpu' runs on CUDA, which is not available here"):
        grids.device_for(grids.GRIDS["gpu"], "gpu", cuda_available=False)


def test_pytest_stops_on_a_bad_grid_name_before_running_anything():
    result = subprocess.run([sys.executable, "-m", "pytest", "benchmarks", "--bench-grid", "nope", "--collect-only",
                             "-q", "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 4  # pytest's usage error
    assert "unknown benchmark grid 'nope'; valid grids: cpu, gpu, smoke" in result.stderr


class CountingDriver:
    """A timing driver (harness.bench.timing) that calls fn as plain_driver does and counts the calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, fn, rounds, warmup):
        for _ in range(warmup + rounds):
            fn()
            self.calls += 1


def wrong_linear(*args, **kwargs):
    """The torch path, off by one in the last element."""
    y = torch_linear(*args, **kwargs)
    y[-1, -1] += 1
    return y


@pytest.fixture
def tiny_grid(monkeypatch):
    """A layer of TINY shape in the shapes table for the test, and a grid timing 2 rounds."""
    monkeypatch.setitem(runner.LAYER_SHAPES, "tiny", TINY)
    return dict(grids.GRIDS["smoke"], min_rounds=2, max_rounds=2)


def tiny_point(**changes):
    return {**grids.DEFAULTS, **grids.ABSENT, "layer": "tiny", "m": 3, **changes}


def test_a_backend_that_gives_wrong_values_is_refused_before_it_is_timed(tiny_grid):
    driver, verdicts = CountingDriver(), {}
    for _ in range(2):  # refused every time, from the one check
        with pytest.raises(runner.Refused, match=r"refusing to time backend 'wrong' \(gemm\): it fails the "
                                                 r"reference check at M=3: within tolerance: worst element"):
            runner.measure("wrong", "gemm", tiny_point(), "cpu", tiny_grid, verdicts, targets={"wrong": wrong_linear},
                           driver=driver)
    assert driver.calls == 0 and len(verdicts) == 1


def test_a_correct_backend_is_timed_into_a_row_of_the_schema(tiny_grid, tmp_path):
    driver = CountingDriver()
    point = tiny_point(rank=4, num_loras=2, popularity="zipf")
    fields = runner.measure("torch", "gemm_lora", point, "cpu", tiny_grid, {}, driver=driver)
    assert driver.calls == 4 and fields["rounds"] == 2  # 2 warm-up calls, 2 timed
    run = {c: sample_row()[c] for c in ("run_id", "git_commit", "git_dirty", "host", "device_name",
                                         "torch_version", "triton_version", "grid", "test_id", "peak_gbps",
                                         "peak_tflops", "peak_source", "ceiling_gbps", "cache_bytes")}
    perf_store.write_rows([perf_store.with_rates({**run, **fields})], tmp_path / "run.parquet")
    row = pd.read_parquet(tmp_path / "run.parquet").iloc[0]
    assert (row["n"], row["k"], row["m"], row["verified_m"]) == (64, 128, 3, 3) and row["median_s"] > 0
    assert re.match(r"passed \d+ properties; max error/allowed ", row["verification"])
    assert row["result_check"] == "ok" and row["floor_s"] == row["input_bytes"] / 80e9 > 0  # warm, no cache
