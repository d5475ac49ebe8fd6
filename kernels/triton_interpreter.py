"""bf16 under Triton's CPU interpreter (TRITON_INTERPRET=1), computed as a GPU computes it: `fix_bf16()`.

The defect (triton/runtime/interpreter.py; Triton 3.7.1 checked): the interpreter holds a bf16 value as its
uint16 bit pattern, and its builder hands those patterns to NumPy as if they were integers: tl.dot, + - * /,
comparisons and tl.sum compute on the bits (a bf16 dot of values near 1 returns ~1e10), fp32 -> bf16
truncates instead of rounding to nearest even, other conversions to or from bf16 cast the bits as integers,
and a bf16 tensor meeting a Python number (x * 3.0) raises AttributeError. A correct bf16 kernel then reads
wrong values, and a verdict would blame the kernel for the interpreter's arithmetic. (Math functions,
min/max/clamp and cumsum are unaffected: Triton itself refuses bf16 there or promotes it to fp32.)

The correction, applied to the interpreter's builder (no kernel line changes): an operation with a bf16
operand widens it exactly to fp32 (its bits << 16), runs the interpreter's own fp32 operation, and rounds a
bf16 result once to nearest even (NaN stays NaN, overflow goes to inf): GPU arithmetic. + - * / then equal
one correctly rounded bf16 operation (fp32 keeps 24 >= 2 * 8 + 2 bits, so the double rounding is
innocuous); tl.dot gets exact products summed in fp32; tl.fma is fp32's fma rounded once to bf16; a bf16
tl.sum rounds each partial sum to bf16, in index order (a GPU's tree order may differ). fp64, integers and
Python numbers convert to bf16 with one rounding (through fp32 rounded to odd). bf16 atomics stay as the
interpreter has them: refused ("Unsupported data type").

The patch is global to the process (the builder is shared by every kernel), so calling `fix_bf16()` once,
before a kernel launches, corrects the project's kernels and a candidate's own alike.
"""
import os

import numpy as np


def widen(bits):
    """fp32 array (same shape) holding exactly the bf16 values whose bit patterns are `bits` (uint16)."""
    return (np.asarray(bits).astype(np.uint32) << np.uint32(16)).view(np.float32)


def round_to_bf16(values):
    """bf16 bit patterns (uint16, same shape) of `values` (any real or bool array), each rounded once to nearest
    even, as cvt.rn.bf16 rounds; NaN stays NaN (quiet), overflow becomes inf.

    fp16/fp32 are exact in fp32; other values (fp64, integers; integers past 2**53 round once more on their
    way to fp64) are first rounded to odd in fp32, after which one rounding to nearest even equals rounding
    the value itself (fp32 keeps more than 8 + 2 bits).
    """
    values = np.asarray(values)
    fp32 = values.astype(np.float32) if values.dtype in (np.float16, np.float32) else _odd_fp32(values)
    bits = np.ascontiguousarray(fp32).view(np.uint32)
    nearest = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    quiet_nan = (bits >> np.uint32(16)) | np.uint32(0x0040)
    return np.where(np.isnan(fp32), quiet_nan, nearest).astype(np.uint16)


def _odd_fp32(values):
    """float32 array of `values` rounded to odd: truncated toward zero, last bit set where inexact."""
    wide = values.astype(np.float64)
    with np.errstate(over="ignore"):  # past fp32's range: inf, stepped back to the largest finite fp32 below
        nearest = wide.astype(np.float32)
    inexact = (nearest != wide) & ~np.isnan(wide)
    toward_zero = np.where(inexact & (np.abs(nearest) > np.abs(wide)), np.nextafter(nearest, np.float32(0)), nearest)
    return (np.ascontiguousarray(toward_zero).view(np.uint32) | inexact.astype(np.uint32)).view(np.float32)


def defects():
    """What Triton's interpreter, as it stands in this process, computes wrong in bf16: one line each, [] if
    nothing. Probes the interpreter's builder directly (no kernel runs); imports triton."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpreterBuilder, TensorHandle

    builder = InterpreterBuilder()

    def bf16(*values):
        return TensorHandle(round_to_bf16(np.array(values, np.float32)), tl.bfloat16)

    def value(handle):  # the first value a probe returned, as a Python float
        return float((widen(handle.data) if handle.dtype == tl.bfloat16 else handle.data).reshape(-1)[0])

    found = []
    total = value(builder.create_fadd(bf16(1.0), bf16(1.0)))
    if total != 2.0:
        found.append(f"bf16 1 + 1 gives {total:g} (the bit patterns added as integers)")
    rounded = value(builder.create_fp_trunc(TensorHandle(np.array([1 + 3 * 2.0**-9], np.float32), tl.float32),
                                            tl.bfloat16))
    if rounded != 1 + 2.0**-7:
        found.append(f"fp32 1 + 3 * 2**-9 -> bf16 gives {rounded!r}, not 1 + 2**-7 (truncated, not rounded to even)")
    zero = TensorHandle(np.zeros((1, 1), np.float32), tl.float32)
    product = value(builder.create_dot(TensorHandle(bf16(1.5).data.reshape(1, 1), tl.bfloat16),
                                       TensorHandle(bf16(2.0).data.reshape(1, 1), tl.bfloat16), zero, None, 0))
    if product != 3.0:
        found.append(f"bf16 tl.dot of 1.5 and 2 gives {product:g} (the bit patterns multiplied as integers)")
    if not hasattr(builder, "get_bf16"):
        found.append("a bf16 tensor meeting a Python number (x * 3.0) raises AttributeError: no get_bf16")
    return found


def fix_bf16():
    """Make Triton's interpreter compute bf16 as a GPU does (module docstring); returns the defects it corrected.

    Idempotent, and a no-op returning () unless TRITON_INTERPRET=1 and the installed triton has the defect
    (without TRITON_INTERPRET=1 it does not even import triton). Raises RuntimeError, one line naming the
    defects and what to do, where this Triton's interpreter has them and the correction does not take.
    """
    if os.environ.get("TRITON_INTERPRET") != "1":
        return ()
    try:
        from triton.runtime import interpreter
    except ImportError:  # no usable triton: no Triton kernel can run, so there is nothing to correct
        return ()
    found = defects()
    if not found:
        return ()  # a Triton without the defect, or corrected already
    _patch(interpreter)
    left = defects()
    if left:
        raise RuntimeError(f"Triton's interpreter computes bf16 wrongly and this harness cannot correct this "
                           f"Triton ({'; '.join(left)}): judge bf16 kernels on a GPU, or fp16/fp32 under "
                           f"TRITON_INTERPRET=1")
    return tuple(found)


def _patch(interpreter):
    """Wrap the interpreter's builder and its tl.sum so that bf16 computes in fp32 (module docstring)."""
    builder, handle, tl = interpreter.InterpreterBuilder, interpreter.TensorHandle, interpreter.tl

    def is_bf16(arg):
        return isinstance(arg, handle) and arg.dtype == tl.bfloat16

    def in_fp32(method, result_from):
        """`method` run on fp32 copies of its bf16 operands; its result rounded back to bf16 where operand
        `result_from` (the one whose dtype the result takes; None: a dtype named by the call) is bf16 (a
        comparison's bools stay as they are)."""
        def corrected(self, *args):
            if not any(is_bf16(a) for a in args):
                return method(self, *args)
            out = method(self, *(handle(widen(a.data), tl.float32) if is_bf16(a) else a for a in args))
            if result_from is None or not is_bf16(args[result_from]):
                return out
            return handle(round_to_bf16(out.data) if out.data.dtype == np.float32 else out.data, tl.bfloat16)
        return corrected

    def cast_impl(original):
        from_fp32 = in_fp32(original, None)  # bf16 -> any: converted from its exact fp32 value

        def corrected(self, src, dst_type):
            if dst_type.scalar == tl.bfloat16 and src.dtype != tl.bfloat16:
                return handle(round_to_bf16(src.data), tl.bfloat16)
            return from_fp32(self, src, dst_type)
        return corrected

    def summed(original):
        """A bf16 tl.sum through the interpreter's generic reduction: the corrected + rounds each partial sum."""
        def corrected(self, input):
            return original(self, input) if input.dtype != tl.bfloat16 else self.generic_reduce((input,))[0]
        return corrected

    for name, result_from in (("binary_op", 0), ("create_fma", 2), ("create_dot", 2), ("create_fp_to_fp", None)):
        setattr(builder, name, in_fp32(getattr(builder, name), result_from))
    builder.cast_impl = cast_impl(builder.cast_impl)
    builder.get_bf16 = lambda self, value: handle(round_to_bf16(np.array([value], np.float64)), tl.bfloat16)
    interpreter.ReduceOps.sum = summed(interpreter.ReduceOps.sum)
