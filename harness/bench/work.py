"""Bytes and FLOPs: the one work model behind every GB/s, TFLOP/s and % of peak (bench rows, the GPU table, the page).

Bytes are the compulsory traffic: every operand read once, the output written once, the weight in
the backend's own format (packed for the INT4 paths, x.dtype for `dense`, packed plus writing and
re-reading an x.dtype copy for `materialize`). Adapters count only those some token uses. FLOPs are
the useful ones, the same for every backend. Input bytes, behind the bytes-moved floor
(harness.bench.honesty), are what a call must read however it runs: the same less the output and
`materialize`'s copy (a cache may absorb writes and temporaries).
"""
from math import ceil

ITEMSIZE = {"fp16": 2, "bf16": 2, "fp32": 4, "uint8": 1, "int8": 1, "int16": 2, "int32": 4, "int64": 8}
MEMORY_GROUP_SIZE = 128  # the page's memory section: group size 128, fp16 scales, no zero points


def packed_bytes(out_features, in_features, scale_groups, scale_itemsize=2, zero_groups=0, zero_itemsize=0):
    """Nibbles plus scales (and zero points), `*_groups` values per output row."""
    return out_features * in_features // 2 + out_features * (scale_groups * scale_itemsize + zero_groups * zero_itemsize)


def layer_bytes(out_features, in_features, group_size=MEMORY_GROUP_SIZE):
    """(packed, fp16) bytes of one layer: nibbles + one fp16 scale per group (the last may be ragged); dense fp16."""
    return packed_bytes(out_features, in_features, ceil(in_features / group_size)), out_features * in_features * 2


def weight_bytes(weights):
    """(packed bytes: nibbles + scales + zero points, fp16 bytes of the same weight) of harness.verify.cases.Weights."""
    out_features, in_features = weights.shape
    packed = weights.packed.nbytes + weights.scales.size * ITEMSIZE[weights.scales_dtype]
    if weights.zero_points is not None:
        packed += weights.zero_points.size * ITEMSIZE[weights.zero_points_dtype]
    return packed, 2 * out_features * in_features


def work(weight_format, operation, out_features, in_features, m, x_itemsize, packed, adapters=None, zero_points=False):
    """(bytes_moved, flops) of one call.

    weight_format: 'packed' | 'dense' | 'materialize'; operation: 'dequantize' | 'gemm' | 'gemm_lora';
    packed: packed weight bytes; adapters: None or (rank, adapters used by some token, tokens with an
    adapter, index bytes) for gemm_lora; zero_points: a dequantize computes (v - z) * s, else v * s.
    """
    dense = out_features * in_features * x_itemsize
    if operation == "dequantize":
        return packed + dense, out_features * in_features * (2 if zero_points else 1)
    weight = {"dense": dense, "materialize": packed + 2 * dense}.get(weight_format, packed)
    moved = weight + m * in_features * x_itemsize + m * out_features * x_itemsize
    flops = 2 * m * out_features * in_features
    if adapters is not None:
        rank, used, active, index_bytes = adapters
        moved += used * rank * (in_features + out_features) * x_itemsize + index_bytes
        flops += 2 * active * rank * (in_features + out_features)
    return moved, flops


def output_bytes(operation, out_features, in_features, m, x_itemsize):
    """Bytes of the result: [out, in] for a dequantize, [M, out] for a linear, of x.dtype."""
    return out_features * (in_features if operation == "dequantize" else m) * x_itemsize


def input_bytes(weight_format, operation, out_features, in_features, m, x_itemsize, packed, adapters=None):
    """Bytes a call must read: work()'s bytes_moved without the output, and `materialize` as `packed` (its x.dtype
    copy is written and read back within the call)."""
    stored = "packed" if weight_format == "materialize" else weight_format
    moved, _ = work(stored, operation, out_features, in_features, m, x_itemsize, packed, adapters)
    return moved - output_bytes(operation, out_features, in_features, m, x_itemsize)


def case_work(weight_format, operation, case):
    """work() of a harness.verify.cases.LinearCase (its weights, M, dtype and adapters)."""
    out_features, in_features, m, itemsize, packed, adapters = _case_terms(operation, case)
    return work(weight_format, operation, out_features, in_features, m, itemsize, packed, adapters,
                case.weights.zero_points is not None)


def case_input_bytes(weight_format, operation, case):
    """input_bytes() of a harness.verify.cases.LinearCase."""
    return input_bytes(weight_format, operation, *_case_terms(operation, case))


def _case_terms(operation, case):
    """(out_features, in_features, M, x itemsize, packed bytes, adapters) of work() for a LinearCase."""
    import numpy as np
    out_features, in_features = case.weights.shape
    packed, _ = weight_bytes(case.weights)
    adapters = None
    if case.lora_a is not None and operation == "gemm_lora":
        indices = case.lora_indices
        adapters = (case.lora_a.shape[1], np.unique(indices[indices >= 0]).size, int((indices >= 0).sum()),
                    indices.nbytes)
    return out_features, in_features, case.x.shape[0], ITEMSIZE[case.x_dtype], packed, adapters
