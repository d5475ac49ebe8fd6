"""Where a candidate runs: a child process by default (spawned: CUDA-safe), or this process (--in-process).

The judge never imports the TARGET: the child does, holds one case's inputs on the device, calls
the candidate when asked, and sends back a digest of each result and, for the first call of a case, a plain
CPU copy of it (the data of the torch.Tensor base, not a subclass's view of it), which inputs the call
left different from what the judge sent, and its seconds (harness.verify.child).
Every way a candidate can end becomes a CandidateFailure with a kind:
  raised   an exception of any kind (SystemExit and KeyboardInterrupt included)
  hung     no answer within the timeout (the child is killed), or a thread left running at exit
  crashed  the process died (a signal, os._exit, a CUDA error that kills it)
Tensors travel as raw NumPy buffers pickled over a pipe, never through shared memory (/dev/shm may be tiny).
"""
import multiprocessing
import signal
import time

from int4_lora_harness.verify.child import Holder, dumps, lingering_threads, loads, serve

EXIT_GRACE_S = 5.0  # how long the child may take to exit after the last call
IMPORT_TIMEOUT_S = 300.0  # importing a TARGET (torch, triton, a package's kernels) may take a while


class CandidateFailure(Exception):
    """The candidate did not return: kind is 'raised', 'hung' or 'crashed'."""

    def __init__(self, kind, message, exception=None):
        super().__init__(f"{kind}: {message}")
        self.kind, self.message, self.exception = kind, message, exception


class TargetRefused(Exception):
    """The TARGET could not be loaded in the child with an ordinary error (a usage error: exit 2)."""


# --- the judge's side ----------------------------------------------------------------------------

def exit_words(exitcode):
    """'killed by SIGSEGV' or 'exited with status 3': how a process ended."""
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


class ChildExecutor:
    """The candidate in a spawned child process; every call waits at most `timeout` seconds."""

    def __init__(self, target, parameters, contract, device, timeout):
        self.target, self.timeout, self.device = target, timeout, device
        self.transfer_s, self.transfer_bytes, self.calls = 0.0, 0, 0
        start = time.perf_counter()
        context = multiprocessing.get_context("spawn")
        self.conn, child_end = context.Pipe()
        self.process = context.Process(target=serve, args=(target, parameters, contract, device, child_end),
                                       daemon=True, name="int4-harness-candidate")
        self.process.start()
        child_end.close()
        ready = self._receive(max(timeout, IMPORT_TIMEOUT_S), "importing the TARGET")
        if ready["status"] == "usage":
            self.close()
            raise TargetRefused(ready["message"])
        if ready["status"] != "ready":
            self.close()
            raise CandidateFailure(ready["status"], f"{ready['type']}: {ready['message']}", ready["type"])
        self.source, self.start_s = ready["source"], time.perf_counter() - start

    def _receive(self, timeout, doing):
        if not self.conn.poll(timeout):
            alive = self.process.is_alive()
            self._kill()
            if alive:
                raise CandidateFailure("hung", f"no answer within {timeout:g} s while {doing} (child process killed)")
        try:
            data = self.conn.recv_bytes()
        except (EOFError, OSError):
            self.process.join(EXIT_GRACE_S)
            code = self.process.exitcode
            self._kill()
            raise CandidateFailure("crashed", f"the candidate's process {exit_words(code)} while {doing}") from None
        return loads(data)

    def _ask(self, verb, payload=None, doing="calling the candidate"):
        if self.process is None:
            raise CandidateFailure("crashed", "the candidate's process is gone (an earlier call ended it)")
        start = time.perf_counter()
        data = dumps((verb, payload))
        try:
            self.conn.send_bytes(data)
        except (BrokenPipeError, OSError):
            return self._receive(0, doing)  # the child is gone: say how
        reply = self._receive(self.timeout, doing)
        self.transfer_bytes += len(data)
        self.transfer_s += time.perf_counter() - start - reply.get("seconds", 0.0)
        return reply

    def start_case(self, inputs):
        self._ask("start_case", inputs, "receiving the inputs")

    def call(self, send_out=True, updates=None):
        """The reply of one call on the held inputs, those named in `updates` ({name: tensor}) first updated in
        place (in the same message): the result's values where send_out, its digest always."""
        self.calls += 1
        doing = f"updating {', '.join(updates)} in place and calling the candidate" if updates else "calling the candidate"
        return _checked(self._ask("call", (send_out, updates), doing))

    def call_fresh(self, send_out=False):
        """The reply of one call on new tensors holding the values last sent (start_case, call's updates)."""
        self.calls += 1
        return _checked(self._ask("call_fresh", send_out))

    def results_changed(self):
        return self._ask("results_changed", doing="re-reading earlier results")["changed"]

    def close(self):
        """Stop the child; a CandidateFailure('hung') if it left threads running or would not exit."""
        if self.process is None:
            return
        lingering = []
        try:
            self.conn.send_bytes(dumps(("stop", None)))
            if self.conn.poll(EXIT_GRACE_S):
                lingering = loads(self.conn.recv_bytes()).get("lingering", [])
        except (EOFError, OSError):
            pass
        self.process.join(EXIT_GRACE_S)
        exited = not self.process.is_alive()
        self._kill()
        if not exited:  # idle pool threads that shut down at exit are fine; a thread that never ends is not
            threads = f" (threads still running: {', '.join(lingering)})" if lingering else ""
            raise CandidateFailure("hung", f"the candidate's process did not exit within {EXIT_GRACE_S:g} s after "
                                           f"its last call{threads}")

    def _kill(self):
        if self.process is not None:
            if self.process.is_alive():
                self.process.kill()
            self.process.join()
            self.conn.close()
        self.process = None


class InProcessExecutor:
    """The candidate in this process (--in-process, for debugging): no protection against crashes, and a
    timeout (SIGALRM, main thread only) that a candidate catching exceptions can swallow."""

    def __init__(self, function, device, timeout, source="?"):
        self.holder, self.timeout, self.device, self.source = Holder(function, device), timeout, device, source
        self.transfer_s, self.transfer_bytes, self.calls, self.start_s = 0.0, 0, 0, 0.0

    def _timed(self, method, *args):
        def on_alarm(signum, frame):
            raise TimeoutError(f"call did not return within {self.timeout:g} s")
        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, self.timeout)
        try:
            return method(*args)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    def start_case(self, inputs):
        self.holder.start_case(inputs)

    def call(self, send_out=True, updates=None):
        self.calls += 1
        return _checked(self._timed(self.holder.call, send_out, updates))

    def call_fresh(self, send_out=False):
        self.calls += 1
        return _checked(self._timed(self.holder.call_fresh, send_out))

    def results_changed(self):
        return self.holder.results_changed()["changed"]

    def close(self):
        lingering = lingering_threads()
        if lingering:
            raise CandidateFailure("hung", f"threads still running after the last call: {', '.join(lingering)}")


def _checked(reply):
    """A returned call's reply, or CandidateFailure for a call that raised (a timeout in-process is 'hung')."""
    if reply["status"] == "raised":
        kind = "hung" if reply["type"] == "TimeoutError" and "did not return within" in reply["message"] else "raised"
        raise CandidateFailure(kind, f"{reply['type']}: {reply['message']}", reply["type"])
    return reply
