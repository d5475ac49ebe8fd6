"""The two-phase contract (docs/contract.md, "Two-phase kernels: prepare and apply"): verify prepares once per
weight set and applies on every call, the judge decides when to prepare again, and each thing the two phases
add is judged: a prepare that ignores new weights, one that writes its inputs, one that raises, a bad signature.
The candidates are tests/planted/two_phase.py; they run in their own process unless a test says --in-process."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from int4_lora_harness.__main__ import main
from int4_lora_harness.verify.cases import make_linear_case
from int4_lora_harness.verify.in_process import InProcessExecutor
from int4_lora_harness.verify.targets import UsageError, load_target, parameters

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--no-large-tier", "--examples", "8", "--timeout", "60", "--quiet"]


def verify(tmp_path, capsys, *args):
    """(exit status, stdout, stderr) of `int4-harness verify` run in this process."""
    code = main(["verify", "--report", str(tmp_path), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def result(tmp_path, index=0):
    return json.loads((tmp_path / "verify.json").read_text())["results"][index]


def test_a_correct_two_phase_linear_passes_in_its_own_process(tmp_path, capsys):
    code, out, err = verify(tmp_path, capsys, "--linear", "planted.two_phase:Linear", *FAST)
    assert code == 0, out + err
    assert result(tmp_path)["passed"] and result(tmp_path)["sandbox"]["processes"]  # judged in the child


def test_a_correct_two_phase_dequantizer_passes_as_an_instance_in_process(tmp_path, capsys):
    code, out, err = verify(tmp_path, capsys, "--dequantizer", "planted.two_phase:dequantizer", "--in-process", *FAST)
    assert code == 0, out + err
    assert result(tmp_path)["sandbox"]["processes"] == "off (--in-process)"


def test_a_correct_two_phase_namespace_passes_on_two_seeds_judged_at_once(tmp_path, capsys):
    code, out, err = verify(tmp_path, capsys, "--dequantizer", "planted.two_phase:dequantizer_namespace",
                            "--seeds", "0,1", "--jobs", "2", *FAST)
    assert code == 0, out + err
    assert [result(tmp_path, i)["seed"] for i in range(2)] == [0, 1]


def test_a_prepare_that_ignores_new_weights_fails_tracks_input_updates(tmp_path, capsys):
    code, out, err = verify(tmp_path, capsys, "--linear", "planted.two_phase:IgnoresRePrepare", *FAST)
    assert code == 1, out + err
    failure = result(tmp_path)["failure"]
    assert failure["kind"] == "wrong" and failure["failed"] == ["tracks input updates"], failure
    assert "stale cache" in failure["message"] and "packed_weights" in failure["message"]
    from int4_lora_harness.verify.repro import replay
    assert replay(Path(result(tmp_path)["repro"]).with_suffix(".case"), ["--in-process"]) == 1


def test_a_prepare_that_writes_an_input_fails_inputs_unchanged(tmp_path, capsys):
    code, out, err = verify(tmp_path, capsys, "--linear", "planted.two_phase:MutatesInPrepare", *FAST)
    assert code == 1, out + err
    failure = result(tmp_path)["failure"]
    assert "inputs unchanged" in failure["failed"], failure  # (its next prepare reads what it wrote: more may fail)
    assert "the call modified packed_weights (prepare or apply)" in failure["message"]


def test_a_raise_in_prepare_is_reported_as_prepare_raised(tmp_path, capsys):
    code, out, err = verify(tmp_path, capsys, "--linear", "planted.two_phase:RaisesInPrepare", *FAST)
    assert code == 1, out + err
    failure = result(tmp_path)["failure"]
    assert failure["kind"] == "raised" and failure["message"].startswith("prepare raised ValueError: cannot repack")
    assert "prepare raised ValueError" in out


@pytest.mark.parametrize("target, message", [
    ("planted.two_phase:PrepareWithoutGroupSize",
     "PrepareWithoutGroupSize.prepare(packed_weights, scales, zero_points) cannot be called as the linear contract's "
     "prepare phase"),
    ("planted.two_phase:ApplyWithoutPrepared", "ApplyWithoutPrepared.apply(x, lora_a, lora_b, lora_indices, scaling, "
                                               "bias) cannot be called as the linear contract's apply phase"),
    ("planted.two_phase:OnlyPrepare", "planted.two_phase:OnlyPrepare has prepare but no callable apply"),
    ("planted.two_phase:InstanceMethods", "an instance method: name an instance"),
])
@pytest.mark.parametrize("where", ["child", "--in-process"])
def test_a_two_phase_target_with_a_bad_signature_is_a_usage_error(tmp_path, capsys, target, message, where):
    code, out, err = verify(tmp_path, capsys, "--linear", target, *FAST, *([where] if where != "child" else []))
    assert code == 2, out + err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_the_apply_parameters_named_missing_are_the_ones_it_lacks():
    with pytest.raises(UsageError, match="'prepared'"):
        load_target("planted.two_phase:ApplyWithoutPrepared", parameters("linear"), "linear")
    with pytest.raises(UsageError, match="'group_size'"):
        load_target("planted.two_phase:PrepareWithoutGroupSize", parameters("linear"), "linear")


def test_the_judge_prepares_once_per_weight_set_and_again_only_after_a_weight_changes_in_place():
    from planted.two_phase import counting
    namespace, counts = counting()
    judge = InProcessExecutor(load_target_of(namespace), "cpu", timeout=60.0)
    case = make_linear_case(0, 16, 32, 3)
    inputs = case.torch_kwargs("cpu")
    judge.start_case(inputs, ("float16", [3, 16]))
    first = judge.call()
    judge.call(send_out=False)
    assert counts == dict(prepare=1, apply=2) and first["prepared"]
    judge.call(send_out=False, updates=dict(x=-inputs["x"]))  # an activation: apply only
    assert counts == dict(prepare=1, apply=3)
    judge.call(send_out=False, updates=dict(scales=-inputs["scales"]))  # a weight: prepare again
    assert counts == dict(prepare=2, apply=4)
    judge.call_fresh()  # fresh tensors: prepared on them, the case's prepared object kept
    assert counts == dict(prepare=3, apply=5)
    again = judge.call(send_out=True)
    assert counts == dict(prepare=3, apply=6) and not again["prepared"]
    assert torch.equal(again["out"], load_target_of(namespace)(**{**inputs, "x": -inputs["x"],
                                                                  "scales": -inputs["scales"]}))


def load_target_of(namespace):
    """The TwoPhase of an object in this process, as load_target makes one of a TARGET."""
    from int4_lora_harness.verify.targets import two_phase
    return two_phase(namespace, "counting", parameters("linear"), "linear")


def test_a_two_phase_target_loads_as_one_callable_too_for_callers_without_phases():
    linear = load_target("planted.two_phase:Linear", parameters("linear"), "linear")
    case = make_linear_case(1, 8, 16, 2)
    from int4_lora_harness.kernels.torch_path import linear as reference_path
    assert torch.equal(linear(**case.torch_kwargs("cpu")), reference_path(**case.torch_kwargs("cpu")))
    assert linear.weights == ("packed_weights", "scales", "zero_points", "group_size")


def test_a_two_phase_target_in_a_native_layout_prepares_from_the_layouts_own_weights():
    from int4_lora_harness.verify.targets import prepare_parameters
    names = parameters("dequantizer", "gptq")
    assert prepare_parameters(names, "dequantizer") == ("qweight", "qzeros", "scales", "g_idx", "group_size")
    assert prepare_parameters(parameters("linear", "hqq"), "linear") == ("W_q", "scale", "zero", "shape",
                                                                         "group_size")


def test_the_properties_in_process_take_a_two_phase_object():
    from int4_lora_harness.testing import assert_holds
    from int4_lora_harness.verify.properties import linear_properties
    from planted.two_phase import IgnoresRePrepare, Linear
    case = make_linear_case(2, 16, 64, 4)
    assert_holds(linear_properties(Linear, case))
    failed = [o.name for o in linear_properties(IgnoresRePrepare, case) if o.passed is False]
    assert failed == ["tracks input updates"]


def test_the_pytest_plugin_judges_a_two_phase_target(tmp_path):
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--color=no",
                          "--int4-no-large-tier", "--int4-examples", "3", "--int4-report", str(tmp_path / "reports"),
                          "--int4-linear", "planted.two_phase:IgnoresRePrepare",
                          "--int4-dequantizer", "planted.two_phase:dequantizer"], cwd=tmp_path, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "tests")}, timeout=600)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    assert "1 failed, 1 passed" in run.stdout and "tracks input updates" in run.stdout, run.stdout[-3000:]


def test_the_example_of_docs_contract_md_passes(tmp_path, capsys):
    text = (ROOT / "docs" / "contract.md").read_text()
    section = text[text.index("## Two-phase kernels"):]
    code = section[section.index("```python") + len("```python"):]
    (tmp_path / "mine.py").write_text(code[:code.index("```")])
    status, out, err = verify(tmp_path, capsys, "--linear", f"{tmp_path / 'mine.py'}:MyLinear", *FAST)
    assert status == 0, out + err
