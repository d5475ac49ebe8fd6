"""The one timer every benchmark uses (pytest-benchmark sweeps, `int4-harness bench`, benchmarks/gpu_table.py).

CPU: time.perf_counter around each call, after warm-up calls. A torch CPU op has finished when it
returns, so there is nothing to wait for; work a candidate hands to a thread of its own cannot be
waited for (the timer does not know its threads), so `capture` copies the result the moment the
timer stops, and a result not yet written then differs from the untimed one (harness.bench.honesty).
CUDA: CUDA events around each call, each started on an idle GPU (synchronized), so a multi-kernel
path pays its launch overhead as in decode. The end event is recorded after torch.cuda.synchronize(),
which waits for every stream of the device: work a call launches on a stream of its own is inside its
time (an event on the current stream alone would stop before it). This adds the host's return from the
synchronize and the end event's launch to every call (docs/bench_schema.md, `timer`).
`cold`: the L2 cache overwritten before every call, so weights stream from HBM. The number of rounds
fills a time budget within [min_rounds, max_rounds]. Reported: median, IQR (q3 - q1), minimum and the
rounds measured.
"""
import math
import time
from dataclasses import dataclass, field

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
    captured: tuple = field(default=(), repr=False)  # capture(result) of the first and the last timed call


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


def time_once(target, device):
    """(seconds, result) of one call of the zero-argument `target`, timed as time_calls times each call (no warm-up:
    a two-phase TARGET's prepare, which runs once per case)."""
    call, _ = (_cuda_timed if device == "cuda" else _cpu_timed)(target, "warm")
    return call()


def rounds_for(seconds_per_call, max_time_s, min_rounds, max_rounds):
    """Rounds that fill `max_time_s`, clamped to [min_rounds, max_rounds]."""
    return min(max_rounds, max(min_rounds, math.ceil(max_time_s / seconds_per_call)))


def plain_driver(fn, rounds, warmup):
    """Call fn warmup + rounds times (pytest-benchmark's `pedantic` stands in for it in benchmarks/)."""
    for _ in range(warmup + rounds):
        fn()


def time_calls(target, device, rounds, cache_mode="warm", warmup=None, driver=plain_driver, capture=None):
    """Timing of `rounds` calls of the zero-argument `target` on `device` ('cpu' | 'cuda').

    capture: None, or a function of a call's result, applied to the first and the last timed call's result
    right after the timer stopped (before any other call); Timing.captured holds what it returned."""
    warmup = min(rounds, 10) if warmup is None else warmup
    seconds, captured = [], {}
    timed_call = _cuda_timed if device == "cuda" else _cpu_timed
    call, timer = timed_call(target, cache_mode)

    def fn():
        elapsed, result = call()
        seconds.append(elapsed)
        if capture is not None and len(seconds) - 1 in (warmup, warmup + rounds - 1):
            captured[len(seconds) - 1] = capture(result)
    driver(fn, rounds, warmup)
    measured = np.array(seconds[warmup:warmup + rounds])  # warm-up first; a profiler may add calls after
    q1, median, q3 = np.percentile(measured, [25, 50, 75])
    return Timing(float(median), float(q3 - q1), float(measured.min()), int(measured.size), timer,
                  tuple(captured[i] for i in sorted(captured)))


def _cpu_timed(target, cache_mode):
    """(call: () -> (seconds, result) of one perf_counter-timed call, the timer's description)."""
    def call():
        start = time.perf_counter()
        result = target()
        return time.perf_counter() - start, result
    return call, "perf_counter"


def _cuda_timed(target, cache_mode):
    """(call: () -> (seconds, result) of one call timed by CUDA events up to a device-wide synchronize, the
    timer's description)."""
    flush = None
    if cache_mode == "cold":
        from int4_lora_harness.bench.devices import l2_cache_bytes
        flush = torch.empty(max(2 * l2_cache_bytes(), L2_FLUSH_MIN_BYTES), dtype=torch.uint8, device="cuda")
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def call():
        if flush is not None:
            flush.zero_()
        torch.cuda.synchronize()  # untimed: each call starts on an idle GPU
        start.record()
        result = target()
        torch.cuda.synchronize()  # every stream of the device, not only the current one
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3, result
    cold = "; L2 flushed before each call" if flush is not None else ""
    return call, f"cuda events to a device-wide synchronize{cold}"
