"""This checkout's root never shadows an installed distribution on sys.path.

The repository's top-level folders install as int4_lora_harness.reference, .kernels and the package itself
(harness/); as top-level names they mean nothing. But `python -m ...` from the repository root, and a TARGET
module looked up from the cwd (verify/targets.py), put the root on sys.path, where the folder `kernels/` hides
the registry's `kernels` distribution that transformers (pulled by the peer packages) imports. So the root goes
to the end of sys.path: an installed distribution wins, and a module only the checkout has (examples/, tests/,
a user's file in the cwd) is still found.
"""
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The repository root when this package runs from a checkout (an editable install); None when installed,
# where this folder is int4_lora_harness/ and its parent is site-packages.
ROOT = HERE.parent if HERE.name == "harness" else None


def is_root(entry):
    """True when the sys.path entry `entry` (a str; '' is the cwd) is this checkout's root."""
    return ROOT is not None and Path(entry or os.curdir).resolve() == ROOT


def root_last(path=None):
    """Move every entry of `path` (a list of str, sys.path when None) naming this checkout's root to its end, in place."""
    path = sys.path if path is None else path
    roots = [entry for entry in path if is_root(entry)]
    if roots:
        path[:] = [entry for entry in path if not is_root(entry)] + roots
