"""Where a candidate runs: a child process by default (spawned: CUDA-safe), or this process (--in-process).

The judge never imports the TARGET: the child does, holds one case's inputs on the device, calls
the candidate when asked, and sends back a plain CPU copy of each result (the data of the
torch.Tensor base, not a subclass's view of it), which inputs the call modified, and its seconds.
Every way a candidate can end becomes a CandidateFailure with a kind:
  raised   an exception of any kind (SystemExit and KeyboardInterrupt included)
  hung     no answer within the timeout (the child is killed), or a thread left running at exit
  crashed  the process died (a signal, os._exit, a CUDA error that kills it)
Tensors travel as raw NumPy buffers pickled over a pipe, never through shared memory (/dev/shm may be tiny).
"""
import multiprocessing
import pickle
import signal
import threading
import time
import traceback

EXIT_GRACE_S = 5.0  # how long the child may take to exit after the last call
HELD_RESULTS = 2  # results of a case kept to see whether later calls change them (two suffice; memory)
IMPORT_TIMEOUT_S = 300.0  # importing a TARGET (torch, triton, a package's kernels) may take a while


class CandidateFailure(Exception):
    """The candidate did not return: kind is 'raised', 'hung' or 'crashed'."""

    def __init__(self, kind, message, exception=None):
        super().__init__(f"{kind}: {message}")
        self.kind, self.message, self.exception = kind, message, exception


class TargetRefused(Exception):
    """The TARGET could not be loaded in the child with an ordinary error (a usage error: exit 2)."""


# --- tensors over the pipe: raw NumPy buffers (pickling torch tensors one storage at a time is slow) ----

def encode(value):
    """Tensors (anywhere in dicts, tuples, lists) -> ('tensor', dtype name, NumPy array of their bytes)."""
    import torch
    if isinstance(value, torch.Tensor):
        t = value.detach().to("cpu").contiguous()
        ints = {torch.bfloat16: torch.int16, torch.bool: torch.uint8}.get(t.dtype)
        return ("tensor", str(t.dtype).removeprefix("torch."), (t.view(ints) if ints else t).numpy())
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(encode(v) for v in value)
    return value


def decode(value):
    """The inverse of `encode`."""
    import torch
    if isinstance(value, tuple) and len(value) == 3 and value[0] == "tensor":
        t = torch.from_numpy(value[2])
        dtype = getattr(torch, value[1])
        return t.view(dtype) if t.dtype != dtype else t
    if isinstance(value, dict):
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(decode(v) for v in value)
    return value


def dumps(value):
    return pickle.dumps(encode(value), protocol=pickle.HIGHEST_PROTOCOL)


def loads(data):
    return decode(pickle.loads(data))


# --- the child's side ----------------------------------------------------------------------------

def _to_device(value, device):
    import torch
    return value.to(device) if isinstance(value, torch.Tensor) else value


def _bits(t):
    """A snapshot of a tensor's bits (NaN == NaN, -0 != +0), on the CPU."""
    return t.detach().to("cpu", copy=True).contiguous().view(-1).view(__import__("torch").uint8) \
        if t.numel() else t.detach().to("cpu", copy=True)


def plain_copy(out):
    """(plain CPU copy of the data of `out`'s torch.Tensor base, its subclass name | None) for a tensor result."""
    import torch
    subclass = None if type(out) in (torch.Tensor, torch.nn.Parameter) else type(out).__name__
    with torch._C.DisableTorchFunctionSubclass():  # a subclass's __torch_function__ cannot show other values
        plain = torch.Tensor.as_subclass(out, torch.Tensor)
        return plain.detach().to("cpu", copy=True), subclass


def describe_result(out, requested_device, modified, seconds):
    """The reply for one returned call (see module docstring)."""
    import torch
    reply = dict(status="ok", type=type(out).__name__, modified=modified, seconds=seconds, out=None)
    if isinstance(out, torch.Tensor):
        copy, subclass = plain_copy(out)
        reply.update(out=copy, shape=list(out.shape), dtype=str(copy.dtype), device=str(out.device),
                     device_ok=out.device.type == torch.device(requested_device).type, subclass=subclass)
    return reply


def call_candidate(function, inputs, device):
    """Call once on `inputs` (held tensors, by keyword); a reply dict either way, exceptions included."""
    import torch
    before = {k: _bits(v) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    start = time.perf_counter()
    try:
        out = function(**inputs)
        if device == "cuda":
            torch.cuda.synchronize()
    except BaseException as error:  # SystemExit, KeyboardInterrupt and the rest: each is a verdict
        return dict(status="raised", type=type(error).__name__, message=str(error)[:2000],
                    traceback="".join(traceback.format_exception(error)[-6:])[-4000:],
                    seconds=time.perf_counter() - start), None
    seconds = time.perf_counter() - start
    modified = [k for k, bits in before.items() if not _same(bits, _bits(inputs[k]))]
    return describe_result(out, device, modified, seconds), out


def _same(a, b):
    import torch
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)


class Holder:
    """One case's inputs and the results returned on them, as the candidate saw them (both sides use this)."""

    def __init__(self, function, device):
        self.function, self.device = function, device
        self.inputs, self.results = {}, []

    def start_case(self, inputs):
        self.inputs = {k: _to_device(v, self.device) for k, v in inputs.items()}
        self.results = []

    def call(self):
        reply, out = call_candidate(self.function, self.inputs, self.device)
        if reply["status"] == "ok" and reply["out"] is not None and len(self.results) < HELD_RESULTS:
            self.results.append((out, reply["out"]))  # the object returned, and what it held then
        return reply

    def update(self, name, values):
        self.inputs[name].copy_(values.to(self.inputs[name].device))  # same tensor object, new values
        return dict(status="ok")

    def call_fresh(self, inputs):
        fresh = {k: _to_device(v, self.device) for k, v in inputs.items()}
        return call_candidate(self.function, fresh, self.device)[0]

    def results_changed(self):
        """Indices of earlier results (of this case) whose data changed since they were returned."""
        changed = []
        for i, (out, then) in enumerate(self.results):
            now, _ = plain_copy(out)
            if not _same(_bits(now), _bits(then)):
                changed.append(i)
        return dict(status="ok", changed=changed)


def lingering_threads():
    """'name (xN)' for the threads other than this one that could keep the process alive."""
    names = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon
             and t.is_alive()]
    return [f"{n} (x{names.count(n)})" if names.count(n) > 1 else n for n in dict.fromkeys(names)]


def _child(target, parameters, contract, device, conn):
    from int4_lora_harness.verify.targets import UsageError, load_target, source_of
    try:
        function = load_target(target, parameters, contract)
    except UsageError as error:
        return conn.send_bytes(dumps(dict(status="usage", message=str(error))))
    except BaseException as error:  # SystemExit or worse while importing: the candidate ended the run
        return conn.send_bytes(dumps(dict(status="raised", type=type(error).__name__,
                                          message=f"while importing {target}: {error}")))
    conn.send_bytes(dumps(dict(status="ready", source=source_of(function))))
    holder = Holder(function, device)
    while True:
        verb, payload = loads(conn.recv_bytes())
        if verb == "stop":
            return conn.send_bytes(dumps(dict(status="ok", lingering=lingering_threads())))
        reply = {"start_case": lambda: holder.start_case(payload) or dict(status="ok"),
                 "call": holder.call, "update": lambda: holder.update(*payload),
                 "call_fresh": lambda: holder.call_fresh(payload), "results_changed": holder.results_changed}[verb]()
        conn.send_bytes(dumps(reply))


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
        self.process = context.Process(target=_child, args=(target, parameters, contract, device, child_end),
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

    def call(self):
        self.calls += 1
        return _checked(self._ask("call"))

    def update(self, name, values):
        self._ask("update", (name, values), f"updating {name} in place")

    def call_fresh(self, inputs):
        self.calls += 1
        return _checked(self._ask("call_fresh", inputs))

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

    def call(self):
        self.calls += 1
        return _checked(self._timed(self.holder.call))

    def update(self, name, values):
        self.holder.update(name, values)

    def call_fresh(self, inputs):
        self.calls += 1
        return _checked(self._timed(self.holder.call_fresh, inputs))

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
