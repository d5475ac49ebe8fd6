"""The page's summary: one row per target, contract, domain, layout and device, from its newest complete run.

A run narrowed to bf16 says nothing about fp16, a canonical-layout run nothing about AWQ, a CPU run nothing
about CUDA: each (target, contract, domain, layout, device) is its own row, and the target is one key
however it was spelled (report.targets). A row's verdict comes from the newest run that judged it in full:
the run finished ('complete') and did not skip the large tier. A partial run (still running or killed,
interrupted, --no-large-tier, or the plugin's --int4-no-large-tier) never replaces it; the newest partial run
newer than it is shown beside it with its own verdict and why it is partial. With no complete run, the row
is FAIL when the newest partial run failed, else INCOMPLETE.

Input: the runs of report.inputs.load_verify_runs, newest first. Nothing here computes a number: verdicts
are the booleans the files recorded.
"""
from collections import defaultdict

from int4_lora_harness.report import targets, verdicts, verification

NOT_RECORDED = "? (not recorded)"


def partial_reason(result, run):
    """None when `result` of `run` is a complete verdict, else why it is not, in words."""
    if not verdicts.complete(run):
        return verification.run_state(run)[1]
    if result["large_tier_skipped"]:
        return f"large tier and probes skipped ({result['large_tier_skipped']})"
    return None


def contract_label(result):
    """'linear', 'dequantizer', or for a layer its style and tensor-parallel degree: 'layer (column, tp 2)'."""
    if result["contract"] != "layer" or not (result["style"] or result["tp"]):
        return result["contract"]
    return f"layer ({result['style'] or '?'}, tp {result['tp'] if result['tp'] is not None else '?'})"


def row_key(result, run):
    """(Identity, (target key, contract, domain, layout, device)): what one summary row stands for."""
    who = targets.identity(result, run)
    domain = tuple(result["domain"] or run["domain"]) or (NOT_RECORDED,)
    layout = result["layout"] or run["layout"] or NOT_RECORDED
    device = result["device"] or run["device"] or NOT_RECORDED
    return who, (who.key, contract_label(result), domain, layout, device)


def combined(results, run):
    """The verdict of one run's results for one row (several seeds): FAIL if any failed, else each one's."""
    found = {verdicts.verdict(r, run) for r in results}
    return "FAIL" if "FAIL" in found else "INCOMPLETE" if "INCOMPLETE" in found else "PASS"


def judged(run, results):
    """One run's judgement of a row: its verdict, run id, seeds and why it is partial (None: complete)."""
    reasons = sorted({r for r in (partial_reason(x, run) for x in results) if r})
    return dict(run=run, results=results, verdict=combined(results, run), run_id=run["run_id"] or run["path"],
                seeds=sorted({r["seed"] for r in results if r["seed"] is not None}),
                partial="; ".join(reasons) or None)


def rows(runs):
    """The summary's rows, sorted by target label then contract, domain, layout, device. Each: target (label),
    spellings (as the runs wrote them, newest first), unresolved (None or why), kind, source, contract, domain,
    layout, device, verdict, complete (judged, or None), partial (the newest partial run newer than the complete
    one, or the newest when there is none), older_partial (how many more partial runs are newer than the
    complete one), runs (how many runs judged this row), shown (the judged run the row's numbers come from)."""
    found, who = defaultdict(list), {}
    for run in runs:  # newest first
        per_key = defaultdict(list)
        for result in run["results"]:
            identity, key = row_key(result, run)
            who.setdefault(key, identity)
            per_key[key].append(result)
        for key, results in per_key.items():
            found[key].append(judged(run, results))
    out = [row(who[key], key, found[key]) for key in found]
    return sorted(out, key=lambda r: (r["target"], r["contract"], r["domain"], r["layout"], r["device"]))


def row(identity, key, judgements):
    """One summary row from the runs that judged it (newest first)."""
    _, contract, domain, layout, device = key
    complete = next((j for j in judgements if j["partial"] is None), None)
    newer = judgements[:judgements.index(complete)] if complete else judgements
    partial = newer[0] if newer else None
    shown = complete or partial
    verdict = complete["verdict"] if complete else "FAIL" if partial["verdict"] == "FAIL" else "INCOMPLETE"
    results = [r for j in judgements for r in j["results"]]
    spellings = list(dict.fromkeys(r["target"] or r["candidate"] for r in results))
    sources = list(dict.fromkeys(r["source"] for r in shown["results"] if r["source"]))
    notes = [f"unsandboxed ({r['unsandboxed']})" for r in shown["results"] if r["unsandboxed"] and verdict == "PASS"]
    return dict(target=identity.label, key=identity.key, spellings=spellings, unresolved=identity.unresolved,
                kind=shown["results"][0]["kind"] or "?", source=sources[0] if sources else None,
                contract=contract, domain=", ".join(domain), layout=layout, device=device, verdict=verdict,
                complete=complete, partial=partial, older_partial=max(0, len(newer) - 1), runs=len(judgements),
                shown=shown, notes=notes)


def run_rows(runs):
    """The table of every run, newest first: run id, badge, started, finished, device, layout, domain, profile,
    examples, the targets as spelled, its counts of verdicts, why it is partial, its file."""
    out = []
    for run in runs:
        reasons = sorted({r for r in (partial_reason(x, run) for x in run["results"]) if r})
        counts = defaultdict(int)
        for result in run["results"]:
            counts[verdicts.verdict(result, run)] += 1
        out.append(dict(run_id=run["run_id"] or "?", status=run["status"] or "?", generated=run["generated"],
                        finished=run["finished"], device=run["device"], layout=run["layout"] or NOT_RECORDED,
                        domain=", ".join(run["domain"]) or NOT_RECORDED, profile=run["profile"],
                        examples=run["examples"], error=run["error"],
                        targets=list(dict.fromkeys(r["target"] or r["candidate"] for r in run["results"])),
                        counts=dict(counts), partial="; ".join(reasons) or None, path=run["path"]))
    return out
