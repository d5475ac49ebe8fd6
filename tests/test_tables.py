"""verify.tables: a block's weights read from per-group tables are bit for bit the weights the judge computes
one by one (reference.dequantize_exact, then rounded to x's dtype), for every granularity, zero point kind,
ragged groups and scale magnitudes from subnormal to overflow."""
from unittest import mock

import numpy as np
import pytest

from fresh_interpreter import failing_compiler, run_fresh
from int4_lora_harness import cbuild
from int4_lora_harness.reference.dequantize import dequantize_exact
from int4_lora_harness.reference.granularity import weights_width
from int4_lora_harness.reference.rounding import rounded
from int4_lora_harness.verify import tables
from int4_lora_harness.verify.cases import make_weights

GRANULARITIES = [("grouped", None), ("grouped", "grouped"), ("per-channel", "grouped"), ("grouped", "per-channel"),
                 ("per-tensor", "grouped"), ("per-channel", None), ("per-tensor", "per-tensor")]


def assert_same(got, expected):
    """Equal values, and equal bits where not NaN (so -0 is not 0), NaN where NaN."""
    nan = np.isnan(expected)
    assert np.array_equal(np.isnan(got), nan)
    assert np.array_equal(got[~nan].view(np.uint64 if got.dtype == np.float64 else np.uint32),
                          expected[~nan].view(np.uint64 if expected.dtype == np.float64 else np.uint32))


@pytest.mark.parametrize("x_dtype", ["fp16", "bf16", "fp32"])
@pytest.mark.parametrize("zero_kind", ["int8", "float", "fp32"])
@pytest.mark.parametrize("granularity", GRANULARITIES, ids=lambda g: f"{g[0]}-{g[1]}")
def test_table_lookups_equal_the_weight_by_weight_values(granularity, zero_kind, x_dtype):
    rng = np.random.default_rng(3)
    for group_size, in_features, exponent in ((16, 64, -4.0), (17, 70, -20.0), (128, 300, 10.0), (32, 32, -30.0)):
        w = make_weights(rng, 7, in_features, group_size, *granularity, zero_kind, "fp16" if exponent > -20 else
                         "fp32", exponent)
        assert weights_width(w.scales, w.zero_points, *w.shape, w.group_size) >= tables.TABLE_MIN_WIDTH
        exact = dequantize_exact(w.packed, w.scales, w.zero_points, w.group_size)
        with np.errstate(over="ignore", invalid="ignore"):
            got, got_exact, *_ = tables.block_weights(w.packed, w.scales, w.zero_points, w.group_size, x_dtype,
                                                     need_exact=True)
            assert_same(got, rounded(exact, x_dtype))
        assert_same(got_exact, exact)
        assert tables.block_weights(w.packed, w.scales, w.zero_points, w.group_size, x_dtype, need_exact=False).exact \
            is None


@pytest.mark.parametrize("weights_kind", ["x", "fp32"])
@pytest.mark.parametrize("zero_kind", ["int8", "float", "fp32"])
@pytest.mark.parametrize("granularity", GRANULARITIES, ids=lambda g: f"{g[0]}-{g[1]}")
def test_term_3_read_from_the_tables_equals_its_weight_by_weight_values(granularity, zero_kind, weights_kind):
    from dataclasses import replace
    from functools import partial

    from int4_lora_harness.verify.tolerance import weight_slack
    rng = np.random.default_rng(7)
    for group_size, in_features, exponent in ((16, 64, -4.0), (17, 70, -20.0), (128, 300, 10.0)):
        w = make_weights(rng, 7, in_features, group_size, *granularity, zero_kind, "fp32", exponent)
        midpoint = np.float32(1 + 2.0 ** -11)  # (v - z) s of fp16's midpoints for v - z = +-1, +-2, +-4: flips
        w = replace(w, scales=np.where(np.arange(w.scales.size).reshape(w.scales.shape) % 2, w.scales, midpoint))
        term = partial(weight_slack, weights_kind, "fp16")
        exact = dequantize_exact(w.packed, w.scales, w.zero_points, w.group_size)
        with np.errstate(over="ignore", invalid="ignore"):
            expected = term(w.packed, w.scales, w.zero_points, w.group_size, exact)
            got = tables.block_weights(w.packed, w.scales, w.zero_points, w.group_size, "fp16", need_exact=False,
                                       per_weight=term).per_weight
        assert_same(got, expected)
        if weights_kind == "x" and (w.zero_points is None or zero_kind == "int8"):
            assert 0 < np.count_nonzero(expected) < expected.size  # some weights flip, not all


def test_narrow_groups_are_computed_weight_by_weight_and_give_the_same_values():
    w = make_weights(np.random.default_rng(4), 5, 40, 4, "grouped", "grouped", "float")
    assert weights_width(w.scales, w.zero_points, *w.shape, w.group_size) < tables.TABLE_MIN_WIDTH
    with mock.patch.object(tables, "lookup", side_effect=AssertionError("no table for 4-column groups")):
        got, exact, *_ = tables.block_weights(w.packed, w.scales, w.zero_points, 4, "fp16", need_exact=False)
    assert exact is None
    assert_same(got, rounded(dequantize_exact(w.packed, w.scales, w.zero_points, 4), "fp16"))


def test_the_table_holds_the_reference_weight_of_every_nibble_of_every_group():
    w = make_weights(np.random.default_rng(5), 3, 48, 16, "grouped", "grouped", "fp32")
    table = tables.nibble_table(w.packed, w.scales, w.zero_points, 16, 16)  # [3, 3, 16]
    v = np.arange(-8, 8)
    assert_same(table, (v - w.zero_points.astype(np.float64)[:, :, None]) * w.scales.astype(np.float64)[:, :, None])


def numpy_lookup(table, packed, width, need_abs):
    """tables.lookup with the C gather switched off (NumPy's index-and-take)."""
    with mock.patch.object(tables, "library", return_value=cbuild.Missing("turned off by the test")):
        return tables.lookup(table, packed, width, need_abs)


needs_gather = pytest.mark.skipif(isinstance(tables.library(), cbuild.Missing),
                                  reason=f"the judge's C gather is not built here: {getattr(tables.library(), 'why', '')}")


@needs_gather
@pytest.mark.parametrize("width", [16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 300])
def test_the_c_gather_reads_every_weight_as_numpy_does_at_every_group_width(width):
    rng = np.random.default_rng(width)
    for rows, in_features in ((1, 2), (3, width), (5, 2 * width + 2), (4, 3 * width - 1 + (3 * width - 1) % 2)):
        groups = -(-in_features // width)
        table = rng.standard_normal((rows, groups, 16)) * np.exp2(rng.integers(-160, 140, size=(rows, groups, 16)))
        table.flat[rng.choice(table.size, size=min(table.size, 9), replace=False)] = [np.nan, np.inf, -np.inf, -0.0,
                                                                                       0.0, 1e300, -1e300, 5e-324,
                                                                                       -5e-324][:min(table.size, 9)]
        packed = rng.integers(0, 256, size=(rows, in_features // 2), dtype=np.uint8)
        got, got_abs = tables.lookup(table, packed, width, need_abs=True)
        expected, expected_abs = numpy_lookup(table, packed, width, need_abs=True)
        assert_same(got, expected)
        assert_same(got_abs, expected_abs)
        with np.errstate(over="ignore"):
            assert_same(expected_abs, np.abs(expected).astype(np.float32))  # |w| to nearest float32, inf past its range


def test_numpy_reads_the_table_entry_of_each_weights_own_group_and_nibble():
    table = np.arange(2 * 3 * 16, dtype=np.float64).reshape(2, 3, 16)  # entry = its own flat position
    packed = np.array([[0x10, 0xF2, 0x87], [0x01, 0x23, 0x45]], np.uint8)  # [2, 3]: 6 columns, groups of 2
    w, _ = numpy_lookup(table, packed, 2, need_abs=False)
    nibbles = [[0, 1, 2, 15, 7, 8], [1, 0, 3, 2, 5, 4]]
    assert w.tolist() == [[16 * (r * 3 + c // 2) + q for c, q in enumerate(row)] for r, row in enumerate(nibbles)]


@needs_gather
def test_blocks_of_one_case_reuse_their_scratch_and_still_give_each_blocks_own_values():
    rng = np.random.default_rng(6)
    w = make_weights(rng, 9, 256, 32, "grouped", "grouped", "float")
    space, seen = {}, []
    for rows in (slice(0, 4), slice(4, 8), slice(8, 9)):  # the last block is shorter: a view of the same memory
        got = tables.block_weights(w.packed[rows], w.scales[rows], w.zero_points[rows], 32, "bf16", need_exact=True,
                                   need_abs=True, space=space)
        exact = dequantize_exact(w.packed[rows], w.scales[rows], w.zero_points[rows], 32)
        assert_same(got.exact, exact)
        assert_same(got.w, rounded(exact, "bf16"))
        assert_same(got.w_abs, np.abs(rounded(exact, "bf16")).astype(np.float32))
        seen.append(got.w.base if got.w.base is not None else got.w)
    assert seen[0] is seen[1] is seen[2]  # one allocation for the three blocks
    assert tables.scratch(None, "w", (2, 3), np.float64) is not tables.scratch(None, "w", (2, 3), np.float64)


JUDGE_PROBE = ("import warnings; warnings.simplefilter('always');"
               "from int4_lora_harness import cbuild; from int4_lora_harness.verify import tables;"
               "lib = tables.library(); print('missing:', getattr(lib, 'why', None))")


def judge_probe(tmp_path, **env):
    return run_fresh(JUDGE_PROBE, tmp_path, **env)


@needs_gather
def test_the_judges_gather_builds_into_the_cache_apart_from_the_kernels_library(tmp_path):
    out, err = judge_probe(tmp_path)
    assert "missing: None" in out and "RuntimeWarning" not in err
    assert [p.name.split("-")[0] for p in tmp_path.glob("*.so")] == ["gather"]  # no kernel was built or loaded


def test_a_failing_compiler_warns_and_numpy_reads_the_tables(tmp_path):
    out, err = judge_probe(tmp_path, CC=str(failing_compiler(tmp_path, "cc: error: not today")))
    assert "cc: error: not today" in out
    assert "RuntimeWarning" in err and "the judge's C table gather is not available" in err


def test_int4_lora_harness_judge_native_0_turns_the_gather_off_without_a_warning(tmp_path):
    out, err = judge_probe(tmp_path, INT4_LORA_HARNESS_JUDGE_NATIVE="0")
    assert "missing: INT4_LORA_HARNESS_JUDGE_NATIVE=0" in out and "RuntimeWarning" not in err
    assert not list(tmp_path.glob("*.so"))
