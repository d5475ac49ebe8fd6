"""Native layouts (harness/verify/layouts.py): what a candidate in each layout receives decodes to the canonical case.

Each decoder below reads a layout's tensors in torch straight from the format's definition
(docs/layouts/), with none of reference/layouts' code; where the format's own package is installed
(gguf, hqq, autoawq), its decoder is checked too. Then the thin adapters of examples/adapters/,
called with dequantizer_kwargs, give the correctly rounded weights, or the deviation they are known for.
"""
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from int4_lora_harness.reference import dequantize, dequantize_exact, ordinal, round_to
from int4_lora_harness.verify.cases import (CONTRACT_PARAMETERS, TORCH_DTYPES, DequantCase, make_linear_case,
                                            make_weights)
from int4_lora_harness.verify.domain import FULL, LAYOUT_NAMES
from int4_lora_harness.verify.layouts import LAYOUTS, dequantizer_kwargs, get_layout, linear_kwargs, parameters
from int4_lora_harness.verify.strategies import dequant_cases
from int4_lora_harness.verify.targets import import_module

ROOT = Path(__file__).resolve().parents[1]
AWQ_PACK_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # AutoAWQ: field i of a word holds output column 8 w + order[i]


# --- decoders of each layout, in torch, from its definition -----------------------------------

def fields(words):
    """int32 [...] -> int64 [..., 8]: the 4-bit field i (bits 4i..4i+3) of every word."""
    return (words.long().unsqueeze(-1) >> torch.arange(0, 32, 4)) & 0xF


def spread(t, out_features, in_features, group_size):
    """A per-tensor, [out] or [out, G] tensor -> float64 [out, in], column c using group c // group_size."""
    t = t.double()
    if t.numel() == 1:
        return t.reshape(1, 1).expand(out_features, in_features)
    if t.dim() == 1:
        return t[:, None].expand(out_features, in_features)
    return t.repeat_interleave(group_size, dim=1)[:, :in_features]


def decode_canonical(t):
    packed = t["packed_weights"].long()
    q = torch.stack([packed & 0xF, packed >> 4], dim=-1).reshape(packed.shape[0], -1)  # column 2j low, 2j + 1 high
    out_features, in_features = q.shape
    z = 0 if t["zero_points"] is None else spread(t["zero_points"], out_features, in_features, t["group_size"])
    return (q - 8 - z) * spread(t["scales"], out_features, in_features, t["group_size"])


def decode_gptq(t, true_zero_offset):
    """W[o, k] = (q[k, o] - (qz + offset)) * s[g_idx[k], o]; qweight [in / 8, out], 8 input rows per word."""
    q = fields(t["qweight"]).permute(0, 2, 1).reshape(-1, t["qweight"].shape[1])  # [in, out]
    out_features = q.shape[1]
    qz = fields(t["qzeros"]).reshape(t["qzeros"].shape[0], -1)[:, :out_features]  # [G, out]
    g = t["g_idx"].long()
    return ((q - (qz[g] + true_zero_offset)) * t["scales"].double()[g]).T


def decode_awq(t):
    """W[o, k] = (q[k, o] - qz[k // gs, o]) * s[k // gs, o]; word w's field i holds output column 8 w + order[i]."""
    in_features, out_features = t["qweight"].shape[0], t["scales"].shape[1]
    column = (8 * torch.arange(t["qweight"].shape[1])[:, None] + torch.tensor(AWQ_PACK_ORDER)).reshape(-1)
    def unpack(words):
        out = torch.empty(words.shape[0], column.numel(), dtype=torch.long)
        out[:, column] = fields(words).reshape(words.shape[0], -1)
        return out[:, :out_features]
    g = torch.arange(in_features) // t["group_size"]
    return ((unpack(t["qweight"]) - unpack(t["qzeros"])[g]) * t["scales"].double()[g]).T


def decode_compressed_tensors(t):
    """W = (q - 8 - zp) * s; zero points packed along dim 0 (8 output rows per word), or one int8 per tensor."""
    out_features, in_features = t["weight_shape"].tolist()
    q = fields(t["weight_packed"]).reshape(out_features, -1)[:, :in_features]
    scale, zp = t["weight_scale"], t["weight_zero_point"]
    if scale.dim() == 2 and t["group_size"] is None:
        scale = scale[:, 0]  # [out, 1]: per-channel
    if zp is None:
        z = 0
    elif zp.numel() == 1 and scale.numel() == 1:
        z = zp.double().reshape(1, 1)
    else:
        z = fields(zp.T).reshape(zp.shape[1], -1)[:, :out_features].T - 8  # [out, G]
        z = spread(z[:, 0] if scale.dim() == 1 else z, out_features, in_features, t["group_size"])
    return (q - 8 - z) * spread(scale, out_features, in_features, t["group_size"])


def decode_gguf(t, with_min):
    """Blocks of 32: fp16 d [, fp16 m], 16 bytes (element j low nibble, j + 16 high); (q - 8) d or q d + m."""
    out_features, in_features = t["shape"]
    size = 20 if with_min else 18
    blocks = t["blocks"].reshape(out_features, in_features // 32, size)
    d = blocks[..., 0:2].contiguous().view(torch.float16).double()  # [out, nb, 1], little-endian on this host
    qs = blocks[..., size - 16:].long()
    q = torch.cat([qs & 0xF, qs >> 4], dim=-1)  # [out, nb, 32]
    if with_min:
        w = q * d + blocks[..., 2:4].contiguous().view(torch.float16).double()
    else:
        w = (q - 8) * d
    return w.reshape(out_features, in_features)


def decode_hqq(t):
    """Group rows r < rows / 2 are the high nibbles of W_q, the rest the low ones; (q - zero) * scale, reshaped."""
    w_q = t["W_q"].long()
    q = torch.cat([w_q >> 4, w_q & 0xF])  # [rows, g]
    return ((q - t["zero"].double()) * t["scale"].double()).reshape(t["shape"])


DECODERS = {"canonical": decode_canonical, "gptq": lambda t: decode_gptq(t, 1), "gptq_v2": lambda t: decode_gptq(t, 0),
            "awq": decode_awq, "compressed-tensors": decode_compressed_tensors,
            "gguf-q4_0": lambda t: decode_gguf(t, False), "gguf-q4_1": lambda t: decode_gguf(t, True),
            "hqq": decode_hqq}


def exact(weights):
    return dequantize_exact(weights.packed, weights.scales, weights.zero_points, weights.group_size)


def fitted_case(name, case):
    return replace(case, weights=LAYOUTS[name].fit(case.weights))


# --- every layout decodes to the canonical weights ---------------------------------------------

def test_the_cli_offers_exactly_the_layouts_there_are():
    assert tuple(LAYOUTS) == LAYOUT_NAMES


def test_every_layout_has_a_decoder_here_and_a_page():
    assert set(DECODERS) == set(LAYOUTS)
    for layout in LAYOUTS.values():
        page = (ROOT / layout.doc).read_text()
        assert all(f"`{name}`" in page for name in layout.weight_parameters), layout.doc
        assert all(f"`{key}={value!r}`" in page for key, value in layout.limits.items()), layout.doc


@pytest.mark.parametrize("name", sorted(LAYOUTS))
@given(data=st.data())
def test_fitted_cases_inside_the_limits_decode_exactly_to_the_canonical_weights(name, data):
    layout = LAYOUTS[name]
    case = fitted_case(name, data.draw(dequant_cases(FULL.narrow(**layout.limits, long_k=False))))
    decoded = DECODERS[name](dequantizer_kwargs(layout, case, "cpu"))
    assert np.array_equal(decoded.numpy(), exact(case.weights))


@pytest.mark.parametrize("name", sorted(LAYOUTS))
@given(data=st.data())
def test_fit_is_idempotent(name, data):
    layout = LAYOUTS[name]
    once = layout.fit(data.draw(dequant_cases(FULL.narrow(**layout.limits, long_k=False))).weights)
    twice = layout.fit(once)
    assert np.array_equal(once.scales, twice.scales) and once.scales_dtype == twice.scales_dtype
    assert (once.zero_points is None) == (twice.zero_points is None)
    assert once.zero_points is None or np.array_equal(once.zero_points, twice.zero_points)


def test_fits_change_only_what_the_layout_cannot_hold():
    rng = np.random.default_rng(0)
    w = make_weights(rng, 16, 64, group_size=32, zero_granularity="grouped", zero_kind="int8")
    for name in ("canonical", "gptq_v2", "awq", "compressed-tensors"):
        assert LAYOUTS[name].fit(w) is w
    v1 = LAYOUTS["gptq"].fit(w)
    assert np.array_equal(v1.zero_points, np.where(w.zero_points == -8, 8, w.zero_points))  # qz = 15, never -1
    assert LAYOUTS["hqq"].fit(w) is w  # integer zeros: zero = z + 8 is exact in any float dtype
    fractional = make_weights(rng, 16, 64, group_size=32, zero_granularity="grouped", zero_kind="fp32")
    assert not np.array_equal(LAYOUTS["hqq"].fit(fractional).zero_points, fractional.zero_points)


# --- the limits ---------------------------------------------------------------------------------

def test_every_layouts_limits_narrow_the_full_domain_and_are_described_with_a_reason():
    for layout in LAYOUTS.values():
        narrowed = FULL.narrow(**layout.limits)
        assert len(layout.describe_limits()) == len(layout.limits) == len(layout.reasons)
        for line, (key, value) in zip(layout.describe_limits(), layout.limits.items()):
            assert getattr(narrowed, key) == value and line.startswith(f"{key}={value!r}: ")
    assert get_layout("awq") is LAYOUTS["awq"]
    with pytest.raises(ValueError, match="layout must be one of canonical, gptq"):
        get_layout("marlin")


def weights(out_features=16, in_features=64, **params):
    return make_weights(np.random.default_rng(1), out_features, in_features, **dict(dict(group_size=32), **params))


OUTSIDE = [  # (layout, weights outside it, the rule the ValueError must name)
    ("gptq", weights(in_features=60, group_size=30), r"in_features 60 .*in_multiple_of=8"),
    ("gptq", weights(out_features=12), r"out_features 12 .*out_multiple_of=8"),
    ("gptq", weights(zero_granularity="grouped", zero_kind="fp32"), r"fractional zero points .*zero_points='integer'"),
    ("gptq", weights(scales_dtype="fp32"), r"fp32 scales .*scale_dtypes=\('fp16', 'bf16'\)"),
    ("awq", weights(in_features=80), r"ragged last group .*ragged=False"),
    ("compressed-tensors", weights(zero_granularity="per-channel"), r"per-channel zero points with grouped scales"),
    ("gguf-q4_0", weights(in_features=48, group_size=None, scale_granularity="per-channel"),
     r"in_features 48 .*in_multiple_of=32"),
    ("gguf-q4_0", weights(zero_granularity="grouped"), r"zero points is outside .*zero_points='none'"),
    ("gguf-q4_0", weights(scales_dtype="bf16"), r"bf16 scales .*scale_dtypes=\('fp16',\)"),
    ("gguf-q4_1", weights(group_size=16), r"group_size 16 .*group_sizes=\(32, 64, 96, 128\)"),
    ("hqq", weights(out_features=3, group_size=None, scale_granularity="per-channel"),
     r"out_features 3 .*out_multiple_of=2"),
    ("hqq", weights(in_features=80), r"ragged last group .*ragged=False"),
]


@pytest.mark.parametrize("name, outside, rule", OUTSIDE, ids=[f"{row[0]}-{row[2][:24]}" for row in OUTSIDE])
def test_weights_outside_a_layouts_limits_are_refused_naming_the_limit(name, outside, rule):
    with pytest.raises(ValueError, match=rule):
        LAYOUTS[name].native_weights(outside)


UNFITTED = [  # (layout, weights inside the limits that the layout cannot hold until fitted, the rule)
    ("gptq", replace(weights(zero_granularity="grouped", zero_kind="int8"), zero_points=np.full((16, 2), -8, np.int8)),
     r"zero_points must hold integers in \[-7, 8\]"),  # a true zero of 0: v1 would store -1
    ("gguf-q4_1", weights(zero_granularity="grouped", zero_kind="fp32"), r"Q4_1 stores m = \(-8 - z\) \* d as fp16"),
    ("hqq", weights(zero_granularity="grouped", zero_kind="float"), r"HQQ keeps zero = z \+ 8 in the scales' dtype"),
]


@pytest.mark.parametrize("name, unfitted, rule", UNFITTED, ids=[row[0] for row in UNFITTED])
def test_unrepresentable_weights_are_refused_until_fitted(name, unfitted, rule):
    with pytest.raises(ValueError, match=rule):
        LAYOUTS[name].native_weights(unfitted)
    fitted = LAYOUTS[name].fit(unfitted)
    assert np.array_equal(DECODERS[name](LAYOUTS[name].native_weights(fitted)).numpy(), exact(fitted))


# --- what the engine calls -----------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_kwargs_give_exactly_the_parameter_names_and_keep_the_rest_of_the_case(name):
    layout = LAYOUTS[name]
    domain = FULL.narrow(**layout.limits)
    group_size = (domain.group_sizes or (32,))[0]
    case = make_linear_case(3, 16, 4 * group_size, 5, "bf16", rank=4, num_loras=2, group_size=group_size,
                            zero_granularity=None if domain.zero_points == "none" else "grouped",
                            zero_kind="int8", scales_dtype="fp16")
    case = fitted_case(name, case)
    linear = linear_kwargs(layout, case, "cpu")
    dequantizer = dequantizer_kwargs(layout, DequantCase(case.weights, "bf16"), "cpu")
    assert tuple(linear) == parameters(layout, "linear") and tuple(dequantizer) == parameters(layout, "dequantizer")
    assert dequantizer["output_dtype"] is torch.bfloat16
    canonical = case.torch_kwargs("cpu")
    for key in ("x", "lora_a", "lora_b", "lora_indices", "scaling", "bias"):
        assert type(linear[key]) is type(canonical[key]), key
        a, b = linear[key], canonical[key]
        assert torch.equal(a, b) if torch.is_tensor(a) else a == b, key
    for key in layout.weight_parameters:
        a, b = linear[key], dequantizer[key]
        assert (torch.equal(a, b) and a.dtype == b.dtype) if torch.is_tensor(a) else a == b, key


def test_the_canonical_layout_is_the_contracts_own_parameters():
    for contract in ("dequantizer", "linear"):
        assert parameters(LAYOUTS["canonical"], contract) == CONTRACT_PARAMETERS[contract]
    case = DequantCase(weights(zero_granularity="per-channel"), "fp16")
    got, want = dequantizer_kwargs(LAYOUTS["canonical"], case, "cpu"), case.torch_kwargs("cpu")
    assert all(torch.equal(got[k], want[k]) if torch.is_tensor(want[k]) else got[k] == want[k] for k in want)
    with pytest.raises(ValueError, match="contract must be"):
        parameters(LAYOUTS["awq"], "gemm")


# --- the formats' own packages read these tensors as the canonical weights ----------------------

def cases_in(name, seeds=range(4), output_dtypes=("fp16", "bf16", "fp32")):
    """A few fitted DequantCases inside `name`'s limits, drawn from make_weights."""
    layout = LAYOUTS[name]
    domain = FULL.narrow(**layout.limits)
    group_size = (domain.group_sizes or (32,))[-1]
    for seed in seeds:
        rng = np.random.default_rng(seed)
        zero_kind = "float" if domain.zero_points in ("any", "fractional") and seed % 2 else "int8"
        w = make_weights(rng, 16, 2 * group_size, group_size=group_size, zero_kind=zero_kind,
                         zero_granularity=None if domain.zero_points == "none" else "grouped",
                         scales_dtype=domain.scale_dtypes[seed % len(domain.scale_dtypes)], scale_exponent=-6.0)
        for output_dtype in output_dtypes:
            yield DequantCase(layout.fit(w), output_dtype)


@pytest.mark.parametrize("name, kind", [("gguf-q4_0", "Q4_0"), ("gguf-q4_1", "Q4_1")])
def test_gguf_package_dequantizes_the_layouts_blocks_to_the_canonical_weights(name, kind):
    gguf = pytest.importorskip("gguf")
    for case in cases_in(name, output_dtypes=("fp16",)):
        t = dequantizer_kwargs(LAYOUTS[name], case, "cpu")
        w = gguf.quants.dequantize(t["blocks"].numpy(), gguf.GGMLQuantizationType[kind])
        assert np.array_equal(w.astype(np.float64), exact(case.weights))  # its float32 arithmetic is exact here


def test_hqq_package_dequantizes_the_layouts_tensors_to_the_canonical_weights():
    Quantizer = pytest.importorskip("hqq.core.quantize").Quantizer  # noqa: N806
    for case in cases_in("hqq", output_dtypes=("fp16",)):
        t = dequantizer_kwargs(LAYOUTS["hqq"], case, "cpu")
        meta = dict(nbits=4, packing="4bit_u8", view_as_float=False, axis=1, shape=t["shape"],
                    group_size=t["group_size"], scale=t["scale"].double(), zero=t["zero"].double(),
                    compute_dtype=torch.float64)
        assert np.array_equal(Quantizer.dequantize(t["W_q"], meta).numpy(), exact(case.weights))


def test_autoawq_dequantize_gemm_reads_the_layouts_tensors_as_the_canonical_weights():
    packing = pytest.importorskip("awq.utils.packing_utils")
    for case in cases_in("awq", output_dtypes=("fp16",)):
        t = dequantizer_kwargs(LAYOUTS["awq"], case, "cpu")
        w = packing.dequantize_gemm(t["qweight"], t["qzeros"], t["scales"].double(), 4, t["group_size"])  # [in, out]
        assert np.array_equal(w.T.numpy(), exact(case.weights))


# --- the adapters of examples/adapters/: the right answer, or the deviation they are known for ----

def adapter(package, file):
    """examples/adapters/<file>.py's dequantize, loaded as verify loads a TARGET (skipped without `package`)."""
    pytest.importorskip(package)
    return import_module(str(ROOT / "examples" / "adapters" / f"{file}.py")).dequantize


def operands(weights):
    """float64 [out, in] each: v, z (0 without zero points) and s of every weight."""
    out_features, in_features = weights.shape
    v = dequantize_exact(weights.packed, np.ones(1))  # (v - 0) * 1
    z = 0.0 if weights.zero_points is None else dequantize_exact(
        np.full_like(weights.packed, 0x88), np.ones(1), -np.asarray(weights.zero_points), weights.group_size)
    return v, z, dequantize_exact(np.full_like(weights.packed, 0x99), weights.scales, None, weights.group_size)


def computed_in(weights, output_dtype, package):
    """What each package computes, rounding as it does (torch rounds every half-precision op once)."""
    v, z, s = operands(weights)
    sd = weights.scales_dtype
    with np.errstate(over="ignore", invalid="ignore"):
        if package == "awq":  # (q - qz) * s in the scales' dtype
            return round_to(round_to(exact(weights), sd), output_dtype)
        if package == "hqq":  # (q - zero) in the compute dtype, then * scale in it
            return round_to(round_to(round_to(v - z, sd) * s, sd), output_dtype)
        promoted = {frozenset({"fp16"}): "fp16", frozenset({"bf16"}): "bf16"}.get(frozenset({sd, output_dtype}), "fp32")
        z_rounded = round_to(z, output_dtype)  # torchao: zero_point.to(output_dtype) first
        return round_to(round_to(round_to(v - z_rounded, output_dtype) * s, promoted), output_dtype)


def bits(t):
    return t.float().numpy().astype(np.float64)


def correctly_rounded(case):
    w = case.weights
    return dequantize(w.packed, w.scales, w.zero_points, w.group_size, case.output_dtype).astype(np.float64)


@pytest.mark.parametrize("name, file", [("gguf-q4_0", "gguf_q4_0"), ("gguf-q4_1", "gguf_q4_1")])
def test_gguf_adapters_are_correctly_rounded(name, file):
    dequantize_blocks = adapter("gguf", file)
    for case in cases_in(name):
        got = dequantize_blocks(**dequantizer_kwargs(LAYOUTS[name], case, "cpu"))
        assert got.dtype == TORCH_DTYPES[case.output_dtype] and tuple(got.shape) == case.weights.shape
        assert np.array_equal(bits(got), correctly_rounded(case)), case


@pytest.mark.parametrize("name, package, file", [("awq", "awq", "awq_gemm"), ("hqq", "hqq", "hqq_4bit"),
                                                 ("canonical", "torchao", "torchao_affine")])
def test_package_adapters_compute_what_their_rounding_model_says(name, package, file):
    dequantize_native = adapter(package, file)
    exact_cases = 0
    for case in cases_in(name):
        got = bits(dequantize_native(**dequantizer_kwargs(LAYOUTS[name], case, "cpu")))
        assert np.array_equal(got, computed_in(case.weights, case.output_dtype, package), equal_nan=True), case
        same_dtype = case.output_dtype == case.weights.scales_dtype
        integer_zeros = case.weights.zero_points is None or case.weights.zero_points_dtype.startswith("int")
        if same_dtype and (package == "awq" or integer_zeros):  # one rounding, in the output dtype
            assert np.array_equal(got, correctly_rounded(case)), case
            exact_cases += 1
    assert exact_cases >= 2  # the cases included some where the package is correctly rounded


def test_awq_adapter_with_fp32_output_keeps_the_fp16_products_error():
    dequantize_native = adapter("awq", "awq_gemm")
    w = weights(zero_granularity="grouped", zero_kind="int8")
    w = replace(w, packed=np.full_like(w.packed, 0xFF), scales=np.full_like(w.scales, 1 + 2.0**-10),
                zero_points=np.full_like(w.zero_points, -8))  # (7 - -8) * (1 + 2**-10) needs 14 bits
    case = DequantCase(w, "fp32")
    got = bits(dequantize_native(**dequantizer_kwargs(LAYOUTS["awq"], case, "cpu")))
    assert np.all(got == 15.015625) and np.all(correctly_rounded(case) == 15 + 15 * 2.0**-10)
    ulps = np.abs(ordinal(got, "fp32") - ordinal(correctly_rounded(case), "fp32"))
    assert ulps.max() == 1024  # an error of 2**-10 at 15: 2**10 fp32 ulps, not the 1 the contract allows


def test_torchao_adapter_rounds_a_fractional_zero_point_to_the_output_dtype():
    dequantize_native = adapter("torchao", "torchao_affine")
    w = weights(zero_granularity="grouped", zero_kind="fp32")
    z = np.float32(3.0001)  # fp16 rounds it to 3.0: v - z = -0.0001 becomes 0 where v = 3
    w = replace(w, packed=np.full_like(w.packed, 0xBB), scales=np.ones_like(w.scales),  # every v = 3
                zero_points=np.full_like(w.zero_points, z))
    case = DequantCase(w, "fp16")
    got = bits(dequantize_native(**dequantizer_kwargs(LAYOUTS["canonical"], case, "cpu")))
    want = correctly_rounded(case)
    assert np.all(got == 0.0) and np.all(want == round_to(3 - np.float64(z), "fp16")) and np.all(want != 0)
