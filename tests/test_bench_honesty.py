"""Timings a kernel cannot fake (issue 26): cheats planted after warm-up are flagged, a time below the
bytes-moved floor is flagged impossible, and the CUDA timer waits for every stream."""
import math

import pytest
import torch

from int4_lora_harness.bench import grids, honesty, runner, timing
from int4_lora_harness.bench import store as perf_store
from planted import cheats
from test_perf_store import sample_row

TINY = (64, 128)  # out, in: the check runs in milliseconds


@pytest.fixture
def grid(monkeypatch):
    """A layer of TINY shape in the shapes table, and a grid timing 20 rounds after 10 warm-up calls: a planted
    cheat (WARM_CALLS = 12 calls on one tensor) is honest in the untimed calls and cheats in every timed one."""
    monkeypatch.setitem(runner.LAYER_SHAPES, "tiny", TINY)
    return dict(grids.GRIDS["smoke"], min_rounds=20, max_rounds=20)


def point(**changes):
    return {**grids.DEFAULTS, **grids.ABSENT, "layer": "tiny", "m": 3, "rank": 4, "num_loras": 2,
            "popularity": "zipf", **changes}


def measured(backend, operation, grid, candidate=None):
    targets = {backend: candidate} if candidate else None
    fields = runner.measure(backend, operation, point() if operation != "dequantize" else point(m=None), "cpu", grid,
                            {}, targets=targets)
    assert fields["verification"].startswith(("passed", "is the reference"))  # past the check before timing
    return fields


@pytest.mark.parametrize("backend, operation", [("torch", "gemm_lora"), ("torch", "dequantize"),
                                                ("reference", "gemm"), ("dense", "gemm_lora"),
                                                ("materialize", "dequantize")])
def test_honest_backends_pass_the_result_check(grid, backend, operation):
    assert measured(backend, operation, grid)["result_check"] == "ok"


def test_a_result_cached_after_warmup_is_flagged_when_an_input_changes_in_place(grid):
    check = measured("cached", "gemm_lora", grid, cheats.cached_after_warmup)["result_check"]
    assert check == "differs: after x was changed in place, the result was bitwise the one before (a cached result)"


def test_a_result_wrong_after_warmup_differs_from_the_untimed_call(grid):
    check = measured("wrong", "gemm_lora", grid, cheats.wrong_after_warmup)["result_check"]
    assert check.startswith("differs: the first timed call's result is not bitwise the untimed call's: "
                            "1 of 192 elements differ, the first at flat index 191")
    assert "the last timed call's result is not bitwise" in check


def test_results_in_reused_output_memory_are_flagged(grid):
    check = measured("one-buffer", "dequantize", grid, cheats.one_buffer_after_warmup)["result_check"]
    assert check == ("differs: the first timed and the last timed call's results share memory "
                     "(output memory reused)")


def test_work_deferred_to_a_thread_is_flagged_by_the_result_when_the_timer_stopped(grid):
    check = measured("deferred", "gemm_lora", grid, cheats.defers_to_a_thread)["result_check"]
    assert check.startswith("differs: the first timed call's result is not bitwise the untimed call's: ")


def test_a_wrong_untimed_result_is_named_with_the_tolerance_judges_worst_element():
    case = runner.make_case(point(layer="llama3-8b.k_proj"), "gemm", 2)
    y = torch.zeros(2, case.weights.shape[0], dtype=torch.float16)
    problem = honesty.untimed_problem("gemm", case, y, rows=1)
    assert problem.startswith("the untimed call is not within tolerance: worst element (0, ")
    assert honesty.untimed_problem("gemm", case, y[:1], rows=1) == (
        "the untimed call returned torch.float16 [1, 1024], expected torch.float16 [2, 1024]")


def test_the_floor_is_the_input_bytes_a_cache_cannot_hold_at_the_ceiling_bandwidth():
    assert honesty.floor_seconds(2_000_000_000, 500_000_000, "cold", 1000.0) == 2e-3  # flushed: every byte read
    assert honesty.floor_seconds(2_000_000_000, 500_000_000, "warm", 1000.0) == 1.5e-3
    assert honesty.floor_seconds(2_000_000_000, 3_000_000_000, "warm", 1000.0) == 0.0  # all may be cached
    assert math.isnan(honesty.floor_seconds(2_000_000_000, 0, "cold", math.nan))  # an unknown GPU: no floor
    with pytest.raises(ValueError, match="cache_mode must be 'warm' or 'cold', got 'hot'"):
        honesty.floor_seconds(1, 0, "hot", 1.0)
    with pytest.raises(ValueError, match="input_bytes must be a number of bytes >= 0, got -1"):
        honesty.floor_seconds(-1, 0, "cold", 1.0)


def test_a_row_faster_than_its_floor_is_impossible_and_flagged():
    # 2e9 bytes to read, 0.5e9 cached, 1000 GB/s: floor 1.5 ms
    row = sample_row(input_bytes=2_000_000_000, cache_bytes=500_000_000, ceiling_gbps=1000.0, min_s=1.4e-3)
    assert row["floor_s"] == 1.5e-3 and row["impossible"] is True
    assert honesty.flag(row) == "impossible (below the bytes-moved floor): fastest call 0.0014 s < floor 0.0015 s"
    at_floor = sample_row(input_bytes=2_000_000_000, cache_bytes=500_000_000, ceiling_gbps=1000.0, min_s=1.5e-3)
    assert at_floor["impossible"] is False and honesty.flag(at_floor) == ""


class FakeClock:
    """time.perf_counter for harness.bench.timing that advances 1 ns per reading: every call 'takes' 1 ns."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 1e-9
        return self.now


def test_a_fake_timer_reading_below_the_floor_gives_an_impossible_row(grid, monkeypatch):
    monkeypatch.setattr(timing, "time", FakeClock())
    fields = measured("torch", "gemm", grid)
    assert fields["min_s"] == pytest.approx(1e-9) and fields["input_bytes"] > 4096  # the packed nibbles alone
    run = dict(sample_row(), ceiling_gbps=1.0, cache_bytes=0)  # 1 GB/s, nothing cached: floor > 4 us
    row = perf_store.with_rates({**{k: run[k] for k in ("run_id", "git_commit", "git_dirty", "host", "device_name",
                                                        "torch_version", "triton_version", "grid", "test_id",
                                                        "peak_gbps", "peak_tflops", "peak_source", "ceiling_gbps",
                                                        "cache_bytes")}, **fields})
    assert row["floor_s"] == fields["input_bytes"] / 1e9 and row["impossible"] is True
    assert honesty.flag(row).startswith("impossible (below the bytes-moved floor)")


def test_compare_gives_no_speedup_to_a_flagged_timing(tmp_path):
    perf_store.write_rows([sample_row(), sample_row(m=64)], tmp_path / "a.parquet")
    perf_store.write_rows([sample_row(run_id="run-b", median_s=0.25, result_check="differs: planted"),
                           sample_row(run_id="run-b", m=64, median_s=0.25)], tmp_path / "b.parquet")
    out = perf_store.compare(perf_store.load_runs(tmp_path), "run-a", "run-b").sort_values("m")
    assert out["flag_b"].tolist() == ["result differs: planted", ""] and out["flag_a"].tolist() == ["", ""]
    assert math.isnan(out["speedup"].iloc[0]) and out["speedup"].iloc[1] == 2.0


class CudaLog:
    """Stands in for torch.cuda in harness.bench.timing: logs synchronize() and what the events are asked to do."""

    def __init__(self, log):
        self.log, self.events = log, 0

    def Event(self, enable_timing):
        self.events += 1
        return LoggedEvent(self.log, "start" if self.events == 1 else "end")

    def synchronize(self):
        self.log.append("synchronize")


class LoggedEvent:
    def __init__(self, log, name):
        self.log, self.name = log, name

    def record(self):
        self.log.append(f"record {self.name}")

    def synchronize(self):
        self.log.append(f"wait {self.name}")

    def elapsed_time(self, end):
        return 1.0


def test_the_cuda_timer_stops_after_a_device_wide_synchronize(monkeypatch):
    log = []
    monkeypatch.setattr(timing.torch, "cuda", CudaLog(log))
    timing.time_calls(lambda: log.append("call"), "cuda", rounds=1, warmup=0)
    assert log == ["synchronize", "record start", "call", "synchronize", "record end", "wait end"]


def test_work_left_on_another_cuda_stream_is_finished_when_the_timer_stops():
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine")
    side = torch.cuda.Stream()

    def on_a_side_stream():
        y = torch.zeros(1 << 20, device="cuda")
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            torch.cuda._sleep(50_000_000)  # tens of milliseconds of GPU time on the side stream
            y.fill_(1.0)
        return y
    result = timing.time_calls(on_a_side_stream, "cuda", rounds=2, warmup=0, capture=honesty.snapshot)
    assert all(bool((snap.values == 1.0).all()) for snap in result.captured)
