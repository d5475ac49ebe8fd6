"""Round-to-nearest quantization of float weights into the packed INT4 format.

So that tests can start from realistic float weights. Symmetric: s = max|w| / 7,
v = clip(rint(w / s), -8, 7), no zero points. Asymmetric: s = (max - min) / 15,
z = rint(-min / s) - 8 (an integer), v = clip(rint(w / s) + z, -8, 7).
Statistics are taken per tensor, per output channel or per group of `group_size`
input columns (the last group may be ragged).
"""
import numpy as np

from int4_lora_harness.reference.checks import check_group_size, real_array
from int4_lora_harness.reference.granularity import expand
from int4_lora_harness.reference.packing import pack


def _reduce(w, granularity, group_size, reducer):
    """Reduce |w| or w per tensor ([1]), per channel ([out]) or per group ([out, groups]).

    Reductions start from 0 (the callers clip at 0 anyway), so empty weights reduce to 0."""
    out_features, in_features = w.shape
    if granularity == "per-tensor":
        return np.asarray([reducer(w, initial=0.0)])
    if granularity == "per-channel":
        return reducer(w, axis=1, initial=0.0)
    if granularity != "grouped":
        raise ValueError(f"granularity must be per-tensor, per-channel or grouped, got {granularity!r}")
    if group_size is None or group_size <= 0:
        raise ValueError(f"group_size must be a positive int for grouped quantization, got {group_size!r}")
    group_size = int(group_size)
    num_groups = -(-in_features // group_size)  # ceil in integers
    groups = [reducer(w[:, g * group_size:(g + 1) * group_size], axis=1, initial=0.0) for g in range(num_groups)]
    return np.stack(groups, axis=1) if groups else np.zeros((out_features, 0))


def quantize(weights, granularity="grouped", group_size=128, symmetric=True):
    """weights: finite real [out, in], in even -> (packed uint8 [out, in//2], scales float64, zero_points float64|None).

    scales/zero_points have the shape of `granularity` (see reference.granularity); group_size: an
    integer >= 1, read for "grouped" only; symmetric: a bool.
    """
    w = real_array(weights, "weights").astype(np.float64)
    if w.ndim != 2 or w.shape[1] % 2:
        raise ValueError(f"weights must be 2-D with an even number of columns, got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("weights must be finite (a NaN or inf weight has no INT4 value)")
    if not isinstance(symmetric, (bool, np.bool_)):
        raise TypeError(f"symmetric must be a bool, got {type(symmetric).__name__}")
    check_group_size(group_size)
    out_features, in_features = w.shape
    if symmetric:
        scales = _reduce(np.abs(w), granularity, group_size, np.max) / 7.0
        zero_points = None
    else:
        low = np.minimum(_reduce(w, granularity, group_size, np.min), 0.0)
        high = np.maximum(_reduce(w, granularity, group_size, np.max), 0.0)
        scales = (high - low) / 15.0
    scales = np.where(scales > 0, scales, 1.0)  # an all-zero group quantizes to 0 with any scale
    if not symmetric:
        zero_points = np.rint(-low / scales) - 8.0
    s = expand(scales, out_features, in_features, group_size, "scales")
    z = 0.0 if zero_points is None else expand(zero_points, out_features, in_features, group_size, "zero_points")
    values = np.clip(np.rint(w / s) + z, -8, 7).astype(np.int8)
    return pack(values), scales, zero_points
