"""A covering design, built greedily: rows of factor values in which every value of every factor (strength 1),
or every pair of values of two factors (strength 2), occurs at least once, under a validity rule.

The greedy construction of AETG (Cohen, Dalal, Fredman, Patton, IEEE TSE 1997), made deterministic: each
row starts from the first target not yet covered, then the factor with the most uncovered targets takes the
value that covers the most of them together with the values already in the row (ties: the value used least
so far, then the first), and so on, as long as the row can still be completed validly. For the 11 factors
of harness.verify.bigpath (at most 5 values each) it gives 37 rows against a lower bound of 25, in about
0.1 s; a dependency (allpairspy, PICT) would save a few rows and add a package for it.
"""
from collections import Counter
from itertools import combinations


def covering(factors, valid=lambda row: True, strength=2):
    """[{factor: value}]: rows that cover every target (a value, or a pair of values of two factors) that
    some complete valid row holds.

    factors: {name: (value, ...)} (values hashable; the order breaks ties); valid(row) -> bool
    on a partial row (a dict of some factors): False when the values it holds cannot go together."""
    if strength not in (1, 2):
        raise ValueError(f"strength must be 1 (every value) or 2 (every pair of values), got {strength!r}")
    empty = [name for name, values in factors.items() if not values]
    if empty:
        raise ValueError(f"factors {empty} have no values")
    order = {name: i for i, name in enumerate(factors)}
    targets = [t for t in all_targets(factors, strength) if complete(dict(t), factors, valid) is not None]
    uncovered, used, rows = dict.fromkeys(targets), Counter(), []
    while uncovered:
        row = _row_from(next(iter(uncovered)), factors, valid, uncovered, used, order, strength)
        rows.append(row)
        used.update(row.items())
        for target in row_targets(row, strength, order):
            uncovered.pop(target, None)
    return rows


def _row_from(start, factors, valid, uncovered, used, order, strength):
    """A complete row holding the target `start`: the factor with the most uncovered targets first, each
    given its best value (_best_value)."""
    row = dict(start)
    while len(row) < len(factors):
        pending = Counter(name for target in uncovered for name, _ in target if name not in row)
        name = max((n for n in factors if n not in row), key=lambda n: (pending[n], -order[n]))
        row[name] = _best_value(row, name, factors, valid, uncovered, used, order, strength)
    return row


def all_targets(factors, strength):
    """Every value ((name, value),) or pair of values ((name, value), (other, value)) of `factors`, in order."""
    items = [[(name, v) for v in values] for name, values in factors.items()]
    if strength == 1:
        return [(item,) for values in items for item in values]
    return [(a, b) for first, second in combinations(items, 2) for a in first for b in second]


def row_targets(row, strength, order):
    """The targets one row (a complete dict) covers, each in the factors' order."""
    items = sorted(row.items(), key=lambda item: order[item[0]])
    return [(item,) for item in items] if strength == 1 else list(combinations(items, 2))


def complete(row, factors, valid):
    """A complete valid row extending the partial `row` (depth-first, values in order), or None."""
    if not valid(row):
        return None
    missing = next((name for name in factors if name not in row), None)
    if missing is None:
        return row
    for value in factors[missing]:
        found = complete({**row, missing: value}, factors, valid)
        if found is not None:
            return found
    return None


def _best_value(row, name, factors, valid, uncovered, used, order, strength):
    """The value of `name` that covers the most uncovered targets with `row` and keeps it completable."""
    def gain(value):
        if strength == 1:
            return int(((name, value),) in uncovered)
        pairs = (tuple(sorted(((name, value), item), key=lambda i: order[i[0]])) for item in row.items())
        return sum(pair in uncovered for pair in pairs)
    choices = [v for v in factors[name] if complete({**row, name: v}, factors, valid) is not None]
    assert choices, f"no value of {name} completes {row}: the row began from a completable target"
    return max(choices, key=lambda v: (gain(v), -used[(name, v)]))


def coverage_counts(rows, factors, valid=lambda row: True):
    """{"values": {name: {value: rows}}, "pairs": {(a, b): rows}, "missing": [targets no row holds]}: how many
    of `rows` (dicts, possibly partial: a factor a row lacks is not counted) hold each value and pair."""
    order = {name: i for i, name in enumerate(factors)}
    values = {name: dict.fromkeys(vals, 0) for name, vals in factors.items()}
    pairs = Counter()
    for row in rows:
        known = {k: v for k, v in row.items() if k in factors and v in values[k]}
        for name, value in known.items():
            values[name][value] += 1
        pairs.update(row_targets(known, 2, order))
    required = [t for t in all_targets(factors, 2) if complete(dict(t), factors, valid) is not None]
    required_values = [t for t in all_targets(factors, 1) if complete(dict(t), factors, valid) is not None]
    missing = [t for t in required_values if not values[t[0][0]][t[0][1]]] + [t for t in required if not pairs[t]]
    return dict(values=values, pairs={t: pairs[t] for t in required}, missing=missing)
