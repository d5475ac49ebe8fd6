"""What a verdict keeps of the per-element numbers the tolerance model computes, case by case.

A Judgement holds the largest error / allowed, the worst element with its inputs and a bounded sample
(no [out, in] arrays, so a 14336 x 4096 layer costs a few kilobytes); an ErrorReport keeps every
element, for tests and repro scripts. Both come from harness.verify.tolerance, block by block of weight
rows (`row_blocks`).
"""
from dataclasses import dataclass, field

import numpy as np

BLOCK_ELEMENTS = 1 << 22  # float64 values per [rows, in] temporary (32 MiB)
SAMPLES = 256  # per-element numbers a judgement keeps per case, for the report's histograms


@dataclass
class Judgement:
    """What a verdict keeps of one case: the largest error / allowed, the worst element, a bounded sample."""
    design: str  # the design that explains the result (or, failing all, the one that came closest)
    max_ratio: float
    worst: dict | None  # index, expected, got, ulps, allowed, ratio, design, and the element's inputs
    ulps: np.ndarray = field(default_factory=lambda: np.zeros(0))  # sample of per-element ulps
    ratio: np.ndarray = field(default_factory=lambda: np.zeros(0))  # sample of per-element error / allowed
    elements: int = 0
    exact_share: float = 1.0  # share of elements with ratio 0
    hint: str | None = None  # e.g. a design --designs excluded that would explain the result

    @property
    def passed(self):
        return self.max_ratio <= 1.0


class Tally:
    """Accumulates blocks of per-element numbers into a Judgement, keeping the worst element and a sample."""

    def __init__(self, design, total, samples=SAMPLES):
        self.design, self.total, self.samples = design, max(total, 1), samples
        self.max_ratio, self.worst, self.zeros, self.elements = 0.0, None, 0, 0
        self.ulps, self.ratio = [], []
        self.rng = np.random.default_rng(0)

    def add(self, ratio, ulps, describe):
        """ratio, ulps: [rows, cols] of one block; describe(i, j) -> dict of the element (i, j) of the block."""
        if ratio.size == 0:
            return
        flat = int(np.argmax(ratio))
        if ratio.flat[flat] > self.max_ratio or self.worst is None:
            self.max_ratio = float(ratio.flat[flat])
            self.worst = dict(describe(*np.unravel_index(flat, ratio.shape)), design=self.design)
        self.zeros += int(np.count_nonzero(ratio == 0))
        pick = self._pick(ratio.size)
        self.ulps.append(ulps.ravel()[pick])
        self.ratio.append(ratio.ravel()[pick])

    def add_exact(self, shape, describe):
        """A block of `shape` whose every element is exact (ratio 0, 0 ulps): what `add` would record of
        zero arrays, without them."""
        size = int(np.prod(shape))
        if size == 0:
            return
        if self.worst is None:
            self.worst = dict(describe(0, 0), design=self.design)
        self.zeros += size
        take = self._pick(size).size
        self.ulps.append(np.zeros(take))
        self.ratio.append(np.zeros(take))

    def _pick(self, size):
        """Which of a block's `size` elements the sample keeps (its share of SAMPLES); counts them as seen."""
        self.elements += size
        take = min(size, -(-self.samples * size // self.total))
        return self.rng.choice(size, size=take, replace=False) if take < size else np.arange(size)

    def judgement(self):
        cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0)  # noqa: E731
        return Judgement(self.design, self.max_ratio, self.worst, cat(self.ulps), cat(self.ratio), self.elements,
                         self.zeros / max(self.elements, 1))


def row_blocks(out_features, in_features):
    """Slices of weight rows so that a [rows, in] float64 temporary holds at most BLOCK_ELEMENTS values."""
    rows = max(1, BLOCK_ELEMENTS // max(in_features, 1))
    return [slice(start, min(start + rows, out_features)) for start in range(0, out_features, rows)] or [slice(0, 0)]


def weight_rows(weights, rows):
    """(packed, scales, zero_points) of harness.verify.cases.Weights restricted to weight rows `rows`."""
    pick = lambda t: t if t is None or np.size(t) == 1 else np.asarray(t)[rows]  # noqa: E731  per-tensor: as is
    return weights.packed[rows], pick(weights.scales), pick(weights.zero_points)


@dataclass
class ErrorReport:
    """Per-element numbers behind a verdict; `ratio <= 1` everywhere means within tolerance."""
    design: str
    got: np.ndarray  # float64
    expected: np.ndarray  # float64: the design reference (dequantizer: the correctly rounded value)
    allowed: np.ndarray  # linear: absolute, before the final rounding; dequantizer: ulps (0 or 1)
    ratio: np.ndarray
    ulps: np.ndarray

    @property
    def max_ratio(self):
        return float(np.max(self.ratio, initial=0.0))

    @property
    def passed(self):
        return self.max_ratio <= 1.0

    def worst(self):
        """The element with the largest error / allowed: index, expected, got, ulps, allowed, ratio, design."""
        if self.ratio.size == 0:
            return None
        index = np.unravel_index(int(np.argmax(self.ratio)), self.ratio.shape)
        pick = lambda a: float(a[index])  # noqa: E731
        return dict(index=tuple(int(i) for i in index), expected=pick(self.expected), got=pick(self.got),
                    ulps=pick(self.ulps), allowed=pick(self.allowed), ratio=pick(self.ratio), design=self.design)
