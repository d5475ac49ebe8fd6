"""A failing case's values, when it is small enough to read: what a newcomer needs besides its shapes.

Shapes alone ("out 1, in 2, fp32 scales [1]") do not say what went wrong; the nibbles, the scale
and the zero point of a two-weight case do, without loading the repro's .pt file.
"""
import numpy as np

from int4_lora_harness.reference.packing import unpack
from int4_lora_harness.verify.cases import DequantCase

MAX_VALUES = 64  # arrays with more elements are left out (the repro has them)


def _small(array):
    if array is None:
        return None
    array = np.asarray(array)
    if array.size > MAX_VALUES:
        return f"{array.size} values (see the repro)"
    return [float(v) if np.issubdtype(array.dtype, np.floating) else int(v) for v in array.ravel()]


def case_values(case):
    """{name: values | a note} for the case's inputs: v (the signed nibbles), scales, zero points, and for a
    linear x, lora_a, lora_b, lora_indices and bias; arrays past MAX_VALUES elements are summarized."""
    w = case.weights
    values = dict(v=_small(unpack(w.packed)), scales=_small(w.scales), zero_points=_small(w.zero_points))
    if isinstance(case, DequantCase):
        return values
    return dict(values, x=_small(case.x), lora_a=_small(case.lora_a), lora_b=_small(case.lora_b),
                lora_indices=_small(case.lora_indices), bias=_small(case.bias))
