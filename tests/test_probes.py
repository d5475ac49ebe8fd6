"""The probes have teeth where random data has none: every defect that only production shapes reach is an exact
mismatch on a probe at K = 4096 (a slice of a real layer's rows), and every correct design is bit-exact there."""
from dataclasses import replace

import numpy as np
import pytest

from int4_lora_harness.verify.cases import make_weights
from int4_lora_harness.verify.probes import columns_probe, exact_probe, lora_probe
from int4_lora_harness.verify.properties import failures, properties_in_process
from planted.bugs import CORRECT_LINEARS
from planted.large import LARGE_SHAPE_BUGS
from planted.unfused import UNFUSED_LINEARS

OUT, K = 192, 4096  # 192 rows of a 4096-column layer: the K of the large tier, a fraction of its cost


def probes(dtype):
    weights = make_weights(np.random.default_rng(0), OUT, K, 128, "grouped", "grouped", "fp32", dtype,
                           scale_exponent=-3.0)
    return {"exact": exact_probe(1, OUT, K, dtype, 128, "grouped", "grouped", "int8"),
            "columns": columns_probe(weights, dtype), "lora": lora_probe(2, OUT, K, dtype)}


def failed_properties(candidate, case):
    return [o.name for o in failures(properties_in_process(candidate, case))]


@pytest.mark.parametrize("name, probe", [("fp16_partial_sums_past_4096", "exact"),
                                         ("seed_dequantization_past_4096", "columns"),
                                         ("bf16_lora_intermediate_past_4096", "lora"),
                                         ("last_column_dropped_past_4096", "columns"),
                                         ("lora_index_of_the_previous_tile_past_64", "lora")])
def test_each_large_shape_defect_is_an_exact_mismatch_on_its_probe(name, probe):
    assert "within tolerance" in failed_properties(LARGE_SHAPE_BUGS[name], probes("fp16")[probe])


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("name", sorted(CORRECT_LINEARS) + sorted(UNFUSED_LINEARS))
def test_every_correct_design_is_bit_exact_on_every_probe(name, dtype):
    candidate = {**CORRECT_LINEARS, **UNFUSED_LINEARS}[name]
    for probe, case in probes(dtype).items():
        assert failed_properties(candidate, case) == [], probe


def test_the_exact_probe_has_partial_sums_past_fp16_and_an_answer_within_its_resolution():
    case = exact_probe(1, OUT, K, "fp16", 128, "grouped", None, "int8")
    from int4_lora_harness.reference.dequantize import dequantize_exact
    w = dequantize_exact(case.weights.packed, case.weights.scales, None, 128)
    runs = (case.x[:, None, :64] * w[None, :, :64]).sum(axis=2)  # the first 64-column partial sums
    y = case.x @ w.T
    assert np.median(np.abs(runs)) > 2048 and np.all(runs == np.rint(runs))  # odd ones are no fp16 number
    assert np.abs(y).max() < 2 ** 14  # fp16 resolves the error of a few roundings there (spacing <= 8)
    assert np.abs(case.x).sum(axis=1).max() * np.abs(w).max() < 2 ** 24  # any fp32 partial sum is exact
