"""Nibble packing of docs/contract.md#packed-weight: two signed 4-bit values per byte, offset binary.

Byte `packed[o, j]` holds column `2j` in its low nibble and column `2j + 1` in its
high nibble; a nibble `q` in [0, 15] stands for `v = q - 8` in [-8, 7].
"""
import numpy as np

from int4_lora_harness.reference.checks import real_array


def pack(values):
    """values: integers [out, in] in [-8, 7], `in` even -> uint8 [out, in // 2].

    An integer dtype, or floating point values that are all exact integers (3.0 packs as 3);
    0.5, NaN, inf, bool and complex values are refused, never truncated.
    """
    values = real_array(values, "values")
    if values.ndim != 2 or values.shape[1] % 2:
        raise ValueError(f"values must be 2-D with an even number of columns, got shape {values.shape}")
    if values.dtype.kind == "f" and not np.all(np.isfinite(values) & (values == np.round(values))):
        raise ValueError("values must be integers: floating point values must be exact integers (no 0.5, NaN, inf)")
    if values.min(initial=0) < -8 or values.max(initial=0) > 7:
        raise ValueError("values must lie in [-8, 7]")
    nibbles = (values.astype(np.int16) + 8).astype(np.uint8)  # q = v + 8
    low, high = nibbles[:, 0::2], nibbles[:, 1::2]
    return (low | (high << 4)).astype(np.uint8)


def unpack(packed):
    """packed: uint8 [out, in // 2] -> int8 [out, in] in [-8, 7]."""
    if packed is None:
        raise TypeError("packed_weights must be a uint8 array, got None")
    packed = np.asarray(packed)
    if packed.dtype != np.uint8:
        raise ValueError(f"packed_weights must be uint8, got {packed.dtype}")
    if packed.ndim != 2:
        raise ValueError(f"packed_weights must be 2-D [out, in // 2], got shape {packed.shape}")
    low = (packed & 0x0F).astype(np.int8) - 8
    high = ((packed >> 4) & 0x0F).astype(np.int8) - 8
    values = np.empty((packed.shape[0], 2 * packed.shape[1]), dtype=np.int8)
    values[:, 0::2] = low  # column 2j
    values[:, 1::2] = high  # column 2j + 1
    return values
