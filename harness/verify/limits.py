"""Time limits that measure the candidate, not the machine: its CPU time, never the wall clock alone.

A wait for the candidate's process ends in one of two ways besides an answer:
  hung  its process tree made no progress: over a window of `stall_s` seconds (--timeout) its CPU time
        plus the time its threads spent ready to run but waiting for a core (the kernel's run-queue delay)
        grew by less than PROGRESS_SHARE of that window. A busy machine slows a process, it does not stop
        it: at load 30 on 2 cores a CPU-bound process at nice 0 still gets about 7 % of a core, but one at
        nice 15 (Ray's workers, `nice int4-verify`) next to busy processes at nice 0 gets less than 1 %; it is
        waiting for a core all that time, which is not a hang.
  slow  it used more CPU seconds than the case's budget: stall_s + max_slowdown x what a dense fp32
        matmul of the case's work costs on this machine, calibrated once per judge process on NumPy (in
        CPU seconds too, so the calibration does not depend on the load either).
The process tree is the candidate's process and every process under it, read from /proc (CPU time of
children that ended and were waited for included; run-queue delay from each thread's schedstat, counted
where the kernel keeps it).
"""
import os
import signal
import time
from pathlib import Path

POLL_S = 0.25  # how often a waiting judge wakes (an answer is read within this)
SCAN_S = 1.0  # how often it reads the candidate's CPU time from /proc (a scan of every process: not free at load)
PROGRESS_SHARE = 0.01  # less than 1 % of a core over a whole window is no progress
MAX_SLOWDOWN = 1000.0  # default: a call may take 1000x a dense fp32 matmul of its work, in CPU seconds
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_rate = None  # flops per CPU second of a dense fp32 matmul here, measured on first use
# OpenMP's threads sleep between parallel regions instead of spinning (libgomp spins a while by default, and torch's
# CPU ops run on it). The judge and the candidate take turns on the same cores: a pool left spinning by one slows
# the other's turn and bills it CPU seconds it did not use (big K cases here: 2.7 s -> 1.5 s of wall with both
# passive). Set in the candidate's environment and in int4-verify's own before torch loads; a value the user set
# is kept. Not under Triton's interpreter (TRITON_INTERPRET=1): it runs a kernel as a stream of tiny ops, each of
# which would wake the sleeping threads (tests/test_backends.py's interpreter tests: 157 s -> 287 s passive).
THREAD_WAIT = {"OMP_WAIT_POLICY": "PASSIVE"}


def passive_threads(env):
    """`env` (a mutable mapping) with THREAD_WAIT's variables where it has none of its own (none under Triton's
    interpreter)."""
    if env.get("TRITON_INTERPRET") == "1":
        return env
    for name, value in THREAD_WAIT.items():
        env.setdefault(name, value)
    return env


_interrupts = []  # the signals `interrupt` turned into KeyboardInterrupt in this process, until forget_interrupts()


def interrupt(signum, frame=None):
    """A signal handler (SIGINT, SIGTERM): KeyboardInterrupt now, and again at every later Watch. Python prints and
    drops an exception raised while a garbage collector callback or a __del__ runs (Hypothesis keeps one on gc), so
    the one raised here can be lost; the wait for the candidate then still ends."""
    _interrupts.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def forget_interrupts():
    """The interrupts so far handled: Watch raises none of them again."""
    _interrupts.clear()


class LimitPassed(Exception):
    """The candidate passed a limit: kind 'hung' or 'slow', and a message with the numbers and the flag."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind, self.message = kind, message


def _stat(pid):
    """(ppid, own CPU seconds, waited-for children's CPU seconds) of a process, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # the name in parentheses may hold spaces
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS, \
        (int(fields[13]) + int(fields[14])) / CLOCK_TICKS


def tree(root):
    """{pid: (ppid, own CPU s, children's CPU s)} of `root` and every live process under it."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (s := _stat(int(entry))) is not None:
            stats[int(entry)] = s
    members, frontier = {}, [root]
    while frontier:
        pid = frontier.pop()
        if pid in stats and pid not in members:
            members[pid] = stats[pid]
            frontier += [p for p, s in stats.items() if s[0] == pid]
    return members


def cpu_seconds(root, members=None):
    """CPU seconds used so far by `root`'s process tree (`members`: its tree(root), read here if not given; 0.0 once
    it is gone)."""
    members = tree(root) if members is None else members
    return sum(own for _, own, _ in members.values()) + (members[root][2] if root in members else 0.0)


def run_delays(pids):
    """{(pid, tid): ns} for each thread of the processes `pids`: how long it has been ready to run but waiting for a
    core (the second field of /proc/PID/task/TID/schedstat; a thread or kernel without one is left out)."""
    delays = {}
    for pid in pids:
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in threads:
            try:
                delays[pid, tid] = int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return delays


def dense_rate():
    """Flops per CPU second of a 256 x 512 x 512 fp32 matmul in NumPy here (measured once, in CPU time)."""
    global _rate
    if _rate is None:
        import numpy as np
        a, b = np.ones((256, 512), np.float32), np.ones((512, 512), np.float32)
        runs, start = 0, time.process_time()
        while (spent := time.process_time() - start) < 0.05 or runs < 3:
            a @ b
            runs += 1
        _rate = 2 * 256 * 512 * 512 * runs / max(spent, 1e-6)
    return _rate


def work(expect_shape, inputs):
    """Flops a dense kernel spends on one call: 2 M N K for a linear (result [M, N], x [M, K]); for a
    dequantizer (result [N, K]) as for a 16-row matmul of those weights."""
    if "x" in inputs and len(expect_shape) == 2:
        return 2.0 * expect_shape[0] * expect_shape[1] * inputs["x"].shape[-1]
    count = 1
    for n in expect_shape:
        count *= n
    return 2.0 * 16 * count


class Watch:
    """One wait for the candidate: called whenever POLL_S passes with no answer, it raises LimitPassed. It reads
    /proc only from its first call on (a quick answer costs no scan): the first POLL_S is not counted; then at
    most once per SCAN_S. Progress is CPU time plus time spent waiting for a core; a thread's waiting counts from
    the first scan that sees it (its growth since, summed, so a thread that ends takes none of it back)."""

    def __init__(self, pid, stall_s, budget_s, doing):
        self.pid, self.stall_s, self.budget_s, self.doing = pid, stall_s, budget_s, doing
        self.start_cpu, self.scanned, self.delays, self.waited = None, None, {}, 0.0

    def __call__(self):
        if _interrupts:
            raise KeyboardInterrupt(f"signal {_interrupts[-1]} (again: the first was lost)")
        now = time.monotonic()
        if self.scanned is not None and now - self.scanned < SCAN_S:
            return
        members = tree(self.pid)
        self.scanned, used, delays = now, cpu_seconds(self.pid, members), run_delays(members)
        self.waited += sum(max(0, ns - self.delays.get(t, ns)) for t, ns in delays.items()) / 1e9
        self.delays = delays
        if self.start_cpu is None:
            self.start_cpu, self.window_cpu, self.window_waited = used, used, self.waited
            self.window_start = now
        if used - self.start_cpu > self.budget_s:
            raise LimitPassed("slow", f"the call used {used - self.start_cpu:.1f} CPU s while {self.doing}, more "
                                      f"than its budget of {self.budget_s:.1f} CPU s (--timeout plus --max-slowdown "
                                      "times a dense fp32 matmul of the same work here): raise --max-slowdown if the "
                                      "kernel is meant to be this slow")
        if now - self.window_start >= self.stall_s:
            ran, waited = used - self.window_cpu, self.waited - self.window_waited
            if ran + waited < PROGRESS_SHARE * (now - self.window_start):
                raise LimitPassed("hung", f"no progress for {now - self.window_start:.0f} s while {self.doing}: the "
                                          f"candidate's processes used {ran:.2f} CPU s in that time and waited "
                                          f"{waited:.2f} s for a core (--timeout {self.stall_s:g} s of no progress "
                                          "ends a call)")
            self.window_cpu, self.window_waited, self.window_start = used, self.waited, now


def kill_tree(process):
    """SIGKILL a candidate's process (a subprocess.Popen), every process under it and its process group; its exit
    code. The executor and the serving layer's ranks end their processes here."""
    if process.returncode is not None:  # reaped already (killed before): its pid may be another process's now
        return process.returncode
    for _ in range(50):
        members = tree(process.pid)
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except OSError:
            pass
        if not members or process.poll() is not None and len(members) <= 1:
            break
        time.sleep(0.02)
    return process.wait()
