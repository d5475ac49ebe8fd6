"""A toy two-phase kernel (harness.bench.two_phase), correct and slow to prepare, as a kernel that repacks its
weights at load is: `prepare` copies the weights and sleeps SLOW_PREPARE_S (the repack), `apply` runs the project's
torch path on the copies. CALLS counts each phase's calls, so tests/test_bench_user.py can prove that bench times
apply alone, by counting the calls made inside the timer rather than by the clock.

    int4-harness bench --linear planted.two_phase_toy:linear        (tests/ on the path)
"""
import collections
import time
from types import SimpleNamespace

from int4_lora_harness.kernels import torch_path

SLOW_PREPARE_S = 0.02  # per prepare; a timed call that ran it would take at least this
CALLS = collections.Counter()  # "prepare", "apply": calls so far


def prepare(packed_weights, scales, zero_points, group_size):
    """The weights, copied (what a repack makes): packed uint8 [out, in // 2], scales and zero points as given."""
    CALLS["prepare"] += 1
    time.sleep(SLOW_PREPARE_S)
    return dict(packed_weights=packed_weights.clone(), scales=scales.clone(),
                zero_points=None if zero_points is None else zero_points.clone(), group_size=group_size)


def apply_linear(prepared, x, lora_a, lora_b, lora_indices, scaling, bias):
    """x [M, in] -> [M, out] of x.dtype on the prepared weights (SPEC §4)."""
    CALLS["apply"] += 1
    return torch_path.linear(x=x, **prepared, lora_a=lora_a, lora_b=lora_b, lora_indices=lora_indices,
                             scaling=scaling, bias=bias)


def apply_dequantize(prepared, output_dtype):
    """The prepared weights -> output_dtype [out, in] (SPEC §3)."""
    CALLS["apply"] += 1
    return torch_path.dequantize(**prepared, output_dtype=output_dtype)


linear = SimpleNamespace(prepare=prepare, apply=apply_linear)
dequantizer = SimpleNamespace(prepare=prepare, apply=apply_dequantize)


def apply_without_bias(prepared, x, lora_a, lora_b, lora_indices, scaling):
    """Not the two-phase linear's apply: it cannot take `bias` (bench refuses it as a usage error)."""
    return apply_linear(prepared, x, lora_a, lora_b, lora_indices, scaling, None)


linear_without_bias = SimpleNamespace(prepare=prepare, apply=apply_without_bias)
