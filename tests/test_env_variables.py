"""The environment variables that pick the harness's behaviour hold to their rules (harness/environment.py), and
the one it sets for the judge's and the candidate's threads (harness.verify.limits.THREAD_WAIT)."""
import os
import subprocess
import sys

import pytest

from int4_lora_harness import cbuild, environment
from int4_lora_harness.kernels import native


@pytest.mark.parametrize("value", ["no", "off", "2", " 0"])
def test_a_library_switch_other_than_0_or_1_is_refused_not_read_as_on(monkeypatch, value):
    monkeypatch.setenv("INT4_LORA_HARNESS_NATIVE", value)
    with pytest.raises(ValueError, match=f"INT4_LORA_HARNESS_NATIVE={value!r}: must be 0 or 1 \\(unset means 1\\)"):
        cbuild.load(native.SOURCE, "INT4_LORA_HARNESS_NATIVE", "the C dequantizer", "the torch ops are used")


def test_an_empty_switch_is_the_same_as_an_unset_one_and_0_turns_the_library_off(monkeypatch):
    assert environment.switch("TRITON_INTERPRET", {"TRITON_INTERPRET": ""}) == "0"
    assert environment.switch("INT4_LORA_HARNESS_JUDGE_NATIVE", {}) == "1"
    monkeypatch.setenv("INT4_LORA_HARNESS_NATIVE", "0")
    missing = cbuild.load(native.SOURCE, "INT4_LORA_HARNESS_NATIVE", "the C dequantizer", "the torch ops are used")
    assert isinstance(missing, cbuild.Missing) and missing.why == "INT4_LORA_HARNESS_NATIVE=0"


def test_the_cache_must_be_a_folder_or_a_path_a_folder_can_be_made_at(tmp_path):
    (tmp_path / "a_file").write_text("")
    assert environment.folder_problem(str(tmp_path / "a_file")) == "is a file; it must name a folder"
    assert environment.folder_problem(str(tmp_path / "a_file" / "below")).startswith("cannot be created: ")
    assert environment.folder_problem(str(tmp_path / "new" / "cache")) is None
    with pytest.raises(ValueError, match="INT4_LORA_HARNESS_CACHE=.* is a file; it must name a folder"):
        environment.check(environ={"INT4_LORA_HARNESS_CACHE": str(tmp_path / "a_file")})


STUB_RUN = ("import os, sys, types; stub = types.ModuleType('stub'); "
            "stub.run = lambda args, argv: print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules); "
            "sys.modules['int4_lora_harness.verify.main'] = stub; "
            "from int4_lora_harness.__main__ import run_verify; run_verify(None, [])")


@pytest.mark.parametrize("given, expected", [(None, "PASSIVE False"), ("ACTIVE", "ACTIVE False")])
def test_int4_verify_sets_openmp_threads_passive_before_torch_loads_unless_the_user_chose(given, expected):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "TRITON_INTERPRET")}
    env.update({} if given is None else {"OMP_WAIT_POLICY": given})
    out = subprocess.run([sys.executable, "-c", STUB_RUN], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == expected, out.stderr


@pytest.mark.parametrize("given, interpreter, expected", [(None, "0", "PASSIVE"), ("ACTIVE", "0", "ACTIVE"),
                                                           (None, "1", None)])
def test_the_candidates_openmp_threads_are_passive_unless_the_user_chose_or_the_interpreter_runs(
        tmp_path, monkeypatch, given, interpreter, expected):
    from int4_lora_harness.verify.executor import candidate_env
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setenv("TRITON_INTERPRET", interpreter)
    if given is not None:
        monkeypatch.setenv("OMP_WAIT_POLICY", given)
    assert candidate_env(str(tmp_path)).get("OMP_WAIT_POLICY") == expected
