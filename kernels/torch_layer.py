"""The serving layer of docs/contract.md#layer in torch, as rank tp_rank of a tensor-parallel group computes it (CPU and CUDA).

Built on kernels.torch_path: the rank's shard of the base is dequantized there (to x.dtype), products are
summed in fp32, every slice's LoRA delta is torch_path.lora_delta (fp32 shrink and expand, one-hot per
token), and the rank's result is rounded once to x.dtype. By style (reference.layer.shard says what):
  column                the columns of every slice this rank holds (base rows, B rows, bias), slice after slice
  column-fully-sharded  the same, with A sharded along the rank: each rank shrinks with its max_rank / tp rows
                        of A, and the fp32 shrink results are all-gathered (torch.distributed, default group)
                        before the expand, as vLLM's ColumnParallelLinearWithShardedLoRA does
  row                   this rank's input columns of x, the base and A; B whole; the bias on rank 0 only; the
                        partial sum returned in x.dtype, for the caller's all-reduce
The sharding rules (and the refusal of a row shard that splits a quantization group) are
reference.layer.check_shard's, so the reference and this path refuse the same layers.
"""
import torch
import torch.distributed as dist

from int4_lora_harness.kernels.checks import FLOAT_DTYPES, same_device, validate_weights
from int4_lora_harness.kernels.torch_path import dequantize, lora_delta
from int4_lora_harness.reference.layer import STYLES, check_shard, check_slices, check_stacks


def validate_layer(x, packed_weights, scales, zero_points, group_size, lora_a_stacked, lora_b_stacked, output_slices,
                   lora_indices, bias, tp_rank, tp_size, style):
    """the argument rules of docs/contract.md#linear and #layer (slices, stacks, shards); return the group size a row shard must respect."""
    out_features, in_features, scale_kind, zero_kind = validate_weights(packed_weights, scales, zero_points, group_size)
    if x.dtype not in FLOAT_DTYPES or x.dim() != 2 or x.shape[1] != in_features:
        raise ValueError(f"x must be fp16, bf16 or fp32 of shape [M, {in_features}], got {x.dtype} {list(x.shape)}")
    if lora_indices.dtype not in (torch.int32, torch.int64) or lora_indices.shape != (x.shape[0],):
        raise ValueError(f"lora_indices must be int32 or int64 of shape [{x.shape[0]}], got {lora_indices.dtype} "
                         f"{list(lora_indices.shape)}")
    if bias is not None and bias.shape != (out_features,):
        raise ValueError(f"bias must have shape [{out_features}], got {list(bias.shape)}")
    check_slices(output_slices, out_features)
    max_loras, max_rank = check_stacks(lora_a_stacked, lora_b_stacked, output_slices, in_features)
    stacks = {f"lora_a_stacked[{s}]": t for s, t in enumerate(lora_a_stacked)}
    stacks.update({f"lora_b_stacked[{s}]": t for s, t in enumerate(lora_b_stacked)})
    for name, t in stacks.items():
        if not t.is_floating_point():
            raise ValueError(f"{name} must be floating point, got {t.dtype}")
    same_device("x", x=x, packed_weights=packed_weights, lora_indices=lora_indices, bias=bias, **stacks)
    if x.shape[0]:
        low, high = (int(v) for v in torch.aminmax(lora_indices))
        if low < -1 or high >= max_loras:
            raise ValueError(f"lora_indices must lie in [-1, {max_loras - 1}], got min {low} max {high}")
    groups = group_size if "grouped" in (scale_kind, zero_kind) else None
    check_shard(style, tp_rank, tp_size, output_slices, in_features, max_rank, groups)
    return groups


def column_rows(output_slices, tp_rank, tp_size, device):
    """int64 [out / tp]: the output rows of the base (and columns of y) this rank holds, slice after slice."""
    starts, rows = 0, []
    for n in output_slices:
        shard = n // tp_size
        rows.append(torch.arange(starts + tp_rank * shard, starts + (tp_rank + 1) * shard, device=device))
        starts += n
    return torch.cat(rows)


def _by_rows(t, rows):
    """Scales, zero points or bias of the base rows `rows`; per-tensor ones (one element) are shared."""
    return t if t is None or t.numel() == 1 else t[rows]


def _by_inputs(t, columns, group_size):
    """Grouped scales or zero points of the input columns `columns`; per-tensor and per-channel ones are shared."""
    if t is None or t.dim() != 2 or t.numel() == 1:
        return t
    return t[:, columns.start // group_size:columns.stop // group_size]


def base(x, packed_weights, scales, zero_points, group_size, bias):
    """fp32 [M, rows]: x @ W^T + bias, W dequantized to x.dtype by torch_path.dequantize, summed in fp32."""
    w = dequantize(packed_weights, scales, zero_points, group_size, output_dtype=x.dtype)  # [rows, in]
    y = x.float() @ w.float().T
    return y if bias is None else y + bias.float()


def deltas(x, lora_a, lora_b, lora_indices):
    """fp32 [M, sum n_s]: every slice's (x @ A_s^T) @ B_s^T per token, slice after slice.

    lora_a: per slice [L, R, in]; lora_b: per slice [L, n_s, R] (already this rank's rows)."""
    return torch.cat([lora_delta(x, a, b, lora_indices) for a, b in zip(lora_a, lora_b)], dim=1)


def own_slot_shrink(x, lora_a, lora_indices):
    """fp32 [M, r]: x[m] @ A[i_m]^T for each token's own slot (0 where i_m = -1). lora_a: [L, r, in]."""
    num_loras, rank, in_features = lora_a.shape
    shrunk = (x.float() @ lora_a.float().reshape(num_loras * rank, in_features).T).view(-1, num_loras, rank)
    mine = lora_indices[:, None, None] == torch.arange(num_loras, device=x.device)[None, :, None]  # [M, L, 1]
    return torch.where(mine, shrunk, 0.0).sum(dim=1)  # one nonzero term per token: exact


def own_slot_expand(shrunk, lora_b, lora_indices):
    """fp32 [M, n]: shrunk[m] @ B[i_m]^T (0 where i_m = -1). shrunk: [M, R]; lora_b: [L, n, R]."""
    num_loras, n, rank = lora_b.shape
    mine = lora_indices[:, None, None] == torch.arange(num_loras, device=shrunk.device)[None, :, None]
    spread = torch.where(mine, shrunk[:, None, :], 0.0).reshape(-1, num_loras * rank)  # [M, L * R]
    return spread @ lora_b.float().permute(0, 2, 1).reshape(num_loras * rank, n)


def gather_ranks(t, tp_size):
    """Every rank's `t` concatenated along the last dimension in rank order (torch.distributed all_gather).

    Through the CPU when the group is gloo (CUDA ranks sharing one GPU cannot use NCCL): the values are copied,
    never rounded, either way."""
    if tp_size == 1:
        return t
    staged = t.cpu() if dist.get_backend() == "gloo" else t
    parts = [torch.empty_like(staged) for _ in range(tp_size)]
    dist.all_gather(parts, staged.contiguous())
    return torch.cat(parts, dim=-1).to(t.device)


def fully_sharded_deltas(x, lora_a, lora_b, lora_indices, tp_rank, tp_size):
    """fp32 [M, sum n_s]: deltas with A sharded along the rank; the shrink results of every slice are gathered in
    one all_gather of [slices, M, R / tp] before the expand. lora_a: per slice [L, R, in]; lora_b: this rank's rows."""
    shard = lora_a[0].shape[1] // tp_size
    local = torch.stack([own_slot_shrink(x, a[:, tp_rank * shard:(tp_rank + 1) * shard], lora_indices)
                         for a in lora_a])  # [slices, M, R / tp]
    shrunk = gather_ranks(local, tp_size)  # [slices, M, R]
    return torch.cat([own_slot_expand(t, b, lora_indices) for t, b in zip(shrunk, lora_b)], dim=1)


def column_shard(packed_weights, scales, zero_points, lora_b_stacked, output_slices, bias, tp_rank, tp_size):
    """(packed, scales, zero_points, lora_b per slice [L, n_s / tp, R], bias) of this rank's output columns."""
    rows = column_rows(output_slices, tp_rank, tp_size, packed_weights.device)
    lora_b = [b[:, 0, tp_rank * (n // tp_size):(tp_rank + 1) * (n // tp_size)]
              for b, n in zip(lora_b_stacked, output_slices)]
    return packed_weights[rows], _by_rows(scales, rows), _by_rows(zero_points, rows), lora_b, _by_rows(bias, rows)


def row_shard(x, packed_weights, scales, zero_points, group_size, lora_a_stacked, bias, tp_rank, tp_size):
    """(x, packed, scales, zero_points, lora_a per slice [L, R, in / tp], bias | None) of this rank's input columns."""
    shard = x.shape[1] // tp_size
    cols = slice(tp_rank * shard, (tp_rank + 1) * shard)
    packed = packed_weights[:, cols.start // 2:cols.stop // 2]
    lora_a = [a[:, 0, :, cols] for a in lora_a_stacked]
    return (x[:, cols], packed, _by_inputs(scales, cols, group_size), _by_inputs(zero_points, cols, group_size),
            lora_a, bias if tp_rank == 0 else None)


def layer(x, packed_weights, scales, zero_points, group_size, lora_a_stacked, lora_b_stacked, output_slices,
          lora_indices, scaling, bias, *, tp_rank=0, tp_size=1, style="column"):
    """docs/contract.md#layer for rank tp_rank of tp_size: column styles [M, out / tp], row [M, out] (a partial sum), in x.dtype.

    Arguments as reference.layer.layer_exact takes them, as tensors on x's device (every rank gets them whole);
    style: one of reference.layer.STYLES. The fully sharded style calls torch.distributed.all_gather when
    tp_size > 1, so every rank of the default process group must call it together.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    validate_layer(x, packed_weights, scales, zero_points, group_size, lora_a_stacked, lora_b_stacked, output_slices,
                   lora_indices, bias, tp_rank, tp_size, style)
    if style == "row":
        x_r, packed, s, z, lora_a, bias_r = row_shard(x, packed_weights, scales, zero_points, group_size,
                                                      lora_a_stacked, bias, tp_rank, tp_size)
        y = base(x_r, packed, s, z, group_size, bias_r)
        y = y + scaling * deltas(x_r, lora_a, [b[:, 0] for b in lora_b_stacked], lora_indices)
        return y.to(x.dtype)
    packed, s, z, lora_b, bias_r = column_shard(packed_weights, scales, zero_points, lora_b_stacked, output_slices,
                                                bias, tp_rank, tp_size)
    lora_a = [a[:, 0] for a in lora_a_stacked]
    if style == "column":
        delta = deltas(x, lora_a, lora_b, lora_indices)
    else:
        delta = fully_sharded_deltas(x, lora_a, lora_b, lora_indices, tp_rank, tp_size)
    return (base(x, packed, s, z, group_size, bias_r) + scaling * delta).to(x.dtype)
