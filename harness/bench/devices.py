"""What a run ran on: host, versions, git state, and the peaks its GB/s and TFLOP/s are measured against.

PEAKS holds vendor datasheet figures for known GPUs; a CPU gets a copy bandwidth
measured here (labelled as measured in `peak_source`) and no compute peak.
The bytes-moved floor (harness.bench.honesty) divides by `ceiling_gbps`, a bandwidth no call can beat:
the datasheet peak on CUDA; on a CPU CPU_CEILING_FACTOR times the measured copy bandwidth. `cache_bytes`
is what a warm cache may hold of a call's inputs: the L2 a CUDA device reports, the data caches of
every CPU in sysfs.
"""
import importlib.metadata
import math
import platform
import re
import socket
import subprocess
import time
from pathlib import Path

import torch

# A word in torch.cuda.get_device_name -> (memory bandwidth GB/s, dense fp16/bf16 tensor-core TFLOP/s).
# Vendor datasheets, without sparsity. First match wins: more specific names first.
PEAKS = {
    "H100 PCIe": (2000.0, 756.0),
    "H100 NVL": (3900.0, 835.0),
    "H100": (3350.0, 989.0),  # SXM5, reported as "NVIDIA H100 80GB HBM3"
    "H200": (4800.0, 989.0),  # SXM, 141 GB HBM3e
    "A100-SXM4-80GB": (2039.0, 312.0),
    "A100 80GB PCIe": (1935.0, 312.0),
    "A100": (1555.0, 312.0),  # the 40 GB parts
    "L40S": (864.0, 362.0),
    "L4": (300.0, 121.0),
    "V100": (900.0, 125.0),  # SXM2
}

CPU_COPY_BYTES = 256 << 20  # large against any CPU cache, so the copy streams from memory
# A copy counts 2 bytes per byte copied but the memory also serves the write-allocate read of the
# destination (3), and one copy under other processes' load may reach half of what the memory gives a
# quiet machine: the measured figure times 4 is a ceiling, not an estimate.
CPU_CEILING_FACTOR = 4
CPU_CACHES = Path("/sys/devices/system/cpu")


def gpu_peaks(device_name):
    """(GB/s, TFLOP/s, source) for a CUDA device name; NaNs and 'unknown device' when not in PEAKS."""
    for name, (gbps, tflops) in PEAKS.items():
        if re.search(rf"\b{re.escape(name)}\b", device_name):  # whole words: "L4" is not "L40S"
            return gbps, tflops, f"datasheet: {name} in int4_lora_harness.bench.devices.PEAKS"
    return math.nan, math.nan, f"unknown device {device_name!r}: not in int4_lora_harness.bench.devices.PEAKS"


def measure_cpu_bandwidth(nbytes=CPU_COPY_BYTES, repeats=5):
    """GB/s of the best of `repeats` torch copies of `nbytes`, counting bytes read and written."""
    src = torch.ones(nbytes, dtype=torch.uint8)
    dst = torch.empty_like(src)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return 2 * nbytes / best / 1e9


def cpu_cache_bytes(root=CPU_CACHES):
    """Bytes of every data and unified cache of every CPU under `root` (sysfs), each shared cache counted once;
    0 where sysfs does not say."""
    caches = {}
    for index in root.glob("cpu[0-9]*/cache/index[0-9]*"):
        try:
            kind, level, shared, size = ((index / name).read_text().strip()
                                         for name in ("type", "level", "shared_cpu_list", "size"))
        except OSError:
            continue
        if kind != "Instruction":
            caches[(level, kind, shared)] = int(size.rstrip("KMG")) << {"K": 10, "M": 20, "G": 30}.get(size[-1], 0)
    return sum(caches.values())


def cpu_name():
    """The CPU's model name from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else (platform.processor() or platform.machine())


def cpu_dequantizer():
    """How the torch backend dequantizes CPU tensors here: the C kernel, or the torch ops (and why)."""
    from int4_lora_harness.kernels import native  # here: the report reads this module and runs no kernel
    why = native.unavailable_reason()
    return "C dequantizer" if why is None else f"torch-ops dequantizer: {why}"


def package_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def describe(device):
    """Row fields describing `device` ('cpu' | 'cuda'): host, device_name, versions, peaks and their source, the
    bandwidth ceiling and cache size behind the bytes-moved floor."""
    if device == "cuda":
        device_name = torch.cuda.get_device_name()
        peak_gbps, peak_tflops, peak_source = gpu_peaks(device_name)
        ceiling_gbps, cache_bytes = peak_gbps, l2_cache_bytes()
    else:
        device_name = f"{cpu_name()} ({torch.get_num_threads()} threads, {cpu_dequantizer()})"
        peak_gbps, peak_tflops = measure_cpu_bandwidth(), math.nan
        peak_source = (f"measured: best of 5 torch copies of {CPU_COPY_BYTES >> 20} MiB (read + write); "
                       f"compute peak not measured; ceiling {CPU_CEILING_FACTOR}x the copy")
        ceiling_gbps, cache_bytes = CPU_CEILING_FACTOR * peak_gbps, cpu_cache_bytes()
    return dict(host=socket.gethostname(), device_name=device_name, torch_version=torch.__version__,
                triton_version=package_version("triton"), peak_gbps=peak_gbps, peak_tflops=peak_tflops,
                peak_source=peak_source, ceiling_gbps=ceiling_gbps, cache_bytes=cache_bytes)


def l2_cache_bytes():
    """The current CUDA device's L2 size in bytes (0 if torch does not report it)."""
    return getattr(torch.cuda.get_device_properties(torch.cuda.current_device()), "L2_cache_size", 0)


def git_state(folder=Path(__file__).parent):
    """(HEAD commit, whether the work tree has changes) of the checkout at `folder`; ('unknown', None) outside git."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, check=True).stdout.strip()
    try:
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain"))
    except (OSError, subprocess.CalledProcessError):
        return "unknown", None
