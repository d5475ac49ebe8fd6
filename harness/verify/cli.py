"""Judge the project's backends, or your dequantizer / linear / serving layer, against the contract of
docs/contract.md, and write the verdict.

    int4-verify                                    # every backend of kernels.registry available here
    int4-verify --linear pkg.mod:fn                # your linear (docs/contract.md#linear)
    int4-verify --dequantizer file.py:fn --layout awq --profile thorough
    int4-verify --layer pkg.mod:layer --tp 2       # a serving layer on 2 ranks (docs/serving.md)
    int4-verify --linear pkg.mod:fn --list-checks  # what a run with these flags checks, without running it
    int4-verify --linear pkg.mod:fn --junit-xml reports/int4.xml --summary-json   # for CI

Both contracts call the candidate by keyword (docs/contract.md#dequantizer, docs/contract.md#linear):
    dequantizer(packed_weights, scales, zero_points, group_size, output_dtype) -> [out, in] of output_dtype
    linear(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias)
        -> [M, out] of x.dtype
(with --layout NAME, the weight arguments are that layout's own tensors: docs/layouts/NAME.md).
The candidate runs in a child process; whatever it does, the run ends with a verdict.
A kernel that supports part of the contract says so with the domain flags (docs/contract.md#domain).

Exit status: 0 every property held, 1 a property failed or the candidate raised, hung or crashed,
2 usage error (bad flag, bad TARGET, import failure, signature that cannot take the contract's keywords).
"""
import argparse

from int4_lora_harness.reference.layer import STYLES
from int4_lora_harness.verify.designs import SETS, parse_designs
from int4_lora_harness.verify.domain import (DTYPES, FULL, GRANULARITIES, LAYOUT_NAMES, OUTPUT, POPULARITIES,
                                             PROFILE_EXAMPLES, ZERO_POINTS, Domain)
from int4_lora_harness.verify.shrink import SHRINK_BUDGET
from int4_lora_harness.verify.targets import UsageError

DESCRIPTION = __doc__


def positive_int(text):
    """argparse type: an int >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text):
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def at_most(maximum, why, minimum=1):
    """argparse type: an int from `minimum` (0 or 1) to `maximum` (why: the reason for the bound, said in the error)."""
    def parse(text):
        value = positive_int(text) if minimum else non_negative_int(text)
        if value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum} ({why}), got {text}")
        return value
    parse.__name__ = "int"
    return parse


MAX_PROCESSES = 64  # --jobs, --tp: each is a process (with its candidate's own) on this one machine
MAX_RANK = 512  # the largest LoRA rank vLLM serves (--max-lora-rank)
MAX_LORAS = 256  # adapters in one call: lora_a alone is then up to 256 x 512 x 4096 values
MAX_UNIT = 1024  # --in/--out-multiple-of: every layer drawn is at least one unit wide


def _int(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


MAX_TIMEOUT_S = 86400.0  # a day for one call: past that a kernel is hung, and the pipe's poll overflows near 25 days


def positive_seconds(text):
    """argparse type: a number of seconds > 0 and at most MAX_TIMEOUT_S."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not (0 < value <= MAX_TIMEOUT_S):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0 and at most {MAX_TIMEOUT_S:g} "
                                         f"(a day), got {text}")
    return value


def listed(allowed):
    """argparse type: a comma-separated subset of `allowed`, as a tuple in the given order."""
    def parse(text):
        items = tuple(t.strip() for t in text.split(",") if t.strip())
        bad = [t for t in items if t not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"takes a comma-separated subset of {', '.join(allowed)}; got {text!r}")
        return items
    parse.__name__ = "list"
    return parse


def int_list(minimum):
    """argparse type: comma-separated integers, each >= minimum (0 or 1)."""
    rule = f"takes comma-separated {'positive' if minimum else 'non-negative'} integers"

    def parse(text):
        try:
            values = tuple(int(t) for t in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{rule}, got {text!r}") from None
        if min(values) < minimum:
            raise argparse.ArgumentTypeError(f"{rule}, got {text!r}")
        return values
    return parse


def designs_type(text):
    try:
        return parse_designs(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--designs ")) from None


def add_arguments(v):
    """The `verify` subcommand's flags (each validated: a bad value is a one-line usage error, exit 2)."""
    target = v.add_mutually_exclusive_group()
    target.add_argument("--linear", metavar="TARGET",
                        help="a linear (docs/contract.md#linear): pkg.module:function or file.py:function")
    target.add_argument("--dequantizer", metavar="TARGET",
                        help="a dequantizer (docs/contract.md#dequantizer): pkg.module:function or file.py:function")
    target.add_argument("--layer", metavar="TARGET",
                        help="a serving layer (docs/contract.md#layer, docs/serving.md), run on --tp ranks over "
                             "torch.distributed")
    v.add_argument("--tp", type=at_most(MAX_PROCESSES, "a process each"), default=1, help="tensor-parallel ranks for --layer (gloo on CPU, NCCL on CUDA)")
    v.add_argument("--styles", type=listed(STYLES), default=None,
                   help=f"--layer sharding styles, comma-separated: {', '.join(STYLES)} (default all three)")
    v.add_argument("--layout", choices=LAYOUT_NAMES, default="canonical",
                   help="the weight layout the TARGET takes (docs/layouts/); its own domain limits apply")
    v.add_argument("--profile", choices=sorted(PROFILE_EXAMPLES), default=None,
                   help="how hard to search: ci (40 fuzzed cases) or thorough (600); default $HYPOTHESIS_PROFILE, else ci")
    v.add_argument("--shrink-budget", type=non_negative_int, default=SHRINK_BUDGET, metavar="N",
                   help=f"cases a failure's shrinking may run (default {SHRINK_BUDGET}; 0: report the failure as "
                        "found); past it the smallest failing case found so far is reported")
    v.add_argument("--examples", type=positive_int, default=None, help="fuzzed cases per contract (overrides --profile)")
    seeds = v.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=non_negative_int, default=0, help="same seed, same cases, same verdict")
    seeds.add_argument("--seeds", type=int_list(0), default=None, help="several seeds, e.g. 0,1,2 (one judgement each)")
    v.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the inputs are created")
    v.add_argument("--designs", type=designs_type, default=tuple(SETS["all"]),
                   help=f"correct designs to accept (docs/contract.md#linear): {', '.join(SETS)} or design names "
                        "(default all)")
    add_domain_arguments(v)
    v.add_argument("--no-large-tier", action="store_true", help="skip the real layer shapes and probes (not a full verdict)")
    v.add_argument("--timeout", type=positive_seconds, default=60.0,
                   help="seconds of no progress (the candidate's processes using no CPU) that end a call as hung")
    v.add_argument("--max-slowdown", type=positive_seconds, default=1000.0,
                   help="CPU seconds a call may take, as a multiple of a dense fp32 matmul of its work timed here "
                        "(plus --timeout); past it the call is 'slow'")
    v.add_argument("--no-sandbox", action="store_true",
                   help="run the candidate without its PID namespace and Landlock walls (the verdict says unsandboxed)")
    v.add_argument("--in-process", action="store_true",
                   help="run the TARGET in this process (debugging: a crash or a swallowed timeout then ends the run)")
    v.add_argument("--isolate", action="store_true", help=argparse_suppress())
    v.add_argument("--jobs", type=at_most(MAX_PROCESSES, "a process each"), default=1, help="candidates, contracts and seeds judged at once")
    v.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="judge each candidate x contract x seed as a Ray task: on a local Ray instance started (and "
                        "stopped) by the run, or on the cluster at ADDRESS (e.g. auto, HOST:6379); needs the ray extra, "
                        "pip install 'int4-lora-harness[ray]' (docs/scaling.md)")
    v.add_argument("--quiet", action="store_true", help="no progress bars")
    v.add_argument("--report", default="reports",
                   help="folder for verify/<run>.json, verify.json, repro scripts and Hypothesis's files (.hypothesis/); "
                        "the run writes nothing else")
    ci = v.add_argument_group("CI", "machine-readable outputs (docs/verify_schema.md)")
    ci.add_argument("--junit-xml", metavar="FILE",
                    help="also write a JUnit XML file: a testsuite per result, a testcase per property and plan group")
    ci.add_argument("--summary-json", action="store_true",
                    help="print exactly one line of JSON on stdout at the end (every other line goes to stderr)")
    ci.add_argument("--list-checks", action="store_true",
                    help="print the properties and the planned cases for these flags, then exit 0 (runs nothing)")
    v.add_argument("--checkpoint", metavar="FILE.safetensors",
                   help="also check a real layer of this checkpoint (compressed-tensors, GPTQ or AWQ) as explicit examples")
    v.add_argument("--checkpoint-layer", metavar="PREFIX",
                   help="the layer's tensor-name prefix, e.g. model.layers.0.mlp.down_proj")
    v.add_argument("--format", choices=["compressed-tensors", "gptq", "gptq_v2", "awq"],
                   help="the checkpoint's format (default: detected from the tensor names)")
    v.add_argument("--checkpoint-group-size", type=positive_int,
                   help="group size of a grouped compressed-tensors or AWQ layer (it lives in the config, not the tensors)")
    return v


def add_domain_arguments(v):
    """The domain flags (what the kernel supports), shared by `verify` and `bench`; parse_domain reads them."""
    domain = v.add_argument_group("domain", "what the kernel supports (docs/contract.md#domain); every narrowing "
                                            "is printed in the verdict")
    domain.add_argument("--dtypes", type=listed(DTYPES),
                        help=f"activation / output dtypes, comma-separated: {', '.join(DTYPES)} (e.g. fp16,bf16)")
    domain.add_argument("--scale-dtypes", type=listed((*DTYPES, OUTPUT)),
                        help=f"the scales' dtypes, comma-separated: {', '.join(DTYPES)}, or {OUTPUT} for scales in "
                             "the output dtype")
    domain.add_argument("--group-sizes", type=int_list(1), help="group sizes to draw from, e.g. 32,64,128")
    domain.add_argument("--granularity", type=listed(GRANULARITIES),
                        help=f"scale and zero-point granularities, comma-separated: {', '.join(GRANULARITIES)}")
    domain.add_argument("--zero-points", choices=ZERO_POINTS, default=None,
                        help="which zero points the kernel takes (default any)")
    domain.add_argument("--no-zero-points", action="store_true", help="the same as --zero-points none")
    domain.add_argument("--same-granularity", action="store_true", help="zero points always have the scales' granularity")
    domain.add_argument("--no-ragged", action="store_true", help="in_features always a multiple of the group size")
    domain.add_argument("--in-multiple-of", type=at_most(MAX_UNIT, "the narrowest layer drawn"), default=2, help="in_features a multiple of this (even)")
    domain.add_argument("--out-multiple-of", type=at_most(MAX_UNIT, "the narrowest layer drawn"), default=1, help="out_features a multiple of this")
    domain.add_argument("--lora-patterns", type=listed(POPULARITIES),
                        help=f"how tokens pick adapters, comma-separated: {', '.join(POPULARITIES)}")
    domain.add_argument("--max-rank", type=at_most(MAX_RANK, "vLLM's largest LoRA rank"), default=64, help="largest LoRA rank drawn")
    domain.add_argument("--max-loras", type=at_most(MAX_LORAS, "memory: up to 256 x 512 x 4096 LoRA values", 0), default=8, help="most adapters in one call")
    domain.add_argument("--no-bias", action="store_true", help="never pass a bias")
    return v


def argparse_suppress():
    return argparse.SUPPRESS  # --isolate: the default now; kept so old command lines still work


def parse_domain(args):
    """The Domain the flags describe; UsageError naming the flag for a contradiction."""
    zero_points = "none" if args.no_zero_points else (args.zero_points or "any")
    try:
        return Domain(dtypes=args.dtypes or FULL.dtypes, scale_dtypes=args.scale_dtypes or FULL.scale_dtypes,
                      group_sizes=args.group_sizes, granularities=args.granularity or FULL.granularities,
                      zero_points=zero_points, same_granularity=args.same_granularity, ragged=not args.no_ragged,
                      in_multiple_of=args.in_multiple_of, out_multiple_of=args.out_multiple_of, bias=not args.no_bias,
                      max_rank=args.max_rank, max_loras=args.max_loras, popularities=args.lora_patterns or POPULARITIES)
    except ValueError as error:
        raise UsageError(f"domain flags: {error}") from None
