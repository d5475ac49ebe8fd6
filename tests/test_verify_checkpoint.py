"""`verify --checkpoint FILE --checkpoint-layer PREFIX`: a real layer, in each format, becomes explicit examples."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from int4_lora_harness.reference import formats, quantize

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "model.layers.0.mlp.down_proj"


def write_layer(path, fmt, out_features=64):
    """An asymmetric grouped layer (group 32, in 96), written in `fmt`."""
    w = np.random.default_rng(0).standard_normal((out_features, 96))
    packed, scales, zero_points = quantize(w, "grouped", group_size=32, symmetric=False)
    canonical = formats.Canonical(packed, scales.astype(np.float16), zero_points.astype(np.int8), 32, None)
    tensors = {"compressed-tensors": formats.to_compressed_tensors, "gptq": formats.to_gptq,
               "awq": formats.to_awq}[fmt](canonical)
    save_file({f"{PREFIX}.{k}": torch.as_tensor(np.ascontiguousarray(v)) for k, v in tensors.items()}, path)


class Run:
    """What a test reads of one in-process `verify` run."""

    def __init__(self, code, out, err):
        self.returncode, self.stdout, self.stderr = code, out, err


@pytest.fixture
def verify(capsys):
    """verify(report_folder, *flags) -> Run, the CLI called in this process (the candidate in its own child)."""
    from int4_lora_harness.__main__ import main

    def run(tmp_path, *args):
        code = main(["verify", "--report", str(tmp_path), "--no-large-tier", "--examples", "20", "--quiet", *args])
        out = capsys.readouterr()
        return Run(code, out.out, out.err)
    return run


def examples_of(tmp_path):
    """The checkpoint examples of the run's one result."""
    result = json.loads((tmp_path / "verify.json").read_text())["results"][0]
    return [e for e in result["explicit"] if e["group"] == "checkpoint"]


@pytest.mark.parametrize("fmt", ["compressed-tensors", "gptq", "awq"])
def test_a_correct_kernel_passes_the_real_layer_in_each_format(tmp_path, verify, fmt):
    write_layer(tmp_path / "model.safetensors", fmt)
    run = verify(tmp_path, "--dequantizer", "planted.bugs:correct_dequantize_fp32_math", "--checkpoint",
                 str(tmp_path / "model.safetensors"), "--checkpoint-layer", PREFIX, "--checkpoint-group-size", "32")
    assert run.returncode == 0, run.stdout + run.stderr
    examples = examples_of(tmp_path)
    assert len(examples) == 3 and all(e["passed"] for e in examples) and fmt in examples[0]["shape"]
    assert all(e["design"] == "correctly rounded" for e in examples)


def test_a_checkpoint_specific_bug_is_caught_through_the_real_layer(tmp_path, verify):
    # The fuzzed cases stay below 256 output rows (and the large tier is off): only the real layer shows the bug.
    write_layer(tmp_path / "model.safetensors", "awq", out_features=512)
    target = "planted.hostile:rows_past_256_not_written"
    fuzz_only = verify(tmp_path / "fuzz", "--dequantizer", target)
    assert fuzz_only.returncode == 0, fuzz_only.stdout + fuzz_only.stderr
    run = verify(tmp_path, "--dequantizer", target, "--checkpoint", str(tmp_path / "model.safetensors"),
                 "--checkpoint-layer", PREFIX, "--checkpoint-group-size", "32")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "FAIL  checkpoint example model.layers.0.mlp.down_proj (awq" in run.stdout


def test_a_missing_layer_is_a_usage_error(tmp_path, verify):
    write_layer(tmp_path / "model.safetensors", "gptq")
    run = verify(tmp_path, "--dequantizer", "planted.bugs:correct_dequantize_fp32_math", "--checkpoint",
                 str(tmp_path / "model.safetensors"), "--checkpoint-layer", "model.layers.9.nope")
    assert run.returncode == 2 and "no tensors under prefix" in run.stderr


def test_a_correct_linear_passes_the_real_layer(tmp_path, verify):
    write_layer(tmp_path / "model.safetensors", "gptq")
    run = verify(tmp_path, "--linear", "planted.bugs:correct_linear_gathered", "--dtypes", "fp16,bf16",
                 "--checkpoint", str(tmp_path / "model.safetensors"), "--checkpoint-layer", PREFIX)
    assert run.returncode == 0, run.stdout + run.stderr
    examples = examples_of(tmp_path)
    assert [e["passed"] for e in examples] == [True, True]


@pytest.mark.parametrize("narrowing, message", [
    (["--no-zero-points"], "the layer has zero points, but the domain excludes them"),
    (["--granularity", "per-channel"], "the layer's scales are grouped, outside --granularity per-channel"),
    (["--group-sizes", "64,128"], "the layer's group size 32 is outside --group-sizes 64,128"),
])
def test_a_real_layer_outside_the_narrowed_domain_is_a_usage_error(tmp_path, verify, narrowing, message):
    write_layer(tmp_path / "model.safetensors", "gptq")
    run = verify(tmp_path, "--dequantizer", "planted.bugs:correct_dequantize_fp32_math", *narrowing,
                 "--checkpoint", str(tmp_path / "model.safetensors"), "--checkpoint-layer", PREFIX)
    assert run.returncode == 2 and message in run.stderr, run.stdout + run.stderr


def test_the_layers_bias_is_used_unless_the_domain_excludes_bias():
    from int4_lora_harness.checkpoints.safetensors_layer import Layer
    from int4_lora_harness.verify.domain import Domain
    from int4_lora_harness.verify.plan import checkpoint_cases
    layer = Layer(torch.zeros(8, 16, dtype=torch.uint8), torch.ones(8, dtype=torch.float16), None, None, None,
                  torch.arange(8, dtype=torch.float16), "gptq")
    with_bias = checkpoint_cases(layer, PREFIX, Domain(dtypes=("fp16",)))["linear"][0][2]
    assert with_bias.bias.tolist() == list(range(8)) and with_bias.weights.shape == (8, 32)
    without = checkpoint_cases(layer, PREFIX, Domain(dtypes=("fp16",), bias=False))["linear"][0][2]
    assert without.bias is None
