"""PyTorch's CPU INT4 kernel (tinygemm's CPU port) as a two-phase linear in the canonical layout.

    int4-verify --linear examples/adapters/tinygemm_cpu.py:TinyGemm --dtypes bf16 --scale-dtypes bf16 \\
        --zero-points none --group-sizes 32,64,128 --no-bias                                  # PASS
    ... the same with --zero-points integer in place of --zero-points none                   # FAIL (wrong)

prepare, once per weight set (as torchao's Int4CPULayout and gpt-fast pack at load): the nibbles q = v + 8 as
int32 [N', K'] -> torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1), and one bf16 tensor
scales_and_zeros [K' / g, N', 2]. tinygemm dequantizes w = (q - 8) * scale + zero, a zero in the float domain:
the contract's W = (v - z) * s is w with zero = -z * s, rounded to bf16 (torchao keeps its zeros in bf16 too).
apply, every call: torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, g, scales_and_zeros) -> [M, N] bf16
(weights in fp32 registers, fp32 sums, one rounding), then the bias and the LoRA delta added in torch in fp32
and rounded to bf16 again: the design "unfused, w in fp32".

Glue, not part of the kernel: K is padded to a whole number of groups (x with zero columns, the weights with
v = 0) and N to a multiple of 16 (the kernel's rule; the padding rows are cut from the result), scales and zero
points of any granularity are spread over the kernel's groups (g = group_size where the case is grouped, else
32), and M = 0 returns an empty result.

The domain flags, each with its reason:
  --dtypes bf16            scales_and_zeros is built in bf16 at prepare, before any x is seen; apply refuses an
                           x of another dtype (ValueError)
  --scale-dtypes bf16      the scales are stored in bf16: an fp16 or fp32 scale bf16 cannot hold is rounded
  --zero-points none       the zero term -z * s is stored in bf16 (8 significant bits), where the exact z * s of
                           a bf16 scale and an integer z needs up to 12: W is off by up to 2**-9 |z s|
  --group-sizes 32,64,128  the kernel's qGroupSize is one of 32, 64, 128, 256 (the domain draws no 256)
  --no-bias                tinygemm takes no bias: added after its bf16 rounding, a token without an adapter
                           gets RN(RN(x W^T) + b), two roundings where the contract allows one
"""
import torch

from int4_lora_harness.kernels.torch_path import lora_delta  # the LoRA term, in torch, fp32

KERNEL_GROUP_SIZES = (32, 64, 128, 256)  # the qGroupSize values _weight_int4pack_mm_for_cpu accepts
N_MULTIPLE = 16  # _convert_weight_to_int4pack_cpu: "expect N to be dividable by 16"
UNGROUPED_GROUP = 32  # the kernel's group where the case has none (per-tensor and per-channel scales)


def _grouped(t):
    return t is not None and t.dim() == 2 and t.numel() > 1


def _grid(t, rows, groups):
    """Scales or zero points (per-tensor: one element, per-channel [N], grouped [N, G]) as fp32 [N, groups]."""
    t = t.to(torch.float32)
    return t if _grouped(t) else t.reshape(-1, 1).expand(rows, groups)


def _kernel_group(scales, zero_points, group_size):
    """The kernel's group: the case's group_size where anything is grouped, else UNGROUPED_GROUP."""
    grouped = _grouped(scales) or _grouped(zero_points)
    if not grouped:
        return UNGROUPED_GROUP
    if group_size not in KERNEL_GROUP_SIZES:
        raise ValueError(f"group_size must be one of {KERNEL_GROUP_SIZES} (the kernel's qGroupSize), got {group_size}")
    return group_size


class TinyGemm:
    """The two phases (a class of static methods: the TARGET is examples/adapters/tinygemm_cpu.py:TinyGemm)."""

    @staticmethod
    def prepare(packed_weights, scales, zero_points, group_size):
        """packed_weights: uint8 [N, K / 2]; scales, zero_points: [1] | [N] | [N, G] -> dict of the kernel's
        packed weight (uint8 [N', K' / 2]), scales_and_zeros (bf16 [K' / g, N', 2]), g, N and K."""
        n, k = packed_weights.shape[0], 2 * packed_weights.shape[1]
        g = _kernel_group(scales, zero_points, group_size)
        groups, rows = -(-k // g), -(-n // N_MULTIPLE) * N_MULTIPLE
        q = torch.stack([packed_weights & 0xF, packed_weights >> 4], dim=-1).reshape(n, k).to(torch.int32)
        q = torch.nn.functional.pad(q, (0, groups * g - k, 0, rows - n), value=8)  # [N', K'], padding v = 0
        s = _grid(scales, n, groups)  # [N, groups] fp32
        z = torch.zeros_like(s) if zero_points is None else _grid(zero_points, n, groups)
        scales_and_zeros = torch.stack([s, -z * s], dim=-1)  # [N, groups, 2]
        scales_and_zeros = torch.nn.functional.pad(scales_and_zeros, (0, 0, 0, 0, 0, rows - n))  # [N', groups, 2]
        scales_and_zeros = scales_and_zeros.transpose(0, 1).contiguous().to(torch.bfloat16)  # [groups, N', 2]
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.contiguous(), 1)
        return dict(packed=packed, scales_and_zeros=scales_and_zeros, g=g, n=n, k=k)

    @staticmethod
    def apply(prepared, x, lora_a, lora_b, lora_indices, scaling, bias):
        """x: bf16 [M, K] -> bf16 [M, N]: the kernel's product, then bias and LoRA in fp32, rounded to bf16."""
        if x.dtype != torch.bfloat16:
            raise ValueError(f"x must be bf16 (scales_and_zeros are bf16; run with --dtypes bf16), got {x.dtype}")
        m, n = x.shape[0], prepared["n"]
        if m == 0:
            return torch.empty(0, n, dtype=x.dtype)
        k_padded = prepared["scales_and_zeros"].shape[0] * prepared["g"]
        x_padded = torch.nn.functional.pad(x, (0, k_padded - prepared["k"])).contiguous()  # [M, K']
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x_padded, prepared["packed"], prepared["g"],
                                                       prepared["scales_and_zeros"])[:, :n]  # [M, N] bf16
        if bias is None and lora_a is None:
            return y.contiguous()
        y32 = y.float() if bias is None else y.float() + bias.float()
        if lora_a is not None:
            has_adapter = (lora_indices >= 0)[:, None]  # [M, 1]
            y32 = torch.where(has_adapter, y32 + lora_delta(x, lora_a, lora_b, lora_indices, scaling), y32)
        return y32.to(x.dtype)
