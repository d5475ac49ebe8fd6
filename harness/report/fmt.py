"""How the page writes numbers: the template's filters. Each takes anything and writes '–' for what is not a number."""
import json
import math

MISSING = "–"


def _number(x):
    """x as a float, or None for None, booleans, text and NaN."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) and not hasattr(x, "__float__"):
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def fmt_seconds(s):
    """3 significant digits in s, ms, µs or ns; '–' when missing."""
    s = _number(s)
    if s is None or not math.isfinite(s):
        return MISSING
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(s) >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def fmt_bytes(n):
    """4 significant digits in B, KiB, MiB, GiB or TiB; '–' when missing (peak memory on a CPU)."""
    n = _number(n)
    if n is None or not math.isfinite(n):
        return MISSING
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.4g} {unit}"
        n /= 1024
    return f"{n:.4g} TiB"


def fmt_num(x, digits=3):
    """`digits` significant digits ('inf' stays 'inf'); '–' when missing."""
    x = _number(x)
    return MISSING if x is None else f"{x:.{digits}g}"


def fmt_exact(x):
    """Every digit of a float (the shortest text that reads back as the same number); '–' when missing."""
    x = _number(x)
    return MISSING if x is None else repr(x)


def fmt_pct(x, signed=False):
    """A fraction as a percentage with one decimal ('+25.0%' when signed); '–' when missing."""
    x = _number(x)
    if x is None or not math.isfinite(x):
        return MISSING
    return f"{100 * x:+.1f}%" if signed else f"{100 * x:.1f}%"


def fmt_share(count, total):
    """'2047 of 2048 (>99.9%)': a count and its share, never rounded to 0 % or 100 % unless it is exactly that
    (a 99.95 % share beside a max of 1 ulp read '100.0%' before); '–' when missing."""
    count, total = _number(count), _number(total)
    if count is None or total is None or total <= 0:
        return MISSING
    share = count / total
    text = f"{100 * share:.1f}%"
    if 0 < count < total and text in ("0.0%", "100.0%"):
        text = "<0.1%" if text == "0.0%" else ">99.9%"
    return f"{count:.0f} of {total:.0f} ({text})"


def fmt_group(group_size):
    """A group size as the page shows it: '128', or 'per-channel' where there is none (None or NaN)."""
    g = _number(group_size)
    return "per-channel" if g is None else str(int(g))


def fmt_value(value, limit=400):
    """Any recorded value (a list of numbers, a case in words) as compact JSON text, cut at `limit` characters."""
    text = value if isinstance(value, str) else json.dumps(value, default=str, allow_nan=True)
    return text if len(text) <= limit else f"{text[:limit]} ... ({len(text)} characters)"


FILTERS = dict(exact=fmt_exact, seconds=fmt_seconds, bytes=fmt_bytes, num=fmt_num, pct=fmt_pct, group=fmt_group,
               value=fmt_value, share=fmt_share)
