"""Hostile layers (SPEC §7): rank processes that attack the judge through their replies, or test its limits.

Each is a TARGET planted.layer_forgers:NAME, imported only in the rank processes (the judge never imports it).
The forgers are WRONG (they return zeros), so any PASS they get is forged. Paths come from the environment
variable HOSTILE_MARKER (a file under the test's tmp_path): the file a judge that ran their code would create,
or where they write the pids of what they started.
"""
import json
import os
import pickle
import struct
import subprocess
import sys
import time

import torch

import int4_lora_harness.verify.child as child
from int4_lora_harness.kernels import torch_layer as T
from int4_lora_harness.verify import wire

MARKER = os.environ.get("HOSTILE_MARKER", os.devnull)


def _zeros_like_result(x, packed_weights, tp_size, style):
    """Zeros of the shape and dtype a rank must return: [M, out] (row) or [M, out / tp]."""
    out = packed_weights.shape[0] if style == "row" else packed_weights.shape[0] // tp_size
    return torch.zeros(x.shape[0], out, dtype=x.dtype, device=x.device)


# ---- code in the judge -----------------------------------------------------------------------------

class RunsCode:
    """Unpickling it creates the marker file (a judge that unpickles a rank's reply runs the rank's code)."""

    def __reduce__(self):
        return (open, (MARKER, "w"))


class EvilInt(int):
    def __reduce__(self):
        return (open, (MARKER, "w"))


class ForgedTensor(torch.Tensor):
    """A result whose pickling creates the marker file, and whose .shape holds ints whose pickling does too."""

    def __reduce_ex__(self, protocol):
        return (open, (MARKER, "w"))

    @property
    def shape(self):
        return [EvilInt(n) for n in torch.Tensor.as_subclass(self, torch.Tensor).shape]


_patched = []


def _let_the_subclass_into_every_reply():
    """Patch this rank's harness: results keep their subclass (no plain copy), and every dict it pickles carries
    RunsCode, so a judge that unpickles anything of this process runs code."""
    child.plain_data = lambda out: (out, None)
    real = pickle.dumps
    pickle.dumps = lambda obj, *args, **kwargs: real(dict(obj, forged=RunsCode()) if isinstance(obj, dict) else obj,
                                                     *args, **kwargs)


def subclass_runs_code(x, packed_weights, scales, zero_points, group_size, lora_a_stacked, lora_b_stacked,
                       output_slices, lora_indices, scaling, bias, *, tp_rank=0, tp_size=1, style="column"):
    """Zeros in a ForgedTensor, from a rank whose harness it patched to send it (and RunsCode) as they are."""
    if not _patched:
        _patched.append(1)
        _let_the_subclass_into_every_reply()
    return _zeros_like_result(x, packed_weights, tp_size, style).as_subclass(ForgedTensor)


def claims_a_huge_result(x, packed_weights, scales, zero_points, group_size, lora_a_stacked, lora_b_stacked,
                         output_slices, lora_indices, scaling, bias, *, tp_rank=0, tp_size=1, style="column"):
    """Zeros; and this rank's wire.send patched: a reply with arrays says it holds one float64 [2^20, 2^20] (8 TiB)
    instead, and sends nothing after the header."""
    def send(sock, header, arrays=(), fds=()):
        if not arrays:
            return real(sock, header, arrays, fds)
        text = json.dumps(dict(header, arrays=[dict(dtype="float64", shape=[1 << 20, 1 << 20])])).encode()
        sock.sendall(struct.pack("<Q", len(text)) + text)
    real = wire.send if not hasattr(wire.send, "forged") else wire.send.forged
    send.forged = real
    wire.send = send
    return _zeros_like_result(x, packed_weights, tp_size, style)


# ---- processes that outlive their rank ---------------------------------------------------------------

def starts_a_process(x, packed_weights, scales, zero_points, group_size, lora_a_stacked, lora_b_stacked,
                     output_slices, lora_indices, scaling, bias, *, tp_rank=0, tp_size=1, style="column"):
    """Zeros; on its first call, starts a process in a session of its own (out of its rank's process group) that
    sleeps ten minutes, its command line tagged with HOSTILE_MARKER's name, and says so on its output once it runs
    (the walls let a rank write nothing outside its scratch folder, so the test finds it by its tag in /proc)."""
    global _started
    if not _started:
        _started = True
        tag = os.path.basename(MARKER)
        sleeper = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep(600)  # {tag}"],
                                   start_new_session=True)
        print(f"sleeper started: {tag} {sleeper.pid}", flush=True)
    return _zeros_like_result(x, packed_weights, tp_size, style)


_started = False


# ---- limits by CPU progress --------------------------------------------------------------------------

def spins_on_rank_one(*args, tp_rank=0, tp_size=1, style="column", **kwargs):
    """Rank 1 computes forever (busy, never idle); the others compute."""
    while tp_rank == 1:
        sum(range(10_000))
    return T.layer(*args, **kwargs, tp_rank=tp_rank, tp_size=tp_size, style=style)


SLOW_S = 3.0
_slowed = []


def progresses_slowly_on_rank_one(*args, tp_rank=0, tp_size=1, style="column", **kwargs):
    """Correct; rank 1's first call takes SLOW_S seconds of wall time at about a tenth of a core, as on a machine
    too busy to give it more: slow, but never stopped."""
    if tp_rank == 1 and not _slowed:
        _slowed.append(1)
        end = time.monotonic() + SLOW_S
        while time.monotonic() < end:
            spin_end = time.thread_time() + 0.01
            while time.thread_time() < spin_end:
                pass
            time.sleep(0.09)
    return T.layer(*args, **kwargs, tp_rank=tp_rank, tp_size=tp_size, style=style)
