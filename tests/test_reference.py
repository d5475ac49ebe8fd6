"""The NumPy reference reads as SPEC.md: these tests pin it to the spec's own examples."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from int4_lora_harness import reference as R
from int4_lora_harness.reference.rounding import bf16_bits


def test_low_nibble_is_the_even_column_and_values_are_offset_by_8():
    packed = np.array([[0x2F, 0x80]], dtype=np.uint8)  # low 0xF, high 0x2; low 0x0, high 0x8
    assert R.unpack(packed).tolist() == [[7, -6, -8, 0]]


@given(hnp.arrays(np.int8, hnp.array_shapes(min_dims=2, max_dims=2, max_side=9).map(lambda s: (s[0], 2 * s[1])),
                  elements=st.integers(-8, 7)))
def test_pack_then_unpack_is_the_identity(values):
    assert np.array_equal(R.unpack(R.pack(values)), values)


def test_unpack_refuses_a_non_uint8_packed_tensor():
    with pytest.raises(ValueError, match="packed_weights must be uint8"):
        R.unpack(np.zeros((2, 2), dtype=np.int8))


@given(st.floats(allow_nan=False, width=64))
def test_fp16_and_fp32_rounding_match_numpy_casts(value):
    with np.errstate(over="ignore"):
        assert R.round_to(np.array([value]), "fp16")[0] == np.float16(value)
        assert R.round_to(np.array([value]), "fp32")[0] == np.float32(value)


@given(st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_bf16_rounding_of_fp32_values_matches_the_bit_trick(value):
    bits = np.array([value], dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16  # classic round-to-nearest-even on the top half
    expected = (rounded << 16).astype(np.uint32).view(np.float32)[0]
    with np.errstate(over="ignore"):
        assert R.round_to(np.array([value]), "bf16")[0] == expected


def test_bf16_rounds_once_from_float64_not_via_float32():
    # 1 + 2**-8 + 2**-40 lies just above the bf16 midpoint; via float32 it would become the midpoint and round to 1.
    value = 1 + 2**-8 + 2**-40
    assert R.round_to(np.array([value]), "bf16")[0] == 1 + 2**-7
    assert bf16_bits(np.array([1 + 2**-7], np.float32))[0] == 0x3F81


def test_ties_go_to_even_and_overflow_gives_infinity():
    assert R.round_to(np.array([1 + 2**-11, 1 + 3 * 2**-11]), "fp16").tolist() == [1.0, 1 + 2**-9]
    assert R.round_to(np.array([65520.0, -1e300]), "fp16").tolist() == [np.inf, -np.inf]
    assert R.round_to(np.array([65519.99]), "fp16")[0] == 65504.0


def test_subnormals_keep_the_fixed_spacing_of_the_format():
    assert R.round_to(np.array([2.0**-25 * 1.5]), "fp16")[0] == np.float16(2.0**-24)
    assert R.spacing(np.array([0.0]), "bf16")[0] == 2.0**-133


@pytest.mark.parametrize("dtype", ["fp16", "bf16", "fp32"])
@given(exponent=st.floats(-160, 20), mantissa=st.floats(1, 2, exclude_max=True))
def test_one_rounding_errs_by_at_most_u_times_value_plus_eta(dtype, exponent, mantissa):
    value = mantissa * 2.0 ** exponent
    fmt = R.float_format(dtype)
    assume(value <= fmt.max_finite)  # beyond it RN overflows to inf: not a rounding error
    error = abs(float(R.round_to(np.array([value]), dtype)[0]) - value)
    assert error <= fmt.unit_roundoff * value + fmt.underflow_error


def test_ordinal_counts_ulps_across_zero_and_binade_edges():
    values = np.array([-2.0**-24, 0.0, 2.0**-24, 1.0 - 2**-11, 1.0, 1.0 + 2**-10, np.inf])
    assert np.diff(R.ordinal(values, "fp16")).tolist() == [1, 1, 15359 - 1, 1, 1, 31744 - 15361]


def test_ragged_last_group_uses_c_floordiv_group_size():
    packed = R.pack(np.ones((1, 10), dtype=np.int8))
    scales = np.array([[1.0, 2.0, 3.0]])  # group_size 4: columns 0-3, 4-7, 8-9
    assert R.dequantize_exact(packed, scales, None, 4).tolist() == [[1.0] * 4 + [2.0] * 4 + [3.0] * 2]


@pytest.mark.parametrize("scales, group_size, message", [
    (np.ones((2, 2)), None, "group_size must be a positive int for grouped scales"),
    (np.ones((2, 2)), 0, "group_size must be a positive int"),
    (np.ones((2, 2)), 3, r"scales has 2 groups but ceil\(in_features / group_size\)"),
    (np.ones((3,)), None, r"scales must have 1 element, shape \[2\]"),
])
def test_bad_granularity_is_a_value_error_naming_the_argument(scales, group_size, message):
    with pytest.raises(ValueError, match=message):
        R.dequantize(R.pack(np.zeros((2, 8), dtype=np.int8)), scales, None, group_size)


@given(st.sampled_from(["per-tensor", "per-channel", "grouped"]), st.booleans(), st.integers(0, 2**32 - 1))
def test_quantize_then_dequantize_is_within_half_a_step(granularity, symmetric, seed):
    w = np.random.default_rng(seed).standard_normal((5, 22))
    packed, scales, zero_points = R.quantize(w, granularity, group_size=8, symmetric=symmetric)
    step = R.expand(scales, 5, 22, 8, "scales")
    assert np.all(np.abs(R.dequantize_exact(packed, scales, zero_points, 8) - w) <= step / 2 * (1 + 1e-12))


def test_index_minus_one_adds_no_adapter_and_other_indices_do():
    rng = np.random.default_rng(0)
    packed, scales, _ = R.quantize(rng.standard_normal((3, 4)), "per-channel")
    x, a, b = rng.standard_normal((2, 4)), rng.standard_normal((2, 1, 4)), rng.standard_normal((2, 3, 1))
    base = R.linear_exact(x, packed, scales, None, None, None, None, np.array([-1, -1]), 1.0, None)
    y = R.linear_exact(x, packed, scales, None, None, a, b, np.array([-1, 1]), 0.5, None)
    assert np.array_equal(y[0], base[0])
    assert np.allclose(y[1], base[1] + 0.5 * b[1] @ (a[1] @ x[1]))


@pytest.mark.parametrize("indices", [[-2, 0], [0, 2]])
def test_out_of_range_lora_index_is_an_error_not_a_wrap(indices):
    rng = np.random.default_rng(0)
    packed, scales, _ = R.quantize(rng.standard_normal((3, 4)), "per-channel")
    with pytest.raises(ValueError, match="lora_indices must lie in"):
        R.linear_exact(rng.standard_normal((2, 4)), packed, scales, None, None, np.zeros((2, 1, 4)),
                       np.zeros((2, 3, 1)), np.array(indices), 1.0, None)
