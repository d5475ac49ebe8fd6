"""What the judge reads from a rank process (serving.rank): which arrays a reply may hold, and the reply, checked.

A rank is the candidate's process, so its reply is data to check, never to trust. `Expected` says which arrays a
message's replies may carry, for wire.receive's `accept` (called before anything is allocated): per completed
call, the rank's result ([M, out / tp] in x.dtype for column styles; [M, out] in x.dtype or fp32 for row), then on
rank 0 the combined output (row: [M, out] in x.dtype; column styles: tp blocks [M, out / tp]). The readers turn a
header into the plain dict the properties read, with strings capped and every field checked: WireError for
anything else (the rank broke the wire format: 'crashed').
"""
from int4_lora_harness.verify import wire
from int4_lora_harness.verify.cases import TORCH_DTYPES
from int4_lora_harness.verify.executor import tensor_from_wire

TEXT_CAP = 2000


def text(value, cap=TEXT_CAP):
    """A string a rank sent, as a string of at most `cap` characters."""
    return (value if isinstance(value, str) else repr(value))[:cap]


class Expected:
    """The arrays one message's replies may hold: per completed call (at most `steps`), `per_call(rank)` =
    [(dtype names, shape)]: the rank's result, then on rank 0 the combined output."""

    def __init__(self, per_call=lambda rank: [], steps=0, row=False):
        self.per_call, self.steps, self.row = per_call, steps, row

    @classmethod
    def case(cls, case, style, tp, steps):
        """A case's: [M, out] in x.dtype or fp32 (row), else [M, out / tp] in x.dtype; rank 0's combined output:
        [M, out] in x.dtype (row) or tp blocks [M, out / tp] (column styles)."""
        m, out, x = case.x.shape[0], sum(case.output_slices), str(TORCH_DTYPES[case.x_dtype]).removeprefix("torch.")
        own = ({x, "float32"}, [m, out]) if style == "row" else ({x}, [m, out // tp])
        combined = [({x}, [m, out])] if style == "row" else [own] * tp
        return cls(lambda rank: [own] + (combined if rank == 0 else []), steps, style == "row")

    def accept(self, rank):
        """wire.receive's `accept` for `rank`: WireError for any other array, or more of them."""
        per_call = self.per_call(rank)

        def accept(metas):
            for index, meta in enumerate(metas[:len(per_call) * self.steps]):
                dtypes, shape = per_call[index % len(per_call)]
                if meta["dtype"] not in dtypes or meta["shape"] != shape:
                    raise wire.WireError(f"sent array {index} as {meta['dtype']} {meta['shape'][:8]} where "
                                         f"{' or '.join(sorted(dtypes))} {shape} was expected")
            if metas and (len(metas) % len(per_call or [0]) or len(metas) > self.steps * len(per_call)):
                raise wire.WireError(f"sent {len(metas)} arrays where {len(per_call)} per call, for at most "
                                     f"{self.steps} calls, were expected")
        return accept

    def calls(self, rank, metas, arrays):
        """[dict(out: CPU tensor, combined: None | tensor (row) | [tp tensors])] of the calls a reply holds."""
        tensors = [tensor_from_wire(m["dtype"], a) for m, a in zip(metas, arrays)]
        size = len(self.per_call(rank)) or 1
        calls = []
        for start in range(0, len(tensors), size):
            blocks = tensors[start + 1:start + size]
            calls.append(dict(out=tensors[start], combined=None if rank else blocks[0] if self.row else blocks))
        return calls


def _status(header, allowed):
    status = header.get("status")
    if status not in allowed:
        raise wire.WireError(f"answered with status {text(status, 40)!r}, not one of {', '.join(allowed)}")
    return status


def read_case(expected):
    """A case reply, checked: dict(status, rank, step, message, calls, modified)."""
    def read(rank, header, arrays):
        status = _status(header, ("ok", "wrong", "aborted", "raised", "usage"))
        calls = expected.calls(rank, header["arrays"], arrays)
        if status == "ok" and len(calls) != expected.steps:
            raise wire.WireError(f"said ok after {len(calls)} of its {expected.steps} calls")
        modified = header.get("modified", [])
        if not isinstance(modified, list) or not all(isinstance(name, str) for name in modified):
            raise wire.WireError("sent 'modified' that is not a list of names")
        return dict(status=status, rank=rank, step=text(header.get("step", ""), 40),
                    message=text(header.get("message", "")), calls=calls, modified=[text(n, 200) for n in modified])
    return read


def read_plain(*allowed):
    """A reply without arrays: dict(status, rank, step, message, raised: whether it says a ValueError was raised)."""
    def read(rank, header, arrays):
        return dict(status=_status(header, allowed), rank=rank, step=text(header.get("step", ""), 40),
                    message=text(header.get("message", "")), raised=header.get("raised") is True)
    return read
