"""A block of weight rows read from per-group tables: the judge's dequantized weights at memory speed.

The weights of one (row, group) take at most 16 values, one per nibble. `nibble_table` has the
reference dequantize those 16 nibbles of every group (reference.dequantize_exact on a packed
block that holds v = -8..7 in each group: the reference's own two operations on the same
operands, so every entry is bit for bit the weight it stands for); `lookup` then reads each
weight of the block from its group's table by its nibble. Rounding to x's dtype then runs on 16
values a group instead of every weight (for g128, an eighth), where the judge spent its time.

Worth it only where a group is at least TABLE_MIN_WIDTH columns wide; narrower groups have fewer
weights than table entries, and the judge computes on every weight (harness/verify/tolerance.py).
"""
import functools

import numpy as np

from int4_lora_harness.reference.dequantize import dequantize_exact
from int4_lora_harness.reference.granularity import granularity, weights_width
from int4_lora_harness.reference.packing import pack, unpack
from int4_lora_harness.reference.rounding import rounded

TABLE_MIN_WIDTH = 16  # columns per group from which a table of 16 entries is smaller than the group
NIBBLES = np.arange(-8, 8, dtype=np.int8)  # v for q = 0..15


def _per_group(t, kind, rows, groups):
    """Scales or zero points of any granularity as a [rows, groups] array (values and dtype kept)."""
    t = np.asarray(t)
    if kind == "per-tensor":
        return np.broadcast_to(t.reshape(1, 1), (rows, groups))
    if kind == "per-channel":
        return np.broadcast_to(t.reshape(rows, 1), (rows, groups))
    return t


def nibble_table(packed, scales, zero_points, group_size, width):
    """float64 [rows, groups, 16]: entry [o, g, q] = reference.dequantize_exact's weight of row o, group g for
    nibble q. packed: uint8 [rows, in // 2]; scales, zero_points: as reference.dequantize_exact takes them."""
    rows, in_features = packed.shape[0], 2 * packed.shape[1]
    groups = -(-in_features // width)
    kind = lambda t, name: granularity(t, rows, in_features, group_size, name)  # noqa: E731
    scales_g = _per_group(scales, kind(scales, "scales"), rows, groups)
    zeros_g = None if zero_points is None else _per_group(zero_points, kind(zero_points, "zero_points"), rows, groups)
    every_nibble = pack(np.broadcast_to(NIBBLES, (rows, groups, 16)).reshape(rows, groups * 16))
    return dequantize_exact(every_nibble, scales_g, zeros_g, 16).reshape(rows, groups, 16)


def table_index(packed, width):
    """intp [rows, in]: where each weight's value lies in its block's table, flattened (row, group, nibble)."""
    rows, in_features = packed.shape[0], 2 * packed.shape[1]
    return np.add(_group_starts(rows, in_features, width), unpack(packed), dtype=np.intp)  # + v: the nibble's entry


@functools.lru_cache(maxsize=2)  # a layer's full blocks share one, its shorter last block the other (<= 64 MiB held)
def _group_starts(rows, in_features, width):
    """intp [rows, in]: 16 (row * groups + c // width) + 8, where the table of weight (row, c) puts v = 0."""
    groups = -(-in_features // width)
    starts = (np.arange(rows, dtype=np.intp)[:, None] * groups + np.arange(in_features, dtype=np.intp) // width) * 16
    starts += 8
    starts.flags.writeable = False
    return starts


def lookup(table, index):
    """table [rows, groups, 16] read at `index` (table_index): [rows, in] of the table's dtype."""
    return np.take(table.reshape(-1), index)


def block_weights(packed, scales, zero_points, group_size, dtype, need_exact):
    """(w, exact): w float64 [rows, in], each exact weight rounded once to `dtype` ('fp16' | 'bf16' | 'fp32'), and
    the exact weights float64 [rows, in] (reference.dequantize_exact) where need_exact, else None.

    w by tables where groups are TABLE_MIN_WIDTH wide or more, else weight by weight: the same values either
    way. (The exact weights alone are no faster by tables: dequantize_exact is two float64 passes.)
    """
    width = weights_width(scales, zero_points, packed.shape[0], 2 * packed.shape[1], group_size)
    exact = dequantize_exact(packed, scales, zero_points, group_size) if need_exact else None
    if width >= TABLE_MIN_WIDTH:
        table = nibble_table(packed, scales, zero_points, group_size, width)
        return lookup(rounded(table, dtype), table_index(packed, width)), exact
    if exact is None:
        return rounded(dequantize_exact(packed, scales, zero_points, group_size), dtype), None
    return rounded(exact, dtype), exact
