"""`int4-verify --list-checks`: what a run with the same flags would check, printed without running anything.

For each contract the flags name (both for the project's backends): the properties judged on every case
(harness.verify.properties, docs/contract.md#checks) and the cases in the order they run, each group with its
count: the fuzzed search (--examples or the profile), then the explicit examples of harness.verify.plan for the
flags' domain, layout, seed and tier. The counts are those a run records as `planned` in its verdict
(harness.verify.engine.planned); the fuzzed count is the search's budget (a failure stops it sooner and adds the
shrinking's cases). Nothing is written, no TARGET is imported, no candidate is started.
"""
from collections import Counter

from int4_lora_harness.progress import say
from int4_lora_harness.verify.properties import PROPERTIES, REPEAT, REPEATED

PROCESS = ("(the process)", "each call returns within --timeout and its CPU budget: raising, exiting, dying or "
                            "hanging is a failure with its kind")
GROUP_WORDS = {"fuzzed": "the Hypothesis search (a failure shrinks within --shrink-budget cases)",
               REPEATED: f"the first coverage case, called {REPEAT} more times",
               "coverage": "small cases: granularity x zero points x dtype x ragged or whole groups",
               "big K": "every pair of the domain's values at K = 4096, N = 72",
               "large tier": "real layer shapes (harness/shapes.py)",
               "probes": "exact-arithmetic, one-hot column and LoRA probes at the large-tier shapes",
               "checkpoint": "the --checkpoint layer, one case per dtype"}


def planned_counts(contract, domain, seed=0, large_tier=True, checkpoint=None):
    """{group: cases} of the explicit examples a candidate of `contract` runs after its search, in order (as
    harness.verify.run.explicit_cases builds them; the large tier and the probes counted without building them).
    checkpoint: {contract: [(group, name, case)]} of --checkpoint, or None."""
    from int4_lora_harness.verify import plan
    coverage = Counter(group for group, _, _ in plan.coverage_cases(contract, domain, seed))
    counts = {REPEATED: 1, **coverage}
    if large_tier:
        rows = plan.large_tier_rows(contract, domain)
        counts["large tier"] = len(rows)
        if contract == "linear":
            counts["probes"] = sum(len(plan.probe_kinds(shape, domain)) for _, shape, _ in rows)
    if (checkpoint or {}).get(contract):
        counts["checkpoint"] = len(checkpoint[contract])
    return counts


def contracts_of(args):
    """The contracts the flags name: one for a TARGET, both for the project's backends."""
    if args.linear:
        return ["linear"]
    if args.dequantizer:
        return ["dequantizer"]
    return ["dequantizer", "linear"]


def list_checks(args, options):
    """Print the checks of a run with `args` (options: main.checked_options's, nothing written); exit status 0."""
    seeds, examples = options["seeds"], options["examples"]
    say(f"int4-verify --list-checks: profile {options['profile']}, seeds {','.join(map(str, seeds))}, domain: "
        f"{', '.join(options['domain'].describe()) or 'full'}; layout: {options['layout']}; nothing is run")
    if args.layer:
        return _list_layer(args, options)
    for contract in contracts_of(args):
        say(f"{contract} ({_who(args)}), per seed:")
        say("  properties, each judged on every case:")
        for name in PROPERTIES + (PROCESS[0],):
            say(f"    {name}" + (f"  ({PROCESS[1]})" if name == PROCESS[0] else ""))
        tier = not args.no_large_tier
        counts = {"fuzzed": examples, **planned_counts(contract, options["domain"], seeds[0], tier,
                                                       options["checkpoint"])}
        say("  cases, in the order they run:")
        at_most = "<=" if options["layout"] != "canonical" and "probes" in counts else ""
        for group, n in counts.items():
            shown = f"{at_most}{n}" if group == "probes" else str(n)
            say(f"    {group:<16} {shown:>6}  {GROUP_WORDS.get(group, '')}")
        say(f"    {'total':<16} {at_most + str(sum(counts.values())):>6}" +
            (f"  x {len(seeds)} seeds" if len(seeds) > 1 else ""))
        if at_most:
            say(f"    (a probe whose values --layout {options['layout']} would change is left out)")
        if not tier:
            say("    (large tier and probes skipped: --no-large-tier; not a full verdict)")
        elif not (args.linear or args.dequantizer):
            say("    (a backend that runs on Triton's CPU interpreter here skips the large tier and the probes)")
    return 0


def _who(args):
    return args.linear or args.dequantizer or "every backend of kernels.registry available here"


def _list_layer(args, options):
    """--layer: per style, the layer's properties and cases (harness.serving)."""
    from int4_lora_harness.reference.layer import STYLES
    from int4_lora_harness.serving.properties import LAYER_PROPERTIES, REFUSES
    from int4_lora_harness.serving.strategies import SLICE_RATIOS
    for style in args.styles or STYLES:
        refuses = style == "row" and args.tp > 1
        say(f"layer {args.layer}, style {style}, tp {args.tp}, per seed:")
        say("  properties, each judged on every case:")
        for name in LAYER_PROPERTIES:
            if name != REFUSES or refuses:
                say(f"    {name}")
        say("  cases, in the order they run:")
        counts = {"named": len(SLICE_RATIOS), "fuzzed": options["examples"], **({"refusal": 1} if refuses else {})}
        for group, n in counts.items():
            say(f"    {group:<16} {n:>6}")
        say(f"    {'total':<16} {sum(counts.values()):>6}")
    return 0
