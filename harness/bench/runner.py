"""One benchmark: check a backend once against the reference, time it on a grid point, make its parquet row.

Used by the pytest-benchmark sweeps (benchmarks/test_bench_kernels.py) and by `int4-harness bench` alike.
Backends: the NumPy `reference` (small layers), the registry's fast paths (`torch`, `triton`, ...), the
baselines `dense` and `materialize` (harness.bench.baselines), and a user's TARGET (any other name, with
its functions given in `targets`). What is timed: `dense` without checks (its weight dequantized
beforehand), a backend module's `prepare_linear` where it has one (Triton: checks once, then launches),
a two-phase TARGET's apply alone (harness.bench.two_phase: its prepare runs once per case, timed on its own as
prepare_s), else the contract call by keyword (argument checks included). The case is built in the candidate's
domain where harness.bench.domain_grid chose its options (case_options).
Each row's timing is checked after it is taken (harness.bench.honesty): `result_check` compares the timed
calls' results with an untimed call's, judged against the reference, and `input_bytes` sets the row's
bytes-moved floor (harness.bench.store.with_rates).
"""
import datetime
import importlib
import math
from functools import partial

import numpy as np
import torch

from int4_lora_harness import reference
from int4_lora_harness.bench import devices, load
from int4_lora_harness.bench.baselines import BASELINES, dense_forward
from int4_lora_harness.bench.honesty import result_check, snapshot, untimed_problem
from int4_lora_harness.bench.two_phase import WEIGHTS, TwoPhase
from int4_lora_harness.bench.timing import one_call_seconds, plain_driver, rounds_for, time_calls
from int4_lora_harness.bench.work import case_input_bytes, case_work, weight_bytes
from int4_lora_harness.kernels.registry import BACKENDS
from int4_lora_harness.kernels.torch_path import dequantize as torch_dequantize
from int4_lora_harness.shapes import LAYER_SHAPES
from int4_lora_harness.verify.cases import CONTRACT_PARAMETERS, DequantCase, make_linear_case
from int4_lora_harness.verify.properties import dequantizer_properties, failures, linear_properties

SEED = 0
VERIFY_M_MAX = 64  # a case is checked at its own M up to this; larger M reuse the check at this M


class Skipped(Exception):
    """This benchmark cannot run here (the reason is the message)."""


class Refused(Exception):
    """The backend failed its check on this case: it is not timed (the outcomes are the message)."""


def unavailable_reason(backend, device):
    """None if `backend` can be timed on `device` here, else why not."""
    if backend == "reference":
        return None if device == "cpu" else "the NumPy reference runs on the CPU only"
    if backend in BACKENDS:
        return BACKENDS[backend].unavailable_reason(device)
    return None


def contract_fn(backend, operation, targets=None):
    """The contract function (docs/contract.md#dequantizer or #linear) `backend` runs for `operation` (a two-phase TARGET's:
    prepare then apply, harness.bench.two_phase)."""
    if targets and backend in targets:
        target = targets[backend]
        return target.one_call(operation) if isinstance(target, TwoPhase) else target
    if backend in BASELINES:
        return BASELINES[backend][operation]
    return BACKENDS[backend].dequantize if operation == "dequantize" else BACKENDS[backend].linear


def case_options(point):
    """(scales_dtype, zero_points, granularity) of a grid point: what harness.bench.domain_grid chose in the
    candidate's domain, else the grids' own: scales in the point's dtype, integer zero points, grouped scales with
    a group size and per-channel ones without."""
    granularity = point.get("granularity") or ("grouped" if point["group_size"] else "per-channel")
    return point.get("scales_dtype", point["dtype"]), point.get("zero_points", "integer"), granularity


def make_case(point, operation, m):
    """The LinearCase of a grid point with M = m, seeded so every M shares the same weights: scales and zero points
    as case_options says (zero points at the scales' granularity); no bias; no adapters unless `gemm_lora`."""
    scales_dtype, zero_points, granularity = case_options(point)
    with_lora = operation == "gemm_lora"
    return make_linear_case(SEED, *LAYER_SHAPES[point["layer"]], m, x_dtype=point["dtype"], rank=point["rank"] or 1,
                            num_loras=point["num_loras"] if with_lora else 0,
                            popularity=point["popularity"] if with_lora else "none", bias=False,
                            group_size=point["group_size"], scale_granularity=granularity,
                            zero_granularity=None if zero_points == "none" else granularity,
                            zero_kind="int" if zero_points == "integer" else "float", scales_dtype=scales_dtype)


def check(backend, operation, point, device, verdicts, targets=None):
    """(verified_m, summary) once `backend` passed every property on this case, else Refused.

    Checked once per backend, operation and case (M capped at VERIFY_M_MAX); `verdicts` keeps the
    outcomes, so a failing backend is refused on every case it would have been timed on."""
    if backend == "reference":
        return None, "is the reference"
    m = 1 if operation == "dequantize" else min(point["m"], VERIFY_M_MAX)
    key = (backend, operation, m, *((k, v) for k, v in point.items() if k not in ("m", "cache_mode")))
    if key not in verdicts:
        case = make_case(point, operation, m)
        fn = contract_fn(backend, operation, targets)
        verdicts[key] = (dequantizer_properties(fn, DequantCase(case.weights, point["dtype"]), device)
                         if operation == "dequantize" else linear_properties(fn, case, device))
    failed = failures(verdicts[key])
    if failed:
        raise Refused(f"refusing to time backend {backend!r} ({operation}): it fails the reference check at M={m}: "
                      + "; ".join(f"{o.name}: {o.message}" for o in failed))
    ratio = max((o.max_ratio for o in verdicts[key] if o.max_ratio is not None), default=math.nan)
    return (None if operation == "dequantize" else m), f"passed {len(verdicts[key])} properties; " \
                                                       f"max error/allowed {ratio:.3g}"


def call_inputs(backend, case, device):
    """The arguments one call reads, by contract name: the case's NumPy arrays for the reference (docs/contract.md#linear's order),
    else its tensors on `device` (harness.verify.cases.LinearCase.torch_kwargs)."""
    if backend == "reference":
        return dict(zip(CONTRACT_PARAMETERS["linear"], case.reference_args()))
    return case.torch_kwargs(device)


def prepare(backend, operation, case, inputs, device, targets=None):
    """A zero-argument callable running one call of `backend` on `case`, reading `inputs` (call_inputs): an input
    changed in place is seen by the next call."""
    names = CONTRACT_PARAMETERS["dequantizer"][:4]
    if backend == "reference":
        if operation == "dequantize":
            return partial(reference.dequantize, *(inputs[n] for n in names), case.x_dtype)
        return partial(reference.linear, *inputs.values(), x_dtype=case.x_dtype)
    if operation == "dequantize":
        return partial(contract_fn(backend, operation, targets), **{n: inputs[n] for n in names},
                       output_dtype=inputs["x"].dtype)
    if backend == "dense":
        w = torch_dequantize(inputs["packed_weights"], inputs["scales"], inputs["zero_points"], inputs["group_size"],
                             output_dtype=inputs["x"].dtype)  # once, ahead of time
        return partial(dense_forward, inputs["x"], w, inputs["lora_a"], inputs["lora_b"], inputs["lora_indices"],
                       inputs["scaling"], inputs["bias"])  # holds no packed weights
    module = importlib.import_module(BACKENDS[backend].module) if backend in BACKENDS else None
    if hasattr(module, "prepare_linear"):  # a fast path: validated once, then timed at its launch, like `dense`
        return module.prepare_linear(*inputs.values())
    return partial(contract_fn(backend, operation, targets), **inputs)


CHANGED_INPUT = {"dequantize": "scales", "gemm": "x", "gemm_lora": "x"}  # what change_in_place negates


def change_in_place(operation, inputs):
    """Negate in place the input a cached result would miss (x of a linear, the scales of a dequantizer): the name.
    Negation keeps the case valid (harness.verify.properties.updated_case does the same)."""
    name = CHANGED_INPUT[operation]
    value = inputs[name]
    if isinstance(value, np.ndarray):
        np.negative(value, out=value)
    else:
        value.neg_()
    return name


def check_results(backend, operation, case, inputs, target, untimed, timed, after_change=None):
    """The row's result_check (harness.bench.honesty): the untimed Snapshot judged against the reference (not the
    reference's own), the timed Snapshots compared with it, then one call (`after_change`, default `target`) after
    an input changed in place."""
    issue = None if backend == "reference" else untimed_problem(operation, case, untimed.values, VERIFY_M_MAX)
    changed_input = change_in_place(operation, inputs)  # after the judgement: the reference's inputs are the case's
    return result_check(untimed, timed, snapshot((after_change or target)()), changed_input, issue)


def timed_target(backend, operation, case, inputs, device, targets=None):
    """(target, prepare_s, after_change): the zero-argument call to time (`prepare` above, or a two-phase TARGET's
    apply alone on what its prepare made), the seconds of that one prepare (NaN for every other backend), and the
    call to make after an input changed in place (check_results): a two-phase TARGET prepares again first when the
    changed input is one of its weights (a dequantizer's scales), as apply reads only what prepare made."""
    two_phase = (targets or {}).get(backend)
    if not isinstance(two_phase, TwoPhase):
        target = prepare(backend, operation, case, inputs, device, targets)
        return target, math.nan, target
    prepare_s, target = two_phase.timed_target(operation, inputs, device)
    if CHANGED_INPUT[operation] not in WEIGHTS:
        return target, prepare_s, target
    return target, prepare_s, lambda: two_phase.timed_target(operation, inputs, device)[1]()


def weight_format(backend):
    return {"dense": "dense", "materialize": "materialize"}.get(backend, "packed")


def case_fields(point, case):
    """The row's columns that name the case."""
    out_features, in_features = case.weights.shape
    _, zero_points, granularity = case_options(point)
    return dict(layer=point["layer"], m=point["m"], n=out_features, k=in_features, group_size=point["group_size"],
                scale_granularity=granularity, zero_granularity="none" if zero_points == "none" else granularity,
                scales_dtype=case.weights.scales_dtype, zero_points_dtype=case.weights.zero_points_dtype or "none",
                rank=point["rank"], num_loras=point["num_loras"], popularity=point["popularity"], dtype=point["dtype"],
                cache_mode=point["cache_mode"])


def run_fields(run_id, grid_name, device, folder=None, domain="full"):
    """The columns every row of a run shares: run id, commit, host, device, versions and peaks, the domain its grid
    was built in (harness.verify.domain.Domain.describe, joined) and the machine's load per core at its start
    (its end: filled in when the run ends, harness.bench.cli)."""
    commit, dirty = devices.git_state(folder) if folder else devices.git_state()
    return dict(run_id=run_id, git_commit=commit, git_dirty=dirty, grid=grid_name, domain=domain,
                load_per_core_start=load.per_core(), load_per_core_end=math.nan, **devices.describe(device))


def peak_memory(target, device, allocated_before):
    """Bytes allocated at the peak of one call above `allocated_before` (taken before the inputs were); NaN on CPU."""
    if device != "cuda":
        return math.nan
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    target()
    torch.cuda.synchronize()
    return float(torch.cuda.max_memory_allocated() - allocated_before)


def measure(backend, operation, point, device, grid, verdicts, targets=None, driver=plain_driver):
    """The row fields of one benchmark (without the run's fields); Skipped or Refused when it is not timed."""
    reason = unavailable_reason(backend, device)
    if reason:
        raise Skipped(f"backend {backend!r} cannot run on {device} here: {reason}")
    if point["cache_mode"] == "cold" and device != "cuda":
        raise Skipped("cold-cache mode flushes a GPU's L2 before each call; this run is on the CPU")
    verified_m, verification = check(backend, operation, point, device, verdicts, targets)
    case = make_case(point, operation, point["m"] or 1)
    allocated_before = torch.cuda.memory_allocated() if device == "cuda" else 0
    inputs = call_inputs(backend, case, device)
    target, prepare_s, after_change = timed_target(backend, operation, case, inputs, device, targets)
    target()  # warm-up: compiles and autotunes Triton kernels, pages the weights in
    memory = peak_memory(target, device, allocated_before)
    untimed = snapshot(target())  # held while the timed calls run: none of them can take its memory
    rounds = rounds_for(one_call_seconds(target, device), grid["max_time_s"], grid["min_rounds"], grid["max_rounds"])
    timing = time_calls(target, device, rounds, point["cache_mode"], driver=driver, capture=snapshot)
    checked = check_results(backend, operation, case, inputs, target, untimed, timing.captured, after_change)
    moved, flops = case_work(weight_format(backend), operation, case)
    packed, fp16 = weight_bytes(case.weights)
    return dict(backend=backend, operation=operation, **case_fields(point, case), verified_m=verified_m,
                verification=verification, timer=timing.timer, median_s=timing.median_s, iqr_s=timing.iqr_s,
                min_s=timing.min_s, rounds=timing.rounds, prepare_s=prepare_s, result_check=checked,
                bytes_moved=moved, flops=flops,
                input_bytes=case_input_bytes(weight_format(backend), operation, case), packed_weight_bytes=packed,
                fp16_weight_bytes=fp16, peak_memory_bytes=memory,
                timestamp=datetime.datetime.now(datetime.timezone.utc))

