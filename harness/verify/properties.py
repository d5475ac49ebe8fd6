"""What "correct" means for an implementation of each contract (SPEC §3 and §4), in one place.

The tests and `verify` both call `dequantizer_properties` / `linear_properties`: each runs the
candidate on one case and returns one Outcome per property, with the numbers behind
it (worst element, error over the allowed bound). Nothing here returns a bare bool.

Properties:
  shape, dtype and device  the result is a tensor [out, in] / [M, out] of the promised dtype, on the input's device
  within tolerance         every element within int4_lora_harness.verify.tolerance's bound (worst element reported)
  inputs unchanged         every input tensor is bitwise the same after the call
  deterministic            a second call gives a bitwise identical result
  tracks input updates     after the packed weights are changed in place (same tensor object, new values)
                           the result equals that of fresh tensors holding the new values (no stale cache)
"""
from dataclasses import dataclass, replace

import numpy as np
import torch

from int4_lora_harness.verify.cases import TORCH_DTYPES
from int4_lora_harness.verify.tolerance import dequant_error, linear_error

PROPERTIES = ("shape, dtype and device", "within tolerance", "inputs unchanged", "deterministic",
              "tracks input updates")


@dataclass
class Outcome:
    name: str  # one of PROPERTIES
    passed: bool
    message: str  # one line a human reads
    worst: dict | None = None  # within tolerance: index, expected, got, ulps, allowed, ratio, design
    max_ratio: float | None = None  # within tolerance: largest error / allowed


def _bits(t):
    """A tensor's bit pattern, so that NaN == NaN and -0 != +0 in comparisons."""
    ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.contiguous().view(ints)


def same_bits(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(_bits(a).cpu(), _bits(b).cpu())


def _tensors(args):
    return [a for a in args if isinstance(a, torch.Tensor)]


def _shape_outcome(out, shape, dtype, device):
    name = PROPERTIES[0]
    if not isinstance(out, torch.Tensor):
        return Outcome(name, False, f"returned {type(out).__name__}, expected a torch.Tensor")
    problems = []
    if tuple(out.shape) != tuple(shape):
        problems.append(f"shape {list(out.shape)} != {list(shape)}")
    if out.dtype != dtype:
        problems.append(f"dtype {out.dtype} != {dtype}")
    if out.device.type != torch.device(device).type:
        problems.append(f"device {out.device} != {device}")
    return Outcome(name, not problems, "; ".join(problems) or f"{list(shape)} {dtype} on {device}")


def _tolerance_outcome(report):
    worst = report.worst()
    if worst is None:
        return Outcome(PROPERTIES[1], True, "empty result", None, 0.0)
    where = (f"worst element {worst['index']}: expected {worst['expected']!r}, got {worst['got']!r}, "
             f"{worst['ulps']:g} ulp, error/allowed {worst['ratio']:.3g} (allowed {worst['allowed']:.3g}, "
             f"design: {worst['design']})")
    return Outcome(PROPERTIES[1], report.passed, where, worst, report.max_ratio)


def _check(call, args, fresh_args, expected_shape, dtype, device, error_of):
    """Run the properties for one call; `fresh_args()` builds new tensors of the same case."""
    copies = [t.clone() for t in _tensors(args)]
    out = call(*args)
    shape = _shape_outcome(out, expected_shape, dtype, device)
    if not shape.passed:
        return [shape]
    changed = [i for i, (t, c) in enumerate(zip(_tensors(args), copies)) if not same_bits(t, c)]
    unchanged = Outcome(PROPERTIES[2], not changed,
                        f"input tensors {changed} (in argument order) were modified" if changed else "all inputs intact")
    report = error_of(out.detach().to(torch.float32).cpu().numpy().astype(np.float64))
    again = call(*args)
    same = isinstance(again, torch.Tensor) and same_bits(out, again)
    deterministic = Outcome(PROPERTIES[3], same, "two calls bitwise equal" if same else "two calls differ")
    packed = next(t for t in _tensors(args) if t.dtype == torch.uint8)
    packed.bitwise_not_()  # v -> -v - 1 for every weight, in place
    updated, fresh = call(*args), call(*fresh_args())
    tracks = isinstance(updated, torch.Tensor) and same_bits(updated, fresh)
    tracking = Outcome(PROPERTIES[4], tracks, "follows in-place weight updates" if tracks else
                       "after an in-place update of packed_weights the result differs from fresh tensors (stale cache?)")
    return [shape, _tolerance_outcome(report), unchanged, deterministic, tracking]


def _flipped(weights):
    return replace(weights, packed=~weights.packed)


def dequantizer_properties(dequantizer, case, device="cpu"):
    """Outcomes of `dequantizer(**kwargs)` on a int4_lora_harness.verify.cases.DequantCase."""
    w = case.weights
    kwargs = case.torch_kwargs(device)
    names = list(kwargs)
    call = lambda *a: dequantizer(**dict(zip(names, a)))  # noqa: E731
    fresh = lambda: tuple(replace(case, weights=_flipped(w)).torch_kwargs(device).values())  # noqa: E731
    error_of = lambda got: dequant_error(got, w.packed, w.scales, w.zero_points, w.group_size, case.output_dtype)  # noqa: E731
    return _check(call, tuple(kwargs.values()), fresh, w.shape, TORCH_DTYPES[case.output_dtype], device, error_of)


def linear_properties(linear, case, device="cpu"):
    """Outcomes of `linear(*args)` (SPEC §4, positional) on a int4_lora_harness.verify.cases.LinearCase."""
    args = case.torch_args(device)
    fresh = lambda: replace(case, weights=_flipped(case.weights)).torch_args(device)  # noqa: E731
    shape = (case.x.shape[0], case.weights.shape[0])
    return _check(linear, args, fresh, shape, TORCH_DTYPES[case.x_dtype], device, lambda got: linear_error(got, case))


def failures(outcomes):
    return [o for o in outcomes if not o.passed]


def assert_holds(outcomes):
    """Raise AssertionError listing every failed property (for tests and Hypothesis)."""
    failed = failures(outcomes)
    if failed:
        raise AssertionError("; ".join(f"{o.name}: {o.message}" for o in failed))
