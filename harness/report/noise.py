"""When the difference between two timings is noise: the rules the page reads a speedup or a LoRA overhead by.

Two timings of one run (a backend against `dense`, gemm_lora against gemm) differ by noise, not by the
kernels, when any of these holds (each row says which):
  1. either was timed fewer than MIN_ROUNDS times: with n calls the chance that the true median lies outside
     [fastest, slowest] is 2 * 0.5**n, under 5 % only from n = 6 on;
  2. the medians differ by no more than the timings' spread: the larger relative IQR (iqr_s / median_s) of
     the two, each at least the run's typical relative IQR (an IQR of a few calls can be small by luck);
  3. the fastest calls do not show it: their ratio is on the other side of 1, within that spread, or off the
     medians' ratio by more than that spread. Load on a shared machine delays calls and moves a median (a
     +2306 % "overhead" of a case hit by other jobs, whose fastest call was 2 % slower), while the fastest
     call of a timing stays near the kernel's own speed.
The comparison of two runs (report/comparison.py) uses MIN_ROUNDS and the same spread, then its own test of
significance across runs.
"""
import numpy as np
import pandas as pd

MIN_ROUNDS = 6  # 1 - 2 * 0.5**6 = 97 %: the fewest rounds whose range brackets the median at 95 %


def typical_spread(iqr_s, median_s):
    """The median relative IQR of a run's timings (0 when none is finite): how much a typical case spreads."""
    relative = pd.Series(np.asarray(iqr_s, float) / np.asarray(median_s, float))
    relative = relative[np.isfinite(relative)]
    return float(relative.median()) if len(relative) else 0.0


def relative_spread(iqr_s, median_s, typical):
    """Per timing, iqr_s / median_s, at least `typical` (and `typical` where it is not a finite number)."""
    relative = pd.Series(np.asarray(iqr_s, float) / np.asarray(median_s, float), index=getattr(median_s, "index", None))
    return relative.where(np.isfinite(relative), typical).clip(lower=typical)


def reasons(base, other, typical):
    """Per row, '' or why `other`'s difference from `base` is noise (rules 1-3 of the module).

    base, other: DataFrames (one index) with median_s, iqr_s, min_s and rounds; typical: the run's
    typical_spread."""
    rounds = np.minimum(base["rounds"].fillna(0).to_numpy(float), other["rounds"].fillna(0).to_numpy(float))
    spread = np.maximum(relative_spread(base["iqr_s"], base["median_s"], typical).to_numpy(),
                        relative_spread(other["iqr_s"], other["median_s"], typical).to_numpy())
    with np.errstate(divide="ignore", invalid="ignore"):
        change = np.log(other["median_s"].to_numpy(float) / base["median_s"].to_numpy(float))
        fastest = np.log(other["min_s"].to_numpy(float) / base["min_s"].to_numpy(float))
    out = []
    for n, s, c, f in zip(rounds, spread, change, fastest):
        if n < MIN_ROUNDS:
            out.append(f"{n:.0f} rounds: too few to place the median")
        elif np.isfinite(c) and abs(c) <= s:
            out.append(f"{np.expm1(c):+.1%} is within the timings' spread (±{s:.1%} relative IQR)")
        elif np.isfinite(c) and np.isfinite(f) and (np.sign(f) != np.sign(c) or abs(f) <= s or abs(c - f) > s):
            out.append(f"the fastest calls show {np.expm1(f):+.1%}, the medians {np.expm1(c):+.1%} (spread ±{s:.1%})")
        else:
            out.append("")
    return pd.Series(out, index=base.index, dtype=object)
