"""Cross-checks against third-party implementations, where installed (the `peers` extra).

compressed-tensors: its own int32 pack/unpack and pack-quantized compressor against
reference/formats.py. peft: its LoRA Linear forward, base(x) + lora_B(lora_A(x)) * scaling with
mixed-adapter batches, against reference.linear_exact. Disagreements are kept as minimal
`xfail(strict=True)` cases that say what upstream does.
"""
import numpy as np
import pytest
import torch
from hypothesis import assume, given, strategies as st
from hypothesis.extra.numpy import arrays

from int4_lora_harness.reference import dequantize, dequantize_exact, linear_exact, pack, quantize
from int4_lora_harness.reference.formats import Canonical, from_compressed_tensors, to_compressed_tensors

CT_STRATEGIES = {"per-tensor": "tensor", "per-channel": "channel", "grouped": "group"}
CT_XFAIL_REASON = (
    "compressed-tensors 0.20.0 unpack_from_int32(packed_dim=0) transposes the [1, G] packed zero "
    "points to [G, 1]; .contiguous() leaves that with stride G and .view(torch.uint8) raises "
    "RuntimeError, so no asymmetric grouped layer with out <= 8 and G >= 2 decompresses")

CT_STRIDE_REASON = (
    "compressed-tensors 0.20.0 unpack_from_int32 (4-bit) calls .contiguous().view(torch.uint8), which "
    "needs stride(-1) == 1, but torch leaves a tensor whose last dim has size 1 as it is, whatever that "
    "dim's stride: a [rows, 1] weight (in <= 8) with such strides fails (NumPy makes them, e.g. (1, 2))")


def ct_helpers():
    return pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers")


def ct_scheme(kind, group_size, symmetric):
    """compressed-tensors QuantizationScheme for a 4-bit int weight of `kind` granularity."""
    quantization = pytest.importorskip("compressed_tensors.quantization")
    args = quantization.QuantizationArgs(num_bits=4, type="int", symmetric=symmetric,
                                         strategy=CT_STRATEGIES[kind], group_size=group_size)
    return quantization.QuantizationScheme(targets=["Linear"], weights=args)


def ct_compressor():
    return pytest.importorskip("compressed_tensors.compressors.pack_quantized.base").PackedQuantizationCompressor


def torch_dict(tensors):
    return {name: torch.from_numpy(np.ascontiguousarray(t)) for name, t in tensors.items()}


# --- compressed-tensors -----------------------------------------------------------------------

@given(st.integers(1, 12), st.integers(1, 20), st.data())
def test_compressed_tensors_pack_to_int32_writes_our_weight_packed(out_features, half_in, data):
    helpers = ct_helpers()
    values = data.draw(arrays(np.int8, (out_features, 2 * half_in), elements=st.integers(-8, 7)))
    ours = to_compressed_tensors(Canonical(pack(values), np.ones(1), None, None))["weight_packed"]
    assert np.array_equal(helpers.pack_to_int32(torch.from_numpy(values), 4).numpy(), ours)
    unpacked = helpers.unpack_from_int32(torch.from_numpy(ours), 4, torch.Size(values.shape))
    assert np.array_equal(unpacked.numpy(), values)


@given(st.integers(1, 4), st.data())
def test_compressed_tensors_zero_point_packing_matches_ours(groups, data):
    helpers = ct_helpers()
    out_features = data.draw(st.integers(9 if groups > 1 else 2, 20))  # out <= 8, G >= 2: see the xfail
    zeros = data.draw(arrays(np.int8, (out_features, groups), elements=st.integers(-8, 7)))
    c = Canonical(np.zeros((out_features, groups), np.uint8), np.ones((out_features, groups)), zeros, 2)
    ours = to_compressed_tensors(c)["weight_zero_point"]  # [ceil(out / 8), G]
    assert np.array_equal(helpers.pack_to_int32(torch.from_numpy(zeros), 4, packed_dim=0).numpy(), ours)
    unpacked = helpers.unpack_from_int32(torch.from_numpy(ours), 4, torch.Size(zeros.shape), packed_dim=0)
    assert np.array_equal(unpacked.numpy(), zeros)


@pytest.mark.xfail(strict=True, raises=RuntimeError, reason=CT_XFAIL_REASON)
def test_compressed_tensors_unpacks_zero_points_of_one_row_and_two_groups():
    helpers = ct_helpers()
    packed = torch.tensor([[8, 8]], dtype=torch.int32)  # zero points [[0, 0]]: out = 1, G = 2
    unpacked = helpers.unpack_from_int32(packed, 4, torch.Size([1, 2]), packed_dim=0)
    assert unpacked.tolist() == [[0, 0]]


@pytest.mark.xfail(strict=True, raises=RuntimeError, reason=CT_STRIDE_REASON)
def test_compressed_tensors_unpacks_a_contiguous_one_word_column_with_a_nonunit_stride():
    helpers = ct_helpers()
    packed = torch.full((2, 2), 0x88888888 - 2**32, dtype=torch.int32)[:, :1]  # [2, 1], stride (2, 1)
    packed = packed.as_strided((2, 1), (1, 2))  # torch calls this contiguous: a size-1 dim's stride is free
    assert packed.is_contiguous()
    unpacked = helpers.unpack_from_int32(packed, 4, torch.Size([2, 8]))
    assert unpacked.tolist() == [[0] * 8, [0] * 8]


@pytest.mark.xfail(strict=True, raises=RuntimeError, reason=CT_XFAIL_REASON)
def test_compressed_tensors_decompresses_an_asymmetric_grouped_layer_of_8_rows():
    w = np.random.default_rng(0).standard_normal((8, 16))
    packed, scales, zero_points = quantize(w, "grouped", 8, symmetric=False)
    c = Canonical(packed, scales.astype(np.float32), zero_points, 8)
    weight = ct_compressor().decompress(torch_dict(to_compressed_tensors(c)), ct_scheme("grouped", 8, False))["weight"]
    assert np.array_equal(weight.numpy(), dequantize(packed, c.scales, zero_points, 8, "fp32"))


@st.composite
def ct_layers(draw):
    """(float32 weights [out, in], kind, group_size, symmetric) that compressed-tensors handles."""
    out_features, in_features = draw(st.integers(2, 16)), 8 * draw(st.integers(1, 4))  # out = 1 reads per-tensor
    kind = draw(st.sampled_from(sorted(CT_STRATEGIES)))
    group_size = draw(st.sampled_from([4, 8, in_features])) if kind == "grouped" else None
    symmetric = draw(st.booleans())
    # Magnitudes down to 2**-66: a group of float32 subnormals gives a scale that underflows to 0 in float32,
    # a degenerate layer neither library is meant for.
    magnitude = st.floats(2.0**-66, 4, width=32)
    values = st.one_of(st.just(0.0), magnitude, magnitude.map(lambda v: -v))
    w = draw(arrays(np.float32, (out_features, in_features), elements=values))
    return w, kind, group_size, symmetric


@given(ct_layers())
def test_compressed_tensors_compressor_and_our_converters_agree_both_ways(layer):
    w, kind, group_size, symmetric = layer
    assume(symmetric or kind != "grouped" or w.shape[0] > 8 or w.shape[1] == group_size)  # the xfail above
    packed, scales, zero_points = quantize(w, kind, group_size or 1, symmetric)
    c = Canonical(packed, scales.astype(np.float32), zero_points, group_size)
    scheme, compressor = ct_scheme(kind, group_size, symmetric), ct_compressor()
    ours = to_compressed_tensors(c)
    weight = compressor.decompress(torch_dict(ours), scheme)["weight"]  # theirs: (q - zp) * s in fp32
    assert np.array_equal(weight.numpy(), dequantize(packed, c.scales, zero_points, group_size, "fp32"))
    state = {"weight": weight, **{k: v for k, v in torch_dict(ours).items() if k == "weight_scale"}}
    if not symmetric:
        state["weight_zero_point"] = torch.from_numpy(zero_points.astype(np.int8).reshape(ours["weight_scale"].shape))
    theirs = {k: v.numpy() for k, v in compressor.compress(state, scheme).items()}
    assert theirs.keys() == ours.keys() and all(np.array_equal(theirs[k], ours[k]) for k in ours)
    back = from_compressed_tensors(**theirs, group_size=group_size)
    assert np.array_equal(dequantize_exact(back.packed, back.scales, back.zero_points, back.group_size),
                          dequantize_exact(c.packed, c.scales, c.zero_points, c.group_size))


# --- peft ----------------------------------------------------------------------------------------

@st.composite
def lora_cases(draw):
    """A dyadic multi-LoRA case (small integers, power-of-two scales): float64 sums are exact."""
    out_features, in_features = draw(st.integers(1, 8)), 2 * draw(st.integers(1, 8))
    rank, num_loras, m = draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(1, 6))
    ints = lambda shape, bound: draw(arrays(np.int8, shape, elements=st.integers(-bound, bound))).astype(np.float64)
    return {
        "x": ints((m, in_features), 4),
        "packed_weights": draw(arrays(np.uint8, (out_features, in_features // 2))),
        "scales": 2.0 ** ints((out_features,), 3),
        "zero_points": ints((out_features,), 8),
        "group_size": None,
        "lora_a": ints((num_loras, rank, in_features), 3),
        "lora_b": ints((num_loras, out_features, rank), 3),
        "lora_indices": draw(arrays(np.int64, (m,), elements=st.integers(-1, num_loras - 1))),
        "scaling": draw(st.sampled_from([0.25, 0.5, 1.0, 2.0])),
        "bias": draw(st.none() | st.just(ints((out_features,), 4))),
    }


def peft_linear(case):
    """A peft LoRA Linear (float64) with one adapter "a{i}" per lora_a[i] / lora_b[i]."""
    peft = pytest.importorskip("peft")
    w = dequantize_exact(case["packed_weights"], case["scales"], case["zero_points"], case["group_size"])
    base = torch.nn.Linear(w.shape[1], w.shape[0], bias=case["bias"] is not None, dtype=torch.float64)
    model = torch.nn.Sequential()
    model.add_module("proj", base)
    rank = case["lora_a"].shape[1]
    config = peft.LoraConfig(r=rank, lora_alpha=case["scaling"] * rank, target_modules=["proj"])
    model = peft.get_peft_model(model, config, adapter_name="a0")
    for i in range(1, len(case["lora_a"])):
        model.add_adapter(f"a{i}", config)
    layer = model.base_model.model.proj
    with torch.no_grad():
        layer.base_layer.weight.copy_(torch.from_numpy(w))
        if case["bias"] is not None:
            layer.base_layer.bias.copy_(torch.from_numpy(case["bias"]))
        for i in range(len(case["lora_a"])):
            layer.lora_A[f"a{i}"].weight.copy_(torch.from_numpy(case["lora_a"][i]))  # [rank, in]
            layer.lora_B[f"a{i}"].weight.copy_(torch.from_numpy(case["lora_b"][i]))  # [out, rank]
    return model.eval()


@given(lora_cases())
def test_peft_lora_forward_matches_the_reference_linear(case):
    model = peft_linear(case)
    names = ["__base__" if i < 0 else f"a{i}" for i in case["lora_indices"]]  # peft's "no adapter"
    with torch.no_grad():
        y = model(torch.from_numpy(case["x"]), adapter_names=names).numpy()
    assert np.array_equal(y, linear_exact(**case))  # exact: every product and sum is dyadic
