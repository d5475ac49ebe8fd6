"""The numerical-error section: how close each candidate ran to its bound, from the samples verify recorded.

A result's `samples` (docs/verify_schema.md) hold, per output dtype and granularity of the scales, a
uniform sample of at most 2048 per-element numbers verify judged: `ulps` (distance from the correctly
rounded value) and `ratio` (error / allowed). This module only reshapes and draws them; it runs nothing.
"""
import numpy as np
import pandas as pd

from int4_lora_harness.report.charts import ratio_chart, ulps_chart

GRANULARITY_ORDER = ["grouped", "per-channel", "per-tensor"]


def sample_frame(result):
    """One row per sampled element of a result: dtype, granularity, ulps, ratio (NaN where null)."""
    frames = []
    for s in result["samples"]:
        n = max(len(s["ulps"]), len(s["ratio"]))
        pad = [np.nan] * n
        frames.append(pd.DataFrame(dict(dtype=s["dtype"], granularity=s["granularity"],
                                        ulps=(s["ulps"] + pad)[:n], ratio=(s["ratio"] + pad)[:n])))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["dtype", "granularity", "ulps", "ratio"])
    order = {g: i for i, g in enumerate(GRANULARITY_ORDER)}
    return frame.sort_values(["dtype", "granularity"], key=lambda c: c.map(order).fillna(len(order))
                             if c.name == "granularity" else c, kind="stable", ignore_index=True)


def sample_summary(result):
    """Per (dtype, granularity): elements_seen, sampled, max_ulps, max_ratio, median_ratio, share_zero, nan."""
    rows = []
    for s in result["samples"]:
        ulps, ratio = np.asarray(s["ulps"], dtype=float), np.asarray(s["ratio"], dtype=float)
        finite = ratio[np.isfinite(ratio)]
        rows.append(dict(dtype=s["dtype"], granularity=s["granularity"], elements_seen=s["elements_seen"],
                         sampled=int(max(ulps.size, ratio.size)),
                         max_ulps=float(np.nanmax(ulps)) if np.isfinite(ulps).any() else None,
                         max_ratio=float(finite.max()) if finite.size else None,
                         median_ratio=float(np.median(finite)) if finite.size else None,
                         share_zero=float((finite == 0).mean()) if finite.size else None,
                         nan=int((~np.isfinite(ratio)).sum() + (~np.isfinite(ulps)).sum())))
    return rows


def latest_results(runs):
    """[(run, result)]: the newest result of each (candidate, contract) over `runs` (newest first)."""
    seen, out = set(), []
    for run in runs:
        for result in run["results"]:
            key = (result["candidate"], result["contract"])
            if key not in seen:
                seen.add(key)
                out.append((run, result))
    return out


def draw(result, name):
    """(the SVG of a result's error-sample chart | None, why it was not drawn | None).

    The samples come from a file someone else wrote: a chart matplotlib cannot draw from them is named
    in the page in its place (with the error), and the rest of the page renders."""
    chart = ulps_chart if result["contract"] == "dequantizer" else ratio_chart
    try:
        return chart(sample_frame(result), result["contract"], name), None
    except (ValueError, TypeError, ArithmeticError, RuntimeError) as error:
        return None, f"not drawn: {type(error).__name__}: {str(error)[:300]}"


def accuracy_panels(runs, max_charts):
    """(one panel per latest candidate and contract with samples: candidate, contract, run_id, svg, not_drawn,
    summary, max_ratio, worst; how many were left out over `max_charts`)."""
    panels = []
    with_samples = [(run, r) for run, r in latest_results(runs) if r["samples"]]
    for i, (run, result) in enumerate(with_samples[:max_charts]):
        svg, not_drawn = draw(result, f"accuracy{i}")
        panels.append(dict(candidate=result["candidate"], contract=result["contract"], run_id=run["run_id"],
                           path=run["path"], svg=svg, not_drawn=not_drawn, summary=sample_summary(result),
                           max_ratio=result["max_ratio"], worst=result["worst"]))
    return panels, max(0, len(with_samples) - max_charts)
