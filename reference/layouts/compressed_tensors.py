"""compressed-tensors pack-quantized (4-bit int) <-> canonical. NumPy only; docs/layouts/compressed-tensors.md.

| tensor            | dtype, shape                                    | holds                                      |
| ----------------- | ----------------------------------------------- | ------------------------------------------ |
| weight_packed     | int32 [out, ceil(in / 8)]                       | q = v + 8, 8 columns per word, sequential  |
| weight_scale      | float [1] / [out, 1] / [out, G]                 | s                                          |
| weight_zero_point | int32 [ceil(out / 8), G] packed along dim 0; int8 [1] per-tensor; or absent | qz = z + 8 |
| weight_shape      | int [2] = (out, in)                             |                                            |

compressed-tensors' v and z are its own int8 value and zero point (its dequant is (v - zp) * s).
"""
import numpy as np

from int4_lora_harness.reference.granularity import granularity
from int4_lora_harness.reference.layouts.canonical import Canonical, check_shape, floats, int32_2d, integers
from int4_lora_harness.reference.layouts.fields import int32_to_nibbles, nibbles_to_int32, pad_to_8, words_for
from int4_lora_harness.reference.packing import pack, unpack


def from_compressed_tensors(weight_packed, weight_scale, weight_shape, weight_zero_point=None, group_size=None):
    """compressed-tensors pack-quantized (4-bit) -> Canonical.

    weight_packed: int32 [out, ceil(in / 8)]; weight_scale: float [1] | [out, 1] | [out, G];
    weight_shape: integer [2] = (out, in), in even; weight_zero_point: int32 [ceil(out / 8), G]
    (G = 1 per-channel) packed along dim 0, or integer [1] unpacked for per-tensor scales;
    group_size: int, needed for grouped scales. A [out, 1] scale is per-channel unless a
    group_size is given.
    """
    out_features, in_features = _weight_shape(weight_shape)
    weight_packed = int32_2d(weight_packed, "weight_packed")
    check_shape(weight_packed, (out_features, words_for(in_features)), "weight_packed",
                f"weight_shape {[out_features, in_features]} packed 8 columns per int32")
    scale = floats(weight_scale, "weight_scale")
    per_channel = scale.shape == (out_features, 1) and group_size is None
    scales = (scale[:, 0] if per_channel else scale).copy()  # [out, 1] -> [out]
    kind = granularity(scales, out_features, in_features, group_size, "weight_scale")
    zero_points = None
    if weight_zero_point is not None:
        zero_points = _ct_zero_points(weight_zero_point, scale, out_features).reshape(scales.shape)
    values = int32_to_nibbles(weight_packed)[:, :in_features].astype(np.int8) - 8  # v: [out, in]
    return Canonical(pack(values), scales, zero_points, group_size if kind == "grouped" else None)


def _weight_shape(weight_shape):
    """weight_shape: integer [2] -> (out, in), with in even, or ValueError."""
    t = np.asarray(weight_shape)
    if not np.issubdtype(t.dtype, np.integer) or t.shape != (2,):
        raise ValueError(f"weight_shape must be an integer array of shape [2], got {t.dtype} {list(t.shape)}")
    out_features, in_features = (int(n) for n in t)
    if out_features <= 0 or in_features <= 0 or in_features % 2:
        raise ValueError(f"weight_shape must be [out, in] with out > 0 and in > 0 even "
                         f"(the canonical layout packs column pairs), got {[out_features, in_features]}")
    return out_features, in_features


def _ct_zero_points(weight_zero_point, weight_scale, out_features):
    """compressed-tensors zero points -> canonical int8 [1] (per-tensor) or [out, G].

    compressed-tensors packs zero points along dim 0 for its channel and group strategies
    (2-D weight_scale [out, G]) and stores the per-tensor one ([1] weight_scale) unpacked.
    """
    if weight_scale.ndim != 2:
        zp = np.asarray(weight_zero_point)
        if zp.size != 1:
            raise ValueError(f"weight_zero_point must have 1 element for a per-tensor weight_scale, "
                             f"got shape {list(zp.shape)}")
        return integers(zp.reshape(1), "weight_zero_point", -8, 7)
    zp = int32_2d(weight_zero_point, "weight_zero_point")
    check_shape(zp, (words_for(out_features), weight_scale.shape[1]), "weight_zero_point",
                "[ceil(out / 8), G], packed 8 output rows per int32 along dim 0")
    return int32_to_nibbles(zp.T)[:, :out_features].T.astype(np.int8) - 8  # [out, G]


def to_compressed_tensors(c):
    """Canonical -> dict of compressed-tensors pack-quantized arrays (see from_compressed_tensors).

    Zero points must share the scales' granularity and lie in [-8, 7]; grouped layers need
    in % group_size == 0 (compressed-tensors' dequantize refuses ragged groups); no perm.
    One-element scales are written per-tensor ([1], zero point unpacked), also when out == 1.
    """
    if c.perm is not None:
        raise ValueError("perm: this pack-quantized writer has no act-order (weight_g_idx) support")
    values = unpack(c.packed)  # v: [out, in]
    out_features, in_features = values.shape
    kind = granularity(c.scales, out_features, in_features, c.group_size, "scales")
    if kind == "grouped" and in_features % c.group_size:
        raise ValueError(f"group_size {c.group_size} must divide in_features {in_features} for compressed-tensors")
    shape = {"per-tensor": (1,), "per-channel": (out_features, 1), "grouped": np.shape(c.scales)}[kind]
    tensors = {
        "weight_packed": nibbles_to_int32(pad_to_8((values + 8).astype(np.uint8))),  # [out, ceil(in/8)]
        "weight_scale": np.asarray(c.scales).reshape(shape).copy(),
        "weight_shape": np.array([out_features, in_features], dtype=np.int64),
    }
    if c.zero_points is not None:
        if granularity(c.zero_points, out_features, in_features, c.group_size, "zero_points") != kind:
            raise ValueError("zero_points must have the granularity of scales for compressed-tensors")
        z = integers(c.zero_points, "zero_points", -8, 7)
        if kind == "per-tensor":
            tensors["weight_zero_point"] = z.reshape(1)
        else:
            nibbles = (z.reshape(out_features, -1).T + 8).astype(np.uint8)  # [G, out]
            tensors["weight_zero_point"] = nibbles_to_int32(pad_to_8(nibbles)).T.copy()  # [ceil(out/8), G]
    return tensors


