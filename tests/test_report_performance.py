"""The report's benchmark tables, from rows whose numbers are chosen so the results are known exactly:
speedup over dense, LoRA overhead (and its noise flag), the headline axes, which runs are compared, the
colour of each backend, and the memory section's byte counts (from shapes)."""
import numpy as np
import pandas as pd
import pytest
from test_report import DENSE_S, LORA_FACTOR, RUN_A, TORCH_S, synthetic_rows

from int4_lora_harness.report import comparison, memory, performance
from int4_lora_harness.report.charts import backend_colour


def test_layer_bytes_count_nibbles_and_one_fp16_scale_per_group_of_128():
    assert memory.layer_bytes(4096, 4096) == (4096 * 2048 + 4096 * 32 * 2, 4096 * 4096 * 2)
    assert memory.layer_bytes(4672, 4544)[0] == 4672 * 2272 + 4672 * 36 * 2  # 35.5 groups: the last is ragged


def test_memory_per_model_sums_every_linear_layer_of_every_block():
    models = memory.memory_per_model().set_index("model")
    per_block = 2 * 4096 * 4096 + 2 * 1024 * 4096 + 3 * 14336 * 4096
    packed = 32 * (per_block // 2 + per_block // 128 * 2)
    assert models.loc["llama3-8b", "fp16_bytes"] == 32 * 2 * per_block
    assert models.loc["llama3-8b", "packed_bytes"] == packed
    assert models.loc["llama3-8b", "materialized_cached"] == packed + 32 * 2 * per_block


def test_speedup_is_the_dense_median_over_the_backend_median_on_the_same_case():
    speedups = performance.speedup_vs_dense(pd.DataFrame(synthetic_rows(RUN_A)))
    assert set(speedups["backend"]) == {"torch"} and set(speedups["operation"]) == {"gemm", "gemm_lora"}
    assert len(speedups) == 8 and np.allclose(speedups["speedup"], DENSE_S / TORCH_S)


def test_lora_overhead_compares_gemm_lora_with_the_same_backends_gemm():
    overheads = performance.lora_overhead(pd.DataFrame(synthetic_rows(RUN_A)))
    assert len(overheads) == 8 and np.allclose(overheads["overhead"], LORA_FACTOR - 1)
    assert not overheads["noise"].any()


def test_a_negative_lora_overhead_is_flagged_as_noise_not_shown_as_a_result():
    rows = pd.DataFrame(synthetic_rows(RUN_A))
    lora = rows["operation"] == "gemm_lora"
    rows.loc[lora, "median_s"] = rows.loc[lora, "median_s"] * 0.073 / LORA_FACTOR  # gemm_lora 92.7 % "faster"
    overheads = performance.lora_overhead(rows)
    assert np.allclose(overheads["overhead"], -0.927) and overheads["noise"].all()


def test_headline_keeps_the_preferred_values_or_else_the_most_common():
    rows = pd.DataFrame(synthetic_rows(RUN_A))
    rows.loc[rows.index[:3], "dtype"] = "bf16"
    kept, chosen = performance.headline(rows)
    assert chosen["dtype"] == "fp16" and (kept["dtype"] == "fp16").all()
    rows["cache_mode"] = "cold"  # the preferred 'warm' is absent: the most common value is taken
    assert performance.headline(rows)[1]["cache_mode"] == "cold"


def test_pick_runs_takes_the_newest_two_on_one_device():
    bench = pd.DataFrame(synthetic_rows("r1", day=1) + synthetic_rows("r2", day=2) + synthetic_rows("r3", day=3)
                         + synthetic_rows("other", device="Other GPU", day=4)).assign(file="f")
    assert comparison.pick_runs(bench) == ("r2", "r3")
    assert comparison.pick_runs(bench, "r1", "r3") == ("r1", "r3")
    assert comparison.pick_runs(pd.DataFrame(synthetic_rows("r1")).assign(file="f")) is None
    with pytest.raises(ValueError, match="nope"):
        comparison.pick_runs(bench, "r1", "nope")


def test_every_backend_has_one_colour_on_every_chart_and_others_a_fixed_one():
    assert backend_colour("torch") == "#1f77b4" and backend_colour("dense") == "#2ca02c"
    assert backend_colour("my-kernel") == backend_colour("my-kernel") != backend_colour("torch")
