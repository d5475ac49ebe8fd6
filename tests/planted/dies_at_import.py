"""A TARGET module that kills its own process while it is imported (issue 14)."""
import os

os._exit(3)


def dequantize(packed_weights, scales, zero_points=None, group_size=None, output_dtype=None):
    return None
