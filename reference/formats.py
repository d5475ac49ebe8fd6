"""Checkpoint formats into and out of the canonical layout of SPEC §1-2. NumPy only.

Canonical: `packed` uint8 [out, in // 2] (reference.pack: low nibble = column 2j, high nibble =
column 2j + 1, nibble q stands for v = q - 8), scales and zero points per-tensor, [out] or
[out, ceil(in / group_size)], and W[o, c] = (v[o, c] - z[o, c]) * s[o, c].

Every format packs 4-bit fields q in [0, 15] into int32 words, field i at bits 4i..4i+3; in
canonical terms (qz = stored zero field, G = number of groups; table in docs/formats.md):

| format             | weights                         | v     | zeros                         | z      |
| ------------------ | ------------------------------- | ----- | ----------------------------- | ------ |
| compressed-tensors | weight_packed [out, ceil(in/8)] | q - 8 | weight_zero_point [ceil(out/8), G] | qz - 8 |
| GPTQ "v1"          | qweight [in/8, out]             | q - 8 | qzeros [G, ceil(out/8)]       | qz - 7 |
| GPTQ "v2"          | qweight [in/8, out]             | q - 8 | qzeros [G, ceil(out/8)]       | qz - 8 |
| AWQ                | qweight [in, ceil(out/8)]       | q - 8 | qzeros [G, ceil(out/8)]       | qz - 8 |

compressed-tensors and GPTQ fill a word sequentially (element k of a block of 8 in field k), AWQ
in AWQ_ORDER (field i holds element AWQ_ORDER[i] = (0, 2, 4, 6, 1, 3, 5, 7)[i] of its block of 8
output columns). Unused trailing fields (a row shorter than a multiple of 8) are written as 0 and
ignored when read. compressed-tensors' v and z are its own int8 value and zero point (its dequant
is (v - zp) * s); its per-tensor zero point is [1] int8, not packed. GPTQ "v1" stores the true
zero minus one (W = (q - (qz + 1)) * s), "v2" does not; AWQ: W = (q - qz) * s.

Scales: compressed-tensors weight_scale is [1] per-tensor, [out, 1] per-channel or [out, G]
grouped (canonical: [1], [out], [out, G]); GPTQ and AWQ `scales` are [G, out] (canonical
[out, G], or [out] when G == 1). Scale dtypes are kept as given.

GPTQ act-order: g_idx[k] is the group of input column k. `from_gptq` returns the stable sort
`perm = argsort(g_idx)`: canonical column c holds original column perm[c], so the layer computes
x[:, perm] @ W_canonical^T, and canonical column c is in group c // group_size. perm is None when
it is the identity (g_idx == arange(in) // group_size). `to_gptq` writes original column j from
canonical column argsort(perm)[j], with g_idx[j] = argsort(perm)[j] // group_size.

Canonical zero points returned here are int8; they are None where the format has none
(symmetric compressed-tensors) and where every canonical zero is 0 (symmetric GPTQ / AWQ), which
dequantizes identically.
"""
from typing import NamedTuple

import numpy as np

from int4_lora_harness.reference.granularity import granularity
from int4_lora_harness.reference.packing import pack, unpack

SEQUENTIAL = (0, 1, 2, 3, 4, 5, 6, 7)  # field i of an int32 holds element i of its block of 8
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # field i holds element AWQ_ORDER[i]
GPTQ_ZERO_OFFSET = {"v1": 7, "v2": 8}  # canonical z = stored qzeros field - offset


class Canonical(NamedTuple):
    """One layer in the canonical layout; `perm` is None unless the layer is act-ordered."""
    packed: np.ndarray  # uint8 [out, in // 2]
    scales: np.ndarray  # float [1] | [out] | [out, G]
    zero_points: np.ndarray | None  # int8 (or any integer-valued array), shape rules as scales
    group_size: int | None  # set for grouped scales or zero points
    perm: np.ndarray | None = None  # int [in]: canonical column c holds original column perm[c]


# --- int32 words <-> 4-bit fields --------------------------------------------------------

def int32_to_nibbles(words, order=SEQUENTIAL):
    """int32 [..., n] -> uint8 [..., 8 n] in [0, 15]; element 8 w + order[i] is field i of word w."""
    fields = (words.view(np.uint32)[..., None] >> (4 * np.arange(8, dtype=np.uint32))) & 0xF  # [..., n, 8]
    elements = fields[..., np.argsort(order)]  # element e sits in field argsort(order)[e]
    return elements.reshape(*words.shape[:-1], 8 * words.shape[-1]).astype(np.uint8)


def nibbles_to_int32(nibbles, order=SEQUENTIAL):
    """uint8 [..., 8 n] in [0, 15] -> int32 [..., n]; the inverse of int32_to_nibbles."""
    blocks = nibbles.astype(np.uint32).reshape(*nibbles.shape[:-1], -1, 8)  # [..., n, 8] by element
    fields = blocks[..., list(order)] << (4 * np.arange(8, dtype=np.uint32))  # field i <- element order[i]
    return np.bitwise_or.reduce(fields, axis=-1).view(np.int32).copy()  # copy: plain C strides


def pad_to_8(nibbles):
    """uint8 [..., n] -> [..., 8 ceil(n / 8)], padded with zero fields."""
    return np.pad(nibbles, [(0, 0)] * (nibbles.ndim - 1) + [(0, -nibbles.shape[-1] % 8)])


def words_for(n):
    """Number of int32 words that hold n 4-bit fields."""
    return -(-n // 8)


# --- validation at the public boundary ---------------------------------------------------

def _int32(t, name):
    """t as a 2-D int32 array, or ValueError naming it."""
    t = np.asarray(t)
    if t.dtype != np.int32:
        raise ValueError(f"{name} must be int32, got {t.dtype}")
    if t.ndim != 2 or t.size == 0:
        raise ValueError(f"{name} must be 2-D and not empty, got shape {list(t.shape)}")
    return t


def _floats(t, name, ndim=None):
    """t as a floating-point array (of `ndim` dims if given), or ValueError naming it."""
    t = np.asarray(t)
    if not np.issubdtype(t.dtype, np.floating):
        raise ValueError(f"{name} must be floating point, got {t.dtype}")
    if ndim is not None and t.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {list(t.shape)}")
    return t


def _shape(t, shape, name, rule):
    if t.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {list(shape)} ({rule}), got {list(t.shape)}")


def _integers(t, name, low, high):
    """Integer-valued t (any real dtype) in [low, high] -> int8, or ValueError naming it."""
    t = np.asarray(t)
    if not (np.issubdtype(t.dtype, np.integer) or np.issubdtype(t.dtype, np.floating)):
        raise ValueError(f"{name} must be integer or floating point, got {t.dtype}")
    if t.size and (np.any(t != np.rint(t)) or t.min() < low or t.max() > high):
        raise ValueError(f"{name} must hold integers in [{low}, {high}] for this format, "
                         f"got values in [{t.min()}, {t.max()}]")
    return t.astype(np.int8)


def _zero_or_none(z):
    """Canonical int8 zero points, or None where all are 0 (same dequantized weights)."""
    return None if not np.any(z) else z


# --- compressed-tensors pack-quantized ---------------------------------------------------

def from_compressed_tensors(weight_packed, weight_scale, weight_shape, weight_zero_point=None, group_size=None):
    """compressed-tensors pack-quantized (4-bit) -> Canonical.

    weight_packed: int32 [out, ceil(in / 8)]; weight_scale: float [1] | [out, 1] | [out, G];
    weight_shape: integer [2] = (out, in), in even; weight_zero_point: int32 [ceil(out / 8), G]
    (G = 1 per-channel) packed along dim 0, or integer [1] unpacked for per-tensor scales;
    group_size: int, needed for grouped scales. A [out, 1] scale is per-channel unless a
    group_size is given.
    """
    out_features, in_features = _weight_shape(weight_shape)
    weight_packed = _int32(weight_packed, "weight_packed")
    _shape(weight_packed, (out_features, words_for(in_features)), "weight_packed",
           f"weight_shape {[out_features, in_features]} packed 8 columns per int32")
    scale = _floats(weight_scale, "weight_scale")
    per_channel = scale.shape == (out_features, 1) and group_size is None
    scales = (scale[:, 0] if per_channel else scale).copy()  # [out, 1] -> [out]
    kind = granularity(scales, out_features, in_features, group_size, "weight_scale")
    zero_points = None
    if weight_zero_point is not None:
        zero_points = _ct_zero_points(weight_zero_point, scale, out_features).reshape(scales.shape)
    values = int32_to_nibbles(weight_packed)[:, :in_features].astype(np.int8) - 8  # v: [out, in]
    return Canonical(pack(values), scales, zero_points, group_size if kind == "grouped" else None)


def _weight_shape(weight_shape):
    """weight_shape: integer [2] -> (out, in), with in even, or ValueError."""
    t = np.asarray(weight_shape)
    if not np.issubdtype(t.dtype, np.integer) or t.shape != (2,):
        raise ValueError(f"weight_shape must be an integer array of shape [2], got {t.dtype} {list(t.shape)}")
    out_features, in_features = (int(n) for n in t)
    if out_features <= 0 or in_features <= 0 or in_features % 2:
        raise ValueError(f"weight_shape must be [out, in] with out > 0 and in > 0 even "
                         f"(the canonical layout packs column pairs), got {[out_features, in_features]}")
    return out_features, in_features


def _ct_zero_points(weight_zero_point, weight_scale, out_features):
    """compressed-tensors zero points -> canonical int8 [1] (per-tensor) or [out, G].

    compressed-tensors packs zero points along dim 0 for its channel and group strategies
    (2-D weight_scale [out, G]) and stores the per-tensor one ([1] weight_scale) unpacked.
    """
    if weight_scale.ndim != 2:
        zp = np.asarray(weight_zero_point)
        if zp.size != 1:
            raise ValueError(f"weight_zero_point must have 1 element for a per-tensor weight_scale, "
                             f"got shape {list(zp.shape)}")
        return _integers(zp.reshape(1), "weight_zero_point", -8, 7)
    zp = _int32(weight_zero_point, "weight_zero_point")
    _shape(zp, (words_for(out_features), weight_scale.shape[1]), "weight_zero_point",
           "[ceil(out / 8), G], packed 8 output rows per int32 along dim 0")
    return int32_to_nibbles(zp.T)[:, :out_features].T.astype(np.int8) - 8  # [out, G]


def to_compressed_tensors(c):
    """Canonical -> dict of compressed-tensors pack-quantized arrays (see from_compressed_tensors).

    Zero points must share the scales' granularity and lie in [-8, 7]; grouped layers need
    in % group_size == 0 (compressed-tensors' dequantize refuses ragged groups); no perm.
    One-element scales are written per-tensor ([1], zero point unpacked), also when out == 1.
    """
    if c.perm is not None:
        raise ValueError("perm: this pack-quantized writer has no act-order (weight_g_idx) support")
    values = unpack(c.packed)  # v: [out, in]
    out_features, in_features = values.shape
    kind = granularity(c.scales, out_features, in_features, c.group_size, "scales")
    if kind == "grouped" and in_features % c.group_size:
        raise ValueError(f"group_size {c.group_size} must divide in_features {in_features} for compressed-tensors")
    shape = {"per-tensor": (1,), "per-channel": (out_features, 1), "grouped": np.shape(c.scales)}[kind]
    tensors = {
        "weight_packed": nibbles_to_int32(pad_to_8((values + 8).astype(np.uint8))),  # [out, ceil(in/8)]
        "weight_scale": np.asarray(c.scales).reshape(shape).copy(),
        "weight_shape": np.array([out_features, in_features], dtype=np.int64),
    }
    if c.zero_points is not None:
        if granularity(c.zero_points, out_features, in_features, c.group_size, "zero_points") != kind:
            raise ValueError("zero_points must have the granularity of scales for compressed-tensors")
        z = _integers(c.zero_points, "zero_points", -8, 7)
        if kind == "per-tensor":
            tensors["weight_zero_point"] = z.reshape(1)
        else:
            nibbles = (z.reshape(out_features, -1).T + 8).astype(np.uint8)  # [G, out]
            tensors["weight_zero_point"] = nibbles_to_int32(pad_to_8(nibbles)).T.copy()  # [ceil(out/8), G]
    return tensors


# --- GPTQ and AWQ: [G, out] scales and zeros ---------------------------------------------

def _as_groups(c, out_features, in_features):
    """Canonical scales and zero points -> (scales [out, G], zero points [out, G], G, group_size)."""
    kinds = [granularity(c.scales, out_features, in_features, c.group_size, "scales")]
    if c.zero_points is not None:
        kinds.append(granularity(c.zero_points, out_features, in_features, c.group_size, "zero_points"))
    groups = -(-in_features // c.group_size) if "grouped" in kinds else 1
    scales = _broadcast(c.scales, kinds[0], out_features, groups)
    zeros = np.zeros((out_features, groups), np.int8) if c.zero_points is None else \
        _broadcast(c.zero_points, kinds[1], out_features, groups)
    return scales, zeros, groups, (c.group_size if groups > 1 else in_features)


def _broadcast(t, kind, out_features, groups):
    """Per-tensor, per-channel or grouped t -> a new array [out, G] of its dtype."""
    t = np.asarray(t)
    return t.copy() if kind == "grouped" else np.broadcast_to(t.reshape(-1, 1), (out_features, groups)).copy()


def _from_groups(scales, zeros, group_size):
    """Format [G, out] scales and canonical int8 zeros -> (scales, zero points, group_size) canonical."""
    if scales.shape[0] == 1:
        return scales[0].copy(), _zero_or_none(zeros[0]), None  # per-channel
    return scales.T.copy(), _zero_or_none(zeros.T.copy()), group_size


# --- GPTQ ----------------------------------------------------------------------------------

def from_gptq(qweight, qzeros, scales, g_idx, version="v1", group_size=None):
    """GPTQ -> Canonical, with `perm` for act-order layers (see the module docstring).

    qweight: int32 [in / 8, out]; qzeros: int32 [G, ceil(out / 8)]; scales: float [G, out];
    g_idx: integer [in], the group of each input column, in [0, G); version: "v1" (stored zero
    = true zero - 1, the usual GPTQ checkpoint) or "v2"; group_size: checked against g_idx if
    given, else read from g_idx (the size of its largest group).
    """
    offset = _gptq_offset(version)
    qweight = _int32(qweight, "qweight")
    in_features, out_features = 8 * qweight.shape[0], qweight.shape[1]
    scales = _floats(scales, "scales", ndim=2)
    _shape(scales, (scales.shape[0], out_features), "scales", f"[G, out], out = {out_features} from qweight")
    groups = scales.shape[0]
    qzeros = _int32(qzeros, "qzeros")
    _shape(qzeros, (groups, words_for(out_features)), "qzeros", "[G, ceil(out / 8)]")
    perm, group_size = act_order(g_idx, in_features, groups, group_size)
    values = int32_to_nibbles(qweight.T).astype(np.int8) - 8  # v: [out, in]
    if perm is not None:
        values = values[:, perm]  # canonical column c <- original column perm[c]
    zeros = int32_to_nibbles(qzeros)[:, :out_features].astype(np.int8) - offset  # z: [G, out]
    scales, zero_points, group_size = _from_groups(scales, zeros, group_size)
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
    scales, zeros, groups, group_size = _as_groups(c, out_features, in_features)
    inverse = _inverse(c.perm, in_features)  # original column j <- canonical column inverse[j]
    stored_zeros = _integers(zeros, "zero_points", -offset, 15 - offset) + offset  # [out, G]
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


# --- AWQ -----------------------------------------------------------------------------------

def from_awq(qweight, qzeros, scales, group_size=None):
    """AWQ (GEMM layout) -> Canonical.

    qweight: int32 [in, ceil(out / 8)], AWQ_ORDER within each int32; qzeros: int32
    [G, ceil(out / 8)], likewise; scales: float [G, out]; group_size: int, needed when G > 1 and
    checked against G whenever given (never inferred from in / G). Fields are unsigned: W = (q - qz) * s.
    """
    scales = _floats(scales, "scales", ndim=2)
    groups, out_features = scales.shape
    qweight = _int32(qweight, "qweight")
    in_features = qweight.shape[0]
    _shape(qweight, (in_features, words_for(out_features)), "qweight",
           f"[in, ceil(out / 8)], out = {out_features} from scales")
    qzeros = _int32(qzeros, "qzeros")
    _shape(qzeros, (groups, words_for(out_features)), "qzeros", "[G, ceil(out / 8)]")
    if in_features % 2:
        raise ValueError(f"qweight has {in_features} input rows; the canonical layout needs an even number")
    if (groups > 1 or group_size is not None) and (group_size is None or group_size <= 0
                                                   or -(-in_features // group_size) != groups):
        raise ValueError(f"group_size must be given for {groups} groups of scales and make ceil(in / group_size) "
                         f"= {groups} with in = {in_features}; got {group_size!r}")
    values = int32_to_nibbles(qweight, AWQ_ORDER)[:, :out_features].T.astype(np.int8) - 8  # v: [out, in]
    zeros = int32_to_nibbles(qzeros, AWQ_ORDER)[:, :out_features].astype(np.int8) - 8  # z: [G, out]
    scales, zero_points, group_size = _from_groups(scales, zeros, group_size)
    return Canonical(pack(values), scales, zero_points, group_size)


def to_awq(c):
    """Canonical -> dict of AWQ arrays qweight, qzeros, scales (see from_awq); zeros in [-8, 7], no perm."""
    if c.perm is not None:
        raise ValueError("perm: AWQ has no act-order; apply the permutation to the weights first")
    values = unpack(c.packed)  # v: [out, in]
    scales, zeros, _, _ = _as_groups(c, *values.shape)
    stored_zeros = _integers(zeros, "zero_points", -8, 7) + 8  # [out, G]
    return {
        "qweight": nibbles_to_int32(pad_to_8((values + 8).T.astype(np.uint8)), AWQ_ORDER),  # [in, ceil(out/8)]
        "qzeros": nibbles_to_int32(pad_to_8(stored_zeros.T.astype(np.uint8)), AWQ_ORDER),  # [G, ceil(out/8)]
        "scales": scales.T.copy(),  # [G, out]
    }
