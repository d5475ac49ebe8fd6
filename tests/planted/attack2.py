"""Red-team candidates, round 2 (TARGET planted.attack2:NAME): each is WRONG and tries to get a PASS past the
checks that round 1's fixes added (docs/threat-model.md). Only the candidate's process imports this.

Each one is an ordinary bug, not a patch of the harness: nothing here touches the wire, the child or the memfd.
"""
import torch


def _correct(packed_weights, scales, zero_points, group_size, output_dtype):
    from planted.bugs import correct_dequantize_fp32_math
    return correct_dequantize_fp32_math(packed_weights, scales, zero_points, group_size, output_dtype)


# ---- 1. an output pool bigger than one case's calls -------------------------------------------------------------

POOL = 160  # more calls than any one case makes (the repeated case: 2 + 64 + the update steps, about 75)
_pools, _turn = {}, {}


def pools_past_one_case(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Right values, written into one of POOL output buffers per (shape, dtype) in turn: the result of call k is
    overwritten by call k + POOL. Wrong: a caller that keeps 160 results (a KV cache of dequantized layers, a
    batch of weights) sees the first one change. The judge holds a case's first 2 results, and only in that case."""
    key = (tuple(packed_weights.shape), output_dtype)
    pool = _pools.setdefault(key, [None] * POOL)
    turn = _turn[key] = (_turn.get(key, -1) + 1) % POOL
    values = _correct(packed_weights, scales, zero_points, group_size, output_dtype)
    if pool[turn] is None:
        pool[turn] = torch.empty_like(values)
    return pool[turn].copy_(values)


# ---- 2. a stale cache keyed on a sample that misses the middle ---------------------------------------------------

_cache = {}


def _quartiles(t):
    """Shape, dtype and the elements at 0, n/4, 3n/4 and n-1 (a lazy cache's sample: no address, no version)."""
    if not isinstance(t, torch.Tensor):
        return (t,)
    flat = t.reshape(-1)
    n = flat.numel()
    picks = sorted({0, n // 4, (3 * n) // 4, n - 1}) if n else []
    return (tuple(t.shape), str(t.dtype), *(flat[i].item() for i in picks))


def caches_on_quartiles(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Right values on first sight; then a copy of the cached result for as long as the inputs' elements at 0, n/4,
    3n/4 and n-1 are unchanged (for any tensors: fresh ones holding the same values hit the same entry). Wrong:
    an update of any other element returns the stale result. The judge's 'one inner element' puts back exactly the
    middle one, n/2, and then compares the stale result with another stale result (a fresh call hits the cache)."""
    key = sum((_quartiles(t) for t in (packed_weights, scales, zero_points, group_size, output_dtype)), ())
    if key not in _cache:
        _cache[key] = _correct(packed_weights, scales, zero_points, group_size, output_dtype)
    return _cache[key].clone()


# ---- 3. wrong only on values the judge never judges: negative scales ---------------------------------------------

def drops_the_scale_sign(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """(v - z) * |s|: the scale's sign dropped (an unsigned e8m0-style scale format). Wrong for every negative scale.
    The fuzzer draws positive scales only; the negative ones come from the judge's own update (scales negated),
    whose results are compared only with each other, never with the reference."""
    return _correct(packed_weights, scales.abs(), zero_points, group_size, output_dtype)


# ---- 4. a subclass whose storage is right and whose every use is wrong --------------------------------------------

class Lying(torch.Tensor):
    """A tensor whose stored values are right; every torch operation on it sees its values with nibbles swapped."""

    wrong = None

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        swap = lambda a: a.wrong if isinstance(a, Lying) and a.wrong is not None else a  # noqa: E731
        with torch._C.DisableTorchFunctionSubclass():
            return func(*[swap(a) for a in args], **{k: swap(v) for k, v in kwargs.items()})


def lies_through_torch_function(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """The right values in its storage, returned as a Lying tensor: `out @ x`, `out + 0`, `out.float()`, `out[0]`
    all compute with swapped nibbles (the candidate's own wrong result). Every user of the result gets wrong
    numbers; the judge reads the storage only."""
    from planted.bugs import swapped_nibbles
    right = _correct(packed_weights, scales, zero_points, group_size, output_dtype)
    out = right.as_subclass(Lying)
    out.wrong = swapped_nibbles(packed_weights, scales, zero_points, group_size, output_dtype)
    return out


def linear_drops_the_scale_sign(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices,
                                scaling, bias):
    """The linear with the scale's sign dropped, as drops_the_scale_sign: wrong for every negative scale."""
    from planted.bugs import correct_linear_per_adapter
    return correct_linear_per_adapter(x, packed_weights, scales.abs(), zero_points, group_size, lora_a, lora_b,
                                      lora_indices, scaling, bias)
