"""Native layouts: each canonical case handed to a candidate as its own format's tensors, under their own names.

`verify --layout NAME` draws canonical cases inside `Domain.narrow(**LAYOUTS[NAME].limits)`, makes
each representable with the layout's `fit`, and calls the candidate with `dequantizer_kwargs` or
`linear_kwargs`: the layout's weight parameters (`native_weights`, built by the NumPy converters of
int4_lora_harness.reference.layouts) in place of the canonical packed_weights, scales, zero_points
and group_size. The judge still compares with the canonical reference of the (fitted) case.

| layout               | weight parameters                                                         |
| -------------------- | ------------------------------------------------------------------------- |
| canonical            | packed_weights, scales, zero_points, group_size                           |
| gptq, gptq_v2        | qweight, qzeros, scales, g_idx, group_size                                |
| awq                  | qweight, qzeros, scales, group_size                                       |
| compressed-tensors   | weight_packed, weight_scale, weight_zero_point, weight_shape, group_size  |
| gguf-q4_0, gguf-q4_1 | blocks, shape                                                             |
| hqq                  | W_q, scale, zero, shape, group_size                                       |

One page per layout, docs/layouts/NAME.md, gives its byte layout.

`limits` are what the layout cannot hold at all (shapes, dtypes, granularities); `fit` is for what
it holds only for some values (GPTQ v1 has no true zero of 0, Q4_1 needs m = (-8 - z) * d exactly
in fp16, HQQ keeps zero = z + 8 in the scales' dtype): it adjusts values only, so a fitted case of
a drawn shape stays inside the limits. `native_weights` refuses, with a ValueError naming the
rule, anything outside the limits or not representable.
"""
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from int4_lora_harness.reference import granularity
from int4_lora_harness.reference import layouts as native
from int4_lora_harness.reference.rounding import is_representable, round_to
from int4_lora_harness.verify.cases import CONTRACT_PARAMETERS, TORCH_DTYPES, tensor
from int4_lora_harness.verify.domain import GROUP_SIZES

CANONICAL_WEIGHTS = CONTRACT_PARAMETERS["dequantizer"][:4]  # packed_weights, scales, zero_points, group_size


@dataclass(frozen=True)
class Layout:
    name: str
    doc: str  # its page: the byte layout, the limits, the fit
    weight_parameters: tuple  # the native names, in the order a candidate receives them
    limits: dict  # Domain.narrow keyword arguments the layout implies
    reasons: dict  # limit name -> why, one line
    convert: Callable  # Weights -> {weight parameter: numpy array (becomes a CPU tensor) | tensor | python value}
    fit: Callable  # Weights inside the limits -> Weights the layout represents exactly

    def describe_limits(self):
        """One line per limit: `name=value: reason` (nothing for the canonical layout)."""
        return [f"{key}={value!r}: {self.reasons[key]}" for key, value in self.limits.items()]

    def native_weights(self, weights):
        """{weight parameter: CPU torch tensor | int | tuple | None} for cases.Weights `weights`.

        ValueError naming the limit (and its reason) or the format's rule when `weights` lie outside.
        """
        check_limits(self, weights)
        arrays = self.convert(weights)
        assert tuple(arrays) == self.weight_parameters, (self.name, tuple(arrays))
        return {name: torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a
                for name, a in arrays.items()}


# --- the limits, checked on one case ------------------------------------------------------

def check_limits(layout, weights):
    """ValueError naming the first limit of `layout` that `weights` (cases.Weights) break."""
    out_features, in_features = weights.shape
    kinds = {"scales": granularity(weights.scales, out_features, in_features, weights.group_size, "scales")}
    if weights.zero_points is not None:
        kinds["zero_points"] = granularity(weights.zero_points, out_features, in_features, weights.group_size,
                                           "zero_points")
    grouped = "grouped" in kinds.values()
    broken = {
        "in_multiple_of": lambda n: in_features % n and f"in_features {in_features}",
        "out_multiple_of": lambda n: out_features % n and f"out_features {out_features}",
        "scale_dtypes": lambda dtypes: weights.scales_dtype not in dtypes and f"{weights.scales_dtype} scales",
        "granularities": lambda allowed: next((f"{kind} {name}" for name, kind in kinds.items()
                                               if kind not in allowed), None),
        "group_sizes": lambda sizes: grouped and weights.group_size not in sizes and f"group_size {weights.group_size}",
        "ragged": lambda ok: grouped and not ok and in_features % weights.group_size
        and f"a ragged last group (in_features {in_features}, group_size {weights.group_size})",
        "same_granularity": lambda same: same and len(set(kinds.values())) > 1
        and f"{kinds.get('zero_points')} zero points with {kinds['scales']} scales",
        "zero_points": lambda allowed: _zero_points_outside(weights, allowed),
    }
    for key, value in layout.limits.items():
        what = broken[key](value)
        if what:
            raise ValueError(f"{layout.name}: {what} is outside the layout ({key}={value!r}: {layout.reasons[key]})")


def _zero_points_outside(weights, allowed):
    z = weights.zero_points
    if z is None or allowed == "any":
        return None
    if allowed == "none":
        return "zero points"
    integral = bool(np.all(np.asarray(z) == np.rint(z)))
    return (allowed == "integer" and not integral and "fractional zero points") or \
        (allowed == "fractional" and integral and "integer zero points")


# --- canonical Weights -> each layout's arrays ----------------------------------------------

def _canonical(weights):
    """cases.Weights -> reference.layouts.Canonical (values as the case holds them)."""
    return native.Canonical(weights.packed, weights.scales, weights.zero_points, weights.group_size)


def _native_group_size(weights, groups):
    """GPTQ's and AWQ's group_size: the canonical one, or in_features for a single group."""
    return weights.group_size if groups > 1 else weights.shape[1]


def _as_canonical(weights):
    return dict(zip(CANONICAL_WEIGHTS, weights.torch_args("cpu")))


def _as_gptq(version):
    def convert(weights):
        t = native.to_gptq(_canonical(weights), version=version)
        return dict(qweight=t["qweight"], qzeros=t["qzeros"], scales=tensor(t["scales"], weights.scales_dtype, "cpu"),
                    g_idx=t["g_idx"], group_size=_native_group_size(weights, t["scales"].shape[0]))
    return convert


def _as_awq(weights):
    t = native.to_awq(_canonical(weights))
    return dict(qweight=t["qweight"], qzeros=t["qzeros"], scales=tensor(t["scales"], weights.scales_dtype, "cpu"),
                group_size=_native_group_size(weights, t["scales"].shape[0]))


def _as_compressed_tensors(weights):
    t = native.to_compressed_tensors(_canonical(weights))
    out_features, in_features = weights.shape
    grouped = granularity(weights.scales, out_features, in_features, weights.group_size, "scales") == "grouped"
    return dict(weight_packed=t["weight_packed"], weight_scale=tensor(t["weight_scale"], weights.scales_dtype, "cpu"),
                weight_zero_point=t.get("weight_zero_point"), weight_shape=t["weight_shape"],
                group_size=weights.group_size if grouped else None)


def _as_gguf(to_blocks):
    def convert(weights):
        t = to_blocks(_canonical(weights))
        return dict(blocks=t["blocks"], shape=t["shape"])
    return convert


def _as_hqq(weights):
    t = native.to_hqq(_canonical(weights))
    dtype = weights.scales_dtype
    if not np.all(is_representable(t["zero"], dtype)):
        bad = t["zero"][~is_representable(t["zero"], dtype)].flat[0]
        raise ValueError(f"zero_points: HQQ keeps zero = z + 8 in the scales' dtype; {bad!r} is not a {dtype} number "
                         f"(verify.layouts.LAYOUTS['hqq'].fit rounds it)")
    return dict(W_q=t["W_q"], scale=tensor(t["scale"], dtype, "cpu"), zero=tensor(t["zero"], dtype, "cpu"),
                shape=t["shape"], group_size=t["group_size"])


# --- fits: the values a layout holds only in part ------------------------------------------

def _unchanged(weights):
    return weights


def _fit_gptq_v1(weights):
    """GPTQ v1 stores the true zero minus one in [0, 15]: canonical z in [-7, 8]. A drawn z = -8 becomes 8."""
    if weights.zero_points is None:
        return weights
    z = np.asarray(weights.zero_points)
    return replace(weights, zero_points=np.where(z == -8, 8, z).astype(z.dtype))


def _fit_gguf_q4_0(weights):
    """Q4_0 has no zero point: dropped; scales rounded to fp16 (d is fp16)."""
    return replace(weights, scales=round_to(weights.scales, "fp16"), scales_dtype="fp16", zero_points=None,
                   zero_points_dtype=None)


def _fit_gguf_q4_1(weights):
    """Q4_1 holds W = q * d + m, m fp16: canonical z = -8 - m / d with m = r * d exactly fp16.

    d: the scales clamped to [2**-10, 2**11] in magnitude and rounded to 7 significant bits;
    r = -8 - z: rounded to 4 significant bits and to a multiple of 2**-4, in [-24, 24]. Then
    r * d has at most 11 significant bits and lies in fp16's normal range (or is 0), and z = -8 - r
    is a multiple of 2**-4 of magnitude at most 32, exact in fp16 and fp32 (and integer z stay
    integers: r = -8 - z is then an integer in [-15, 0]). A bf16 zero point that cannot hold it
    becomes fp32.
    """
    magnitude = np.clip(np.abs(weights.scales), 2.0**-10, 2.0**11)
    d = np.copysign(_round_significand(magnitude, 7), weights.scales)
    fitted = replace(weights, scales=round_to(d, "fp16"), scales_dtype="fp16")  # exact: 7 bits, normal range
    if weights.zero_points is None:
        return fitted
    z = np.asarray(weights.zero_points)
    r = np.clip(np.rint(_round_significand(-8.0 - z.astype(np.float64), 4) * 16) / 16, -24, 24)
    return replace(fitted, **_zero_points_of(-8.0 - r, weights))


def _fit_hqq(weights):
    """HQQ keeps zero = z + 8 in the scales' dtype: fractional zero + 8 is rounded to a multiple of 2**-6
    and then to that dtype (at most 11 significant bits below 32, so z = zero - 8 is exact in fp16 and
    fp32; a bf16 zero point that cannot hold it becomes fp32). Integer zero points are kept."""
    z = weights.zero_points
    if z is None or not np.issubdtype(np.asarray(z).dtype, np.floating):
        return weights
    zero = round_to(np.rint((np.asarray(z, dtype=np.float64) + 8.0) * 64) / 64, weights.scales_dtype)
    return replace(weights, **_zero_points_of(zero.astype(np.float64) - 8.0, weights))


def _zero_points_of(values, weights):
    """Fitted zero point values (float64, exact in fp32) in the case's zero point dtype, or fp32 where that
    dtype cannot hold them; integer dtypes (whose values the fits keep integral) are kept."""
    dtype = weights.zero_points_dtype
    if dtype not in ("fp16", "bf16", "fp32"):
        return dict(zero_points=values.astype(np.asarray(weights.zero_points).dtype))
    dtype = dtype if np.all(is_representable(values, dtype)) else "fp32"
    return dict(zero_points=round_to(values, dtype), zero_points_dtype=dtype)


def _round_significand(values, bits):
    """values rounded to `bits` significant bits, half to even (0 stays 0)."""
    fraction, exponent = np.frexp(np.asarray(values, dtype=np.float64))
    return np.ldexp(np.rint(np.ldexp(fraction, bits)), exponent - bits)


# --- the table ------------------------------------------------------------------------------

HALF = ("fp16", "bf16")
GPTQ_LIMITS = dict(in_multiple_of=8, out_multiple_of=8, zero_points="integer", scale_dtypes=HALF)
GPTQ_REASONS = dict(in_multiple_of="qweight [in / 8, out] packs 8 input rows per int32",
                    out_multiple_of="qzeros [G, out / 8] packs 8 output columns per int32 (AutoGPTQ's QuantLinear "
                                    "allocates no padded word)",
                    zero_points="qzeros are 4-bit integer fields",
                    scale_dtypes="GPTQ checkpoints keep scales in half precision (fp16; bf16 once a loader casts "
                                 "them to the model dtype), and its kernels read them so")
GGUF_LIMITS = dict(in_multiple_of=32, group_sizes=tuple(g for g in GROUP_SIZES if g % 32 == 0), scale_dtypes=("fp16",))
GGUF_REASONS = dict(in_multiple_of="a row is blocks of 32 columns",
                    group_sizes="one d per block of 32: a canonical group must be a whole number of blocks",
                    scale_dtypes="d is an fp16 inside each block")


def _layout(name, weight_parameters, convert, limits=None, reasons=None, fit=_unchanged):
    return Layout(name, f"docs/layouts/{name}.md", weight_parameters, limits or {}, reasons or {}, convert, fit)


LAYOUTS = {layout.name: layout for layout in (
    _layout("canonical", CANONICAL_WEIGHTS, _as_canonical),
    _layout("gptq", ("qweight", "qzeros", "scales", "g_idx", "group_size"), _as_gptq("v1"), GPTQ_LIMITS, GPTQ_REASONS,
            fit=_fit_gptq_v1),
    _layout("gptq_v2", ("qweight", "qzeros", "scales", "g_idx", "group_size"), _as_gptq("v2"), GPTQ_LIMITS,
            GPTQ_REASONS),
    _layout("awq", ("qweight", "qzeros", "scales", "group_size"), _as_awq,
            dict(out_multiple_of=8, ragged=False, zero_points="integer", scale_dtypes=HALF),
            dict(out_multiple_of="qweight [in, out / 8] and qzeros [G, out / 8] pack 8 output columns per int32 "
                                 "(AutoAWQ's WQLinear_GEMM allocates no padded word)",
                 ragged="WQLinear_GEMM asserts in_features % group_size == 0",
                 zero_points="qzeros are 4-bit integer fields",
                 scale_dtypes="AWQ checkpoints keep scales in half precision (fp16; bf16 once a loader casts them "
                              "to the model dtype), and its kernels read them so")),
    _layout("compressed-tensors", ("weight_packed", "weight_scale", "weight_zero_point", "weight_shape", "group_size"),
            _as_compressed_tensors, dict(ragged=False, zero_points="integer", same_granularity=True),
            dict(ragged="compressed-tensors' dequantize refuses in_features % group_size != 0",
                 zero_points="weight_zero_point holds 4-bit integers",
                 same_granularity="one quantization strategy per tensor: weight_zero_point has weight_scale's "
                                  "granularity")),
    _layout("gguf-q4_0", ("blocks", "shape"), _as_gguf(native.to_gguf_q4_0),
            dict(GGUF_LIMITS, zero_points="none"), dict(GGUF_REASONS, zero_points="W = (q - 8) * d has no zero point"),
            fit=_fit_gguf_q4_0),
    _layout("gguf-q4_1", ("blocks", "shape"), _as_gguf(native.to_gguf_q4_1), GGUF_LIMITS, GGUF_REASONS,
            fit=_fit_gguf_q4_1),
    _layout("hqq", ("W_q", "scale", "zero", "shape", "group_size"), _as_hqq,
            dict(ragged=False, out_multiple_of=2, group_sizes=tuple(g for g in GROUP_SIZES if g % 8 == 0)),
            dict(ragged="the groups are the rows of W.reshape(-1, group_size): a ragged one would span two "
                        "output rows",
                 out_multiple_of="pack_4bit_u8 pairs row r with row r + rows / 2 of the [out * in / g, g] "
                                 "groups, so their number must be even",
                 group_sizes="hqq_base_quant_config asserts group_size % 8 == 0"),
            fit=_fit_hqq),
)}


def get_layout(name):
    """LAYOUTS[name], or ValueError listing the layouts."""
    if name not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}; got {name!r}")
    return LAYOUTS[name]


# --- what the engine calls --------------------------------------------------------------------

def parameters(layout, contract):
    """The keyword names a candidate in `layout` must accept for `contract` ('dequantizer' or 'linear')."""
    if contract == "dequantizer":
        return (*layout.weight_parameters, "output_dtype")
    if contract == "linear":
        return ("x", *layout.weight_parameters, *CONTRACT_PARAMETERS["linear"][5:])
    raise ValueError(f"contract must be 'dequantizer' or 'linear', got {contract!r}")


def dequantizer_kwargs(layout, case, device):
    """A DequantCase's keyword arguments in `layout`: native weights on `device`, and output_dtype."""
    return dict(_on(layout.native_weights(case.weights), device), output_dtype=TORCH_DTYPES[case.output_dtype])


def linear_kwargs(layout, case, device):
    """A LinearCase's keyword arguments in `layout`: x, the native weights, then lora_a ... bias, on `device`."""
    canonical = case.torch_kwargs(device)
    weights = _on(layout.native_weights(case.weights), device)
    return {"x": canonical["x"], **weights, **{name: canonical[name] for name in CONTRACT_PARAMETERS["linear"][5:]}}


def _on(arrays, device):
    return {name: a.to(device) if isinstance(a, torch.Tensor) else a for name, a in arrays.items()}
