"""Run a candidate in a child process, so a crash (segfault, CUDA error, os._exit) becomes a verdict.

The child loads the TARGET itself, receives each call's arguments as CPU tensors, runs the
call on the requested device and sends back the result and the arguments as they are
after the call (so in-place changes to inputs stay visible to the properties). A child
that dies or runs past the timeout is replaced by a fresh one for the next call.
"""
import multiprocessing
import signal

import torch


class CandidateCrashed(RuntimeError):
    """The child process died during the call."""


def _to(value, device):
    return value.to(device) if isinstance(value, torch.Tensor) else value


def _worker(target, contract, device, conn):
    from int4_lora_harness.verify.targets import load_target  # in the child: import the candidate there, never here

    function = load_target(target, contract)
    while True:
        message = conn.recv()
        if message is None:
            return
        args, kwargs = message
        args = [_to(a, device) for a in args]
        kwargs = {k: _to(v, device) for k, v in kwargs.items()}
        try:
            out = function(*args, **kwargs)
            reply = ("ok", _to(out, "cpu"), [_to(a, "cpu") for a in args], {k: _to(v, "cpu") for k, v in kwargs.items()})
        except Exception as error:
            reply = ("raised", f"{type(error).__name__}: {error}", None, None)
        conn.send(reply)


def _signal_name(exitcode):
    if exitcode is not None and exitcode < 0:
        return f"killed by {signal.Signals(-exitcode).name}"
    return f"exited with status {exitcode}"


class Isolated:
    """A callable standing for TARGET, run in a child process with a per-call timeout."""

    def __init__(self, target, contract, device, timeout):
        self.target, self.contract, self.device, self.timeout = target, contract, device, timeout
        self.process = self.conn = None

    def _start(self):
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(self.target, self.contract, self.device, child),
                                       daemon=True)
        self.process.start()

    def _stop(self):
        if self.process is not None:
            self.process.kill()
            self.process.join()
        self.process = self.conn = None

    def __call__(self, *args, **kwargs):
        if self.process is None or not self.process.is_alive():
            self._start()
        self.conn.send(([_to(a, "cpu") for a in args], {k: _to(v, "cpu") for k, v in kwargs.items()}))
        if not self.conn.poll(self.timeout):
            alive = self.process.is_alive()
            self._stop()
            if alive:
                raise TimeoutError(f"call did not return within {self.timeout} s (child process killed)")
            raise CandidateCrashed("the candidate's process died")
        try:
            status, out, args_after, kwargs_after = self.conn.recv()
        except EOFError:
            self.process.join()
            code = self.process.exitcode
            self._stop()
            raise CandidateCrashed(f"the candidate's process {_signal_name(code)}") from None
        if status == "raised":
            raise RuntimeError(out)
        for mine, theirs in zip([*args, *kwargs.values()], [*args_after, *kwargs_after.values()]):
            if isinstance(mine, torch.Tensor):
                mine.copy_(theirs.to(mine.device))  # in-place changes made by the candidate stay visible
        return _to(out, self.device)

    def close(self):
        if self.process is not None and self.process.is_alive():
            self.conn.send(None)
        self._stop()
