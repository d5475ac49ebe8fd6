"""Hostile candidates that try to forge their verdict (issue: a candidate cannot forge its verdict).

Each is a TARGET planted.forgers:NAME, and each is WRONG (it returns zeros, or modifies its inputs), so any
PASS it gets is forged. The judge never imports this module: only the candidate's process does. Paths and
files to attack come from the environment variable HOSTILE_REPORT (the test's --report folder), as an
attacker would find them (in /proc/<judge>/cmdline, say).
"""
import os
import subprocess
import sys
import time

import torch

import int4_lora_harness.verify.child as child


def _zeros(packed_weights, output_dtype):
    return torch.zeros(packed_weights.shape[0], packed_weights.shape[1] * 2, dtype=output_dtype)


class EvilShape(int):
    def __reduce__(self):
        return (os.system, ("echo forged > /dev/null",))


class ForgedTensor(torch.Tensor):
    """A tensor subclass whose .shape, dtype and repr lie, with objects that run code when unpickled."""

    @property
    def shape(self):
        return [EvilShape(n) for n in torch.Tensor.as_subclass(self, torch.Tensor).shape]


def shape_runs_code(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Zeros in a subclass whose shape would run code in a judge that unpickles it."""
    return _zeros(packed_weights, output_dtype).as_subclass(ForgedTensor)


_calls = []


_first = {}


def _patch_the_child():
    """Make the child's bookkeeping lie, where it runs (the child runs as __main__): every call's reply carries the
    first result it sent for that shape, and the old child's digest and comparisons always agree."""
    for module in {child, sys.modules.get("__main__")}:
        real = getattr(module, "call_candidate", None)
        if real is None:
            continue

        def lying(function, kwargs, device, expect, real=real):
            reply, out = real(function, kwargs, device, expect)
            first = _first.setdefault(tuple(expect[1]), out)
            return reply, first if out is not None else out
        module.call_candidate = lying
        module.same_bits = lambda a, b: True  # the old child's comparisons, patched for good measure
        module.digest = lambda t: "0" * 64


def patches_the_child(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Right on its first call, zeros after; scribbles on its scales each call."""
    from planted.bugs import correct_dequantize_fp32_math
    if not _calls:
        _patch_the_child()
    _calls.append(1)
    if len(_calls) == 1:
        out = correct_dequantize_fp32_math(packed_weights, scales, zero_points, group_size, output_dtype)
    else:
        out = _zeros(packed_weights, output_dtype)
    scales.view(torch.int16)[..., :1] ^= 1  # one bit of the caller's scales
    return out


def _report():
    return os.environ.get("HOSTILE_REPORT", "")


FORGED = ('{"run_id": "2099-forged", "status": "complete", "exit_status": 0, "results": [{"candidate": "forged", '
          '"passed": true}]}')


def writes_a_verdict(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Zeros; and a complete PASS verdict written into the report folder, earlier verdicts deleted."""
    report = _report()
    for name in ("verify.json", "verify/2099-forged.json"):
        try:
            os.makedirs(os.path.join(report, "verify"), exist_ok=True)
            with open(os.path.join(report, name), "w") as f:
                f.write(FORGED)
        except OSError:
            pass
    try:
        for name in os.listdir(os.path.join(report, "verify")):
            os.unlink(os.path.join(report, "verify", name))
    except OSError:
        pass
    return _zeros(packed_weights, output_dtype)


REWRITER = """
import os, sys, time
os.setsid()
if os.fork():
    os._exit(0)
time.sleep(float(sys.argv[2]))
for name in ("verify.json",):
    try:
        open(os.path.join(sys.argv[1], name), "w").write(sys.argv[3])
    except OSError:
        pass
time.sleep(600)
"""


def detaches_a_rewriter(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Zeros; and a detached process (own session, double fork) that rewrites verify.json to PASS 3 s later and
    then lives on (its command line holds 'int4-hostile-rewriter')."""
    if not _calls:
        _calls.append(1)
        subprocess.Popen([sys.executable, "-c", REWRITER + "# int4-hostile-rewriter", _report(), "3", FORGED],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    return _zeros(packed_weights, output_dtype)


def holds_the_pipe(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Zeros; and a grandchild that keeps the candidate's stdout open for 90 s ('int4-hostile-holder')."""
    if not _calls:
        _calls.append(1)
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(90)  # int4-hostile-holder"],
                         start_new_session=True)
    return _zeros(packed_weights, output_dtype)


def ignores_sigterm_and_sleeps(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Ignores SIGTERM and SIGINT, then sleeps on every call (a run interrupted meanwhile must still end)."""
    import signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    time.sleep(600)


def returns_a_gibibyte(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """1 GiB of the wrong shape: the judge must refuse it by its header, never allocate it."""
    return torch.zeros(2**29, dtype=torch.float16)


def prints_a_fake_verdict(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Zeros; and the harness's own closing line printed, with escapes that would clear the line before it."""
    print("\x1b[2K\roverall: all 1 PASS; verdict written to reports/verify.json", flush=True)
    raise RuntimeError("boom\n\x1b[2K\roverall: all 1 PASS")


def poisons_the_caches(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Zeros; and a 'compiled' file left in every cache it may write, its paths listed in HOSTILE_REPORT/caches."""
    from int4_lora_harness.cbuild import cache_dir
    planted = []
    for folder in (str(cache_dir()), os.environ.get("TRITON_CACHE_DIR", ""), os.environ.get("CUDA_CACHE_PATH", ""),
                   os.path.expanduser("~/.cache/int4_lora_harness"), os.path.expanduser("~/.triton/cache")):
        try:
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, "gather-poisoned.so"), "w") as f:
                f.write("poison")
            planted.append(os.path.join(folder, "gather-poisoned.so"))
        except OSError:
            pass
    with open(os.path.join(_report(), "caches"), "a") as f:  # denied in the sandbox: the test then finds none
        f.write("\n".join(planted))
    return _zeros(packed_weights, output_dtype)
