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


def test_a_lora_overhead_from_load_noise_is_flagged_by_the_fastest_calls():
    rows = pd.DataFrame(synthetic_rows(RUN_A))
    lora = rows.index[(rows["operation"] == "gemm_lora") & (rows["backend"] == "torch")][0]
    rows.loc[lora, "median_s"] = TORCH_S * 24.06  # +2306 %: other jobs' load, while the fastest call did not move
    rows.loc[lora, "min_s"] = TORCH_S * 0.99 * 1.02
    overheads = performance.lora_overhead(rows).set_index("test_id")
    hit = overheads.loc[rows.loc[lora, "test_id"]]
    assert np.isclose(hit["overhead"], 23.06) and hit["noise"]
    assert hit["noise_why"] == "the fastest calls show +2.0%, the medians +2306.0% (spread ±1.0%)"
    assert not overheads.drop(index=rows.loc[lora, "test_id"])["noise"].any()  # the real +25 % stay results


def test_a_lora_overhead_timed_in_fewer_than_six_rounds_is_noise():
    rows = pd.DataFrame(synthetic_rows(RUN_A))
    rows.loc[rows["operation"] == "gemm_lora", "rounds"] = 3
    overheads = performance.lora_overhead(rows)
    assert overheads["noise"].all() and set(overheads["noise_why"]) == {"3 rounds: too few to place the median"}


def test_a_speedup_within_the_timings_spread_is_flagged_as_noise():
    rows = pd.DataFrame(synthetic_rows(RUN_A))
    torch_rows, lora = rows["backend"] == "torch", rows["operation"] == "gemm_lora"
    for is_lora, factor in ((False, 1.0), (True, LORA_FACTOR)):  # 3 % faster than dense on each case ...
        pick = torch_rows & (lora == is_lora)
        rows.loc[pick, ["median_s", "min_s"]] = [DENSE_S * factor / 1.03, DENSE_S * factor * 0.99 / 1.03]
    rows.loc[torch_rows, "iqr_s"] = rows.loc[torch_rows, "median_s"] * 0.05  # ... within a 5 % IQR
    speedups = performance.speedup_vs_dense(rows)
    assert np.allclose(speedups["speedup"], 1.03) and speedups["noise"].all()
    assert speedups["noise_why"].str.contains("within the timings' spread").all()


def target_run(run_id, target, day):
    """A benchmark run as `int4-harness bench --linear TARGET` writes it: the TARGET's rows (its backend column is
    the TARGET as given) beside the dense baseline."""
    rows = synthetic_rows(run_id, day=day)
    return pd.DataFrame([{**r, "backend": target} if r["backend"] == "torch" else r for r in rows]).assign(file="f")


def test_runs_of_two_different_kernels_are_never_compared_as_two_versions_of_one():
    bench = pd.concat([target_run("tiny1", "tinygemm.py:linear", 1), target_run("ort1", "ort.py:linear", 2)],
                      ignore_index=True)
    assert comparison.pick_runs(bench) is None
    again = pd.concat([bench, target_run("tiny2", "./tinygemm.py:linear", 3)], ignore_index=True)
    assert comparison.pick_runs(again) == ("tiny1", "tiny2")  # './tinygemm.py:linear' is the same TARGET


def test_compare_names_two_kernels_by_target_and_matches_their_rows():
    bench = pd.concat([target_run("tiny1", "tinygemm.py:linear", 1), target_run("ort1", "ort.py:linear", 2)],
                      ignore_index=True)
    assert comparison.pick_runs(bench, "tinygemm.py:linear", "ort1") == ("tiny1", "ort1")
    section_, notes = comparison.compare_section(bench, "tinygemm.py:linear", "ort.py:linear", 0.1, 100)
    assert notes == [] and section_["different"] and section_["matched"] == "tinygemm.py:linear → ort.py:linear"
    assert section_["targets"] == {"tiny1": "tinygemm.py:linear", "ort1": "ort.py:linear"}
    assert section_["cases"] == 18 and section_["only"] == {"tiny1": 0, "ort1": 0}  # the TARGETs' rows met too
    with pytest.raises(performance.UnknownRun, match="the TARGETs timed: ort.py:linear, tinygemm.py:linear"):
        comparison.pick_runs(bench, "tinygemm.py:linear", "marlin.py:linear")
