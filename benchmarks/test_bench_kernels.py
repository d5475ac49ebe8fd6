"""Time every backend on every case of the grid, after checking it once against the reference.

The benchmark itself (check, prepare, time, work) is harness.bench.runner, shared with
`int4-harness bench`; this module parametrizes it over the grid (benchmarks/conftest.py) and lets
pytest-benchmark drive the calls, timed by harness.bench.timing (perf_counter on CPU, CUDA events on
a GPU). Run with `pytest benchmarks --benchmark-only`; pick the grid with BENCH_GRID or --bench-grid.
A timing that harness.bench.honesty flags (its result differs from an untimed call's, or it beats the
bytes-moved floor) is written with its flag and fails its test: it is evidence, not a result.
"""
import pytest

from int4_lora_harness.bench.honesty import flag
from int4_lora_harness.bench.runner import Refused, Skipped, measure


def pedantic(benchmark):
    """A timing driver that lets pytest-benchmark run the calls (and show them in its own table)."""
    def drive(fn, rounds, warmup):
        benchmark.pedantic(fn, rounds=rounds, warmup_rounds=warmup, iterations=1)
    return drive


def test_bench(benchmark, bench_case, bench_session, bench_record):
    backend, operation, point = bench_case
    if benchmark.disabled:
        pytest.skip("timed only under --benchmark-only (pytest-benchmark)")
    try:
        fields = measure(backend, operation, point, bench_session["device"], bench_session["grid"],
                         bench_session["verdicts"], driver=pedantic(benchmark))
    except Skipped as reason:
        pytest.skip(str(reason))
    except Refused as reason:
        pytest.fail(str(reason), pytrace=False)
    why = flag(bench_record(fields))
    if why:
        pytest.fail(f"timing flagged, not a result: {why}", pytrace=False)
