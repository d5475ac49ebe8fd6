"""The candidate in the judge's own process (--in-process, and the functions of harness.testing): for debugging.

The same verbs and checks as the child process (harness.verify.executor.Judge): the inputs are shared
through the same sealed memfd, the result is copied out as bytes, and every check is the judge's. But
nothing walls the candidate in (the verdict says `unsandboxed`), a crash ends the run, and the time limit is
the wall clock (SIGALRM, main thread only), which a candidate catching exceptions can swallow.
"""
import signal

from int4_lora_harness.verify import child
from int4_lora_harness.verify.executor import CandidateFailure, Judge, _walls
from int4_lora_harness.verify.targets import TwoPhase


class InProcessExecutor(Judge):
    """`function` (or a TwoPhase) called in this process; each call may take `timeout` seconds of wall time."""

    def __init__(self, function, device, timeout, source="?"):
        from int4_lora_harness.kernels.triton_interpreter import fix_bf16
        fix_bf16()  # before the candidate's first launch, as the child does (harness.verify.child.main)
        self.holder, self.timeout, self.device, self.source = child.Holder(function, device), timeout, device, source
        self.two_phase = isinstance(function, TwoPhase)  # harness.verify.targets.load_target's, for a two-phase TARGET
        self.weights = function.weights if self.two_phase else ()
        self.transfer_s, self.transfer_bytes, self.calls, self.start_s, self.exit_note = 0.0, 0, 0, 0.0, None
        self.sandbox = _walls({"processes": "off (--in-process)", "files": "off (--in-process)"})

    def _ask(self, header, doing, fds=()):
        def on_alarm(signum, frame):
            raise TimeoutError(f"call did not return within {self.timeout:g} s")
        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, self.timeout)
        try:
            reply, out = self.holder.answer(header, list(fds))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        if reply.get("status") == "raised" and reply["type"] == "TimeoutError" and \
                "did not return within" in reply["message"]:
            raise CandidateFailure("hung", f"no answer within {self.timeout:g} s of wall time (--in-process) while {doing}")
        arrays = [] if out is None else [child.carrier(out).copy()]
        self._accept([dict(dtype=child.dtype_name(out.dtype), shape=list(out.shape))] if out is not None else [])
        return dict(reply, arrays=arrays)

    def close(self):
        lingering = child.lingering_threads()
        if lingering:
            self.exit_note = f"threads still running after the last call: {', '.join(lingering)} (not judged)"
