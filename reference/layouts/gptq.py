"""GPTQ (v1 and v2 zeros, act-order g_idx) <-> canonical. NumPy only; byte layout: docs/layouts/gptq.md.

| tensor  | dtype, shape            | holds                                                           |
| ------- | ----------------------- | --------------------------------------------------------------- |
| qweight | int32 [in / 8, out]     | q = v + 8, 8 input rows per word, sequential                    |
| qzeros  | int32 [G, ceil(out/8)]  | v1: qz = z + 7 (the true zero minus one); v2: qz = z + 8       |
| scales  | float [G, out]          | s                                                               |
| g_idx   | int32 [in]              | the group of each input column                                  |

GPTQ act-order: g_idx[k] is the group of input column k. `from_gptq` returns the stable sort
`perm = argsort(g_idx)`: canonical column c holds original column perm[c], so the layer computes
x[:, perm] @ W_canonical^T, and canonical column c is in group c // group_size. perm is None when
it is the identity (g_idx == arange(in) // group_size). `to_gptq` writes original column j from
canonical column argsort(perm)[j], with g_idx[j] = argsort(perm)[j] // group_size.
"""
import numpy as np

from int4_lora_harness.reference.layouts.canonical import (Canonical, as_groups, check_shape, floats, from_groups,
                                                           int32_2d, integers)
from int4_lora_harness.reference.layouts.fields import int32_to_nibbles, nibbles_to_int32, pad_to_8, words_for
from int4_lora_harness.reference.packing import pack, unpack

GPTQ_ZERO_OFFSET = {"v1": 7, "v2": 8}  # canonical z = stored qzeros field - offset


def from_gptq(qweight, qzeros, scales, g_idx, version="v1", group_size=None):
    """GPTQ -> Canonical, with `perm` for act-order layers (see the module docstring).

    qweight: int32 [in / 8, out]; qzeros: int32 [G, ceil(out / 8)]; scales: float [G, out];
    g_idx: integer [in], the group of each input column, in [0, G); version: "v1" (stored zero
    = true zero - 1, the usual GPTQ checkpoint) or "v2"; group_size: checked against g_idx if
    given, else read from g_idx (the size of its largest group).
    """
    offset = _gptq_offset(version)
    qweight = int32_2d(qweight, "qweight")
    in_features, out_features = 8 * qweight.shape[0], qweight.shape[1]
    scales = floats(scales, "scales", ndim=2)
    check_shape(scales, (scales.shape[0], out_features), "scales", f"[G, out], out = {out_features} from qweight")
    groups = scales.shape[0]
    qzeros = int32_2d(qzeros, "qzeros")
    check_shape(qzeros, (groups, words_for(out_features)), "qzeros", "[G, ceil(out / 8)]")
    perm, group_size = act_order(g_idx, in_features, groups, group_size)
    values = int32_to_nibbles(qweight.T).astype(np.int8) - 8  # v: [out, in]
    if perm is not None:
        values = values[:, perm]  # canonical column c <- original column perm[c]
    zeros = int32_to_nibbles(qzeros)[:, :out_features].astype(np.int8) - offset  # z: [G, out]
    scales, zero_points, group_size = from_groups(scales, zeros, group_size)
    return Canonical(pack(values), scales, zero_points, group_size, perm)


def _gptq_offset(version):
    if version not in GPTQ_ZERO_OFFSET:
        raise ValueError(f"version must be 'v1' or 'v2', got {version!r}")
    return GPTQ_ZERO_OFFSET[version]


def act_order(g_idx, in_features, groups, group_size=None):
    """g_idx: integer [in] -> (perm int64 [in] | None, group_size).

    perm = stable argsort(g_idx), None when it is the identity. The groups must be the
    contiguous groups of the canonical layout once sorted: every group has group_size
    columns but the last, which has the rest.
    """
    g_idx = np.asarray(g_idx)
    if not np.issubdtype(g_idx.dtype, np.integer) or g_idx.shape != (in_features,):
        raise ValueError(f"g_idx must be an integer array of shape [{in_features}], "
                         f"got {g_idx.dtype} {list(g_idx.shape)}")
    if g_idx.min() < 0 or g_idx.max() >= groups:
        raise ValueError(f"g_idx must lie in [0, {groups - 1}] ({groups} groups of scales), "
                         f"got values in [{g_idx.min()}, {g_idx.max()}]")
    counts = np.bincount(g_idx, minlength=groups)
    size = int(counts.max()) if group_size is None else group_size
    if size <= 0 or -(-in_features // size) != groups:
        raise ValueError(f"g_idx: group_size {size} gives ceil({in_features} / {size}) groups, scales have {groups}")
    expected = np.diff(np.minimum(np.arange(groups + 1) * size, in_features))
    if not np.array_equal(counts, expected):
        raise ValueError(f"g_idx must put group_size = {size} columns in every group but the last; "
                         f"got group sizes {counts.tolist()}")
    perm = np.argsort(g_idx, kind="stable")
    return (None if np.array_equal(perm, np.arange(in_features)) else perm), size


def to_gptq(c, version="v1"):
    """Canonical -> dict of GPTQ arrays qweight, qzeros, scales, g_idx (see from_gptq).

    in must be a multiple of 8; canonical zero points must lie in [-7, 8] for "v1" (a true zero
    of 0 cannot be stored minus one) and in [-8, 7] for "v2". Per-tensor and per-channel
    scales become one group (g_idx all 0).
    """
    offset = _gptq_offset(version)
    values = unpack(c.packed)  # v: [out, in], canonical column order
    out_features, in_features = values.shape
    if in_features % 8:
        raise ValueError(f"packed: GPTQ packs 8 input rows per int32, in_features {in_features} is not a multiple of 8")
    scales, zeros, groups, group_size = as_groups(c, out_features, in_features)
    inverse = _inverse(c.perm, in_features)  # original column j <- canonical column inverse[j]
    stored_zeros = integers(zeros, "zero_points", -offset, 15 - offset) + offset  # [out, G]
    return {
        "qweight": nibbles_to_int32((values[:, inverse] + 8).astype(np.uint8)).T.copy(),  # [in/8, out]
        "qzeros": nibbles_to_int32(pad_to_8(stored_zeros.T.astype(np.uint8))),  # [G, ceil(out/8)]
        "scales": scales.T.copy(),  # [G, out]
        "g_idx": (inverse // group_size).astype(np.int32),  # [in]
    }


def _inverse(perm, in_features):
    """perm: int [in] | None -> its inverse permutation (identity for None), or ValueError."""
    if perm is None:
        return np.arange(in_features)
    perm = np.asarray(perm)
    if perm.shape != (in_features,) or not np.array_equal(np.sort(perm), np.arange(in_features)):
        raise ValueError(f"perm must be a permutation of range({in_features}), got shape {list(perm.shape)}")
    return np.argsort(perm)


