"""Load one INT4 linear layer from a .safetensors file into the canonical layout, as torch tensors.

The format is told by the complete set of tensor names under the layer's prefix (a `bias` aside)
and by their dtypes, never by one name alone:

| fmt                | tensors                                                         | int32        |
| ------------------ | --------------------------------------------------------------- | ------------ |
| compressed-tensors | weight_packed, weight_scale, weight_shape [, weight_zero_point] | weight_packed |
| gptq (v1 zeros)    | qweight, qzeros, scales, g_idx                                  | qweight, qzeros |
| gptq_v2            | the same names; only an explicit fmt picks it                   | qweight, qzeros |
| awq                | qweight, qzeros, scales                                         | qweight, qzeros |

A `weight` next to a `weight_scale` (fp8, int8 or a uint8 byte tensor) is not INT4-packed and is
refused: the seed treated any uint8 weight with a weight_scale as INT4. Conventions of each
format: reference/formats.py and docs/formats.md.
"""
from typing import NamedTuple

import numpy as np
import torch
from safetensors import safe_open

from int4_lora_harness.reference import formats

NAMES = {  # fmt -> (required tensor names, optional tensor names)
    "compressed-tensors": ({"weight_packed", "weight_scale", "weight_shape"}, {"weight_zero_point"}),
    "gptq": ({"qweight", "qzeros", "scales", "g_idx"}, set()),
    "gptq_v2": ({"qweight", "qzeros", "scales", "g_idx"}, set()),
    "awq": ({"qweight", "qzeros", "scales"}, set()),
}
INT32 = {"weight_packed", "qweight", "qzeros"}  # packed 4-bit fields: int32 in every format
LAYER_EXTRAS = {"bias"}


class Layer(NamedTuple):
    """One linear layer in the canonical layout (docs/contract.md#packed-weight), on the CPU."""
    packed_weights: torch.Tensor  # uint8 [out, in // 2]
    scales: torch.Tensor  # [1] | [out] | [out, G], the checkpoint's float dtype
    zero_points: torch.Tensor | None  # int8, shape rules as scales
    group_size: int | None
    perm: torch.Tensor | None  # int64 [in]: the layer computes x[:, perm] @ W^T
    bias: torch.Tensor | None  # [out]
    fmt: str


def read_layer_tensors(path, prefix):
    """{local name: tensor} for the tensors named `prefix.NAME` (NAME without dots) in `path`."""
    with safe_open(path, framework="pt") as f:
        keys = list(f.keys())
        names = [k[len(prefix) + 1:] for k in keys if k.startswith(prefix + ".")]
        tensors = {name: f.get_tensor(f"{prefix}.{name}") for name in names if "." not in name}
    if not tensors:
        layers = sorted({k.rsplit(".", 1)[0] for k in keys})
        raise ValueError(f"no tensors under prefix {prefix!r} in {path}; "
                         f"layer prefixes there include {layers[:5]}")
    return tensors


def detect_format(tensors):
    """{local name: tensor} -> fmt of NAMES ('gptq' for GPTQ names: v1 zeros), or ValueError."""
    names = set(tensors) - LAYER_EXTRAS
    if "weight" in names:
        dtype = tensors["weight"].dtype
        what = "a quantized 8-bit (fp8/int8) weight" if "weight_scale" in names else "an unquantized weight"
        raise ValueError(f"weight is {dtype} with tensors {sorted(names)}: {what}, not an INT4-packed one "
                         f"(INT4 formats store weight_packed or qweight)")
    for fmt in ("compressed-tensors", "gptq", "awq"):
        required, optional = NAMES[fmt]
        if required <= names <= required | optional:
            return fmt
    raise ValueError(f"tensors {sorted(names)} match no INT4 format; expected exactly " +
                     "; ".join(f"{fmt}: {sorted(r)} + optional {sorted(o)}" for fmt, (r, o) in NAMES.items()))


def check_names_and_dtypes(tensors, fmt):
    """ValueError unless `tensors` are exactly the tensors of `fmt`, int32 where packed."""
    if fmt not in NAMES:
        raise ValueError(f"fmt must be one of {sorted(NAMES)}, got {fmt!r}")
    required, optional = NAMES[fmt]
    names = set(tensors) - LAYER_EXTRAS
    if not required <= names <= required | optional:
        raise ValueError(f"{fmt} needs tensors {sorted(required)} (optional {sorted(optional)}), "
                         f"found {sorted(names)}: missing {sorted(required - names)}, "
                         f"unexpected {sorted(names - required - optional)}")
    for name in INT32 & names:
        if tensors[name].dtype != torch.int32:
            raise ValueError(f"{name} is {tensors[name].dtype}; {fmt} packs 4-bit fields into int32")


def to_numpy(t):
    """torch CPU tensor -> NumPy array; bf16 becomes float32 (exact: every bf16 is a float32)."""
    return t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()


def load_layer(path, prefix, fmt=None, group_size=None):
    """Load the layer `prefix` (e.g. "model.layers.0.mlp.down_proj") of a .safetensors file.

    fmt: one of NAMES, detected from the tensor names when None (GPTQ names read as 'gptq',
    the v1 zero convention). group_size: needed for grouped compressed-tensors and AWQ layers
    (it lives in the checkpoint's config, not in its tensors); GPTQ reads it from g_idx.
    """
    tensors = read_layer_tensors(path, prefix)
    fmt = detect_format(tensors) if fmt is None else fmt
    check_names_and_dtypes(tensors, fmt)
    arrays = {name: to_numpy(t) for name, t in tensors.items() if name not in LAYER_EXTRAS}
    if fmt == "compressed-tensors":
        c = formats.from_compressed_tensors(**arrays, group_size=group_size)
    elif fmt == "awq":
        c = formats.from_awq(**arrays, group_size=group_size)
    else:
        c = formats.from_gptq(**arrays, version="v2" if fmt == "gptq_v2" else "v1", group_size=group_size)
    scale_dtype = tensors["weight_scale" if fmt == "compressed-tensors" else "scales"].dtype
    return Layer(
        packed_weights=torch.from_numpy(c.packed),
        scales=torch.from_numpy(np.ascontiguousarray(c.scales)).to(scale_dtype),
        zero_points=None if c.zero_points is None else torch.from_numpy(np.ascontiguousarray(c.zero_points)),
        group_size=c.group_size,
        perm=None if c.perm is None else torch.from_numpy(c.perm).long(),
        bias=tensors.get("bias"),
        fmt=fmt,
    )
