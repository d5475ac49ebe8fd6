"""4-bit fields in int32 words: how compressed-tensors, GPTQ and AWQ store nibbles.

Field i of a word is bits 4i..4i+3. The 8 elements of a block fill the 8 fields of one word either
sequentially (element k in field k) or in AWQ order (field i holds element AWQ_ORDER[i]).
"""
import numpy as np

SEQUENTIAL = (0, 1, 2, 3, 4, 5, 6, 7)  # field i of an int32 holds element i of its block of 8
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # field i holds element AWQ_ORDER[i]


def int32_to_nibbles(words, order=SEQUENTIAL):
    """int32 [..., n] -> uint8 [..., 8 n] in [0, 15]; element 8 w + order[i] is field i of word w."""
    fields = (words.view(np.uint32)[..., None] >> (4 * np.arange(8, dtype=np.uint32))) & 0xF  # [..., n, 8]
    elements = fields[..., np.argsort(order)]  # element e sits in field argsort(order)[e]
    return elements.reshape(*words.shape[:-1], 8 * words.shape[-1]).astype(np.uint8)


def nibbles_to_int32(nibbles, order=SEQUENTIAL):
    """uint8 [..., 8 n] in [0, 15] -> int32 [..., n]; the inverse of int32_to_nibbles."""
    blocks = nibbles.astype(np.uint32).reshape(*nibbles.shape[:-1], -1, 8)  # [..., n, 8] by element
    fields = blocks[..., list(order)] << (4 * np.arange(8, dtype=np.uint32))  # field i <- element order[i]
    return np.bitwise_or.reduce(fields, axis=-1).view(np.int32).copy()  # copy: plain C strides


def pad_to_8(nibbles):
    """uint8 [..., n] -> [..., 8 ceil(n / 8)], padded with zero fields."""
    return np.pad(nibbles, [(0, 0)] * (nibbles.ndim - 1) + [(0, -nibbles.shape[-1] % 8)])


def words_for(n):
    """Number of int32 words that hold n 4-bit fields."""
    return -(-n // 8)
