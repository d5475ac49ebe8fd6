"""Misbehaving candidates for the verify CLI tests (each is a TARGET: planted.hostile:NAME)."""
import ctypes
import time

import torch

from planted.bugs import _columns, _per_column, correct_dequantize_fp32_math, unpack


def returns_list(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    return correct_dequantize_fp32_math(packed_weights, scales, zero_points, group_size, output_dtype).tolist()


def wrong_shape(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    return correct_dequantize_fp32_math(packed_weights, scales, zero_points, group_size, output_dtype).T


def raises(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    raise RuntimeError("kernel launch failed: too many resources requested")


def sleeps_forever(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    time.sleep(10_000)


def segfaults(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    ctypes.string_at(0)


def takes_two_arguments(packed_weights, scales):
    return None


def rows_past_256_not_written(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """A grid that covers 256 output rows: right on the fuzzer's small shapes, wrong on real layers."""
    w = correct_dequantize_fp32_math(packed_weights, scales, zero_points, group_size, output_dtype)
    w[256:] = 0
    return w


# --- candidates that try to end the verifier (issue 14): each must become a verdict with exit status 1 ---

def exits_zero(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    raise SystemExit(0)


def exits_zero_on_large_layers(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Right on small shapes; SystemExit(0) from 4096 columns on: only the large tier reaches it."""
    if 2 * packed_weights.shape[1] >= 4096:
        raise SystemExit(0)
    return correct_dequantize_fp32_math(packed_weights, scales, zero_points, group_size, output_dtype)


def interrupts(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    raise KeyboardInterrupt


class Ended(BaseException):
    """Not an Exception: `except Exception` does not catch it."""


def raises_base_exception(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    raise Ended("custom BaseException")


def exits_hard(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    import os
    os._exit(3)


def swallows_the_timeout(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """A retry loop that catches Exception: the SIGALRM TimeoutError of an in-process timeout never ends it."""
    while True:
        try:
            time.sleep(10_000)
        except Exception:
            continue


def leaves_a_thread(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Right, but starts a non-daemon thread that never ends: the process could never exit."""
    import threading
    threading.Thread(target=time.sleep, args=(10_000,), name="left-running").start()
    return correct_dequantize_fp32_math(packed_weights, scales, zero_points, group_size, output_dtype)


# --- candidates that cheat the properties (issue 13) ---

_BY_ID = {}


def caches_by_scales_id(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Caches the result by id(scales): stale once scales (but not packed_weights) are updated in place."""
    key = (id(scales), output_dtype)
    if key not in _BY_ID:
        _BY_ID[key] = (scales, correct_dequantize_fp32_math(packed_weights, scales, zero_points, group_size,
                                                              output_dtype))
    return _BY_ID[key][1].clone()


_BUFFER = {}


def returns_one_buffer(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Writes every result into one preallocated buffer: a second call overwrites the first result."""
    w = correct_dequantize_fp32_math(packed_weights, scales, zero_points, group_size, output_dtype)
    key = (tuple(w.shape), w.dtype)
    if key not in _BUFFER:
        _BUFFER[key] = torch.empty_like(w)
    return _BUFFER[key].copy_(w)


class ShowsRightValues(torch.Tensor):
    """A tensor subclass whose detach() (and cpu()) show other values than its own data."""
    right = None

    def detach(self):
        return self.right

    def cpu(self, *args, **kwargs):
        return self.right


def subclass_shows_other_data(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    w = correct_dequantize_fp32_math(packed_weights, scales, zero_points, group_size, output_dtype)
    wrong = torch.zeros_like(w).as_subclass(ShowsRightValues)
    wrong.right = w
    return wrong


def nondeterministic(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Within 1 ulp on every call, but a random inexact element is rounded the other way on each call."""
    v = unpack(packed_weights).to(torch.float64)
    cols = _columns(v.shape[1], group_size)
    exact = (v - _per_column(zero_points, cols)) * _per_column(scales, cols)  # float64, exact for these inputs
    w = correct_dequantize_fp32_math(packed_weights, scales, zero_points, group_size, output_dtype)
    inexact = (w.double() != exact).view(-1).nonzero()
    if len(inexact):
        i = int(inexact[torch.randint(len(inexact), ())])
        flat, target = w.view(-1), float(exact.view(-1)[i])
        ints = {2: torch.int16, 4: torch.int32}[w.element_size()]
        up = (target > float(flat[i])) == (float(flat[i]) >= 0)  # away from zero when moving outwards
        flat.view(ints)[i] += 1 if up else -1  # the neighbour on the exact value's side: still within 1 ulp
    return w


def renamed_arguments(weights, s, z=None, g=None, dtype=torch.float16):
    """The right arity, other names: the contract calls by keyword, so this is a usage error, not failing cases."""
    return correct_dequantize_fp32_math(weights, s, z, g, dtype)


_LINEAR_BY_ID = {}


def caches_linear_by_lora_b_id(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices,
                               scaling, bias):
    """Caches the dequantized weight and the adapters' expand by id(lora_b): stale once lora_b is updated in place."""
    from planted.bugs import correct_linear_gathered
    key = (id(lora_b), id(packed_weights), x.shape[0])
    if key not in _LINEAR_BY_ID:
        _LINEAR_BY_ID[key] = (lora_b, packed_weights, correct_linear_gathered(
            x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias))
    return _LINEAR_BY_ID[key][2].clone()
