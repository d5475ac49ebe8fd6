"""Candidates that cheat a benchmark's timer, not the verifier (issue 26): each is correct for its first
WARM_CALLS calls on one input tensor, more than the verifier's properties make on any one tensor (9 on
a small case), so it passes the check before timing, then cheats in the timed calls on the same inputs.
harness.bench.honesty must flag every one (tests/test_bench_honesty.py)."""
import threading

import torch

from int4_lora_harness.kernels.torch_path import dequantize, linear

WARM_CALLS = 12


def _warm(t):
    """Count a call on the tensor `t` (on the tensor itself: ids are reused); True once past WARM_CALLS."""
    t._cheat_calls = getattr(t, "_cheat_calls", 0) + 1
    return t._cheat_calls > WARM_CALLS


def cached_after_warmup(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling,
                        bias):
    """Once warm, a fresh copy of the last result it computed: right while x holds the same values, stale after."""
    if not _warm(x) or not hasattr(x, "_cheat_result"):
        x._cheat_result = linear(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices,
                                 scaling, bias)
    return x._cheat_result.clone()


def wrong_after_warmup(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling,
                       bias):
    """Once warm, the right result with 1 added to its last element."""
    y = linear(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias)
    if _warm(x):
        y[-1, -1] += 1
    return y


def one_buffer_after_warmup(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Once warm, every result written into one buffer kept on `scales`: a later call overwrites an earlier result."""
    w = dequantize(packed_weights, scales, zero_points, group_size, output_dtype)
    if not _warm(scales):
        return w
    if not hasattr(scales, "_cheat_buffer"):
        scales._cheat_buffer = torch.empty_like(w)
    return scales._cheat_buffer.copy_(w)


def defers_to_a_thread(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling,
                       bias):
    """Once warm, returns zeros at once and lets a thread write the result into them half a second later: the
    CPU counterpart of leaving the work on another CUDA stream when the timer stops."""
    def compute():
        return linear(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling,
                      bias)
    if not _warm(x):
        return compute()
    y = torch.zeros(x.shape[0], packed_weights.shape[0], dtype=x.dtype)
    later = threading.Timer(0.5, lambda: y.copy_(compute()))
    later.daemon = True
    later.start()
    return y
