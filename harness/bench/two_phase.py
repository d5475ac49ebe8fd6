"""Two-phase TARGETs: weights packed once at load (prepare), then applied per call (apply), as real kernels run.

A TARGET that resolves to an object with callable attributes `prepare` and `apply` (a class with static or class
methods, a namespace, an instance) is two-phase (docs/contract.md):
    prepare(packed_weights, scales, zero_points, group_size) -> any object   (called by keyword)
    linear:      apply(prepared, x, lora_a, lora_b, lora_indices, scaling, bias) -> [M, out] of x.dtype
    dequantizer: apply(prepared, output_dtype) -> [out, in] of output_dtype   (prepared first, the rest by keyword)
bench checks it through `one_call` (prepare then apply on every call, so the verifier's properties hold it to the
contract), then per case times prepare once (the row's prepare_s) and apply alone on what it prepared
(`timed_target`): a kernel that repacks its weights at load is no longer timed repacking them on every call.
"""
from dataclasses import dataclass
from functools import partial

from int4_lora_harness.bench.timing import time_once
from int4_lora_harness.verify.cases import CONTRACT_PARAMETERS
from int4_lora_harness.verify import targets
from int4_lora_harness.verify.targets import load_target

WEIGHTS = CONTRACT_PARAMETERS["dequantizer"][:4]  # what prepare takes: packed_weights, scales, zero_points, group_size
APPLY = {"linear": tuple(p for p in CONTRACT_PARAMETERS["linear"] if p not in WEIGHTS),  # x, lora_a, ..., bias
         "dequantizer": ("output_dtype",)}
CONTRACT = {"dequantize": "dequantizer", "gemm": "linear", "gemm_lora": "linear"}  # a benchmark's operation


@dataclass(frozen=True)
class TwoPhase:
    """A two-phase TARGET's two functions."""
    prepare: object
    apply: object

    def one_call(self, operation):
        """The contract function of `operation` (called by keyword): prepare, then apply, on every call."""
        def call(**arguments):
            prepared = self.prepare(**{name: arguments[name] for name in WEIGHTS})
            return self.apply(prepared, **{name: arguments[name] for name in APPLY[CONTRACT[operation]]})
        return call

    def timed_target(self, operation, inputs, device):
        """(prepare_s, target): prepare called once on `inputs`' weights and timed, and a zero-argument call of apply
        alone on what it returned. inputs: the linear contract's tensors by name (runner.call_inputs); a dequantizer
        is applied with output_dtype = x's dtype, as runner.prepare calls a one-call dequantizer."""
        prepare_s, prepared = time_once(partial(self.prepare, **{name: inputs[name] for name in WEIGHTS}), device)
        if operation == "dequantize":
            return prepare_s, partial(self.apply, prepared, output_dtype=inputs["x"].dtype)
        return prepare_s, partial(self.apply, prepared, **{name: inputs[name] for name in APPLY["linear"]})


def resolve(target, contract):
    """What the TARGET string names, by harness.verify.targets.load_target's rules (the same usage errors as
    verify): a TwoPhase for a two-phase TARGET, else the one-call contract function."""
    found = load_target(target, CONTRACT_PARAMETERS[contract], contract)
    return TwoPhase(found.prepare, found.apply) if isinstance(found, targets.TwoPhase) else found
