"""The candidate's side of harness.verify.executor: the program its process runs, and what may run in-process.

    python -m int4_lora_harness.verify.child FD CONFIG_JSON

The process walls itself in first (harness.verify.sandbox: the judge's death kills it, its own PID
namespace, Landlock), then imports the TARGET and answers the judge's messages (harness.verify.wire) on
the socket FD. A case's inputs arrive as a memfd the judge wrote them into: on the CPU the candidate's
tensors are views of that shared memory, so whatever a call writes into its inputs the judge sees itself;
on CUDA they are copied to the device and back after each call. Each call's reply is plain data (the
result's type, dtype, shape, device) and, where the dtype and shape are the ones the judge expects, the raw
bytes of the result's torch.Tensor base. Nothing here is trusted: the candidate may patch any of it, so the
judge computes every check (harness.verify.executor) on the bytes it received.

A two-phase candidate (harness.verify.targets.TwoPhase) is prepared where the judge's message says
`prepare` (the first call of a case, after an in-place update of a weight, each call on fresh tensors);
its prepared object is kept for the case's later calls, which only apply.
"""
import json
import mmap
import os
import sys
import threading
import time
import traceback

HELD_RESULTS = 2  # results of a case kept so the judge can ask whether later calls changed them
TEXT_CAP = 2000
UNPREPARED = object()  # a case's two-phase candidate before its first prepare (prepare may return None)


def torch_dtype(name):
    import torch
    return getattr(torch, name)


def dtype_name(dtype):
    return str(dtype).removeprefix("torch.")


def plain_data(out):
    """(`out`'s torch.Tensor base: its data, not a subclass's view of it; the subclass name | None). No copy."""
    import torch
    subclass = None if type(out) in (torch.Tensor, torch.nn.Parameter) else type(out).__name__
    with torch._C.DisableTorchFunctionSubclass():  # a subclass's __torch_function__ cannot show other values
        return torch.Tensor.as_subclass(out, torch.Tensor).detach(), subclass


def raised(error, seconds=0.0, message=None):
    """The reply for a call (or an import) that raised `error` (any BaseException)."""
    return dict(status="raised", type=type(error).__name__[:200], message=(message or str(error))[:TEXT_CAP],
                traceback="".join(traceback.format_exception(error)[-6:])[-4000:],
                seconds=seconds)


class Region:
    """A case's tensors in one shared memory file: [(name, dtype name, shape, offset)] and the mapping."""

    def __init__(self, fd, layout, device):
        import torch
        self.map = mmap.mmap(fd, 0)
        os.close(fd)
        self.layout, self.device = layout, device
        self.views = {}
        for name, dtype, shape, offset in layout:
            count = 1
            for n in shape:
                count *= n
            view = torch.frombuffer(self.map, dtype=torch_dtype(dtype), count=count, offset=offset) if count else \
                torch.empty(0, dtype=torch_dtype(dtype))
            self.views[name] = view.view(shape)

    def tensors(self):
        """The candidate's tensors: the shared views on the CPU, copies on another device."""
        if self.device == "cpu":
            return dict(self.views)
        return {name: v.to(self.device) for name, v in self.views.items()}

    def load(self, tensors, names):
        """The judge updated `names` in place: copied into `tensors` (same objects) on another device; on the CPU
        the judge wrote the shared memory itself, so each tensor's version counter is bumped as copy_ would."""
        import torch
        for name in names:
            if tensors[name] is not self.views[name]:
                tensors[name].copy_(self.views[name])
            else:
                torch.autograd.graph.increment_version(tensors[name])

    def store(self, tensors):
        """Copy `tensors` back into the shared memory, on another device, for the judge to compare."""
        for name, t in tensors.items():
            if t is not self.views.get(name) and name in self.views:
                self.views[name].copy_(t.detach().to("cpu").reshape(self.views[name].shape))


class Holder:
    """One case: its shared inputs, the keyword arguments of each call, the results kept to re-read later, and a
    two-phase candidate's prepared object."""

    def __init__(self, function, device):
        self.function, self.device = function, device
        self.region, self.inputs, self.plain, self.results, self.prepared = None, {}, {}, [], UNPREPARED

    def start_case(self, region, plain):
        self.region, self.plain, self.results, self.prepared = region, plain, [], UNPREPARED
        self.inputs = region.tensors()

    def call(self, expect, updates=(), prepare=False):
        self.region.load(self.inputs, updates)
        reply, out = self.invoke({**self.plain, **self.inputs}, expect, prepare, keep=True)
        self.region.store(self.inputs)
        reply["aliases"] = self.aliases(out)
        if out is not None and len(self.results) < HELD_RESULTS:
            self.results.append(out)
        return reply, out

    def aliases(self, out):
        """Indices of the results kept whose memory a new result overlaps (an output buffer used again while the
        caller still holds what it returned: the values may even be equal, so the judge cannot see it itself)."""
        return [] if out is None else [i for i, held in enumerate(self.results) if _overlap(held, out)]

    def answer(self, header, fds):
        """(reply, result tensor to send | None) for one of the judge's messages (harness.verify.executor)."""
        verb = header["verb"]
        if verb == "start_case":
            self.start_case(Region(fds[0], header["layout"], self.device),
                            {k: plain_value(v) for k, v in header["plain"].items()})
            return dict(status="ok"), None
        if verb == "call":
            return self.call(header["expect"], header["updates"], header.get("prepare", False))
        if verb == "call_fresh":
            return self.call_fresh(Region(fds[0], header["layout"], self.device), header["expect"],
                                   header.get("prepare", False))
        if verb == "result":  # an earlier result as it holds now (the judge compares it with what it got)
            return dict(status="ok"), self.results[header["index"]]
        raise ValueError(f"unknown verb {verb!r}")

    def call_fresh(self, region, expect, prepare=False):
        """One call on new tensors (a new shared region) holding the values the judge sent last; a two-phase
        candidate prepared on them where `prepare` (the case's own prepared object is kept as it was)."""
        fresh = region.tensors()
        reply, out = self.invoke({**self.plain, **fresh}, expect, prepare, keep=False)
        region.store(fresh)
        reply["aliases"] = self.aliases(out)
        return reply, out

    def invoke(self, kwargs, expect, prepare, keep):
        """(reply, result) of one call by keyword. A two-phase candidate is prepared first where `prepare` (the
        prepared object kept for the case's later calls where `keep`), then applied; a raise in prepare is
        replied as such (phase 'prepare'), and the reply's seconds are both phases'."""
        from int4_lora_harness.verify.targets import TwoPhase
        if not isinstance(self.function, TwoPhase):
            return call_candidate(self.function, kwargs, self.device, expect)
        weights, rest = self.function.split(kwargs)
        prepared, prepare_s = self.prepared, 0.0
        if prepare:
            reply, prepared, prepare_s = call_prepare(self.function.prepare, weights, self.device)
            if reply is not None:
                return reply, None
            if keep:
                self.prepared = prepared
        if prepared is UNPREPARED:
            raise ValueError("apply before any prepare of the case (the judge sends prepare with its first call)")
        reply, out = call_candidate(self.function.apply, dict(rest, prepared=prepared), self.device, expect)
        reply["seconds"] += prepare_s
        return reply, out


def _overlap(a, b):
    """Whether two tensors' elements share any byte of memory (on one device)."""
    def span(t):
        last = sum((n - 1) * abs(step) for n, step in zip(t.shape, t.stride())) if t.numel() else -1
        return t.data_ptr(), t.data_ptr() + (last + 1) * t.element_size()
    (a0, a1), (b0, b1) = span(a), span(b)
    return a.device == b.device and a0 < b1 and b0 < a1


def call_prepare(prepare, weights, device):
    """(None, the prepared object, seconds) of a two-phase candidate's prepare(**weights), or (its 'raised' reply,
    None, seconds) where it raised."""
    import torch
    start = time.perf_counter()
    try:
        prepared = prepare(**weights)
        if device == "cuda":
            torch.cuda.synchronize()
    except BaseException as error:  # SystemExit, KeyboardInterrupt and the rest: each is a verdict
        seconds = time.perf_counter() - start
        return dict(raised(error, seconds), phase="prepare"), None, seconds
    return None, prepared, time.perf_counter() - start


def call_candidate(function, kwargs, device, expect):
    """(reply, the plain result tensor to send | None) of one call by keyword; `expect` = [dtype name, shape]."""
    import torch
    start = time.perf_counter()
    try:
        out = function(**kwargs)
        if device == "cuda":
            torch.cuda.synchronize()
    except BaseException as error:  # SystemExit, KeyboardInterrupt and the rest: each is a verdict
        return raised(error, time.perf_counter() - start), None
    seconds = time.perf_counter() - start
    reply = dict(status="ok", type=type(out).__name__[:200], seconds=seconds)
    if not isinstance(out, torch.Tensor):
        return reply, None
    plain, subclass = plain_data(out)
    reply.update(dtype=dtype_name(plain.dtype), shape=[int(n) for n in plain.shape], device=str(plain.device),
                 subclass=subclass)
    sendable = [reply["dtype"], reply["shape"]] == list(expect)
    return reply, (plain if sendable else None)


def send_reply(sock, reply, out):
    from int4_lora_harness.verify import wire
    wire.send(sock, reply, [] if out is None else [(dtype_name(out.dtype), carrier(out))])


def carrier(t):
    """A plain tensor's values as a NumPy array of its wire carrier dtype (harness.verify.wire.CARRIERS)."""
    import torch
    t = t.detach().to("cpu").contiguous()
    ints = {torch.bfloat16: torch.uint16, torch.bool: torch.uint8}.get(t.dtype)
    return (t.view(ints) if ints else t).numpy()


def lingering_threads():
    """'name (xN)' for the threads other than this one that could keep the process alive."""
    names = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon
             and t.is_alive()]
    return [f"{n} (x{names.count(n)})" if names.count(n) > 1 else n for n in dict.fromkeys(names)]


def plain_value(value):
    """A non-tensor argument from its JSON form: {"torch_dtype": name} -> the torch dtype, else as is."""
    if isinstance(value, dict) and set(value) == {"torch_dtype"}:
        return torch_dtype(value["torch_dtype"])
    return value


def serve(sock, function, device):
    """Answer the judge until it says stop (or closes the socket)."""
    from int4_lora_harness.verify import wire
    holder = Holder(function, device)
    while True:
        header, _, fds = wire.receive(sock, with_fds=True)
        if header["verb"] == "stop":
            return wire.send(sock, dict(status="ok", lingering=lingering_threads()))
        send_reply(sock, *holder.answer(header, fds))


def main(argv):
    """The candidate's process: wall in, import the TARGET, serve."""
    import socket
    sock = socket.socket(fileno=int(argv[0]))
    config = json.loads(argv[1])
    sys.path[:] = config["sys_path"]
    from int4_lora_harness.verify import sandbox  # the standard library only: nothing has started threads yet
    sandbox.die_with_parent(config["judge_pid"])
    walls = {}
    for part, enter in (("processes", sandbox.pid_namespace), ("files", None)):
        if not config["sandbox"]:
            walls[part] = "off (--no-sandbox)"
            continue
        try:
            walls[part] = enter() if enter else _files(config)
        except sandbox.Unavailable as why:
            walls[part] = f"unavailable: {why}"
    from int4_lora_harness.verify import wire
    try:
        from int4_lora_harness.kernels.triton_interpreter import fix_bf16
        from int4_lora_harness.verify.targets import TwoPhase, UsageError, load_target, source_of
        try:
            fix_bf16()  # under TRITON_INTERPRET=1, the interpreter's bf16 computed as a GPU does; elsewhere a no-op
            function = load_target(config["target"], config["parameters"], config["contract"])
        except (UsageError, RuntimeError) as error:  # RuntimeError: a Triton whose interpreter fix_bf16 cannot mend
            return wire.send(sock, dict(status="usage", message=str(error)[:TEXT_CAP], sandbox=walls))
    except BaseException as error:  # SystemExit or worse while importing: the candidate ended the run
        return wire.send(sock, dict(raised(error, message=f"while importing {config['target']}: {error}"),
                                    sandbox=walls))
    wire.send(sock, dict(status="ready", source=source_of(function)[:1000], sandbox=walls,
                         two_phase=isinstance(function, TwoPhase)))
    serve(sock, function, config["device"])


def _files(config):
    """Landlock on files, after importing what the judge's own code needs (torch, numpy) from where it lies."""
    import numpy  # noqa: F401  (imported before the walls: their files are read where they lie)
    import torch  # noqa: F401

    from int4_lora_harness.verify import sandbox
    return sandbox.landlock(config["read"], config["write"])


if __name__ == "__main__":
    main(sys.argv[1:])
