"""A case's input tensors in one sealed memfd: what the judge shares with the candidate's process.

The judge writes the tensors' bytes into a memory file, seals its size (the candidate cannot shrink it
under the judge's mapping), and sends a duplicate of its descriptor with the layout [(name, dtype name,
shape, offset)]. The candidate's CPU tensors are views of that memory (harness.verify.child.Region), so the
judge sees whatever a call wrote into its inputs by reading its own mapping and comparing it, byte for
byte, with the tensors it sent (`modified`): no check of the candidate's process is trusted for it.
"""
import ctypes
import fcntl
import mmap
import os

import numpy as np
import torch

ALIGN = 64  # each tensor starts on a cache line (and a SIMD kernel's alignment)
_memcmp = ctypes.CDLL(None).memcmp  # the C library's: a third of NumPy's time to compare, and no temporary
_memcmp.argtypes, _memcmp.restype = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t], ctypes.c_int


def dtype_name(dtype):
    return str(dtype).removeprefix("torch.")


def tensor_bytes(t):
    """A CPU tensor's bytes as a flat NumPy uint8 array (a view where it is contiguous)."""
    flat = t.detach().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy()


def same_bytes(a, b):
    """Whether two flat uint8 NumPy arrays (contiguous, as tensor_bytes gives) hold the same bytes."""
    if a.size != b.size:
        return False
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    return a.size == 0 or _memcmp(a.ctypes.data, b.ctypes.data, a.size) == 0


class Region:
    """`tensors` ({name: CPU tensor}) in a sealed memfd; `sent` keeps the tensors themselves (the judge's)."""

    def __init__(self, tensors):
        self.sent, self.layout, offset = dict(tensors), [], 0
        for name, t in tensors.items():
            self.layout.append((name, dtype_name(t.dtype), [int(n) for n in t.shape], offset))
            offset += -(-t.numel() * t.element_size() // ALIGN) * ALIGN
        self.size = max(offset, ALIGN)
        self.fd = os.memfd_create("int4-harness-case", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.ftruncate(self.fd, self.size)
        fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
        self.map = mmap.mmap(self.fd, self.size)
        self.bytes = np.frombuffer(self.map, dtype=np.uint8)
        self.spans = {name: self.bytes[offset:offset + self.sent[name].numel() * self.sent[name].element_size()]
                      for name, _, _, offset in self.layout}  # each input's bytes in the shared memory
        self.sent_bytes = {}  # each input's bytes as the judge sent them (views of `sent`)
        for name in self.spans:
            self._write(name, self.sent[name])

    def _write(self, name, t):
        self.sent_bytes[name] = tensor_bytes(t)
        self.spans[name][:] = self.sent_bytes[name]

    def update(self, name, t):
        """New values for input `name` (same dtype and shape), in the shared memory and in `sent`."""
        old = self.sent[name]
        if t.dtype != old.dtype or t.shape != old.shape:
            raise ValueError(f"update of {name}: {t.dtype} {list(t.shape)} is not {old.dtype} {list(old.shape)}")
        self.sent[name] = t
        self._write(name, t)

    def modified(self):
        """Names of the inputs whose shared bytes differ from what the judge sent (NaN == NaN, -0 != +0)."""
        return [name for name, span in self.spans.items() if not same_bytes(span, self.sent_bytes[name])]

    def descriptor(self):
        """A new descriptor of the memory file, for sending (the receiver closes it)."""
        return os.dup(self.fd)

    def close(self):
        del self.bytes, self.spans
        try:
            self.map.close()
        except BufferError:  # a view still exported (an in-process candidate kept its input): the GC frees it
            pass
        os.close(self.fd)
