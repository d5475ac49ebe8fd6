"""The family "big path x X": defects switched on only on a big path (K >= 4096; with M >= 128 or 512 tokens; with
out_features >= 32768 rows) AND in one part X of the domain (a dtype, a scale or zero-point kind or granularity, a
group size, a rank, an adapter count, a bias, index -1), correct everywhere else: what a real kernel's split-K or
big-tile path ships with. harness.verify.bigpath's covering design must meet every one (tests/test_bigpath.py).

BIG_PATH_BUGS: {name: (contract, candidate, shape)}; shape(case) says whether the case is on the big path the
defect needs (its part X is up to the case's values).
"""
import torch

from int4_lora_harness.kernels.torch_path import dequantize, linear, unpack
from planted.bugs import _finish, _lora

BIG_K, BIG_M, PREFILL, WIDE = 4096, 128, 512, 2 ** 15


def _in(packed_weights):
    return 2 * packed_weights.shape[1]


def _with_columns(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias,
                  group_of_column):
    """The linear with weights read by `group_of_column` (int [in]): W rounded once to x.dtype, fp32 GEMM."""
    w = _finish(unpack(packed_weights).double(), scales, zero_points, group_size, x.dtype, group_of_column)
    y = x.float() @ w.float().T + (0.0 if bias is None else bias.float())
    return (y + _lora(x, lora_a, lora_b, lora_indices, scaling)).to(x.dtype)


def _k_over_128(in_features, scales, zero_points, group_size):
    """Group index k // 128 whatever the group size (None: the defect is off)."""
    grouped = any(t is not None and t.dim() == 2 and t.numel() > 1 for t in (scales, zero_points))
    if in_features < BIG_K or not grouped or group_size == 128:
        return None
    return torch.arange(in_features) // 128


def _ragged_tail_as_previous(in_features, scales, zero_points, group_size):
    """The ragged last group read with the previous group's scales and zero points (None: the defect is off)."""
    grouped = any(t is not None and t.dim() == 2 and t.numel() > 1 for t in (scales, zero_points))
    if in_features < BIG_K or not grouped or in_features % group_size == 0 or in_features < 2 * group_size:
        return None
    groups = torch.arange(in_features) // group_size
    return torch.where(groups == groups[-1], groups - 1, groups)


def _bf16_scales_through_fp16(scales):
    return scales.half().to(torch.bfloat16) if scales.dtype == torch.bfloat16 else scales


def _per_channel_read_per_tile(scales, out_features):
    """Per-channel values read at the first row of each 16-row tile."""
    if scales.dim() != 1 or scales.numel() != out_features or out_features == 1:
        return scales
    return scales[torch.arange(out_features) // 16 * 16]


def _rounded_if_fractional(zero_points):
    return zero_points.round() if zero_points is not None and zero_points.is_floating_point() else zero_points


def _fp32_zeros_narrowed(zero_points, dtype):
    if zero_points is None or zero_points.dtype != torch.float32 or dtype == torch.float32:
        return zero_points
    return zero_points.to(dtype).float()


def _per_channel_zeros_per_tensor(zero_points, out_features):
    if zero_points is None or zero_points.dim() != 1 or zero_points.numel() != out_features or out_features == 1:
        return zero_points
    return zero_points[:1].clone()


# ---- the linear ----

def _linear_with_inputs(change):
    """A linear whose big-K path changes its inputs by change(kwargs) (a dict of the ones it replaces)."""
    def candidate(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias):
        args = dict(x=x, packed_weights=packed_weights, scales=scales, zero_points=zero_points, group_size=group_size,
                    lora_a=lora_a, lora_b=lora_b, lora_indices=lora_indices, scaling=scaling, bias=bias)
        if x.shape[1] >= BIG_K:
            args.update(change(args))
        return linear(**args)
    return candidate


bf16_scales_through_fp16 = _linear_with_inputs(lambda a: dict(scales=_bf16_scales_through_fp16(a["scales"])))
per_channel_scales_read_per_tile = _linear_with_inputs(
    lambda a: dict(scales=_per_channel_read_per_tile(a["scales"], a["packed_weights"].shape[0])))
fractional_zero_points_rounded = _linear_with_inputs(
    lambda a: dict(zero_points=_rounded_if_fractional(a["zero_points"])))
fp32_zero_points_in_x_dtype = _linear_with_inputs(
    lambda a: dict(zero_points=_fp32_zeros_narrowed(a["zero_points"], a["x"].dtype)))
per_channel_zero_points_read_per_tensor = _linear_with_inputs(
    lambda a: dict(zero_points=_per_channel_zeros_per_tensor(a["zero_points"], a["packed_weights"].shape[0])))
rank_past_16_ignored = _linear_with_inputs(lambda a: {} if a["lora_a"] is None else dict(
    lora_a=a["lora_a"][:, :16].contiguous(), lora_b=a["lora_b"][:, :, :16].contiguous()))
adapters_past_4_wrap = _linear_with_inputs(lambda a: {} if a["lora_a"] is None or a["lora_a"].shape[0] <= 4 else dict(
    lora_indices=torch.where(a["lora_indices"] >= 0, a["lora_indices"] % 4, a["lora_indices"])))
bias_added_twice = _linear_with_inputs(lambda a: {} if a["bias"] is None else dict(bias=2 * a["bias"]))
no_adapter_reads_the_last = _linear_with_inputs(lambda a: {} if a["lora_a"] is None else dict(
    lora_indices=torch.where(a["lora_indices"] < 0, a["lora_a"].shape[0] - 1, a["lora_indices"])))


def group_index_as_k_over_128(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices,
                              scaling, bias):
    """The group of column k read as k // 128 whatever the group size."""
    columns = _k_over_128(x.shape[1], scales, zero_points, group_size)
    if columns is None:
        return linear(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias)
    return _with_columns(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling,
                         bias, columns)


def ragged_last_group_reads_the_previous(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b,
                                         lora_indices, scaling, bias):
    """A ragged last group read with the scales and zero points of the group before it."""
    columns = _ragged_tail_as_previous(x.shape[1], scales, zero_points, group_size)
    if columns is None:
        return linear(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias)
    return _with_columns(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling,
                         bias, columns)


def bf16_partial_sums(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling,
                      bias):
    """For bf16 x, split-K partial sums of 256 columns rounded to bf16 before their fp32 sum."""
    if x.shape[1] < BIG_K or x.dtype != torch.bfloat16:
        return linear(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias)
    w = dequantize(packed_weights, scales, zero_points, group_size, x.dtype).float()
    y = sum((x[:, k:k + 256].float() @ w[:, k:k + 256].T).bfloat16().float() for k in range(0, x.shape[1], 256))
    y = y + (0.0 if bias is None else bias.float())
    return (y + _lora(x, lora_a, lora_b, lora_indices, scaling)).to(x.dtype)


def _rows_zeroed_from(first):
    def candidate(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias):
        y = linear(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias)
        if x.shape[1] >= BIG_K and x.shape[0] > first:
            y[first:] = 0  # the rows of the last tile are never written
        return y
    return candidate


last_tile_of_128_tokens_not_written = _rows_zeroed_from(BIG_M)
prefill_tokens_past_512_not_written = _rows_zeroed_from(PREFILL)


def row_offset_wraps_past_32768(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices,
                                scaling, bias):
    """Output rows from 32768 on written from row r - 32768 (a 16-bit signed row offset)."""
    y = linear(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias)
    if x.shape[1] >= BIG_K and y.shape[1] > WIDE:
        y[:, WIDE:] = y[:, :y.shape[1] - WIDE].clone()
    return y


# ---- the dequantizer ----

def _dequantizer_with_inputs(change):
    def candidate(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
        args = dict(packed_weights=packed_weights, scales=scales, zero_points=zero_points, group_size=group_size,
                    output_dtype=output_dtype)
        if _in(packed_weights) >= BIG_K:
            args.update(change(args))
        return dequantize(**args)
    return candidate


dq_bf16_scales_through_fp16 = _dequantizer_with_inputs(lambda a: dict(scales=_bf16_scales_through_fp16(a["scales"])))
dq_per_channel_scales_read_per_tile = _dequantizer_with_inputs(
    lambda a: dict(scales=_per_channel_read_per_tile(a["scales"], a["packed_weights"].shape[0])))
dq_fractional_zero_points_rounded = _dequantizer_with_inputs(
    lambda a: dict(zero_points=_rounded_if_fractional(a["zero_points"])))
dq_fp32_zero_points_in_output_dtype = _dequantizer_with_inputs(
    lambda a: dict(zero_points=_fp32_zeros_narrowed(a["zero_points"], a["output_dtype"])))
dq_per_channel_zero_points_read_per_tensor = _dequantizer_with_inputs(
    lambda a: dict(zero_points=_per_channel_zeros_per_tensor(a["zero_points"], a["packed_weights"].shape[0])))


def dq_bf16_output_through_fp16(packed_weights, scales, zero_points=None, group_size=None,
                                output_dtype=torch.float16):
    """A bf16 result computed in fp16 and widened."""
    if _in(packed_weights) < BIG_K or output_dtype != torch.bfloat16:
        return dequantize(packed_weights, scales, zero_points, group_size, output_dtype)
    return dequantize(packed_weights, scales, zero_points, group_size, torch.float16).to(torch.bfloat16)


def _dq_with_columns(columns_of):
    def candidate(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
        columns = columns_of(_in(packed_weights), scales, zero_points, group_size)
        if columns is None:
            return dequantize(packed_weights, scales, zero_points, group_size, output_dtype)
        return _finish(unpack(packed_weights).double(), scales, zero_points, group_size, output_dtype, columns)
    return candidate


dq_group_index_as_k_over_128 = _dq_with_columns(_k_over_128)
dq_ragged_last_group_reads_the_previous = _dq_with_columns(_ragged_tail_as_previous)


def dq_row_offset_wraps_past_32768(packed_weights, scales, zero_points=None, group_size=None,
                                   output_dtype=torch.float16):
    """Rows from 32768 on written from row r - 32768."""
    w = dequantize(packed_weights, scales, zero_points, group_size, output_dtype)
    if _in(packed_weights) >= BIG_K and w.shape[0] > WIDE:
        w[WIDE:] = w[:w.shape[0] - WIDE].clone()
    return w


def _big_k(case):
    return case.weights.shape[1] >= BIG_K


def _tokens(least):
    return lambda case: _big_k(case) and case.x.shape[0] >= least


def wide(case):
    return _big_k(case) and case.weights.shape[0] > WIDE


# name -> (contract, candidate, shape: the big path it needs, as a predicate on a case)
BIG_PATH_BUGS = {
    "bf16_partial_sums": ("linear", bf16_partial_sums, _big_k),
    "bf16_scales_through_fp16": ("linear", bf16_scales_through_fp16, _big_k),
    "per_channel_scales_read_per_tile": ("linear", per_channel_scales_read_per_tile, _big_k),
    "fractional_zero_points_rounded": ("linear", fractional_zero_points_rounded, _big_k),
    "fp32_zero_points_in_x_dtype": ("linear", fp32_zero_points_in_x_dtype, _big_k),
    "per_channel_zero_points_read_per_tensor": ("linear", per_channel_zero_points_read_per_tensor, _big_k),
    "group_index_as_k_over_128": ("linear", group_index_as_k_over_128, _big_k),
    "ragged_last_group_reads_the_previous": ("linear", ragged_last_group_reads_the_previous, _big_k),
    "last_tile_of_128_tokens_not_written": ("linear", last_tile_of_128_tokens_not_written, _tokens(BIG_M + 1)),
    "prefill_tokens_past_512_not_written": ("linear", prefill_tokens_past_512_not_written, _tokens(PREFILL + 1)),
    "rank_past_16_ignored": ("linear", rank_past_16_ignored, _big_k),
    "adapters_past_4_wrap": ("linear", adapters_past_4_wrap, _big_k),
    "bias_added_twice": ("linear", bias_added_twice, _big_k),
    "no_adapter_reads_the_last": ("linear", no_adapter_reads_the_last, _big_k),
    "row_offset_wraps_past_32768": ("linear", row_offset_wraps_past_32768, wide),
    "dq_bf16_output_through_fp16": ("dequantizer", dq_bf16_output_through_fp16, _big_k),
    "dq_bf16_scales_through_fp16": ("dequantizer", dq_bf16_scales_through_fp16, _big_k),
    "dq_per_channel_scales_read_per_tile": ("dequantizer", dq_per_channel_scales_read_per_tile, _big_k),
    "dq_fractional_zero_points_rounded": ("dequantizer", dq_fractional_zero_points_rounded, _big_k),
    "dq_fp32_zero_points_in_output_dtype": ("dequantizer", dq_fp32_zero_points_in_output_dtype, _big_k),
    "dq_per_channel_zero_points_read_per_tensor": ("dequantizer", dq_per_channel_zero_points_read_per_tensor, _big_k),
    "dq_group_index_as_k_over_128": ("dequantizer", dq_group_index_as_k_over_128, _big_k),
    "dq_ragged_last_group_reads_the_previous": ("dequantizer", dq_ragged_last_group_reads_the_previous, _big_k),
    "dq_row_offset_wraps_past_32768": ("dequantizer", dq_row_offset_wraps_past_32768, wide),
}
