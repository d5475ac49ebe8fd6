"""The CPU dequantizer in C (int4_cpu.c), built on first use with the system's C compiler and loaded by ctypes.

Why C and ctypes: the dequantizer is one pass of table lookups (PSHUFB) that no sequence of torch ops
can fuse, and ctypes needs no dependency and no torch headers; the file builds in well under a
second with the compiler that Triton needs anyway. The library is cached under
$INT4_LORA_HARNESS_CACHE (default: $XDG_CACHE_HOME or ~/.cache, then int4_lora_harness/), keyed by
the source, the compiler command and this CPU's flags (it is built with -march=native), so a shared home
directory never hands one machine another's build.

Where it cannot be built (no compiler, or INT4_LORA_HARNESS_NATIVE=0 in the environment), the torch
path keeps its torch ops and `unavailable_reason()` says why; a failed build warns once, with the
compiler's message. ctypes drops the GIL during each call.
"""
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from functools import cache
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("int4_cpu.c")
FLAGS = ["-O3", "-std=c11", "-ffp-contract=off", "-fno-trapping-math", "-fPIC", "-shared"]  # no FMA; selects vectorize
NATIVE_FLAGS = ["-march=native"]  # tried first; dropped where the compiler refuses it
KINDS = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2}  # int4_cpu.c's output formats
HUGE_PAGE_MIN_BYTES = 4 << 20  # outputs from this size ask for 2 MiB pages (int4_advise_huge_pages)
I64, PTR = ctypes.c_int64, ctypes.c_void_p


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


def _compile(compiler, flags, target):
    """Build SOURCE into `target` (atomically: concurrent builders each write their own file); the error, or None."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".so", delete=False) as tmp:
        partial = Path(tmp.name)
    run = subprocess.run([compiler, *flags, str(SOURCE), "-o", str(partial), "-lm"], capture_output=True, text=True)
    if run.returncode != 0:
        partial.unlink(missing_ok=True)
        return f"{compiler} {' '.join(flags)} failed: {run.stderr.strip()[-800:]}"
    os.replace(partial, target)
    return None


def _build():
    """(library path, None) or (None, why not)."""
    if os.environ.get("INT4_LORA_HARNESS_NATIVE", "1") == "0":
        return None, "INT4_LORA_HARNESS_NATIVE=0"
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        return None, "no C compiler found (set CC, or install cc, gcc or clang)"
    errors, source, cpu = [], SOURCE.read_text(), cpu_fingerprint()
    for flags in (FLAGS + NATIVE_FLAGS, FLAGS):
        key = hashlib.sha256("\0".join([source, compiler, *flags, cpu]).encode())
        target = cache_dir() / f"int4_cpu-{key.hexdigest()[:16]}.so"
        try:
            error = None if target.exists() else _compile(compiler, flags, target)
        except OSError as failure:  # an unwritable cache, a CC that does not run
            error = f"cannot build {target}: {failure}"
        if error is None:
            return target, None
        errors.append(error)
    return None, "; ".join(errors)


@cache
def library():
    """The loaded library, or a _Missing whose `why` says why not (warned once, unless turned off on purpose)."""
    path, why = _build()
    lib = None
    if path is not None:
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as failure:  # a cached file another machine or a crash left unloadable
            why = f"cannot load {path}: {failure}"
    if lib is None:
        if why != "INT4_LORA_HARNESS_NATIVE=0":
            warnings.warn(f"int4_lora_harness: the C dequantizer is not available, the torch ops are used: {why}",
                          RuntimeWarning, stacklevel=3)
        return _Missing(why)
    lib.int4_dequantize.argtypes = [PTR, I64, I64, PTR, I64, I64, PTR, I64, I64, I64, ctypes.c_int, PTR]
    lib.int4_dequantize.restype = None
    lib.int4_advise_huge_pages.argtypes = [PTR, ctypes.c_size_t]
    lib.int4_advise_huge_pages.restype = ctypes.c_int
    return lib


class _Missing:
    """Stands for a library that could not be built; `why` says why."""

    def __init__(self, why):
        self.why = why


def unavailable_reason():
    """None where the C dequantizer runs here, else why not."""
    lib = library()
    return lib.why if isinstance(lib, _Missing) else None


def group_operand(t, kind, num_groups):
    """Scales or zero points as (float64 contiguous tensor, row stride, group stride) for int4_dequantize.

    kind: 'per-tensor' | 'per-channel' | 'grouped' (SPEC §2); t is converted exactly (integers as NumPy
    converts them to float64, to nearest).
    """
    t64 = t.to(torch.float64).contiguous()
    strides = {"per-tensor": (0, 0), "per-channel": (1, 0), "grouped": (num_groups, 1)}[kind]
    return t64, *strides


def dequantize_into(packed, scales, zero_points, width, rows, out):
    """out [R, in] (fp16/bf16/fp32, contiguous, CPU) <- the weights of rows `rows` (a slice) of packed [out, in // 2].

    scales, zero_points: group_operand triples of the whole layer (zero_points None for none); width:
    columns per group. Each weight rounded once, bit for bit reference.dequantize.
    """
    assert packed.is_contiguous() and out.is_contiguous() and out.shape == (rows.stop - rows.start, 2 * packed.shape[1])
    s, s_row, s_group = scales
    z, z_row, z_group = zero_points if zero_points is not None else (None, 0, 0)
    at = lambda t, row_stride: t.data_ptr() + rows.start * row_stride * t.element_size()  # noqa: E731  row `start`
    library().int4_dequantize(at(packed, packed.shape[1]), out.shape[0], packed.shape[1], at(s, s_row), s_row,
                              s_group, None if z is None else at(z, z_row), z_row, z_group, width, KINDS[out.dtype],
                              out.data_ptr())


def empty_output(shape, dtype):
    """torch.empty(shape, dtype) on the CPU, on transparent huge pages where Linux offers them.

    A new [out, in] result is first written page by page: 4 KiB pages fault in one by one (on a VM,
    about 20 ms for 32 MiB); 2 MiB pages fault 512 times less often. Only a hint: where the kernel
    does not take it, the tensor is the same, on small pages.
    """
    out = torch.empty(shape, dtype=dtype)
    nbytes = out.numel() * out.element_size()
    if nbytes >= HUGE_PAGE_MIN_BYTES and unavailable_reason() is None:
        library().int4_advise_huge_pages(out.data_ptr(), nbytes)
    return out
