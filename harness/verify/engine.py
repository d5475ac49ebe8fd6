"""Judge implementations of the two contracts: search with Hypothesis, then examine the large tier.

`verify_candidate` runs the shared properties (int4_lora_harness.verify.properties) on fuzzed cases until
one fails (then Hypothesis shrinks it to a minimal case) or the budget is spent, and
then on every shape of the large tier. It returns a plain dict: the verdict per
property with the number of cases run, the minimal failing case in words and its worst
element. `python -m int4_lora_harness verify` (harness.__main__) drives it and writes JSON.
"""
import time
from collections import Counter
from dataclasses import replace

import numpy as np
from hypothesis import Phase, given, seed, settings

from int4_lora_harness.verify.cases import DequantCase, make_linear_case, make_weights, weights_from_tensors
from int4_lora_harness.verify.properties import PROPERTIES, dequantizer_properties, linear_properties
from int4_lora_harness.shapes import LARGE_TIER, LAYER_SHAPES
from int4_lora_harness.verify.strategies import FULL, dequant_cases, linear_cases
from int4_lora_harness.reference.granularity import granularity
from int4_lora_harness.reference.rounding import round_to

CONTRACTS = {"dequantizer": (dequantizer_properties, dequant_cases), "linear": (linear_properties, linear_cases)}


def large_tier_cases(contract, domain=FULL, seed=0):
    """One case per LARGE_TIER shape: group size 128 (or the domain's first), fp16 scales, int8 zero points,
    M = 16, rank 16, 4 adapters."""
    group_size = (domain.group_sizes or (128,))[0]
    dtype = "fp16" if "fp16" in domain.dtypes else domain.dtypes[0]
    zero = "grouped" if domain.zero_kinds() and "grouped" in domain.granularities else None
    scale_granularity = "grouped" if "grouped" in domain.granularities else domain.granularities[0]
    for i, name in enumerate(LARGE_TIER):
        out_features, in_features = LAYER_SHAPES[name]
        params = dict(group_size=group_size, scale_granularity=scale_granularity, zero_granularity=zero,
                      zero_kind="int8")  # as checkpoints load them (int4_lora_harness.checkpoints.safetensors_layer)
        if contract == "dequantizer":
            yield name, DequantCase(make_weights(np.random.default_rng(seed + i), out_features, in_features,
                                                 **params), dtype)
        else:
            yield name, make_linear_case(seed + i, out_features, in_features, 16, dtype, rank=min(16, domain.max_rank),
                                         num_loras=min(4, domain.max_loras), bias=domain.bias, **params)


def outside_domain(weights, domain):
    """ValueError naming what of `weights` (int4_lora_harness.verify.cases.Weights) the domain excludes."""
    out_features, in_features = weights.shape
    kinds = [("scales", granularity(weights.scales, out_features, in_features, weights.group_size, "scales"))]
    if weights.zero_points is not None:
        if not domain.zero_kinds():
            raise ValueError("the layer has zero points, but the domain excludes them (--no-zero-points)")
        kinds.append(("zero_points", granularity(weights.zero_points, out_features, in_features, weights.group_size,
                                                 "zero_points")))
    for name, kind in kinds:
        if kind not in domain.granularities:
            raise ValueError(f"the layer's {name} are {kind}, outside --granularity {','.join(domain.granularities)}")
    if domain.group_sizes is not None and weights.group_size is not None and weights.group_size not in domain.group_sizes:
        raise ValueError(f"the layer's group size {weights.group_size} is outside --group-sizes "
                         f"{','.join(map(str, domain.group_sizes))}")


def checkpoint_cases(layer, prefix, domain=FULL, seed=0, m=8):
    """{contract: [(name, case)]}: a real layer (int4_lora_harness.checkpoints.safetensors_layer.Layer) as explicit examples, one per dtype.

    ValueError where the layer lies outside `domain` (zero points, granularity or group size the
    candidate said it does not support); the layer's bias is dropped under --no-bias. Linear cases
    draw x in the canonical column order (an original activation permuted by the layer's act-order
    `perm`, which random activations need not undo).
    """
    weights = weights_from_tensors(layer.packed_weights, layer.scales, layer.zero_points, layer.group_size)
    out_features, in_features = weights.shape
    outside_domain(weights, domain)
    cases = {"dequantizer": [], "linear": []}
    for dtype in domain.dtypes:
        name = f"{prefix} ({layer.fmt}, {dtype})"
        cases["dequantizer"].append((name, DequantCase(weights, dtype)))
        case = make_linear_case(seed, out_features, in_features, m, dtype, rank=min(16, domain.max_rank),
                                num_loras=min(4, domain.max_loras), bias=False, weights=weights)
        bias = None if layer.bias is None or not domain.bias else round_to(layer.bias.float().numpy(), dtype)
        cases["linear"].append((name, replace(case, bias=bias)))
    return cases


def _tally(outcomes, counts):
    """Count each property checked."""
    for o in outcomes:
        counts[o.name] += 1


def verify_candidate(contract, candidate, device="cpu", max_examples=40, random_seed=0, domain=FULL,
                     large_tier=True, checkpoint=None):
    """(verdict dict, minimal failing case | None) for `candidate` implementing `contract`.

    contract: 'dequantizer' | 'linear'. After the fuzzed search, every large-tier shape and every
    (name, case) of `checkpoint` (see checkpoint_cases) is examined as an explicit example.
    """
    check, strategy = CONTRACTS[contract]
    counts, last = Counter(), {}
    start = time.perf_counter()

    def attempt(case):
        """(None if every property holds on `case` else the failure in one line, the outcomes).

        A failure is kept in `last`; outcomes are None when the candidate raised."""
        if last.get("fatal"):  # after a hang or crash, keep the case that triggered it: no shrinking
            return last["error"], None
        try:
            outcomes = check(candidate, case, device)
        except Exception as error:  # the candidate raised: a verdict, with the case that triggered it
            last.update(case=case, outcomes=None, error=f"{type(error).__name__}: {error}",
                        fatal=isinstance(error, TimeoutError) or type(error).__name__ == "CandidateCrashed")
            return last["error"], None
        if any(not o.passed for o in outcomes):
            last.update(case=case, outcomes=outcomes, error=None)
            return "; ".join(o.message for o in outcomes if not o.passed), outcomes
        _tally(outcomes, counts)
        return None, outcomes

    @seed(random_seed)  # same seed, same cases, same verdict
    @settings(max_examples=max_examples, database=None, deadline=None, print_blob=False,
              phases=[Phase.explicit, Phase.generate, Phase.shrink])
    @given(case=strategy(domain))
    def search(case):
        message, _ = attempt(case)
        if message:
            raise AssertionError(message)

    fuzz_failure = None
    try:
        search()
    except Exception:  # AssertionError, or Hypothesis's own error around it (e.g. a flaky candidate)
        if not last:
            raise
        fuzz_failure = last
        _tally(last["outcomes"] or [], counts)  # the minimal failing case counts as run
    result = dict(contract=contract, device=device, domain=domain.describe() or ["full"], seed=random_seed,
                  max_examples=max_examples, fuzzed_cases=counts[PROPERTIES[0]], large_tier=[], checkpoint=[])
    explicit = [("large_tier", name, case) for name, case in (large_tier_cases(contract, domain, random_seed) if large_tier
                                                               else [])]
    explicit += [("checkpoint", name, case) for name, case in (checkpoint or [])]
    for kind, name, case in explicit if fuzz_failure is None else []:
        message, outcomes = attempt(case)
        ratios = [o.max_ratio for o in outcomes or [] if o.max_ratio is not None]
        result[kind].append(dict(shape=name, passed=message is None, max_ratio=ratios[0] if ratios else None))
        if message:
            fuzz_failure = last
            _tally(last["outcomes"] or [], counts)
            break
    result["properties"] = _property_lines(counts, fuzz_failure)
    result["failure"] = None if fuzz_failure is None else _failure(fuzz_failure)
    result["passed"] = fuzz_failure is None
    if contract == "linear" and fuzz_failure is None:
        try:
            result["batch_invariance"] = batch_invariance(candidate, device, domain, random_seed)
        except Exception as error:  # informational only: a candidate that raises here is reported, not failed
            result["batch_invariance"] = dict(invariant=None, error=f"{type(error).__name__}: {error}")
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result, None if fuzz_failure is None else fuzz_failure["case"]


def batch_invariance(linear, device, domain=FULL, seed=0, m=33):
    """Reported, never failed on: does row m of a batch equal the same row computed alone?"""
    case = make_linear_case(seed, 48, 256, m, domain.dtypes[0], rank=min(8, domain.max_rank),
                            num_loras=min(3, domain.max_loras), bias=domain.bias, group_size=64)
    args = case.torch_args(device)
    batch = linear(*args).double().cpu()
    differ, worst = [], 0.0
    for row in (0, m // 2, m - 1):
        alone_args = (args[0][row:row + 1], *args[1:7], args[7][row:row + 1], *args[8:])
        alone = linear(*alone_args).double().cpu()[0]
        diff = float((alone - batch[row]).abs().max())
        worst = max(worst, diff)
        if diff:
            differ.append(row)
    return dict(invariant=not differ, rows_checked=3, rows_that_differ=differ, max_abs_diff=worst)


def _property_lines(counts, failure):
    failed = {} if failure is None or failure["outcomes"] is None else \
        {o.name: o for o in failure["outcomes"] if not o.passed}
    return [dict(name=name, passed=name not in failed, cases=counts[name],
                 message=failed[name].message if name in failed else "") for name in PROPERTIES]


def _failure(failure):
    worst = None
    if failure["outcomes"]:
        worst = next((o.worst for o in failure["outcomes"] if o.worst and not o.passed), None)
    error = failure["error"] or ""
    kind = "hung" if error.startswith("TimeoutError") else "crashed" if error.startswith("CandidateCrashed") else \
        "raised" if error else None
    return dict(case=failure["case"].describe(), raised=failure["error"], kind=kind, worst=worst,
                failed=[o.name for o in failure["outcomes"] or [] if not o.passed])
