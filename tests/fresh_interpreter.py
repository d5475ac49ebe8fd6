"""For the tests of C libraries built on first use (harness/cbuild.py): code run in a fresh interpreter with a
cache folder of its own, and a C compiler that always fails."""
import os
import subprocess
import sys


def run_fresh(code, cache, **env):
    """(stdout, stderr) of `python -c code` with INT4_LORA_HARNESS_CACHE=cache and `env` (it must exit 0)."""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "INT4_LORA_HARNESS_CACHE": str(cache), **env})
    return run.stdout, run.stderr


def failing_compiler(folder, message):
    """An executable `folder`/cc that prints `message` on stderr and exits 1; its path."""
    cc = folder / "cc"
    cc.write_text(f"#!/bin/sh\necho '{message}' >&2\nexit 1\n")
    cc.chmod(0o755)
    return cc
