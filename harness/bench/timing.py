"""The one timer every benchmark uses (pytest-benchmark sweeps, `int4-harness bench`, benchmarks/gpu_table.py).

CPU: time.perf_counter around each call, after warm-up calls. CUDA: CUDA events around each call,
each started on an idle GPU (synchronized), so a multi-kernel path pays its launch overhead as in
decode; `cold`: the L2 cache overwritten before every call, so weights stream from HBM. The
number of rounds fills a time budget within [min_rounds, max_rounds]. Reported: median, IQR
(q3 - q1), minimum and the rounds measured.
"""
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

L2_FLUSH_MIN_BYTES = 64 << 20  # overwrite at least this much, and twice the L2 the device reports


@dataclass
class Timing:
    median_s: float
    iqr_s: float
    min_s: float
    rounds: int
    timer: str  # how it was measured, in words (a bench row's `timer` column)


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def one_call_seconds(target, device):
    """Wall seconds of one synchronized call of a warmed-up `target`: sizes the number of rounds."""
    _sync(device)
    start = time.perf_counter()
    target()
    _sync(device)
    return max(time.perf_counter() - start, 1e-7)


def rounds_for(seconds_per_call, max_time_s, min_rounds, max_rounds):
    """Rounds that fill `max_time_s`, clamped to [min_rounds, max_rounds]."""
    return min(max_rounds, max(min_rounds, math.ceil(max_time_s / seconds_per_call)))


def plain_driver(fn, rounds, warmup):
    """Call fn warmup + rounds times (pytest-benchmark's `pedantic` stands in for it in benchmarks/)."""
    for _ in range(warmup + rounds):
        fn()


def time_calls(target, device, rounds, cache_mode="warm", warmup=None, driver=plain_driver):
    """Timing of `rounds` calls of the zero-argument `target` on `device` ('cpu' | 'cuda')."""
    warmup = min(rounds, 10) if warmup is None else warmup
    seconds = []
    if device == "cuda":
        fn, timer = _cuda_timed(target, seconds, cache_mode)
    else:
        def fn():
            start = time.perf_counter()
            target()
            seconds.append(time.perf_counter() - start)
        timer = "perf_counter"
    driver(fn, rounds, warmup)
    measured = np.array(seconds[warmup:warmup + rounds])  # warm-up first; a profiler may add calls after
    q1, median, q3 = np.percentile(measured, [25, 50, 75])
    return Timing(float(median), float(q3 - q1), float(measured.min()), int(measured.size), timer)


def _cuda_timed(target, seconds, cache_mode):
    """(fn recording one call's CUDA-event seconds into `seconds`, the timer's description)."""
    flush = None
    if cache_mode == "cold":
        from int4_lora_harness.bench.devices import l2_cache_bytes
        flush = torch.empty(max(2 * l2_cache_bytes(), L2_FLUSH_MIN_BYTES), dtype=torch.uint8, device="cuda")
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def fn():
        if flush is not None:
            flush.zero_()
        torch.cuda.synchronize()  # untimed: each call starts on an idle GPU
        start.record()
        target()
        end.record()
        end.synchronize()
        seconds.append(start.elapsed_time(end) / 1e3)
    return fn, "cuda events" + ("; L2 flushed before each call" if flush is not None else "")
