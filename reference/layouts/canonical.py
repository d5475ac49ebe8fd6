"""The canonical layer every converter reads and writes, and the checks they share at their boundary.

Canonical (docs/contract.md#packed-weight): `packed` uint8 [out, in // 2] (reference.pack: low nibble = column 2j, high
nibble = column 2j + 1, nibble q stands for v = q - 8), scales and zero points per-tensor, [out] or
[out, ceil(in / group_size)], and W[o, c] = (v[o, c] - z[o, c]) * s[o, c].
"""
from typing import NamedTuple

import numpy as np

from int4_lora_harness.reference.granularity import expand, granularity


class Canonical(NamedTuple):
    """One layer in the canonical layout; `perm` is None unless the layer is act-ordered."""
    packed: np.ndarray  # uint8 [out, in // 2]
    scales: np.ndarray  # float [1] | [out] | [out, G]
    zero_points: np.ndarray | None  # integer or float values, shape rules as scales
    group_size: int | None  # set for grouped scales or zero points
    perm: np.ndarray | None = None  # int [in]: canonical column c holds original column perm[c]


# --- validation at the public boundary ---------------------------------------------------

def int32_2d(t, name):
    """t as a 2-D int32 array, or ValueError naming it."""
    t = np.asarray(t)
    if t.dtype != np.int32:
        raise ValueError(f"{name} must be int32, got {t.dtype}")
    if t.ndim != 2 or t.size == 0:
        raise ValueError(f"{name} must be 2-D and not empty, got shape {list(t.shape)}")
    return t


def floats(t, name, ndim=None):
    """t as a floating-point array (of `ndim` dims if given), or ValueError naming it."""
    t = np.asarray(t)
    if not np.issubdtype(t.dtype, np.floating):
        raise ValueError(f"{name} must be floating point, got {t.dtype}")
    if ndim is not None and t.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {list(t.shape)}")
    return t


def check_shape(t, shape, name, rule):
    if t.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {list(shape)} ({rule}), got {list(t.shape)}")


def integers(t, name, low, high):
    """Integer-valued t (any real dtype) in [low, high] -> int8, or ValueError naming it."""
    t = np.asarray(t)
    if not (np.issubdtype(t.dtype, np.integer) or np.issubdtype(t.dtype, np.floating)):
        raise ValueError(f"{name} must be integer or floating point, got {t.dtype}")
    if t.size and (np.any(t != np.rint(t)) or t.min() < low or t.max() > high):
        raise ValueError(f"{name} must hold integers in [{low}, {high}] for this format, "
                         f"got values in [{t.min()}, {t.max()}]")
    return t.astype(np.int8)


def zero_or_none(z):
    """Canonical zero points, or None where all are 0 (same dequantized weights)."""
    return None if not np.any(z) else z


def fp16_values(t, name):
    """float64 values -> np.float16, or ValueError unless every value is exactly an fp16 number."""
    t = np.asarray(t, dtype=np.float64)
    half = t.astype(np.float16)
    differ = (half.astype(np.float64) != t) & ~np.isnan(t)  # a NaN stays a NaN
    if np.any(differ):
        bad = t[differ].flat[0]
        raise ValueError(f"{name} must be fp16 values (the format stores them as fp16), got {bad!r}")
    return half


def no_perm(c, fmt):
    if c.perm is not None:
        raise ValueError(f"perm: {fmt} has no act-order; apply the permutation to the weights first")


# --- scales and zero points on a grid of groups ------------------------------------------

def as_groups(c, out_features, in_features):
    """Canonical scales and zero points -> (scales [out, G], zero points [out, G], G, group_size)."""
    kinds = [granularity(c.scales, out_features, in_features, c.group_size, "scales")]
    if c.zero_points is not None:
        kinds.append(granularity(c.zero_points, out_features, in_features, c.group_size, "zero_points"))
    groups = -(-in_features // c.group_size) if "grouped" in kinds else 1
    scales = broadcast(c.scales, kinds[0], out_features, groups)
    zeros = np.zeros((out_features, groups), np.int8) if c.zero_points is None else \
        broadcast(c.zero_points, kinds[1], out_features, groups)
    return scales, zeros, groups, (c.group_size if groups > 1 else in_features)


def broadcast(t, kind, out_features, groups):
    """Per-tensor, per-channel or grouped t -> a new array [out, G] of its dtype."""
    t = np.asarray(t)
    return t.copy() if kind == "grouped" else np.broadcast_to(t.reshape(-1, 1), (out_features, groups)).copy()


def from_groups(scales, zeros, group_size):
    """Format [G, out] scales and canonical zeros -> (scales, zero points, group_size) canonical."""
    if scales.shape[0] == 1:
        return scales[0].copy(), zero_or_none(zeros[0]), None  # per-channel
    return scales.T.copy(), zero_or_none(zeros.T.copy()), group_size


def per_block(t, out_features, in_features, group_size, block, name):
    """float64 [out, in // block]: the value of canonical `t` in each run of `block` columns.

    Every block must lie inside one group of t: a grouped t needs group_size % block == 0
    (in_features % block == 0 is the caller's rule).
    """
    kind = granularity(t, out_features, in_features, group_size, name)
    if kind == "grouped" and group_size % block:
        raise ValueError(f"group_size {group_size} must be a multiple of the format's block of {block} "
                         f"columns (one {name} value per block)")
    return expand(t, out_features, in_features, group_size, name)[:, ::block]


def exact_sum(a, b):
    """(a + b in float64, True where that sum is exact): Knuth's TwoSum, whose error term is exact."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    total = a + b
    b_part = total - a
    error = (a - (total - b_part)) + (b - b_part)
    return total, error == 0
