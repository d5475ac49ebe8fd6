"""Converters of reference/layouts/: every format against its definition, the canonical layout and each other.

The oracles below decode each format field by field with Python ints, straight from the format's
definition (docs/formats.md, docs/layouts/), independently of the vectorized converters; where the
format's own package is installed (gguf, hqq) its encoder and decoder are checked against ours too.
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra.numpy import arrays

from int4_lora_harness.reference import dequantize_exact, linear_exact, quantize
from int4_lora_harness.reference.layouts import (AWQ_ORDER, SEQUENTIAL, Canonical, from_awq, from_compressed_tensors,
                                                 from_gguf_q4_0, from_gguf_q4_1, from_gptq, from_hqq, int32_to_nibbles,
                                                 to_awq, to_compressed_tensors, to_gguf_q4_0, to_gguf_q4_1, to_gptq,
                                                 to_hqq)

FORMATS = ("compressed-tensors", "gptq-v1", "gptq-v2", "awq")
ZERO_RANGE = {"compressed-tensors": (-8, 7), "gptq-v1": (-7, 8), "gptq-v2": (-8, 7), "awq": (-8, 7)}
INT32 = st.integers(-2**31, 2**31 - 1)


def to_format(c, fmt):
    """Canonical -> the format's dict of arrays."""
    if fmt == "compressed-tensors":
        return to_compressed_tensors(c)
    return to_awq(c) if fmt == "awq" else to_gptq(c, version=fmt[-2:])


def from_format(tensors, fmt, group_size):
    """The format's dict of arrays -> Canonical (group_size as a checkpoint config would give it)."""
    if fmt == "compressed-tensors":
        return from_compressed_tensors(**tensors, group_size=group_size)
    if fmt == "awq":
        return from_awq(**tensors, group_size=group_size)
    return from_gptq(**tensors, version=fmt[-2:])


def weights(c):
    """float64 [out, in]: the canonical layer's exact dequantized weights, in the original column order."""
    w = dequantize_exact(c.packed, c.scales, c.zero_points, c.group_size)
    return w if c.perm is None else w[:, np.argsort(c.perm)]


def assert_same_canonical(got, want):
    for field in ("packed", "scales", "zero_points", "perm"):
        a, b = getattr(got, field), getattr(want, field)
        assert (a is None) == (b is None), field
        assert a is None or (a.shape == b.shape and np.array_equal(a, b)), field
    assert got.group_size == want.group_size


# --- oracles: each format decoded one field at a time ---------------------------------------

def field(word, i):
    """4-bit field i (bits 4i..4i+3) of an int32 word, as an int in [0, 15]."""
    return (int(word) >> (4 * i)) & 0xF


def gptq_weight(qweight, qzeros, scales, g_idx, version):
    """W[o, k] = (q - z_true) * s, original column order; v1 stores z_true - 1."""
    in_features, out_features = 8 * qweight.shape[0], qweight.shape[1]
    w = np.empty((out_features, in_features))
    for k in range(in_features):
        g = g_idx[k]
        for o in range(out_features):
            z = field(qzeros[g, o // 8], o % 8) + (1 if version == "v1" else 0)
            w[o, k] = (field(qweight[k // 8, o], k % 8) - z) * float(scales[g, o])
    return w


def awq_weight(qweight, qzeros, scales, group_size, order=AWQ_ORDER):
    """W[o, k] = (q - z) * s; output column 8 b + order[i] is field i of word b."""
    in_features, out_features = qweight.shape[0], scales.shape[1]
    position = {e: i for i, e in enumerate(order)}
    w = np.empty((out_features, in_features))
    for k in range(in_features):
        g = k // group_size
        for o in range(out_features):
            i = position[o % 8]
            w[o, k] = (field(qweight[k, o // 8], i) - field(qzeros[g, o // 8], i)) * float(scales[g, o])
    return w


def ct_weight(weight_packed, weight_scale, weight_shape, weight_zero_point, group_size):
    """W[o, c] = (q - 8 - zp) * s with 2-D scales [out, G]; zero points packed along dim 0."""
    out_features, in_features = weight_shape
    w = np.empty((out_features, in_features))
    for o in range(out_features):
        for c in range(in_features):
            g = c // group_size
            zp = 0 if weight_zero_point is None else field(weight_zero_point[o // 8, g], o % 8) - 8
            w[o, c] = (field(weight_packed[o, c // 8], c % 8) - 8 - zp) * float(weight_scale[o, g])
    return w


# --- strategies ---------------------------------------------------------------------------

@st.composite
def quantized_layers(draw, in_multiple=8):
    """Canonical layers from int4_lora_harness.reference.quantize of float weights; group sizes divide in."""
    out_features = draw(st.integers(1, 12))
    in_features = in_multiple * draw(st.integers(1, 32 // in_multiple))
    w = draw(arrays(np.float32, (out_features, in_features), elements=st.floats(-4, 4, width=32)))
    kind = draw(st.sampled_from(["per-tensor", "per-channel", "grouped"]))
    sizes = [d for d in range(1, in_features + 1) if in_features % d == 0]
    group_size = draw(st.sampled_from(sizes)) if kind == "grouped" else None
    packed, scales, zero_points = quantize(w, kind, group_size or 1, symmetric=draw(st.booleans()))
    return Canonical(packed, scales, zero_points, group_size)


@st.composite
def canonical_layers(draw, fmt):
    """Arbitrary canonical layers that `fmt` can hold, as its reader returns them (normalized)."""
    out_features = draw(st.integers(1, 12))
    in_features = (8 if fmt.startswith("gptq") else 2) * draw(st.integers(1, 4))
    kinds = ["per-tensor", "per-channel", "grouped"] if fmt == "compressed-tensors" else ["per-channel", "grouped"]
    kind = draw(st.sampled_from(kinds))
    if kind == "grouped" and fmt == "compressed-tensors":
        group_size = draw(st.sampled_from([d for d in range(1, in_features) if in_features % d == 0]))  # >= 2 groups
    elif kind == "grouped":
        group_size = draw(st.integers(1, in_features - 1))  # >= 2 groups, the last may be ragged
    else:
        group_size = None
    shape = {"per-tensor": (1,), "per-channel": (out_features,),
             "grouped": (out_features, -(-in_features // (group_size or 1)))}[kind]
    packed = draw(arrays(np.uint8, (out_features, in_features // 2)))
    scales = draw(arrays(np.float16, shape, elements=st.floats(-1e3, 1e3, width=16)))
    zero_points = None
    if draw(st.booleans()):
        zero_points = draw(arrays(np.int8, shape, elements=st.integers(*ZERO_RANGE[fmt])))
        if fmt != "compressed-tensors" and not zero_points.any():
            zero_points = None  # GPTQ and AWQ always store zeros; all 0 reads back as None
    perm = None
    if fmt.startswith("gptq") and kind == "grouped":
        g_idx = np.argsort(draw(st.permutations(range(in_features)))) // group_size
        perm = np.argsort(g_idx, kind="stable")  # the reader's perm: ascending within each group
        perm = None if np.array_equal(perm, np.arange(in_features)) else perm
    return Canonical(packed, scales, zero_points, group_size, perm)


@st.composite
def gptq_checkpoints(draw):
    """Raw GPTQ tensors, act-order or not, with power-of-two scales (every product exact)."""
    out_features, in_features = draw(st.integers(1, 12)), 8 * draw(st.integers(1, 4))
    group_size = draw(st.integers(1, in_features))
    groups = -(-in_features // group_size)
    order = draw(st.permutations(range(in_features)))  # columns in the order GPTQ quantized them
    return {
        "qweight": draw(arrays(np.int32, (in_features // 8, out_features), elements=INT32)),
        "qzeros": draw(arrays(np.int32, (groups, -(-out_features // 8)), elements=INT32)),
        "scales": 2.0 ** draw(arrays(np.int8, (groups, out_features), elements=st.integers(-3, 3))),
        "g_idx": (np.argsort(order) // group_size).astype(np.int32),
    }


# --- properties -----------------------------------------------------------------------------

@given(quantized_layers())
def test_every_format_dequantizes_the_same_quantized_weights_identically(c):
    want = dequantize_exact(c.packed, c.scales, c.zero_points, c.group_size)
    for fmt in FORMATS:
        if fmt == "gptq-v1" and c.zero_points is not None and (c.zero_points == -8).any():
            with pytest.raises(ValueError, match="zero_points"):  # true zero 0 cannot be stored as -1
                to_format(c, fmt)
            continue
        back = from_format(to_format(c, fmt), fmt, c.group_size)
        assert np.array_equal(weights(back), want), fmt


@given(st.data(), st.sampled_from(FORMATS))
def test_canonical_to_format_to_canonical_is_exact(data, fmt):
    c = data.draw(canonical_layers(fmt))
    assert_same_canonical(from_format(to_format(c, fmt), fmt, c.group_size), c)


@given(st.data(), st.sampled_from(FORMATS))
def test_format_to_canonical_to_format_is_exact(data, fmt):
    c = data.draw(canonical_layers(fmt))
    if fmt.startswith("gptq") and c.group_size is not None:  # any act-order, not only the reader's perm
        c = c._replace(perm=np.array(data.draw(st.permutations(range(2 * c.packed.shape[1])))))
    tensors = to_format(c, fmt)
    again = to_format(from_format(tensors, fmt, c.group_size), fmt)
    assert tensors.keys() == again.keys()
    for name in tensors:
        assert tensors[name].dtype == again[name].dtype and np.array_equal(tensors[name], again[name]), name


@given(gptq_checkpoints(), st.sampled_from(["v1", "v2"]), st.data())
def test_act_order_perm_applied_to_x_gives_the_gptq_linear(t, version, data):
    c = from_gptq(**t, version=version)
    x = data.draw(arrays(np.int8, (3, len(t["g_idx"])), elements=st.integers(-8, 8))).astype(np.float64)
    x_canonical = x if c.perm is None else x[:, c.perm]  # x[:, perm] @ W_canonical^T
    y = linear_exact(x_canonical, c.packed, c.scales, c.zero_points, c.group_size,
                     None, None, np.full(3, -1), 0.0, None)
    assert np.array_equal(y, x @ gptq_weight(**t, version=version).T)  # exact: every term is dyadic


@given(gptq_checkpoints(), st.sampled_from(["v1", "v2"]))
def test_gptq_reader_matches_the_field_by_field_definition(t, version):
    assert np.array_equal(weights(from_gptq(**t, version=version)), gptq_weight(**t, version=version))


@given(st.integers(1, 12), st.integers(1, 16), st.data())
def test_awq_reader_matches_the_field_by_field_definition(out_features, half_in, data):
    in_features = 2 * half_in
    group_size = data.draw(st.integers(1, in_features))
    groups, words = -(-in_features // group_size), -(-out_features // 8)
    t = {"qweight": data.draw(arrays(np.int32, (in_features, words), elements=INT32)),
         "qzeros": data.draw(arrays(np.int32, (groups, words), elements=INT32)),
         "scales": data.draw(arrays(np.float16, (groups, out_features), elements=st.floats(-8, 8, width=16)))}
    assert np.array_equal(weights(from_awq(**t, group_size=group_size)), awq_weight(**t, group_size=group_size))


@given(st.integers(1, 12), st.integers(1, 3), st.booleans(), st.data())
def test_compressed_tensors_reader_matches_the_field_by_field_definition(out_features, words, asym, data):
    in_features = 8 * words - data.draw(st.sampled_from([0, 2, 6]))  # trailing fields of a row unused
    group_size = data.draw(st.integers(1, in_features))
    groups = -(-in_features // group_size)
    t = {"weight_packed": data.draw(arrays(np.int32, (out_features, words), elements=INT32)),
         "weight_scale": data.draw(arrays(np.float32, (out_features, groups), elements=st.floats(-8, 8, width=32))),
         "weight_shape": np.array([out_features, in_features]),
         "weight_zero_point": None}
    if asym:
        t["weight_zero_point"] = data.draw(arrays(np.int32, (-(-out_features // 8), groups), elements=INT32))
    c = from_compressed_tensors(**t, group_size=group_size if groups > 1 else None)
    assert np.array_equal(weights(c), ct_weight(**t, group_size=group_size))


@given(quantized_layers())
def test_compressed_tensors_words_hold_the_canonical_bytes_in_little_endian_order(c):
    words = to_compressed_tensors(c)["weight_packed"]  # [out, in / 8]: in is a multiple of 8 here
    assert np.array_equal(words.astype("<i4").view(np.uint8).reshape(c.packed.shape), c.packed)


def test_an_awq_loader_that_ignores_the_interleave_order_is_caught():
    w = np.random.default_rng(0).standard_normal((16, 32))
    c = Canonical(*quantize(w, "grouped", 8, symmetric=False), group_size=8)
    t = to_awq(c)
    want = dequantize_exact(c.packed, c.scales, c.zero_points, 8)
    assert np.array_equal(awq_weight(**t, group_size=8), want)
    assert not np.array_equal(awq_weight(**t, group_size=8, order=SEQUENTIAL), want)  # the bug
    assert np.array_equal(weights(from_awq(**t, group_size=8)), want)


def test_int32_fields_are_read_in_the_stated_orders():
    word = np.array([0x76543210], dtype=np.uint32).view(np.int32)  # field i holds i
    assert int32_to_nibbles(word).tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert int32_to_nibbles(word, AWQ_ORDER).tolist() == [0, 4, 1, 5, 2, 6, 3, 7]  # element e sits in field


# --- malformed tensors ------------------------------------------------------------------------

def valid(fmt):
    """Small valid tensors of `fmt`: 16 x 32, 4 groups of 8, asymmetric."""
    w = np.random.default_rng(1).standard_normal((16, 32))
    c = Canonical(*quantize(w, "grouped", 8, symmetric=False), group_size=8)
    c = c._replace(zero_points=np.clip(c.zero_points, -7, 7))
    return to_format(c, fmt)


def replaced(tensors, name, value):
    return {**tensors, name: value(tensors[name])}


MALFORMED = [  # (fmt, tensor, how it is broken, the name the error must give)
    ("compressed-tensors", "weight_packed", lambda t: t.astype(np.uint8), "weight_packed"),
    ("compressed-tensors", "weight_packed", lambda t: t[:, :-1], "weight_packed"),
    ("compressed-tensors", "weight_shape", lambda t: t + [0, 8], "weight_shape"),
    ("compressed-tensors", "weight_shape", lambda t: t - [0, 1], "weight_shape"),
    ("compressed-tensors", "weight_shape", lambda t: t.astype(np.float32), "weight_shape"),
    ("compressed-tensors", "weight_scale", lambda t: t.astype(np.int32), "weight_scale"),
    ("compressed-tensors", "weight_scale", lambda t: t[:-1], "weight_scale"),
    ("compressed-tensors", "weight_zero_point", lambda t: t[:, :-1], "weight_zero_point"),
    ("compressed-tensors", "weight_zero_point", lambda t: t.astype(np.int8), "weight_zero_point"),
    ("gptq-v1", "qweight", lambda t: t.astype(np.int64), "qweight"),
    ("gptq-v1", "qweight", lambda t: t[None], "qweight"),
    ("gptq-v1", "qzeros", lambda t: t[:-1], "qzeros"),
    ("gptq-v1", "scales", lambda t: t[:, :-1], "scales"),
    ("gptq-v1", "scales", lambda t: t.astype(np.int32), "scales"),
    ("gptq-v1", "g_idx", lambda t: np.where(t == 3, 4, t), "g_idx"),  # out of range: 4 groups
    ("gptq-v1", "g_idx", lambda t: t - 1, "g_idx"),
    ("gptq-v1", "g_idx", lambda t: t[:-1], "g_idx"),
    ("gptq-v1", "g_idx", lambda t: t.astype(np.float32), "g_idx"),
    ("gptq-v2", "g_idx", lambda t: np.sort(t % 2), "g_idx"),  # two groups of 16: a group of 8 is meant
    ("awq", "qweight", lambda t: t.astype(np.float32), "qweight"),
    ("awq", "qweight", lambda t: t[:, :-1], "qweight"),
    ("awq", "qzeros", lambda t: t[:-1], "qzeros"),
    ("awq", "scales", lambda t: t[0], "scales"),
]


@pytest.mark.parametrize("fmt, name, breaks, message", MALFORMED)
def test_malformed_tensors_raise_value_errors_naming_the_tensor(fmt, name, breaks, message):
    with pytest.raises(ValueError, match=message):
        from_format(replaced(valid(fmt), name, breaks), fmt, 8)


def test_awq_group_size_is_required_and_never_inferred():
    with pytest.raises(ValueError, match="group_size"):
        from_awq(**valid("awq"))
    with pytest.raises(ValueError, match="group_size"):
        from_awq(**valid("awq"), group_size=16)
    one_group = {**valid("awq"), "scales": valid("awq")["scales"][:1], "qzeros": valid("awq")["qzeros"][:1]}
    with pytest.raises(ValueError, match="group_size"):  # one group of scales cannot be groups of 8 over 32 columns
        from_awq(**one_group, group_size=8)
    assert from_awq(**one_group).group_size is None  # one group: per-channel


def test_gptq_group_size_given_must_agree_with_g_idx():
    with pytest.raises(ValueError, match="g_idx"):
        from_gptq(**valid("gptq-v1"), group_size=16)
    with pytest.raises(ValueError, match="version"):
        from_gptq(**valid("gptq-v1"), version="v3")


def test_writers_refuse_what_the_format_cannot_hold():
    packed, scales, zero_points = quantize(np.random.default_rng(2).standard_normal((8, 12)), "grouped", 8, False)
    ragged = Canonical(packed, scales, np.full_like(zero_points, -8), 8)
    with pytest.raises(ValueError, match="group_size"):
        to_compressed_tensors(ragged)  # compressed-tensors refuses ragged groups
    with pytest.raises(ValueError, match="packed"):
        to_gptq(ragged)  # in = 12 is not a multiple of 8
    c16 = Canonical(*quantize(np.random.default_rng(3).standard_normal((8, 16)), "grouped", 8, False), group_size=8)
    with pytest.raises(ValueError, match="zero_points"):
        to_gptq(c16._replace(zero_points=np.full_like(c16.zero_points, -8)), version="v1")
    with pytest.raises(ValueError, match="zero_points"):
        to_awq(c16._replace(zero_points=c16.zero_points + 0.5))
    with pytest.raises(ValueError, match="perm"):
        to_awq(c16._replace(perm=np.arange(16)[::-1]))
    with pytest.raises(ValueError, match="perm"):
        to_gptq(c16._replace(perm=np.zeros(16, dtype=int)))
    with pytest.raises(ValueError, match="zero_points"):
        to_compressed_tensors(c16._replace(zero_points=np.zeros(8)))  # per-channel zeros, grouped scales


# --- GGUF Q4_0 / Q4_1 blocks --------------------------------------------------------------

def gguf_weight(blocks, shape, fmt):
    """W[o, 32 b + j] from the block layout, one block at a time: fp16 d [, fp16 m], then 16 bytes,
    byte j holding element j (low nibble) and element j + 16 (high nibble)."""
    out_features, in_features = shape
    size = {"q4_0": 18, "q4_1": 20}[fmt]
    w = np.empty((out_features, in_features))
    for o in range(out_features):
        for b in range(in_features // 32):
            block = bytes(blocks[o, b * size:(b + 1) * size])
            d = float(np.frombuffer(block[:2], "<f2")[0])
            m = float(np.frombuffer(block[2:4], "<f2")[0]) if fmt == "q4_1" else None
            qs = block[size - 16:]
            for j in range(32):
                q = qs[j % 16] >> 4 if j >= 16 else qs[j] & 0x0F
                w[o, 32 * b + j] = (q - 8) * d if m is None else q * d + m
    return w


def seven_bit_halves(draw, shape):
    """fp16 values of 7 significant bits, 2**-10 <= |d| <= 2**11, either sign (Q4_1's fitted d)."""
    significand = draw(arrays(np.int64, shape, elements=st.integers(64, 127)))
    exponent = draw(arrays(np.int64, shape, elements=st.integers(-16, 4)))
    sign = draw(arrays(np.int64, shape, elements=st.sampled_from([-1, 1])))
    return (sign * np.ldexp(significand.astype(np.float64), exponent)).astype(np.float16)


def q4_1_ratios(draw, shape):
    """r = m / d: k * 2**j with |k| <= 15 and j in [-4, 0], the form whose m = r * d is exact in fp16."""
    k = draw(arrays(np.int64, shape, elements=st.integers(-15, 15)))
    j = draw(arrays(np.int64, shape, elements=st.integers(-4, 0)))
    return np.ldexp(k.astype(np.float64), j)


@st.composite
def gguf_blocks(draw, fmt):
    """Raw Q4_0 blocks (any finite fp16 d) or Q4_1 blocks whose m / d the canonical layout holds."""
    out_features, blocks_per_row = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    shape = (out_features, blocks_per_row)
    qs = draw(arrays(np.uint8, (*shape, 16)))
    if fmt == "q4_0":
        d = draw(arrays(np.float16, shape, elements=st.floats(width=16, allow_nan=False)))
        halves = [d]
    else:
        d = seven_bit_halves(draw, shape)
        m = (q4_1_ratios(draw, shape) * d).astype(np.float16)
        halves = [d, np.where(m == 0, np.float16(0), m)]  # the writer's zero m is +0
    parts = [h.astype("<f2").view(np.uint8).reshape(*shape, 2) for h in halves] + [qs]
    return np.concatenate(parts, axis=-1).reshape(out_features, -1), (out_features, 32 * blocks_per_row)


@st.composite
def gguf_canonical_layers(draw, fmt):
    """Canonical layers a GGUF format holds: in % 32 == 0, fp16 scales (grouped: 32 or 64 columns, ragged or
    not), Q4_0 without zero points, Q4_1 with z = -8 - r of any granularity."""
    out_features, in_features = draw(st.integers(1, 5)), 32 * draw(st.integers(1, 4))
    kinds = ["per-tensor", "per-channel", "grouped"]
    scale_kind, zero_kind = draw(st.sampled_from(kinds)), draw(st.sampled_from(kinds))
    group_size = draw(st.sampled_from([32, 64]))
    shape = lambda kind: {"per-tensor": (1,), "per-channel": (out_features,),  # noqa: E731
                          "grouped": (out_features, -(-in_features // group_size))}[kind]
    scales = seven_bit_halves(draw, shape(scale_kind))
    zero_points = None
    if fmt == "q4_1" and draw(st.booleans()):
        zero_points = -8.0 - q4_1_ratios(draw, shape(zero_kind))
    uses_groups = scale_kind == "grouped" or (zero_points is not None and zero_kind == "grouped")
    return Canonical(draw(arrays(np.uint8, (out_features, in_features // 2))), scales, zero_points,
                     group_size if uses_groups else None)


GGUF = {"q4_0": (to_gguf_q4_0, from_gguf_q4_0), "q4_1": (to_gguf_q4_1, from_gguf_q4_1)}


@given(st.data(), st.sampled_from(sorted(GGUF)))
def test_gguf_blocks_to_canonical_to_blocks_are_byte_identical(data, fmt):
    blocks, shape = data.draw(gguf_blocks(fmt))
    to_blocks, from_blocks = GGUF[fmt]
    again = to_blocks(from_blocks(blocks, shape))
    assert again["shape"] == shape and again["blocks"].dtype == np.uint8
    assert np.array_equal(again["blocks"], blocks)


@given(st.data(), st.sampled_from(sorted(GGUF)))
def test_gguf_reader_matches_the_block_by_block_definition(data, fmt):
    blocks, shape = data.draw(gguf_blocks(fmt))
    with np.errstate(over="ignore", invalid="ignore"):  # an inf d times a zero nibble is nan in both
        assert np.array_equal(weights(GGUF[fmt][1](blocks, shape)), gguf_weight(blocks, shape, fmt), equal_nan=True)


@given(st.data(), st.sampled_from(sorted(GGUF)))
def test_canonical_to_gguf_keeps_the_dequantized_weights(data, fmt):
    c = data.draw(gguf_canonical_layers(fmt))
    t = GGUF[fmt][0](c)
    assert np.array_equal(gguf_weight(t["blocks"], t["shape"], fmt), weights(c))
    assert np.array_equal(weights(GGUF[fmt][1](**t)), weights(c))


def test_q4_0_refuses_zero_points_ragged_blocks_and_non_fp16_scales():
    c = Canonical(np.zeros((2, 32), np.uint8), np.full((2, 2), 0.5), None, 32)
    with pytest.raises(ValueError, match="zero_points"):
        to_gguf_q4_0(c._replace(zero_points=np.ones(2)))
    with pytest.raises(ValueError, match="multiple of 32"):
        to_gguf_q4_0(c._replace(packed=np.zeros((2, 24), np.uint8), scales=np.full((2, 2), 0.5)))
    with pytest.raises(ValueError, match="multiple of the format's block of 32"):
        to_gguf_q4_0(c._replace(scales=np.full((2, 4), 0.5), group_size=16))  # two scales in one block
    with pytest.raises(ValueError, match="fp16"):
        to_gguf_q4_0(c._replace(scales=np.full((2, 2), 0.1)))  # 0.1 is no fp16 number


def test_q4_1_refuses_a_zero_point_whose_m_is_no_fp16_and_a_block_whose_m_over_d_is_inexact():
    c = Canonical(np.zeros((1, 16), np.uint8), np.array([1.0]), np.array([0.1]), None)
    with pytest.raises(ValueError, match=r"zero_points: Q4_1 stores m = \(-8 - z\) \* d"):
        to_gguf_q4_1(c)  # m = -8.1 is no fp16 number
    block = np.concatenate([np.array([3.0, 1.0], "<f2").view(np.uint8), np.zeros(16, np.uint8)])[None]
    with pytest.raises(ValueError, match="blocks: Q4_1 block 0 of row 0"):
        from_gguf_q4_1(block, (1, 32))  # m / d = 1 / 3


def test_gguf_package_blocks_read_and_write_back_byte_for_byte():
    quants = pytest.importorskip("gguf.quants")
    kind = pytest.importorskip("gguf").GGMLQuantizationType.Q4_0
    w = np.random.default_rng(4).standard_normal((6, 128)).astype(np.float32)
    blocks = quants.quantize(w, kind)  # gguf-py's own Q4_0 encoder
    c = from_gguf_q4_0(blocks, w.shape)
    assert np.array_equal(to_gguf_q4_0(c)["blocks"], blocks)
    assert np.array_equal(quants.dequantize(blocks, kind).astype(np.float64), weights(c))  # its float32 is exact


@given(st.data(), st.sampled_from(sorted(GGUF)))
def test_gguf_package_dequantizes_our_blocks_to_the_canonical_weights(data, fmt):
    gguf = pytest.importorskip("gguf")
    c = data.draw(gguf_canonical_layers(fmt))
    kind = {"q4_0": gguf.GGMLQuantizationType.Q4_0, "q4_1": gguf.GGMLQuantizationType.Q4_1}[fmt]
    w = gguf.quants.dequantize(GGUF[fmt][0](c)["blocks"], kind)  # float32 d * q [+ m]: exact for these d, m
    assert w.shape == weights(c).shape and np.array_equal(w.astype(np.float64), weights(c))


# --- HQQ ------------------------------------------------------------------------------------

def hqq_weight(W_q, scale, zero, shape, group_size):  # noqa: N803
    """W from HQQ's definition, one element at a time: group row r < rows / 2 is the high nibble of W_q[r],
    row r >= rows / 2 the low nibble of W_q[r - rows / 2]; W.flat[r * g + k] = (q - zero[r]) * scale[r]."""
    half, g = W_q.shape
    w = np.empty(2 * half * g)
    for r in range(2 * half):
        for k in range(g):
            byte = int(W_q[r % half, k])
            q = byte >> 4 if r < half else byte & 0x0F
            w[r * g + k] = (q - float(zero.flat[r])) * float(scale.flat[r])
    return w.reshape(shape)


@st.composite
def hqq_tensors(draw):
    """Raw HQQ 4-bit tensors: out even, group_size None or a divisor of in, fp16 scale and zero."""
    out_features, in_features = 2 * draw(st.integers(1, 4)), 2 * draw(st.integers(1, 16))
    divisors = [d for d in range(2, in_features + 1) if in_features % d == 0]
    group_size = draw(st.one_of(st.none(), st.sampled_from(divisors)))
    g = group_size or in_features
    rows = out_features * in_features // g
    halves = st.floats(-1e3, 1e3, width=16)
    return dict(W_q=draw(arrays(np.uint8, (rows // 2, g))), scale=draw(arrays(np.float16, (rows, 1), elements=halves)),
                zero=draw(arrays(np.float16, (rows, 1), elements=halves)), shape=(out_features, in_features),
                group_size=group_size)


@given(hqq_tensors())
def test_hqq_tensors_to_canonical_to_tensors_are_identical(t):
    again = to_hqq(from_hqq(**t))
    assert again["shape"] == t["shape"] and again["group_size"] == t["group_size"]
    assert again["W_q"].dtype == np.uint8 and np.array_equal(again["W_q"], t["W_q"])
    assert np.array_equal(again["scale"], t["scale"]) and np.array_equal(again["zero"], t["zero"])


@given(hqq_tensors())
def test_hqq_reader_matches_the_element_by_element_definition(t):
    assert np.array_equal(weights(from_hqq(**t)), hqq_weight(**t))


@given(quantized_layers(in_multiple=2).filter(lambda c: c.packed.shape[0] % 2 == 0))
def test_canonical_to_hqq_keeps_the_dequantized_weights(c):
    t = to_hqq(c)
    assert np.array_equal(hqq_weight(**t), weights(c))
    assert np.array_equal(weights(from_hqq(**t)), weights(c))


def test_hqq_refuses_ragged_groups_and_an_odd_number_of_group_rows():
    c = Canonical(np.zeros((2, 6), np.uint8), np.ones((2, 3)), None, 5)  # in = 12: groups of 5, 5, 2
    with pytest.raises(ValueError, match="must divide in_features"):
        to_hqq(c)
    with pytest.raises(ValueError, match="must be even"):
        to_hqq(Canonical(np.zeros((3, 6), np.uint8), np.ones(3), None, None))  # 3 rows of 12


def test_hqq_package_quantizer_output_reads_back_and_dequantizes_as_ours():
    torch = pytest.importorskip("torch")
    quantize_module = pytest.importorskip("hqq.core.quantize")
    Quantizer = quantize_module.Quantizer  # noqa: N806
    w = torch.from_numpy(np.random.default_rng(5).standard_normal((6, 64)).astype(np.float32))
    for group_size in (16, 64, None):
        W_q, meta = Quantizer.quantize(w, nbits=4, group_size=group_size, axis=1,  # noqa: N806 (HQQ's name)
                                       optimize=False, device="cpu")
        t = dict(W_q=W_q.numpy(), scale=meta["scale"].numpy(), zero=meta["zero"].numpy(), shape=tuple(meta["shape"]),
                 group_size=group_size)
        c = from_hqq(**t)
        again = to_hqq(c)
        assert np.array_equal(again["W_q"], t["W_q"]) and np.array_equal(again["zero"], t["zero"])
        theirs = Quantizer.dequantize(W_q, dict(meta, compute_dtype=torch.float64))  # (q - zero) * scale in float64
        assert np.array_equal(theirs.numpy(), weights(c)), group_size
