"""`verify` judged as a user meets it: by exit status, output, the verdict file and the repro.

Most runs call the CLI in this process (the candidate still runs in its own child process, as it
does for users); the few that must see the process boundary itself (the exit status of a verifier
whose candidate raises SystemExit(0), the console script) run `python -m int4_lora_harness`.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from int4_lora_harness.__main__ import main
from planted.bugs import CORRECT_DEQUANTIZERS, CORRECT_LINEARS, DEQUANTIZER_BUGS, LINEAR_BUGS

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}  # the planted candidates are TARGETs planted.*
FAST = ["--no-large-tier", "--examples", "40", "--timeout", "20", "--quiet"]
# A correct candidate through the CLI: the whole coverage floor and 10 fuzzed cases. How deep the search of correct
# variants goes is tests/test_planted_bugs.py's to show (100 cases each, in this process); here, the CLI's verdict.
PASSING = ["--no-large-tier", "--examples", "10", "--timeout", "20", "--quiet"]


def verify(tmp_path, capsys, *args):
    """(exit status, stdout, stderr) of `int4-harness verify` run in this process."""
    code = main(["verify", "--report", str(tmp_path), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def verdict(tmp_path):
    return json.loads((tmp_path / "verify.json").read_text())


def contract_flag(name):
    return "--dequantizer" if name in DEQUANTIZER_BUGS or name in CORRECT_DEQUANTIZERS else "--linear"


@pytest.mark.parametrize("name", sorted(DEQUANTIZER_BUGS) + sorted(LINEAR_BUGS))
def test_verify_fails_each_planted_bug_and_its_repro_reproduces(tmp_path, capsys, name):
    code, out, err = verify(tmp_path, capsys, contract_flag(name), f"planted.bugs:{name}", *FAST)
    assert code == 1, out + err
    assert "FAIL" in out and "minimal case:" in out
    result = verdict(tmp_path)["results"][0]
    assert not result["passed"] and result["failure"]["case"] and result["failure"]["kind"] in ("wrong", "raised")
    from int4_lora_harness.verify.repro import replay
    assert replay(Path(result["repro"]).with_suffix(".case"), ["--in-process"]) == 1
    assert "the failure is still there" in capsys.readouterr().out


def test_a_repro_script_runs_standalone_and_exits_1(tmp_path, capsys):
    code, out, err = verify(tmp_path, capsys, "--dequantizer", "planted.bugs:missing_offset", *FAST)
    assert code == 1
    repro = subprocess.run([sys.executable, verdict(tmp_path)["results"][0]["repro"]], cwd=ROOT, env=ENV,
                           capture_output=True, text=True, timeout=300)
    assert repro.returncode == 1, repro.stdout + repro.stderr
    assert "FAIL  within tolerance" in repro.stdout


@pytest.mark.parametrize("name", sorted(CORRECT_DEQUANTIZERS) + sorted(CORRECT_LINEARS))
def test_verify_passes_each_correct_variant(tmp_path, capsys, name):
    code, out, err = verify(tmp_path, capsys, contract_flag(name), f"planted.bugs:{name}", *PASSING)
    assert code == 0, out + err
    assert out.count("PASS") >= 6
    assert "large tier and probes skipped (--no-large-tier): not a full verdict" in out


@pytest.mark.parametrize("contract", ["dequantizer", "linear"])
def test_a_registry_backends_repro_imports_its_real_function(contract):
    from int4_lora_harness.kernels.registry import BACKENDS
    from int4_lora_harness.verify.cases import CONTRACT_PARAMETERS
    from int4_lora_harness.verify.targets import load_target, repro_target
    target = repro_target("torch", contract)
    function = load_target(target, CONTRACT_PARAMETERS[contract], contract)
    assert function is getattr(BACKENDS["torch"], "dequantize" if contract == "dequantizer" else "linear")


def test_the_large_tier_is_skipped_and_said_so_only_for_interpreted_triton_backends():
    from argparse import Namespace

    from int4_lora_harness.verify.main import INTERPRETED, candidates
    args = Namespace(linear=None, dequantizer=None, seeds=None, seed=0, no_large_tier=False, device="cpu")
    found, skipped = candidates(args, {"seeds": [0]})
    assert {c.label for c in found} == {"torch"} and all(c.large_tier_skipped is None for c in found)
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        found, _ = candidates(args, {"seeds": [0]})
    finally:
        del os.environ["TRITON_INTERPRET"]
    triton = [c for c in found if c.label == "triton"]
    assert triton and all(c.large_tier_skipped == INTERPRETED for c in triton)
    mine = candidates(Namespace(**{**vars(args), "linear": "mine.py:linear"}), {"seeds": [0]})[0]
    assert mine[0].large_tier_skipped is None


@pytest.mark.parametrize("target, message", [
    ("tests/missing_file.py:f", "TARGET file tests/missing_file.py does not exist"),
    ("planted.hostile:missing", "has no function 'missing'"),
    ("planted.hostile:takes_two_arguments", "cannot be called as the dequantizer contract calls it, by keyword"),
    ("planted.hostile:renamed_arguments", "cannot be called as the dequantizer contract calls it, by keyword"),
    ("no_such_package.module:f", "cannot import no_such_package.module"),
    ("just_a_name", "TARGET must be"),
])
def test_usage_errors_exit_2_with_one_line_and_no_traceback(tmp_path, capsys, target, message):
    code, out, err = verify(tmp_path, capsys, "--dequantizer", target, "--quiet")
    assert code == 2
    assert message in err and "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1
    assert verdict(tmp_path)["status"] == "usage error"  # no stale verdict: this run says it could not judge


@pytest.mark.parametrize("flags, message", [
    (["--examples", "-3"], "--examples: must be a positive integer"),
    (["--examples", "0"], "--examples: must be a positive integer"),
    (["--timeout", "0"], "--timeout: must be a finite number of seconds > 0"),
    (["--timeout", "-1"], "--timeout: must be a finite number of seconds > 0"),
    (["--timeout", "nan"], "--timeout: must be a finite number of seconds > 0"),
    (["--seed", "x"], "--seed: must be an integer"),
    (["--seeds", "0,-1"], "--seeds: takes comma-separated non-negative integers"),
    (["--seeds", "0,1", "--seed", "2"], "--seed: not allowed with argument --seeds"),
    (["--group-sizes", "0,32"], "--group-sizes: takes comma-separated positive integers"),
    (["--dtypes", "fp8"], "--dtypes: takes a comma-separated subset"),
    (["--designs", "fused"], "--designs: takes all, single-rounding, unfused"),
    (["--in-multiple-of", "3"], "in_multiple_of must be even"),
    (["--tp", "2"], "--tp N needs --layer TARGET"),
    (["--timeout", "1e7"], "--timeout: must be a finite number of seconds > 0 and at most 86400 (a day)"),
    (["--jobs", "65"], "--jobs: must be at most 64"),
    (["--max-rank", "513"], "--max-rank: must be at most 512"),
    (["--max-loras", "1000"], "--max-loras: must be at most 256"),
    (["--out-multiple-of", "4096"], "--out-multiple-of: must be at most 1024"),
])
def test_every_bad_flag_is_a_one_line_usage_error(tmp_path, flags, message):
    run = subprocess.run([sys.executable, "-m", "int4_lora_harness", "verify", "--report", str(tmp_path),
                          "--dequantizer", "planted.bugs:missing_offset", *flags], cwd=ROOT, env=ENV,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stdout + run.stderr
    assert message in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr


@pytest.mark.parametrize("variable, value, message", [
    ("HYPOTHESIS_PROFILE", "junk", "HYPOTHESIS_PROFILE='junk': must be one of ci, thorough"),
    ("INT4_LORA_HARNESS_NATIVE", "no", "INT4_LORA_HARNESS_NATIVE='no': must be 0 or 1 (unset means 1)"),
    ("INT4_LORA_HARNESS_JUDGE_NATIVE", "2", "INT4_LORA_HARNESS_JUDGE_NATIVE='2': must be 0 or 1"),
    ("TRITON_INTERPRET", "true", "TRITON_INTERPRET='true': must be 0 or 1 (unset means 0)"),
    ("INT4_LORA_HARNESS_CACHE", "{file}", "is a file; it must name a folder"),
])
def test_every_environment_variable_that_picks_behaviour_is_checked_as_a_one_line_usage_error(
        tmp_path, capsys, monkeypatch, variable, value, message):
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv(variable, value.format(file=tmp_path / "a_file"))
    code, out, err = verify(tmp_path / "reports", capsys, "--dequantizer", "planted.bugs:missing_offset", "--quiet")
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in out + err


def test_hypothesis_profile_picks_the_profile_and_the_profile_flag_overrides_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HYPOTHESIS_PROFILE", "thorough")
    flags = ["--dequantizer", "planted.bugs:correct_dequantize_fp64_expand", "--no-large-tier", "--quiet"]
    code, out, err = verify(tmp_path, capsys, *flags, "--examples", "1")
    assert code == 0, out + err
    assert verdict(tmp_path)["profile"] == "thorough"
    monkeypatch.setenv("HYPOTHESIS_PROFILE", "a profile of the user's own")
    code, out, err = verify(tmp_path, capsys, *flags, "--examples", "1", "--profile", "ci")
    assert code == 0, out + err
    assert verdict(tmp_path)["profile"] == "ci"


def test_a_file_target_imports_the_modules_beside_it_as_python_file_py_would(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "neighbour_of_mine.py").write_text("from planted.bugs import correct_dequantize_fp64_expand\n")
    (folder / "mine.py").write_text("from neighbour_of_mine import correct_dequantize_fp64_expand as dequantize\n")
    code, out, err = verify(tmp_path, capsys, "--dequantizer", f"{folder / 'mine.py'}:dequantize", "--no-large-tier",
                            "--examples", "2", "--quiet")
    assert code == 0, out + err
    assert verdict(tmp_path)["results"][0]["passed"]


def test_seeds_from_zero_each_give_their_own_judgement_named_by_seed(tmp_path, capsys):
    code, out, err = verify(tmp_path, capsys, "--dequantizer", "planted.bugs:missing_offset", "--seeds", "0,3",
                            "--no-large-tier", "--quiet", "--examples", "2")
    assert code == 1, out + err
    assert [r["seed"] for r in verdict(tmp_path)["results"]] == [0, 3]
    assert "seed 0" in out and "seed 3" in out


def test_a_layer_is_judged_once_per_seed_and_the_run_records_every_seed(tmp_path, capsys):
    code, out, err = verify(tmp_path, capsys, "--layer", "int4_lora_harness.kernels.torch_layer:layer", "--tp", "1",
                            "--styles", "column", "--seeds", "0,2", "--examples", "2", "--quiet")
    assert code == 0, out + err
    run = verdict(tmp_path)
    assert run["seeds"] == [0, 2] and [r["seed"] for r in run["results"]] == [0, 2]


def test_a_failing_case_is_not_counted_as_explained_by_a_design(tmp_path, capsys):
    code, out, err = verify(tmp_path, capsys, "--dequantizer", "planted.bugs:swapped_nibbles", "--no-large-tier",
                            "--quiet", "--examples", "5")
    assert code == 1
    [result] = verdict(tmp_path)["results"]
    judged = next(p["cases"] for p in result["properties"] if p["name"] == "within tolerance")
    explained = sum(d["cases"] for d in result["designs"].values())
    assert explained < judged, (explained, judged)


@pytest.mark.parametrize("name", ["peft_style", "punica_style"])
def test_unfused_linears_pass_naming_the_design_and_fail_when_only_single_rounding_is_accepted(tmp_path, capsys,
                                                                                                name):
    code, out, err = verify(tmp_path / "all", capsys, "--linear", f"planted.unfused:{name}", *PASSING)
    assert code == 0, out + err
    assert "unfused, w in x.dtype" in verdict(tmp_path / "all")["results"][0]["designs"]
    code, out, err = verify(tmp_path / "single", capsys, "--linear", f"planted.unfused:{name}", *PASSING,
                            "--designs", "single-rounding")
    assert code == 1, out + err
    failure = verdict(tmp_path / "single")["results"][0]["failure"]
    assert failure["kind"] == "wrong" and "explained by the design 'unfused, w in x.dtype'" in out


def test_a_report_path_that_is_a_file_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    code, out, err = verify(tmp_path / "a_file", capsys, "--dequantizer", "planted.bugs:missing_offset")
    assert code == 2 and "is a file; it must name a folder" in err


@pytest.mark.parametrize("name, extra, expected", [
    ("returns_list", [], "returned list, expected a torch.Tensor"),
    ("wrong_shape", [], "shape"),
    ("raises", [], "the candidate raised: RuntimeError: kernel launch failed"),
    ("sleeps_forever", ["--timeout", "2"], "the candidate hung: no progress for 2 s"),
    ("swallows_the_timeout", ["--timeout", "2"], "the candidate hung: no progress for 2 s"),
    ("segfaults", [], "the candidate crashed: the candidate's process killed by SIGSEGV"),
    ("exits_hard", [], "the candidate crashed: the candidate's process exited with status 3"),
    ("exits_zero", [], "the candidate raised: SystemExit: 0"),
    ("interrupts", [], "the candidate raised: KeyboardInterrupt"),
    ("raises_base_exception", [], "the candidate raised: Ended: custom BaseException"),
    ("caches_by_scales_id", [], "tracks input updates"),
    ("returns_one_buffer", [], "earlier results intact"),
    ("subclass_shows_other_data", [], "within tolerance"),
    ("nondeterministic", [], "deterministic"),
])
def test_misbehaving_candidates_get_a_verdict_not_a_dead_verifier(tmp_path, capsys, name, extra, expected):
    code, out, err = verify(tmp_path, capsys, "--dequantizer", f"planted.hostile:{name}", "--no-large-tier",
                            "--quiet", *extra)
    assert code == 1, out + err
    assert expected in out, out
    result = verdict(tmp_path)
    assert result["status"] == "complete" and not result["results"][0]["passed"]


def test_a_process_that_will_not_exit_after_its_last_call_is_killed_and_noted_never_failed(tmp_path, capsys):
    code, out, err = verify(tmp_path, capsys, "--dequantizer", "planted.hostile:leaves_a_thread", "--no-large-tier",
                            "--quiet", "--examples", "2")
    assert code == 0, out + err
    note = verdict(tmp_path)["results"][0]["exit_note"]
    assert "did not exit" in note and "left-running" in note and "not judged" in note
    assert "note  the candidate's process did not exit" in out


@pytest.mark.parametrize("module", ["exits_at_import", "dies_at_import"])
def test_a_target_that_ends_its_process_while_imported_gets_a_verdict(tmp_path, capsys, module):
    code, out, err = verify(tmp_path, capsys, "--dequantizer", f"planted.{module}:dequantize", "--quiet")
    assert code == 1, out + err
    failure = verdict(tmp_path)["results"][0]["failure"]
    assert failure["kind"] in ("raised", "crashed") and "import" in failure["message"]


def test_systemexit_0_on_large_layers_still_exits_1_and_replaces_the_old_verdict(tmp_path):
    (tmp_path / "verify.json").write_text(json.dumps(dict(results=[dict(candidate="old", passed=True)])))
    run = subprocess.run([sys.executable, "-m", "int4_lora_harness", "verify", "--report", str(tmp_path), "--quiet",
                          "--dequantizer", "planted.hostile:exits_zero_on_large_layers", "--examples", "5"],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stdout + run.stderr
    result = verdict(tmp_path)
    assert result["status"] == "complete" and result["results"][0]["candidate"] != "old"
    assert result["results"][0]["failure"]["kind"] == "raised" and "SystemExit" in result["results"][0]["failure"]["message"]


def test_same_seed_gives_the_same_verdict(tmp_path, capsys):
    for i in range(2):
        verify(tmp_path / str(i), capsys, "--dequantizer", "planted.bugs:group_size_inferred", "--seed", "7",
               "--no-large-tier", "--quiet")
    cases = [verdict(tmp_path / str(i))["results"][0]["failure"]["case"] for i in range(2)]
    assert cases[0] == cases[1]


def test_a_narrowed_domain_is_stated_in_the_verdict(tmp_path, capsys):
    code, out, err = verify(tmp_path, capsys, "--linear", "planted.bugs:correct_linear_gathered", "--dtypes", "fp16",
                            "--group-sizes", "32,64", "--no-bias", "--examples", "10", "--no-large-tier", "--quiet")
    assert code == 0, out + err
    assert "dtypes=('fp16',)" in out and "group_sizes=(32, 64)" in out and "bias=False" in out


def test_the_console_script_and_help_name_both_signatures():
    run = subprocess.run([sys.executable, "-m", "int4_lora_harness", "verify", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0
    assert "dequantizer(packed_weights, scales, zero_points, group_size, output_dtype)" in run.stdout
    assert "linear(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias)" \
        in run.stdout
    assert "docs/contract.md" in run.stdout


def test_a_linear_that_caches_by_the_identity_of_lora_b_is_caught_by_update_tracking(tmp_path, capsys):
    code, out, err = verify(tmp_path, capsys, "--linear", "planted.hostile:caches_linear_by_lora_b_id",
                            "--no-large-tier", "--quiet")
    assert code == 1, out + err
    assert "FAIL  tracks input updates" in out and "stale cache" in out
