"""Shrinking a failure within a budget of cases (--shrink-budget), keeping the smallest failing case found.

Hypothesis shrinks a failing case by running smaller ones; each is a whole case run on the candidate. For a
slow candidate (a Triton kernel under the interpreter) that took minutes, outside the printed breakdown, and
ended in Hypothesis's own five-minute stop. Here shrinking may run at most `budget` cases after the first
failure. Past it, a case not seen failing before is not run and counts as "no smaller failure here": Hypothesis
then ends its passes at once, and replays the smallest failing case it holds (seen failing, so it runs; the
verdict keeps that one). A budget of cases, not seconds: the same seed gives the same minimal case on a busy
machine and an idle one.
"""
import hashlib
import time
from dataclasses import fields, is_dataclass

import numpy as np

# New cases run after the first failure (neither that failure nor a replay of one is counted): every planted bug of
# tests/planted/bugs.py shrinks to its end within 66 (the ci profile, seed 0), so 100 cuts only a slow shrink, at
# 2.5 times the cases of a ci search.
SHRINK_BUDGET = 100
HYPOTHESIS_STOP = "five minutes"  # in the warning Hypothesis reports when it stops shrinking on its own


def case_key(case):
    """A digest of every field of `case` (a harness.verify.cases dataclass): equal keys, equal cases."""
    digest = hashlib.blake2b(digest_size=16)
    _feed(digest, case)
    return digest.hexdigest()


def _feed(digest, value):
    if is_dataclass(value):
        digest.update(type(value).__name__.encode())
        for f in fields(value):
            digest.update(f.name.encode())
            _feed(digest, getattr(value, f.name))
    elif isinstance(value, np.ndarray):
        digest.update(f"{value.dtype.str}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).reshape(-1).view(np.uint8) if value.size else b"")
    elif isinstance(value, (list, tuple)):
        digest.update(b"[")
        for item in value:
            _feed(digest, item)
        digest.update(b"]")
    else:
        digest.update(repr(value).encode() + b"\0")


class Shrinking:
    """The shrinking of one search: when it began, the cases it ran, the cases seen failing (by key)."""

    def __init__(self, budget=SHRINK_BUDGET):
        self.budget, self.begun, self.seconds = budget, None, 0.0
        self.cases, self.passed_over, self.failing, self.hypothesis_stopped = 0, 0, set(), False

    @property
    def started(self):
        return self.begun is not None

    def may_run(self, case):
        """Whether to run `case`: always before the first failure and within the budget; past it, only a case seen
        failing (Hypothesis replays its smallest at the end)."""
        if not self.started or self.cases < self.budget or case_key(case) in self.failing:
            return True
        self.passed_over += 1
        return False

    def ran(self, case, failed):
        """Count a case that ran (a replay of one seen failing is not a new case); the first failure starts the
        shrinking."""
        key = case_key(case) if self.started or failed else None
        if self.started and key not in self.failing:
            self.cases += 1
        if failed:
            self.failing.add(key)
            if not self.started:
                self.begun = time.perf_counter()

    def heard(self, text):
        """A line Hypothesis reported: its own five-minute stop is recorded here, any other line is returned."""
        if HYPOTHESIS_STOP in text and "shrink" in text:
            self.hypothesis_stopped = True
            return None
        return text

    def finish(self):
        """The summary the verdict keeps (failure.shrink; docs/verify_schema.md), or None when nothing failed."""
        if not self.started:
            return None
        self.seconds = time.perf_counter() - self.begun
        stopped = "budget" if self.passed_over else "hypothesis" if self.hypothesis_stopped else None
        return dict(cases=self.cases, seconds=round(self.seconds, 3), budget=self.budget, stopped=stopped)


def shrink_words(shrink):
    """'57 cases, 12.3 s' with why it stopped early, if it did."""
    words = f"{shrink['cases']} cases, {shrink['seconds']:.1f} s"
    if shrink.get("stopped") == "budget":
        words += f"; stopped at --shrink-budget {shrink['budget']}: the smallest failing case found so far"
    elif shrink.get("stopped") == "hypothesis":
        words += "; stopped by Hypothesis's own five-minute limit: the smallest failing case found so far"
    return words
