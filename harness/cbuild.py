"""C sources built on first use with the system's C compiler, cached, and loaded by ctypes.

Two libraries are built this way, from two separate sources: the torch path's CPU dequantizer
(kernels/int4_cpu.c, loaded by kernels/native.py) and the judge's table gather
(harness/verify/gather.c, loaded by harness/verify/tables.py). Only the building is shared, never
the arithmetic: the judge runs no line of a kernel it judges.

Why ctypes: no dependency and no headers, and a file builds in well under a second with the
compiler that Triton needs anyway. A library is cached under $INT4_LORA_HARNESS_CACHE (default:
$XDG_CACHE_HOME or ~/.cache, then int4_lora_harness/), keyed by the source, the compiler command
and this CPU's flags (it is built with -march=native), so a shared home directory never hands one
machine another's build. ctypes drops the GIL during each call.
"""
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

from int4_lora_harness import environment

FLAGS = ["-O3", "-std=c11", "-ffp-contract=off", "-fno-trapping-math", "-fPIC", "-shared"]  # no FMA; selects vectorize
NATIVE_FLAGS = ["-march=native"]  # tried first; dropped where the compiler refuses it


def cache_dir():
    """Where built libraries are kept."""
    root = os.environ.get("INT4_LORA_HARNESS_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "int4_lora_harness"


def cpu_fingerprint():
    """This CPU's feature flags (Linux /proc/cpuinfo), else the platform's processor name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"


def _compile(source, compiler, flags, target):
    """Build `source` into `target` (atomically: concurrent builders each write their own file); the error, or None."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".so", delete=False) as tmp:
        partial = Path(tmp.name)
    run = subprocess.run([compiler, *flags, str(source), "-o", str(partial), "-lm"], capture_output=True, text=True)
    if run.returncode != 0:
        partial.unlink(missing_ok=True)
        return f"{compiler} {' '.join(flags)} failed: {run.stderr.strip()[-800:]}"
    os.replace(partial, target)
    return None


def build(source):
    """(library path, None) or (None, why not) for the C file `source`: cached as <stem>-<key>.so."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        return None, "no C compiler found (set CC, or install cc, gcc or clang)"
    errors, text, cpu = [], Path(source).read_text(), cpu_fingerprint()
    for flags in (FLAGS + NATIVE_FLAGS, FLAGS):
        key = hashlib.sha256("\0".join([text, compiler, *flags, cpu]).encode())
        target = cache_dir() / f"{Path(source).stem}-{key.hexdigest()[:16]}.so"
        try:
            error = None if target.exists() else _compile(source, compiler, flags, target)
        except OSError as failure:  # an unwritable cache, a CC that does not run
            error = f"cannot build {target}: {failure}"
        if error is None:
            return target, None
        errors.append(error)
    return None, "; ".join(errors)


class Missing:
    """Stands for a library that could not be built or loaded; `why` says why."""

    def __init__(self, why):
        self.why = why


def load(source, switch, what, instead):
    """The ctypes library built from `source`, or a Missing that says why not.

    switch: an environment variable that, set to 0, turns the library off (no warning); otherwise a
    library that cannot be built or loaded warns once per call here: "{what} is not available, {instead}".
    """
    if environment.switch(switch) == "0":  # ValueError naming the variable for a value other than 0 or 1
        return Missing(f"{switch}=0")
    path, why = build(source)
    if path is not None:
        try:
            return ctypes.CDLL(str(path))
        except OSError as failure:  # a cached file another machine or a crash left unloadable
            why = f"cannot load {path}: {failure}"
    warnings.warn(f"int4_lora_harness: {what} is not available, {instead}: {why}", RuntimeWarning, stacklevel=4)
    return Missing(why)
