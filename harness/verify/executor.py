"""Where a candidate runs: its own walled-in process by default, or this process (--in-process, debugging).

The judge never imports the TARGET. It starts `python -m int4_lora_harness.verify.child` in a new session
(the child then walls itself in: harness.verify.sandbox), shares each case's inputs through a sealed memfd
(harness.verify.region) and talks over a socket in harness.verify.wire's format: plain JSON and raw
bytes, sized against the result the judge expects before anything is allocated. Every check is the judge's,
on what it received or reads itself: the digest of each result, which inputs a call changed, whether an
earlier result changed. The candidate's output is printed escaped, each line marked as the candidate's.
Every way a candidate can end becomes a CandidateFailure with a kind:
  raised   an exception of any kind (SystemExit and KeyboardInterrupt included)
  hung     no progress: its processes stopped using CPU for --timeout seconds (harness.verify.limits)
  slow     past its CPU budget (--timeout + --max-slowdown x a dense matmul of the case's work)
  crashed  the process died (a signal, os._exit, a CUDA error that kills it), or broke the wire format
How the process ends after the last call is not judged: close() kills it and everything it started, and
says what kept it alive in `exit_note`.
A two-phase candidate (harness.verify.targets.TwoPhase) is prepared when the judge says so, in the header of
a call: on a case's first call, after each in-place update of a weight, and on each call on fresh tensors;
every other call only applies. The candidate's process keeps the prepared object; the judge decides.
"""
import hashlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import torch

from int4_lora_harness.verify import limits, scratch, wire
from int4_lora_harness.verify.output import CandidateOutput
from int4_lora_harness.verify.region import Region

IMPORT_STALL_S = 300.0  # importing a TARGET (torch, triton, a package's kernels) may wait on disk a while
IMPORT_BUDGET_S = 1800.0  # CPU seconds an import may take
EXIT_GRACE_S = 5.0  # after 'stop', how long the process may take to exit before it is killed (never a failure)


class CandidateFailure(Exception):
    """The candidate did not return: kind is 'raised', 'hung', 'slow' or 'crashed'."""

    def __init__(self, kind, message, exception=None, traceback=None):
        super().__init__(f"{kind}: {message}")
        self.kind, self.message, self.exception, self.traceback = kind, message, exception, traceback


class TargetRefused(Exception):
    """The TARGET could not be loaded in the child with an ordinary error (a usage error: exit 2)."""


def exit_words(exitcode):
    """'killed by SIGSEGV' or 'exited with status 3': how a process ended."""
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    if exitcode is not None and exitcode > 128:  # the warden of a PID namespace ends as 128 + its PID 1's signal
        try:
            return f"killed by {signal.Signals(exitcode - 128).name}"
        except ValueError:
            pass
    return f"exited with status {exitcode}"


def result_digest(dtype, shape, array):
    """SHA-256 of a result's dtype, shape and bytes, computed by the judge on what it received."""
    h = hashlib.sha256(f"{dtype} {list(shape)}".encode())
    h.update(memoryview(array.reshape(-1)).cast("B") if array.size else b"")
    return h.hexdigest()


def tensor_from_wire(dtype, array):
    """A CPU tensor of dtype name `dtype` from its wire carrier array (bf16 travels as its 16 bits)."""
    t = torch.from_numpy(array)
    target = getattr(torch, dtype)
    return t.view(target) if t.dtype != target else t


def candidate_env(scratch):
    """The candidate's environment: this one, with its temporary files, bytecode and every cache it builds (the C
    kernel's, Triton's, CUDA's JIT) kept in `scratch`, which is removed after the run: no candidate can leave a
    compiled file that the judge, or a later candidate, would load."""
    cache = os.path.join(scratch, "cache")
    return limits.passive_threads(dict(os.environ, TMPDIR=scratch, PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1",
                                       INT4_LORA_HARNESS_CACHE=cache, TRITON_CACHE_DIR=os.path.join(cache, "triton"),
                                       CUDA_CACHE_PATH=os.path.join(cache, "nv")))


def readable_paths(target):
    """What the candidate may read: the interpreter and its packages, system folders, the TARGET's folder."""
    import importlib.machinery
    import importlib.util
    cwd = os.getcwd()
    paths = ["/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/opt", "/proc", "/sys", "/run",
             sys.prefix, sys.base_prefix, sys.exec_prefix]
    paths += [p for p in sys.path if p and os.path.abspath(p) != cwd]
    for name in ("int4_lora_harness", "int4_lora_harness.verify", "int4_lora_harness.reference",
                 "int4_lora_harness.kernels"):  # where each lies, links resolved (Landlock sees real paths)
        spec = importlib.util.find_spec(name)
        paths += [os.path.realpath(p) for p in spec.submodule_search_locations or []] if spec else []
    module, _, _ = target.rpartition(":")
    if not module:
        pass
    elif module.endswith(".py"):
        paths.append(os.path.dirname(os.path.abspath(module)))
    else:
        spec = importlib.machinery.PathFinder.find_spec(module.split(".")[0], [p or cwd for p in sys.path] + [cwd])
        if spec is not None and spec.origin not in (None, "built-in", "frozen"):
            locations = list(spec.submodule_search_locations or [])
            paths.append(os.path.dirname(locations[0] if locations else spec.origin))
    return [p for p in paths if os.path.exists(p)]


def _no_arrays(metas):
    if metas:
        raise wire.WireError(f"sent {len(metas)} arrays with a message that holds none")


class Judge:
    """The verbs harness.verify.properties calls, the same wherever the candidate runs: `_ask(header, doing,
    fds)` (a subclass's) carries a message to the candidate and returns its reply with the arrays it sent."""

    device = "cpu"
    region, expect, held, work, calls = None, None, (), 0.0, 0
    transfer_s, transfer_bytes = 0.0, 0  # moving inputs to the candidate and results back (not judging)
    weights, two_phase, unprepared = (), False, True  # a two-phase candidate's weight names; prepared this case?

    def start_case(self, inputs, expect):
        """Share `inputs` ({name: CPU tensor or plain value}); `expect` = (dtype name, shape) of the result."""
        if self.region is not None:
            self.region.close()
        tensors = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        self.region, self.held, self.unprepared = self._share(tensors), [], True
        self.expect = (str(expect[0]).removeprefix("torch."), [int(n) for n in expect[1]])
        self.work = limits.work(self.expect[1], tensors)
        plain = {k: _plain_value(v) for k, v in inputs.items() if k not in tensors}
        self._ask(dict(verb="start_case", layout=self.region.layout, plain=plain), "receiving the inputs",
                  [self.region.descriptor()])

    def call(self, send_out=True, updates=None):
        """The reply of one call on the held inputs, those named in `updates` ({name: tensor}) first updated in
        place: the result's values where send_out, its digest (the judge's) always, the inputs it modified."""
        self.calls += 1
        start = time.perf_counter()
        for name, values in (updates or {}).items():
            self.region.update(name, values)
            self.transfer_bytes += values.numel() * values.element_size()
        self.transfer_s += time.perf_counter() - start
        prepare = self.unprepared or any(name in self.weights for name in updates or ())
        again = ", preparing again" if prepare and updates and self.two_phase else ""
        doing = f"updating {', '.join(updates)} in place{again} and calling the candidate" if updates else \
            "calling the candidate"
        header = dict(verb="call", expect=self.expect, updates=list(updates or ()), prepare=prepare)
        reply = self._result(self._ask(header, doing), send_out, self.region, prepare)
        self.unprepared = False
        if reply.get("digest") is not None and len(self.held) < 2:
            self.held.append(reply["digest"])
        return reply

    def call_fresh(self, send_out=False):
        """The reply of one call on new tensors (a new shared memory) holding the values last sent (a two-phase
        candidate prepared on them first)."""
        self.calls += 1
        fresh = self._share(self.region.sent)
        try:
            reply = self._ask(dict(verb="call_fresh", expect=self.expect, layout=fresh.layout, prepare=True),
                              "calling the candidate", [fresh.descriptor()])
            return self._result(reply, send_out, fresh, True)
        finally:
            fresh.close()

    def results_changed(self):
        """Indices of this case's earlier results whose bytes, re-read now, differ from what the judge got."""
        changed = []
        for index, then in enumerate(self.held):
            reply = self._ask(dict(verb="result", index=index), "re-reading earlier results")
            now = reply["arrays"][0] if reply["arrays"] else None
            if now is None or result_digest(self.expect[0], self.expect[1], now) != then:
                changed.append(index)
        return changed

    def _share(self, tensors):
        """A Region holding `tensors` for the candidate: its copy counts as transfer (both ways), not as judging."""
        start = time.perf_counter()
        region = Region(tensors)
        self.transfer_s += time.perf_counter() - start
        self.transfer_bytes += sum(t.numel() * t.element_size() for t in tensors.values())
        return region

    def _result(self, reply, send_out, region, prepared):
        """The reply as properties read it: out (a CPU tensor where send_out), digest, modified (the judge's), and
        whether a two-phase candidate was prepared in the call (`prepared`: the judge asked it to be)."""
        if reply.get("status") not in ("ok", "raised"):
            self._kill()
            raise CandidateFailure("crashed", f"the candidate's process answered {str(reply.get('status'))[:40]!r}")
        if reply["status"] == "raised":
            raise _failure(reply)
        arrays, out = reply.pop("arrays"), None
        shape = reply.get("shape")
        shape = [int(n) for n in shape] if isinstance(shape, list) and all(type(n) is int for n in shape) else None
        clean = dict(status="ok", type=_text(reply.get("type")), seconds=reply["seconds"], shape=shape,
                     dtype=_text(reply.get("dtype")) if shape is not None else None,
                     device=_text(reply.get("device")), subclass=reply.get("subclass") and _text(reply["subclass"]),
                     digest=None, out=None, modified=region.modified(),
                     aliases=[int(i) for i in reply.get("aliases") or [] if type(i) is int][:4]
                     if isinstance(reply.get("aliases"), list) else [], prepared=prepared and self.two_phase)
        clean["device_ok"] = clean["device"].split(":")[0] == torch.device(self.device).type
        if arrays:
            clean["digest"] = result_digest(self.expect[0], self.expect[1], arrays[0])
            out = tensor_from_wire(self.expect[0], arrays[0]) if send_out else None
        elif [clean["dtype"], shape] == list(self.expect):  # the expected result, said to be there, without its bytes
            self._kill()
            raise CandidateFailure("crashed", "the candidate's process described the expected result but sent none of "
                                              "its bytes (it broke the wire format)")
        clean.update(out=out, tensor=shape is not None)
        return clean

    def _accept(self, metas):
        """Only the expected result may come with bytes: one array of the expected dtype and shape."""
        if metas and (len(metas) > 1 or [metas[0]["dtype"], metas[0]["shape"]] != list(self.expect)):
            raise wire.WireError(f"sent {len(metas)} arrays ({metas[0]['dtype']} {metas[0]['shape'][:8]}) where at "
                                 f"most one {self.expect[0]} {self.expect[1]} was expected")

    def _kill(self):
        return None


class ChildExecutor(Judge):
    """The candidate in its own process; each wait ends by the limits of harness.verify.limits."""

    def __init__(self, target, parameters, contract, device, timeout, max_slowdown=limits.MAX_SLOWDOWN,
                 sandbox=True):
        from int4_lora_harness.verify.targets import prepare_parameters
        self.target, self.timeout, self.device, self.max_slowdown = target, timeout, device, max_slowdown
        self.weights = prepare_parameters(parameters, contract)
        self.transfer_s, self.transfer_bytes, self.calls, self.exit_note = 0.0, 0, 0, None
        start = time.perf_counter()
        self.scratch = scratch.make()
        env = candidate_env(self.scratch)
        self.sock, theirs = socket.socketpair()
        config = dict(target=target, parameters=list(parameters), contract=contract, device=device,
                      judge_pid=os.getpid(), sys_path=sys.path, sandbox=sandbox, read=readable_paths(target),
                      write=[self.scratch])
        self.process = subprocess.Popen(
            [sys.executable, "-m", "int4_lora_harness.verify.child", str(theirs.fileno()), json.dumps(config)],
            pass_fds=[theirs.fileno()], start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env=env)
        theirs.close()
        self.sock.settimeout(limits.POLL_S)
        self.output = CandidateOutput(self.process.stdout)
        ready = self._receive(limits.Watch(self.process.pid, max(timeout, IMPORT_STALL_S), IMPORT_BUDGET_S,
                                           "importing the TARGET"))
        self.sandbox = _walls(ready.get("sandbox"))
        if ready.get("status") == "usage":
            self.close()
            raise TargetRefused(_text(ready.get("message")))
        if ready.get("status") != "ready":
            self.close()
            raise _failure(ready)
        self.source, self.start_s = _text(ready.get("source")), time.perf_counter() - start
        self.two_phase = ready.get("two_phase") is True  # its word: only how a verdict words a prepare

    # --- waiting, sending, receiving --------------------------------------------------------------

    def _receive(self, watch, accept=_no_arrays):
        """One message (header, arrays); CandidateFailure for a limit passed, a death or a broken message."""
        try:
            header, arrays, _ = wire.receive(self.sock, accept, watch)
            self.transfer_bytes += sum(a.nbytes for a in arrays)
            return dict(header, arrays=arrays)
        except limits.LimitPassed as limit:
            self._kill()
            raise CandidateFailure(limit.kind, limit.message) from None
        except wire.WireError as error:
            self._kill()
            raise CandidateFailure("crashed", f"the candidate's process broke the wire format while "
                                              f"{watch.doing}: {error}") from None
        except (EOFError, OSError):
            code = self._kill()
            raise CandidateFailure("crashed", f"the candidate's process {exit_words(code)} while {watch.doing}") \
                from None

    def _ask(self, header, doing, fds=()):
        if self.process is None:
            raise CandidateFailure("crashed", "the candidate's process is gone (an earlier call ended it)")
        start = time.perf_counter()
        try:
            wire.send(self.sock, header, fds=fds)
        except OSError:
            pass  # the child is gone: the receive says how
        finally:
            for fd in fds:
                os.close(fd)
        budget = self.timeout + self.max_slowdown * self.work / limits.dense_rate() if doing.endswith("candidate") \
            else self.timeout
        reply = self._receive(limits.Watch(self.process.pid, self.timeout, budget, doing), self._accept)
        elapsed = time.perf_counter() - start
        seconds = reply.get("seconds")
        finite = isinstance(seconds, (int, float)) and math.isfinite(seconds)
        reply["seconds"] = min(max(float(seconds), 0.0), elapsed) if finite else elapsed
        self.transfer_s += elapsed - reply["seconds"]
        return reply

    def close(self):
        """Stop the child and everything it started; `exit_note` says what kept it alive, if anything did."""
        if self.process is None:
            return
        lingering = None
        try:
            wire.send(self.sock, dict(verb="stop"))
            reply = wire.receive(self.sock, _no_arrays, _Deadline(EXIT_GRACE_S))[0]
            lingering = [_text(t) for t in reply.get("lingering", [])][:20] if isinstance(reply.get("lingering"), list) \
                else None
        except (OSError, EOFError, wire.WireError, TimeoutError):
            pass
        try:
            self.process.wait(EXIT_GRACE_S)
            alive = [p for p in limits.tree(self.process.pid)]
        except subprocess.TimeoutExpired:
            alive = list(limits.tree(self.process.pid))
        if alive:
            threads = f" (threads still running: {', '.join(lingering)})" if lingering else ""
            self.exit_note = (f"the candidate's process did not exit within {EXIT_GRACE_S:g} s of its last call{threads}: "
                              "killed with everything it started (not judged)")
        self._kill()

    def _kill(self):
        """SIGKILL the candidate's process and every process under it; its exit code (None if unknown)."""
        if self.process is None:
            return None
        code = limits.kill_tree(self.process)
        self.output.close()
        self.sock.close()
        if self.region is not None:
            self.region.close()
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.process, self.region = None, None
        return code

    def output_tail(self):
        return self.output.tail()


class _Deadline:
    """An idle callback that gives up after `seconds` of wall time (only for the child's exit, never judged)."""

    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def __call__(self):
        if time.monotonic() > self.end:
            raise TimeoutError


def _text(value, cap=2000):
    """A string the candidate's process sent, as a string of at most `cap` characters."""
    return (value if isinstance(value, str) else repr(value))[:cap]


def _walls(walls):
    """The sandbox the child reported: {'processes': words, 'files': words, 'sandboxed': bool}."""
    walls = walls if isinstance(walls, dict) else {}
    words = {part: _text(walls.get(part, "unknown"), 300) for part in ("processes", "files")}
    return dict(words, sandboxed=not any(w.startswith(("unavailable", "off", "unknown")) for w in words.values()))


def _failure(reply):
    """CandidateFailure('raised') of a 'raised' reply (its strings capped; the candidate wrote them)."""
    kind = "raised" if reply.get("status") == "raised" else "crashed"
    phase = "prepare raised " if reply.get("phase") == "prepare" else ""
    return CandidateFailure(kind, f"{phase}{_text(reply.get('type'), 200)}: {_text(reply.get('message'))}",
                            _text(reply.get("type"), 200), _text(reply.get("traceback", ""), 4000))


def _plain_value(value):
    """A non-tensor argument in its JSON form (a torch dtype as {"torch_dtype": name})."""
    if isinstance(value, torch.dtype):
        return {"torch_dtype": str(value).removeprefix("torch.")}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"an input of type {type(value).__name__} cannot be sent to the candidate's process")
