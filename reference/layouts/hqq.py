"""HQQ 4-bit ("4bit_u8" packing, axis=1) <-> canonical. NumPy only; byte layout: docs/layouts/hqq.md.

HQQ (mobiusml/hqq, hqq/core/quantize.py and bitpack.py) reshapes W [out, in] row-major to
[rows, g] with g = group_size (rows = out * in / g: each row one group of g consecutive columns;
g = in, rows = out, without groups) and quantizes each row to q in [0, 15] with a float scale and
zero: W = (q - zero) * scale. BitPack.pack_4bit_u8 then pairs row r with row r + rows / 2:

| tensor     | dtype, shape          | holds                                                          |
| ---------- | --------------------- | -------------------------------------------------------------- |
| W_q        | uint8 [rows / 2, g]   | byte [r, k] = q[r, k] << 4 | q[r + rows / 2, k] (high = first half) |
| scale      | float [rows, 1]       | s of each group (HQQ stores the scale, not its inverse)        |
| zero       | float [rows, 1]       | zero of each group, a float of scale's dtype                   |
| shape      | (out, in)             | meta["shape"]                                                  |
| group_size | int or None           | meta["group_size"]; None: one group per output row             |

In canonical terms v = q - 8, s = scale and z = zero - 8. Only axis=1 (groups along `in`, what
HQQ's backends use) and the 4-bit packing; the per-tensor form (channel_wise=False) is written as
one group per row.
"""
import numpy as np

from int4_lora_harness.reference.granularity import granularity
from int4_lora_harness.reference.layouts.canonical import Canonical, exact_sum, floats, no_perm, per_block, zero_or_none
from int4_lora_harness.reference.packing import pack, unpack


def _groups(out_features, in_features, group_size):
    """(g, rows) of HQQ's [rows, g] reshape, or ValueError: g divides in, rows is even."""
    g = in_features if group_size is None else group_size
    if g <= 0 or in_features % g:
        raise ValueError(f"group_size {group_size} must divide in_features {in_features}: HQQ groups are the rows "
                         f"of W.reshape(-1, group_size), so a ragged group would span two output rows")
    rows = out_features * in_features // g
    if rows % 2:
        raise ValueError(f"out_features * in_features / group_size = {rows} must be even: HQQ's 4-bit packing "
                         f"pairs row r with row r + rows / 2")
    return g, rows


def to_hqq(c):
    """Canonical -> {"W_q", "scale", "zero" (float64 values [rows, 1]), "shape", "group_size"}; no perm.

    The groups are canonical's when scales or zero points are grouped (group_size must divide in),
    else one per output row; the other tensor is broadcast to them. zero = z + 8 must be exact.
    """
    no_perm(c, "HQQ")
    values = unpack(c.packed)  # v: [out, in]
    out_features, in_features = values.shape
    kinds = [granularity(c.scales, out_features, in_features, c.group_size, "scales")]
    if c.zero_points is not None:
        kinds.append(granularity(c.zero_points, out_features, in_features, c.group_size, "zero_points"))
    group_size = c.group_size if "grouped" in kinds else None
    g, rows = _groups(out_features, in_features, group_size)
    s = per_block(c.scales, out_features, in_features, c.group_size, g, "scales")  # [out, in / g]
    z = np.zeros(s.shape) if c.zero_points is None else \
        per_block(c.zero_points, out_features, in_features, c.group_size, g, "zero_points")
    zero, exact = exact_sum(z, 8.0)
    if not np.all(exact):
        raise ValueError(f"zero_points: HQQ stores zero = z + 8; z = {z[~exact].flat[0]!r} + 8 is not exact in float64")
    q = (values.astype(np.int16) + 8).astype(np.uint8).reshape(rows, g)  # row r: group r of the row-major order
    w_q = (q[: rows // 2] << 4) | q[rows // 2:]  # [rows / 2, g]
    return {"W_q": w_q, "scale": s.reshape(rows, 1), "zero": zero.reshape(rows, 1),
            "shape": (out_features, in_features), "group_size": group_size}


def from_hqq(W_q, scale, zero, shape, group_size=None):  # noqa: N803 (HQQ's own name)
    """HQQ -> Canonical with float64 zero points z = zero - 8 (None where every zero is 8).

    W_q: uint8 [rows / 2, g]; scale, zero: float [rows, 1] (or [rows]); shape: (out, in), in even;
    group_size: int dividing in, or None (one group per row). ValueError naming the tensor otherwise.
    """
    if len(shape) != 2 or any(not isinstance(n, (int, np.integer)) or n <= 0 for n in shape) or shape[1] % 2:
        raise ValueError(f"shape must be (out_features, in_features) of positive ints, in even, got {shape!r}")
    out_features, in_features = (int(n) for n in shape)
    g, rows = _groups(out_features, in_features, group_size)
    W_q = np.asarray(W_q)
    if W_q.dtype != np.uint8 or W_q.shape != (rows // 2, g):
        raise ValueError(f"W_q must be uint8 [{rows // 2}, {g}] (rows / 2, group_size), "
                         f"got {W_q.dtype} {list(W_q.shape)}")
    tensors = {}
    for name, t in (("scale", scale), ("zero", zero)):
        t = floats(t, name)
        if t.size != rows or t.shape not in ((rows, 1), (rows,)):
            raise ValueError(f"{name} must be [{rows}, 1], one per group, got {list(t.shape)}")
        tensors[name] = t.astype(np.float64).reshape(out_features, in_features // g)  # [out, G]
    q = np.concatenate([W_q >> 4, W_q & 0x0F])  # [rows, g]: the first half of the rows, then the second
    values = q.reshape(out_features, in_features).astype(np.int8) - 8
    z, exact = exact_sum(tensors["zero"], -8.0)
    if not np.all(exact):
        raise ValueError(f"zero: {tensors['zero'][~exact].flat[0]!r} - 8 is not exact in float64 "
                         f"(canonical z = zero - 8)")
    scales = tensors["scale"].astype(np.asarray(scale).dtype)
    if group_size is None:
        return Canonical(pack(values), scales[:, 0].copy(), zero_or_none(z[:, 0].copy()), None)
    return Canonical(pack(values), scales, zero_or_none(z), group_size)
