"""The CPU dequantizer in C (int4_cpu.c), built on first use and loaded by ctypes (harness/cbuild.py).

Why C: the dequantizer is one pass of table lookups (PSHUFB) that no sequence of torch ops can fuse.
The library is built and cached by int4_lora_harness.cbuild (with -march=native, keyed by the source,
the compiler and this CPU's flags).

Where it cannot be built (no compiler, or INT4_LORA_HARNESS_NATIVE=0 in the environment), the torch
path keeps its torch ops and `unavailable_reason()` says why; a failed build warns once, with the
compiler's message.
"""
import ctypes
from functools import cache
from pathlib import Path

import torch

from int4_lora_harness import cbuild

SOURCE = Path(__file__).with_name("int4_cpu.c")
KINDS = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2}  # int4_cpu.c's output formats
HUGE_PAGE_MIN_BYTES = 4 << 20  # outputs from this size ask for 2 MiB pages (int4_advise_huge_pages)
I64, PTR = ctypes.c_int64, ctypes.c_void_p


@cache
def library():
    """The loaded library, or a cbuild.Missing whose `why` says why not (warned once, unless turned off on purpose)."""
    lib = cbuild.load(SOURCE, "INT4_LORA_HARNESS_NATIVE", "the C dequantizer", "the torch ops are used")
    if isinstance(lib, cbuild.Missing):
        return lib
    lib.int4_dequantize.argtypes = [PTR, I64, I64, PTR, I64, I64, PTR, I64, I64, I64, ctypes.c_int, PTR]
    lib.int4_dequantize.restype = None
    lib.int4_advise_huge_pages.argtypes = [PTR, ctypes.c_size_t]
    lib.int4_advise_huge_pages.restype = ctypes.c_int
    return lib


def unavailable_reason():
    """None where the C dequantizer runs here, else why not."""
    lib = library()
    return lib.why if isinstance(lib, cbuild.Missing) else None


def group_operand(t, kind, num_groups):
    """Scales or zero points as (float64 contiguous tensor, row stride, group stride) for int4_dequantize.

    kind: 'per-tensor' | 'per-channel' | 'grouped' (docs/contract.md#packed-weight); t is converted exactly (integers as NumPy
    converts them to float64, to nearest).
    """
    t64 = t.to(torch.float64).contiguous()
    strides = {"per-tensor": (0, 0), "per-channel": (1, 0), "grouped": (num_groups, 1)}[kind]
    return t64, *strides


def dequantize_into(packed, scales, zero_points, width, rows, out):
    """out [R, in] (fp16/bf16/fp32, contiguous, CPU) <- the weights of rows `rows` (a slice) of packed [out, in // 2].

    scales, zero_points: group_operand triples of the whole layer (zero_points None for none); width:
    columns per group. Each weight rounded once, bit for bit reference.dequantize.
    """
    assert packed.is_contiguous() and out.is_contiguous() and out.shape == (rows.stop - rows.start, 2 * packed.shape[1])
    s, s_row, s_group = scales
    z, z_row, z_group = zero_points if zero_points is not None else (None, 0, 0)
    at = lambda t, row_stride: t.data_ptr() + rows.start * row_stride * t.element_size()  # noqa: E731  row `start`
    library().int4_dequantize(at(packed, packed.shape[1]), out.shape[0], packed.shape[1], at(s, s_row), s_row,
                              s_group, None if z is None else at(z, z_row), z_row, z_group, width, KINDS[out.dtype],
                              out.data_ptr())


def empty_output(shape, dtype):
    """torch.empty(shape, dtype) on the CPU, on transparent huge pages where Linux offers them.

    A new [out, in] result is first written page by page: 4 KiB pages fault in one by one (on a VM,
    about 20 ms for 32 MiB); 2 MiB pages fault 512 times less often. Only a hint: where the kernel
    does not take it, the tensor is the same, on small pages.
    """
    out = torch.empty(shape, dtype=dtype)
    nbytes = out.numel() * out.element_size()
    if nbytes >= HUGE_PAGE_MIN_BYTES and unavailable_reason() is None:
        library().int4_advise_huge_pages(out.data_ptr(), nbytes)
    return out
