"""Misbehaving candidates for the verify CLI tests (each is a TARGET: planted.hostile:NAME)."""
import ctypes
import time

import torch

from planted.bugs import correct_dequantize_fp32_math


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
