"""`python -m harness verify` judged as a user meets it: as a subprocess, by exit status, output and repro."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.planted import CORRECT_DEQUANTIZERS, CORRECT_LINEARS, DEQUANTIZER_BUGS, LINEAR_BUGS

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--no-large-tier", "--examples", "40", "--timeout", "20"]


def verify(tmp_path, *args):
    command = [sys.executable, "-m", "harness", "verify", "--report", str(tmp_path), *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def contract_flag(name):
    return "--dequantizer" if name in DEQUANTIZER_BUGS or name in CORRECT_DEQUANTIZERS else "--linear"


@pytest.mark.parametrize("name", sorted(DEQUANTIZER_BUGS) + sorted(LINEAR_BUGS))
def test_verify_fails_each_planted_bug_and_its_repro_reproduces(tmp_path, name):
    run = verify(tmp_path, contract_flag(name), f"harness.planted:{name}", *FAST)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "FAIL" in run.stdout and "minimal case:" in run.stdout
    verdict = json.loads((tmp_path / "verify.json").read_text())["results"][0]
    assert not verdict["passed"] and verdict["failure"]["case"]
    repro = subprocess.run([sys.executable, verdict["repro"]], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert repro.returncode == 1, repro.stdout + repro.stderr
    assert "MISMATCH" in repro.stdout or "outside the allowed error" in repro.stdout


@pytest.mark.parametrize("name", sorted(CORRECT_DEQUANTIZERS) + sorted(CORRECT_LINEARS))
def test_verify_passes_each_correct_variant(tmp_path, name):
    run = verify(tmp_path, contract_flag(name), f"harness.planted:{name}", *FAST)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("PASS") >= 5
    assert "large tier skipped (--no-large-tier): not a full verdict" in run.stdout


@pytest.mark.parametrize("contract", ["dequantizer", "linear"])
def test_a_registry_backends_repro_imports_its_real_function(contract):
    from harness.__main__ import load_target, repro_target
    from kernels.registry import BACKENDS
    target = repro_target("torch", contract)
    function = load_target(target, contract)
    assert function is getattr(BACKENDS["torch"], "dequantize" if contract == "dequantizer" else "linear")


def test_the_large_tier_is_skipped_and_said_so_only_for_interpreted_triton_backends():
    from argparse import Namespace
    from harness.__main__ import large_tier_skipped
    cpu, cuda = Namespace(no_large_tier=False, device="cpu"), Namespace(no_large_tier=False, device="cuda")
    assert "interpreter" in large_tier_skipped(cpu, "triton")
    assert large_tier_skipped(cpu, "torch") is None and large_tier_skipped(cuda, "triton") is None
    assert large_tier_skipped(cpu, "mine.py:linear") is None


@pytest.mark.parametrize("target, message", [
    ("tests/missing_file.py:f", "TARGET file tests/missing_file.py does not exist"),
    ("tests/candidates.py:missing", "has no function 'missing'"),
    ("tests/candidates.py:takes_two_arguments", "does not take the dequantizer contract's arguments"),
    ("no_such_package.module:f", "cannot import no_such_package.module"),
    ("just_a_name", "TARGET must be"),
])
def test_usage_errors_exit_2_with_one_line_and_no_traceback(tmp_path, target, message):
    run = verify(tmp_path, "--dequantizer", target)
    assert run.returncode == 2
    assert message in run.stderr and "Traceback" not in run.stderr + run.stdout
    assert len(run.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name, extra, expected", [
    ("returns_list", [], "returned list, expected a torch.Tensor"),
    ("wrong_shape", [], "shape"),
    ("raises", [], "the candidate raised: RuntimeError: kernel launch failed"),
    ("sleeps_forever", ["--timeout", "2"], "the candidate hung: TimeoutError"),
    ("segfaults", ["--isolate"], "the candidate crashed: CandidateCrashed: the candidate's process killed by SIGSEGV"),
])
def test_misbehaving_candidates_get_a_verdict_not_a_dead_verifier(tmp_path, name, extra, expected):
    run = verify(tmp_path, "--dequantizer", f"tests/candidates.py:{name}", "--no-large-tier", *extra)
    assert run.returncode == 1, run.stdout + run.stderr
    assert expected in run.stdout
    assert "minimal case:" in run.stdout


def test_same_seed_gives_the_same_verdict(tmp_path):
    runs = [verify(tmp_path / str(i), "--dequantizer", "harness.planted:group_size_inferred", "--seed", "7",
                   "--no-large-tier") for i in range(2)]
    cases = [json.loads((tmp_path / str(i) / "verify.json").read_text())["results"][0]["failure"] for i in range(2)]
    assert runs[0].returncode == runs[1].returncode == 1
    assert cases[0] == cases[1]


def test_a_narrowed_domain_is_stated_in_the_verdict(tmp_path):
    run = verify(tmp_path, "--linear", "harness.planted:correct_linear_gathered", "--dtypes", "fp16",
                 "--group-sizes", "32,64", "--no-bias", "--examples", "10", "--no-large-tier")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "dtypes=('fp16',)" in run.stdout and "group_sizes=(32, 64)" in run.stdout and "bias=False" in run.stdout
