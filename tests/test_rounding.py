"""reference.rounding: the fast round_to (and rounded, its float64 twin), spacing, ordinal and is_representable equal their definitions bit for bit.

`round_by_scaling` and `spacing_by_frexp` are the readable definitions (scale, rint, scale
back); these tests hold the cast and bit-level versions to them on every binade of each format,
its ties and their float64 neighbours, subnormals, zeros, infinities, NaN, the overflow
threshold and large random arrays.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from int4_lora_harness.reference import rounding as R

DTYPES = ["fp16", "bf16", "fp32"]
BITS = {np.dtype(np.float16): np.uint16, np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}


def assert_same_bits(got, expected):
    """Equal bit patterns (NaN: both NaN, any payload), same dtype and shape; the message names the first mismatch."""
    assert got.dtype == expected.dtype and got.shape == expected.shape, (got.dtype, got.shape, expected.shape)
    got_bits, expected_bits = got.view(BITS[got.dtype]), expected.view(BITS[expected.dtype])
    same = (got_bits == expected_bits) | (np.isnan(got) & np.isnan(expected))
    if not same.all():
        i = np.unravel_index(int(np.argmin(same)), same.shape)
        raise AssertionError(f"{int(same.size - same.sum())} mismatches; first at {i}: got {got[i]!r} "
                             f"(0x{int(got_bits[i]):x}), expected {expected[i]!r} (0x{int(expected_bits[i]):x})")


def assert_rounds_like_the_definition(values, dtype):
    """round_to and rounded (its float64 twin) both give round_by_scaling's values, bit for bit."""
    with np.errstate(over="ignore", invalid="ignore"):
        expected = R.round_by_scaling(values, dtype)
    assert_same_bits(R.round_to(values, dtype), expected)
    assert_same_bits(R.rounded(values, dtype), expected.astype(np.float64))


def binade_probes(dtype, per_binade=None, seed=0):
    """float64 probes of every binade of `dtype`, from below the smallest subnormal to past overflow.

    In each binade [2**e, 2**(e+1)) with quantum q (the subnormal spacing below the normal
    range): grid points k q, ties (k + 1/2) q and the float64 neighbours of each tie, both signs.
    per_binade None: every k of the binade; else that many k, the ends included.
    """
    fmt = R.float_format(dtype)
    rng = np.random.default_rng(seed)
    max_exponent = int(np.floor(np.log2(fmt.max_finite)))
    smallest_subnormal = fmt.min_exponent - fmt.precision + 1
    probes = []
    for e in range(smallest_subnormal - 3, max_exponent + 3):
        q = 2.0 ** (max(e, fmt.min_exponent) - fmt.precision + 1)
        first, last = int(2.0 ** e / q), int(2.0 ** (e + 1) / q)  # k of the binade: [first, last)
        if first == 0:  # below the smallest subnormal: q exceeds the binade
            k = np.array([0])
        elif per_binade is None or last - first <= per_binade:
            k = np.arange(first, last)
        else:
            k = np.concatenate([np.arange(first, first + 4), np.arange(last - 4, last),
                                rng.integers(first, last, per_binade - 8)])
        points = k * q
        ties = (k + 0.5) * q  # exact in float64: at most 25 significant bits
        probes += [points, ties, np.nextafter(ties, -np.inf), np.nextafter(ties, np.inf), 2.0 ** e * np.ones(1)]
    probes = np.concatenate(probes)
    return np.concatenate([probes, -probes])


@pytest.mark.parametrize("dtype, per_binade", [("fp16", None), ("bf16", None), ("fp32", 4096)])
def test_round_to_equals_round_by_scaling_on_every_binade_tie_and_tie_neighbour(dtype, per_binade):
    assert_rounds_like_the_definition(binade_probes(dtype, per_binade), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_overflow_threshold_rounds_to_inf_and_just_below_it_to_max_finite(dtype):
    fmt = R.float_format(dtype)
    threshold = fmt.max_finite + 0.5 * float(R.spacing(fmt.max_finite, dtype))  # a tie: the even side is inf
    values = np.array([threshold, np.nextafter(threshold, 0), np.nextafter(threshold, np.inf), fmt.max_finite])
    values = np.concatenate([values, -values])
    with np.errstate(over="ignore"):
        got = R.round_to(values, dtype).astype(np.float64)
    m = fmt.max_finite
    assert got.tolist() == [np.inf, m, np.inf, m, -np.inf, -m, -np.inf, -m]
    assert_rounds_like_the_definition(values, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_zeros_infinities_and_nan_keep_their_sign_and_kind(dtype):
    values = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e308, -1e308, 5e-324, -5e-324])
    got = R.round_to(values, dtype)
    assert np.signbit(got).tolist() == [False, True, False, True, False, True, False, True, False, True]
    assert got[:4].tolist() == [0.0, 0.0, np.inf, -np.inf] and np.isnan(got[4:6]).all()
    assert got[6:8].tolist() == [np.inf, -np.inf] and got[8:].tolist() == [0.0, 0.0]
    assert_rounds_like_the_definition(values, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_subnormals_round_on_the_fixed_subnormal_grid(dtype):
    fmt = R.float_format(dtype)
    q = 2.0 ** (fmt.min_exponent - fmt.precision + 1)  # the smallest subnormal
    values = np.array([0.5 * q, np.nextafter(0.5 * q, 1), 1.5 * q, 2.5 * q, np.nextafter(2.5 * q, 0), 0.25 * q])
    got = R.round_to(values, dtype).astype(np.float64) / q
    assert got.tolist() == [0.0, 1.0, 2.0, 2.0, 2.0, 0.0]  # ties to even; just above half goes up


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_to_equals_round_by_scaling_on_random_float64_bit_patterns(dtype):
    # Every float64 is equally likely as a bit pattern: NaNs, float64 subnormals and huge values included.
    bits = np.random.default_rng(1).integers(0, 2**64, size=300_000, dtype=np.uint64, endpoint=False)
    assert_rounds_like_the_definition(bits.view(np.float64), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_to_equals_round_by_scaling_on_a_large_array_in_the_formats_range(dtype):
    fmt = R.float_format(dtype)
    rng = np.random.default_rng(2)
    exponents = rng.integers(fmt.min_exponent - fmt.precision - 2, int(np.log2(fmt.max_finite)) + 2, size=(512, 2048))
    values = rng.choice([-1.0, 1.0], size=exponents.shape) * rng.uniform(1, 2, size=exponents.shape) * 2.0 ** exponents
    values[::7, ::5] = 0.0  # zeros inside blocks, which take the bf16 subnormal path
    assert values.size > 4 * R.BLOCK  # several blocks of the bit-level paths
    assert_rounds_like_the_definition(values, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@given(values=hnp.arrays(np.float64, st.integers(0, 40), elements=st.floats(width=64)))
def test_round_to_equals_round_by_scaling_on_any_float64(dtype, values):
    assert_rounds_like_the_definition(values, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_to_keeps_the_shape_and_returns_the_storage_dtype(dtype):
    storage = R.float_format(dtype).storage
    grid = np.arange(24, dtype=np.float64).reshape(2, 3, 4) / 3
    assert R.round_to(grid, dtype).shape == (2, 3, 4) and R.round_to(grid, dtype).dtype == storage
    assert R.round_to(1.0 / 3, dtype).shape == () and R.round_to(np.zeros((0, 5)), dtype).shape == (0, 5)
    assert R.rounded(grid, dtype).shape == (2, 3, 4) and R.rounded(grid, dtype).dtype == np.float64
    assert R.rounded(1.0 / 3, dtype).shape == () and R.rounded(np.zeros((0, 5)), dtype).shape == (0, 5)
    assert_rounds_like_the_definition(grid.T, dtype)  # a non-contiguous view
    assert_rounds_like_the_definition(1.0 / 3, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_spacing_equals_spacing_by_frexp_on_finite_values_and_is_nan_elsewhere(dtype):
    probes = binade_probes(dtype, per_binade=64)
    bits = np.random.default_rng(3).integers(0, 2**64, size=100_000, dtype=np.uint64).view(np.float64)
    values = np.concatenate([probes, bits[np.isfinite(bits)], [0.0, -0.0, 5e-324, 1e308]])
    assert np.array_equal(R.spacing(values, dtype), R.spacing_by_frexp(values, dtype))
    assert np.isnan(R.spacing(np.array([np.inf, -np.inf, np.nan]), dtype)).all()
    assert float(R.spacing(1.0, dtype)) == 2.0 ** (1 - R.float_format(dtype).precision)


def all_numbers(dtype):
    """Every non-NaN number of fp16 or bf16 (from all 2**16 bit patterns), as float64, in increasing order."""
    patterns = np.arange(2**16, dtype=np.uint32)
    narrow = patterns.astype(np.uint16).view(np.float16) if dtype == "fp16" else (patterns << 16).view(np.float32)
    numbers = narrow[~np.isnan(narrow)].astype(np.float64)
    return np.unique(numbers)  # sorted; -0 and +0 merge into one


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_ordinal_numbers_every_value_of_the_format_consecutively(dtype):
    values = all_numbers(dtype)  # -inf ... -min, 0, min ... inf
    ordinals = R.ordinal(values, dtype)
    assert np.array_equal(ordinals, np.arange(len(values)) - len(values) // 2)
    assert R.ordinal(np.array([-0.0]), dtype).tolist() == [0]


def test_ordinal_of_fp32_counts_ulps_across_zero_subnormals_and_binade_edges():
    tiny = 2.0**-149
    values = np.array([-np.inf, -tiny, -0.0, 0.0, tiny, 2 * tiny, 2.0**-126, 1.0, np.nextafter(np.float32(1), 2),
                       float(np.finfo(np.float32).max), np.inf])
    assert R.ordinal(values, "fp32").tolist() == [-0x7F800000, -1, 0, 0, 1, 2, 0x800000, 0x3F800000, 0x3F800001,
                                                  0x7F7FFFFF, 0x7F800000]


@pytest.mark.parametrize("dtype", DTYPES)
def test_ordinal_refuses_nan_even_past_the_first_block(dtype):
    values = np.zeros(R.BLOCK + 3)
    values[-1] = np.nan
    with pytest.raises(ValueError, match="ordinal of NaN is undefined"):
        R.ordinal(values, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_is_representable_holds_for_grid_points_and_fails_for_ties_and_their_neighbours(dtype):
    fmt = R.float_format(dtype)
    q = 2.0 ** (1 - fmt.precision)  # the quantum of [1, 2)
    values = np.array([1.0, 1 + q, 2 - q, np.inf, -np.inf, 0.0, -0.0, 2.0 ** (fmt.min_exponent - fmt.precision + 1),
                       1 + q / 2, np.nextafter(1 + q / 2, 2), np.nextafter(1.0, 2), fmt.max_finite * 2, np.nan])
    assert R.is_representable(values, dtype).tolist() == [True] * 8 + [False] * 5
    probes = binade_probes(dtype, per_binade=64)
    with np.errstate(over="ignore"):
        expected = R.round_by_scaling(probes, dtype).astype(np.float64) == probes
    assert np.array_equal(R.is_representable(probes, dtype), expected)
