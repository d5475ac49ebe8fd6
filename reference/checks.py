"""Argument rules of docs/contract.md#packed-weight, #dequantizer, #linear that the reference applies, and kernels.checks applies to tensors too.

The wrong kind of object (None, a str, a float group size, a tensor for `scaling`) is a TypeError;
the right kind with a wrong dtype, shape or value is a ValueError. Both name the argument and the rule.
Arrays are anything np.asarray turns into real numbers: NumPy arrays, nested lists, Python scalars.
"""
import numpy as np

from int4_lora_harness.reference.rounding import FORMATS

REAL_KINDS = "iuf"  # NumPy dtype kinds of real numbers: signed, unsigned, floating (not bool 'b', complex 'c')
INTEGER_KINDS = "iu"


def is_integer(value):
    """True for a Python int or a NumPy integer scalar (bool and np.bool_ are not integers here)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_group_size(group_size):
    """docs/contract.md#packed-weight: group_size is None or an integer; whether it must be >= 1 is decided where grouped tensors need it."""
    if group_size is not None and not is_integer(group_size):
        raise TypeError(f"group_size must be None or an integer (int or numpy integer, not bool or float), "
                        f"got {type(group_size).__name__} {group_size!r}")


def check_size(value, name):
    """out_features / in_features where an array is built from them: an integer >= 0."""
    if not is_integer(value):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def check_scaling(scaling):
    """docs/contract.md#linear: scaling is a real number (int, float, NumPy integer or floating scalar), finite or not;
    bool, str, complex, arrays and tensors (even 0-d: they would hide a device sync) are refused."""
    if isinstance(scaling, bool) or not isinstance(scaling, (int, float, np.integer, np.floating)):
        raise TypeError(f"scaling must be a real number (int, float or numpy scalar), got {type(scaling).__name__}")


def check_format_name(dtype, name):
    """The reference names its output formats 'fp16', 'bf16' or 'fp32'."""
    if not isinstance(dtype, str):
        raise TypeError(f"{name} must be one of {sorted(FORMATS)} (a str), got {type(dtype).__name__} {dtype!r}")
    if dtype not in FORMATS:
        raise ValueError(f"{name} must be one of {sorted(FORMATS)}, got {dtype!r}")


def real_array(t, name, kinds=REAL_KINDS):
    """np.asarray(t), refused unless its dtype kind is one of `kinds` (default: integer or floating point)."""
    if t is None:
        raise TypeError(f"{name} must be an array, got None")
    try:
        array = np.asarray(t)
    except (TypeError, ValueError) as error:  # ragged nested lists, bf16 torch tensors, ...
        raise ValueError(f"{name} must be a rectangular array of numbers: {error}") from error
    if array.dtype.kind not in kinds:
        what = "integers" if kinds == INTEGER_KINDS else "real numbers (integer or floating point)"
        raise ValueError(f"{name} must hold {what}, got dtype {array.dtype}")
    return array
