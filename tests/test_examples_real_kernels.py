"""The real CPU INT4 kernels of examples/adapters/, two-phase, judged with the domain flags their docstrings give:
each gives the verdict docs/layouts/README.md records for it (small runs: no large tier, a few fuzzed cases).

PyTorch's tinygemm CPU port passes in bf16 without zero points and fails with them (its zero term is rounded to
bf16); ONNX Runtime's MatMulNBits passes at accuracy_level 0 and fails at 4 (int8 activations)."""
import json
from pathlib import Path

import pytest
import torch

from int4_lora_harness.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
ADAPTERS = ROOT / "examples" / "adapters"
SMALL = ["--no-large-tier", "--examples", "8", "--quiet"]
TINYGEMM = ["--linear", f"{ADAPTERS / 'tinygemm_cpu.py'}:TinyGemm", "--dtypes", "bf16", "--scale-dtypes", "bf16",
            "--group-sizes", "32,64,128", "--no-bias"]
NBITS = f"{ADAPTERS / 'onnx_matmul_nbits.py'}"
NBITS_FLAGS = ["--group-sizes", "16,32,64,128", "--zero-points", "integer"]


def judged(tmp_path, capsys, *args):
    """(exit status, the verdict's one result) of `int4-verify` on the arguments, run in this process."""
    code = main(["verify", "--report", str(tmp_path), *args, *SMALL])
    capsys.readouterr()
    return code, json.loads((tmp_path / "verify.json").read_text())["results"][0]


def needs_tinygemm():
    if not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
        pytest.skip(f"torch {torch.__version__} has no _weight_int4pack_mm_for_cpu")


def test_tinygemm_passes_in_bf16_without_zero_points(tmp_path, capsys):
    needs_tinygemm()
    code, result = judged(tmp_path, capsys, *TINYGEMM, "--zero-points", "none")
    assert code == 0, result.get("failure")


def test_tinygemm_fails_with_integer_zero_points_as_wrong_values(tmp_path, capsys):
    needs_tinygemm()
    code, result = judged(tmp_path, capsys, *TINYGEMM, "--zero-points", "integer")
    assert code == 1
    assert result["failure"]["kind"] == "wrong" and "within tolerance" in result["failure"]["failed"], result["failure"]


def test_onnxruntime_matmul_nbits_passes_at_accuracy_level_0(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    code, result = judged(tmp_path, capsys, "--linear", f"{NBITS}:accuracy_level_0", *NBITS_FLAGS)
    assert code == 0, result.get("failure")


def test_onnxruntime_matmul_nbits_fails_at_accuracy_level_4_as_wrong_values(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    code, result = judged(tmp_path, capsys, "--linear", f"{NBITS}:accuracy_level_4", *NBITS_FLAGS)
    assert code == 1
    assert result["failure"]["kind"] == "wrong" and "within tolerance" in result["failure"]["failed"], result["failure"]
