"""Scale and zero-point granularities of SPEC §2, told apart by shape.

| granularity | shape                      | column c of row o uses |
| per-tensor  | any shape with one element | the single value       |
| per-channel | [out]                      | t[o]                   |
| grouped     | [out, ceil(in/group_size)] | t[o, c // group_size]  |
"""
import math

import numpy as np


def granularity(t, out_features, in_features, group_size, name):
    """Name the granularity of `t` ('per-tensor', 'per-channel', 'grouped') or raise ValueError.

    Reads only `t`'s shape, so the fast paths validate their tensors with this same rule.
    """
    shape = tuple(np.shape(t))
    if math.prod(shape) == 1:
        return "per-tensor"
    if shape == (out_features,):
        return "per-channel"
    if len(shape) == 2 and shape[0] == out_features:
        if group_size is None or group_size <= 0:
            raise ValueError(f"group_size must be a positive int for grouped {name}, got {group_size!r}")
        num_groups = math.ceil(in_features / group_size)
        if shape[1] != num_groups:
            raise ValueError(
                f"{name} has {shape[1]} groups but ceil(in_features / group_size) = "
                f"ceil({in_features} / {group_size}) = {num_groups}")
        return "grouped"
    raise ValueError(
        f"{name} must have 1 element, shape [{out_features}] or shape "
        f"[{out_features}, num_groups]; got shape {list(shape)}")


def expand(t, out_features, in_features, group_size, name):
    """Per-element float64 array [out, in]: the value of `t` that each weight uses."""
    kind = granularity(t, out_features, in_features, group_size, name)
    t = np.asarray(t, dtype=np.float64)
    if kind == "per-tensor":
        return np.full((out_features, in_features), t.reshape(()))
    if kind == "per-channel":
        return np.repeat(t[:, None], in_features, axis=1)
    group_of_column = np.arange(in_features) // group_size  # ragged last group included
    return t[:, group_of_column]
