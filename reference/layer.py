"""The serving layer of docs/contract.md#layer around its linear: adapter slots, output slices, tensor-parallel shards.

A layer of out_features = sum(output_slices) holds one packed INT4 base and, per output slice s,
a stack of adapter slots (one slot per adapter a serving engine keeps loaded):

    lora_a_stacked[s]: [max_loras, 1, max_rank, in_features]
    lora_b_stacked[s]: [max_loras, 1, slice_out[s], max_rank]

For token m with slot i_m (-1: no adapter), in float64 and rounded once to x's dtype:

    y[m] = x[m] @ W^T + bias
    y[m, offset_s : offset_s + slice_out[s]] += scaling * (x[m] @ A_s[i_m]^T) @ B_s[i_m]^T   (i_m >= 0)
    offset_s = sum(slice_out[:s])

Read in this order: slices, the layer, slots (write and reset, as pure functions), shards (what
rank r of tp computes in each style, and how the ranks' results combine). Imports no torch.
"""
import numpy as np

from int4_lora_harness.reference.checks import check_format_name, is_integer
from int4_lora_harness.reference.dequantize import dequantize_exact
from int4_lora_harness.reference.granularity import granularity
from int4_lora_harness.reference.linear import base_exact, check_lora, lora_exact
from int4_lora_harness.reference.rounding import round_to

STYLES = ("column", "row", "column-fully-sharded")


# --- slices ----------------------------------------------------------------------------------------

def check_slices(output_slices, out_features):
    """output_slices: a non-empty tuple of positive ints summing to out_features, else ValueError."""
    if not isinstance(output_slices, (tuple, list)) or not output_slices or \
            not all(is_integer(n) and n >= 1 for n in output_slices):
        raise ValueError(f"output_slices must be a non-empty tuple of positive ints, got {output_slices!r}")
    if sum(output_slices) != out_features:
        raise ValueError(f"output_slices must sum to out_features = {out_features}, got {tuple(output_slices)} "
                         f"(sum {sum(output_slices)})")


def slice_offsets(output_slices):
    """[offset_s]: the first output column of slice s, sum(slice_out[:s])."""
    return [int(sum(output_slices[:s])) for s in range(len(output_slices))]


def check_stacks(lora_a_stacked, lora_b_stacked, output_slices, in_features):
    """Validate the adapter slots (shapes only: arrays or tensors); return (max_loras, max_rank)."""
    n = len(output_slices)
    if len(lora_a_stacked) != n or len(lora_b_stacked) != n:
        raise ValueError(f"lora_a_stacked and lora_b_stacked must hold one stack per output slice ({n}), "
                         f"got {len(lora_a_stacked)} and {len(lora_b_stacked)}")
    first = tuple(np.shape(lora_a_stacked[0]))
    if len(first) != 4:
        raise ValueError(f"lora_a_stacked[0] must have shape [max_loras, 1, max_rank, {in_features}], "
                         f"got {list(first)}")
    max_loras, max_rank = first[0], first[2]
    for s, (a, b, width) in enumerate(zip(lora_a_stacked, lora_b_stacked, output_slices)):
        if tuple(np.shape(a)) != (max_loras, 1, max_rank, in_features):
            raise ValueError(f"lora_a_stacked[{s}] must have shape [max_loras, 1, max_rank, in_features] = "
                             f"[{max_loras}, 1, {max_rank}, {in_features}], got {list(np.shape(a))}")
        if tuple(np.shape(b)) != (max_loras, 1, width, max_rank):
            raise ValueError(f"lora_b_stacked[{s}] must have shape [max_loras, 1, slice_out[{s}], max_rank] = "
                             f"[{max_loras}, 1, {width}, {max_rank}], got {list(np.shape(b))}")
    return max_loras, max_rank


# --- the layer -------------------------------------------------------------------------------------

def layer_exact(x, packed_weights, scales, zero_points, group_size, lora_a_stacked, lora_b_stacked, output_slices,
                lora_indices, scaling, bias):
    """float64 [M, out]: the layer before its final rounding.

    x: float [M, in]; packed_weights, scales, zero_points, group_size: the base of docs/contract.md#packed-weight;
    lora_a_stacked / lora_b_stacked: tuples of float [L, 1, R, in] / [L, 1, slice_out[s], R];
    output_slices: tuple of ints summing to out; lora_indices: int [M] in [-1, L); scaling: float;
    bias: [out] | None.
    """
    w = dequantize_exact(packed_weights, scales, zero_points, group_size)  # [out, in]
    out_features, in_features = w.shape
    check_slices(output_slices, out_features)
    check_stacks(lora_a_stacked, lora_b_stacked, output_slices, in_features)
    y = base_exact(x, w, bias)  # [M, out]
    for s, offset in enumerate(slice_offsets(output_slices)):
        a = np.asarray(lora_a_stacked[s])[:, 0]  # [L, R, in]
        b = np.asarray(lora_b_stacked[s])[:, 0]  # [L, slice_out, R]
        check_lora(a, b, lora_indices, y.shape[0], output_slices[s], in_features)
        y[:, offset:offset + output_slices[s]] += lora_exact(x, a, b, lora_indices, scaling)
    return y


def layer(*args, x_dtype="fp16"):
    """docs/contract.md#layer rounded once to `x_dtype` ('fp16', 'bf16', 'fp32'); positional arguments as in layer_exact."""
    check_format_name(x_dtype, "x_dtype")
    with np.errstate(over="ignore"):
        return round_to(layer_exact(*args), x_dtype)


# --- slots -----------------------------------------------------------------------------------------

def reset_slot(stacked, index):
    """Copies of the stacks of `stacked` (lora_a_stacked or lora_b_stacked) with slot `index` all zero."""
    out = tuple(np.array(t, copy=True) for t in stacked)
    if not is_integer(index) or not 0 <= index < out[0].shape[0]:
        raise ValueError(f"index must be a slot in [0, {out[0].shape[0] - 1}], got {index!r}")
    for t in out:
        t[index] = 0
    return out


def write_slot(lora_a_stacked, lora_b_stacked, index, lora_a, lora_b):
    """(lora_a_stacked, lora_b_stacked) after writing one adapter into slot `index` (copies; inputs untouched).

    lora_a / lora_b: one entry per slice, A_s [r_s, in] and B_s [slice_out[s], r_s] with r_s <= max_rank, or
    None for a slice the adapter leaves alone. The slot is reset first, then A_s goes to [:r_s, :] and B_s to
    [:, :r_s]: the rest of the slot stays zero, whatever rank the slot held before.
    """
    a_out, b_out = reset_slot(lora_a_stacked, index), reset_slot(lora_b_stacked, index)
    if len(lora_a) != len(a_out) or len(lora_b) != len(b_out):
        raise ValueError(f"lora_a and lora_b must hold one entry per slice ({len(a_out)}), got {len(lora_a)} and "
                         f"{len(lora_b)}")
    for s, (a, b) in enumerate(zip(lora_a, lora_b)):
        if a is None and b is None:
            continue
        _, _, max_rank, in_features = a_out[s].shape
        width = b_out[s].shape[2]
        rank = np.shape(a)[0] if np.ndim(a) == 2 else -1
        if np.shape(a) != (rank, in_features) or not 1 <= rank <= max_rank:
            raise ValueError(f"lora_a[{s}] must have shape [rank, {in_features}] with 1 <= rank <= max_rank = "
                             f"{max_rank}, got {list(np.shape(a))}")
        if np.shape(b) != (width, rank):
            raise ValueError(f"lora_b[{s}] must have shape [slice_out[{s}], rank] = [{width}, {rank}], "
                             f"got {list(np.shape(b))}")
        a_out[s][index, 0, :rank, :] = a
        b_out[s][index, 0, :, :rank] = b
    return a_out, b_out


# --- shards ----------------------------------------------------------------------------------------

def grouped_size(scales, zero_points, group_size, out_features, in_features):
    """group_size where the scales or the zero points are grouped, else None (no group to split)."""
    tensors = [("scales", scales)] + ([] if zero_points is None else [("zero_points", zero_points)])
    kinds = {granularity(t, out_features, in_features, group_size, name) for name, t in tensors}
    return group_size if "grouped" in kinds else None


def check_shard(style, tp_rank, tp_size, output_slices, in_features, max_rank, group_size):
    """ValueError naming the rule unless rank tp_rank of tp_size can hold its shard of the layer in `style`.

    group_size: as grouped_size returns it (None: the scales and zero points have no groups). Row-parallel
    shards in_features: every shard is even (two nibbles per packed byte) and, for tp > 1, a whole number of
    quantization groups (a shard that splits a group would need the group's scale on two ranks). Column styles
    shard every output slice by tp; fully sharded adapters also shard max_rank by tp.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if not is_integer(tp_size) or tp_size < 1 or not is_integer(tp_rank) or not 0 <= tp_rank < tp_size:
        raise ValueError(f"tp_rank must be an int in [0, tp_size) and tp_size an int >= 1, got tp_rank={tp_rank!r}, "
                         f"tp_size={tp_size!r}")
    if style == "row":
        shard = in_features // tp_size
        if in_features % tp_size or (tp_size > 1 and shard % 2):
            raise ValueError(f"a row-parallel layer shards in_features into even shards: in_features = {in_features} "
                             f"must be a multiple of 2 * tp_size = {2 * tp_size}")
        if tp_size > 1 and group_size is not None and shard % group_size:
            raise ValueError(f"a row-parallel shard must not split a quantization group: in_features / tp_size = "
                             f"{shard} must be a multiple of group_size = {group_size}")
        return
    if any(n % tp_size for n in output_slices):
        raise ValueError(f"a column-parallel layer shards every output slice: output_slices {tuple(output_slices)} "
                         f"must all be multiples of tp_size = {tp_size}")
    if style == "column-fully-sharded" and max_rank % tp_size:
        raise ValueError(f"fully sharded adapters shard the rank: max_rank = {max_rank} must be a multiple of "
                         f"tp_size = {tp_size}")


def rank_columns(output_slices, tp_rank, tp_size):
    """int [out / tp]: the output columns rank tp_rank of a column-parallel layer holds, in its block's order.

    Every slice is sharded on its own (as vLLM's MergedColumnParallelLinear and QKVParallelLinear do):
    slice s contributes [offset_s + tp_rank * n_s / tp, offset_s + (tp_rank + 1) * n_s / tp), slice after slice.
    """
    return np.concatenate([np.arange(offset + tp_rank * (n // tp_size), offset + (tp_rank + 1) * (n // tp_size))
                           for offset, n in zip(slice_offsets(output_slices), output_slices)])


def rank_inputs(in_features, tp_rank, tp_size):
    """slice: the input columns rank tp_rank of a row-parallel layer holds."""
    shard = in_features // tp_size
    return slice(tp_rank * shard, (tp_rank + 1) * shard)


def _rows(t, rows, out_features, in_features, group_size, name):
    """Scales or zero points of the output rows `rows` (per-tensor ones are shared)."""
    if t is None or granularity(t, out_features, in_features, group_size, name) == "per-tensor":
        return t
    return np.asarray(t)[rows]


def _inputs(t, columns, out_features, in_features, group_size, name):
    """Scales or zero points of the input columns `columns` (a whole number of groups; others are shared)."""
    if t is None or granularity(t, out_features, in_features, group_size, name) != "grouped":
        return t
    return np.asarray(t)[:, columns.start // group_size:columns.stop // group_size]


def shard(x, packed_weights, scales, zero_points, group_size, lora_a_stacked, lora_b_stacked, output_slices,
          lora_indices, scaling, bias, *, tp_rank, tp_size, style):
    """The 11 arguments of rank tp_rank's own layer, in layer_exact's order: what that rank computes, as a layer.

    column, column-fully-sharded: the base rows, B's rows and the bias of rank_columns, slices of n_s / tp
        (fully sharded adapters shard A along the rank too: that changes how a rank computes, not what);
    row: the input columns of rank_inputs of x, the base (grouped scales and zero points: their groups) and A;
        B whole; the bias on rank 0 only (it is added once, not once per rank).
    """
    out_features, in_features = np.shape(packed_weights)[0], 2 * np.shape(packed_weights)[1]
    _, max_rank = check_stacks(lora_a_stacked, lora_b_stacked, output_slices, in_features)
    groups = grouped_size(scales, zero_points, group_size, out_features, in_features)
    check_shard(style, tp_rank, tp_size, output_slices, in_features, max_rank, groups)
    if style == "row":
        cols = rank_inputs(in_features, tp_rank, tp_size)
        packed_cols = slice(cols.start // 2, cols.stop // 2)
        pick = lambda t, name: _inputs(t, cols, out_features, in_features, group_size, name)  # noqa: E731
        return (np.asarray(x)[:, cols], np.asarray(packed_weights)[:, packed_cols], pick(scales, "scales"),
                pick(zero_points, "zero_points"), group_size, tuple(np.asarray(a)[..., cols] for a in lora_a_stacked),
                tuple(lora_b_stacked), tuple(output_slices), lora_indices, scaling, bias if tp_rank == 0 else None)
    rows = rank_columns(output_slices, tp_rank, tp_size)
    pick = lambda t, name: _rows(t, rows, out_features, in_features, group_size, name)  # noqa: E731
    b_rows = [np.arange(tp_rank * (n // tp_size), (tp_rank + 1) * (n // tp_size)) for n in output_slices]
    return (x, np.asarray(packed_weights)[rows], pick(scales, "scales"), pick(zero_points, "zero_points"),
            group_size, tuple(lora_a_stacked), tuple(np.asarray(b)[:, :, r] for b, r in zip(lora_b_stacked, b_rows)),
            tuple(n // tp_size for n in output_slices), lora_indices, scaling,
            None if bias is None else np.asarray(bias)[rows])


def combine(rank_results, style, output_slices):
    """float64 [M, out]: the layer's output from its ranks' results, in rank order (exact arithmetic).

    column styles: rank r's block goes to the columns rank_columns(r) (an all-gather, then every slice
    reassembled); row: the partial sums added (an all-reduce).
    """
    tp_size = len(rank_results)
    if style == "row":
        return np.sum(np.asarray(rank_results, dtype=np.float64), axis=0)
    first = np.asarray(rank_results[0])
    out = np.zeros((first.shape[0], int(sum(output_slices))))
    for tp_rank, block in enumerate(rank_results):
        out[:, rank_columns(output_slices, tp_rank, tp_size)] = block
    return out
