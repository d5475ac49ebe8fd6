"""The table `int4-harness bench` prints when it ends: per case, the TARGET's median time beside every other backend's.

Plain text (rich is no dependency of the harness). Per case, one line per backend: its median and IQR of the timed
calls (harness.bench.timing), a two-phase TARGET's prepare time, and `speedup` = the backend's median / the
TARGET's (above 1: the TARGET is faster). `noise` marks a difference no larger than the larger IQR of the two
timings: the calls' own spread covers it, so it says nothing about which kernel is faster. A flagged timing
(harness.bench.honesty), a refused or skipped benchmark shows its status and no speedup.
"""
from int4_lora_harness.bench import grids

HEADER = ("backend", "median ms", "IQR ms", "prepare ms", "speedup")


def within_spread(a, b):
    """Whether the medians of two rows differ by no more than the larger of their IQRs (noise, not a difference)."""
    return abs(a["median_s"] - b["median_s"]) <= max(a["iqr_s"], b["iqr_s"])


def _ms(seconds):
    return "-" if seconds is None or not seconds == seconds else f"{seconds * 1e3:.3f}"  # NaN: not measured


def _speedup(mine, other):
    """'1.62x', '1.01x noise', or '' when either side has no timing."""
    if mine is None or other is None:
        return ""
    ratio = f"{other['median_s'] / mine['median_s']:.2f}x"
    return f"{ratio} noise" if within_spread(mine, other) else ratio


def _cells(result, mine, label):
    """One table line's cells for a result: dict(backend, row: a timed row or None, status)."""
    row = result["row"]
    name = f"{result['backend']} (TARGET)" if result["backend"] == label else result["backend"]
    if row is None:
        return [name, "-", "-", "-", result["status"]]
    speedup = "" if result["backend"] == label else _speedup(mine, row)
    return [name, _ms(row["median_s"]), _ms(row["iqr_s"]), _ms(row.get("prepare_s")), speedup]


def lines(results, label):
    """The closing table as lines of text. results: in run order, dicts of backend, operation, point, row (the
    stored row when its timing stands, else None) and status ('' when timed, else what happened)."""
    cases = {}
    for result in results:
        cases.setdefault(grids.case_name(result["operation"], result["point"]), []).append(result)
    out = [f"closing comparison, TARGET {label}: median of the timed calls; speedup = the backend's median / the "
           "TARGET's (above 1: the TARGET is faster); noise: within the larger IQR of the two"]
    for case, found in cases.items():
        found = sorted(found, key=lambda r: r["backend"] != label)  # the TARGET first
        mine = found[0]["row"] if found[0]["backend"] == label else None
        table = [list(HEADER)] + [_cells(r, mine, label) for r in found]
        widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]
        out.append(f"{case}")
        out += ["  " + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                                 enumerate(zip(row, widths))).rstrip() for row in table]
    return out
