"""`verify` from parsed flags to an exit status: options, candidates, the verdict file, harness.verify.run;
then the CI outputs (harness.verify.ci: --junit-xml, --summary-json), or only the list of checks (--list-checks)."""
from pathlib import Path

from int4_lora_harness import environment
from int4_lora_harness.progress import say
from int4_lora_harness.verify import ci, record
from int4_lora_harness.verify.cli import parse_domain
from int4_lora_harness.verify.domain import PROFILE_EXAMPLES
from int4_lora_harness.verify.executor import TargetRefused
from int4_lora_harness.verify.hypothesis_home import hypothesis_home
from int4_lora_harness.verify.run import Candidate, judge_run, run_layer, usage_error_verdict
from int4_lora_harness.verify.targets import UsageError, split_target

INTERPRETED = "Triton's CPU interpreter would take hours on layer shapes; verify on CUDA for them"


def checked_options(args):
    """The options every flag decides (no folder made, nothing written); UsageError naming the flag."""
    profile = checked_environment(args.profile)
    import torch
    if args.device == "cuda" and args.ray is None and not torch.cuda.is_available():  # --ray: the workers' GPUs
        raise UsageError("--device cuda: CUDA is not available on this machine")
    if bool(args.checkpoint) != bool(args.checkpoint_layer):
        raise UsageError("--checkpoint FILE.safetensors and --checkpoint-layer PREFIX go together")
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise UsageError(f"--checkpoint {args.checkpoint} does not exist")
    if args.tp > 1 and not args.layer:
        raise UsageError("--tp N needs --layer TARGET: tensor parallelism is part of the layer contract")
    if args.layout != "canonical" and not (args.linear or args.dequantizer):
        raise UsageError(f"--layout {args.layout} needs a TARGET (--linear or --dequantizer): the project's own "
                         "backends take the canonical layout")
    if args.ray is not None:
        from int4_lora_harness.verify.ray_jobs import check_usage
        check_usage(args)
    if args.list_checks and (args.junit_xml or args.summary_json):
        raise UsageError("--list-checks runs nothing: it takes no --junit-xml or --summary-json")
    domain = parse_domain(args)
    if args.layout != "canonical":
        domain = layout_domain(args.layout, domain)
    return dict(device=args.device, profile=profile, examples=args.examples or PROFILE_EXAMPLES[profile],
                seed=(args.seeds or (args.seed,))[0], seeds=list(args.seeds or (args.seed,)), domain=domain,
                designs=args.designs, layout=args.layout, timeout=args.timeout, in_process=args.in_process,
                max_slowdown=args.max_slowdown, sandbox=not args.no_sandbox, shrink_budget=args.shrink_budget,
                jobs=args.jobs, ray=args.ray, progress=not args.quiet, checkpoint={},
                gpus=list(range(torch.cuda.device_count())) if args.device == "cuda" else [])


def options_from(args):
    """The run's options (a plain dict, picklable for --jobs): checked_options, the report folder (made) and the run's
    id; UsageError naming the flag for what is wrong."""
    options = checked_options(args)
    if args.junit_xml:
        ci.check_junit_path(args.junit_xml)
    try:
        folder = record.prepare_folder(args.report)
    except ValueError as error:
        raise UsageError(str(error)) from None
    return dict(options, run_id=record.new_run_id(), report=str(folder))


def checked_environment(profile_flag):
    """The run's profile (--profile, else $HYPOTHESIS_PROFILE, else ci), once every variable that picks behaviour
    holds to its rule (harness.environment); UsageError naming the variable otherwise."""
    try:
        environment.check()
        from_environment = environment.profile(PROFILE_EXAMPLES) if profile_flag is None else None
    except ValueError as error:
        raise UsageError(str(error)) from None
    return profile_flag or from_environment or "ci"


def layout_domain(layout, domain):
    """The domain narrowed by a native layout's own limits (harness.verify.layouts), said on stdout."""
    from int4_lora_harness.verify import layouts
    chosen = layouts.LAYOUTS[layout]
    try:
        narrowed = domain.narrow(**chosen.limits)
    except ValueError as error:
        raise UsageError(f"--layout {layout}: {error}") from None
    say(f"layout {layout}: " + "; ".join(chosen.describe_limits()))
    return narrowed


def candidates(args, options):
    """([Candidate], [(name, reason)] skipped): the TARGET, or every backend of kernels.registry available here."""
    seeds = options["seeds"]
    if args.linear or args.dequantizer:
        target = args.linear or args.dequantizer
        split_target(target)
        contract = "linear" if args.linear else "dequantizer"
        skip = "--no-large-tier" if args.no_large_tier else None
        return [Candidate(target, target, contract, "third-party", skip, s) for s in seeds], []
    from int4_lora_harness.kernels.registry import BACKENDS
    found, skipped = [], []
    for name, backend in BACKENDS.items():
        reason = backend.unavailable_reason(args.device)
        if reason:
            say(f"{name:>10} on {args.device}: SKIPPED ({reason})")
            skipped.append((name, reason))
            continue
        skip = "--no-large-tier" if args.no_large_tier else \
            INTERPRETED if args.device == "cpu" and backend.cpu_needs_interpreter else None
        for contract, function in (("dequantizer", "dequantize"), ("linear", "linear")):
            found += [Candidate(name, f"{backend.module}:{function}", contract, "backend", skip, s) for s in seeds]
    return found, skipped


def checkpoint_examples(args, domain, seed):
    """--checkpoint's layer, loaded once, as {contract: [(group, name, case)]}; UsageError for what it refuses."""
    if not args.checkpoint:
        return {}
    from int4_lora_harness.checkpoints.safetensors_layer import load_layer  # safetensors is only needed for this
    from int4_lora_harness.verify.plan import checkpoint_cases
    try:
        layer = load_layer(args.checkpoint, args.checkpoint_layer, args.format, args.checkpoint_group_size)
        return checkpoint_cases(layer, args.checkpoint_layer, domain, seed)
    except ValueError as error:  # a prefix, format, tensor or domain conflict: the caller's to fix
        raise UsageError(f"--checkpoint {args.checkpoint} --checkpoint-layer {args.checkpoint_layer}: {error}") \
            from None


def layer_results(args, options):
    """--layer: one result per sharding style from harness.serving (its ranks load the TARGET themselves)."""
    from int4_lora_harness.reference.layer import STYLES
    from int4_lora_harness.serving.verify_layer import verify_layer
    split_target(args.layer)
    for seed in options["seeds"]:
        for result in verify_layer(args.layer, args.tp, args.styles or STYLES, options["device"], options["examples"],
                                   seed, options["timeout"], max_slowdown=options["max_slowdown"]):
            yield dict(result, kind="third-party", layout="canonical", domain=["full"], explicit=[], seed=seed)


def main(args, argv, known):
    """Exit status: 0 all passed, 1 a failure, 2 usage error (raised as UsageError; a verdict says so).
    known: filled with the run's options once they hold (where its verdict is)."""
    if args.list_checks:
        from int4_lora_harness.verify.checks import list_checks
        options = checked_options(args)
        options["checkpoint"] = checkpoint_examples(args, options["domain"], options["seed"])
        return list_checks(args, options)
    options = options_from(args)
    known.update(options)
    with hypothesis_home(options["report"]):  # Hypothesis's files under --report, never the cwd
        return judge(args, argv, options)


def judge(args, argv, options):
    """Run the candidates (or the --layer TARGET) and write the verdict; the exit status (0 or 1)."""
    if args.layer:
        try:
            return run_layer(layer_results(args, options), options, argv)
        except (UsageError, ValueError) as error:
            usage_error_verdict(options, argv, str(error))
            raise UsageError(str(error)) from None
    try:
        options["checkpoint"] = checkpoint_examples(args, options["domain"], options["seed"])
        found, skipped = candidates(args, options)
        if options["ray"] is not None:
            from int4_lora_harness.verify.ray_jobs import judge_run as judge_run_on_ray
            return judge_run_on_ray(found, skipped, options, argv)
        return judge_run(found, skipped, options, argv)
    except (UsageError, TargetRefused) as error:
        usage_error_verdict(options, argv, str(error))
        raise UsageError(str(error)) from None


def run(args, argv=()):
    """Exit status of one `verify` run: 0 pass, 1 fail, 2 usage error (one line on stderr); the whole run under
    the judge's own numeric state (harness.verify.numerics), whatever the calling process set. Then the CI
    outputs, from the verdict file: --junit-xml FILE, and --summary-json's one line (the only line on stdout:
    every other goes to stderr), an interrupted run's included."""
    import sys

    from int4_lora_harness.verify.numerics import judge_numerics
    known, error = {}, None
    try:
        with ci.humans_on_stderr(args.summary_json), judge_numerics():
            status = main(args, list(argv), known)
    except UsageError as usage:
        print(f"usage error: {usage}", file=sys.stderr)
        status, error = 2, str(usage)
    except KeyboardInterrupt:
        ci.write_outputs(args, known, 1, "interrupted")
        raise
    return ci.write_outputs(args, known, status, error)
