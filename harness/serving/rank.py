"""The program of one tp rank process: the candidate's side of serving.ranks (untrusted, like verify.child).

    python -m int4_lora_harness.serving.rank FD CONFIG_JSON

The process dies with the judge (PR_SET_PDEATHSIG), joins the group (init_method tcp://127.0.0.1:<port>;
gloo on CPU, NCCL on CUDA when every rank has its own GPU), says 'ready' and answers the judge's messages on
the socket FD, all in harness.verify.wire's format (a JSON header, then raw bytes):
  load    {target}: import TARGET (verify.targets.load_target)      -> ok | usage | raised
  case    {target, style, payload: {case, rewritten}} (serving.cases.case_to_wire; rewritten: the stacks after
          the case's rewrite, or None)                              -> 'returned' after each call, then the reply
  refuse  {target, style, payload: {case}}                          -> {raised: ValueError or not, message}
(a payload is wire.pack's JSON tree; its arrays lie in a sealed memfd sent beside the message, `layout` says where)
Per case every rank:
  1. builds the case's tensors on its device (the full tensors: the candidate shards them) and calls the
     candidate by keyword with tp_rank=r, tp_size=tp, style;
  2. agrees with its peers that every rank returned a tensor of the contract's shape and dtype (one
     all_reduce of a flag), else every rank leaves the case;
  3. combines with the collective the style implies, in the harness's own code so it can be modelled
     (serving.tolerance): column styles all_gather the blocks, row all_reduces the partial sums (SUM, in
     the partials' dtype: x.dtype or fp32; an fp32 sum is then rounded once to x.dtype);
  4. calls again (deterministic), writes the rewritten stacks into the held tensors in place (as an engine's
     set_lora does), and calls and combines again (slot rewrite).
A case's reply carries its arrays in order, per completed call: the rank's result ([M, out / tp] or [M, out]),
then on rank 0 the combined output (row: one [M, out] in x.dtype; column styles: tp blocks [M, out / tp]).
Nothing here is trusted: the candidate may patch any of it; serving.ranks checks every reply it reads.
"""
import json
import os
import sys

TEXT_CAP = 1000
STEPS = ("first", "again", "rewritten")


def _named_tensors(kwargs):
    """(name, tensor) for every tensor argument, stack entries as 'lora_a_stacked[s]'."""
    import torch
    for name, value in kwargs.items():
        if isinstance(value, torch.Tensor):
            yield name, value
        elif isinstance(value, tuple):
            yield from ((f"{name}[{s}]", t) for s, t in enumerate(value) if isinstance(t, torch.Tensor))


def _shape_problem(plain, kind, shape, dtypes, device):
    """None, or what is wrong with a rank's result: `plain` its torch.Tensor base (None: `kind` is no tensor)."""
    if plain is None:
        return f"returned {kind}, expected a torch.Tensor"
    problems = []
    if tuple(plain.shape) != tuple(shape):
        problems.append(f"shape {list(plain.shape)} != {list(shape)}")
    if plain.dtype not in dtypes:
        problems.append(f"dtype {plain.dtype} not in {[str(d) for d in dtypes]}")
    if plain.device.type != device.type:
        problems.append(f"device {plain.device} != {device}")
    return "; ".join(problems) or None


def _write_stacks(kwargs, rewritten):
    """Copy the rewritten stacks ({lora_a_stacked, lora_b_stacked}: per slice NumPy values) into the held
    tensors, in place (an engine's set_lora)."""
    import torch
    for name in ("lora_a_stacked", "lora_b_stacked"):
        for t, values in zip(kwargs[name], rewritten[name]):
            t.copy_(torch.from_numpy(values).to(t.dtype))


def _sendable(t):
    """(dtype name, wire carrier array) of a plain tensor, copied to the CPU."""
    from int4_lora_harness.verify.child import carrier, dtype_name
    return dtype_name(t.dtype), carrier(t.detach().to("cpu", copy=True))


class Rank:
    """One rank's state: its place in the group, its device, the TARGETs it has loaded."""

    def __init__(self, sock, rank, tp, device, collective_device):
        self.sock, self.rank, self.tp, self.device, self.collective_device = sock, rank, tp, device, collective_device
        self.functions = {}

    def send(self, header, arrays=()):
        from int4_lora_harness.verify import wire
        wire.send(self.sock, header, list(arrays))

    def function(self, target):
        from int4_lora_harness.serving.cases import LAYER_PARAMETERS
        from int4_lora_harness.verify.targets import load_target
        if target not in self.functions:
            self.functions[target] = load_target(target, LAYER_PARAMETERS, "layer")
        return self.functions[target]

    def load(self, target):
        """The reply to 'load': ok, or raised for a BaseException while importing (a UsageError propagates)."""
        try:
            self.function(target)
        except BaseException as error:  # SystemExit and the rest while importing: the candidate ended the case
            from int4_lora_harness.verify.targets import UsageError
            if isinstance(error, UsageError):
                raise
            return dict(status="raised", step="import", message=f"while importing {target}: "
                                                                  f"{type(error).__name__}: {str(error)[:TEXT_CAP]}")
        return dict(status="ok")

    def agree(self, ok, dtype_code=0):
        """(every rank says ok, every rank's result has the same dtype code): one all_reduce MIN of 3 ints."""
        import torch
        import torch.distributed as dist
        flags = torch.tensor([1 if ok else 0, dtype_code, -dtype_code], device=self.collective_device)
        dist.all_reduce(flags, op=dist.ReduceOp.MIN)
        return bool(flags[0].item()), int(flags[1].item()) == -int(flags[2].item())

    def combine(self, out, style, x_dtype):
        """Rank 0: [the all_reduce'd sum in x_dtype] (row) or the tp all_gather'ed blocks (column styles); else []."""
        import torch
        import torch.distributed as dist
        t = out.to(self.collective_device).clone().contiguous()
        if style == "row":
            dist.all_reduce(t, op=dist.ReduceOp.SUM)  # in the partials' dtype
            return [t.to(x_dtype).cpu()] if self.rank == 0 else []
        parts = [torch.empty_like(t) for _ in range(self.tp)]
        dist.all_gather(parts, t)
        return [p.cpu() for p in parts] if self.rank == 0 else []

    def run_case(self, target, style, case, rewritten):
        """(reply, arrays) of the steps of the module docstring; (None, []) after sending a 'raised' reply early."""
        import torch
        from int4_lora_harness.verify.child import plain_data
        from int4_lora_harness.verify.properties import same_bits
        function = self.function(target)
        kwargs = dict(case.torch_kwargs(self.device), tp_rank=self.rank, tp_size=self.tp, style=style)
        x_dtype, m, out_features = kwargs["x"].dtype, case.x.shape[0], sum(case.output_slices)
        shape = (m, out_features) if style == "row" else (m, out_features // self.tp)
        dtypes = (x_dtype, torch.float32) if style == "row" else (x_dtype,)
        before = {name: t.clone() for name, t in _named_tensors(kwargs)}
        arrays, modified = [], []
        for step in STEPS[:3 if rewritten is not None else 2]:
            if step == "rewritten":
                _write_stacks(kwargs, rewritten)
            try:
                out = function(**kwargs)
            except BaseException as error:  # SystemExit and the rest: each is a verdict
                self.send(dict(status="raised", step=step, message=f"{type(error).__name__}: {str(error)[:TEXT_CAP]}"))
                self.agree(False)  # let the peers leave the case too
                return None, []
            self.send(dict(status="returned", step=step))  # progress, for the judge's rank lines
            plain = plain_data(out)[0] if isinstance(out, torch.Tensor) else None  # a subclass's data, not its view
            problem = _shape_problem(plain, type(out).__name__[:200], shape, dtypes, self.device)
            all_ok, same_dtype = self.agree(problem is None, 0 if problem else dtypes.index(plain.dtype))
            if all_ok and not same_dtype:  # an all_reduce of mixed dtypes is no collective at all
                problem = f"returned {plain.dtype}, and the other ranks' partial sums are not all {plain.dtype}"
            if problem or not all_ok:
                return dict(status="wrong" if problem else "aborted", step=step, modified=modified,
                            message=problem or "left the case: another rank raised or returned a wrong result"), arrays
            arrays += [_sendable(t) for t in [plain, *self.combine(plain, style, x_dtype)]]
            if step == "first":
                modified = [name for name, t in _named_tensors(kwargs) if not same_bits(t, before[name])]
        return dict(status="ok", modified=modified), arrays

    def refuse(self, target, style, case):
        """Call once on a layer the contract refuses; reply with what was raised (no collectives)."""
        kwargs = dict(case.torch_kwargs(self.device), tp_rank=self.rank, tp_size=self.tp, style=style)
        try:
            self.function(target)(**kwargs)
        except BaseException as error:
            return dict(status="ok", raised=isinstance(error, ValueError),
                        message=f"{type(error).__name__}: {str(error)[:TEXT_CAP]}")
        return dict(status="ok", raised=False, message="returned a result")

    def answer(self, header, fds):
        """(reply, arrays) for one of the judge's messages ((None, []) when the reply was sent already)."""
        from int4_lora_harness.serving.cases import case_from_wire
        from int4_lora_harness.verify import wire
        if header["verb"] == "load":
            return self.load(header["target"]), []
        payload = wire.unpack(header["payload"], _read_region(fds[0], header["layout"]))
        case = case_from_wire(payload["case"])
        if header["verb"] == "case":
            return self.run_case(header["target"], header["style"], case, payload["rewritten"])
        return self.refuse(header["target"], header["style"], case), []


def _read_region(fd, layout):
    """Copies of the arrays of a sealed memfd the judge sent ([(index, dtype name, shape, offset)]); closes `fd`."""
    import mmap

    import numpy as np
    with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as memory:
        arrays = [np.array(np.frombuffer(memory, np.dtype(dtype), int(np.prod(shape, dtype=np.int64)), offset)
                           .reshape(shape)) for _, dtype, shape, offset in layout]
    os.close(fd)
    return arrays


def serve(state):
    """Answer the judge until it closes the socket or kills this process; return after a collective failed."""
    from int4_lora_harness.verify import wire
    from int4_lora_harness.verify.targets import UsageError
    while True:
        try:
            header, _, fds = wire.receive(state.sock, with_fds=True)
        except EOFError:
            return
        try:
            reply, out = state.answer(header, fds)
        except UsageError as error:
            reply, out = dict(status="usage", message=str(error)[:TEXT_CAP]), []
        except Exception as error:  # one of the harness's collectives failed: a peer died, the group is gone
            first_line = (str(error).splitlines() or [""])[0][:200]
            return state.send(dict(status="aborted", step="", modified=[], message=(
                f"left the case: a collective failed, the group is gone ({type(error).__name__}: {first_line})")))
        if reply is not None:
            state.send(reply, out)


def main(argv):
    """A rank process: die with the judge, join the group, serve."""
    import socket
    sock = socket.socket(fileno=int(argv[0]))
    config = json.loads(argv[1])
    sys.path[:] = config["sys_path"]
    from int4_lora_harness.verify import sandbox  # the standard library only: nothing has started threads yet
    sandbox.die_with_parent(config["judge_pid"])
    if config["own_pids"]:  # PID 1 of a namespace: when it is killed, so is everything it started
        try:
            sandbox.pid_namespace()
        except sandbox.Unavailable:
            pass  # the judge still kills this process's tree and group
    import torch
    import torch.distributed as dist
    from datetime import timedelta
    try:  # files as for verify's candidate (harness.verify.child); TCP stays open: the ranks meet on loopback
        sandbox.landlock(config["read"], config["write"], network=True)
    except sandbox.Unavailable:
        pass  # the judge still kills this process's tree; the threat model says what that leaves open
    torch.set_num_threads(1)  # tp ranks share the machine's cores
    rank, tp, backend = config["rank"], config["tp"], config["backend"]
    device = torch.device("cpu")
    if config["device"] == "cuda":
        device = torch.device("cuda", rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=config["init_method"], rank=rank, world_size=tp,
                            timeout=timedelta(seconds=max(config["timeout"], 30.0)))
    state = Rank(sock, rank, tp, device, device if backend == "nccl" else torch.device("cpu"))
    state.send(dict(status="ready"))
    serve(state)


if __name__ == "__main__":
    main(sys.argv[1:])
