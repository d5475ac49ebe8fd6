"""`verify --checkpoint FILE --layer PREFIX`: a real layer, in each format, becomes explicit examples."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from reference import formats, quantize

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "model.layers.0.mlp.down_proj"


def write_layer(path, fmt, out_features=64):
    """An asymmetric grouped layer (group 32, in 96), written in `fmt`."""
    w = np.random.default_rng(0).standard_normal((out_features, 96))
    packed, scales, zero_points = quantize(w, "grouped", group_size=32, symmetric=False)
    canonical = formats.Canonical(packed, scales.astype(np.float16), zero_points.astype(np.int8), 32, None)
    tensors = {"compressed-tensors": formats.to_compressed_tensors, "gptq": formats.to_gptq,
               "awq": formats.to_awq}[fmt](canonical)
    tensors = tensors._asdict() if hasattr(tensors, "_asdict") else tensors
    save_file({f"{PREFIX}.{k}": torch.as_tensor(np.ascontiguousarray(v)) for k, v in tensors.items()}, path)


def verify(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "harness", "verify", "--report", str(tmp_path), "--no-large-tier",
                           "--examples", "20", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("fmt", ["compressed-tensors", "gptq", "awq"])
def test_a_correct_kernel_passes_the_real_layer_in_each_format(tmp_path, fmt):
    write_layer(tmp_path / "model.safetensors", fmt)
    run = verify(tmp_path, "--dequantizer", "harness.planted:correct_dequantize_fp32_math", "--checkpoint",
                 str(tmp_path / "model.safetensors"), "--layer", PREFIX, "--checkpoint-group-size", "32")
    assert run.returncode == 0, run.stdout + run.stderr
    examples = json.loads((tmp_path / "verify.json").read_text())["results"][0]["checkpoint"]
    assert len(examples) == 3 and all(e["passed"] for e in examples) and fmt in examples[0]["shape"]


def test_a_checkpoint_specific_bug_is_caught_through_the_real_layer(tmp_path):
    # The fuzzed cases stay below 256 output rows (and the large tier is off): only the real layer shows the bug.
    write_layer(tmp_path / "model.safetensors", "awq", out_features=512)
    target = "tests/candidates.py:rows_past_256_not_written"
    fuzz_only = verify(tmp_path / "fuzz", "--dequantizer", target)
    assert fuzz_only.returncode == 0, fuzz_only.stdout + fuzz_only.stderr
    run = verify(tmp_path, "--dequantizer", target, "--checkpoint", str(tmp_path / "model.safetensors"),
                 "--layer", PREFIX, "--checkpoint-group-size", "32")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "FAIL  checkpoint example model.layers.0.mlp.down_proj (awq" in run.stdout


def test_a_missing_layer_is_a_usage_error(tmp_path):
    write_layer(tmp_path / "model.safetensors", "gptq")
    run = verify(tmp_path, "--dequantizer", "harness.planted:correct_dequantize_fp32_math", "--checkpoint",
                 str(tmp_path / "model.safetensors"), "--layer", "model.layers.9.nope")
    assert run.returncode == 2 and "no tensors under prefix" in run.stderr
