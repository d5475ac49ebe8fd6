"""What verify prints: one block per candidate and contract, one summary line each, one overall line.

Every line goes out through `say` here, escaped (harness.verify.candidate_text.escaped): text the candidate
controls (its exception's type and message, a traceback, a repr) stays on its line and cannot print a line
that passes for the harness's own.
"""
import json

from int4_lora_harness import progress
from int4_lora_harness.verify.candidate_text import escaped
from int4_lora_harness.verify.shrink import shrink_words

STATUS = {"passed": "PASS", "failed": "FAIL", "not judged": "----", "not run": "----"}


def say(line):
    """Print one line of the verdict, its control characters and ANSI escapes made visible."""
    progress.say(escaped(line))


def counts(result):
    """'40 fuzzed, 90 coverage, 4 large tier, 12 probes' for a result."""
    groups = {}
    for e in result.get("explicit", []):
        groups[e["group"]] = groups.get(e["group"], 0) + 1
    return ", ".join([f"{result.get('fuzzed_cases', 0)} fuzzed"] + [f"{n} {g}" for g, n in groups.items()])


def time_split(result):
    t = result.get("timing") or {}
    if not t:
        return f"{result.get('seconds', '?')} s"
    shrinking = f", shrinking {t['shrink_s']:.1f} s ({t.get('shrink_cases', 0)} cases)" if t.get("shrink_s") else ""
    return (f"{result['seconds']} s: candidate {t['candidate_s']:.1f} s, judge {t['judge_s']:.1f} s{shrinking}, "
            f"building cases {t.get('cases_s', 0):.1f} s, child start {t['child_start_s']:.1f} s, transfer "
            f"{t['transfer_s']:.1f} s ({t['transfer_mb']:.0f} MB)")


def print_verdict(result):
    status = "PASS" if result["passed"] else "FAIL"
    where = f"style {result['style']}, tp {result['tp']}" if result["contract"] == "layer" else \
        f"domain: {', '.join(result['domain'])}; layout: {result.get('layout', 'canonical')}"
    say(f"{result['candidate']} [{result['contract']}] on {result['device']}: {status} ({counts(result)}; "
        f"{time_split(result)}; {where})")
    for line in result["properties"]:
        not_judged = f" ({line['not_judged']} not judged)" if line.get("not_judged") else ""
        status = STATUS[line.get("status", "passed" if line["passed"] else "failed")]
        say(f"    {status}  {line['name']:<26} {line['cases']:>5} cases{not_judged}  {line['message']}")
    for rank in result.get("ranks", []):
        say(f"    rank {rank['rank']}: {'PASS' if rank['passed'] else 'FAIL'}  {rank['message']}")
    if result.get("large_tier_skipped"):
        say(f"    note  large tier and probes skipped ({result['large_tier_skipped']}): not a full verdict")
    walls = result.get("sandbox")
    if walls and not walls.get("sandboxed"):
        say(f"    note  unsandboxed: processes {walls.get('processes')}; files {walls.get('files')}")
    if result.get("exit_note"):
        say(f"    note  {result['exit_note']}")
    failure = result["failure"]
    if failure:
        if failure["kind"] != "wrong":
            hint = f" \u2014 {failure['hint']}" if failure.get("hint") else ""
            say(f"    the candidate {failure['kind']}: {failure['message']}{hint}")
        if failure.get("where"):
            say(f"    raised at {failure['where']} (the innermost frame of the candidate's code)")
        for line in failure.get("output_tail") or []:
            say(f"    candidate| {line}")
        if failure.get("case") is not None:
            say(f"    minimal case: {json.dumps(failure['case'])}")
        if failure.get("shrink"):
            say(f"    shrinking: {shrink_words(failure['shrink'])}")
        small = {k: v for k, v in (failure.get("values") or {}).items() if isinstance(v, list)}
        if failure.get("case") is None:
            small = {}
        if small:
            say(f"    its values: {json.dumps(small)}")
        if failure["worst"]:
            say(f"    worst element: {json.dumps(failure['worst'])}")
            if failure.get("design_words"):
                say(f"    design: {failure['worst'].get('design')}: {failure['design_words']}")
        if result.get("repro"):
            say(f"    repro: python {result['repro']}")
    for e in result.get("explicit", []):
        if e["group"] == "checkpoint" or not e["passed"]:
            say(f"    {'PASS' if e['passed'] else 'FAIL'}  {e['group']} example {e['shape']}")
    if result.get("designs"):
        say("    info  explained by: " + "; ".join(f"{d} ({v['cases']} cases)" for d, v in result["designs"].items()))
    if "batch_invariance" in result:
        say(f"    info  batch invariance: {batch_invariance_line(result['batch_invariance'])}")


def batch_invariance_line(b):
    if b.get("invariant") is None:
        return f"not measured: {b.get('error')}"
    if b["invariant"]:
        return "rows equal alone and in a batch"
    return f"rows {b['rows_that_differ']} differ when computed alone (max abs diff {b['max_abs_diff']:.3g})"


def summary_line(result):
    """One line per candidate and contract, for the end of the run."""
    what = "PASS" if result["passed"] else f"FAIL ({(result.get('failure') or {}).get('kind', '?')})"
    seed = f", seed {result['seed']}" if result.get("seed") is not None else ""
    return f"  {what:<14} {result['candidate']} [{result['contract']}] {counts(result)}, {result['seconds']} s{seed}"


def print_summary(results, skipped, path):
    say("summary:")
    for result in results:
        say(summary_line(result))
    for name, reason in skipped:
        say(f"  {'SKIPPED':<14} {name}: {reason}")
    failed = sum(not r["passed"] for r in results)
    verdict = "no candidate was verified" if not results else \
        (f"{failed} of {len(results)} FAILED" if failed else f"all {len(results)} PASS")
    say(f"overall: {verdict}; verdict written to {path}")
