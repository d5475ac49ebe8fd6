"""A block of weight rows read from per-group tables: the judge's dequantized weights at memory speed.

The weights of one (row, group) take at most 16 values, one per nibble. `nibble_table` has the
reference dequantize those 16 nibbles of every group (reference.dequantize_exact on a packed
block that holds v = -8..7 in each group: the reference's own two operations on the same
operands, so every entry is bit for bit the weight it stands for); `lookup` then reads each
weight of the block from its group's table by its nibble. Rounding to x's dtype then runs on 16
values a group instead of every weight (for g128, an eighth), where the judge spent its time.

The read itself is a C loop (gather.c, built by int4_lora_harness.cbuild: a copy from the table,
no arithmetic on a weight, no code shared with any kernel), about ten times faster than NumPy's
index-and-take, which stands in where no compiler works (a warning says so) or where
INT4_LORA_HARNESS_JUDGE_NATIVE=0; the values are the same either way (tests/test_tables.py).

Worth it only where a group is at least TABLE_MIN_WIDTH columns wide; narrower groups have fewer
weights than table entries, and the judge computes on every weight (harness/verify/tolerance.py).
"""
import ctypes
import functools
from pathlib import Path
from typing import NamedTuple

import numpy as np

from int4_lora_harness import cbuild
from int4_lora_harness.reference.dequantize import dequantize_exact
from int4_lora_harness.reference.granularity import per_group, weights_width
from int4_lora_harness.reference.packing import pack, unpack
from int4_lora_harness.reference.rounding import rounded

TABLE_MIN_WIDTH = 16  # columns per group from which a table of 16 entries is smaller than the group
NIBBLES = np.arange(-8, 8, dtype=np.int8)  # v for q = 0..15
SOURCE = Path(__file__).with_name("gather.c")
SWITCH = "INT4_LORA_HARNESS_JUDGE_NATIVE"  # set to 0: NumPy reads the tables


@functools.cache
def library():
    """gather.c loaded, or a cbuild.Missing that says why not (warned once)."""
    lib = cbuild.load(SOURCE, SWITCH, "the judge's C table gather", "NumPy reads the tables (same values, slower)")
    if not isinstance(lib, cbuild.Missing):
        p, i64 = ctypes.c_void_p, ctypes.c_int64
        lib.judge_gather.argtypes = [p, i64, i64, i64, i64, p, p]
        lib.judge_gather.restype = None
    return lib


def reader():
    """What reads the judge's tables here: 'C gather', or 'NumPy (why the C gather is not used)'."""
    lib = library()
    return f"NumPy ({lib.why})" if isinstance(lib, cbuild.Missing) else "C gather"


def table_layer(packed, scales, zero_points, group_size, width):
    """(packed uint8 [rows, groups * 8], scales [rows, groups], zero_points [rows, groups] | None): a layer whose
    groups of 16 columns hold the nibbles v = -8..7 with the scale and zero point of each group of the block.
    A function of a weight's (v, scale, zero point) computed on it, with group size 16, is that function's table.
    packed: uint8 [rows, in // 2]; scales, zero_points: as reference.dequantize_exact takes them."""
    rows, in_features = packed.shape[0], 2 * packed.shape[1]
    groups = -(-in_features // width)
    of_group = lambda t, name: np.broadcast_to(per_group(t, rows, in_features, group_size, name, width)[..., 0],  # noqa
                                               (rows, groups))  # [rows, groups] float64, as the reference reads it
    zeros_g = None if zero_points is None else of_group(zero_points, "zero_points")
    every_nibble = pack(np.broadcast_to(NIBBLES, (rows, groups, 16)).reshape(rows, groups * 16))
    return every_nibble, of_group(scales, "scales"), zeros_g


def nibble_table(packed, scales, zero_points, group_size, width, layer=None):
    """float64 [rows, groups, 16]: entry [o, g, q] = reference.dequantize_exact's weight of row o, group g for
    nibble q. packed: uint8 [rows, in // 2]; scales, zero_points: as reference.dequantize_exact takes them;
    layer: their table_layer where the caller has it already."""
    layer = layer or table_layer(packed, scales, zero_points, group_size, width)
    return dequantize_exact(*layer, 16).reshape(packed.shape[0], -1, 16)


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


def scratch(space, name, shape, dtype):
    """An uninitialized array of `shape` and `dtype`: space[name]'s memory where it is big enough (the blocks of
    one case reuse it, so a 32 MiB block is not faulted in page by page again), else a new one kept there.
    space None: always a new array."""
    count = int(np.prod(shape))
    held = None if space is None else space.get(name)
    if held is None or held.dtype != dtype or held.size < count:
        held = np.empty(count, dtype)
        if space is not None:
            space[name] = held
    return held[:count].reshape(shape)


def lookup(table, packed, width, need_abs=False, space=None, name="w"):
    """(w, w_abs): table [rows, groups, 16] float64 read at each weight's nibble, w float64 [rows, in], and
    w_abs = |w| rounded to nearest float32 [rows, in] where need_abs, else None. packed: uint8 [rows, in // 2]."""
    rows, in_features = packed.shape[0], 2 * packed.shape[1]
    table = np.ascontiguousarray(table, np.float64)
    w = scratch(space, name, (rows, in_features), np.float64)
    w_abs = scratch(space, name + " abs", (rows, in_features), np.float32) if need_abs else None
    lib = library()
    if isinstance(lib, cbuild.Missing) or w.size == 0:
        np.take(table.reshape(-1), table_index(packed, width), out=w)
        if need_abs:
            with np.errstate(over="ignore"):  # past float32's range: inf, as the C conversion gives
                np.copyto(w_abs, np.abs(w), casting="same_kind")
        return w, w_abs
    packed = np.ascontiguousarray(packed)
    lib.judge_gather(table.ctypes.data, packed.ctypes.data, rows, packed.shape[1], width, w.ctypes.data,
                     None if w_abs is None else w_abs.ctypes.data)
    return w, w_abs


class BlockWeights(NamedTuple):
    w: np.ndarray  # float64 [rows, in]: each exact weight rounded once to the dtype asked (or exact, dtype None)
    exact: np.ndarray | None  # float64 [rows, in]: reference.dequantize_exact's weights, where asked
    w_abs: np.ndarray | None  # float32 [rows, in]: |w| rounded to nearest, where asked
    per_weight: np.ndarray | None = None  # float64 [rows, in]: per_weight's values, where asked


def block_weights(packed, scales, zero_points, group_size, dtype, need_exact, need_abs=False, space=None,
                  per_weight=None):
    """BlockWeights of a block: w rounded to `dtype` ('fp16' | 'bf16' | 'fp32', or None for the exact weights),
    the exact weights where need_exact, |w| in float32 where need_abs. Arrays may live in `space` (scratch).
    per_weight: None, or f(packed, scales, zero_points, group_size, exact) -> float64 [rows, in], a function of
    each weight's nibble, scale and zero point (and its exact value) only, computed on the tables too.

    By tables where groups are TABLE_MIN_WIDTH wide or more, else weight by weight: the same values either way.
    """
    width = weights_width(scales, zero_points, packed.shape[0], 2 * packed.shape[1], group_size)
    if width < TABLE_MIN_WIDTH:
        exact = dequantize_exact(packed, scales, zero_points, group_size)
        w = exact if dtype is None else rounded(exact, dtype)
        with np.errstate(over="ignore"):  # |w| past float32's range: inf
            w_abs = np.abs(w).astype(np.float32) if need_abs else None
        extra = None if per_weight is None else per_weight(packed, scales, zero_points, group_size, exact)
        return BlockWeights(w, exact if need_exact else None, w_abs, extra)
    layer = table_layer(packed, scales, zero_points, group_size, width)
    table = nibble_table(packed, scales, zero_points, group_size, width, layer)
    exact = lookup(table, packed, width, space=space, name="exact")[0] if need_exact and dtype is not None else None
    extra = None
    if per_weight is not None:
        extra = lookup(per_weight(*layer, 16, table.reshape(packed.shape[0], -1)).reshape(table.shape), packed,
                       width, space=space, name="per weight")[0]
    w, w_abs = lookup(table if dtype is None else rounded(table, dtype), packed, width, need_abs, space)
    return BlockWeights(w, w if need_exact and dtype is None else exact, w_abs, extra)
