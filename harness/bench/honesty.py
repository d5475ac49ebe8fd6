"""Timings a kernel cannot fake: the timed calls' results checked, and times below the bytes-moved floor flagged.

Kernels optimised against a benchmark cheat its timer (KernelBench): work left on another CUDA stream
when the timer stops, a cached or wrong result, output memory reused. harness.bench.timing waits for
every stream before it stops and `snapshot`s the first and the last timed call's result the moment it
stops; this module judges them. A bench row gets:

result_check  "ok" when (1) an untimed call on the same inputs is within tolerance of the reference (its
              first `rows` rows for a linear: harness.verify.properties.judge, the verifier's own judge),
              (2) the first and the last timed call's results are bitwise that untimed result, (3) no two
              of these three results share memory, and (4) after one input was changed in place (x of a
              linear, the scales of a dequantizer: negated) the result changed; else "differs: <each
              that failed>".
floor_s       the fewest seconds in which the call can read its inputs: input_bytes (harness.bench.work),
              less what a warm cache may hold (cache_bytes), at the ceiling bandwidth (ceiling_gbps,
              harness.bench.devices). Only reads count: a cache may absorb the output and temporaries.
impossible    the fastest timed call took less than floor_s.
A flagged row keeps its numbers as evidence and is never a speedup (`flag`; harness.bench.store.compare).
"""
import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from int4_lora_harness.verify import child
from int4_lora_harness.verify.cases import TORCH_DTYPES, DequantCase
from int4_lora_harness.verify.properties import judge, result_values, tolerance_outcome

FLOOR_FLAG = "impossible (below the bytes-moved floor)"
INTS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}  # element size -> same-size integer


@dataclass
class Snapshot:
    """One call's result: `values`, a CPU copy of its data taken when the call returned (None unless it is a
    tensor or array), and `result`, the object itself, held so that no later result can take its memory."""
    values: torch.Tensor | None
    result: object

    @property
    def kind(self):
        return type(self.result).__name__


def snapshot(result):
    """Snapshot of a call's result: a torch.Tensor's own data (not what a subclass shows), or a NumPy array's."""
    if isinstance(result, np.ndarray):
        return Snapshot(torch.from_numpy(result.copy()), result)
    if isinstance(result, torch.Tensor):
        return Snapshot(child.plain_data(result)[0].to("cpu", copy=True), result)
    return Snapshot(None, result)


def differences(expected, got):
    """None if the CPU tensors `got` and `expected` are bitwise equal (NaN == NaN, -0 != +0), else how they differ."""
    if got.dtype != expected.dtype or got.shape != expected.shape:
        return f"{got.dtype} {list(got.shape)} instead of {expected.dtype} {list(expected.shape)}"
    ints = INTS[expected.element_size()]
    differ = (got.contiguous().view(ints) != expected.contiguous().view(ints)).reshape(-1)
    if not differ.any():
        return None
    first = int(differ.nonzero()[0])
    return (f"{int(differ.sum())} of {differ.numel()} elements differ, the first at flat index {first}: "
            f"{got.reshape(-1)[first].item()!r} instead of {expected.reshape(-1)[first].item()!r}")


def _span(result):
    """(device, first byte, end) of the memory under a tensor or array."""
    tensor = torch.from_numpy(result) if isinstance(result, np.ndarray) else child.plain_data(result)[0]
    storage = tensor.untyped_storage()
    return str(tensor.device), storage.data_ptr(), storage.data_ptr() + storage.nbytes()


def share_memory(a, b):
    """Whether the results `a` and `b` (both alive) lie in overlapping memory; False unless both are tensors or
    arrays."""
    if not all(isinstance(r, (np.ndarray, torch.Tensor)) for r in (a, b)):
        return False
    (device_a, start_a, end_a), (device_b, start_b, end_b) = _span(a), _span(b)
    return device_a == device_b and start_a < end_b and start_b < end_a


def untimed_problem(operation, case, values, rows):
    """None if `values` (an untimed result, CPU tensor) is within tolerance of the reference on `case`, else why not.

    operation: 'dequantize' (values [out, in] of case.x_dtype) or 'gemm' | 'gemm_lora' (values [M, out]); a
    linear is judged on its first `rows` rows (the reference of a whole prefill batch costs minutes)."""
    out_features, in_features = case.weights.shape
    m = case.x.shape[0]
    shape = (out_features, in_features) if operation == "dequantize" else (m, out_features)
    dtype = TORCH_DTYPES[case.x_dtype]
    if values is None or tuple(values.shape) != shape or values.dtype != dtype:
        got = "no tensor" if values is None else f"{values.dtype} {list(values.shape)}"
        return f"the untimed call returned {got}, expected {dtype} {list(shape)}"
    if operation == "dequantize":
        judgement = judge(DequantCase(case.weights, case.x_dtype), result_values(values))
    else:
        rows = min(rows, m)
        head = replace(case, x=case.x[:rows], lora_indices=case.lora_indices[:rows])  # [rows, in], [rows]
        judgement = judge(head, result_values(values[:rows]))
    if judgement.passed:
        return None
    return f"the untimed call is not within tolerance: {tolerance_outcome(judgement).message}"


def result_check(untimed, timed, changed, changed_input, untimed_issue=None):
    """'ok', or 'differs: ...' naming each failed rule of the module's result_check.

    untimed: Snapshot of an untimed call; timed: Snapshots of the first and the last timed call (one when a
    single call was timed); changed: Snapshot of a call after `changed_input` was changed in place;
    untimed_issue: None, or why the untimed result is wrong (untimed_problem)."""
    problems = [untimed_issue] if untimed_issue else []
    names = ("first timed", "last timed") if len(timed) == 2 else ("timed",)
    for name, snap in zip(names, timed):
        if snap.values is None or untimed.values is None:
            problems.append(f"the {name} call returned {snap.kind}, the untimed call {untimed.kind}")
            continue
        how = differences(untimed.values, snap.values)
        if how:
            problems.append(f"the {name} call's result is not bitwise the untimed call's: {how}")
    held = [("untimed", untimed), *zip(names, timed)]
    for i, (name_a, a) in enumerate(held):
        for name_b, b in held[i + 1:]:
            if share_memory(a.result, b.result):
                problems.append(f"the {name_a} and the {name_b} call's results share memory (output memory reused)")
    both = changed.values is not None and untimed.values is not None
    if both and differences(untimed.values, changed.values) is None:
        problems.append(f"after {changed_input} was changed in place, the result was bitwise the one before "
                        "(a cached result)")
    return "differs: " + "; ".join(problems) if problems else "ok"


def floor_seconds(input_bytes, cache_bytes, cache_mode, ceiling_gbps):
    """Fewest seconds a call can take to read `input_bytes` of inputs at `ceiling_gbps` (GB/s), when a warm cache
    may already hold `cache_bytes` of them (cache_mode 'warm'; 'cold': the cache was flushed). NaN without a
    ceiling (an unknown GPU)."""
    if cache_mode not in ("warm", "cold"):
        raise ValueError(f"cache_mode must be 'warm' or 'cold', got {cache_mode!r}")
    for name, value in (("input_bytes", input_bytes), ("cache_bytes", cache_bytes)):
        if not value >= 0:
            raise ValueError(f"{name} must be a number of bytes >= 0, got {value!r}")
    if not ceiling_gbps > 0:
        return math.nan
    cached = cache_bytes if cache_mode == "warm" else 0
    return max(0, input_bytes - cached) / (ceiling_gbps * 1e9)


def is_impossible(min_s, floor_s):
    """Whether the fastest call (min_s seconds) beat the floor (False when the floor is NaN)."""
    return bool(min_s < floor_s)


def _is_true(value):
    return isinstance(value, (bool, np.bool_)) and bool(value)


def flag(row):
    """'' for a row whose timing stands, else why it is not a result: FLOOR_FLAG and/or its result_check.
    row: a dict or a pandas row; null columns (files older than the checks) raise no flag."""
    parts = []
    if _is_true(row.get("impossible")):
        parts.append(f"{FLOOR_FLAG}: fastest call {row['min_s']:.3g} s < floor {row['floor_s']:.3g} s")
    check = row.get("result_check")
    if isinstance(check, str) and check != "ok":
        parts.append(f"result {check}")
    return "; ".join(parts)
