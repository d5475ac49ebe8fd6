"""The domain flag a refusal points to: a candidate that raised TypeError 'unsupported ScalarType BFloat16' most
likely does not support bf16, and `--dtypes fp16,fp32` says so (docs/contract.md#domain).

One table, REFUSALS: what the exception's text mentions -> the flag that states that limit. A hint is advice
printed beside the failure and kept in the verdict (`failure.hint`); it never changes the verdict. It is built
from the harness's own words and the run's Domain, never from the candidate's text (the one exception: the
number in 'multiple of N', read as an int and bounded).
"""
import re

from int4_lora_harness.verify.domain import FULL

# What a kernel raises when it refuses part of the domain (torch's "not implemented for 'Half'" is a RuntimeError).
REFUSING = ("TypeError", "NotImplementedError", "AssertionError", "ValueError", "RuntimeError")
DTYPE_WORDS = {"bf16": r"bf16|bfloat16", "fp16": r"fp16|float16|half", "fp32": r"fp32|float32|scalartype float|'float'"}
MAX_MULTIPLE = 1024  # cli.MAX_UNIT: the largest --in/--out-multiple-of


def _mentions(pattern, text):
    return re.search(rf"(?<![a-z0-9])(?:{pattern})(?![a-z0-9])", text) is not None


def _dtype_hint(text, domain):
    """'--dtypes fp16,fp32' (or --scale-dtypes when the text is about the scales) for the dtype `text` names."""
    named = [d for d, words in DTYPE_WORDS.items() if _mentions(words, text)]
    if len(named) != 1:  # none, or a list of what it does support: no single dtype to leave out
        return None
    flag, values = ("--scale-dtypes", domain.scale_dtypes) if _mentions("scales?", text) else \
        ("--dtypes", domain.dtypes)
    rest = [d for d in values if d != named[0]]
    if named[0] not in values or not rest:
        return None
    return f"if the kernel does not support {named[0]}, say so with {flag} {','.join(rest)}"


def _multiple_hint(text, domain):
    """'--in-multiple-of 64' for 'K must be a multiple of 64' (--out-multiple-of when it names N or out_features)."""
    found = re.search(r"(?:multiple of|divisible by)\s+(\d{1,5})", text)
    if found is None or not 1 < int(found.group(1)) <= MAX_MULTIPLE:
        return None
    n = int(found.group(1))
    if _mentions(r"group_?size|group size", text):
        return None  # 'in_features must be a multiple of group_size': --no-ragged's rule (below)
    out = _mentions(r"n|out_features|out features|output features|rows", text)
    flag = "--out-multiple-of" if out else "--in-multiple-of"
    if not out and n % 2:
        n *= 2  # in_features is always even (two nibbles per byte)
    return f"if the kernel needs shapes that are a multiple of {n}, say so with {flag} {n}"


# (pattern in the lowered text, advice): the first that matches gives the hint, after dtypes and multiples
REFUSALS = (
    (r"ragged|multiple of (the )?group_?size|divisible by (the )?group_?size",
     "if the kernel needs whole groups, say so with --no-ragged"),
    (r"group_?size|group size", "if the kernel supports only some group sizes, say so with --group-sizes, "
                                "e.g. --group-sizes 32,64,128"),
    (r"per-?tensor|per_tensor|per-?channel|per_channel|granularity",
     "if the kernel supports only some scale granularities, say so with --granularity, e.g. --granularity grouped"),
    (r"fractional|float(ing)?[- ]point zero|zero_?points? must be (an )?int(eger)?s?",
     "if the kernel takes only integer zero points, say so with --zero-points integer"),
    (r"zero_?points?|zero points?|zeros|qzeros", "if the kernel does not take zero points, say so with "
                                                 "--zero-points none (or integer, or fractional)"),
    (r"bias", "if the kernel takes no bias, say so with --no-bias"),
    (r"max_rank|lora[_ ]rank|rank (must|should|of|exceeds|above|over|[<>])",
     "if the kernel supports LoRA ranks up to some size, say so with --max-rank N"),
    (r"num_loras|adapters?|loras", "if the kernel supports up to some number of adapters, say so with --max-loras N"),
    (r"lora_indices|negative ind(ex|ices)", "if the kernel needs every token to have an adapter, say so with --lora-patterns, "
                         "e.g. --lora-patterns uniform,distinct,zipf,identical"),
)


def domain_hint(exception, message, domain=FULL):
    """The advice for a refusal, or None. exception: the type name the candidate raised ('TypeError'); message: its
    text ('TypeError: Got unsupported ScalarType BFloat16'); domain: the run's Domain (the values to suggest)."""
    if exception is None or exception.rsplit(".", 1)[-1] not in REFUSING:
        return None
    text = (message or "").lower()
    hint = _dtype_hint(text, domain) or _multiple_hint(text, domain)
    if hint:
        return hint
    return next((advice for pattern, advice in REFUSALS if _mentions(pattern, text)), None)
