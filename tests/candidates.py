"""Misbehaving candidates for the verify CLI tests (each is a TARGET: tests/candidates.py:NAME)."""
import ctypes
import time

import torch

from harness.planted import correct_dequantize_fp32_math


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


def int8_zero_points_read_as_unsigned(packed_weights, scales, zero_points=None, group_size=None,
                                      output_dtype=torch.float16):
    """Right for the int32 zero points of the fuzzed cases, wrong for the int8 ones real checkpoints load as."""
    if zero_points is not None and zero_points.dtype == torch.int8:
        zero_points = zero_points.view(torch.uint8)  # -1 becomes 255
    return correct_dequantize_fp32_math(packed_weights, scales, zero_points, group_size, output_dtype)
