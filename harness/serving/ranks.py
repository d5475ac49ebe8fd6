"""The judge's side of the tp rank processes (serving.rank runs in them): start them, ask them, judge how they end.

RankPool starts tp processes `python -m int4_lora_harness.serving.rank`, each in a new session with a socket of
its own and the candidate's environment (verify.executor.candidate_env); they meet on loopback and load the
TARGET themselves, so the judge never imports it. Every rank process is the candidate's: it can patch anything
in it and send anything. So everything between judge and ranks is harness.verify.wire's format (a JSON header,
then raw bytes) and nothing is deserialized as an object:
  to a rank     a JSON header; a case's arrays (wire.pack) lie in a sealed memfd sent beside it
                (harness.verify.region), so a rank that stops reading cannot block the judge
  from a rank   a JSON header and the raw bytes of its results; the judge reads only arrays of the dtypes,
                shapes and count that reply may hold (`Expected`: [M, out / tp] or [M, out] per style, and on
                rank 0 the combined output), checked before anything is allocated. A reply that breaks the
                format ends its rank as 'crashed'.
Limits are the candidate's CPU progress (harness.verify.limits.Watch on each rank's process tree):
  hung   no rank still owing a reply made progress for `timeout` s (a rank that waits in a collective for a
         peer uses no CPU; a busy machine slows the ranks, it does not stop them)
  slow   a rank used more CPU seconds on one case than its budget (timeout + max_slowdown x a dense fp32
         matmul of the case's calls)
Once a rank raised or died, the others have GRACE_S s of no progress to leave the case. A rank that raises,
hangs, passes its budget, dies or breaks the format becomes a RankFailure with a kind and a line per rank; where
a rank did not answer, every rank's process tree is killed and a fresh group starts with the next case. close()
(also on KeyboardInterrupt) kills each rank's process tree; the ranks die with the judge (PR_SET_PDEATHSIG).
"""
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import torch

from int4_lora_harness.serving.cases import case_to_wire
from int4_lora_harness.serving.replies import Expected, read_case, read_plain, text
from int4_lora_harness.verify import limits, wire
from int4_lora_harness.verify.executor import (EXIT_GRACE_S, IMPORT_BUDGET_S, IMPORT_STALL_S, candidate_env,
                                                 exit_words, readable_paths)
from int4_lora_harness.verify.output import CandidateOutput
from int4_lora_harness.verify.region import Region
from int4_lora_harness.verify.targets import UsageError

GRACE_S = 3.0  # after one rank raised or died: how long the others may make no progress before they are killed
STEPS = ("first", "again", "rewritten")  # a case's calls, in order (serving.rank)


class RankFailure(Exception):
    """The candidate did not return on every rank: kind 'raised' | 'hung' | 'slow' | 'crashed'; ranks: a line per
    rank. fatal: not worth shrinking (the group was killed, or the ranks did not fail alike)."""

    def __init__(self, kind, message, ranks, fatal):
        super().__init__(f"{kind}: {message}")
        self.kind, self.message, self.ranks, self.fatal = kind, message, ranks, fatal


def free_port():
    """A TCP port on loopback that nothing listens on now (the rendezvous of the next group)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend_for(device, tp):
    """'nccl' on CUDA when every rank has a GPU of its own, else 'gloo' (one GPU cannot hold two NCCL ranks)."""
    return "nccl" if device == "cuda" and torch.cuda.device_count() >= tp else "gloo"


def _exited(process):
    """Whether a rank's process has ended, without reaping it (its pid stays its own until kill_tree)."""
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


class _Wait:
    """Every rank's reply to one message, or how each rank that did not reply ended (see the module docstring)."""

    def __init__(self, pool, doing, stall_s, budget_s, expected, read):
        self.pool, self.doing, self.budget_s, self.expected, self.read = pool, doing, budget_s, expected, read
        self.pending = set(range(pool.tp))
        self.replies, self.lost, self.progress, self.limit, self.graced = {}, {}, {}, None, False
        self.stalls = {rank: stall_s for rank in self.pending}
        self.watches = {r: limits.Watch(p.pid, stall_s, budget_s, doing) for r, p in enumerate(pool.processes)}
        self.checked = time.monotonic()

    def run(self):
        try:
            while self.pending:
                socks = {self.pool.socks[rank]: rank for rank in self.pending}
                for sock in select.select(list(socks), [], [], limits.POLL_S)[0]:
                    if socks[sock] in self.pending:
                        self._read(socks[sock])
                self._reap()
                if time.monotonic() - self.checked >= limits.POLL_S:
                    self._check()
        except limits.LimitPassed:
            pass  # self.limit says which, and the ranks still pending are killed by the caller
        return self

    def _check(self):
        """Every pending rank's Watch: LimitPassed when one is slow, or when none made progress (all hung)."""
        self.checked, hung = time.monotonic(), []
        for rank in sorted(self.pending):
            try:
                self.watches[rank]()
            except limits.LimitPassed as passed:
                if passed.kind == "slow":
                    self.limit = dict(kind="slow", rank=rank, message=passed.message)
                    raise
                hung.append(passed)
        if self.pending and len(hung) == len(self.pending):
            self.limit = dict(kind="hung", rank=None, message=hung[0].message)
            raise hung[0]

    def _read(self, rank):
        sock = self.pool.socks[rank]
        try:
            header, arrays, _ = wire.receive(sock, self.expected.accept(rank), self._check)
            if header.get("status") == "returned":
                return self._note(rank, header)
            reply = self.read(rank, header, arrays)
        except wire.WireError as error:
            return self._lose(rank, f"broke the wire format while {self.doing}: {error} (killed)")
        except (EOFError, OSError):
            return self._lose(rank, None)
        self.replies[rank] = reply
        self.pending.discard(rank)
        if reply["status"] == "raised":
            self._grace()

    def _note(self, rank, header):
        """A progress note: the rank returned from its next call (the final reply is still to come)."""
        done = STEPS.index(self.progress[rank]) + 1 if rank in self.progress else 0
        if done >= self.expected.steps or header.get("step") != STEPS[done] or header["arrays"]:
            raise wire.WireError(f"sent a progress note for {text(header.get('step'), 40)!r} after "
                                 f"{done} of {self.expected.steps} calls")
        self.progress[rank] = STEPS[done]

    def _reap(self):
        """Ranks whose process ended with nothing left to read are lost."""
        for rank in sorted(self.pending):
            if _exited(self.pool.processes[rank]) and not select.select([self.pool.socks[rank]], [], [], 0)[0]:
                self._lose(rank, None)

    def _lose(self, rank, why):
        """Kill `rank`'s process tree; `why` it is lost (None: how its process ended)."""
        process, end = self.pool.processes[rank], time.monotonic() + EXIT_GRACE_S
        while why is None and not _exited(process) and time.monotonic() < end:  # how it ends is a note, not a verdict
            time.sleep(0.02)
        ended = _exited(process)
        code = limits.kill_tree(process)
        self.lost[rank] = why or (f"the rank's process {exit_words(code)}" if ended else
                                  "closed its connection to the judge (killed)")
        self.pending.discard(rank)
        self._grace()

    def _grace(self):
        """After a rank raised or died: the others have GRACE_S s of no progress to leave the case."""
        if not self.graced:
            self.graced = True
            for rank in self.pending:
                self.stalls[rank] = min(self.stalls[rank], GRACE_S)
                self.watches[rank] = limits.Watch(self.pool.processes[rank].pid, self.stalls[rank], self.budget_s,
                                                  self.doing)

    def lines(self):
        """dict(rank, passed, message) for every rank of a message not every rank answered well."""
        lines = []
        for rank in range(self.pool.tp):
            reply = self.replies.get(rank)
            if rank in self.lost:
                message = self.lost[rank]
            elif reply is None and self.limit["rank"] == rank:
                message = f"{self.limit['message']} (killed)"
            elif reply is None and rank in self.progress:
                message = f"returned from its {self.progress[rank]} call, then waited for the other ranks (killed)"
            elif reply is None:
                message = f"no progress for {self.stalls[rank]:g} s: still in its candidate call (killed)"
            elif reply["status"] == "raised":
                message = f"raised in its {reply['step']} call: {reply['message']}"
            else:
                message = reply["message"] or "returned"
            lines.append(dict(rank=rank, passed=reply is not None and reply["status"] == "ok", message=message))
        return lines


class RankPool:
    """tp rank processes and their process group, started on first use and after a rank hung or died."""

    def __init__(self, tp, device="cpu", timeout=60.0, max_slowdown=limits.MAX_SLOWDOWN, target=""):
        if tp < 1:
            raise ValueError(f"tp must be >= 1, got {tp}")
        self.tp, self.device, self.timeout, self.max_slowdown = tp, device, timeout, max_slowdown
        self.read = readable_paths(target)  # what the ranks may read: target's folder (harness.verify.sandbox)
        self.processes, self.socks, self.outputs, self.loaded, self.scratch = [], [], [], set(), None

    def _start(self, attempts=2):
        """Start the ranks and wait for their process group; a second rendezvous port if the first was taken."""
        for _ in range(attempts):
            self._spawn(f"tcp://127.0.0.1:{free_port()}", backend_for(self.device, self.tp))
            wait = _Wait(self, "starting the process group", max(self.timeout, IMPORT_STALL_S), IMPORT_BUDGET_S,
                         Expected(), read_plain("ready")).run()
            if not (wait.pending or wait.lost):
                return
            self.close()
        raise RankFailure("crashed" if wait.lost else wait.limit["kind"], f"the {self.tp} ranks did not start a "
                          "process group", wait.lines(), True)

    def _spawn(self, init_method, backend):
        self.scratch = tempfile.mkdtemp(prefix="int4-ranks-")
        env = candidate_env(self.scratch)
        for rank in range(self.tp):
            mine, theirs = socket.socketpair()
            config = dict(rank=rank, tp=self.tp, init_method=init_method, backend=backend, device=self.device,
                          timeout=self.timeout, judge_pid=os.getpid(), sys_path=sys.path, own_pids=backend == "gloo",
                          read=self.read, write=[self.scratch])
            process = subprocess.Popen(
                [sys.executable, "-m", "int4_lora_harness.serving.rank", str(theirs.fileno()), json.dumps(config)],
                pass_fds=[theirs.fileno()], start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, env=env)
            theirs.close()
            mine.settimeout(limits.POLL_S)
            self.processes.append(process)
            self.socks.append(mine)
            self.outputs.append(CandidateOutput(process.stdout))

    def _send(self, header, payload):
        """`header` to every rank; `payload` (a tree for wire.pack) as JSON, its arrays in a sealed memfd."""
        region = None
        if payload is not None:
            tree, arrays = wire.pack(payload)
            region = Region({str(i): torch.from_numpy(a) for i, (_, a) in enumerate(arrays)})
            header = dict(header, payload=tree, layout=region.layout)
        try:
            for sock in self.socks:
                fds = [region.descriptor()] if region is not None else []
                try:
                    wire.send(sock, header, fds=fds)
                except OSError:
                    pass  # the rank is gone: the wait says how
                finally:
                    for fd in fds:
                        os.close(fd)
        finally:
            if region is not None:
                region.close()

    def _ask(self, header, doing, expected, read, payload=None, stall_s=None, budget_s=None):
        """Every rank's reply (in rank order) to one message, or RankFailure / UsageError."""
        try:
            if not self.processes:
                self._start()
            self._send(header, payload)
            wait = _Wait(self, doing, stall_s or self.timeout, budget_s or self.timeout, expected, read).run()
        except BaseException:  # KeyboardInterrupt (or a failure half way): no rank outlives it
            self.close()
            raise
        return self._verdict(wait)

    def _verdict(self, wait):
        """The replies in rank order where every rank answered and none raised; else UsageError or RankFailure."""
        replies = wait.replies
        statuses = [replies[rank]["status"] for rank in sorted(replies)]
        usage = [r["message"] for r in replies.values() if r["status"] == "usage"]
        raised = statuses.count("raised")
        unblamed = "aborted" in statuses and "wrong" not in statuses  # ranks left the case, and none says why
        if not (wait.pending or wait.lost or raised or usage or unblamed):
            return [replies[rank] for rank in range(self.tp)]
        fatal = bool(wait.pending or wait.lost or unblamed)  # a group that cannot be trusted: start a new one
        if fatal:
            self.close()
        if usage:
            raise UsageError(usage[0])
        lines = wait.lines()
        kind = "raised" if raised else "crashed" if wait.lost or unblamed else wait.limit["kind"]
        blamed = [line for line in lines if not line["passed"] and "left the case" not in line["message"]
                  and "waited for the other ranks" not in line["message"]]
        first = (blamed or lines)[0]
        raise RankFailure(kind, f"rank {first['rank']}: {first['message']}", lines, fatal or raised < self.tp)

    def _load(self, target):
        """Every rank imports TARGET (once per group), with the time an import may take."""
        if target not in self.loaded:
            self._ask(dict(verb="load", target=target), "importing the TARGET", Expected(),
                      read_plain("ok", "usage", "raised"), stall_s=max(self.timeout, IMPORT_STALL_S),
                      budget_s=IMPORT_BUDGET_S)
            self.loaded.add(target)

    def _budget(self, case, calls):
        """CPU seconds a rank may use on `calls` calls of `case` (timeout + max_slowdown x a dense matmul)."""
        work = limits.work((case.x.shape[0], sum(case.output_slices)), {"x": case.x})
        return self.timeout + self.max_slowdown * calls * work / limits.dense_rate()

    def run_case(self, target, style, case):
        """Every rank's reply to one LayerCase (serving.rank): dict(status, rank, step, message, calls, modified)."""
        self._load(target)
        rewritten = case.rewritten() if case.rewrite is not None else None
        stacks = None if rewritten is None else dict(lora_a_stacked=rewritten.lora_a_stacked,
                                                     lora_b_stacked=rewritten.lora_b_stacked)
        steps = 2 if rewritten is None else 3
        expected = Expected.case(case, style, self.tp, steps)
        return self._ask(dict(verb="case", target=target, style=style), "calling the candidate", expected,
                         read_case(expected), dict(case=case_to_wire(case), rewritten=stacks),
                         budget_s=self._budget(case, steps))

    def refuse(self, target, style, case):
        """Every rank's reply to a layer the contract refuses: dict(raised=ValueError or not, message)."""
        self._load(target)
        return self._ask(dict(verb="refuse", target=target, style=style), "calling the candidate", Expected(),
                         read_plain("ok", "usage"), dict(case=case_to_wire(case)), budget_s=self._budget(case, 1))

    def close(self):
        """Kill every rank's process tree (how a rank ends after its last case is not judged)."""
        for process in self.processes:
            limits.kill_tree(process)
        for sock, output in zip(self.socks, self.outputs):
            sock.close()
            output.close()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        self.processes, self.socks, self.outputs, self.loaded, self.scratch = [], [], [], set(), None
