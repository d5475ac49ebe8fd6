"""Whole, valid inputs for the layer contract (docs/contract.md#layer), built from a few named parameters and a seed.

A LayerCase holds NumPy arrays (the reference's inputs) and the dtype each stands for, as
verify.cases.LinearCase does, plus the adapter rewrite the slot property performs. Two views tie it
to the linear contract's tolerance model:
  as_linear()         the same layer as one linear (docs/contract.md#linear): the slices' adapters side by side along the rank
                      (A = [A_0; A_1; ...], [L, S * R, in]) and B block-diagonal ([L, out, S * R], slice s's
                      B_s in rows offset_s.., columns s * R..): y_lora is exactly the sum over slices
  shard(r, tp, style) rank r's own layer (reference.layer.shard), whose as_linear() judges that rank
"""
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from int4_lora_harness.reference import layer as reference_layer
from int4_lora_harness.reference.rounding import round_to
from int4_lora_harness.verify.cases import LinearCase, Weights, make_lora_indices, make_weights, tensor

# The layer contract's parameters, in order; every candidate is called by keyword (docs/serving.md).
LAYER_PARAMETERS = ("x", "packed_weights", "scales", "zero_points", "group_size", "lora_a_stacked", "lora_b_stacked",
                    "output_slices", "lora_indices", "scaling", "bias", "tp_rank", "tp_size", "style")


@dataclass
class Rewrite:
    """An adapter written into a used slot between two calls: A_s [r_s, in], B_s [slice_out[s], r_s] per slice."""
    slot: int
    lora_a: tuple
    lora_b: tuple

    def describe(self):
        return dict(slot=self.slot, ranks=[np.shape(a)[0] for a in self.lora_a])


@dataclass
class LayerCase:
    weights: Weights
    x: np.ndarray  # [M, in], values of x_dtype
    x_dtype: str
    lora_a_stacked: tuple  # per slice [L, 1, R, in], values of x_dtype
    lora_b_stacked: tuple  # per slice [L, 1, slice_out, R], values of x_dtype
    output_slices: tuple
    lora_indices: np.ndarray  # int32 | int64 [M]
    scaling: float
    bias: np.ndarray | None  # [out], values of x_dtype
    rewrite: Rewrite | None = None
    notes: dict = field(default_factory=dict)  # how the case was drawn, for humans

    @property
    def max_rank(self):
        return self.lora_a_stacked[0].shape[2]

    def describe(self):
        """The case in words: shapes, dtypes, granularities, slices, slots, indices, the rewrite."""
        slots = dict(max_loras=self.lora_a_stacked[0].shape[0], max_rank=self.max_rank,
                     ranks=self.notes.get("ranks"))
        return dict(self.weights.describe(), x_dtype=self.x_dtype, M=self.x.shape[0],
                    output_slices=list(self.output_slices), slots=slots, scaling=self.scaling,
                    lora_indices=self.lora_indices.tolist()[:64], bias=self.bias is not None,
                    rewrite=None if self.rewrite is None else self.rewrite.describe())

    def __repr__(self):  # what Hypothesis prints for a falsifying example: the case in words, not its data
        return f"LayerCase({self.describe()})"

    def _repr_pretty_(self, printer, cycle):
        printer.text(repr(self))

    def reference_args(self):
        """The 11 positional arguments of reference.layer.layer_exact."""
        w = self.weights
        return (self.x, w.packed, w.scales, w.zero_points, w.group_size, self.lora_a_stacked, self.lora_b_stacked,
                self.output_slices, self.lora_indices, self.scaling, self.bias)

    def torch_kwargs(self, device):
        """The contract's arguments (all but tp_rank, tp_size, style) as tensors on `device`, by name."""
        packed, scales, zeros, group_size = self.weights.torch_args(device)
        stack = lambda ts: tuple(tensor(t, self.x_dtype, device) for t in ts)  # noqa: E731
        values = (tensor(self.x, self.x_dtype, device), packed, scales, zeros, group_size, stack(self.lora_a_stacked),
                  stack(self.lora_b_stacked), tuple(self.output_slices),
                  torch.from_numpy(self.lora_indices.copy()).to(device), self.scaling,
                  None if self.bias is None else tensor(self.bias, self.x_dtype, device))
        return dict(zip(LAYER_PARAMETERS, values))

    def rewritten(self):
        """The case after self.rewrite is written into its slot (reference.layer.write_slot), or self."""
        if self.rewrite is None:
            return self
        a, b = reference_layer.write_slot(self.lora_a_stacked, self.lora_b_stacked, self.rewrite.slot,
                                          self.rewrite.lora_a, self.rewrite.lora_b)
        return replace(self, lora_a_stacked=a, lora_b_stacked=b, rewrite=None)

    def as_linear(self):
        """The same layer as one verify.cases.LinearCase (block-diagonal B; see the module docstring)."""
        max_loras, _, max_rank, in_features = self.lora_a_stacked[0].shape
        lora_a = np.concatenate([a[:, 0] for a in self.lora_a_stacked], axis=1)  # [L, S * R, in]
        lora_b = np.zeros((max_loras, sum(self.output_slices), len(self.output_slices) * max_rank), lora_a.dtype)
        for s, offset in enumerate(reference_layer.slice_offsets(self.output_slices)):
            lora_b[:, offset:offset + self.output_slices[s], s * max_rank:(s + 1) * max_rank] = \
                self.lora_b_stacked[s][:, 0]
        return LinearCase(self.weights, self.x, self.x_dtype, lora_a, lora_b, self.lora_indices, self.scaling,
                          self.bias, dict(self.notes, layer=True))

    def shard(self, tp_rank, tp_size, style):
        """Rank tp_rank's own layer (reference.layer.shard), as a LayerCase without rewrite."""
        (x, packed, scales, zeros, group_size, a, b, slices, indices, scaling, bias) = reference_layer.shard(
            *self.reference_args(), tp_rank=tp_rank, tp_size=tp_size, style=style)
        w = self.weights
        weights = Weights(packed, scales, w.scales_dtype, zeros, w.zero_points_dtype, w.group_size)
        return LayerCase(weights, x, self.x_dtype, a, b, slices, indices, scaling, bias, None, self.notes)


def case_to_wire(case):
    """The parts of `case` a rank needs, as a tree for harness.verify.wire.pack (NumPy arrays, plain values)."""
    w = case.weights
    return dict(weights=dict(packed=w.packed, scales=w.scales, scales_dtype=w.scales_dtype, zero_points=w.zero_points,
                             zero_points_dtype=w.zero_points_dtype, group_size=w.group_size),
                x=case.x, x_dtype=case.x_dtype, lora_a_stacked=case.lora_a_stacked, lora_b_stacked=case.lora_b_stacked,
                output_slices=case.output_slices, lora_indices=case.lora_indices, scaling=case.scaling, bias=case.bias)


def case_from_wire(tree):
    """The LayerCase (without rewrite or notes) of case_to_wire's tree, as harness.verify.wire.unpack gave it."""
    return LayerCase(Weights(**tree["weights"]), tree["x"], tree["x_dtype"], tuple(tree["lora_a_stacked"]),
                     tuple(tree["lora_b_stacked"]), tuple(tree["output_slices"]), tree["lora_indices"],
                     tree["scaling"], tree["bias"])


def _adapter(rng, rank, in_features, width, w_scale, x_dtype):
    """One slice's adapter: A [rank, in] ~ w_scale, B [width, rank] ~ 1 / sqrt(rank), values of x_dtype."""
    a = round_to(rng.standard_normal((rank, in_features)) * w_scale, x_dtype)
    b = round_to(rng.standard_normal((width, rank)) / np.sqrt(rank), x_dtype)
    return a, b


def make_layer_case(seed, output_slices, in_features, m, x_dtype="fp16", max_loras=3, max_rank=4, ranks=None,
                    rewrite_ranks=None, popularity="uniform", scaling=1.0, bias=True, index_dtype="int32",
                    **weight_params):
    """A whole LayerCase, its slots written as an engine writes them (reference.layer.write_slot from zeros).

    ranks: [max_loras][slices] rank of each slot's adapter per slice (0: none); default max_rank everywhere.
    rewrite_ranks: per slice, the ranks of the adapter the slot property writes into the last slot (which
    token 1 always uses; token 0 never has an adapter, so other tokens stay to compare); default 1.
    `weight_params` go to verify.cases.make_weights. M >= 2.
    """
    rng = np.random.default_rng(seed)
    slices = tuple(int(n) for n in output_slices)
    out_features = sum(slices)
    weights = make_weights(rng, out_features, in_features, **weight_params)
    w_scale = float(np.exp2(weight_params.get("scale_exponent", -4.0))) * 4.0  # ~ typical |W|
    ranks = ranks or [[max_rank] * len(slices) for _ in range(max_loras)]
    zeros = lambda shape: np.zeros(shape, np.float32 if x_dtype != "fp16" else np.float16)  # noqa: E731
    a_st = tuple(zeros((max_loras, 1, max_rank, in_features)) for _ in slices)
    b_st = tuple(zeros((max_loras, 1, n, max_rank)) for n in slices)
    for slot, slot_ranks in enumerate(ranks):
        pairs = [_adapter(rng, r, in_features, n, w_scale, x_dtype) if r else (None, None)
                 for r, n in zip(slot_ranks, slices)]
        a_st, b_st = reference_layer.write_slot(a_st, b_st, slot, [p[0] for p in pairs], [p[1] for p in pairs])
    pairs = [_adapter(rng, r, in_features, n, w_scale, x_dtype)
             for r, n in zip(rewrite_ranks or [1] * len(slices), slices)]
    rewrite = Rewrite(max_loras - 1, tuple(p[0] for p in pairs), tuple(p[1] for p in pairs))
    x = round_to(rng.standard_normal((m, in_features)), x_dtype)
    indices = make_lora_indices(rng, m, max_loras, popularity, index_dtype)
    indices[:2] = [-1, max_loras - 1]
    y_scale = w_scale * np.sqrt(in_features)
    b = round_to(rng.standard_normal(out_features) * y_scale, x_dtype) if bias else None
    notes = dict(seed=seed, popularity=popularity, ranks=[list(r) for r in ranks], **weight_params)
    return LayerCase(weights, x, x_dtype, a_st, b_st, slices, indices, float(scaling), b, rewrite, notes)
