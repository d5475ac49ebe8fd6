"""ONNX Runtime's MatMulNBits (com.microsoft, bits=4) as a two-phase linear in the canonical layout.

    int4-verify --linear examples/adapters/onnx_matmul_nbits.py:accuracy_level_0 --group-sizes 16,32,64,128 \
        --zero-points integer                                                                 # PASS
    int4-verify --linear examples/adapters/onnx_matmul_nbits.py:accuracy_level_4 --group-sizes 16,32,64,128 \
        --zero-points integer                                                                 # FAIL (wrong)

prepare, once per weight set: a one-node ONNX graph (built with the `onnx` helper) whose weights are
initializers, and an InferenceSession on the CPU execution provider made from it (where ONNX Runtime prepacks
them). MatMulNBits dequantizes w = (q - zp) * scale per block of `block_size` columns, q the unsigned nibble; the
contract's W = (v - z) * s, v = q - 8, is that with zp = 8 + z: integer zero points travel as packed uint4
(z in [-8, 7]), fractional ones as float zero points of the graph's type, no zero points as the op's default 8.
B is the canonical packed_weights split into blocks ([N, K / 2] -> [N, k_blocks, block_size / 2]: the same
low-nibble-first order), the scales the [N, k_blocks] grid. The graph computes in fp32 (x widened exactly, the
scales too); apply runs the session, adds the bias and the LoRA delta in torch in fp32 and rounds once to x's
dtype.

accuracy_level (an attribute of the node): 0 computes in the graph's type (fp32 here); 4 quantizes the
activations to int8 per block before the product (MLAS's CompInt8), which is fast and not the contract.

Glue, not part of the kernel: scales and zero points of any granularity are spread over the op's blocks
(block_size = group_size where the case is grouped, else 32), and M = 0 returns an empty result.

The domain flags, each with its reason:
  --group-sizes 16,32,64,128   block_size must be a power of 2 and at least 16 (the domain also draws 2, 24, 96)
  --zero-points integer        a fractional z travels as the float zero point zp = 8 + z, of the graph's type
                               (fp32): rounded where z has bits below 2**-20, and q - zp cancels them into
                               a weight near 0 (the one-hot column probe of big K: 12 ulp)
"""
import numpy as np
import torch

from int4_lora_harness.kernels.torch_path import lora_delta  # the LoRA term, in torch, fp32

UNGROUPED_BLOCK = 32  # the op's block where the case has none (per-tensor and per-channel scales)


def _grouped(t):
    return t is not None and t.dim() == 2 and t.numel() > 1


def _grid(t, rows, blocks):
    """Scales or zero points (per-tensor: one element, per-channel [N], grouped [N, G]) as float64 [N, blocks]."""
    t = t.to(torch.float64)
    return (t if _grouped(t) else t.reshape(-1, 1).expand(rows, blocks)).numpy()


def _block_size(scales, zero_points, group_size):
    """The op's block_size: the case's group_size where anything is grouped, else UNGROUPED_BLOCK."""
    if not (_grouped(scales) or _grouped(zero_points)):
        return UNGROUPED_BLOCK
    if group_size < 16 or group_size & (group_size - 1):
        raise ValueError(f"group_size must be a power of 2 and at least 16 (MatMulNBits' block_size), got {group_size}")
    return group_size


def _packed_zero_points(zero_points, n, blocks):
    """Integer z -> uint8 [N * ceil(blocks / 2)]: zp = 8 + z as uint4, block b of a row in byte b // 2, low first."""
    zp = _grid(zero_points, n, blocks) + 8
    if zp.min() < 0 or zp.max() > 15:
        raise ValueError("integer zero_points must lie in [-8, 7] (8 + z is an unsigned nibble)")
    zp = np.pad(zp.astype(np.uint8), ((0, 0), (0, blocks % 2)))  # [N, 2 * ceil(blocks / 2)]
    return (zp[:, 0::2] | (zp[:, 1::2] << 4)).reshape(-1)


def _graph(n, k, block_size, accuracy_level, initializers):
    """The one-node model: Y [M, N] = MatMulNBits(A [M, K], *initializers), everything fp32 but B (and uint8 zp)."""
    from onnx import TensorProto, helper, numpy_helper
    node = helper.make_node("MatMulNBits", ["A", *initializers], ["Y"], domain="com.microsoft", K=k, N=n, bits=4,
                            block_size=block_size, accuracy_level=accuracy_level)
    graph = helper.make_graph([node], "int4_linear", [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["M", k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", n])],
                              [numpy_helper.from_array(a, name) for name, a in initializers.items()])
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10  # what ONNX Runtime reads, whichever onnx wrote it
    return model


class MatMulNBits:
    """The two phases at one accuracy_level (an instance is the TARGET: accuracy_level_0, accuracy_level_4)."""

    def __init__(self, accuracy_level):
        self.accuracy_level = accuracy_level

    def prepare(self, packed_weights, scales, zero_points, group_size):
        """packed_weights: uint8 [N, K / 2]; scales, zero_points: [1] | [N] | [N, G] -> dict of the session, N, K."""
        import onnxruntime
        n, k = packed_weights.shape[0], 2 * packed_weights.shape[1]
        block = _block_size(scales, zero_points, group_size)
        blocks = -(-k // block)
        b = np.pad(packed_weights.numpy(), ((0, 0), (0, blocks * block // 2 - k // 2)), constant_values=0x88)
        initializers = dict(B=b.reshape(n, blocks, block // 2), scales=_grid(scales, n, blocks).astype(np.float32))
        if zero_points is not None and zero_points.is_floating_point():
            initializers["zero_points"] = (_grid(zero_points, n, blocks) + 8).astype(np.float32)
        elif zero_points is not None:
            initializers["zero_points"] = _packed_zero_points(zero_points, n, blocks)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # no spinning pool of threads: the judge's limits measure CPU time
        model = _graph(n, k, block, self.accuracy_level, initializers).SerializeToString()
        session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        return dict(session=session, n=n, k=k)

    def apply(self, prepared, x, lora_a, lora_b, lora_indices, scaling, bias):
        """x: [M, K] fp16, bf16 or fp32 -> [M, N] of x.dtype: the session's fp32 product, then bias and LoRA in
        fp32, one rounding to x.dtype."""
        m, n = x.shape[0], prepared["n"]
        if m == 0:
            return torch.empty(0, n, dtype=x.dtype)
        (y,) = prepared["session"].run(None, {"A": x.float().contiguous().numpy()})
        y32 = torch.from_numpy(y)  # [M, N] fp32
        if bias is not None:
            y32 = y32 + bias.float()
        if lora_a is not None:
            has_adapter = (lora_indices >= 0)[:, None]  # [M, 1]
            y32 = torch.where(has_adapter, y32 + lora_delta(x, lora_a, lora_b, lora_indices, scaling), y32)
        return y32.to(x.dtype)


accuracy_level_0 = MatMulNBits(0)
accuracy_level_4 = MatMulNBits(4)
