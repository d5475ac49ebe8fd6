"""The memory section: bytes of the packed format against a materialized fp16 copy, computed from shapes.

Nothing is measured: these are the byte counts of docs/contract.md#packed-weight (one byte per two weights, one fp16
scale per group of MEMORY_GROUP_SIZE columns, no zero points) for the layers of
int4_lora_harness.shapes.
"""
import pandas as pd

from int4_lora_harness.bench.work import MEMORY_GROUP_SIZE, layer_bytes  # the one byte model
from int4_lora_harness.shapes import LAYER_SHAPES, MODELS


def memory_per_layer(shapes=LAYER_SHAPES):
    """One row per layer shape: out, in, packed_bytes, fp16_bytes, ratio = fp16 / packed."""
    rows = [dict(layer=name, out_features=o, in_features=i, **dict(zip(("packed_bytes", "fp16_bytes"),
                                                                       layer_bytes(o, i))))
            for name, (o, i) in shapes.items()]
    table = pd.DataFrame(rows)
    table["ratio"] = table["fp16_bytes"] / table["packed_bytes"]
    return table


def memory_per_model(models=MODELS):
    """Per model: packed and fp16 bytes of every linear layer, and what materializing costs on top.

    materialized_cached: an fp16 copy of every layer kept (the seed caches by id(module));
    materialized_transient: the largest layer's fp16 copy, made and freed one layer at a time.
    """
    rows = []
    for model, (blocks, projections) in models.items():
        sizes = [layer_bytes(o, i) for o, i in projections.values()]
        packed, fp16 = (blocks * sum(s[k] for s in sizes) for k in (0, 1))
        rows.append(dict(model=model, blocks=blocks, projections=", ".join(projections), packed_bytes=packed,
                         fp16_bytes=fp16, materialized_cached=packed + fp16,
                         materialized_transient=packed + max(s[1] for s in sizes)))
    return pd.DataFrame(rows)
