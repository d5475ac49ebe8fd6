"""Bad inputs are named errors and valid edge cases get the right answer (issue 14): reference, torch checks, Triton.

Each probe is (call, exception type, message fragment). The call must raise exactly that type (TypeError
for the wrong kind of object, ValueError for a wrong dtype, shape or value) with a message naming the
argument and the rule. The edge cases (0 rows, 0 columns, M = 0 tokens, a group size of 2**36, NumPy
integer group sizes, 0 adapters, non-finite scaling) are compared with the answer they must give.
Triton tests run where its backend can (CUDA, or CPU under TRITON_INTERPRET=1) and are marked `interpreter`.
"""
import re

import numpy as np
import pytest
import torch

from int4_lora_harness import reference as R
from int4_lora_harness.kernels import checks, torch_path, triton_int4
from int4_lora_harness.verify.cases import make_linear_case

# ---------------------------------------------------------------- the reference (NumPy)


def ref_dequantize(**changes):
    """reference.dequantize of a [3, 8] weight with per-channel scales, arguments replaced by `changes`."""
    args = dict(packed_weights=R.pack(np.arange(24).reshape(3, 8) % 16 - 8), scales=np.array([0.5, 1.0, 2.0]),
                zero_points=None, group_size=None, output_dtype="fp32")
    return R.dequantize(**{**args, **changes})


def ref_linear(**changes):
    """reference.linear of M = 2 tokens through a [3, 8] weight and 2 rank-1 adapters, arguments replaced."""
    args = dict(x=np.ones((2, 8)), packed_weights=R.pack(np.ones((3, 8), np.int8)), scales=np.ones(3),
                zero_points=None, group_size=None, lora_a=np.ones((2, 1, 8)), lora_b=np.ones((2, 3, 1)),
                lora_indices=np.array([0, -1]), scaling=1.0, bias=None, x_dtype="fp32")
    return R.linear(**{**args, **changes})


GROUPED = dict(scales=np.ones((3, 1)), group_size=8)

REFERENCE_PROBES = [
    ("pack_of_0.5", lambda: R.pack(np.array([[0.5, 1.0]])), ValueError, "values must be integers"),
    ("pack_of_1.7", lambda: R.pack(np.array([[1.7, 1.0]])), ValueError, "values must be integers"),
    ("pack_of_nan", lambda: R.pack(np.array([[np.nan, 1.0]])), ValueError, "values must be integers"),
    ("pack_of_inf", lambda: R.pack(np.array([[np.inf, 1.0]])), ValueError, "values must be integers"),
    ("pack_of_bool", lambda: R.pack(np.ones((1, 2), bool)), ValueError, "values must hold real numbers"),
    ("pack_of_complex", lambda: R.pack(np.ones((1, 2), complex)), ValueError, "values must hold real numbers"),
    ("pack_of_none", lambda: R.pack(None), TypeError, "values must be an array, got None"),
    ("pack_of_8", lambda: R.pack(np.array([[8, 0]])), ValueError, "values must lie in [-8, 7]"),
    ("unpack_of_none", lambda: R.unpack(None), TypeError, "packed_weights must be a uint8 array, got None"),
    ("unpack_of_3d", lambda: R.unpack(np.zeros((1, 2, 2), np.uint8)), ValueError, "packed_weights must be 2-D"),
    ("scales_none", lambda: ref_dequantize(scales=None), TypeError, "scales must be an array, got None"),
    ("scales_bool", lambda: ref_dequantize(scales=np.ones(3, bool)), ValueError, "scales must hold real numbers"),
    ("scales_complex", lambda: ref_dequantize(scales=np.ones(3) * 1j), ValueError, "scales must hold real numbers"),
    ("scales_str", lambda: ref_dequantize(scales="abc"), ValueError, "scales must hold real numbers"),
    ("scales_ragged", lambda: ref_dequantize(scales=[[1.0], [1.0, 2.0], [1.0]]), ValueError,
     "scales must be a rectangular array"),
    ("zero_points_complex", lambda: ref_dequantize(zero_points=np.ones(3) * 1j), ValueError,
     "zero_points must hold real numbers"),
    ("zero_points_bool", lambda: ref_dequantize(zero_points=np.ones(3, bool)), ValueError,
     "zero_points must hold real numbers"),
    ("group_size_float", lambda: ref_dequantize(**GROUPED | dict(group_size=8.0)), TypeError,
     "group_size must be None or an integer"),
    ("group_size_float_per_channel", lambda: ref_dequantize(group_size=8.0), TypeError,
     "group_size must be None or an integer"),
    ("group_size_bool", lambda: ref_dequantize(**GROUPED | dict(group_size=True)), TypeError,
     "group_size must be None or an integer"),
    ("group_size_str", lambda: ref_dequantize(**GROUPED | dict(group_size="8")), TypeError,
     "group_size must be None or an integer"),
    ("group_size_0_grouped", lambda: ref_dequantize(**GROUPED | dict(group_size=0)), ValueError,
     "group_size must be a positive int for grouped scales"),
    ("group_size_negative_grouped", lambda: ref_dequantize(**GROUPED | dict(group_size=-8)), ValueError,
     "group_size must be a positive int for grouped scales"),
    ("output_dtype_numpy_type", lambda: ref_dequantize(output_dtype=np.float16), TypeError,
     "output_dtype must be one of ['bf16', 'fp16', 'fp32'] (a str)"),
    ("output_dtype_fp64", lambda: ref_dequantize(output_dtype="fp64"), ValueError, "output_dtype must be one of"),
    ("expand_negative_out", lambda: R.expand(np.ones(1), -1, 4, None, "scales"), ValueError,
     "out_features must be >= 0"),
    ("expand_float_in", lambda: R.expand(np.ones(1), 2, 4.0, None, "scales"), TypeError,
     "in_features must be an integer"),
    ("granularity_of_none", lambda: R.granularity(None, 2, 4, None, "scales"), TypeError,
     "scales must be an array or tensor, got None"),
    ("x_none", lambda: ref_linear(x=None), TypeError, "x must be an array, got None"),
    ("x_1d", lambda: ref_linear(x=np.ones(8)), ValueError, "x must have shape [M, 8]"),
    ("x_scalar", lambda: ref_linear(x=3.0), ValueError, "x must have shape [M, 8]"),
    ("x_complex", lambda: ref_linear(x=np.ones((2, 8), complex)), ValueError, "x must hold real numbers"),
    ("lora_indices_float", lambda: ref_linear(lora_indices=np.array([0.0, -1.0])), ValueError,
     "lora_indices must hold integers"),
    ("lora_indices_none", lambda: ref_linear(lora_indices=None), TypeError, "lora_indices must be an array"),
    ("lora_indices_wrong_length", lambda: ref_linear(lora_indices=np.array([0])), ValueError,
     "lora_indices must be an integer array of shape [2]"),
    ("lora_a_1d", lambda: ref_linear(lora_a=np.ones(8)), ValueError, "lora_a must have shape [num_loras, rank, 8]"),
    ("lora_b_wrong_rank", lambda: ref_linear(lora_b=np.ones((2, 3, 2))), ValueError,
     "lora_b must have shape [2, 3, 1]"),
    ("lora_b_complex", lambda: ref_linear(lora_b=np.ones((2, 3, 1), complex)), ValueError,
     "lora_b must hold real numbers"),
    ("lora_a_without_lora_b", lambda: ref_linear(lora_b=None), ValueError,
     "lora_a and lora_b must both be given or both be None"),
    ("scaling_str", lambda: ref_linear(scaling="0.5"), TypeError, "scaling must be a real number"),
    ("scaling_str_without_adapters", lambda: ref_linear(lora_a=None, lora_b=None, lora_indices=np.array([-1, -1]),
                                                        scaling="0.5"), TypeError, "scaling must be a real number"),
    ("scaling_bool", lambda: ref_linear(scaling=True), TypeError, "scaling must be a real number"),
    ("scaling_complex", lambda: ref_linear(scaling=1j), TypeError, "scaling must be a real number"),
    ("scaling_0d_array", lambda: ref_linear(scaling=np.array(0.5)), TypeError, "scaling must be a real number"),
    ("scaling_none", lambda: ref_linear(scaling=None), TypeError, "scaling must be a real number"),
    ("bias_wrong_shape", lambda: ref_linear(bias=np.ones(2)), ValueError, "bias must have shape [3]"),
    ("bias_complex", lambda: ref_linear(bias=np.ones(3, complex)), ValueError, "bias must hold real numbers"),
    ("x_dtype_fp8", lambda: ref_linear(x_dtype="fp8"), ValueError, "x_dtype must be one of"),
    ("lora_exact_scaling_str", lambda: R.lora_exact(np.ones((1, 8)), None, None, np.array([-1]), "1"), TypeError,
     "scaling must be a real number"),
    ("base_exact_w_none", lambda: R.base_exact(np.ones((1, 8)), None, None), TypeError, "w must be an array"),
    ("quantize_nan", lambda: R.quantize(np.array([[np.nan, 1.0]]), "per-channel"), ValueError,
     "weights must be finite"),
    ("quantize_none", lambda: R.quantize(None), TypeError, "weights must be an array, got None"),
    ("quantize_group_size_float", lambda: R.quantize(np.ones((2, 8)), "grouped", 8.0), TypeError,
     "group_size must be None or an integer"),
    ("quantize_group_size_0", lambda: R.quantize(np.ones((2, 8)), "grouped", 0), ValueError,
     "group_size must be a positive int for grouped quantization"),
    ("quantize_symmetric_str", lambda: R.quantize(np.ones((2, 8)), "per-channel", symmetric="no"), TypeError,
     "symmetric must be a bool"),
]


def assert_refused(call, error, fragment):
    """The call raises exactly `error` (not the other of TypeError / ValueError) with `fragment` in its message."""
    with pytest.raises((TypeError, ValueError)) as caught:
        call()
    assert caught.type is error, f"raised {caught.type.__name__}: {caught.value}"
    assert re.search(re.escape(fragment), str(caught.value)), str(caught.value)


@pytest.mark.parametrize("call, error, fragment", [p[1:] for p in REFERENCE_PROBES],
                         ids=[p[0] for p in REFERENCE_PROBES])
def test_the_reference_refuses_nonsense_with_an_error_naming_the_argument(call, error, fragment):
    assert_refused(call, error, fragment)


def test_the_reference_dequantizes_zero_rows_and_zero_columns_to_empty_arrays():
    assert ref_dequantize(packed_weights=np.zeros((0, 4), np.uint8), scales=np.ones(0)).shape == (0, 8)
    assert ref_dequantize(packed_weights=np.zeros((0, 4), np.uint8), scales=np.ones(1)).shape == (0, 8)
    assert ref_dequantize(packed_weights=np.zeros((3, 0), np.uint8)).shape == (3, 0)
    empty = ref_dequantize(packed_weights=np.zeros((3, 0), np.uint8), scales=np.ones((3, 0)), group_size=8,
                           output_dtype="fp16")
    assert empty.shape == (3, 0) and empty.dtype == np.float16


def test_a_group_size_of_2_to_the_36_is_one_ragged_group_equal_to_per_channel_scales():
    packed = R.pack(np.arange(192).reshape(3, 64) % 16 - 8)
    scales = np.array([[0.5], [1.0], [2.0]])
    per_channel = R.dequantize(packed, scales[:, 0], None, None, "fp32")
    assert np.array_equal(R.dequantize(packed, scales, None, 2**36, "fp32"), per_channel)
    assert np.array_equal(R.dequantize(packed, scales, None, 2**70, "fp32"), per_channel)  # past int64


@pytest.mark.parametrize("group_size", [np.int8(4), np.int64(4), np.uint64(4), np.uint8(4)],
                         ids=lambda g: type(g).__name__)
def test_numpy_integer_group_sizes_dequantize_as_the_python_int(group_size):
    packed = R.pack(np.arange(30).reshape(3, 10) % 16 - 8)
    scales, zero_points = np.arange(1, 10).reshape(3, 3) / 4, np.arange(9).reshape(3, 3) - 4  # ragged last group
    expected = R.dequantize_exact(packed, scales, zero_points, 4)
    assert np.array_equal(R.dequantize_exact(packed, scales, zero_points, group_size), expected)


def test_pack_accepts_floats_that_are_exact_integers_and_packs_them_as_integers():
    assert np.array_equal(R.pack(np.array([[3.0, -8.0, 7.0, 0.0]])), R.pack(np.array([[3, -8, 7, 0]])))


def test_the_reference_takes_integer_scales_as_their_real_values():
    packed = R.pack(np.arange(24).reshape(3, 8) % 16 - 8)
    expected = R.dequantize_exact(packed, np.array([1.0, 2.0, 3.0]))
    assert np.array_equal(R.dequantize_exact(packed, np.array([1, 2, 3], np.int16)), expected)


def test_the_reference_linear_of_zero_tokens_is_an_empty_output():
    y = ref_linear(x=np.ones((0, 8)), lora_indices=np.zeros(0, np.int64))
    assert y.shape == (0, 3)


def test_the_reference_linear_with_zero_in_features_is_the_bias():
    y = ref_linear(x=np.ones((2, 0)), packed_weights=np.zeros((3, 0), np.uint8), lora_a=np.ones((2, 1, 0)),
                   bias=np.array([1.0, -2.0, 0.5]))
    assert y.tolist() == [[1.0, -2.0, 0.5]] * 2  # the adapter of token 0 has nothing to read: its delta is 0


def test_zero_adapters_with_every_index_minus_one_give_the_base_result():
    base = ref_linear(lora_a=None, lora_b=None, lora_indices=np.array([-1, -1]))
    assert np.array_equal(ref_linear(lora_a=np.ones((0, 1, 8)), lora_b=np.ones((0, 3, 1)),
                                     lora_indices=np.array([-1, -1])), base)
    assert_refused(lambda: ref_linear(lora_a=np.ones((0, 1, 8)), lora_b=np.ones((0, 3, 1))), ValueError,
                   "lora_indices must lie in [-1, -1]")


@pytest.mark.parametrize("scaling", [np.inf, -np.inf, np.nan])
def test_non_finite_scaling_is_accepted_and_reaches_only_tokens_with_an_adapter(scaling):
    base = ref_linear(lora_a=None, lora_b=None, lora_indices=np.array([-1, -1]))
    y = ref_linear(scaling=scaling)
    assert np.array_equal(y[1], base[1]) and not np.isfinite(y[0]).any()


@pytest.mark.parametrize("scaling", [2, np.float32(2.0), np.int64(2), np.float16(2.0)], ids=lambda s: type(s).__name__)
def test_any_real_scalar_scaling_gives_the_float_answer(scaling):
    assert np.array_equal(ref_linear(scaling=scaling), ref_linear(scaling=2.0))


def test_quantize_of_empty_weights_gives_empty_packed_weights():
    packed, scales, _ = R.quantize(np.zeros((3, 0)), "grouped", 8)
    assert packed.shape == (3, 0) and scales.shape == (3, 0)
    packed, scales, _ = R.quantize(np.zeros((0, 8)), "per-channel")
    assert packed.shape == (0, 4) and scales.shape == (0,)


# ---------------------------------------------------------------- kernels.checks, through the torch path


def torch_weights(out_features=3, in_features=16):
    """(packed_weights uint8 [out, in // 2], per-channel fp16 scales [out])."""
    packed = torch.from_numpy(R.pack(np.arange(out_features * in_features).reshape(out_features, in_features) % 16 - 8))
    return packed, torch.tensor([0.5, 1.0, 2.0][:out_features] + [1.0] * (out_features - 3), dtype=torch.float16)


def torch_linear_args(**changes):
    """torch linear arguments (M = 2, [3, 16] weight, 2 rank-1 adapters) by name, replaced by `changes`."""
    packed, scales = torch_weights()
    args = dict(x=torch.ones(2, 16, dtype=torch.float16), packed_weights=packed, scales=scales, zero_points=None,
                group_size=None, lora_a=torch.ones(2, 1, 16, dtype=torch.float16),
                lora_b=torch.ones(2, 3, 1, dtype=torch.float16), lora_indices=torch.tensor([0, -1]), scaling=1.0,
                bias=None)
    return {**args, **changes}


def torch_dequantize_args(**changes):
    packed, scales = torch_weights()
    return {**dict(packed_weights=packed, scales=scales, zero_points=None, group_size=None,
                   output_dtype=torch.float16), **changes}


TORCH_GROUPED = dict(scales=torch.ones(3, 2, dtype=torch.float16), group_size=8)

TORCH_DEQUANTIZE_PROBES = [
    ("scales_none", dict(scales=None), TypeError, "scales must be a torch.Tensor, got NoneType"),
    ("scales_list", dict(scales=[0.5, 1.0, 2.0]), TypeError, "scales must be a torch.Tensor, got list"),
    ("scales_float", dict(scales=0.5), TypeError, "scales must be a torch.Tensor, got float"),
    ("packed_weights_int", dict(packed_weights=3), TypeError, "packed_weights must be a torch.Tensor, got int"),
    ("packed_weights_numpy", dict(packed_weights=np.zeros((3, 8), np.uint8)), TypeError,
     "packed_weights must be a torch.Tensor, got ndarray"),
    ("packed_weights_1d", dict(packed_weights=torch.zeros(8, dtype=torch.uint8)), ValueError,
     "packed_weights must be 2-D"),
    ("zero_points_list", dict(zero_points=[0, 0, 0]), TypeError,
     "zero_points must be a torch.Tensor or None, got list"),
    ("zero_points_complex", dict(zero_points=torch.zeros(3, dtype=torch.complex64)), ValueError,
     "zero_points must be a floating point or integer tensor"),
    ("scales_complex", dict(scales=torch.ones(3, dtype=torch.complex64)), ValueError,
     "scales must be fp16, bf16 or fp32"),
    ("group_size_float", TORCH_GROUPED | dict(group_size=8.0), TypeError, "group_size must be None or an integer"),
    ("group_size_bool", TORCH_GROUPED | dict(group_size=True), TypeError, "group_size must be None or an integer"),
    ("group_size_0", TORCH_GROUPED | dict(group_size=0), ValueError, "group_size must be a positive int for grouped"),
    ("group_size_tensor", TORCH_GROUPED | dict(group_size=torch.tensor(8)), TypeError,
     "group_size must be None or an integer"),
    ("output_dtype_str", dict(output_dtype="fp16"), TypeError, "output_dtype must be a torch.dtype"),
    ("output_dtype_numpy", dict(output_dtype=np.float16), TypeError, "output_dtype must be a torch.dtype"),
    ("output_dtype_float64", dict(output_dtype=torch.float64), ValueError,
     "output_dtype must be torch.float16, torch.bfloat16 or torch.float32"),
    ("output_dtype_int8", dict(output_dtype=torch.int8), ValueError,
     "output_dtype must be torch.float16, torch.bfloat16 or torch.float32"),
]

TORCH_LINEAR_PROBES = [
    ("x_list", dict(x=[[1.0] * 16] * 2), TypeError, "x must be a torch.Tensor, got list"),
    ("x_none", dict(x=None), TypeError, "x must be a torch.Tensor, got NoneType"),
    ("x_1d", dict(x=torch.ones(16, dtype=torch.float16)), ValueError, "x must have shape [M, 16]"),
    ("x_3d", dict(x=torch.ones(1, 2, 16, dtype=torch.float16)), ValueError, "x must have shape [M, 16]"),
    ("scales_none", dict(scales=None), TypeError, "scales must be a torch.Tensor, got NoneType"),
    ("packed_weights_int", dict(packed_weights=3), TypeError, "packed_weights must be a torch.Tensor, got int"),
    ("lora_indices_list", dict(lora_indices=[0, -1]), TypeError, "lora_indices must be a torch.Tensor, got list"),
    ("lora_indices_float", dict(lora_indices=torch.tensor([0.0, -1.0])), ValueError,
     "lora_indices must be int32 or int64"),
    ("lora_a_numpy", dict(lora_a=np.ones((2, 1, 16))), TypeError, "lora_a must be a torch.Tensor or None, got ndarray"),
    ("lora_b_list", dict(lora_b=[[[1.0]] * 3] * 2), TypeError, "lora_b must be a torch.Tensor or None, got list"),
    ("lora_b_missing", dict(lora_b=None), ValueError, "lora_a and lora_b must both be tensors or both be None"),
    ("lora_b_wrong_rank", dict(lora_b=torch.ones(2, 3, 2, dtype=torch.float16)), ValueError,
     "lora_b must have shape [2, 3, 1]"),
    ("bias_scalar", dict(bias=0.0), TypeError, "bias must be a torch.Tensor or None, got float"),
    ("group_size_float", TORCH_GROUPED | dict(group_size=8.0), TypeError, "group_size must be None or an integer"),
]


@pytest.mark.parametrize("changes, error, fragment", [p[1:] for p in TORCH_DEQUANTIZE_PROBES],
                         ids=[p[0] for p in TORCH_DEQUANTIZE_PROBES])
def test_the_torch_dequantizer_refuses_nonsense_in_kernels_checks(changes, error, fragment):
    assert_refused(lambda: torch_path.dequantize(**torch_dequantize_args(**changes)), error, fragment)


@pytest.mark.parametrize("changes, error, fragment", [p[1:] for p in TORCH_LINEAR_PROBES],
                         ids=[p[0] for p in TORCH_LINEAR_PROBES])
def test_the_torch_linear_refuses_nonsense_in_kernels_checks(changes, error, fragment):
    args = torch_linear_args(**changes)
    assert_refused(lambda: torch_path.linear(*args.values()), error, fragment)


@pytest.mark.parametrize("scaling", ["0.5", True, None, 1j, torch.tensor(0.5), np.array(0.5), [0.5]],
                         ids=["str", "bool", "none", "complex", "tensor", "0d_array", "list"])
def test_validate_scaling_refuses_what_is_not_a_real_scalar(scaling):
    assert_refused(lambda: checks.validate_scaling(scaling), TypeError, "scaling must be a real number")


@pytest.mark.parametrize("scaling", [0.5, 2, np.float32(0.5), np.int64(3), np.inf, -np.inf, np.nan],
                         ids=["float", "int", "float32", "int64", "inf", "-inf", "nan"])
def test_validate_scaling_accepts_real_scalars_finite_or_not(scaling):
    checks.validate_scaling(scaling)  # returns None; raising fails the test


def test_validation_accepts_zero_rows_zero_columns_and_numpy_or_huge_group_sizes():
    zero_rows = torch.zeros(0, 4, dtype=torch.uint8)
    assert checks.validate_weights(zero_rows, torch.ones(0), None, None) == (0, 8, "per-channel", None)
    zero_cols = torch.zeros(3, 0, dtype=torch.uint8)
    assert checks.validate_weights(zero_cols, torch.ones(3, 0), None, 8) == (3, 0, "grouped", None)
    packed = torch.zeros(3, 32, dtype=torch.uint8)  # in_features 64
    assert checks.validate_weights(packed, torch.ones(3, 1), None, 2**36) == (3, 64, "grouped", None)
    assert checks.validate_weights(packed, torch.ones(3, 8), torch.zeros(3, 8), np.int64(8)) == (3, 64, "grouped",
                                                                                                  "grouped")


def test_validation_accepts_zero_tokens_and_zero_adapters_when_every_index_is_minus_one():
    zero_tokens = torch_linear_args(x=torch.ones(0, 16, dtype=torch.float16),
                                    lora_indices=torch.zeros(0, dtype=torch.int64))
    assert checks.validate_linear(*list(zero_tokens.values())[:8], None) == (3, 16, "per-channel", None)
    no_adapters = torch_linear_args(lora_a=torch.ones(0, 1, 16), lora_b=torch.ones(0, 3, 1),
                                    lora_indices=torch.tensor([-1, -1]))
    assert checks.validate_linear(*list(no_adapters.values())[:8], None) == (3, 16, "per-channel", None)
    with pytest.raises(ValueError, match=re.escape("lora_indices must lie in [-1, -1]")):
        checks.validate_linear(*list(torch_linear_args(lora_a=torch.ones(0, 1, 16), lora_b=torch.ones(0, 3, 1))
                                     .values())[:8], None)


# ---------------------------------------------------------------- Triton (CUDA, or the CPU interpreter)

TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
triton_runs = pytest.mark.skipif(triton_int4.unavailable_reason() is not None,
                                 reason=f"Triton cannot run here: {triton_int4.unavailable_reason()}")


def on_device(args):
    return {k: v.to(TRITON_DEVICE) if isinstance(v, torch.Tensor) else v for k, v in args.items()}


TRITON_PROBES = [
    ("dequantize_scales_none", "dequantize", dict(scales=None), TypeError,
     "scales must be a torch.Tensor, got NoneType"),
    ("dequantize_packed_weights_int", "dequantize", dict(packed_weights=3), TypeError,
     "packed_weights must be a torch.Tensor, got int"),
    ("dequantize_group_size_float", "dequantize", TORCH_GROUPED | dict(group_size=8.0), TypeError,
     "group_size must be None or an integer"),
    ("dequantize_output_dtype_str", "dequantize", dict(output_dtype="fp16"), TypeError,
     "output_dtype must be a torch.dtype"),
    ("linear_x_list", "linear", dict(x=[[1.0] * 16] * 2), TypeError, "x must be a torch.Tensor, got list"),
    ("linear_group_size_float", "linear", TORCH_GROUPED | dict(group_size=8.0), TypeError,
     "group_size must be None or an integer"),
    ("linear_scaling_str", "linear", dict(scaling="0.5"), TypeError, "scaling must be a real number"),
    ("linear_scaling_str_without_adapters", "linear", dict(lora_a=None, lora_b=None, scaling="0.5",
                                                           lora_indices=torch.tensor([-1, -1])),
     TypeError, "scaling must be a real number"),
    ("linear_scaling_bool", "linear", dict(scaling=True), TypeError, "scaling must be a real number"),
    ("linear_scaling_tensor", "linear", dict(scaling=torch.tensor(0.5)), TypeError, "scaling must be a real number"),
]


@pytest.mark.interpreter
@triton_runs
@pytest.mark.parametrize("function, changes, error, fragment", [p[1:] for p in TRITON_PROBES],
                         ids=[p[0] for p in TRITON_PROBES])
def test_triton_refuses_nonsense_with_an_error_naming_the_argument(function, changes, error, fragment):
    args = on_device(torch_dequantize_args(**changes) if function == "dequantize" else torch_linear_args(**changes))
    assert_refused(lambda: getattr(triton_int4, function)(*args.values()), error, fragment)


@pytest.mark.interpreter
@triton_runs
def test_triton_prepare_linear_refuses_a_str_scaling():
    args = on_device(torch_linear_args(scaling="0.5"))
    assert_refused(lambda: triton_int4.prepare_linear(*args.values()), TypeError, "scaling must be a real number")


class NoLaunch:
    """Stands in for a @triton.jit kernel: indexing it with a grid (a launch) fails the test."""

    def __getitem__(self, grid):
        raise AssertionError(f"a kernel was launched with grid {grid} for an empty output")


@pytest.mark.interpreter
@triton_runs
def test_triton_returns_empty_outputs_without_launching_a_kernel(monkeypatch):
    for name in ("int4_lora_gemm_kernel", "lora_shrink_kernel", "dequantize_kernel"):
        monkeypatch.setattr(triton_int4.triton_kernels, name, NoLaunch())
    no_tokens = on_device(torch_linear_args(x=torch.ones(0, 16, dtype=torch.float16),
                                            lora_indices=torch.zeros(0, dtype=torch.int64)))
    assert triton_int4.linear(*no_tokens.values()).shape == (0, 3)
    zero_rows = on_device(torch_dequantize_args(packed_weights=torch.zeros(0, 4, dtype=torch.uint8),
                                                scales=torch.ones(0, dtype=torch.float16)))
    assert triton_int4.dequantize(*zero_rows.values()).shape == (0, 8)
    zero_cols = on_device(torch_dequantize_args(packed_weights=torch.zeros(3, 0, dtype=torch.uint8),
                                                scales=torch.ones(3, 0, dtype=torch.float16), group_size=8))
    empty = triton_int4.dequantize(*zero_cols.values())
    assert empty.shape == (3, 0) and empty.dtype == torch.float16


def grouped_weights():
    """(packed [3, 32] (in 64), fp16 scales [3, 8] for group_size 8, the same values as reference arrays)."""
    values = np.arange(192).reshape(3, 64) * 7 % 16 - 8
    scales = (np.arange(24).reshape(3, 8) % 5 + 1) / 8
    return R.pack(values), scales


@pytest.mark.interpreter
@triton_runs
@pytest.mark.parametrize("group_size", [np.int64(8), np.int32(8), np.uint64(8)], ids=lambda g: type(g).__name__)
def test_triton_takes_numpy_integer_group_sizes_and_matches_the_reference(group_size):
    packed, scales = grouped_weights()
    got = triton_int4.dequantize(torch.from_numpy(packed).to(TRITON_DEVICE),
                                 torch.tensor(scales, dtype=torch.float16, device=TRITON_DEVICE), None, group_size)
    # fp16 scales times v in [-8, 7] are exact in fp32: one rounding, so the reference's value exactly
    assert np.array_equal(got.cpu().numpy(), R.dequantize(packed, scales, None, 8, "fp16"))


@pytest.mark.interpreter
@triton_runs
@pytest.mark.parametrize("group_size", [2**36, 2**70], ids=["2**36", "2**70_past_int64"])
def test_triton_with_a_huge_group_size_is_one_group_equal_to_the_reference(group_size):
    packed, scales = grouped_weights()
    one_group = scales[:, :1]
    got = triton_int4.dequantize(torch.from_numpy(packed).to(TRITON_DEVICE),
                                 torch.tensor(one_group, dtype=torch.float16, device=TRITON_DEVICE), None, group_size)
    assert np.array_equal(got.cpu().numpy(), R.dequantize(packed, one_group, None, group_size, "fp16"))


@pytest.mark.interpreter
@triton_runs
def test_triton_linear_with_zero_in_features_is_the_bias():
    bias = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float16)
    args = on_device(torch_linear_args(x=torch.ones(2, 0, dtype=torch.float16),
                                       packed_weights=torch.zeros(3, 0, dtype=torch.uint8),
                                       lora_a=torch.ones(2, 1, 0, dtype=torch.float16), bias=bias))
    assert triton_int4.linear(*args.values()).cpu().tolist() == [bias.tolist()] * 2


@pytest.mark.interpreter
@triton_runs
def test_triton_zero_adapters_with_every_index_minus_one_give_the_base_result():
    no_lora = on_device(torch_linear_args(lora_a=None, lora_b=None, lora_indices=torch.tensor([-1, -1])))
    zero_lora = on_device(torch_linear_args(lora_a=torch.ones(0, 1, 16, dtype=torch.float16),
                                            lora_b=torch.ones(0, 3, 1, dtype=torch.float16),
                                            lora_indices=torch.tensor([-1, -1])))
    assert torch.equal(triton_int4.linear(*zero_lora.values()), triton_int4.linear(*no_lora.values()))


@pytest.mark.interpreter
@triton_runs
@pytest.mark.parametrize("scaling", [np.inf, np.nan])
def test_triton_non_finite_scaling_leaves_tokens_without_an_adapter_alone(scaling):
    base = triton_int4.linear(*on_device(torch_linear_args(lora_a=None, lora_b=None,
                                                           lora_indices=torch.tensor([-1, -1]))).values())
    y = triton_int4.linear(*on_device(torch_linear_args(scaling=scaling)).values())
    assert torch.equal(y[1], base[1]) and not torch.isfinite(y[0]).any()


@pytest.mark.parametrize("scaling", ["0.5", None, True, torch.tensor(0.5)])
def test_the_torch_linear_refuses_a_scaling_that_is_not_a_real_number(scaling):
    kwargs = make_linear_case(0, 6, 16, 3, "fp16", rank=2, num_loras=2, group_size=8).torch_kwargs("cpu")
    assert_refused(lambda: torch_path.linear(**dict(kwargs, scaling=scaling)), TypeError, "scaling must be a real number")
