"""`int4-harness bench` for a user's kernel (issue 30): the grid built in the kernel's domain, `--report DIR`, the
closing comparison, the load warning, and two-phase TARGETs timed apply-only."""
import io
import math
import os

import pandas as pd
import pytest

from int4_lora_harness.__main__ import main, parser
from int4_lora_harness.bench import cli as bench_cli
from int4_lora_harness.bench import closing, grids, runner, two_phase
from int4_lora_harness.bench import store as perf_store
from int4_lora_harness.shapes import LAYER_SHAPES
from int4_lora_harness.verify.cli import parse_domain
from planted import two_phase_toy

TINY = (64, 128)  # out, in: the checks run in milliseconds
TOY_LINEAR, TOY_DEQUANTIZER = "planted.two_phase_toy:linear", "planted.two_phase_toy:dequantizer"
TORCH_DEQUANTIZER = "int4_lora_harness.kernels.torch_path:dequantize"


def tiny_grid(mp, **sweep):
    """The grid 'tiny' (the smoke grid's backends, a few rounds) on a layer of TINY shape, for this test."""
    mp.setitem(LAYER_SHAPES, "tiny", TINY)
    mp.setitem(grids.GRIDS, "tiny", dict(grids.GRIDS["smoke"], reference_layers=[], max_time_s=0.01, min_rounds=3,
                                         max_rounds=5, sweeps={"one": dict(layer=["tiny"], m=[4], **sweep)}))


def bench(*argv):
    """(exit status, stdout) of `int4-harness bench ARGV`."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")  # command() reconfigures stdout: a real text stream
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.stdout", out)
        code = main(["bench", *argv])
        out.flush()
    return code, out.buffer.getvalue().decode()


def planned(grid_name, *flags, contract="linear"):
    """bench's (benchmarks, outside) for `grid_name` under the domain flags `flags`."""
    args = parser().parse_args(["bench", f"--{contract}", "x.py:f", *flags])
    return bench_cli.benchmarks(grids.GRIDS[grid_name], parse_domain(args), "x.py:f", contract, True)


def without_options(point):
    return {k: v for k, v in point.items() if k not in ("scales_dtype", "zero_points", "granularity")}


# The grid in the candidate's domain

def test_without_domain_flags_bench_runs_the_whole_grid_on_the_grids_own_cases():
    todo, outside = planned("cpu")
    expected = {(b, op, tuple(p.items())) for b, op, p in grids.benchmarks(grids.GRIDS["cpu"])
                if op in ("gemm", "gemm_lora") and b != "reference"}
    assert outside == {}
    assert {(b, op, tuple(without_options(p).items())) for b, op, p in todo if b != "x.py:f"} == expected
    for _, _, point in todo:
        assert runner.case_options(point) == (point["dtype"], "integer",
                                              "grouped" if point["group_size"] else "per-channel")


def test_a_fp16_only_domain_runs_no_bf16_point_of_a_grid_that_sweeps_bf16():
    todo, outside = planned("cpu", "--dtypes", "fp16")
    assert {p["dtype"] for _, _, p in todo} == {"fp16"}
    assert outside == {"dtype bf16 (--dtypes)": 4}  # gemm and gemm_lora at M = 1 and 16
    assert {p["dtype"] for _, _, p in planned("cpu")[0]} == {"fp16", "bf16"}


def test_a_bf16_only_domain_moves_the_smoke_grids_default_dtype_to_bf16():
    todo, outside = planned("smoke", "--dtypes", "bf16")
    assert outside == {} and todo and {p["dtype"] for _, _, p in todo} == {"bf16"}


def test_group_sizes_and_max_rank_move_defaults_and_leave_out_what_a_sweep_names():
    smoke, _ = planned("smoke", "--group-sizes", "32", "--max-rank", "8")
    assert {p["group_size"] for _, _, p in smoke} == {32}
    assert {p["rank"] for _, op, p in smoke if op == "gemm_lora"} == {8}
    cpu, outside = planned("cpu", "--group-sizes", "32,128", "--max-rank", "8")
    assert outside == {"rank 64 (--max-rank 8)": 2}  # the lora sweep at M = 1 and 16
    assert max(p["rank"] for _, op, p in cpu if op == "gemm_lora") == 8
    assert {p["group_size"] for _, _, p in cpu} == {32, 128, None}  # per-channel stays: it has no group size


def test_per_tensor_fractional_zero_points_and_fp32_scales_make_such_cases():
    todo, outside = planned("smoke", "--granularity", "per-tensor", "--zero-points", "fractional",
                            "--scale-dtypes", "fp32", contract="dequantizer")
    point = todo[0][2]
    assert outside == {} and all(p == point for _, _, p in todo)  # smoke: one dequantize case
    assert point["group_size"] is None and runner.case_options(point) == ("fp32", "fractional", "per-tensor")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(LAYER_SHAPES, point["layer"], TINY)
        weights = runner.make_case(point, "dequantize", 1).weights
    assert weights.scales.shape == (1,) and weights.scales_dtype == "fp32" and weights.zero_points_dtype == "fp32"
    assert grids.case_name("dequantize", point) == "dequantize-llama3-8b.k_proj-per-tensor-fp16-scales-fp32-" \
                                                   "zeros-fractional-warm"


def test_no_zero_points_and_per_channel_scales_make_cases_without_zero_points():
    todo, outside = planned("smoke", "--no-zero-points", "--granularity", "per-channel")
    assert outside == {} and {runner.case_options(p) for _, _, p in todo} == {("fp16", "none", "per-channel")}
    point = todo[0][2]
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(LAYER_SHAPES, point["layer"], TINY)
        case = runner.make_case(point, "gemm", 4)
    assert case.weights.zero_points is None and case.weights.group_size is None
    fields = runner.case_fields(point, case)
    assert (fields["zero_granularity"], fields["zero_points_dtype"], fields["scale_granularity"]) == \
        ("none", "none", "per-channel")


def test_a_domain_no_grid_point_lies_in_is_a_usage_error(capsys):
    code = main(["bench", "--linear", TOY_LINEAR, "--out-multiple-of", "1000", "--bench-dir", "unused"])
    assert code == 2
    assert "usage error: no case of the grid lies inside the domain" in capsys.readouterr().err


def test_bench_with_a_fp16_only_domain_writes_no_bf16_row(tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        tiny_grid(mp, dtype=["fp16", "bf16"])
        code, out = bench("--dequantizer", TORCH_DEQUANTIZER, "--grid", "tiny", "--dtypes", "fp16",
                          "--bench-dir", str(tmp_path), "--quiet", "--no-project-backends")
    rows = perf_store.load_runs(tmp_path)
    assert code == 0 and set(rows["dtype"]) == {"fp16"} and set(rows["backend"]) == {TORCH_DEQUANTIZER, "materialize"}
    assert "1 case(s) of the grid outside the domain, not run: dtype bf16 (--dtypes)" in out
    assert set(rows["domain"]) == {"dtypes=('fp16',)"}


# --report, the closing table, two-phase TARGETs

@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """One `bench --report DIR` of the two-phase toy linear on the tiny grid: (exit status, stdout, DIR)."""
    reports = tmp_path_factory.mktemp("reports")
    with pytest.MonkeyPatch.context() as mp:
        tiny_grid(mp)
        code, out = bench("--linear", TOY_LINEAR, "--grid", "tiny", "--report", str(reports), "--quiet",
                          "--no-project-backends")
    return code, out, reports


def test_report_dir_gets_the_run_where_report_reads_it(toy_run):
    code, out, reports = toy_run
    assert code == 0 and len(list((reports / "bench").glob("*.parquet"))) == 1
    run_id = next((reports / "bench").glob("*.parquet")).stem
    assert main(["report", "--reports", str(reports)]) == 0
    page = (reports / "index.html").read_text()
    assert run_id in page and TOY_LINEAR in page


def test_the_closing_table_compares_the_target_with_each_baseline_per_case(toy_run):
    code, out, _ = toy_run
    table = out[out.index("closing comparison, TARGET planted.two_phase_toy:linear"):].splitlines()
    for case in ("gemm-tiny-m4-g128-fp16-warm", "gemm_lora-tiny-m4-g128-r16x4-uniform-fp16-warm"):
        lines = table[table.index(case) + 1:table.index(case) + 5]
        assert lines[0].split() == ["backend", "median", "ms", "IQR", "ms", "prepare", "ms", "speedup"]
        assert lines[1].split()[:2] == [TOY_LINEAR, "(TARGET)"] and len(lines[1].split()) == 5  # with prepare ms
        for line, backend in zip(lines[2:], ("dense", "materialize")):
            words = line.split()
            assert words[0] == backend and words[3] == "-" and words[4].endswith("x")  # no prepare; a speedup


def test_two_phase_rows_record_prepare_once_and_one_call_rows_record_none(toy_run):
    rows = perf_store.load_runs(toy_run[2] / "bench")
    mine = rows[rows["backend"] == TOY_LINEAR]
    assert len(mine) == 2 and (mine["prepare_s"] > 0).all() and (mine["result_check"] == "ok").all()
    assert rows.loc[rows["backend"] != TOY_LINEAR, "prepare_s"].isna().all()


def test_speedup_is_flagged_noise_when_the_medians_differ_by_less_than_the_larger_iqr():
    mine = dict(median_s=1.0, iqr_s=0.1)
    assert closing._speedup(mine, dict(median_s=1.05, iqr_s=0.02)) == "1.05x noise"
    assert closing._speedup(mine, dict(median_s=2.0, iqr_s=0.02)) == "2.00x"
    assert closing._speedup(mine, dict(median_s=0.5, iqr_s=0.6)) == "0.50x noise"


class WatchingDriver:
    """A timing driver (harness.bench.timing) that calls fn as plain_driver does and counts the toy's prepare and
    apply calls made inside the timed calls."""

    def __init__(self):
        self.calls = self.prepares = self.applies = 0

    def __call__(self, fn, rounds, warmup):
        for _ in range(warmup + rounds):
            before = dict(two_phase_toy.CALLS)
            fn()
            self.calls += 1
            self.prepares += two_phase_toy.CALLS["prepare"] - before.get("prepare", 0)
            self.applies += two_phase_toy.CALLS["apply"] - before.get("apply", 0)


@pytest.mark.parametrize("target, contract, operation, prepares", [
    (TOY_LINEAR, "linear", "gemm_lora", 1),  # x changed in place: apply reads it
    (TOY_DEQUANTIZER, "dequantizer", "dequantize", 2),  # the scales changed in place: prepared again, untimed
])
def test_a_two_phase_target_is_prepared_once_per_case_and_apply_alone_is_timed(target, contract, operation,
                                                                                prepares):
    toy, verdicts, driver = two_phase.resolve(target, contract), {}, WatchingDriver()
    assert isinstance(toy, two_phase.TwoPhase)
    point = {**grids.DEFAULTS, **grids.ABSENT, "layer": "tiny", "m": None if operation == "dequantize" else 3}
    if operation == "gemm_lora":
        point.update(rank=4, num_loras=2, popularity="zipf")
    grid = dict(grids.GRIDS["smoke"], min_rounds=5, max_rounds=5)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(LAYER_SHAPES, "tiny", TINY)
        runner.check("toy", operation, point, "cpu", verdicts, {"toy": toy})  # prepare + apply on every call
        two_phase_toy.CALLS.clear()
        row = runner.measure("toy", operation, point, "cpu", grid, verdicts, targets={"toy": toy}, driver=driver)
    assert driver.calls == 10 and driver.applies == driver.calls and driver.prepares == 0
    assert two_phase_toy.CALLS["prepare"] == prepares and row["prepare_s"] > 0
    assert row["result_check"] == "ok" and row["rounds"] == 5


def test_the_same_toy_called_in_one_piece_prepares_inside_every_timed_call():
    """The counter above can fail: a one-call form of the toy runs prepare inside each timed call."""
    one_call, driver = two_phase.resolve(TOY_LINEAR, "linear").one_call("gemm"), WatchingDriver()
    point = {**grids.DEFAULTS, **grids.ABSENT, "layer": "tiny", "m": 3}
    grid = dict(grids.GRIDS["smoke"], min_rounds=5, max_rounds=5)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(LAYER_SHAPES, "tiny", TINY)
        row = runner.measure("one-call", "gemm", point, "cpu", grid, {}, targets={"one-call": one_call},
                             driver=driver)
    assert driver.prepares == driver.calls == 10 and math.isnan(row["prepare_s"])


def test_a_two_phase_apply_that_cannot_take_the_contract_is_a_usage_error(capsys):
    code = main(["bench", "--linear", "planted.two_phase_toy:linear_without_bias", "--bench-dir", "unused"])
    assert code == 2
    assert "usage error: linear_without_bias.apply(prepared, x, lora_a, lora_b, lora_indices, scaling) cannot be " \
           "called as the linear contract's apply phase calls it" in capsys.readouterr().err


def test_report_and_bench_dir_together_are_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--linear", TOY_LINEAR, "--report", "a", "--bench-dir", "b"])
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


# The load warning

@pytest.mark.parametrize("per_core, warned", [(3.0, True), (0.25, False)])
def test_a_loaded_machine_is_warned_of_at_start_and_end_and_recorded_in_the_rows(tmp_path, per_core, warned):
    with pytest.MonkeyPatch.context() as mp:
        tiny_grid(mp)
        mp.setattr(os, "getloadavg", lambda: (per_core * (os.cpu_count() or 1), 0.0, 0.0))
        code, out = bench("--dequantizer", TORCH_DEQUANTIZER, "--grid", "tiny", "--bench-dir", str(tmp_path),
                          "--quiet", "--no-project-backends")
    rows = perf_store.load_runs(tmp_path)
    assert code == 0 and len(rows) == 2
    assert rows["load_per_core_start"].tolist() == rows["load_per_core_end"].tolist() == [per_core] * 2
    for when in ("start", "end"):
        line = f"warning: the machine is loaded at the {when} of the run: load average {per_core:.2f} per core"
        assert (line in out) == warned


# The schema

def test_a_file_written_before_the_new_columns_reads_as_what_every_run_then_was(tmp_path):
    row = {k: v for k, v in pd.read_parquet(write_one(tmp_path)).iloc[0].to_dict().items()
           if k not in perf_store.IMPLIED}
    pd.DataFrame([row]).to_parquet(tmp_path / "old.parquet")
    with pytest.warns(UserWarning, match=r"old.parquet: written before \['domain', 'load_per_core_start'"):
        old = perf_store.load_runs(tmp_path).query("file == 'old.parquet'").iloc[0]
    assert old["scales_dtype"] == old["dtype"] == "bf16" and old["zero_points_dtype"] == "int32"
    assert old["domain"] == "full" and math.isnan(old["prepare_s"]) and math.isnan(old["load_per_core_end"])


def write_one(folder):
    from test_perf_store import sample_row
    path = folder / "new.parquet"
    perf_store.write_rows([sample_row(dtype="bf16", scales_dtype="fp32")], path)
    return path
