"""`int4-harness bench`: a user's kernel timed beside the baselines on the same cases, refused when it is wrong."""
from int4_lora_harness.__main__ import main
from int4_lora_harness.bench import store


def test_bench_writes_rows_for_the_target_and_the_baselines_on_the_same_cases(tmp_path, capsys):
    target = "int4_lora_harness.kernels.torch_path:linear"
    assert main(["bench", "--linear", target, "--grid", "smoke", "--bench-dir", str(tmp_path), "--quiet"]) == 0
    rows = store.load_runs(tmp_path)
    assert {"dense", "materialize", "torch", target} <= set(rows["backend"])
    mine = rows[rows["backend"] == target]
    assert set(mine["operation"]) == {"gemm", "gemm_lora"} and (mine["median_s"] > 0).all()
    for operation in ("gemm", "gemm_lora"):  # the same case (layer, M, adapters) for every backend
        cases = rows[rows["operation"] == operation][["layer", "m", "rank", "num_loras"]].drop_duplicates()
        assert len(cases) == 1
    assert (mine["verification"].str.startswith("passed")).all()


def test_bench_refuses_to_time_a_kernel_that_fails_its_check(tmp_path, capsys):
    code = main(["bench", "--dequantizer", "planted.bugs:missing_offset", "--grid", "smoke", "--bench-dir",
                 str(tmp_path), "--quiet", "--no-project-backends"])
    out = capsys.readouterr().out
    assert code == 1 and "REFUSED" in out and "within tolerance" in out
    rows = store.load_runs(tmp_path)
    assert "planted.bugs:missing_offset" not in set(rows["backend"])


def test_bench_with_a_bad_target_is_a_usage_error(tmp_path, capsys):
    assert main(["bench", "--linear", "no_such.module:fn", "--bench-dir", str(tmp_path)]) == 2
    assert "cannot import no_such.module" in capsys.readouterr().err
