"""Whole, valid inputs for the two contracts, built from a few named parameters and a seed.

A case holds NumPy arrays (the reference's inputs) plus the dtype each stands for;
`torch_args` turns it into the contract's tensors on a device. Float arrays hold
values already rounded to their dtype (bf16 values are stored as float32), so the
reference and the candidate see exactly the same numbers.
"""
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from int4_lora_harness.reference.rounding import round_to
from int4_lora_harness.verify.domain import POPULARITIES

TORCH_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32, "uint8": torch.uint8,
                "int8": torch.int8, "int16": torch.int16, "int32": torch.int32, "int64": torch.int64}
DTYPE_NAMES = {v: k for k, v in TORCH_DTYPES.items()}
# The contracts' parameters (docs/contract.md#dequantizer, #linear), in order. Every candidate is called by keyword (docs/contract.md).
CONTRACT_PARAMETERS = {
    "dequantizer": ("packed_weights", "scales", "zero_points", "group_size", "output_dtype"),
    "linear": ("x", "packed_weights", "scales", "zero_points", "group_size", "lora_a", "lora_b", "lora_indices",
               "scaling", "bias"),
}


@dataclass
class Weights:
    """The packed base of docs/contract.md#packed-weight. packed: uint8 [out, in // 2]."""
    packed: np.ndarray
    scales: np.ndarray
    scales_dtype: str
    zero_points: np.ndarray | None
    zero_points_dtype: str | None
    group_size: int | None

    @property
    def shape(self):
        return self.packed.shape[0], 2 * self.packed.shape[1]

    def describe(self):
        """The weights in words: shapes, dtypes, group size."""
        zeros = None if self.zero_points is None else f"{self.zero_points_dtype} {list(self.zero_points.shape)}"
        return dict(out_features=self.shape[0], in_features=self.shape[1],
                    scales=f"{self.scales_dtype} {list(self.scales.shape)}", zero_points=zeros,
                    group_size=self.group_size)

    def torch_args(self, device):
        """(packed_weights, scales, zero_points, group_size) as tensors on `device`."""
        zeros = None if self.zero_points is None else tensor(self.zero_points, self.zero_points_dtype, device)
        return (torch.from_numpy(self.packed.copy()).to(device), tensor(self.scales, self.scales_dtype, device),
                zeros, self.group_size)


@dataclass
class DequantCase:
    weights: Weights
    output_dtype: str

    def describe(self):
        return dict(self.weights.describe(), output_dtype=self.output_dtype)

    def __repr__(self):  # what Hypothesis prints for a falsifying example: the case in words, not its data
        return f"DequantCase({self.describe()})"

    def _repr_pretty_(self, printer, cycle):  # Hypothesis' pretty-printer asks for this before __repr__
        printer.text(repr(self))

    def torch_kwargs(self, device):
        """The docs/contract.md#dequantizer contract's keyword arguments, as tensors on `device`."""
        values = (*self.weights.torch_args(device), TORCH_DTYPES[self.output_dtype])
        return dict(zip(CONTRACT_PARAMETERS["dequantizer"], values))

    def call(self, dequantizer, device):
        return dequantizer(**self.torch_kwargs(device))


@dataclass
class LinearCase:
    weights: Weights
    x: np.ndarray  # [M, in], values of x_dtype
    x_dtype: str
    lora_a: np.ndarray | None  # [L, rank, in], values of x_dtype
    lora_b: np.ndarray | None  # [L, out, rank], values of x_dtype
    lora_indices: np.ndarray  # int32 | int64 [M]
    scaling: float
    bias: np.ndarray | None  # [out], values of x_dtype
    notes: dict = field(default_factory=dict)  # how the case was drawn, for humans
    expect: str = "tolerance"  # "tolerance" (harness.verify.tolerance), or a probe's: "exact", "columns"

    def describe(self):
        """The case in words: shapes, dtypes, granularities, group size, M, rank, indices."""
        lora = None if self.lora_a is None else dict(num_loras=self.lora_a.shape[0], rank=self.lora_a.shape[1])
        words = dict(self.weights.describe(), x_dtype=self.x_dtype, M=self.x.shape[0], lora=lora,
                     scaling=self.scaling, lora_indices=self.lora_indices.tolist()[:64], bias=self.bias is not None)
        if self.notes.get("poison"):
            words["poison"] = self.notes["poison"]
        return words if self.expect == "tolerance" else dict(words, probe=self.notes.get("probe", self.expect))

    def __repr__(self):  # what Hypothesis prints for a falsifying example: the case in words, not its data
        return f"LinearCase({self.describe()})"

    def _repr_pretty_(self, printer, cycle):  # Hypothesis' pretty-printer asks for this before __repr__
        printer.text(repr(self))

    def reference_args(self):
        """Positional arguments of reference.linear / linear_exact."""
        w = self.weights
        return (self.x, w.packed, w.scales, w.zero_points, w.group_size, self.lora_a, self.lora_b,
                self.lora_indices, self.scaling, self.bias)

    def torch_args(self, device):
        """Positional arguments of the docs/contract.md#linear contract, as tensors on `device`."""
        opt = lambda a: None if a is None else tensor(a, self.x_dtype, device)  # noqa: E731
        return (tensor(self.x, self.x_dtype, device), *self.weights.torch_args(device), opt(self.lora_a),
                opt(self.lora_b), torch.from_numpy(self.lora_indices.copy()).to(device), self.scaling, opt(self.bias))

    def torch_kwargs(self, device):
        """The same arguments by name."""
        return dict(zip(CONTRACT_PARAMETERS["linear"], self.torch_args(device)))

    def call(self, linear, device):
        return linear(**self.torch_kwargs(device))


def tensor(values, dtype, device):
    """NumPy values -> torch tensor of dtype name `dtype` ('fp16', 'bf16', 'fp32', 'int32', 'int64')."""
    t = torch.from_numpy(np.ascontiguousarray(values))
    return t.to(TORCH_DTYPES[dtype]).to(device)


def _param(rng, shape_kind, out_features, in_features, group_size):
    """Random positive scale-like values in the shape of a granularity, log-uniform over [0.5, 2)."""
    shape = {"per-tensor": (1,), "per-channel": (out_features,),
             "grouped": (out_features, -(-in_features // (group_size or 1)))}[shape_kind]
    return np.exp2(rng.uniform(-1.0, 1.0, size=shape))


def make_weights(rng, out_features, in_features, group_size=128, scale_granularity="grouped",
                 zero_granularity=None, zero_kind="int", scales_dtype="fp16", scale_exponent=-4.0):
    """Random nibbles with scales of magnitude ~2**scale_exponent and optional zero points."""
    packed = rng.integers(0, 256, size=(out_features, in_features // 2), dtype=np.uint8)
    scales = round_to(np.exp2(scale_exponent) * _param(rng, scale_granularity, out_features, in_features,
                                                       group_size), scales_dtype)
    zero_points, zero_dtype = None, None
    if zero_granularity is not None:
        like = _param(rng, zero_granularity, out_features, in_features, group_size)
        if zero_kind in ("int", "int32", "int8", "int64"):  # integer zero points in [-8, 7]; "int" is int32
            zero_dtype = "int32" if zero_kind == "int" else zero_kind
            zero_points = rng.integers(-8, 8, size=like.shape).astype(zero_dtype)
        else:  # fractional zero points: in the scales' float dtype ("float"), or in fp32 (wider than fp16/bf16 output)
            zero_dtype = scales_dtype if zero_kind == "float" else zero_kind
            zero_points = round_to(rng.uniform(-8.0, 8.0, size=like.shape), zero_dtype)
    uses_groups = "grouped" in (scale_granularity, zero_granularity)
    return Weights(packed, scales, scales_dtype, zero_points, zero_dtype, group_size if uses_groups else None)


def make_lora_indices(rng, m, num_loras, popularity, index_dtype="int32"):
    """int [M] adapter index per token; -1 = none. Mixes in -1 and the last index unless 'identical'/'none'."""
    if popularity not in POPULARITIES:
        raise ValueError(f"popularity must be one of {POPULARITIES}, got {popularity!r}")
    if num_loras == 0 or popularity == "none":
        indices = np.full(m, -1)
    elif popularity == "identical":
        indices = np.full(m, num_loras - 1)
    elif popularity == "distinct":
        indices = np.arange(m) % (num_loras + 1) - 1  # -1, 0, 1, ..., L-1, -1, ...
    else:
        # uniform, or Zipf with exponent 1.5 over (-1, 0, 1, ...): "none" the most popular, then adapter 0
        weights = np.ones(num_loras + 1) if popularity == "uniform" else 1.0 / np.arange(1, num_loras + 2) ** 1.5
        indices = rng.choice(np.arange(-1, num_loras), size=m, p=weights / weights.sum())
        indices[: min(m, 2)] = [-1, num_loras - 1][: min(m, 2)]
    return indices.astype(index_dtype)


def make_linear_case(seed, out_features, in_features, m, x_dtype="fp16", rank=16, num_loras=4,
                     popularity="uniform", scaling=1.0, bias=True, index_dtype="int32", weights=None, **weight_params):
    """A whole LinearCase; `weight_params` go to make_weights, unless `weights` (e.g. a real layer's, of shape
    [out_features, in_features]) are given. Magnitudes keep y within x_dtype's range."""
    rng = np.random.default_rng(seed)
    if weights is None:
        weights = make_weights(rng, out_features, in_features, **weight_params)
    w_scale = float(np.exp2(weight_params.get("scale_exponent", -4.0))) * 4.0  # ~ typical |W|
    x = round_to(rng.standard_normal((m, in_features)), x_dtype)
    y_scale = w_scale * np.sqrt(in_features)
    lora_a = lora_b = None
    if num_loras:
        lora_a = round_to(rng.standard_normal((num_loras, rank, in_features)) * w_scale, x_dtype)
        lora_b = round_to(rng.standard_normal((num_loras, out_features, rank)) / np.sqrt(rank), x_dtype)
    indices = make_lora_indices(rng, m, num_loras, popularity, index_dtype)
    b = round_to(rng.standard_normal(out_features) * y_scale, x_dtype) if bias else None
    notes = dict(seed=seed, popularity=popularity, **weight_params)
    return LinearCase(weights, x, x_dtype, lora_a, lora_b, indices, float(scaling), b, notes)


def weights_from_tensors(packed_weights, scales, zero_points, group_size):
    """Weights from canonical torch tensors (e.g. a checkpoint's layer, int4_lora_harness.checkpoints.safetensors_layer.Layer)."""
    zeros = None if zero_points is None else zero_points.cpu()
    return Weights(packed_weights.cpu().numpy(), scales.cpu().float().numpy(), DTYPE_NAMES[scales.dtype],
                   None if zeros is None else (zeros.float().numpy() if zeros.is_floating_point() else zeros.numpy()),
                   None if zeros is None else DTYPE_NAMES[zeros.dtype], group_size)
