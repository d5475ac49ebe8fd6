"""Scale and zero-point granularities of docs/contract.md#packed-weight, told apart by shape.

| granularity | shape                      | column c of row o uses |
| per-tensor  | any shape with one element | the single value       |
| per-channel | [out]                      | t[o]                   |
| grouped     | [out, ceil(in/group_size)] | t[o, c // group_size]  |

group_size is None or an integer (reference.checks.check_group_size), >= 1 for grouped tensors; a
group_size of in_features or more makes one (ragged) group. Either size may be 0 (empty weights).
"""
import math

import numpy as np

from int4_lora_harness.reference.checks import check_group_size, check_size, real_array


def granularity(t, out_features, in_features, group_size, name):
    """Name the granularity of `t` ('per-tensor', 'per-channel', 'grouped') or raise ValueError / TypeError.

    Reads only `t`'s shape, so the fast paths validate their tensors with this same rule.
    """
    if t is None:
        raise TypeError(f"{name} must be an array or tensor, got None")
    check_size(out_features, "out_features")
    check_size(in_features, "in_features")
    check_group_size(group_size)
    shape = tuple(np.shape(t))
    if math.prod(shape) == 1:
        return "per-tensor"
    if shape == (out_features,):
        return "per-channel"
    if len(shape) == 2 and shape[0] == out_features:
        if group_size is None or group_size <= 0:
            raise ValueError(f"group_size must be a positive int for grouped {name}, got {group_size!r}")
        num_groups = -(-int(in_features) // int(group_size))  # ceil in Python ints: exact for any size or dtype
        if shape[1] != num_groups:
            raise ValueError(
                f"{name} has {shape[1]} groups but ceil(in_features / group_size) = "
                f"ceil({in_features} / {group_size}) = {num_groups}")
        return "grouped"
    raise ValueError(
        f"{name} must have 1 element, shape [{out_features}] or shape "
        f"[{out_features}, num_groups]; got shape {list(shape)}")


def expand(t, out_features, in_features, group_size, name):
    """Per-element float64 array [out, in]: the value of `t` (real numbers, any int or float dtype) each weight uses."""
    t = real_array(t, name).astype(np.float64)
    kind = granularity(t, out_features, in_features, group_size, name)
    if kind == "per-tensor":
        return np.full((out_features, in_features), t.reshape(()))
    if kind == "per-channel":
        return np.repeat(t[:, None], in_features, axis=1)
    width = min(int(group_size), max(in_features, 1))  # a group of in_features or more is the one group
    group_of_column = np.arange(in_features) // width  # ragged last group included
    return t[:, group_of_column]


def group_width(kinds, in_features, group_size):
    """Columns per group for tensors of these granularities: group_size if any is grouped (a size of in_features
    or more is the one group), else in_features (one group)."""
    if "grouped" in kinds and in_features:
        return min(int(group_size), in_features)
    return max(in_features, 1)


def weights_width(scales, zero_points, out_features, in_features, group_size):
    """Columns per group of [out, in] weights with these scales and zero points (None: none): group_width of
    their granularities, each checked (ValueError / TypeError naming the argument)."""
    kinds = [granularity(scales, out_features, in_features, group_size, "scales")]
    if zero_points is not None:
        kinds.append(granularity(zero_points, out_features, in_features, group_size, "zero_points"))
    return group_width(kinds, in_features, group_size)


def per_group(t, out_features, in_features, group_size, name, width):
    """`t` (real numbers) as float64 broadcastable against weights in groups [out, groups, width]:
    [1, 1, 1] per-tensor, [out, 1, 1] per-channel, [out, groups, 1] grouped."""
    t = real_array(t, name).astype(np.float64)
    kind = granularity(t, out_features, in_features, group_size, name)
    if kind == "per-tensor":
        return t.reshape(1, 1, 1)
    if kind == "per-channel":
        return t.reshape(out_features, 1, 1)
    return t.reshape(out_features, -(-in_features // width), 1)


def in_groups(values, width):
    """[out, in] -> [out, ceil(in / width), width], the ragged last group padded with zeros."""
    out_features, in_features = values.shape
    padded = np.pad(values, ((0, 0), (0, -in_features % width))) if in_features % width else values
    return padded.reshape(out_features, padded.shape[1] // width, width)


def from_groups(grouped, in_features):
    """[out, groups, width] -> [out, in]: the padding of the last group dropped."""
    flat = grouped.reshape(grouped.shape[0], grouped.shape[1] * grouped.shape[2])
    return flat if flat.shape[1] == in_features else np.ascontiguousarray(flat[:, :in_features])
