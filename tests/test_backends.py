"""Every backend in kernels.registry meets the shared properties on fuzzed cases, on every device here."""
import numpy as np
import pytest
import torch
from hypothesis import given

from int4_lora_harness.verify import bigpath
from int4_lora_harness.verify.cases import make_linear_case
from int4_lora_harness.verify.domain import FULL, Domain
from int4_lora_harness.verify.dequantizer import dequant_error
from int4_lora_harness.verify.properties import (EACH, QUICK, assert_holds, dequantizer_properties, linear_properties,
                                                 properties_in_process)
from int4_lora_harness.verify.strategies import dequant_cases, linear_cases
from int4_lora_harness.kernels.registry import BACKENDS
from int4_lora_harness.kernels.torch_path import exact_in_fp32

# Under TRITON_INTERPRET=1 only the Triton backend is run (the `interpreter` group of tox -e test).
INTERPRETED = __import__("os").environ.get("TRITON_INTERPRET") == "1"
NAMES = ["triton"] if INTERPRETED else sorted(BACKENDS)


@pytest.fixture(params=NAMES)
def backend(request, device):
    b = BACKENDS[request.param]
    reason = b.unavailable_reason(device)
    if reason:
        pytest.skip(f"{b.name} on {device}: {reason}")
    return b


# Triton's interpreter costs ~0.1 s per program instance: it tracks in-place updates of the packed weights,
# then of every other input at once (the torch backend, on CPU, takes each input in turn), and its fuzzed layers
# stay short (K < 4096: a fuzzed long-K layer of up to 200 rows takes it minutes); the big K path is judged
# under the interpreter on the big K design's narrow cases instead (test_the_big_k_path_meets_every_property).
UPDATES = QUICK if INTERPRETED else EACH
FUZZED = Domain(long_k=False) if INTERPRETED else FULL


@pytest.mark.interpreter
@given(case=dequant_cases(FUZZED))
def test_dequantizer_meets_every_property(backend, device, case):
    assert_holds(properties_in_process(backend.dequantize, case, device, updates=UPDATES))


@pytest.mark.interpreter
@given(case=linear_cases(FUZZED))
def test_linear_meets_every_property(backend, device, case):
    assert_holds(properties_in_process(backend.linear, case, device, updates=UPDATES))


def big_k_cases(contract, most_tokens=16):
    """The first four of harness.verify.bigpath's big K cases of `contract` (72 rows, K 4096 or 4160; the linear's
    exact probes of at most 16 tokens) as pytest params."""
    cases = bigpath.big_k_cases(contract, FULL, seed=0)
    if contract == "linear":
        cases = [c for c in cases if c[2].x.shape[0] <= most_tokens]
    return [pytest.param(case, id=name) for _, name, case in cases[:4]]


@pytest.mark.interpreter
@pytest.mark.parametrize("case", big_k_cases("dequantizer"))
def test_the_big_k_path_of_the_dequantizer_meets_every_property(backend, device, case):
    assert case.weights.shape[1] >= 4096
    assert_holds(properties_in_process(backend.dequantize, case, device, updates=UPDATES))


@pytest.mark.interpreter
@pytest.mark.parametrize("case", big_k_cases("linear"))
def test_the_big_k_path_of_the_linear_meets_every_property(backend, device, case):
    assert case.weights.shape[1] >= 4096
    assert_holds(properties_in_process(backend.linear, case, device, updates=UPDATES))


def test_the_ptx_backend_refuses_cpu_tensors_with_a_reason():
    reason = BACKENDS["triton-ptx"].unavailable_reason("cpu")
    assert reason is not None and "CUDA" in reason


def test_linear_without_adapters_equals_the_base_gemm(backend, device):
    case = make_linear_case(3, 40, 96, 5, "bf16", num_loras=0, group_size=32, popularity="none")
    assert_holds(linear_properties(backend.linear, case, device))


def _torch_linear_args():
    return make_linear_case(0, 6, 16, 3, "fp16", rank=2, num_loras=2, group_size=8).torch_args("cpu")


@pytest.mark.parametrize("position, bad, message", [
    (1, torch.zeros(6, 8, dtype=torch.int8), "packed_weights must be a torch.uint8 tensor"),
    (2, torch.ones(6, 3), r"scales has 3 groups but ceil\(in_features / group_size\)"),
    (0, torch.zeros(3, 16, dtype=torch.int32), "x must be fp16, bf16 or fp32"),
    (0, torch.zeros(3, 18, dtype=torch.float16), r"x must have shape \[M, 16\]"),
    (7, torch.tensor([0, 2, -1]), r"lora_indices must lie in \[-1, 1\]"),
    (7, torch.tensor([0, -2, -1]), r"lora_indices must lie in \[-1, 1\]"),
    (7, torch.tensor([0.0, 1.0, 1.0]), "lora_indices must be int32 or int64"),
    (9, torch.zeros(5, dtype=torch.float16), r"bias must have shape \[6\]"),
    (5, torch.zeros(2, 2, 15, dtype=torch.float16), r"lora_a must have shape \[num_loras, rank, 16\]"),
    (2, torch.ones(6, 2, dtype=torch.float64), "scales must be fp16, bf16 or fp32, got torch.float64"),
    (3, torch.ones(6, 2, dtype=torch.bool), "zero_points must be a floating point or integer tensor"),
    (6, torch.zeros(2, 6, 2, dtype=torch.int32), "lora_b must be floating point"),
    (9, torch.zeros(6, dtype=torch.float16, device="meta"), "bias must be on x's device cpu, got meta"),
])
def test_torch_linear_names_the_bad_argument(position, bad, message):
    args = list(_torch_linear_args())
    args[position] = bad
    with pytest.raises(ValueError, match=message):
        BACKENDS["torch"].linear(*args)


def test_torch_dequantizer_refuses_a_missing_group_size_for_grouped_scales():
    packed = torch.zeros(4, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="group_size must be a positive int for grouped scales"):
        BACKENDS["torch"].dequantize(packed, torch.ones(4, 2), None, None)


def test_torch_dequantizer_rounds_once_where_torch_casts_would_round_twice():
    # (v - z) * s = (1 + 2**-30) * (1 + 2**-11) lies just above an fp16 midpoint: RN gives 1 + 2**-10,
    # while float64 -> fp32 -> fp16 first lands on the midpoint, then rounds to 1.0.
    packed = torch.tensor([[0x99]], dtype=torch.uint8)  # v = 1 in both columns
    scales = torch.tensor([1 + 2**-11], dtype=torch.float32)
    zero_points = torch.tensor([-(2**-30)], dtype=torch.float32)
    got = BACKENDS["torch"].dequantize(packed, scales, zero_points, None, torch.float16)
    assert got.tolist() == [[1 + 2**-10, 1 + 2**-10]]


@pytest.mark.parametrize("scales_dtype, limit, zero_dtype", [
    (torch.float16, 2**13 - 8, torch.int16), (torch.float16, 2**13 - 8, torch.int32),
    (torch.float16, 2**13 - 8, torch.int64), (torch.bfloat16, 2**16 - 8, torch.int32),
    (torch.bfloat16, 2**16 - 8, torch.int64)])  # int16 cannot hold the bf16 limit
def test_torch_dequantizer_is_correctly_rounded_on_both_sides_of_its_fp32_shortcut(scales_dtype, limit, zero_dtype):
    # |z| <= limit: (v - z) * s is exact in fp32 and the fp32 path runs; one more and float64 must take over.
    packed = torch.arange(256, dtype=torch.uint8).reshape(4, 64)  # every byte: all nibble pairs
    last_bit = 2**-10 if scales_dtype == torch.float16 else 2**-7  # scales use every significand bit
    scales = (1 + (2 * torch.arange(16, dtype=torch.float64) + 1) * last_bit).to(scales_dtype).reshape(4, 4)
    for z, fast in ((limit, True), (-limit, True), (limit + 1, False), (-limit - 1, False)):
        zero_points = torch.full((4, 4), z, dtype=zero_dtype)
        assert exact_in_fp32(scales, zero_points) == fast
        for output_dtype in (torch.float16, torch.bfloat16, torch.float32):
            got = BACKENDS["torch"].dequantize(packed, scales, zero_points, 32, output_dtype)
            report = dequant_error(got.double().numpy(), packed.numpy(), scales.float().numpy(), zero_points.numpy(),
                                   32, {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}[output_dtype])
            assert report.max_ratio == 0, (z, output_dtype, report.worst())


def test_integer_zero_points_are_bounded_by_dtype_range_or_by_value():
    from int4_lora_harness.kernels.checks import integer_zeros_within
    assert integer_zeros_within(torch.tensor([-128, 127], dtype=torch.int8), 200, check_values=False)
    wide = torch.tensor([-300, 300], dtype=torch.int32)
    assert not integer_zeros_within(wide, 2040, check_values=False)  # the dtype alone cannot tell
    assert integer_zeros_within(wide, 300) and not integer_zeros_within(wide, 299)
    assert not integer_zeros_within(torch.tensor([0.5]), 2040)
