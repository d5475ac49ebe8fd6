"""int4_lora_harness.verify.tolerance admits every correct design and rejects the errors SPEC §5 names, on fixed cases."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from int4_lora_harness.verify.cases import TORCH_DTYPES, make_linear_case, make_weights
from planted.bugs import (accumulates_in_half, correct_linear_gathered, correct_linear_per_adapter,
                             lora_intermediate_in_half, two_roundings_in_output_dtype)
from int4_lora_harness.verify.dequantizer import dequant_error
from int4_lora_harness.verify.tolerance import linear_error
from int4_lora_harness.kernels import torch_path
from int4_lora_harness.reference.granularity import expand
from int4_lora_harness.reference.packing import unpack
from int4_lora_harness.reference.rounding import spacing


def _got(linear, case):
    out = linear(*case.torch_args("cpu"))
    return out.float().numpy().astype(np.float64)


@pytest.mark.parametrize("x_dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("k", [1024, 4096])
def test_accumulating_in_the_activation_dtype_is_rejected_from_k_1024(x_dtype, k):
    case = make_linear_case(0, 64, k, 8, x_dtype, num_loras=0, popularity="none", group_size=128)
    report = linear_error(_got(accumulates_in_half, case), case)
    assert not report.passed, report.worst()


@pytest.mark.parametrize("x_dtype", ["fp16", "bf16", "fp32"])
@pytest.mark.parametrize("linear", [torch_path.linear, correct_linear_per_adapter, correct_linear_gathered],
                         ids=["w in x.dtype, fp32 LoRA", "w in fp32, x.dtype LoRA", "split-K, gathered LoRA"])
def test_every_correct_design_is_admitted_at_llm_depth(x_dtype, linear):
    case = make_linear_case(1, 96, 4096, 33, x_dtype, rank=16, num_loras=4, group_size=128,
                            zero_granularity="grouped")
    report = linear_error(_got(linear, case), case)
    assert report.passed, report.worst()


def test_a_lora_intermediate_that_is_subnormal_in_fp16_is_admitted():
    # The thorough profile's one false alarm, kept as a fixed case: t = x @ A^T ~ 6.7e-6 is subnormal
    # in fp16, where rounding it errs by up to 2**-25 absolutely, far above u16 * |t|.
    case = make_linear_case(0, 1, 2, 1, "fp16", rank=1, num_loras=1, bias=False, scale_granularity="per-tensor",
                            group_size=None)
    h = float.fromhex  # the failing case's exact values
    weights = replace(case.weights, packed=np.array([[0x45]], np.uint8), scales=np.array([h("0x1.06p-12")]))
    case = replace(case, weights=weights, x=np.array([[-h("0x1.548p-1"), h("0x1.68p-2")]]),
                   lora_a=np.array([[[h("0x1.918p-10"), h("0x1.7e4p-9")]]]), lora_b=np.array([[[h("0x1.01p0")]]]),
                   lora_indices=np.zeros(1, np.int32))
    t = float(case.x[0] @ case.lora_a[0, 0])
    assert 0 < abs(t) < 2.0 ** -14  # subnormal in fp16
    report = linear_error(_got(correct_linear_per_adapter, case), case)
    assert report.passed, report.worst()


def test_a_half_lora_intermediate_is_rejected_for_bf16_activations():
    # |t| = |x @ A^T| ~ 2**12 * sqrt(512) overflows fp16 while bf16 holds it
    case = make_linear_case(2, 64, 512, 16, "bf16", rank=16, num_loras=2, group_size=64, scale_exponent=10.0)
    report = linear_error(_got(lora_intermediate_in_half, case), case)
    assert not report.passed


@pytest.mark.parametrize("dtype", ["fp16", "bf16", "fp32"])
def test_dequantization_allows_one_ulp_where_inexact_and_none_where_exact(dtype):
    # fp32 scales and integer zero points: exact where v == z (and v - z = +-2**j for fp32), else inexact
    w = make_weights(np.random.default_rng(3), 16, 64, group_size=16, zero_granularity="grouped", scales_dtype="fp32")
    packed, scales, zeros, group_size = w.torch_args("cpu")
    got = torch_path.dequantize(packed, scales, zeros, group_size, TORCH_DTYPES[dtype]).double().numpy()
    report = dequant_error(got, w.packed, w.scales, w.zero_points, w.group_size, dtype)
    assert report.max_ratio == 0
    inexact = report.allowed == 1.0
    assert inexact.any() and (~inexact).any()
    up = np.where(got >= 0, 1.0, -1.0) * spacing(got, dtype)  # one ulp away from zero (exact in float64)
    one_ulp = dequant_error(got + up * inexact, w.packed, w.scales, w.zero_points, w.group_size, dtype)
    assert one_ulp.passed and one_ulp.max_ratio == 1.0
    two_ulps = dequant_error(got + 2 * up * inexact, w.packed, w.scales, w.zero_points, w.group_size, dtype)
    assert not two_ulps.passed
    off_where_exact = dequant_error(got + up * ~inexact, w.packed, w.scales, w.zero_points, w.group_size, dtype)
    assert not off_where_exact.passed


def test_the_seeds_arithmetic_in_the_output_dtype_is_rejected():
    # (v - z) then * s, each rounded to fp16, with the fp32 scales cast to fp16 first: tens of ulps off
    w = make_weights(np.random.default_rng(0), 32, 64, group_size=16, zero_granularity="grouped", zero_kind="float",
                     scales_dtype="fp32")
    got = two_roundings_in_output_dtype(*w.torch_args("cpu"), torch.float16).double().numpy()
    report = dequant_error(got, w.packed, w.scales, w.zero_points, w.group_size, "fp16")
    assert not report.passed and report.ulps.max() > 2


def test_term_3_vanishes_exactly_where_fp32_computes_every_weight_exactly():
    from int4_lora_harness.verify.tolerance import fp32_exact
    rng = np.random.default_rng(4)
    exact_cases = [make_weights(rng, 4, 64, 16, "grouped", "grouped", "int8", "fp16"),
                   make_weights(rng, 4, 64, 16, "grouped", None, "int8", "bf16")]
    assert all(fp32_exact(w) for w in exact_cases)
    inexact = [make_weights(rng, 4, 64, 16, "grouped", "grouped", "float", "fp16"),
               make_weights(rng, 4, 64, 16, "grouped", None, "int8", "fp32")]
    assert not any(fp32_exact(w) for w in inexact)
    big = make_weights(rng, 4, 64, 16, "grouped", "grouped", "int32", "fp16")
    assert not fp32_exact(replace(big, zero_points=big.zero_points + 8190))  # |z| + 8 >= 2**13: v * s - z * s rounds
    for w in exact_cases:  # every product and difference exact in fp32, whichever order a kernel takes
        v = unpack(w.packed).astype(np.float32)
        s = expand(w.scales, 4, 64, 16, "s").astype(np.float32)
        z = 0.0 if w.zero_points is None else expand(w.zero_points, 4, 64, 16, "z").astype(np.float32)
        exact = (unpack(w.packed).astype(np.float64) - np.asarray(z, np.float64)) * expand(w.scales, 4, 64, 16, "s")
        assert np.array_equal((v - z) * s, exact) and np.array_equal(v * s - z * s, exact)


def test_abs_products_bound_the_exact_float64_product():
    from int4_lora_harness.verify.tolerance import abs_products
    rng = np.random.default_rng(1)
    x_abs = np.abs(rng.standard_normal((7, 4096))).astype(np.float16).astype(np.float32)
    w_abs = np.abs(rng.standard_normal((50, 4096)))
    exact = x_abs.astype(np.float64) @ w_abs.astype(np.float32).astype(np.float64).T
    bound = abs_products(x_abs, w_abs)
    assert np.all(bound >= exact) and np.all(bound <= exact * (1 + 4096 * 2.0 ** -22))


def test_the_grouped_dequantization_equals_the_per_element_definition():
    from int4_lora_harness.reference.dequantize import dequantize_exact
    from int4_lora_harness.reference.granularity import expand
    from int4_lora_harness.reference.packing import unpack
    rng = np.random.default_rng(2)
    for scale_g, zero_g, group_size, in_features in [("grouped", "per-channel", 24, 100), ("per-tensor", "grouped", 7, 30),
                                                     ("per-channel", None, None, 64), ("grouped", "grouped", 200, 64)]:
        w = make_weights(rng, 9, in_features, group_size, scale_g, zero_g, "float", "fp32")
        v = unpack(w.packed).astype(np.float64)
        z = 0.0 if w.zero_points is None else expand(w.zero_points, 9, in_features, w.group_size, "z")
        assert np.array_equal(dequantize_exact(w.packed, w.scales, w.zero_points, w.group_size),
                              (v - z) * expand(w.scales, 9, in_features, w.group_size, "s"))


def test_an_exact_block_is_tallied_as_add_would_tally_its_zeros():
    from int4_lora_harness.verify.judgement import Tally
    fast, slow = Tally("d", 5000, samples=64), Tally("d", 5000, samples=64)
    describe = lambda i, j: dict(index=(int(i), int(j)))  # noqa: E731
    for shape in ((10, 300), (7, 100)):
        fast.add_exact(shape, describe)
        slow.add(np.zeros(shape), np.zeros(shape), describe)
    ratio = np.zeros((3, 200))
    ratio[2, 5] = 0.5
    for t in (fast, slow):
        t.add(ratio, ratio * 2, lambda i, j: dict(index=(int(i), int(j)), late=True))
    a, b = fast.judgement(), slow.judgement()
    assert (a.max_ratio, a.worst, a.elements, a.exact_share) == (b.max_ratio, b.worst, b.elements, b.exact_share)
    assert np.array_equal(a.ulps, b.ulps) and np.array_equal(a.ratio, b.ratio)
    assert a.worst["late"] and a.max_ratio == 0.5


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_one_wrong_weight_in_the_last_block_of_a_layer_is_the_worst_element_the_dequantizer_verdict_names(dtype):
    from int4_lora_harness.verify.dequantizer import dequant_judgement
    from int4_lora_harness.verify.judgement import row_blocks
    w = make_weights(np.random.default_rng(8), 2100, 4096, group_size=128, zero_granularity="grouped")
    assert len(row_blocks(*w.shape)) == 3  # two exact blocks first, then the one with the wrong weight
    packed, scales, zeros, group_size = w.torch_args("cpu")
    got = torch_path.dequantize(packed, scales, zeros, group_size, TORCH_DTYPES[dtype]).float().numpy()
    exact = dequant_judgement(got, w, dtype)
    assert exact.passed and exact.max_ratio == 0 and exact.exact_share == 1.0 and exact.worst["index"] == (0, 0)
    inputs = exact.worst["inputs"]  # the fast path still names the element's inputs, the exact weight among them
    assert exact.worst["got"] == float(got[0, 0]) and set(inputs) >= {"v", "scale", "zero_point", "exact"}
    assert inputs["exact"] == (inputs["v"] - inputs["zero_point"]) * inputs["scale"]
    got[2099, 4095] += 3 * float(spacing(np.abs(got[2099:, 4095:]), dtype)[0, 0])  # 3 ulps off, in the last block
    wrong = dequant_judgement(got, w, dtype)
    assert not wrong.passed and wrong.worst["index"] == (2099, 4095) and wrong.exact_share < 1.0
