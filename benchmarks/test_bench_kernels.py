"""Time every backend on every case of the grid, after checking it once against the reference.

Backends: the NumPy `reference` (small layers), the registry's fast paths (`torch`,
`triton`), and two baselines written here: `dense` (weights dequantized once, ahead of
time: the speed to beat and the memory to save) and `materialize` (dequantize to
x.dtype on every call, then a dense matmul: the approach this project replaces).
Operations: `dequantize`, `gemm` (the base alone, no adapters), `gemm_lora` (base +
multi-LoRA). Each timed case becomes one parquet row (docs/bench_schema.md). What is timed:
`dense` without checks (its weight dequantized beforehand), a backend module's `prepare_linear`
(Triton: checks once, then launches only) where it has one, else the public contract call
(`torch`, `materialize`: their argument checks included).

Run with `pytest benchmarks --benchmark-only`; pick the grid with BENCH_GRID or --bench-grid.
"""
import importlib
import math
import time
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from int4_lora_harness import reference
from int4_lora_harness.bench import devices
from int4_lora_harness.verify.cases import TORCH_DTYPES, DequantCase, make_linear_case
from int4_lora_harness.verify.properties import dequantizer_properties, linear_properties, failures
from int4_lora_harness.shapes import LAYER_SHAPES
from int4_lora_harness.kernels.checks import validate_weights
from int4_lora_harness.kernels.registry import BACKENDS
from int4_lora_harness.kernels.torch_path import dequantize as torch_dequantize
from int4_lora_harness.kernels.torch_path import lora_delta, unpack

SEED = 0
VERIFY_M_MAX = 64  # a case is checked at its own M up to this; larger M reuse the check at this M


# --- the two baselines ---------------------------------------------------------------------------

def dense_forward(x, w, lora_a, lora_b, lora_indices, scaling, bias):
    """x [M, in] @ w[out, in]^T + bias in x.dtype (cuBLAS / oneDNN), + the torch path's fp32 LoRA delta.

    The LoRA is the same plain-torch code as the torch path's, so the baselines differ
    from it only in how they treat the base weight.
    """
    y = F.linear(x, w, bias)  # [M, out]
    if lora_a is None:
        return y
    return (y.float() + scaling * lora_delta(x, lora_a, lora_b, lora_indices)).to(x.dtype)


def dense_linear(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias):
    """The dense baseline under SPEC §4's contract, for its check: dequantizes on every call.

    The timed form hoists `torch_dequantize` out of the call (see `prepare`).
    """
    w = torch_dequantize(packed_weights, scales, zero_points, group_size, output_dtype=x.dtype)  # [out, in]
    return dense_forward(x, w, lora_a, lora_b, lora_indices, scaling, bias)


def _per_column(t, kind, in_features, group_size):
    """Scales or zero points -> a tensor that broadcasts against [out, in] (grouped: repeated per column)."""
    if kind == "per-tensor":
        return t.reshape(1, 1)
    if kind == "per-channel":
        return t.reshape(-1, 1)
    return t.repeat_interleave(group_size, dim=1)[:, :in_features]  # [out, in]: what the seed materialized


def materialize_dequantize(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """uint8 [out, in // 2] -> output_dtype [out, in], computed in output_dtype: (v - z) * s.

    Rounds once (so it passes the check) when v - z is an integer (integer zero points)
    and the scales are of output_dtype, as in every grid; unlike the seed, it never
    infers a group size.
    """
    out_features, in_features, scale_kind, zero_kind = validate_weights(packed_weights, scales, zero_points, group_size)
    w = unpack(packed_weights).to(output_dtype)  # [out, in]
    if zero_points is not None:
        w = w - _per_column(zero_points, zero_kind, in_features, group_size).to(output_dtype)
    return w * _per_column(scales, scale_kind, in_features, group_size).to(output_dtype)


def materialize_linear(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling,
                       bias):
    """SPEC §4 by materializing the dense weight in x.dtype on every call, then `dense_forward`."""
    w = materialize_dequantize(packed_weights, scales, zero_points, group_size, output_dtype=x.dtype)
    return dense_forward(x, w, lora_a, lora_b, lora_indices, scaling, bias)


BASELINES = {
    "dense": {"gemm": dense_linear, "gemm_lora": dense_linear},
    "materialize": {"dequantize": materialize_dequantize, "gemm": materialize_linear,
                    "gemm_lora": materialize_linear},
}


# --- cases, checks and the callables that are timed ----------------------------------------------

def unavailable_reason(backend, device):
    """None if `backend` can be timed on `device` here, else why not."""
    if backend == "reference":
        return None if device == "cpu" else "the NumPy reference runs on the CPU only"
    if backend in BACKENDS:
        return BACKENDS[backend].unavailable_reason(device)
    return None


def contract_fn(backend, operation):
    """The function under SPEC's contract (§3 dequantizer or §4 linear) that `backend` runs for `operation`."""
    if backend in BASELINES:
        return BASELINES[backend][operation]
    return BACKENDS[backend].dequantize if operation == "dequantize" else BACKENDS[backend].linear


def make_case(point, operation, m):
    """The LinearCase of a grid point with M = m: seeded, so every M shares the same weights.

    Scales in the point's dtype and integer zero points, both at the point's granularity
    (grouped, or per-channel for group_size None); no bias; no adapters unless `gemm_lora`.
    """
    granularity = "grouped" if point["group_size"] else "per-channel"
    with_lora = operation == "gemm_lora"
    return make_linear_case(SEED, *LAYER_SHAPES[point["layer"]], m, x_dtype=point["dtype"], rank=point["rank"] or 1,
                            num_loras=point["num_loras"] if with_lora else 0,
                            popularity=point["popularity"] if with_lora else "none", bias=False,
                            group_size=point["group_size"], scale_granularity=granularity,
                            zero_granularity=granularity, scales_dtype=point["dtype"])


def verify(backend, operation, point, device, verdicts):
    """(verified_m, summary) once `backend` passed every property on this case; pytest.fail otherwise.

    Checked once per backend, operation and case (M capped at VERIFY_M_MAX); `verdicts`
    keeps the outcomes, so a failing backend is refused on every case it would have been timed on.
    """
    if backend == "reference":
        return None, "is the reference"
    m = 1 if operation == "dequantize" else min(point["m"], VERIFY_M_MAX)
    key = (backend, operation, m, *((k, v) for k, v in point.items() if k not in ("m", "cache_mode")))
    if key not in verdicts:
        case = make_case(point, operation, m)
        fn = contract_fn(backend, operation)
        verdicts[key] = (dequantizer_properties(fn, DequantCase(case.weights, point["dtype"]), device)
                         if operation == "dequantize" else linear_properties(fn, case, device))
    failed = failures(verdicts[key])
    if failed:
        pytest.fail(f"refusing to time backend {backend!r} ({operation}): it fails the reference check at M={m}: "
                    + "; ".join(f"{o.name}: {o.message}" for o in failed), pytrace=False)
    ratio = max((o.max_ratio for o in verdicts[key] if o.max_ratio is not None), default=math.nan)
    return (None if operation == "dequantize" else m), \
        f"passed {len(verdicts[key])} properties; max error/allowed {ratio:.3g}"


def prepare(backend, operation, case, device):
    """A zero-argument callable running one call of `backend` on `case`, inputs already on `device`."""
    if backend == "reference":
        w = case.weights
        if operation == "dequantize":
            return partial(reference.dequantize, w.packed, w.scales, w.zero_points, w.group_size, case.x_dtype)
        return partial(reference.linear, *case.reference_args(), x_dtype=case.x_dtype)
    x, packed, scales, zero_points, group_size, *adapters = case.torch_args(device)
    if operation == "dequantize":
        return partial(contract_fn(backend, operation), packed, scales, zero_points, group_size, x.dtype)
    if backend == "dense":
        w = torch_dequantize(packed, scales, zero_points, group_size, output_dtype=x.dtype)  # once, ahead of time
        return partial(dense_forward, x, w, *adapters)  # holds no packed weights
    module = importlib.import_module(BACKENDS[backend].module) if backend in BACKENDS else None
    if hasattr(module, "prepare_linear"):  # a fast path: validated once, then timed at its launch, like `dense`
        return module.prepare_linear(x, packed, scales, zero_points, group_size, *adapters)
    return partial(contract_fn(backend, operation), x, packed, scales, zero_points, group_size, *adapters)


def weight_bytes(case):
    """(packed bytes: nibbles + scales + zero points, fp16 bytes of the same weight)."""
    w = case.weights
    out_features, in_features = w.shape
    packed = w.packed.nbytes + w.scales.size * TORCH_DTYPES[w.scales_dtype].itemsize
    if w.zero_points is not None:
        packed += w.zero_points.size * TORCH_DTYPES[w.zero_points_dtype].itemsize
    return packed, 2 * out_features * in_features


def work(backend, operation, case):
    """(bytes_moved, flops): compulsory traffic (each operand read once, the output written once) and useful FLOPs.

    The base weight counts in the backend's own format: packed for the INT4 paths, x.dtype
    for `dense`, packed + writing and re-reading the x.dtype copy for `materialize`.
    Adapters count only those some token uses. FLOPs are the same for every backend.
    """
    out_features, in_features = case.weights.shape
    packed, _ = weight_bytes(case)
    size = TORCH_DTYPES[case.x_dtype].itemsize
    dense = out_features * in_features * size
    if operation == "dequantize":
        zeros = case.weights.zero_points is not None
        return packed + dense, out_features * in_features * (2 if zeros else 1)  # (v - z) * s
    m = case.x.shape[0]
    weight = {"dense": dense, "materialize": packed + 2 * dense}.get(backend, packed)
    moved = weight + m * in_features * size + m * out_features * size
    flops = 2 * m * out_features * in_features
    if case.lora_a is not None:
        rank = case.lora_a.shape[1]
        used = np.unique(case.lora_indices[case.lora_indices >= 0]).size
        active = int((case.lora_indices >= 0).sum())
        moved += used * rank * (in_features + out_features) * size + case.lora_indices.nbytes
        flops += 2 * active * rank * (in_features + out_features)
    return moved, flops


def peak_memory(target, device, allocated_before):
    """Bytes allocated at the peak of one call above `allocated_before` (taken before the inputs were); NaN on CPU."""
    if device != "cuda":
        return math.nan
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    target()
    torch.cuda.synchronize()
    return float(torch.cuda.max_memory_allocated() - allocated_before)


def one_call_seconds(target, device):
    """Wall seconds of one synchronized call of a warmed-up `target`: sizes the number of rounds."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    target()
    sync()
    return max(time.perf_counter() - start, 1e-7)


def cuda_event_times(benchmark, target, rounds, cache_mode):
    """(median_s, iqr_s, min_s, rounds, timer) from CUDA events around each of `rounds` calls.

    Each call starts on an idle GPU (synchronized), so a multi-kernel path pays its launch
    overhead as it would in decode. `cold`: L2 is overwritten before each call.
    """
    flush = None
    if cache_mode == "cold":
        flush = torch.empty(max(2 * devices.l2_cache_bytes(), 64 << 20), dtype=torch.uint8, device="cuda")
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    seconds = []

    def setup():  # untimed, before every round
        if flush is not None:
            flush.zero_()
        torch.cuda.synchronize()

    def timed():
        start.record()
        target()
        end.record()
        end.synchronize()
        seconds.append(start.elapsed_time(end) / 1e3)

    warmup = min(rounds, 10)
    benchmark.pedantic(timed, setup=setup, rounds=rounds, warmup_rounds=warmup, iterations=1)
    measured = np.array(seconds[warmup:warmup + rounds])  # warm-up rounds first; --benchmark-cprofile adds calls after
    q1, median, q3 = np.percentile(measured, [25, 50, 75])
    timer = "cuda events" + ("; L2 flushed before each call" if flush is not None else "")
    return float(median), float(q3 - q1), float(measured.min()), int(measured.size), timer


def time_calls(benchmark, target, device, cache_mode, grid):
    """(median_s, iqr_s, min_s, rounds, timer) of `target`, or None when pytest-benchmark is disabled.

    Rounds: enough for the grid's max_time_s, within [min_rounds, max_rounds]. CPU:
    pytest-benchmark's own perf_counter timing, one warm-up round; CUDA: `cuda_event_times`.
    """
    if benchmark.disabled:
        return None
    rounds = math.ceil(grid["max_time_s"] / one_call_seconds(target, device))
    rounds = min(grid["max_rounds"], max(grid["min_rounds"], rounds))
    if device == "cuda":
        return cuda_event_times(benchmark, target, rounds, cache_mode)
    benchmark.pedantic(target, rounds=rounds, warmup_rounds=1, iterations=1)
    stats = benchmark.stats.stats
    return stats.median, stats.iqr, stats.min, stats.rounds, "perf_counter (pytest-benchmark)"


def case_fields(point, case):
    """The row's columns that name the case."""
    out_features, in_features = case.weights.shape
    granularity = "grouped" if point["group_size"] else "per-channel"
    return dict(layer=point["layer"], m=point["m"], n=out_features, k=in_features, group_size=point["group_size"],
                scale_granularity=granularity, zero_granularity=granularity, rank=point["rank"],
                num_loras=point["num_loras"], popularity=point["popularity"], dtype=point["dtype"],
                cache_mode=point["cache_mode"])


def run_benchmark(benchmark, backend, operation, point, session, record):
    """Check `backend` against the reference (once), time it on the grid point, record one row.

    session: dict with the run's `device`, `grid` and `verdicts` (see benchmarks/conftest.py);
    record: called with the row's case, check, timing, work and memory columns.
    """
    device = session["device"]
    reason = unavailable_reason(backend, device)
    if reason:
        pytest.skip(f"backend {backend!r} cannot run on {device} here: {reason}")
    if point["cache_mode"] == "cold" and device != "cuda":
        pytest.skip("cold-cache mode flushes a GPU's L2 before each call; this run is on the CPU")
    verified_m, verification = verify(backend, operation, point, device, session["verdicts"])
    case = make_case(point, operation, point["m"] or 1)
    allocated_before = torch.cuda.memory_allocated() if device == "cuda" else 0
    target = prepare(backend, operation, case, device)
    target()  # warm-up: compiles and autotunes Triton kernels, pages the weights in
    memory = peak_memory(target, device, allocated_before)
    timing = time_calls(benchmark, target, device, point["cache_mode"], session["grid"])
    if timing is None:
        return
    median, iqr, fastest, rounds, timer = timing
    moved, flops = work(backend, operation, case)
    packed, fp16 = weight_bytes(case)
    record(dict(backend=backend, operation=operation, **case_fields(point, case), verified_m=verified_m,
                verification=verification, timer=timer, median_s=median, iqr_s=iqr, min_s=fastest, rounds=rounds,
                bytes_moved=moved, flops=flops, packed_weight_bytes=packed, fp16_weight_bytes=fp16,
                peak_memory_bytes=memory))


def test_bench(benchmark, bench_case, bench_session, bench_record):
    backend, operation, point = bench_case
    run_benchmark(benchmark, backend, operation, point, bench_session, bench_record)
