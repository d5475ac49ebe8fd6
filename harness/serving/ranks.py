"""tp rank processes in one torch.distributed group, each calling the candidate as rank r of a serving engine would.

The harness starts the ranks itself (torch.multiprocessing, spawn); they meet on loopback (init_method
tcp://127.0.0.1:<free port>; gloo on CPU, NCCL on CUDA when every rank has its own GPU, else gloo) and
load the TARGET themselves, so the judge never imports it. Per case every rank:
  1. builds the case's tensors on its device (the full tensors: the candidate shards them) and calls the
     candidate by keyword with tp_rank=r, tp_size=tp, style;
  2. agrees with its peers that every rank returned a tensor of the contract's shape and dtype (one
     all_reduce of a flag), else every rank leaves the case;
  3. combines with the collective the style implies, in the harness's own code so it can be modelled
     (serving.tolerance): column styles all_gather the blocks (reassembled slice by slice by
     reference.layer.combine), row all_reduces the partial sums (SUM, in the partials' dtype: x.dtype
     or fp32; an fp32 sum is then rounded once to x.dtype);
  4. calls again (deterministic), writes the case's rewrite into the adapter stacks in place (the same
     tensors, as an engine's set_lora does), and calls and combines again (slot rewrite).
Each rank replies with its own results (rank 0 also with the combined ones). The judge waits at most
`timeout` seconds per case: a rank that raises, hangs or dies becomes a RankFailure with a kind
('raised', 'hung', 'crashed') and a line per rank; where a rank hung or died every process is killed
and a fresh group starts with the next case. Tensors travel as pickled bytes over pipes (no shared memory).
"""
import pickle
import socket
import time
from datetime import timedelta
from multiprocessing.connection import wait

import torch
import torch.multiprocessing

from int4_lora_harness.verify.executor import exit_words
from int4_lora_harness.verify.targets import UsageError

START_TIMEOUT_S = 300.0  # importing torch and the TARGET in tp processes on a busy machine
GRACE_S = 3.0  # after one rank raised or died, how long the others may take to leave the case


class RankFailure(Exception):
    """The candidate did not return on every rank: kind 'raised' | 'hung' | 'crashed'; ranks: a line per rank.

    fatal: not worth shrinking (the group was killed, or the ranks did not fail alike)."""

    def __init__(self, kind, message, ranks, fatal):
        super().__init__(f"{kind}: {message}")
        self.kind, self.message, self.ranks, self.fatal = kind, message, ranks, fatal


# --- a rank's side ---------------------------------------------------------------------------------

def _plain_cpu(t):
    """A plain CPU copy of a tensor result (a subclass's data, not its view of it)."""
    return torch.Tensor.as_subclass(t, torch.Tensor).detach().to("cpu", copy=True)


def _named_tensors(kwargs):
    """(name, tensor) for every tensor argument, stack entries as 'lora_a_stacked[s]'."""
    for name, value in kwargs.items():
        if isinstance(value, torch.Tensor):
            yield name, value
        elif isinstance(value, tuple):
            yield from ((f"{name}[{s}]", t) for s, t in enumerate(value) if isinstance(t, torch.Tensor))


def _shape_problem(out, shape, dtypes, device):
    """None, or what is wrong with a rank's result (the contract's shape, one of `dtypes`, on `device`)."""
    if not isinstance(out, torch.Tensor):
        return f"returned {type(out).__name__}, expected a torch.Tensor"
    problems = []
    if tuple(out.shape) != tuple(shape):
        problems.append(f"shape {list(out.shape)} != {list(shape)}")
    if out.dtype not in dtypes:
        problems.append(f"dtype {out.dtype} not in {[str(d) for d in dtypes]}")
    if out.device.type != device.type:
        problems.append(f"device {out.device} != {device}")
    return "; ".join(problems) or None


class _Rank:
    """One rank's state: its place in the group, its device, the TARGETs it has loaded."""

    def __init__(self, rank, tp, device, collective_device):
        self.rank, self.tp, self.device, self.collective_device = rank, tp, device, collective_device
        self.functions = {}

    def function(self, target):
        from int4_lora_harness.serving.cases import LAYER_PARAMETERS
        from int4_lora_harness.verify.targets import load_target
        if target not in self.functions:
            self.functions[target] = load_target(target, LAYER_PARAMETERS, "layer")
        return self.functions[target]

    def agree(self, ok, dtype_code=0):
        """(every rank says ok, every rank's result has the same dtype code): one all_reduce MIN of 3 ints."""
        import torch.distributed as dist
        flags = torch.tensor([1 if ok else 0, dtype_code, -dtype_code], device=self.collective_device)
        dist.all_reduce(flags, op=dist.ReduceOp.MIN)
        return bool(flags[0].item()), int(flags[1].item()) == -int(flags[2].item())

    def combine(self, out, style, x_dtype):
        """Rank 0: the all_gather'ed blocks (column styles) or the all_reduce'd sum in x_dtype (row); else None."""
        import torch.distributed as dist
        t = out.detach().to(self.collective_device).clone().contiguous()
        if style == "row":
            dist.all_reduce(t, op=dist.ReduceOp.SUM)  # in the partials' dtype
            return t.to(x_dtype).cpu() if self.rank == 0 else None
        parts = [torch.empty_like(t) for _ in range(self.tp)]
        dist.all_gather(parts, t)
        return [p.cpu() for p in parts] if self.rank == 0 else None

    def run_case(self, conn, target, style, case, rewritten):
        """The steps of the module docstring; returns the reply, or None after sending a 'raised' reply early."""
        function = self.function(target)
        kwargs = dict(case.torch_kwargs(self.device), tp_rank=self.rank, tp_size=self.tp, style=style)
        x_dtype, m, out_features = kwargs["x"].dtype, case.x.shape[0], sum(case.output_slices)
        shape = (m, out_features) if style == "row" else (m, out_features // self.tp)
        dtypes = (x_dtype, torch.float32) if style == "row" else (x_dtype,)
        before = {name: t.clone() for name, t in _named_tensors(kwargs)}
        calls, modified = [], []
        for step in ("first", "again", "rewritten")[:3 if rewritten is not None else 2]:
            if step == "rewritten":
                _write_stacks(kwargs, rewritten)
            try:
                out = function(**kwargs)
            except BaseException as error:  # SystemExit and the rest: each is a verdict
                conn.send_bytes(pickle.dumps(dict(status="raised", rank=self.rank, step=step,
                                                  message=f"{type(error).__name__}: {str(error)[:1000]}")))
                self.agree(False)  # let the peers leave the case too
                return None
            conn.send_bytes(pickle.dumps(dict(status="returned", rank=self.rank, step=step)))  # progress, for the judge
            problem = _shape_problem(out, shape, dtypes, self.device)
            all_ok, same_dtype = self.agree(problem is None, 0 if problem else dtypes.index(out.dtype))
            if all_ok and not same_dtype:  # an all_reduce of mixed dtypes is no collective at all
                problem = f"returned {out.dtype}, and the other ranks' partial sums are not all {out.dtype}"
            if problem or not all_ok:
                return dict(status="wrong" if problem else "aborted", rank=self.rank, step=step, calls=calls,
                            message=problem or "left the case: another rank raised or returned a wrong result")
            calls.append(dict(out=_plain_cpu(out), combined=self.combine(out, style, x_dtype)))
            if step == "first":
                from int4_lora_harness.verify.properties import same_bits
                modified = [name for name, t in _named_tensors(kwargs) if not same_bits(t, before[name])]
        return dict(status="ok", rank=self.rank, calls=calls, modified=modified)

    def refuse(self, target, style, case):
        """Call once on a layer the contract refuses; reply with what was raised (no collectives)."""
        kwargs = dict(case.torch_kwargs(self.device), tp_rank=self.rank, tp_size=self.tp, style=style)
        try:
            self.function(target)(**kwargs)
        except BaseException as error:
            return dict(status="ok", rank=self.rank, raised=isinstance(error, ValueError),
                        message=f"{type(error).__name__}: {str(error)[:1000]}")
        return dict(status="ok", rank=self.rank, raised=False, message="returned a result")


def _write_stacks(kwargs, rewritten):
    """Copy the rewritten case's adapter stacks into the held tensors, in place (an engine's set_lora)."""
    for name in ("lora_a_stacked", "lora_b_stacked"):
        for t, values in zip(kwargs[name], getattr(rewritten, name)):
            t.copy_(torch.from_numpy(values).to(t.dtype))


def _rank_main(rank, tp, init_method, backend, device_type, timeout, conn):
    """A rank process: join the group, then answer the judge's messages until 'stop'."""
    import torch.distributed as dist
    torch.set_num_threads(1)  # tp ranks share the machine's cores
    device = torch.device("cpu")
    if device_type == "cuda":
        device = torch.device("cuda", rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=tp,
                            timeout=timedelta(seconds=max(timeout, 30.0)))
    state = _Rank(rank, tp, device, device if backend == "nccl" else torch.device("cpu"))
    conn.send_bytes(pickle.dumps(dict(status="ready", rank=rank)))
    while True:
        verb, payload = pickle.loads(conn.recv_bytes())
        if verb == "stop":
            break
        try:
            reply = state.run_case(conn, *payload) if verb == "case" else state.refuse(*payload)
        except UsageError as error:
            reply = dict(status="usage", rank=rank, message=str(error))
        except Exception as error:  # one of the harness's collectives failed: a peer died, the group is gone
            first_line = (str(error).splitlines() or [""])[0][:200]
            return conn.send_bytes(pickle.dumps(dict(status="aborted", rank=rank, message=(
                f"left the case: a collective failed, the group is gone ({type(error).__name__}: {first_line})"))))
        if reply is not None:
            conn.send_bytes(pickle.dumps(reply))
    dist.destroy_process_group()


# --- the judge's side ------------------------------------------------------------------------------

def free_port():
    """A TCP port on loopback that nothing listens on now (the rendezvous of the next group)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend_for(device, tp):
    """'nccl' on CUDA when every rank has a GPU of its own, else 'gloo' (one GPU cannot hold two NCCL ranks)."""
    return "nccl" if device == "cuda" and torch.cuda.device_count() >= tp else "gloo"


class RankPool:
    """tp rank processes and their process group, started on first use and after a rank hung or died."""

    def __init__(self, tp, device="cpu", timeout=60.0):
        if tp < 1:
            raise ValueError(f"tp must be >= 1, got {tp}")
        self.tp, self.device, self.timeout = tp, device, timeout
        self.processes, self.conns = [], []

    def _start(self, attempts=2):
        """Spawn the ranks and wait for their process group; a second rendezvous port if the first was taken."""
        context = torch.multiprocessing.get_context("spawn")
        for attempt in range(attempts):
            init_method, backend = f"tcp://127.0.0.1:{free_port()}", backend_for(self.device, self.tp)
            for rank in range(self.tp):
                parent, child = context.Pipe()
                process = context.Process(target=_rank_main, args=(rank, self.tp, init_method, backend, self.device,
                                                                    self.timeout, child), daemon=True,
                                          name=f"int4-harness-rank-{rank}")
                process.start()
                child.close()
                self.processes.append(process)
                self.conns.append(parent)
            replies, missing, dead, _ = self._collect(time.monotonic() + START_TIMEOUT_S)
            if not (missing or dead):
                return
            self.close(kill=True)
        raise RankFailure("crashed" if dead else "hung", f"the {self.tp} ranks did not start a process group",
                          _rank_lines(replies, missing, dead, {}, START_TIMEOUT_S), True)

    def _collect(self, deadline):
        """(replies, ranks that did not answer, {rank: exit code} of ranks that died, {rank: last call returned})."""
        replies, dead, progress, pending = {}, {}, {}, set(range(self.tp))
        while pending and time.monotonic() < deadline:
            waiting = {self.conns[r]: r for r in pending}
            waiting.update({self.processes[r].sentinel: r for r in pending})
            for ready in wait(list(waiting), timeout=max(0.0, deadline - time.monotonic())):
                rank = waiting[ready]
                if rank not in pending:
                    continue
                reply = self._receive(rank)
                if reply is None:
                    dead[rank] = self.processes[rank].exitcode
                elif reply["status"] == "returned":  # a progress note: the final reply is still to come
                    progress[rank] = reply["step"]
                    continue
                else:
                    replies[rank] = reply
                pending.discard(rank)
                if reply is None or reply["status"] == "raised":  # the others get a grace period, not the timeout
                    deadline = min(deadline, time.monotonic() + GRACE_S)
        return replies, pending, dead, progress

    def _receive(self, rank):
        """The next message from `rank`, or None when its process has died."""
        try:
            if self.conns[rank].poll():
                return pickle.loads(self.conns[rank].recv_bytes())
        except (EOFError, OSError):
            pass
        self.processes[rank].join(1.0)
        return None

    def _ask(self, verb, payload):
        """Send one message to every rank; their replies in rank order, or RankFailure / UsageError."""
        if not self.processes:
            self._start()
        data = pickle.dumps((verb, payload), protocol=pickle.HIGHEST_PROTOCOL)
        for conn in self.conns:
            try:
                conn.send_bytes(data)
            except (BrokenPipeError, OSError):
                pass  # the rank is gone: _collect says how
        replies, missing, dead, progress = self._collect(time.monotonic() + self.timeout)
        usage = [r["message"] for r in replies.values() if r["status"] == "usage"]
        raised = [r for r in sorted(replies) if replies[r]["status"] == "raised"]
        if not (missing or dead or raised or usage):
            return [replies[r] for r in range(self.tp)]
        fatal = bool(missing or dead)  # a rank hung or died: the group cannot be trusted, start a new one
        if fatal:
            self.close(kill=True)
        if usage:
            raise UsageError(usage[0])
        lines = _rank_lines(replies, missing, dead, progress, self.timeout)
        kind = "raised" if raised else "crashed" if dead else "hung"
        blamed = [line for line in lines if not line["passed"] and "left the case" not in line["message"]
                  and "waited for the other ranks" not in line["message"]]
        first = (blamed or lines)[0]
        raise RankFailure(kind, f"rank {first['rank']}: {first['message']}", lines, fatal or len(raised) < self.tp)

    def run_case(self, target, style, case):
        """Every rank's reply to one LayerCase (see the module docstring)."""
        return self._ask("case", (target, style, case, case.rewritten() if case.rewrite else None))

    def refuse(self, target, style, case):
        """Every rank's reply to a layer the contract refuses: dict(raised=ValueError or not, message)."""
        return self._ask("refuse", (target, style, case))

    def close(self, kill=False):
        """Stop the ranks (kill: at once, for ranks that hung or whose peers died)."""
        for conn in self.conns if not kill else []:
            try:
                conn.send_bytes(pickle.dumps(("stop", None)))
            except (BrokenPipeError, OSError):
                pass
        for process in self.processes:
            process.join(0 if kill else GRACE_S)
            if process.is_alive():
                process.kill()
            process.join()
        for conn in self.conns:
            conn.close()
        self.processes, self.conns = [], []


def _rank_lines(replies, missing, dead, progress, timeout):
    """dict(rank, passed, message) for every rank of a case that did not complete."""
    lines = []
    for rank in sorted([*replies, *missing, *dead]):
        if rank in dead:
            message = f"the rank's process {exit_words(dead[rank])}"
        elif rank in missing and rank in progress:
            message = f"returned from its {progress[rank]} call, then waited for the other ranks (killed)"
        elif rank in missing:
            message = f"no answer within {timeout:g} s: still in its candidate call (killed)"
        elif replies[rank]["status"] == "raised":
            message = f"raised in its {replies[rank]['step']} call: {replies[rank]['message']}"
        else:
            message = replies[rank].get("message", "returned")
        lines.append(dict(rank=rank, passed=rank in replies and replies[rank]["status"] == "ok", message=message))
    return lines
