"""Two-phase candidates (docs/contract.md, "Two-phase kernels: prepare and apply"): correct ones in each form a
TARGET may take (a class of static methods, an instance, a namespace), one bug for each thing the two phases
add (a prepare that ignores a new weight set, a prepare that writes its inputs, a prepare that raises), and the
signatures verify refuses before any case runs. The prepared object of the correct ones is a copy of the weights,
as a real kernel keeps its repacked weights: it sees no later change of the caller's tensors.
"""
import types

from int4_lora_harness.kernels.torch_path import dequantize, linear


def _copies(packed_weights, scales, zero_points, group_size):
    """The weights, copied: what a prepare that repacks keeps (nothing shared with the caller's tensors)."""
    return dict(packed_weights=packed_weights.clone(), scales=scales.clone(),
                zero_points=None if zero_points is None else zero_points.clone(), group_size=group_size)


class Linear:
    """Correct: prepare copies the weights, apply computes the contract on them (a class of static methods)."""

    @staticmethod
    def prepare(packed_weights, scales, zero_points, group_size):
        return _copies(packed_weights, scales, zero_points, group_size)

    @staticmethod
    def apply(prepared, x, lora_a, lora_b, lora_indices, scaling, bias):
        return linear(x=x, **prepared, lora_a=lora_a, lora_b=lora_b, lora_indices=lora_indices, scaling=scaling,
                      bias=bias)


class _Dequantizer:
    def prepare(self, packed_weights, scales, zero_points, group_size):
        return _copies(packed_weights, scales, zero_points, group_size)

    def apply(self, prepared, output_dtype):
        return dequantize(**prepared, output_dtype=output_dtype)


dequantizer = _Dequantizer()  # correct, as an instance
dequantizer_namespace = types.SimpleNamespace(prepare=dequantizer.prepare, apply=dequantizer.apply)  # correct


class IgnoresRePrepare:
    """Wrong: prepare keeps what it made for the caller's tensor object the first time (a cache keyed by identity),
    so after the weights change in place, prepare again returns the old weights."""

    @staticmethod
    def prepare(packed_weights, scales, zero_points, group_size):
        if not hasattr(packed_weights, "_prepared"):
            packed_weights._prepared = _copies(packed_weights, scales, zero_points, group_size)
        return packed_weights._prepared

    apply = Linear.apply


def _swap_nibbles(packed):
    return (packed << 4) | (packed >> 4)


class MutatesInPrepare:
    """Wrong: prepare reuses the caller's packed_weights for its own layout (nibbles swapped in place) and keeps a
    copy in the contract's: the first result right, an input changed (a later prepare on the same tensor reads
    what this one wrote)."""

    @staticmethod
    def prepare(packed_weights, scales, zero_points, group_size):
        packed_weights.copy_(_swap_nibbles(packed_weights))
        return _copies(_swap_nibbles(packed_weights), scales, zero_points, group_size)

    apply = Linear.apply


class RaisesInPrepare:
    """Wrong: prepare refuses every weight set."""

    @staticmethod
    def prepare(packed_weights, scales, zero_points, group_size):
        raise ValueError(f"cannot repack {list(packed_weights.shape)}")

    apply = Linear.apply


class PrepareWithoutGroupSize:
    """A prepare that cannot take group_size: a usage error."""

    @staticmethod
    def prepare(packed_weights, scales, zero_points):
        return _copies(packed_weights, scales, zero_points, None)

    apply = Linear.apply


class ApplyWithoutPrepared:
    """An apply that takes no `prepared`: a usage error."""

    prepare = Linear.prepare

    @staticmethod
    def apply(x, lora_a, lora_b, lora_indices, scaling, bias):
        return x


class OnlyPrepare:
    """A prepare and no apply: a usage error."""

    prepare = Linear.prepare


class InstanceMethods:
    """prepare and apply as instance methods of a class named as the TARGET (not an instance): a usage error."""

    def prepare(self, packed_weights, scales, zero_points, group_size):
        return _copies(packed_weights, scales, zero_points, group_size)

    def apply(self, prepared, x, lora_a, lora_b, lora_indices, scaling, bias):
        return Linear.apply(prepared, x, lora_a, lora_b, lora_indices, scaling, bias)


def counting():
    """A correct two-phase linear that counts its calls: (the namespace, {'prepare': n, 'apply': n})."""
    counts = dict(prepare=0, apply=0)

    def prepare(packed_weights, scales, zero_points, group_size):
        counts["prepare"] += 1
        return _copies(packed_weights, scales, zero_points, group_size)

    def apply(prepared, x, lora_a, lora_b, lora_indices, scaling, bias):
        counts["apply"] += 1
        return Linear.apply(prepared, x, lora_a, lora_b, lora_indices, scaling, bias)
    return types.SimpleNamespace(prepare=prepare, apply=apply), counts
