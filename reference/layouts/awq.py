"""AWQ (GEMM layout) <-> canonical. NumPy only; byte layout: docs/layouts/awq.md.

| tensor  | dtype, shape              | holds                                                  |
| ------- | ------------------------- | ------------------------------------------------------ |
| qweight | int32 [in, ceil(out / 8)] | q = v + 8, 8 output columns per word, AWQ_ORDER        |
| qzeros  | int32 [G, ceil(out / 8)]  | qz = z + 8, likewise                                   |
| scales  | float [G, out]            | s                                                      |

W = (q - qz) * s; group_size comes from the config and is never inferred from in / G.
"""
import numpy as np

from int4_lora_harness.reference.layouts.canonical import (Canonical, as_groups, check_shape, floats, from_groups,
                                                           int32_2d, integers, no_perm)
from int4_lora_harness.reference.layouts.fields import (AWQ_ORDER, int32_to_nibbles, nibbles_to_int32, pad_to_8,
                                                        words_for)
from int4_lora_harness.reference.packing import pack, unpack


def from_awq(qweight, qzeros, scales, group_size=None):
    """AWQ (GEMM layout) -> Canonical.

    qweight: int32 [in, ceil(out / 8)], AWQ_ORDER within each int32; qzeros: int32
    [G, ceil(out / 8)], likewise; scales: float [G, out]; group_size: int, needed when G > 1 and
    checked against G whenever given (never inferred from in / G). Fields are unsigned: W = (q - qz) * s.
    """
    scales = floats(scales, "scales", ndim=2)
    groups, out_features = scales.shape
    qweight = int32_2d(qweight, "qweight")
    in_features = qweight.shape[0]
    check_shape(qweight, (in_features, words_for(out_features)), "qweight",
                f"[in, ceil(out / 8)], out = {out_features} from scales")
    qzeros = int32_2d(qzeros, "qzeros")
    check_shape(qzeros, (groups, words_for(out_features)), "qzeros", "[G, ceil(out / 8)]")
    if in_features % 2:
        raise ValueError(f"qweight has {in_features} input rows; the canonical layout needs an even number")
    if (groups > 1 or group_size is not None) and (group_size is None or group_size <= 0
                                                   or -(-in_features // group_size) != groups):
        raise ValueError(f"group_size must be given for {groups} groups of scales and make ceil(in / group_size) "
                         f"= {groups} with in = {in_features}; got {group_size!r}")
    values = int32_to_nibbles(qweight, AWQ_ORDER)[:, :out_features].T.astype(np.int8) - 8  # v: [out, in]
    zeros = int32_to_nibbles(qzeros, AWQ_ORDER)[:, :out_features].astype(np.int8) - 8  # z: [G, out]
    scales, zero_points, group_size = from_groups(scales, zeros, group_size)
    return Canonical(pack(values), scales, zero_points, group_size)


def to_awq(c):
    """Canonical -> dict of AWQ arrays qweight, qzeros, scales (see from_awq); zeros in [-8, 7], no perm."""
    no_perm(c, "AWQ")
    values = unpack(c.packed)  # v: [out, in]
    scales, zeros, _, _ = as_groups(c, *values.shape)
    stored_zeros = integers(zeros, "zero_points", -8, 7) + 8  # [out, G]
    return {
        "qweight": nibbles_to_int32(pad_to_8((values + 8).T.astype(np.uint8)), AWQ_ORDER),  # [in, ceil(out/8)]
        "qzeros": nibbles_to_int32(pad_to_8(stored_zeros.T.astype(np.uint8)), AWQ_ORDER),  # [G, ceil(out/8)]
        "scales": scales.T.copy(),  # [G, out]
    }
