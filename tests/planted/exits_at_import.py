"""A TARGET module that exits while it is imported (issue 14): the verifier must not die with it."""
import torch

raise SystemExit(0)


def dequantize(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    return None
