"""What "correct" means for an implementation of each contract (docs/contract.md#dequantizer, #linear), in one place.

`run_properties` runs the candidate (through an executor: harness.verify.executor) on one case and
returns one Outcome per property, with the numbers behind it. Nothing here returns a bare bool.

Properties:
  shape, dtype and device  the result is a tensor [out, in] / [M, out] of the promised dtype, on the input's device
  within tolerance         every element within harness.verify.tolerance's bound for some accepted design (or,
                           for a probe, bit for bit / to the dequantizer's standard: harness.verify.probes)
  inputs unchanged         every input tensor is bitwise what the judge sent after each call of the case
  deterministic            a second call gives a bitwise identical result
  earlier results intact   a later call does not change a result returned earlier (no shared output buffer)
  tracks input updates     after an input is changed in place (same tensor object, new values), the result
                           equals that of fresh tensors holding the new values (no cache keyed by identity);
                           every input in turn on fuzzed cases, the packed weights and then all the others
                           at once on the large tier
A result is judged on the data of its torch.Tensor base (the executor copies it out), never on what a
subclass's methods show.
"""
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from int4_lora_harness.verify.cases import TORCH_DTYPES, DequantCase
from int4_lora_harness.verify.designs import DESIGNS
from int4_lora_harness.verify.probes import probe_judgement
from int4_lora_harness.verify.region import same_bytes, tensor_bytes
from int4_lora_harness.verify.dequantizer import dequant_judgement
from int4_lora_harness.verify.tolerance import linear_judgement

PROPERTIES = ("shape, dtype and device", "within tolerance", "inputs unchanged", "deterministic",
              "earlier results intact", "tracks input updates")
EACH, QUICK = "each input in turn", "packed weights, then the rest at once"
REPEATED, REPEAT = "repeated calls", 256  # one small case called 256 more times: warm-up tricks, output pools
JUDGE_UPDATES_UP_TO = 1 << 20  # weights of a case whose updated results are judged against the reference too
JUDGED_UPDATE_TOKENS = 16  # ... on its first tokens only: rows are independent, and a stale or wrong result shows there


@dataclass
class Outcome:
    name: str  # one of PROPERTIES
    passed: bool | None  # None: not judged (the message says why)
    message: str  # one line a human reads
    judgement: object = None  # within tolerance: harness.verify.tolerance.Judgement

    @property
    def max_ratio(self):
        return None if self.judgement is None else self.judgement.max_ratio

    @property
    def worst(self):
        return None if self.judgement is None else self.judgement.worst


@dataclass
class CaseRun:
    """The outcomes on one case and where its time went."""
    outcomes: list
    candidate_s: float = 0.0  # inside the candidate's calls
    judge_s: float = 0.0  # the rest: building inputs, judging, comparing


def same_bits(a, b):
    """Bitwise equal tensors on any devices: same dtype and shape, same bytes (NaN == NaN, -0 != +0)."""
    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and \
        a.shape == b.shape and same_bytes(tensor_bytes(a.cpu()), tensor_bytes(b.cpu()))


def same_result(reply, other):
    """Two calls' replies hold bitwise equal tensor results (their digests, computed by the judge on the bytes it
    received: harness.verify.executor.result_digest)."""
    return reply.get("digest") is not None and reply.get("digest") == other.get("digest")


def result_values(out):
    """A result tensor's values as a NumPy array, not widened (the judges widen block by block): fp16 as float16,
    bf16 as float32 (exact), fp32 as float32, any other dtype as float64."""
    if out.dtype in (torch.float16, torch.float32):
        return out.numpy()
    return out.to(torch.float32 if out.dtype == torch.bfloat16 else torch.float64).numpy()


def fitted(case, layout="canonical"):
    """`case` with weights the layout represents exactly (harness.verify.layouts: its `fit`); canonical: as is.
    A probe whose weights the fit changes is judged by the tolerance model instead (its exactness was built
    from the values the fit moved)."""
    if layout == "canonical":
        return case
    from int4_lora_harness.verify import layouts
    weights = layouts.LAYOUTS[layout].fit(case.weights)
    moved = not all(np.array_equal(a, b) for a, b in ((weights.packed, case.weights.packed),
                                                      (weights.scales, case.weights.scales)))
    moved = moved or (weights.zero_points is None) != (case.weights.zero_points is None) or (
        weights.zero_points is not None and not np.array_equal(weights.zero_points, case.weights.zero_points))
    if moved and getattr(case, "expect", "tolerance") != "tolerance":
        return replace(case, weights=weights, expect="tolerance")
    return replace(case, weights=weights)


def case_inputs(case, layout="canonical"):
    """The candidate's keyword arguments for `case` in `layout` (harness.verify.layouts), as CPU tensors."""
    if layout == "canonical":
        return case.torch_kwargs("cpu")
    from int4_lora_harness.verify import layouts
    make = layouts.dequantizer_kwargs if isinstance(case, DequantCase) else layouts.linear_kwargs
    return make(layouts.LAYOUTS[layout], case, "cpu")


def updated_case(case):
    """The same case with every input changed, staying valid: nibbles v -> -v - 1, scales negated, integer
    zero points z -> -z - 1 and fractional ones negated, x, adapters and bias negated, indices rolled."""
    w = case.weights
    z = w.zero_points
    if z is not None:
        z = -z - 1 if w.zero_points_dtype.startswith("int") else -z
    weights = replace(w, packed=~w.packed, scales=-w.scales, zero_points=z)
    if isinstance(case, DequantCase):
        return replace(case, weights=weights)
    neg = lambda a: None if a is None else -a  # noqa: E731
    return replace(case, weights=weights, x=-case.x, lora_a=neg(case.lora_a), lora_b=neg(case.lora_b),
                   bias=neg(case.bias), lora_indices=np.roll(case.lora_indices, 1))


def _shape_outcome(reply, shape, dtype):
    name = PROPERTIES[0]
    if not reply.get("tensor"):
        return Outcome(name, False, f"returned {reply['type']}, expected a torch.Tensor")
    problems = []
    if tuple(reply["shape"]) != tuple(shape):
        problems.append(f"shape {reply['shape']} != {list(shape)}")
    if reply["dtype"] != str(dtype).removeprefix("torch."):
        problems.append(f"dtype {reply['dtype']} != {dtype}")
    if not reply["device_ok"]:
        problems.append(f"device {reply['device']} is not the inputs' device")
    if reply.get("subclass"):  # its methods can show the caller other values than the data the judge reads
        problems.append(f"a {reply['subclass']} (a torch.Tensor subclass), not a torch.Tensor: what its methods show "
                        "the caller cannot be judged")
    return Outcome(name, not problems, "; ".join(problems) or f"{list(shape)} {dtype}")


def judge(case, got, designs=tuple(DESIGNS)):
    """harness.verify.tolerance.Judgement of `got` (the output's values: a NumPy float array of any width) on `case`."""
    if isinstance(case, DequantCase):
        return dequant_judgement(got, case.weights, case.output_dtype)
    if case.expect != "tolerance":
        return probe_judgement(got, case)
    return linear_judgement(got, case, designs)


def tolerance_outcome(judgement):
    name = PROPERTIES[1]
    worst = judgement.worst
    if worst is None:
        return Outcome(name, True, "empty result", judgement)
    message = (f"worst element {tuple(worst['index'])}: expected {worst['expected']!r}, got {worst['got']!r}, "
               f"{worst['ulps']:g} ulp, error/allowed {worst['ratio']:.3g} (allowed {worst['allowed']:.3g}, "
               f"design: {worst['design']})")
    if judgement.hint:
        message += f"; {judgement.hint}"
    return Outcome(name, judgement.passed, message, judgement)


def _update_steps(inputs, new, plan, layout="canonical"):
    """[(words, {name: new values})] to update in turn: tensors whose values the update changes, each in turn
    (EACH) or the packed weights and then the rest; then, in the canonical layout, one inner element (neither the
    first nor the last) of each of them put back, near its middle: a cache keyed on a sample cannot see it."""
    names = [k for k, v in inputs.items() if isinstance(v, torch.Tensor) and not same_bits(v, new[k])]
    if plan == EACH or len(names) <= 1:
        groups = [[n] for n in names]
    else:
        packed = next((n for n in names if not inputs[n].is_floating_point()), names[0])
        groups = [[packed], [n for n in names if n != packed]]
    steps = [(" + ".join(group), {n: new[n] for n in group}) for group in groups]
    inner = {n: t for n in names if (t := _one_back(new[n], inputs[n])) is not None}
    if layout == "canonical" and inner:  # native layouts may pack scales in bytes: no element-wise mixing there
        steps.append((f"one inner element of each of {', '.join(inner)}", inner))
    return steps


def case_holding(case, held):
    """`case` with the values of `held` ({canonical argument name: CPU tensor}) in place of its own."""
    def values(name, old):
        if name not in held or old is None:
            return old
        t = held[name]
        return (t.double() if t.is_floating_point() else t).numpy().astype(old.dtype)
    w = case.weights
    weights = replace(w, packed=values("packed_weights", w.packed), scales=values("scales", w.scales),
                      zero_points=values("zero_points", w.zero_points))
    if isinstance(case, DequantCase):
        return replace(case, weights=weights)
    return replace(case, weights=weights, x=values("x", case.x), lora_a=values("lora_a", case.lora_a),
                   lora_b=values("lora_b", case.lora_b), lora_indices=values("lora_indices", case.lora_indices),
                   bias=values("bias", case.bias))


def first_tokens(case, got, count=JUDGED_UPDATE_TOKENS):
    """(case, got) cut to the first `count` tokens of a linear case (rows of `got`, [M, out]); a dequantizer's
    case as it is."""
    if isinstance(case, DequantCase) or case.x.shape[0] <= count:
        return case, got
    return replace(case, x=case.x[:count], lora_indices=case.lora_indices[:count]), got[:count]


def _one_back(current, before):
    """`current` with one inner element, the differing one nearest its middle, as it was in `before` (same
    shape); None where no inner element differs. Windows around the middle grow 16-fold, so an update that
    changes most elements costs one small comparison, not a pass over the tensor."""
    bits = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[current.element_size()]
    now, was = current.reshape(-1).view(bits), before.reshape(-1).view(bits)
    size, middle, reach = now.numel(), now.numel() // 2, 1
    while size > 2:
        low, high = max(1, middle - reach), min(size - 1, middle + reach + 1)
        differ = torch.nonzero(now[low:high] != was[low:high]).reshape(-1) + low
        if len(differ):
            index = int(differ[torch.argmin((differ - middle).abs())])
            mixed = current.clone().reshape(-1)
            mixed[index] = before.reshape(-1)[index]
            return mixed.reshape(current.shape)
        if low == 1 and high == size - 1:
            break
        reach *= 16
    return None


def run_properties(executor, case, designs=tuple(DESIGNS), layout="canonical", updates=EACH, repeat=0):
    """CaseRun of every property on `case`; CandidateFailure (raised, hung, slow, crashed) propagates.
    repeat: calls made after the second, each bitwise equal to the first (a kernel that changes after a warm-up,
    an output pool that comes round again), before earlier results are re-read."""
    start, transfer = time.perf_counter(), getattr(executor, "transfer_s", 0.0)
    candidate = 0.0
    inputs = case_inputs(case, layout)
    dequant = isinstance(case, DequantCase)
    shape = case.weights.shape if dequant else (case.x.shape[0], case.weights.shape[0])
    dtype = TORCH_DTYPES[case.output_dtype if dequant else case.x_dtype]
    executor.start_case(inputs, (str(dtype).removeprefix("torch."), shape))
    first = executor.call()
    candidate += first["seconds"]
    outcome = _shape_outcome(first, shape, dtype)
    if not outcome.passed:
        return _case_run([outcome], executor, start, transfer, candidate)
    outcomes = [outcome]
    got = result_values(first["out"])
    outcomes.append(tolerance_outcome(judge(case, got, designs)))
    replies = [first]
    if dequant or case.expect == "tolerance":  # probes judge values only
        for _ in range(1 + repeat):
            later = executor.call(send_out=False)
            candidate += later["seconds"]
            replies.append(later)
            if not same_result(first, later):
                break
        same, calls = same_result(first, replies[-1]), len(replies)
        outcomes.append(Outcome(PROPERTIES[3], same, f"{calls} calls bitwise equal" if same else
                                f"call {calls} on the same inputs differs bitwise from the first (nondeterministic, "
                                "or it changes after a warm-up)"))
        candidate += _tracking(executor, case, inputs, layout, updates, same, outcomes, replies, designs)
        changed = executor.results_changed()
        aliased = [i + 1 for i, reply in enumerate(replies) if reply.get("aliases")]
        outcomes.insert(3, Outcome(PROPERTIES[4], not changed and not aliased, (
            f"results of calls {changed} were changed by later calls (a shared output buffer?)" if changed else
            f"call {aliased[0]} returned memory of an earlier result the caller still holds (an output buffer "
            f"used again)" if aliased else f"earlier results intact over {len(replies)} calls")))
    outcomes.insert(2, _unchanged_outcome(replies))
    return _case_run(outcomes, executor, start, transfer, candidate)


def _unchanged_outcome(replies):
    """'inputs unchanged' over every call of the case: the inputs whose bits a call left different from what the
    judge had sent for them (harness.verify.child), named with the first call that did."""
    modified = {}
    for i, reply in enumerate(replies):
        for name in reply["modified"]:
            modified.setdefault(name, i + 1)
    if not modified:
        return Outcome(PROPERTIES[2], True, f"all inputs intact after each of {len(replies)} calls")
    return Outcome(PROPERTIES[2], False, "the call modified " + ", ".join(
        name + _which_call(replies, i) for name, i in modified.items()))


def _which_call(replies, i):
    """' (call i of the case, prepare or apply)': the call, where not the first, and for a two-phase candidate
    prepared in it, that either phase may have written (the judge reads the inputs once the call is over)."""
    words = ([] if i == 1 else [f"call {i} of the case"]) + (["prepare or apply"] if replies[i - 1].get("prepared")
                                                               else [])
    return f" ({', '.join(words)})" if words else ""


def _case_run(outcomes, executor, start, transfer, candidate):
    """CaseRun with the judge's seconds: the elapsed time less the candidate's and the executor's transfers."""
    moved = getattr(executor, "transfer_s", 0.0) - transfer
    return CaseRun(outcomes, candidate, max(0.0, time.perf_counter() - start - candidate - moved))


def _tracking(executor, case, inputs, layout, plan, deterministic, outcomes, replies, designs=tuple(DESIGNS)):
    """Append the 'tracks input updates' outcome (and each call's reply to `replies`); return the candidate
    seconds it took. On small cases the fresh results of the fully updated inputs and of the one-element update
    are judged against the reference too (a cache hit by both calls, or a kernel wrong only on the updated
    values, e.g. negative scales): a failure there replaces the 'within tolerance' outcome."""
    changed = fitted(updated_case(case), layout)
    new = case_inputs(changed, layout)
    steps = _update_steps(inputs, new, plan, layout)
    full = max((i for i, (words, _) in enumerate(steps) if not words.startswith("one inner")), default=-1)
    small = case.weights.shape[0] * case.weights.shape[1] <= JUDGE_UPDATES_UP_TO
    seconds, stale = 0.0, []
    for index, (words, step) in enumerate(steps):
        updated = executor.call(send_out=False, updates=step)
        state = changed if index == full else case_holding(changed, step) if words.startswith("one inner") else None
        fresh = executor.call_fresh(send_out=small and state is not None)
        replies += [updated, fresh]
        seconds += updated["seconds"] + fresh["seconds"]
        if fresh.get("out") is not None and outcomes[1].passed:
            after = tolerance_outcome(judge(*first_tokens(state, result_values(fresh["out"])), designs))
            if not after.passed:
                outcomes[1] = replace(after, message=f"after an in-place update of {words} (every input: nibbles "
                                                     f"v -> -v - 1, scales negated, ...): {after.message}")
        if not same_result(updated, fresh):
            again = executor.call_fresh()  # noise or a stale cache? two fresh calls tell
            replies.append(again)
            seconds += again["seconds"]
            deterministic = deterministic and same_result(fresh, again)
            stale.append(words)
    if stale and not deterministic:
        if outcomes[2].passed:
            outcomes[2] = Outcome(PROPERTIES[3], False, "two calls on fresh tensors holding the same values differ "
                                                        "bitwise (nondeterministic)")
        outcomes.append(Outcome(PROPERTIES[5], None, "not judged: the candidate is nondeterministic, so a result after "
                                                     "an in-place update cannot be told from noise"))
    elif stale:
        outcomes.append(Outcome(PROPERTIES[5], False, f"after in-place updates of {', then '.join(stale)}, the result "
                                                      "differs from fresh tensors holding the same values (stale cache)"))
    else:
        outcomes.append(Outcome(PROPERTIES[5], True, f"follows in-place updates ({plan})"))
    return seconds


def failures(outcomes):
    return [o for o in outcomes if o.passed is False]


def assert_holds(outcomes):
    """Raise AssertionError listing every failed property (for tests and Hypothesis)."""
    failed = failures(outcomes)
    if failed:
        raise AssertionError("; ".join(f"{o.name}: {o.message}" for o in failed))


def properties_in_process(candidate, case, device="cpu", designs=tuple(DESIGNS), layout="canonical", updates=EACH):
    """Outcomes of `candidate` (a callable, or a two-phase object with prepare and apply) on `case`, run in this
    process: for tests and a user's own @given."""
    from int4_lora_harness.verify.in_process import InProcessExecutor
    from int4_lora_harness.verify.targets import PHASES, parameters, two_phase
    if all(callable(getattr(candidate, phase, None)) for phase in PHASES):
        contract = "dequantizer" if isinstance(case, DequantCase) else "linear"
        candidate = two_phase(candidate, getattr(candidate, "__name__", type(candidate).__name__),
                              parameters(contract, layout), contract)
    return run_properties(InProcessExecutor(candidate, device, timeout=600.0), case, designs, layout, updates).outcomes


def dequantizer_properties(dequantizer, case, device="cpu"):
    """Outcomes of `dequantizer(**kwargs)` on a harness.verify.cases.DequantCase, in this process."""
    return properties_in_process(dequantizer, case, device)


def linear_properties(linear, case, device="cpu", designs=tuple(DESIGNS)):
    """Outcomes of `linear(**kwargs)` (docs/contract.md#linear) on a harness.verify.cases.LinearCase, in this process."""
    return properties_in_process(linear, case, device, designs)
