"""`verify`: judge the project's backends, or anyone's dequantizer / linear, and write the verdict.

    python -m int4_lora_harness verify                          # every backend of kernels.registry available here
    python -m int4_lora_harness verify --linear pkg.mod:fn      # a third-party linear (SPEC §4)
    python -m int4_lora_harness verify --dequantizer file.py:fn # a third-party dequantizer (SPEC §3, keywords)

Exit status: 0 every property holds, 1 a property failed (or the candidate raised or hung),
2 usage error (bad TARGET, import failure, wrong signature).
"""
import json
import os
import signal
import sys
import time
from pathlib import Path

from int4_lora_harness.verify.domain import DTYPES, FULL, GRANULARITIES, Domain
from int4_lora_harness.verify.targets import UsageError, load_target, repro_target

PROFILES = {"ci": 40, "thorough": 600}
DESCRIPTION = __doc__


def with_timeout(function, seconds):
    """Wrap `function` so a call running past `seconds` raises TimeoutError (main thread, POSIX)."""
    def on_alarm(signum, frame):
        raise TimeoutError(f"call did not return within {seconds} s")

    def call(*args, **kwargs):
        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return function(*args, **kwargs)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    return call


def parse_domain(args):
    def listed(text, allowed, flag):
        items = tuple(t.strip() for t in text.split(","))
        bad = [t for t in items if t not in allowed]
        if bad:
            raise UsageError(f"{flag} takes a comma-separated subset of {', '.join(allowed)}; got {', '.join(bad)}")
        return items
    group_sizes = None
    if args.group_sizes:
        try:
            group_sizes = tuple(int(g) for g in args.group_sizes.split(","))
        except ValueError:
            raise UsageError(f"--group-sizes takes comma-separated positive integers, got {args.group_sizes!r}") from None
        if min(group_sizes) <= 0:
            raise UsageError("--group-sizes must be positive")
    if args.max_rank < 1:
        raise UsageError("--max-rank must be at least 1")
    return Domain(dtypes=listed(args.dtypes, DTYPES, "--dtypes") if args.dtypes else FULL.dtypes,
                  group_sizes=group_sizes,
                  granularities=listed(args.granularity, GRANULARITIES, "--granularity") if args.granularity
                  else FULL.granularities,
                  zero_points="none" if args.no_zero_points else "any", bias=not args.no_bias, max_rank=args.max_rank)


def candidates(args):
    """[(label, contract, function)] to verify."""
    if args.linear or args.dequantizer:
        contract = "linear" if args.linear else "dequantizer"
        target = args.linear or args.dequantizer
        function = load_target(target, contract)  # usage errors surface here, in this process
        if args.isolate:
            from int4_lora_harness.verify.executor import Isolated
            return [(target, contract, Isolated(target, contract, args.device, args.timeout))]
        return [(target, contract, with_timeout(function, args.timeout))]
    from int4_lora_harness.kernels.registry import BACKENDS
    found = []
    for name, backend in BACKENDS.items():
        reason = backend.unavailable_reason(args.device)
        if reason:
            print(f"{name:>8} on {args.device}: SKIPPED ({reason})")
            continue
        found += [(name, "dequantizer", backend.dequantize), (name, "linear", backend.linear)]
    return found


def large_tier_skipped(args, label):
    """Why the large tier is not examined for candidate `label`, or None when it is."""
    from int4_lora_harness.kernels.registry import BACKENDS
    if args.no_large_tier:
        return "--no-large-tier"
    backend = BACKENDS.get(label)
    if args.device == "cpu" and backend is not None and backend.cpu_needs_interpreter:
        return "Triton's CPU interpreter would take hours on layer shapes; verify on CUDA for them"
    return None


def batch_invariance_line(b):
    if b["invariant"] is None:
        return f"not measured: the candidate raised {b['error']}"
    if b["invariant"]:
        return "rows equal alone and in a batch"
    return f"rows {b['rows_that_differ']} differ when computed alone (max abs diff {b['max_abs_diff']:.3g})"


def print_verdict(label, result):
    status = "PASS" if result["passed"] else "FAIL"
    print(f"{label} [{result['contract']}] on {result['device']}: {status} "
          f"({result['fuzzed_cases']} fuzzed cases, {len(result['large_tier'])} large-tier shapes, "
          f"{result['seconds']} s; domain: {', '.join(result['domain'])})")
    for line in result["properties"]:
        print(f"    {'PASS' if line['passed'] else 'FAIL'}  {line['name']:<26} {line['cases']:>5} cases  {line['message']}")
    if result.get("large_tier_skipped"):
        print(f"    note  large tier skipped ({result['large_tier_skipped']}): not a full verdict")
    failure = result["failure"]
    if failure:
        if failure["raised"]:
            print(f"    the candidate {failure['kind']}: {failure['raised']}")
        print(f"    minimal case: {json.dumps(failure['case'])}")
        if failure["worst"]:
            print(f"    worst element: {json.dumps(failure['worst'])}")
        if result.get("repro"):
            print(f"    repro: python {result['repro']}")
    for example in result.get("checkpoint", []):
        print(f"    {'PASS' if example['passed'] else 'FAIL'}  checkpoint example {example['shape']}")
    if "batch_invariance" in result:
        print(f"    info  batch invariance: {batch_invariance_line(result['batch_invariance'])}")


def _repro(report, label, contract, function, case, result, device):
    """Write the repro for the minimal failing case; the candidate is called once more for its values."""
    from int4_lora_harness.verify.repro import write_repro
    got = None
    try:
        out = case.call(function, device)
        if isinstance(out, torch.Tensor):
            got = out.detach().to(torch.float32).cpu().numpy()
    except Exception:  # the verdict already holds the exception; the repro only needs the case
        pass
    if got is not None and got.shape != (case.weights.shape if contract == "dequantizer"
                                         else (case.x.shape[0], case.weights.shape[0])):
        got = None
    failed = result["failure"]["failed"] or ["a call (it raised)"]
    return write_repro(report, repro_target(label, contract), contract, case, got, failed, result["failure"]["case"],
                       device)


def real_layer_cases(args, domain):
    """--checkpoint's layer, loaded once, as {contract: [(name, case)]}; UsageError for what it refuses."""
    from int4_lora_harness.checkpoints.safetensors_layer import load_layer  # safetensors is only needed for this
    try:
        layer = load_layer(args.checkpoint, args.layer, args.format, args.checkpoint_group_size)
        from int4_lora_harness.verify.engine import checkpoint_cases
        return checkpoint_cases(layer, args.layer, domain, args.seed)
    except ValueError as error:  # a prefix, format, tensor or domain conflict: the caller's to fix
        raise UsageError(f"--checkpoint {args.checkpoint} --layer {args.layer}: {error}") from None


def verify(args):
    import torch

    from int4_lora_harness.verify.engine import verify_candidate
    domain = parse_domain(args)
    if bool(args.checkpoint) != bool(args.layer):
        raise UsageError("--checkpoint FILE.safetensors and --layer PREFIX go together")
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise UsageError(f"--checkpoint {args.checkpoint} does not exist")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: CUDA is not available on this machine")
    examples = args.examples or PROFILES[args.profile]
    results = []
    report = Path(args.report)
    report.mkdir(parents=True, exist_ok=True)
    checkpoint = real_layer_cases(args, domain) if args.checkpoint else {}
    for label, contract, function in candidates(args):
        skipped = large_tier_skipped(args, label)
        result, failing_case = verify_candidate(contract, function, args.device, examples, args.seed, domain,
                                                large_tier=skipped is None, checkpoint=checkpoint.get(contract))
        result["candidate"], result["large_tier_skipped"] = label, skipped
        if failing_case is not None:
            result["repro"] = str(_repro(report, label, contract, function, failing_case, result, args.device))
        getattr(function, "close", lambda: None)()
        print_verdict(label, result)
        results.append(result)
    verdict = dict(generated=time.strftime("%Y-%m-%dT%H:%M:%S"), device=args.device, profile=args.profile,
                   examples=examples, seed=args.seed, torch=torch.__version__, results=results)
    (report / "verify.json").write_text(json.dumps(verdict, indent=1, default=str))
    print(f"verdict written to {report / 'verify.json'}")
    return 0 if results and all(r["passed"] for r in results) else 1


def add_arguments(v):
    """The `verify` subcommand's flags."""
    target = v.add_mutually_exclusive_group()
    target.add_argument("--linear", metavar="TARGET", help="a linear (SPEC §4): pkg.module:function or file.py:function")
    target.add_argument("--dequantizer", metavar="TARGET", help="a dequantizer (SPEC §3): pkg.module:function or file.py:function")
    v.add_argument("--profile", choices=sorted(PROFILES), default=os.environ.get("HYPOTHESIS_PROFILE", "ci"),
                   help="how hard to search: ci (40 cases) or thorough (600)")
    v.add_argument("--examples", type=int, default=None, help="fuzzed cases per contract (overrides --profile)")
    v.add_argument("--seed", type=int, default=0, help="same seed, same cases, same verdict")
    v.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the inputs are created")
    v.add_argument("--dtypes", help=f"comma-separated subset of {','.join(DTYPES)} (activation / output dtypes)")
    v.add_argument("--group-sizes", help="comma-separated group sizes to draw from, e.g. 32,64,128")
    v.add_argument("--granularity", help=f"comma-separated subset of {','.join(GRANULARITIES)} for scales and zero points")
    v.add_argument("--max-rank", type=int, default=64, help="largest LoRA rank drawn")
    v.add_argument("--no-zero-points", action="store_true", help="never pass zero points")
    v.add_argument("--no-bias", action="store_true", help="never pass a bias")
    v.add_argument("--no-large-tier", action="store_true", help="skip the realistic layer shapes (not a full verdict)")
    v.add_argument("--timeout", type=float, default=60.0, help="seconds a single call may take")
    v.add_argument("--isolate", action="store_true",
                   help="run the TARGET in a child process: a crash (segfault, CUDA error, os._exit) becomes a verdict")
    v.add_argument("--report", default="reports", help="folder for verify.json and repro scripts")
    v.add_argument("--checkpoint", metavar="FILE.safetensors",
                   help="also check a real layer of this checkpoint (compressed-tensors, GPTQ or AWQ) as explicit examples")
    v.add_argument("--layer", metavar="PREFIX", help="the layer's tensor-name prefix, e.g. model.layers.0.mlp.down_proj")
    v.add_argument("--format", choices=["compressed-tensors", "gptq", "gptq_v2", "awq"],
                   help="the checkpoint's format (default: detected from the tensor names)")
    v.add_argument("--checkpoint-group-size", type=int,
                   help="group size of a grouped compressed-tensors or AWQ layer (it lives in the config, not the tensors)")
    return v


def run(args):
    """Exit status of one `verify` run: 0 pass, 1 fail, 2 usage error (one line on stderr)."""
    try:
        return verify(args)
    except UsageError as error:
        print(f"usage error: {error}", file=sys.stderr)
        return 2
