"""The correct designs of docs/contract.md#linear a linear may follow, by name, and the sets `--designs` accepts.

A design fixes where a correct kernel may round: the weight (rounded once to x's dtype, or kept
exact in fp32 registers) and the output (one rounding of the whole sum, or the base rounded to
x's dtype first and the LoRA delta added with a second rounding: "unfused"). harness.verify.tolerance
builds one reference and one error bound per design; a verdict names the design that explained it.
"""
from typing import NamedTuple


class Design(NamedTuple):
    weights: str  # "x": W rounded once to x.dtype; "fp32": W exact in fp32 registers (within term 3's window)
    unfused: bool  # base rounded to x.dtype, then + LoRA with one more rounding
    words: str  # for a newcomer


DESIGNS = {
    "w in x.dtype": Design("x", False, "weights dequantized and rounded once to x's dtype, products summed in "
                                       "fp32, bias and LoRA added, one rounding at the end"),
    "w in fp32": Design("fp32", False, "weights dequantized in fp32 registers (never rounded to x's dtype), "
                                       "products summed in fp32, one rounding at the end"),
    "unfused, w in x.dtype": Design("x", True, "the base GEMM (weights in x's dtype) rounded to x's dtype first, "
                                               "then the LoRA delta added with a second rounding (vLLM punica, peft)"),
    "unfused, w in fp32": Design("fp32", True, "the base GEMM (weights in fp32) rounded to x's dtype first, then "
                                               "the LoRA delta added with a second rounding"),
}
DEQUANTIZER_DESIGN = "correctly rounded"
DEQUANTIZER_WORDS = "within 1 ulp of the exact value rounded once to the output dtype, and equal to it where exact"
PROBE_DESIGN = "exact probe"
PROBE_WORDS = "inputs built so that every correct design gives the same, exactly rounded result"

SETS = {
    "all": tuple(DESIGNS),
    "single-rounding": ("w in x.dtype", "w in fp32"),
    "unfused": ("unfused, w in x.dtype", "unfused, w in fp32"),
}


def parse_designs(text):
    """'single-rounding' | 'unfused' | 'all' | comma-separated design names -> a tuple of design names.

    ValueError naming the valid choices for anything else."""
    chosen = []
    for item in (t.strip() for t in text.split(",")):
        if item in SETS:
            chosen += SETS[item]
        elif item in DESIGNS:
            chosen.append(item)
        else:
            raise ValueError(f"--designs takes {', '.join(SETS)} or design names ({'; '.join(DESIGNS)}), got {item!r}")
    return tuple(d for d in DESIGNS if d in chosen)  # in the order they are tried


def words(design):
    """A design's name in words."""
    if design in DESIGNS:
        return DESIGNS[design].words
    return {DEQUANTIZER_DESIGN: DEQUANTIZER_WORDS, PROBE_DESIGN: PROBE_WORDS}.get(design, design)
