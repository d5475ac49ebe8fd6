"""kernels.native: the C dequantizer builds once into its cache, says why where it cannot (and the torch
path then takes its torch ops), decodes every group width and row alignment like the reference, and asks
for huge pages only where a whole one fits."""
from pathlib import Path

import numpy as np
import pytest
import torch

from fresh_interpreter import failing_compiler, run_fresh
from int4_lora_harness import reference
from int4_lora_harness.kernels import native
from int4_lora_harness.verify.cases import DTYPE_NAMES

needs_native = pytest.mark.skipif(native.unavailable_reason() is not None,
                                  reason=f"the C kernel is not available here: {native.unavailable_reason()}")
UINTS = {torch.float16: np.uint16, torch.bfloat16: np.uint32, torch.float32: np.uint32}
PROBE = ("import warnings; warnings.simplefilter('always');"
         "from int4_lora_harness.kernels import native, torch_path; import torch;"
         "print('reason:', native.unavailable_reason());"
         "p = torch_path.plan_dequantize(torch.zeros(1, 8, dtype=torch.uint8), torch.ones(1), None, None);"
         "print('native plan:', p.native is not None)")


def probe(tmp_path, **env):
    """Run PROBE in a fresh interpreter with a cache in tmp_path and `env`; (stdout, stderr)."""
    return run_fresh(PROBE, tmp_path, **env)


@needs_native
def test_the_library_builds_once_into_the_cache_named_by_its_environment_variable(tmp_path):
    out, _ = probe(tmp_path)
    assert "reason: None" in out and "native plan: True" in out
    built = sorted(tmp_path.glob("int4_cpu-*.so"))
    assert len(built) == 1, built
    stamp = built[0].stat().st_mtime_ns
    probe(tmp_path)
    assert sorted(tmp_path.glob("int4_cpu-*.so")) == built and built[0].stat().st_mtime_ns == stamp  # reused


def test_a_compiler_that_fails_is_a_warning_with_its_message_and_the_torch_ops_take_over(tmp_path):
    out, err = probe(tmp_path, CC=str(failing_compiler(tmp_path, "cc: error: no such compiler here")))
    assert "native plan: False" in out
    assert "cc: error: no such compiler here" in out  # the reason names the compiler's own message
    assert "RuntimeWarning" in err and "the C dequantizer is not available" in err
    assert not list(tmp_path.glob("*.so"))


def test_int4_lora_harness_native_0_turns_the_c_kernel_off_without_a_warning(tmp_path):
    out, err = probe(tmp_path, INT4_LORA_HARNESS_NATIVE="0")
    assert "reason: INT4_LORA_HARNESS_NATIVE=0" in out and "native plan: False" in out
    assert "RuntimeWarning" not in err


def dequantize_rows_like_the_reference(packed, scales, zero_points, width, output_dtype):
    """native.dequantize_into over every row, compared with reference.dequantize bit for bit (NaN: both NaN)."""
    groups = scales.shape[1]
    out = torch.empty(packed.shape[0], 2 * packed.shape[1], dtype=output_dtype)
    zero_operand = None if zero_points is None else native.group_operand(zero_points, "grouped", groups)
    native.dequantize_into(packed, native.group_operand(scales, "grouped", groups), zero_operand, width,
                           slice(0, packed.shape[0]), out)
    got = (out.float() if output_dtype == torch.bfloat16 else out).numpy()
    z = None if zero_points is None else zero_points.double().numpy()
    with np.errstate(invalid="ignore", over="ignore"):  # inf * 0 is NaN: expected, and compared as NaN
        expected = reference.dequantize(packed.numpy(), scales.double().numpy(), z, width, DTYPE_NAMES[output_dtype])
    same = (got.view(UINTS[output_dtype]) == expected.view(UINTS[output_dtype])) | (np.isnan(got) & np.isnan(expected))
    assert same.all(), (width, output_dtype, np.argwhere(~same)[:3])


@needs_native
@pytest.mark.parametrize("output_dtype", [torch.float16, torch.bfloat16, torch.float32], ids=DTYPE_NAMES.get)
@pytest.mark.parametrize("zero_kind", ["none", "integer", "fractional"])  # exact in fp32 (fp16 scales), or not
def test_every_group_width_and_row_alignment_dequantizes_like_the_reference(output_dtype, zero_kind):
    g = torch.Generator().manual_seed(7)
    for width in [*range(1, 41), 63, 64, 65, 127, 128, 129]:  # odd widths split bytes; >= 32 take SSSE3 steps
        for in_features in (2, 34, 2 * width + 6, 130):  # rows start off 16-byte alignment
            groups = -(-in_features // width)
            packed = torch.randint(0, 256, (3, in_features // 2), dtype=torch.uint8, generator=g)
            scales = (torch.randn(3, groups, generator=g) * 2.0 ** -6).half()
            zero_points = {"none": None,
                           "integer": torch.randint(-8, 8, (3, groups), generator=g).to(torch.int8),
                           "fractional": torch.rand(3, groups, generator=g) * 16 - 8}[zero_kind]
            dequantize_rows_like_the_reference(packed, scales, zero_points, width, output_dtype)


@needs_native
@pytest.mark.parametrize("output_dtype", [torch.float16, torch.bfloat16], ids=DTYPE_NAMES.get)
def test_subnormal_overflowing_and_non_finite_weights_round_like_the_reference(output_dtype):
    # Scales from 2**-40 (fp16 and bf16 subnormals, and zeros) to 2**126 (overflow), inf and NaN, with integer
    # zero points (the fp32-exact tables) and fractional ones (the float64 roundings).
    scales = torch.tensor([[2.0 ** -40, 2.0 ** -28, 2.0 ** -20, 2.0 ** -16, 2.0 ** 12, 2.0 ** 126, 3e38, float("inf"),
                            float("nan"), -2.0 ** -27, -(2.0 ** 13), 1.0]])
    group = torch.tensor([q | (15 - q) << 4 for q in range(16)], dtype=torch.uint8)  # 32 columns, every nibble
    packed = group.repeat(1, 12)  # [1, 192]: 12 groups of 32 columns, one SSSE3 step each
    for zero_points in (torch.tensor([[0, 1, -3, 7, 8, -8, 2, 0, 0, 5, -1, 0]], dtype=torch.int32),
                        torch.tensor([[2.0 ** -30, 0.5, -0.25, 1e-9, 3.0, -7.5, 0.1, 0.0, 0.0, 1 / 3, 2.0 ** -20, 0.0]])):
        dequantize_rows_like_the_reference(packed.repeat(3, 1), scales.repeat(3, 1), zero_points.repeat(3, 1), 32,
                                           output_dtype)


@needs_native
def test_huge_pages_are_asked_for_only_where_a_whole_one_fits():
    lib = native.library()
    small = torch.empty(1 << 20, dtype=torch.uint8)  # 1 MiB: no whole 2 MiB page inside
    assert lib.int4_advise_huge_pages(small.data_ptr(), small.numel()) == 1
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp.exists() and "[never]" not in thp.read_text():
        large = torch.empty(8 << 20, dtype=torch.uint8)
        assert lib.int4_advise_huge_pages(large.data_ptr(), large.numel()) == 0  # madvise took it
    out = native.empty_output((2048, 2048), torch.float16)
    assert out.shape == (2048, 2048) and out.dtype == torch.float16 and out.is_contiguous()


@needs_native
@pytest.mark.parametrize("output_dtype", [torch.float16, torch.bfloat16], ids=DTYPE_NAMES.get)
def test_ties_round_to_even_where_the_table_rounds_from_float64(output_dtype):
    # z = 1 - 2**-40 (float64) puts v = 1 at (1 - z) * s = 2**-40 s, a tie of the output format for
    # s = (1 + half an ulp of 1) * 2**40, while v = -8 gives -(9 - 2**-40) s, inexact in fp32: the table is
    # rounded from float64 (round_bits), whose tie must go to the even neighbour, 1.0.
    half_ulp = {torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}[output_dtype]
    packed = torch.tensor([[0x99] * 16 + [0x00] * 16], dtype=torch.uint8)  # 32 columns of v = 1, 32 of v = -8
    scales = torch.tensor([[(1 + half_ulp) * 2.0 ** 40] * 2])
    zero_points = torch.tensor([[1 - 2.0 ** -40] * 2], dtype=torch.float64)
    dequantize_rows_like_the_reference(packed, scales, zero_points, 32, output_dtype)
    out = torch.empty(1, 64, dtype=output_dtype)
    native.dequantize_into(packed, native.group_operand(scales, "grouped", 2),
                           native.group_operand(zero_points, "grouped", 2), 32, slice(0, 1), out)
    assert (out[0, :32] == 1.0).all()


def test_a_cached_library_that_does_not_load_is_a_warning_and_the_torch_ops_take_over(tmp_path):
    if native.unavailable_reason() is not None:
        pytest.skip(f"the C kernel is not available here: {native.unavailable_reason()}")
    probe(tmp_path)  # builds the library into tmp_path
    for built in tmp_path.glob("int4_cpu-*.so"):
        built.write_bytes(b"not a shared object")
    out, err = probe(tmp_path)
    assert "cannot load" in out and "native plan: False" in out
    assert "RuntimeWarning" in err
