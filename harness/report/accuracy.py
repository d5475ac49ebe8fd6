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
    """Per (dtype, granularity) of a result's recorded sample: elements_seen, sampled, max_ulps, max_ratio,
    median_ratio, at_zero (sampled elements whose error is 0), infinite (error / allowed inf: the exact value is
    representable and the result differs, or it is NaN), nan (null in the file), ulps_note (how to read ulps).

    Statistics of the recorded numbers only (a max, a median, a count): infinities are numbers here, never
    dropped, so 'max error / allowed' is inf when some sampled element was inf, and 'at 0' counts the same
    elements as 0 ulps for a dequantizer (ratio 0 exactly where ulps are 0: tolerance.ratio_of)."""
    rows = []
    for s in result["samples"]:
        n = max(len(s["ulps"]), len(s["ratio"]))
        ulps, ratio = (np.asarray(v + [np.nan] * (n - len(v)), dtype=float) for v in (s["ulps"], s["ratio"]))
        known_ulps, known_ratio = ulps[~np.isnan(ulps)], ratio[~np.isnan(ratio)]
        rows.append(dict(dtype=s["dtype"], granularity=s["granularity"], elements_seen=s["elements_seen"], sampled=n,
                         max_ulps=float(known_ulps.max()) if known_ulps.size else None,
                         max_ratio=float(known_ratio.max()) if known_ratio.size else None,
                         median_ratio=float(np.median(known_ratio)) if known_ratio.size else None,
                         at_zero=int((known_ratio == 0).sum()), infinite=int(np.isinf(known_ratio).sum()),
                         nan=int((np.isnan(ulps) | np.isnan(ratio)).sum()),
                         ulps_note=ulps_note(result["contract"], s["dtype"])))
    return rows


def ulps_note(contract, dtype):
    """How to read a row's ulps: they are the dequantizer's criterion; a linear is judged by error / allowed."""
    if contract == "dequantizer":
        return None
    if dtype == "fp32":
        return ("not judged: only error / allowed counts in fp32 (the bound of a long fp32 sum spans thousands "
                "of fp32 ulps)")
    return "not judged: a linear is judged by error / allowed only"


def shown_results(rows):
    """[(row, run, result)]: the results behind each summary row (report.summary.rows), from the run its
    verdict comes from (the newest complete one, else the newest partial one)."""
    return [(row, row["shown"]["run"], result) for row in rows for result in row["shown"]["results"]]


def draw(result, name):
    """(the SVG of a result's error-sample chart | None, why it was not drawn | None).

    The samples come from a file someone else wrote: a chart matplotlib cannot draw from them is named
    in the page in its place (with the error), and the rest of the page renders."""
    chart = ulps_chart if result["contract"] == "dequantizer" else ratio_chart
    try:
        return chart(sample_frame(result), result["contract"], name), None
    except (ValueError, TypeError, ArithmeticError, RuntimeError) as error:
        return None, f"not drawn: {type(error).__name__}: {str(error)[:300]}"


def accuracy_panels(rows, max_charts):
    """(one panel per result behind a summary row (report.summary.rows) that recorded samples: candidate,
    contract, row (its target, domain, layout, device), run_id, seed, svg, not_drawn, summary, max_ratio, worst;
    how many were left out over `max_charts`)."""
    panels = []
    with_samples = [(row, run, r) for row, run, r in shown_results(rows) if r["samples"]]
    for i, (row, run, result) in enumerate(with_samples[:max_charts]):
        svg, not_drawn = draw(result, f"accuracy{i}")
        panels.append(dict(candidate=result["candidate"], contract=result["contract"], row=row, run_id=run["run_id"],
                           seed=result["seed"], path=run["path"], svg=svg, not_drawn=not_drawn,
                           summary=sample_summary(result), max_ratio=result["max_ratio"], worst=result["worst"]))
    return panels, max(0, len(with_samples) - max_charts)
