"""A long plan judged as several tasks (--ray), and the candidate's one result made from theirs.

When a candidate's plan holds the large tier, `split` cuts it by large-tier shape: part SMALL runs the search, the
repeated calls, the coverage floor, the big K design and any checkpoint layer; each other part, named after a
shape of harness.shapes.LARGE_TIER, the large-tier cases and probes at that shape (harness.verify.plan's `only`).
A part is a harness.verify.run.Candidate with its `part` set, judged as a whole candidate is (its own child
process, its own result dict); `merge` makes the candidate's result from its parts' results, in plan order: the
same fields as a run in one piece, every count summed over the parts, the first failure in plan order, and
`parts` ([{part, task, node, passed, seconds}]) saying where each ran.

Unlike a run in one piece, a part does not stop when an earlier part fails (they run at once): the merged result
may hold cases judged after the failure, and every failing part is listed in `parts`.
"""
from collections import Counter
from dataclasses import replace

import numpy as np

from int4_lora_harness.shapes import LARGE_TIER

SMALL = "small"  # the search and the explicit examples below the large tier


def runs_small(candidate):
    """Whether `candidate` (a whole plan, or its SMALL part) runs the search and the explicit examples below the
    large tier."""
    return candidate.part in (None, SMALL)


def split(candidate):
    """[Candidate]: the candidate itself where its plan has no large tier, else its SMALL part and one part per
    large-tier shape."""
    if candidate.large_tier_skipped is not None:
        return [candidate]
    return [replace(candidate, part=name) for name in (SMALL, *LARGE_TIER)]


def merge(results):
    """The result of one candidate from its parts' results (in split's order; each with `part`, `task`, `node`):
    its `task` and `node` are those of the first failing part (where the failure was judged), else the first's."""
    first, failed = results[0], [r for r in results if not r["passed"]]
    worst = max(results, key=lambda r: r.get("max_ratio") or 0.0)
    merged = dict(first, passed=not failed, fuzzed_cases=sum(r.get("fuzzed_cases") or 0 for r in results),
                  properties=_properties([r.get("properties") or [] for r in results]),
                  explicit=[e for r in results for e in r.get("explicit") or []],
                  planned=_summed([r.get("planned") or {} for r in results]),
                  designs=_designs([r.get("designs") or {} for r in results]),
                  max_ratio=worst.get("max_ratio"), worst=worst.get("worst"),
                  samples=_samples([r.get("samples") or [] for r in results]),
                  failure=failed[0]["failure"] if failed else None,
                  seconds=round(sum(r.get("seconds") or 0.0 for r in results), 2),
                  timing=_summed([r.get("timing") or {} for r in results]),
                  sandbox=_weakest([r.get("sandbox") for r in results]),
                  exit_note="; ".join(r["exit_note"] for r in results if r.get("exit_note")) or None,
                  task=(failed or results)[0].get("task"), node=(failed or results)[0].get("node"),
                  parts=[dict(part=r.get("part"), task=r.get("task"), node=r.get("node"), passed=r["passed"],
                              seconds=r.get("seconds")) for r in results])
    merged.pop("part", None)
    merged.pop("repro", None)
    if failed and failed[0].get("repro"):
        merged["repro"] = failed[0]["repro"]
    return merged


def _weakest(sandboxes):
    """The first sandbox a part reported unsandboxed, else the first reported (a part whose candidate died at
    import reports none)."""
    reported = [s for s in sandboxes if s]
    return next((s for s in reported if not s.get("sandboxed")), reported[0] if reported else None)


def _properties(lines_of_parts):
    """Property lines (harness.verify.engine.Record.property_lines) summed over the parts: a property failed if it
    failed in any part, passed if it held in some part and failed in none (harness.verify.engine.property_status)."""
    from int4_lora_harness.verify.engine import property_status
    merged = {}
    for lines in lines_of_parts:
        for line in lines:
            seen = merged.setdefault(line["name"], dict(line, cases=0, not_judged=0, statuses=set(), message=""))
            seen["cases"] += line.get("cases") or 0
            seen["not_judged"] += line.get("not_judged") or 0
            seen["statuses"].add(line.get("status"))
            if line.get("status") == "failed" and not seen["message"]:
                seen["message"] = line.get("message", "")
    for line in merged.values():
        statuses = line.pop("statuses")
        line["status"] = property_status("failed" in statuses, "passed" in statuses, "not judged" in statuses)
        line["passed"] = line["status"] == "passed"
    return list(merged.values())


def _summed(dicts):
    """{key: sum over `dicts`} of their numeric values, keys in first-seen order."""
    total = {}
    for d in dicts:
        for key, value in d.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                total[key] = round(total.get(key, 0) + value, 3)
    return total


def _designs(parts):
    """{design: {cases, words}} summed over the parts, the most used first."""
    counts, words = Counter(), {}
    for designs in parts:
        for design, entry in designs.items():
            counts[design] += entry.get("cases", 0)
            words.setdefault(design, entry.get("words"))
    return {d: dict(cases=n, words=words[d]) for d, n in counts.most_common()}


def _samples(parts):
    """The per-(dtype, granularity) samples of the parts as one: each part's kept values, a share of at most
    SAMPLES_PER_GROUP in proportion to the elements it saw (each part's sample is uniform over what it saw)."""
    from int4_lora_harness.verify.engine import SAMPLES_PER_GROUP
    groups = {}
    for samples in parts:
        for s in samples:
            groups.setdefault((s["dtype"], s["granularity"]), []).append(s)
    rng, merged = np.random.default_rng(0), []
    for (dtype, granularity), entries in sorted(groups.items()):
        seen = sum(s["elements_seen"] for s in entries)
        ulps, ratio = [], []
        for s in entries:
            share = min(len(s["ulps"]), round(SAMPLES_PER_GROUP * s["elements_seen"] / max(seen, 1)))
            keep = np.sort(rng.choice(len(s["ulps"]), size=share, replace=False)) if share < len(s["ulps"]) else \
                range(len(s["ulps"]))
            ulps += [s["ulps"][i] for i in keep]
            ratio += [s["ratio"][i] for i in keep]
        merged.append(dict(dtype=dtype, granularity=granularity, elements_seen=seen, ulps=ulps, ratio=ratio))
    return merged
