"""The candidate's side of harness.verify.executor: what runs in the child process (or in this one, --in-process).

It holds one case's inputs on the device with a copy of the values the judge sent for them, calls the
candidate by keyword, and answers with a digest of each result's bits (and, where the judge asks for it, a
plain CPU copy of the data of its torch.Tensor base), the inputs whose bits the call left different from
what the judge sent, its seconds, or the exception it raised (any BaseException).
Tensors cross the pipe as raw NumPy buffers. The judge asks for the values of a case's first call and
compares the calls after it by digest: a layer's result crosses the pipe once, not once a call. An update
travels with the call that follows it, and a fresh call's tensors are cloned here from the copy: the
inputs cross the pipe once per value the judge gives them.
"""
import hashlib
import pickle
import threading
import time
import traceback

HELD_RESULTS = 2  # results of a case kept to see whether later calls change them (two suffice; memory)


# --- tensors over the pipe: raw NumPy buffers (pickling torch tensors one storage at a time is slow) ----

class _Tensor:
    """A tensor on the pipe: its dtype name and a NumPy array of its bytes (bf16 and bool as same-size integers)."""

    def __init__(self, dtype, array):
        self.dtype, self.array = dtype, array


def _walk(value, leaf):
    """`leaf` applied to every value inside dicts, lists and tuples, the containers rebuilt around them."""
    if isinstance(value, dict):
        return {k: _walk(v, leaf) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_walk(v, leaf) for v in value)
    return leaf(value)


def _encode_leaf(value):
    import torch
    if not isinstance(value, torch.Tensor):
        return value
    t = value.detach().to("cpu").contiguous()
    ints = {torch.bfloat16: torch.int16, torch.bool: torch.uint8}.get(t.dtype)
    return _Tensor(str(t.dtype).removeprefix("torch."), (t.view(ints) if ints else t).numpy())


def _decode_leaf(value):
    import torch
    if not isinstance(value, _Tensor):
        return value
    t, dtype = torch.from_numpy(value.array), getattr(torch, value.dtype)
    return t.view(dtype) if t.dtype != dtype else t


def encode(value):
    """Tensors (anywhere in dicts, tuples, lists) -> _Tensor (dtype name, NumPy array of their bytes)."""
    return _walk(value, _encode_leaf)


def decode(value):
    """The inverse of `encode`."""
    return _walk(value, _decode_leaf)


def dumps(value):
    return pickle.dumps(encode(value), protocol=pickle.HIGHEST_PROTOCOL)


def loads(data):
    return decode(pickle.loads(data))


# --- the child's side ----------------------------------------------------------------------------

def _to_device(value, device):
    import torch
    return value.to(device) if isinstance(value, torch.Tensor) else value


def _bits(t):
    """A tensor's bits as a flat uint8 tensor on its own device (a view where it is contiguous, else a copy)."""
    import torch
    return t.detach().contiguous().view(-1).view(torch.uint8) if t.numel() else t.detach()


def same_bits(a, b):
    """Bitwise equal tensors on one device: same dtype and shape, same bits (NaN == NaN, -0 != +0)."""
    import torch
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(_bits(a), _bits(b))


def plain_data(out):
    """(`out`'s torch.Tensor base: its data, not a subclass's view of it; the subclass name | None). No copy."""
    import torch
    subclass = None if type(out) in (torch.Tensor, torch.nn.Parameter) else type(out).__name__
    with torch._C.DisableTorchFunctionSubclass():  # a subclass's __torch_function__ cannot show other values
        return torch.Tensor.as_subclass(out, torch.Tensor).detach(), subclass


def digest(t):
    """SHA-256 of a plain tensor's dtype, shape and bits: equal digests, bitwise equal tensors (NaN == NaN,
    -0 != +0). A comparison of honest results, not a defence against a candidate forging one. A CPU tensor
    is read where it lies; another device's is copied to the CPU first."""
    import torch
    h = hashlib.sha256(f"{t.dtype} {list(t.shape)}".encode())
    if t.numel():
        h.update(t.to("cpu").contiguous().view(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def describe_result(out, requested_device, modified, seconds, send_out=True):
    """The reply for one returned call (see module docstring): with a CPU copy of the result where send_out."""
    import torch
    reply = dict(status="ok", type=type(out).__name__, modified=modified, seconds=seconds, out=None, digest=None)
    if isinstance(out, torch.Tensor):
        plain, subclass = plain_data(out)
        copy = plain.to("cpu", copy=True) if send_out else None
        reply.update(out=copy, digest=digest(plain if copy is None else copy),  # one device-to-host copy at most
                     shape=list(out.shape), dtype=str(plain.dtype), device=str(out.device),
                     device_ok=out.device.type == torch.device(requested_device).type, subclass=subclass)
    return reply


def call_candidate(function, inputs, sent, device, send_out=True):
    """Call once on `inputs` (tensors by keyword); (reply dict, the returned object) either way, exceptions
    included; the reply carries the result's values where send_out, else its digest only, and the names of
    the inputs whose bits differ after the call from `sent` (the values the judge sent for them)."""
    import torch
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
    modified = [k for k, then in sent.items() if not same_bits(inputs[k], then)]
    return describe_result(out, device, modified, seconds, send_out), out


class Holder:
    """One case's inputs, a copy of the values the judge sent for them, and the results returned on them.

    The copy (`sent`, on the device) is taken when the values arrive (start_case, update), so a call costs no
    snapshot of its inputs: after it, each input is compared with the copy. A fresh call runs on new clones of
    the copy: new tensor objects and storage holding exactly what the judge sent, without sending it again.
    """

    def __init__(self, function, device):
        self.function, self.device = function, device
        self.inputs, self.sent, self.results = {}, {}, []

    def start_case(self, inputs):
        import torch
        self.inputs = {k: _to_device(v, self.device) for k, v in inputs.items()}
        self.sent = {k: v.clone() for k, v in self.inputs.items() if isinstance(v, torch.Tensor)}
        self.results = []

    def call(self, send_out=True, updates=None):
        """One call on the held inputs, after updating those named in `updates` ({name: values}) in place."""
        for name, values in (updates or {}).items():
            try:
                self.update(name, values)
            except Exception as error:  # e.g. an earlier call resized the input it was given
                return dict(status="raised", type=type(error).__name__, seconds=0.0,
                            message=f"the judge could not update {name} in place: {error}"[:2000])
        reply, out = call_candidate(self.function, self.inputs, self.sent, self.device, send_out)
        if reply.get("digest") is not None and len(self.results) < HELD_RESULTS:
            self.results.append((out, reply["digest"]))  # the object returned, and the digest of what it held then
        return reply

    def update(self, name, values):
        self.inputs[name].copy_(values.to(self.inputs[name].device))  # same tensor object, new values
        self.sent[name] = self.inputs[name].clone()
        return dict(status="ok")

    def call_fresh(self, send_out=False):
        """One call on new tensors holding the values the judge sent last (no cache keyed by identity can hit)."""
        fresh = {k: self.sent[k].clone() if k in self.sent else v for k, v in self.inputs.items()}
        return call_candidate(self.function, fresh, self.sent, self.device, send_out)[0]

    def results_changed(self):
        """Indices of earlier results (of this case) whose data changed since they were returned."""
        changed = [i for i, (out, then) in enumerate(self.results) if digest(plain_data(out)[0]) != then]
        return dict(status="ok", changed=changed)


def lingering_threads():
    """'name (xN)' for the threads other than this one that could keep the process alive."""
    names = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon
             and t.is_alive()]
    return [f"{n} (x{names.count(n)})" if names.count(n) > 1 else n for n in dict.fromkeys(names)]


def serve(target, parameters, contract, device, conn):
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
                 "call": lambda: holder.call(*payload),
                 "call_fresh": lambda: holder.call_fresh(payload), "results_changed": holder.results_changed}[verb]()
        conn.send_bytes(dumps(reply))
