"""verify.tables: a block's weights read from per-group tables are bit for bit the weights the judge computes
one by one (reference.dequantize_exact, then rounded to x's dtype), for every granularity, zero point kind,
ragged groups and scale magnitudes from subnormal to overflow."""
from unittest import mock

import numpy as np
import pytest

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
            got, got_exact = tables.block_weights(w.packed, w.scales, w.zero_points, w.group_size, x_dtype,
                                                  need_exact=True)
            assert_same(got, rounded(exact, x_dtype))
        assert_same(got_exact, exact)
        assert tables.block_weights(w.packed, w.scales, w.zero_points, w.group_size, x_dtype, need_exact=False)[1] is None


def test_narrow_groups_are_computed_weight_by_weight_and_give_the_same_values():
    w = make_weights(np.random.default_rng(4), 5, 40, 4, "grouped", "grouped", "float")
    assert weights_width(w.scales, w.zero_points, *w.shape, w.group_size) < tables.TABLE_MIN_WIDTH
    with mock.patch.object(tables, "lookup", side_effect=AssertionError("no table for 4-column groups")):
        got, exact = tables.block_weights(w.packed, w.scales, w.zero_points, 4, "fp16", need_exact=False)
    assert exact is None
    assert_same(got, rounded(dequantize_exact(w.packed, w.scales, w.zero_points, 4), "fp16"))


def test_the_table_holds_the_reference_weight_of_every_nibble_of_every_group():
    w = make_weights(np.random.default_rng(5), 3, 48, 16, "grouped", "grouped", "fp32")
    table = tables.nibble_table(w.packed, w.scales, w.zero_points, 16, 16)  # [3, 3, 16]
    v = np.arange(-8, 8)
    assert_same(table, (v - w.zero_points.astype(np.float64)[:, :, None]) * w.scales.astype(np.float64)[:, :, None])
