"""The one wire format between the judge and the candidate's process: plain JSON, then raw bytes.

A message is an 8-byte length (little-endian), a JSON header of plain numbers, strings, lists and dicts, and
then the raw bytes of the arrays the header lists under "arrays" ({dtype, shape}), back to back. Nothing is
deserialized as an object: json.loads builds only dicts, lists, strings and numbers, an array's dtype comes
from a fixed list, and its byte count is its shape's product times the item size, checked before anything is
allocated. The reader says which arrays it accepts (`accept`: dtype and shape as expected, bytes within a
budget); a message with any other array is a WireError, and its bytes are never read.

The judge also sends file descriptors (sealed memfds holding a case's inputs) beside a message (SCM_RIGHTS);
it never accepts any from the candidate's process.
"""
import json
import socket
import struct
import time

import numpy as np

MAX_HEADER = 1 << 20  # a header longer than 1 MiB is not a header
MAX_DIMS = 8
# dtype name -> the NumPy dtype its bytes travel as (bf16 as its 16 bits; numpy has no bfloat16)
CARRIERS = {"float16": np.float16, "bfloat16": np.uint16, "float32": np.float32, "float64": np.float64,
            "int8": np.int8, "uint8": np.uint8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
            "bool": np.uint8}


class WireError(Exception):
    """A message that is not of the wire format, or that holds what the reader did not accept."""


def nbytes(dtype, shape):
    """Bytes of an array of `dtype` (a name of CARRIERS) and `shape` (a list of non-negative ints)."""
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(CARRIERS[dtype]).itemsize


def array_meta(dtype, shape):
    """{dtype, shape} for a header, checked: WireError for an unknown dtype or a shape that is not plain ints."""
    if dtype not in CARRIERS:
        raise WireError(f"dtype {str(dtype)[:40]!r} is not one of {', '.join(CARRIERS)}")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(
            type(n) is int and 0 <= n < 2**40 for n in shape):
        raise WireError(f"shape {str(shape)[:80]} is not a list of at most {MAX_DIMS} non-negative ints")
    return dict(dtype=dtype, shape=shape)


def send(sock, header, arrays=(), fds=()):
    """Send `header` (a JSON-able dict; its "arrays" entry is set here) and `arrays` ([(dtype name, C-contiguous
    NumPy array of the carrier dtype)]), with `fds` (open file descriptors) beside the first bytes."""
    header = dict(header, arrays=[array_meta(d, list(a.shape)) for d, a in arrays])
    text = json.dumps(header, allow_nan=True).encode()
    first = struct.pack("<Q", len(text)) + text
    if fds:
        socket.send_fds(sock, [first], list(fds))
    else:
        sock.sendall(first)
    for _, a in arrays:
        if a.nbytes:
            sock.sendall(memoryview(np.ascontiguousarray(a)).cast("B"))


def receive(sock, accept=None, idle=None, with_fds=False):
    """(header dict, [NumPy arrays of the carrier dtypes], [fds]) of one message.

    accept(meta list) -> None or raises WireError: called on the header's arrays before any is allocated (None:
    accept any). idle(): called whenever the socket's timeout passes with nothing to read (it raises to give up).
    with_fds: take file descriptors sent beside the message (the judge never does)."""
    fds = []
    length, more = _read(sock, 8, idle, fds if with_fds else None)
    (size,) = struct.unpack("<Q", length)
    if size > MAX_HEADER:
        raise WireError(f"a header of {size} bytes (at most {MAX_HEADER})")
    try:
        header = json.loads(bytes(_read(sock, size, idle)[0]))
    except (ValueError, RecursionError) as error:  # RecursionError: a header of thousands of nested lists
        raise WireError(f"the header is not JSON: {error}") from None
    if not isinstance(header, dict) or not isinstance(header.get("arrays", []), list):
        raise WireError("the header is not a JSON object with a list of arrays")
    metas = [array_meta(m.get("dtype"), m.get("shape")) if isinstance(m, dict) else array_meta(None, None)
             for m in header.get("arrays", [])]
    if accept is not None:
        accept(metas)
    arrays = []
    for m in metas:
        a = np.empty(m["shape"], dtype=CARRIERS[m["dtype"]])
        if a.nbytes:
            _read_into(sock, memoryview(a.reshape(-1)).cast("B"), idle)
        arrays.append(a)
    return header, arrays, fds


ARRAY_KEY = "__array__"  # {"__array__": i} in a packed tree stands for the i-th array of its message
MAX_DEPTH = 16  # a packed tree nested deeper is not one


def pack(tree):
    """(a JSON-able tree, [(dtype name, array)] for `send`) of `tree`: nested dicts (str keys), lists, tuples
    (sent as lists) and plain values, each NumPy array in it replaced by {"__array__": its index}. Arrays must be
    of a dtype whose bytes travel as themselves (float16/32/64, int8/16/32/64, uint8): WireError otherwise."""
    arrays = []

    def walk(node, depth):
        if depth > MAX_DEPTH:
            raise WireError(f"a tree nested deeper than {MAX_DEPTH}")
        if isinstance(node, np.ndarray):
            name = node.dtype.name
            if CARRIERS.get(name) is None or np.dtype(CARRIERS[name]) != node.dtype:
                raise WireError(f"an array of dtype {name} does not travel as itself (pack takes "
                                f"{', '.join(n for n, c in CARRIERS.items() if np.dtype(c).name == n)})")
            arrays.append((name, np.ascontiguousarray(node)))
            return {ARRAY_KEY: len(arrays) - 1}
        if isinstance(node, dict):
            if not all(isinstance(k, str) and k != ARRAY_KEY for k in node):
                raise WireError(f"a dict with a key that is not a string, or is {ARRAY_KEY!r}")
            return {k: walk(v, depth + 1) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return [walk(v, depth + 1) for v in node]
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        raise WireError(f"a {type(node).__name__} cannot travel in a packed tree")
    return walk(tree, 0), arrays


def unpack(tree, arrays):
    """`tree` (JSON a `receive` returned) with each {"__array__": i} replaced by arrays[i]: every array used exactly
    once, nesting at most MAX_DEPTH; WireError otherwise. Builds only dicts, lists and the values already there."""
    used = set()

    def walk(node, depth):
        if depth > MAX_DEPTH:
            raise WireError(f"a tree nested deeper than {MAX_DEPTH}")
        if isinstance(node, dict) and ARRAY_KEY in node:
            index = node[ARRAY_KEY]
            if len(node) != 1 or type(index) is not int or not 0 <= index < len(arrays) or index in used:
                raise WireError(f"{str(node)[:80]} names no array of the {len(arrays)} sent, or one named before")
            used.add(index)
            return arrays[index]
        if isinstance(node, dict):
            return {k: walk(v, depth + 1) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, depth + 1) for v in node]
        return node
    out = walk(tree, 0)
    if len(used) != len(arrays):
        raise WireError(f"{len(arrays) - len(used)} of the {len(arrays)} arrays sent are named nowhere")
    return out


class _Pace:
    """Calls `idle` whenever the socket's timeout passes with nothing to read, and also every timeout's worth of
    wall time while bytes trickle in: a sender cannot hold the reader by sending one byte at a time."""

    def __init__(self, sock, idle):
        self.idle, self.every, self.last = idle, sock.gettimeout(), time.monotonic()

    def waited(self):
        if self.idle is None:
            raise socket.timeout("timed out")
        self.idle()
        self.last = time.monotonic()

    def received(self):
        if self.idle is not None and self.every is not None and time.monotonic() - self.last >= self.every:
            self.waited()


def _read(sock, n, idle, fds=None):
    """n bytes (a bytearray); file descriptors that came with them appended to `fds` where it is a list."""
    buffer = bytearray(n)
    _read_into(sock, memoryview(buffer), idle, fds)
    return buffer, n


def _read_into(sock, view, idle, fds=None):
    """Fill `view` from the socket (the first bytes with their file descriptors where `fds` is a list)."""
    got, pace = 0, _Pace(sock, idle)
    while got < len(view):
        try:
            if fds is not None and got == 0:
                data, new_fds, _, _ = socket.recv_fds(sock, len(view), 16)
                fds += new_fds
                view[:len(data)] = data
                count = len(data)
            else:
                count = sock.recv_into(view[got:])
        except socket.timeout:
            pace.waited()
            continue
        if count == 0:
            raise EOFError("the other side closed the connection")
        got += count
        pace.received()
