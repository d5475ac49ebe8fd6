"""kernels.torch_path: its dequantizer is bit for bit the reference by each of its ways (on the CPU the C
kernel; the torch ops of CUDA: fp32 arithmetic, nibble tables, byte-pair tables), and its linear keeps
adapters to their own tokens. Every test runs on the CPU twice, by the C kernel and by the torch ops.

The fixed cases are the hard ones: huge integer zero points, fractional zero points whose fp32
product lands on a midpoint of the output format, exact ties, ragged groups, many row blocks,
empty shapes and a group larger than the layer.
"""
from unittest import mock

import numpy as np
import pytest
import torch

from int4_lora_harness import reference
from int4_lora_harness.kernels import native, torch_path
from int4_lora_harness.verify.cases import DTYPE_NAMES, make_linear_case
from int4_lora_harness.verify.properties import assert_holds, linear_properties

OUTPUT_DTYPES = [torch.float16, torch.bfloat16, torch.float32]
UINTS = {torch.float16: np.uint16, torch.bfloat16: np.uint32, torch.float32: np.uint32}


@pytest.fixture(autouse=True, params=["C kernel", "torch ops"])
def cpu_way(request, monkeypatch):
    """How CPU tensors are dequantized in this test: by kernels.native's C kernel, or by the torch ops."""
    if request.param == "torch ops":
        monkeypatch.setattr(torch_path, "native_ready", lambda packed_weights: False)
    elif getattr(request.node, "callspec", None) and request.node.callspec.params.get("device") == "cuda":
        pytest.skip("the C kernel runs CPU tensors only: CUDA runs the torch ops")
    elif native.unavailable_reason() is not None:
        pytest.skip(f"the C kernel is not available here: {native.unavailable_reason()}")
    return request.param


def torch_ops_plan(*args):
    """torch_path.plan_dequantize(*args) as the torch ops would take it (on CUDA, or without the C kernel)."""
    with mock.patch.object(torch_path, "native_ready", lambda packed_weights: False):
        return torch_path.plan_dequantize(*args)


def as_numpy(t):
    """A tensor's values as NumPy, bf16 widened to float32 (exactly)."""
    t = t.cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def assert_dequantizes_like_the_reference(packed, scales, zero_points, group_size, output_dtype, device="cpu"):
    """torch_path.dequantize on `device` equals reference.dequantize bit for bit (NaN: both NaN)."""
    to = lambda t: None if t is None else t.to(device)  # noqa: E731
    got = torch_path.dequantize(to(packed), to(scales), to(zero_points), group_size, output_dtype)
    assert got.dtype == output_dtype and got.device.type == device
    assert got.shape == (packed.shape[0], 2 * packed.shape[1])
    expected = reference.dequantize(packed.numpy(), as_numpy(scales),
                                    None if zero_points is None else as_numpy(zero_points), group_size,
                                    DTYPE_NAMES[output_dtype])
    got_bits, expected_bits = (a.view(UINTS[output_dtype]) for a in (as_numpy(got), expected))
    same = (got_bits == expected_bits) | (np.isnan(as_numpy(got)) & np.isnan(expected))
    if not same.all():
        index = np.unravel_index(int(np.argmin(same)), same.shape)
        raise AssertionError(f"{int(same.size - same.sum())} weights differ; first at {index}: got "
                             f"{as_numpy(got)[index]!r}, expected {expected[index]!r}")


def random_base(seed, out_features, in_features, group_size, scales_dtype, zero_kind, granularity=("grouped",) * 2):
    """(packed, scales, zero points) with scales of ~2**-6 and zero points of `zero_kind` at the given granularities."""
    g = torch.Generator().manual_seed(seed)
    groups = -(-in_features // group_size) if group_size else 1
    shapes = {"per-tensor": (1,), "per-channel": (out_features,), "grouped": (out_features, groups)}
    shape = shapes.get
    packed = torch.randint(0, 256, (out_features, in_features // 2), dtype=torch.uint8, generator=g)
    scales = (torch.rand(shape(granularity[0]), generator=g, dtype=torch.float64) * 2 ** -5 - 2 ** -6).to(scales_dtype)
    z_shape = shape(granularity[1])
    zero_points = {
        "none": lambda: None,
        "int8": lambda: torch.randint(-128, 128, z_shape, generator=g).to(torch.int8),
        "int16": lambda: torch.randint(-2 ** 15, 2 ** 15, z_shape, generator=g).to(torch.int16),
        "int32": lambda: torch.randint(-2 ** 31, 2 ** 31, z_shape, generator=g, dtype=torch.int64).to(torch.int32),
        "int64": lambda: torch.randint(-2 ** 62, 2 ** 62, z_shape, generator=g, dtype=torch.int64),
        "fp16": lambda: (torch.rand(z_shape, generator=g) * 16 - 8).half(),
        "bf16": lambda: (torch.rand(z_shape, generator=g) * 16 - 8).bfloat16(),
        "fp32": lambda: (torch.rand(z_shape, generator=g, dtype=torch.float64) * 16 - 8).float(),  # 24-bit fractions
    }[zero_kind]()
    return packed, scales, zero_points


@pytest.mark.parametrize("output_dtype", OUTPUT_DTYPES, ids=DTYPE_NAMES.get)
@pytest.mark.parametrize("scales_dtype", OUTPUT_DTYPES, ids=DTYPE_NAMES.get)
@pytest.mark.parametrize("zero_kind", ["none", "int8", "int16", "int32", "int64", "fp16", "bf16", "fp32"])
def test_dequantize_equals_the_reference_for_every_scale_zero_and_output_dtype(device, zero_kind, scales_dtype,
                                                                                output_dtype):
    for group_size, in_features, pairs in ((8, 44, False), (256, 600, True), (512, 1024, True)):  # 600: ragged
        base = random_base(1, 5, in_features, group_size, scales_dtype, zero_kind)
        assert torch_ops_plan(*base, group_size).pairs == pairs
        assert_dequantizes_like_the_reference(*base, group_size, output_dtype, device)


@pytest.mark.parametrize("granularity", [("per-tensor", "per-tensor"), ("per-channel", "per-channel"),
                                         ("per-tensor", "grouped"), ("grouped", "per-channel"),
                                         ("per-channel", "grouped")])
@pytest.mark.parametrize("zero_kind", ["int8", "int64", "fp16", "fp32"])
def test_scales_and_zero_points_of_different_granularities_dequantize_like_the_reference(device, granularity,
                                                                                         zero_kind):
    uses_groups = "grouped" in granularity
    base = random_base(2, 6, 70, 16, torch.float16, zero_kind, granularity)
    for output_dtype in OUTPUT_DTYPES:
        assert_dequantizes_like_the_reference(*base, 16 if uses_groups else None, output_dtype, device)


def test_huge_integer_zero_points_take_the_table_way_and_match_the_reference(device):
    packed = torch.arange(256, dtype=torch.uint8).reshape(4, 64)  # every nibble pair
    zero_points = torch.tensor([[2 ** 62, -(2 ** 62)], [2 ** 53 + 1, -(2 ** 53) - 1], [2 ** 24 - 15, 2 ** 24 - 16],
                                [-(2 ** 31), 2 ** 31 - 1]], dtype=torch.int64)
    scales = torch.tensor([[2.0 ** -40, 2.0 ** -60], [1.0, -1.0], [2.0 ** -12, 3.0], [2.0 ** -20, 2.0 ** -30]])
    assert not torch_ops_plan(packed, scales, zero_points, 64).arithmetic
    for scales_dtype in OUTPUT_DTYPES:
        for output_dtype in OUTPUT_DTYPES:
            assert_dequantizes_like_the_reference(packed, scales.to(scales_dtype), zero_points, 64, output_dtype,
                                                  device)


def midpoint_probes(output_dtype):
    """fp32 scales s for which 3 s is not a midpoint m of `output_dtype` but rounds to one in fp32.

    s = RN32(m / 3) is within 2**-26 |m| of m / 3, so |3 s - m| < half an fp32 ulp of m. With
    v - z = 3, (v - z) * s = 3 s is exact in float64, and rounding its fp32 value m to the output
    would be a double rounding: the dequantizer must round 3 s itself.
    """
    precision = {torch.float16: 11, torch.bfloat16: 8}[output_dtype]
    odd = 2 * np.arange(1, 40) + 1
    midpoints = [(2 ** (precision - 1) + odd / 2) * 2.0 ** (e - precision + 1) for e in (-9, -3, 0, 4)]
    if output_dtype == torch.float16:
        midpoints.append(odd * 2.0 ** -25)  # between fp16 subnormals
    m = np.concatenate(midpoints + [-np.concatenate(midpoints)])
    s = (m / 3).astype(np.float32)
    product = 3 * s.astype(np.float64)  # exact
    keep = (product.astype(np.float32) == m) & (product != m)
    return s[keep], product[keep] > m[keep]


@pytest.mark.parametrize("output_dtype", [torch.float16, torch.bfloat16], ids=DTYPE_NAMES.get)
def test_weights_whose_fp32_product_is_a_midpoint_round_the_exact_value(device, output_dtype):
    scales, above = midpoint_probes(output_dtype)
    assert len(scales) >= 40 and above.any() and not above.all()  # both sides of the midpoint
    scales = torch.from_numpy(scales)
    rows = scales.shape[0]
    packed = torch.full((rows, 4), 0xBB, dtype=torch.uint8)  # v = 3 in every column
    zero_points = torch.zeros(rows, dtype=torch.float16)  # a float zero point (and fp32 scales): the table way
    assert not torch_ops_plan(packed, scales, zero_points, None).arithmetic
    double_rounded = (3 * scales.double()).float().to(output_dtype)  # via the fp32 product, a midpoint
    got = torch_path.dequantize(packed.to(device), scales.to(device), zero_points.to(device), None, output_dtype)
    assert (got.cpu()[:, 0] != double_rounded).any()
    assert_dequantizes_like_the_reference(packed, scales, zero_points, None, output_dtype, device)


@pytest.mark.parametrize("output_dtype", OUTPUT_DTYPES, ids=DTYPE_NAMES.get)
def test_fractional_fp32_zero_points_with_a_narrower_output_round_once(device, output_dtype):
    # (v - z) * s = (1 + 2**-30) * (1 + 2**-11): just above an fp16 midpoint, which a float64 -> fp32 -> fp16
    # chain would first land on, then round to 1.0. v - z is not exact in fp32: the table way.
    packed = torch.tensor([[0x99] * 64], dtype=torch.uint8)  # v = 1
    scales = torch.tensor([1 + 2 ** -11], dtype=torch.float32)
    zero_points = torch.tensor([-(2 ** -30)], dtype=torch.float32)
    assert not torch_ops_plan(packed, scales, zero_points, None).arithmetic
    assert_dequantizes_like_the_reference(packed, scales, zero_points, None, output_dtype, device)
    if output_dtype == torch.float16:
        got = torch_path.dequantize(packed.to(device), scales.to(device), zero_points.to(device), None, output_dtype)
        assert (got.cpu() == 1 + 2 ** -10).all()


@pytest.mark.parametrize("zero_points", [None, torch.zeros(2, dtype=torch.float16)], ids=["none", "fp16 zeros"])
def test_exact_ties_round_to_even(device, zero_points):
    # v * s with fp32 scales: 1 * (1 + 2**-11) is the tie between 1 and 1 + 2**-10 (-> 1.0, even);
    # 3 * (1 + 2**-10) = 3 + 1.5 * 2**-9 the tie between 3 + 2**-9 and 3 + 2**-8 (-> 3 + 2**-8, even).
    packed = torch.tensor([[0x99, 0x99], [0xBB, 0xBB]], dtype=torch.uint8)  # v = 1 in row 0, 3 in row 1
    scales = torch.tensor([1 + 2 ** -11, 1 + 2 ** -10], dtype=torch.float32)
    got = torch_path.dequantize(packed.to(device), scales.to(device),
                                None if zero_points is None else zero_points.to(device), None, torch.float16)
    assert got.cpu().tolist() == [[1.0] * 4, [3 + 2 ** -8] * 4]
    assert_dequantizes_like_the_reference(packed, scales, zero_points, None, torch.float16, device)


@pytest.mark.parametrize("zero_kind", ["none", "int64", "fp16"])  # fp32 arithmetic, tables (nibbles, pairs)
def test_many_row_blocks_and_a_short_last_block_dequantize_like_one(monkeypatch, zero_kind):
    monkeypatch.setattr(torch_path, "CPU_BLOCK_ENTRIES", 1000)  # 512 columns: one row per block
    for group_size in (128, 256):
        base = random_base(3, 7, 512, group_size, torch.bfloat16, zero_kind)
        assert torch_ops_plan(*base, group_size).block_rows == 1
        for output_dtype in OUTPUT_DTYPES:
            assert_dequantizes_like_the_reference(*base, group_size, output_dtype)


@pytest.mark.parametrize("output_dtype", OUTPUT_DTYPES, ids=DTYPE_NAMES.get)
def test_zero_rows_or_zero_columns_give_an_empty_output_of_the_right_dtype(device, output_dtype):
    cases = [(torch.zeros(0, 8, dtype=torch.uint8), torch.ones(1), None),
             (torch.zeros(0, 8, dtype=torch.uint8), torch.ones(0), torch.zeros(0, dtype=torch.int8)),
             (torch.zeros(3, 0, dtype=torch.uint8), torch.ones(3, dtype=torch.float16), torch.zeros(1))]
    for packed, scales, zero_points in cases:
        zero_points = None if zero_points is None else zero_points.to(device)
        got = torch_path.dequantize(packed.to(device), scales.to(device), zero_points, None, output_dtype)
        assert got.shape == (packed.shape[0], 2 * packed.shape[1]) and got.dtype == output_dtype


def test_a_group_larger_than_the_layer_is_one_ragged_group_of_the_layer_width(device):
    # 2**36 columns a group: any buffer of num_groups * group_size elements would be 2**36 long.
    base = random_base(4, 3, 64, None, torch.float16, "fp32", ("per-channel", "per-channel"))
    packed, scales, zero_points = base[0], base[1][:, None], base[2][:, None]  # [out, 1]: grouped, one group
    plan = torch_ops_plan(packed, scales, zero_points, 2 ** 36)
    assert (plan.width, plan.num_groups) == (64, 1)
    assert_dequantizes_like_the_reference(packed, scales, zero_points, 2 ** 36, torch.float16, device)


def test_a_numpy_integer_group_size_is_accepted(device):
    base = random_base(5, 4, 32, 8, torch.float16, "int8")
    assert_dequantizes_like_the_reference(*base, np.int64(8), torch.float16, device)


def test_unpack_gives_the_reference_signed_nibbles_low_nibble_first():
    packed = torch.arange(256, dtype=torch.uint8).reshape(8, 32)
    assert np.array_equal(torch_path.unpack(packed).numpy(), reference.unpack(packed.numpy()))
    assert torch_path.unpack(packed).dtype == torch.int8


# --- the linear ------------------------------------------------------------------------------------

def _linear_args(device, m=6, num_loras=3):
    case = make_linear_case(7, 24, 64, m, "fp16", rank=4, num_loras=num_loras, group_size=16, popularity="distinct")
    return list(case.torch_args(device))


def test_a_non_finite_adapter_reaches_only_its_own_tokens(device):
    args = _linear_args(device)  # x, packed, scales, zeros, group_size, lora_a, lora_b, indices, scaling, bias
    indices = torch.tensor([-1, 0, 1, 2, -1, 1], dtype=torch.int32, device=device)
    args[7] = indices
    clean = torch_path.linear(*args)
    poisoned = list(args)
    poisoned[5], poisoned[6] = args[5].clone(), args[6].clone()
    poisoned[5][1, 0, 0] = float("inf")
    poisoned[6][1, :, 1] = float("nan")
    got = torch_path.linear(*poisoned)
    others = indices != 1
    assert torch.equal(got[others], clean[others])  # bit for bit: the other adapters' and the base tokens
    assert torch.isnan(got[~others]).all()


def test_tokens_without_an_adapter_get_exactly_the_base_output_for_any_scaling(device):
    args = _linear_args(device)
    indices = torch.tensor([-1, 0, -1, 2, -1, 1], dtype=torch.int32, device=device)
    args[7] = indices
    no_adapters = torch.full_like(indices, -1)
    base = torch_path.linear(*args[:5], None, None, no_adapters, 1.0, args[9])
    for scaling in (float("inf"), float("nan"), -float("inf"), 0.0, 1e30):
        args[8] = scaling
        got = torch_path.linear(*args)
        none = indices == -1
        assert torch.equal(got[none].view(torch.int16), base[none].view(torch.int16)), scaling  # -0 stays -0
        if scaling != 0.0:
            assert not torch.equal(got[~none], base[~none])


def test_zero_tokens_give_an_empty_output_of_x_dtype(device):
    args = _linear_args(device)
    args[0], args[7] = args[0][:0], args[7][:0]
    got = torch_path.linear(*args)
    assert got.shape == (0, 24) and got.dtype == torch.float16


def test_zero_input_features_give_the_bias(device):
    bias = torch.arange(3, dtype=torch.float16, device=device)
    args = (torch.zeros(2, 0, dtype=torch.float16, device=device), torch.zeros(3, 0, dtype=torch.uint8, device=device),
            torch.ones(3, dtype=torch.float16, device=device), None, None, None, None,
            torch.full((2,), -1, dtype=torch.int32, device=device), 1.0, bias)
    assert torch.equal(torch_path.linear(*args), bias.expand(2, 3))


@pytest.mark.parametrize("zero_kind", ["int", "float", "fp32"])  # both ways, through the linear's blocks
def test_the_blocked_linear_meets_every_property(monkeypatch, device, zero_kind):
    monkeypatch.setattr(torch_path, "CPU_BLOCK_ENTRIES", 200)  # several row blocks of 96 columns
    case = make_linear_case(8, 40, 96, 5, "bf16", rank=8, num_loras=3, group_size=32, zero_granularity="grouped",
                            zero_kind=zero_kind)
    assert_holds(linear_properties(torch_path.linear, case, device))
