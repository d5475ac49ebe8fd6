"""Reading one field of a file written by someone else: the type checked, a note when it is not what the schema says.

A verdict file may be of an older schema, hand-edited or half-written by a broken tool. Every field
the page shows is read through `read`, which returns the value when it has the documented type and
the default otherwise, and records in the file's Notes what it could not read. The page then shows
one line per file naming the fields, and renders the rest: nothing here raises on a bad value.

    notes = Notes("reports/verify/x.json")
    passed = read(result, "passed", "bool", notes, "results[0].")  # only the boolean true is True
"""
import math

MAX_LISTED = 8  # fields named per file in the page's note; the rest are counted

# kind -> (accepts(value), what the schema says, for the note)
KINDS = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "list": (lambda v: isinstance(v, list), "a list"),
    "dict": (lambda v: isinstance(v, dict), "an object"),
    "strs": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
    "any": (lambda v: True, "anything"),
}


class Notes:
    """What could not be read in one file: missing fields and fields of the wrong type, for one line in the page."""

    def __init__(self, path):
        self.path = str(path)
        self.missing, self.wrong, self.other = [], [], []
        self.older = True  # whether a missing field may be an older schema's (verdicts.run: schema < 2)

    def __bool__(self):
        return bool(self.missing or self.wrong or self.other)

    def lines(self):
        """One line per kind of problem, each naming the file (empty when all was read)."""
        lines = [f"{self.path}: {text}" for text in self.other]
        missing = "missing (shown as '?'; an older schema?)" if self.older else "missing (shown as '?')"
        for items, what in ((self.missing, missing),
                            (self.wrong, "of the wrong type (shown as '?')")):
            if items:
                more = f", and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
                lines.append(f"{self.path}: fields {what}: {', '.join(items[:MAX_LISTED])}{more}")
        return lines


def describe(value):
    """A value as a note shows it: its JSON type and the start of its text."""
    name = {str: "string", bool: "boolean", list: "list", dict: "object", type(None): "null"}.get(type(value))
    name = name or ("number" if isinstance(value, (int, float)) else type(value).__name__)
    text = repr(value)
    return f"{name} {text[:40]}{'...' if len(text) > 40 else ''}"


def read(obj, key, kind, notes, where="", default=None, required=False):
    """obj[key] when it is of `kind` (KINDS), else `default`; a note in `notes` for a wrong type, or a missing
    field when `required`. A null is the default without a note unless `required`. For "bool" only the
    boolean true reads as True: anything else that is not a boolean (the string "false", 1) is noted and False."""
    if not isinstance(obj, dict) or key not in obj or obj[key] is None:
        if required:
            notes.missing.append(f"{where}{key}")
        return default
    value, (accepts, expected) = obj[key], KINDS[kind]
    if accepts(value):
        return int(value) if kind == "int" else value
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind == "str" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # a number where a name is expected: its text loses nothing
    extra = " (only true passes)" if kind == "bool" else ""
    notes.wrong.append(f"{where}{key}: {describe(value)}, not {expected}{extra}")
    return False if kind == "bool" else default


def numbers(values, notes, where):
    """A list of numbers (null: NaN) as floats; anything else in it is noted and read as NaN."""
    if not isinstance(values, list):
        if values is not None:
            notes.wrong.append(f"{where}: {describe(values)}, not a list of numbers")
        return []
    out, odd = [], 0
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append(float(v))
        else:
            odd += v is not None
            out.append(math.nan)
    if odd:
        notes.wrong.append(f"{where}: {odd} value(s) that are not numbers (read as NaN)")
    return out


def dicts(obj, key, notes, where="", required=False):
    """obj[key] as a list of objects: a wrong type reads as [], entries that are not objects are noted and left out."""
    items = read(obj, key, "list", notes, where, default=[], required=required)
    kept = [item for item in items if isinstance(item, dict)]
    if len(kept) < len(items):
        notes.wrong.append(f"{where}{key}: {len(items) - len(kept)} entr(y/ies) that are not objects (left out)")
    return kept
