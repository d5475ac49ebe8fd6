"""The environment variables that choose how the harness behaves, each with its rule, checked where a run starts.

A value outside its rule is a usage error naming the variable and the rule, never a KeyError deep inside
a run nor a value silently read as another (INT4_LORA_HARNESS_NATIVE=no used to mean "on"). An empty
value is the same as an unset one. BENCH_GRID is checked with the grid it names (harness.bench.grids.select).

    INT4_LORA_HARNESS_NATIVE        0 or 1: the torch path's C dequantizer (kernels/native.py), on by default
    INT4_LORA_HARNESS_JUDGE_NATIVE  0 or 1: the judge's C table gather (harness/verify/tables.py), on by default
    INT4_LORA_HARNESS_CACHE         a folder for built C libraries (harness/cbuild.py): not a file, writable
    TRITON_INTERPRET                0 or 1: Triton kernels on the CPU interpreter (read by Triton and the registry)
    HYPOTHESIS_PROFILE              ci or thorough: `int4-verify`'s --profile when the flag is not given
"""
import os
from pathlib import Path

SWITCHES = {"INT4_LORA_HARNESS_NATIVE": "1", "INT4_LORA_HARNESS_JUDGE_NATIVE": "1", "TRITON_INTERPRET": "0"}  # unset
HARNESS = (*SWITCHES, "INT4_LORA_HARNESS_CACHE")  # what any entry point checks; HYPOTHESIS_PROFILE is verify's


def value(name, environ=None):
    """The variable's value, or None where it is unset or empty."""
    return (os.environ if environ is None else environ).get(name) or None


def switch(name, environ=None):
    """'0' or '1' (unset: SWITCHES[name]); ValueError naming `name` for any other value."""
    text = value(name, environ) or SWITCHES[name]
    if text not in ("0", "1"):
        raise ValueError(f"{name}={text!r}: must be 0 or 1 (unset means {SWITCHES[name]})")
    return text


def folder_problem(text):
    """Why the path `text` cannot hold the cache (a file; not writable; no folder above it), or None."""
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            return "is a file; it must name a folder"
        return None if os.access(path, os.W_OK | os.X_OK) else "is a folder this user cannot write to"
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is None or not parent.is_dir():
        return f"cannot be created: {parent} is not a folder"
    return None if os.access(parent, os.W_OK | os.X_OK) else f"cannot be created: {parent} is not writable"


def profile(allowed, environ=None):
    """HYPOTHESIS_PROFILE if set (one of `allowed`), else None; ValueError naming the variable otherwise."""
    text = value("HYPOTHESIS_PROFILE", environ)
    if text is not None and text not in allowed:
        raise ValueError(f"HYPOTHESIS_PROFILE={text!r}: must be one of {', '.join(sorted(allowed))} when it picks "
                         "int4-verify's --profile (or pass --profile)")
    return text


def check(names=HARNESS, environ=None):
    """ValueError (one line: the variable, its value and the rule) for the first of `names` outside its rule."""
    for name in names:
        if name in SWITCHES:
            switch(name, environ)
            continue
        assert name == "INT4_LORA_HARNESS_CACHE", f"no rule for {name}"
        if value(name, environ) is not None:
            problem = folder_problem(value(name, environ))
            if problem:
                raise ValueError(f"{name}={value(name, environ)!r} {problem} (built C libraries are cached there)")
