"""Deliberately wrong layers (SPEC §7, one bug each), one correct layer written differently, and hostile ranks.

Each bug is kernels.torch_layer.layer with one thing changed, a failure class of real serving layers;
int4_lora_harness.serving's properties must reject every entry of LAYER_BUGS at tp = 2 (in the style
named beside it) and accept CORRECT_LAYERS. The verifier loads them in its rank processes by TARGET
('planted.layers:<name>'), so they are plain module-level functions.
"""
import os
import time

import torch

from int4_lora_harness.kernels import torch_layer as T


def _column(x, packed_weights, scales, zero_points, group_size, lora_a_stacked, lora_b_stacked, lora_b, output_slices,
            lora_indices, scaling, bias, tp_rank, tp_size, place=lambda delta: delta):
    """A column-parallel rank's result with its own B (per slice [L, n_s / tp, R]), the deltas placed by `place`."""
    packed, s, z, _, bias_r = T.column_shard(packed_weights, scales, zero_points, lora_b_stacked, output_slices, bias,
                                             tp_rank, tp_size)
    delta = place(T.deltas(x, [a[:, 0] for a in lora_a_stacked], lora_b, lora_indices))
    return (T.base(x, packed, s, z, group_size, bias_r) + scaling * delta).to(x.dtype)


# ---- bugs -------------------------------------------------------------------------------------------

def slice_offset_off_by_one(x, packed_weights, scales, zero_points, group_size, lora_a_stacked, lora_b_stacked,
                            output_slices, lora_indices, scaling, bias, *, tp_rank=0, tp_size=1, style="column"):
    """Slice s's delta is added from offset_{s+1} on (an inclusive prefix sum), wrapping past the end. (column)"""
    _, _, _, lora_b, _ = T.column_shard(packed_weights, scales, zero_points, lora_b_stacked, output_slices, bias,
                                        tp_rank, tp_size)
    widths = [n // tp_size for n in output_slices]

    def place(delta):  # delta: [M, sum widths], slice after slice
        moved = torch.zeros_like(delta)
        for s, width in enumerate(widths):
            start, wrong = sum(widths[:s]), sum(widths[:s + 1])  # wrong: should be sum(widths[:s])
            columns = (torch.arange(width, device=delta.device) + wrong) % delta.shape[1]
            moved[:, columns] += delta[:, start:start + width]
        return moved
    return _column(x, packed_weights, scales, zero_points, group_size, lora_a_stacked, lora_b_stacked, lora_b,
                   output_slices, lora_indices, scaling, bias, tp_rank, tp_size, place)


def b_sharded_along_rank(x, packed_weights, scales, zero_points, group_size, lora_a_stacked, lora_b_stacked,
                         output_slices, lora_indices, scaling, bias, *, tp_rank=0, tp_size=1, style="column"):
    """B sharded along its last (rank) axis instead of out: a [n_s, R // tp] chunk, reshaped into the
    [n_s / tp, R] the expand expects (the reshape hides the wrong axis; zero-padded when tp does not divide R).
    (column)"""
    lora_b = []
    for b, n in zip(lora_b_stacked, output_slices):
        num_loras, rank = b.shape[0], b.shape[-1]
        width = rank // tp_size
        chunk = b[:, 0].narrow(-1, tp_rank * width, width)  # [L, n, R // tp]: the rank axis sharded
        viewed = chunk.reshape(num_loras, n // tp_size, width * tp_size)
        lora_b.append(torch.nn.functional.pad(viewed, (0, rank - width * tp_size)))
    return _column(x, packed_weights, scales, zero_points, group_size, lora_a_stacked, lora_b_stacked, lora_b,
                   output_slices, lora_indices, scaling, bias, tp_rank, tp_size)


def bias_on_every_rank(x, packed_weights, scales, zero_points, group_size, lora_a_stacked, lora_b_stacked,
                       output_slices, lora_indices, scaling, bias, *, tp_rank=0, tp_size=1, style="row"):
    """Row-parallel, with the bias added to every rank's partial sum (tp times after the all-reduce). (row)"""
    partial = T.layer(x, packed_weights, scales, zero_points, group_size, lora_a_stacked, lora_b_stacked,
                      output_slices, lora_indices, scaling, bias, tp_rank=tp_rank, tp_size=tp_size, style=style)
    if style != "row" or tp_rank == 0 or bias is None:
        return partial
    return (partial.float() + bias.float()).to(x.dtype)


_PREPARED = {}  # id(lora_a_stacked[0]) -> (the stacks as last seen, this layer's own prepared copy of them)


def slot_written_without_reset(x, packed_weights, scales, zero_points, group_size, lora_a_stacked, lora_b_stacked,
                               output_slices, lora_indices, scaling, bias, *, tp_rank=0, tp_size=1, style="column"):
    """Keeps its own prepared copy of the slots and, when a slot changes, copies the new adapter's rank into it
    without resetting the slot first: a lower-rank adapter keeps the previous one's padding. (any style)"""
    stacks = (*lora_a_stacked, *lora_b_stacked)
    key = id(lora_a_stacked[0])
    if key not in _PREPARED:  # the first tensor is kept in the entry, so its id is never reused
        _PREPARED[key] = (lora_a_stacked[0], [t.clone() for t in stacks], [t.clone() for t in stacks])
    _, seen, prepared = _PREPARED[key]
    n = len(lora_a_stacked)
    for slot in range(lora_a_stacked[0].shape[0]):
        if all(torch.equal(t[slot], s[slot]) for t, s in zip(stacks, seen)):
            continue
        for a, b, prepared_a, prepared_b in zip(lora_a_stacked, lora_b_stacked, prepared[:n], prepared[n:]):
            rank = _written_rank(a[slot, 0])
            prepared_a[slot, 0, :rank] = a[slot, 0, :rank]  # should first reset: prepared_a[slot] = 0
            prepared_b[slot, 0, :, :rank] = b[slot, 0, :, :rank]
        for t, s in zip(stacks, seen):
            s[slot] = t[slot]
    return T.layer(x, packed_weights, scales, zero_points, group_size, tuple(prepared[:n]), tuple(prepared[n:]),
                   output_slices, lora_indices, scaling, bias, tp_rank=tp_rank, tp_size=tp_size, style=style)


def _written_rank(a):
    """The rank of the adapter in a slot of A ([R, in]): one past its last nonzero row."""
    rows = torch.nonzero(a.abs().sum(dim=1)).flatten()
    return int(rows[-1]) + 1 if rows.numel() else 0


def shrink_not_gathered(x, packed_weights, scales, zero_points, group_size, lora_a_stacked, lora_b_stacked,
                        output_slices, lora_indices, scaling, bias, *, tp_rank=0, tp_size=1,
                        style="column-fully-sharded"):
    """Fully sharded adapters whose shrink is never all-gathered: the gathered buffer holds only this rank's
    part (zeros elsewhere), so each rank expands with its share of the rank only. (column-fully-sharded)"""
    packed, s, z, lora_b, bias_r = T.column_shard(packed_weights, scales, zero_points, lora_b_stacked, output_slices,
                                                  bias, tp_rank, tp_size)
    shard = lora_a_stacked[0].shape[2] // tp_size
    deltas = []
    for a, b in zip(lora_a_stacked, lora_b):
        local = T.own_slot_shrink(x, a[:, 0, tp_rank * shard:(tp_rank + 1) * shard], lora_indices)  # [M, R / tp]
        buffer = torch.zeros(x.shape[0], a.shape[2], device=x.device)
        buffer[:, tp_rank * shard:(tp_rank + 1) * shard] = local  # the all_gather that never happened
        deltas.append(T.own_slot_expand(buffer, b, lora_indices))
    return (T.base(x, packed, s, z, group_size, bias_r) + scaling * torch.cat(deltas, dim=1)).to(x.dtype)


def rank_order_swapped(x, packed_weights, scales, zero_points, group_size, lora_a_stacked, lora_b_stacked,
                       output_slices, lora_indices, scaling, bias, *, tp_rank=0, tp_size=1, style="column"):
    """Rank r computes the block of rank tp - 1 - r, so the gathered blocks come out in reversed order. (column)"""
    return T.layer(x, packed_weights, scales, zero_points, group_size, lora_a_stacked, lora_b_stacked, output_slices,
                   lora_indices, scaling, bias, tp_rank=tp_size - 1 - tp_rank, tp_size=tp_size, style=style)


def shrink_gather_reversed(x, packed_weights, scales, zero_points, group_size, lora_a_stacked, lora_b_stacked,
                           output_slices, lora_indices, scaling, bias, *, tp_rank=0, tp_size=1,
                           style="column-fully-sharded"):
    """Fully sharded adapters whose gathered shrink results are concatenated in reversed rank order, so rank
    dimension j meets B's column of another rank's part. (column-fully-sharded)"""
    packed, s, z, lora_b, bias_r = T.column_shard(packed_weights, scales, zero_points, lora_b_stacked, output_slices,
                                                  bias, tp_rank, tp_size)
    shard = lora_a_stacked[0].shape[2] // tp_size
    local = torch.stack([T.own_slot_shrink(x, a[:, 0, tp_rank * shard:(tp_rank + 1) * shard], lora_indices)
                         for a in lora_a_stacked])  # [slices, M, R / tp]
    parts = [torch.empty_like(local) for _ in range(tp_size)]
    if tp_size > 1:
        torch.distributed.all_gather(parts, local.contiguous())
    else:
        parts = [local]
    shrunk = torch.cat(parts[::-1], dim=-1)  # should be parts, in rank order
    delta = torch.cat([T.own_slot_expand(t, b, lora_indices) for t, b in zip(shrunk, lora_b)], dim=1)
    return (T.base(x, packed, s, z, group_size, bias_r) + scaling * delta).to(x.dtype)


# bug -> the style whose properties must kill it
LAYER_BUGS = {
    "slice_offset_off_by_one": "column",
    "b_sharded_along_rank": "column",
    "bias_on_every_rank": "row",
    "slot_written_without_reset": "column",
    "shrink_not_gathered": "column-fully-sharded",
    "rank_order_swapped": "column",
    "shrink_gather_reversed": "column-fully-sharded",
}


# ---- correct, written differently ---------------------------------------------------------------------

def row_partials_in_fp32(x, packed_weights, scales, zero_points, group_size, lora_a_stacked, lora_b_stacked,
                         output_slices, lora_indices, scaling, bias, *, tp_rank=0, tp_size=1, style="row"):
    """Row-parallel partial sums returned in fp32 (the harness all-reduces in fp32 and rounds once); other
    styles as kernels.torch_layer."""
    if style != "row":
        return T.layer(x, packed_weights, scales, zero_points, group_size, lora_a_stacked, lora_b_stacked,
                       output_slices, lora_indices, scaling, bias, tp_rank=tp_rank, tp_size=tp_size, style=style)
    x_r, packed, s, z, lora_a, bias_r = T.row_shard(x, packed_weights, scales, zero_points, group_size,
                                                    lora_a_stacked, bias, tp_rank, tp_size)
    y = T.base(x_r, packed, s, z, group_size, bias_r)
    return y + scaling * T.deltas(x_r, lora_a, [b[:, 0] for b in lora_b_stacked], lora_indices)


CORRECT_LAYERS = ["row_partials_in_fp32"]


# ---- hostile ranks: a verdict, never a hang ---------------------------------------------------------------

def raises_on_rank_one(*args, tp_rank=0, tp_size=1, style="column", **kwargs):
    """Rank 1 raises (a RuntimeError with a message); the others compute."""
    if tp_rank == 1:
        raise RuntimeError("rank 1 ran out of workspace")
    return T.layer(*args, **kwargs, tp_rank=tp_rank, tp_size=tp_size, style=style)


def hangs_on_rank_one(*args, tp_rank=0, tp_size=1, style="column", **kwargs):
    """Rank 1 never returns."""
    while tp_rank == 1:
        time.sleep(1.0)
    return T.layer(*args, **kwargs, tp_rank=tp_rank, tp_size=tp_size, style=style)


def dies_on_rank_one(*args, tp_rank=0, tp_size=1, style="column", **kwargs):
    """Rank 1's process exits at once (as a CUDA error or a segfault would end it)."""
    if tp_rank == 1:
        os._exit(3)
    return T.layer(*args, **kwargs, tp_rank=tp_rank, tp_size=tp_size, style=style)


def mixed_partial_dtypes(*args, tp_rank=0, tp_size=1, style="row", **kwargs):
    """Row partials in fp32 on rank 0 and in x.dtype elsewhere: each allowed alone, no all-reduce together."""
    partial = T.layer(*args, **kwargs, tp_rank=tp_rank, tp_size=tp_size, style=style)
    return partial.float() if tp_rank == 0 else partial
