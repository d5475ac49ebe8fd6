"""Correct linears of the unfused design (SPEC §5): the base output rounded to x.dtype first, the LoRA delta
added with one more rounding. Both must PASS with the design named, and FAIL under --designs single-rounding."""
import torch

from planted.bugs import dequantize


def _base_in_x_dtype(x, packed_weights, scales, zero_points, group_size, bias):
    """The base layer as an engine runs it: x @ W^T (+ bias) with fp32 accumulation, written in x.dtype."""
    w = dequantize(packed_weights, scales, zero_points, group_size, x.dtype).float()
    y = x.float() @ w.T
    return (y if bias is None else y + bias.float()).to(x.dtype)


def peft_style(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias):
    """peft's LoRA Linear: result = base(x); result += lora_B(lora_A(x)) * scaling, every step in x.dtype
    (each GEMM accumulated in fp32 and written in x.dtype), one adapter at a time."""
    y = _base_in_x_dtype(x, packed_weights, scales, zero_points, group_size, bias)
    for i in range(0 if lora_a is None else lora_a.shape[0]):
        rows = lora_indices == i
        t = (x[rows].float() @ lora_a[i].float().T).to(x.dtype)  # lora_A(x): [tokens, rank] in x.dtype
        delta = (t.float() @ lora_b[i].float().T).to(x.dtype)  # lora_B(...): [tokens, out] in x.dtype
        y[rows] = (y[rows].float() + (delta.float() * scaling).to(x.dtype).float()).to(x.dtype)
    return y


def punica_style(x, packed_weights, scales, zero_points, group_size, lora_a, lora_b, lora_indices, scaling, bias):
    """vLLM's punica path: the base GEMM writes y in x.dtype; the shrink writes fp32 (scaled), the expand adds into
    y (y = RN_x(y + t @ B^T)); index -1 adds nothing."""
    y = _base_in_x_dtype(x, packed_weights, scales, zero_points, group_size, bias)
    if lora_a is None:
        return y
    a = lora_a[lora_indices.clamp(min=0)].float()  # [M, rank, in]
    b = lora_b[lora_indices.clamp(min=0)].float()  # [M, out, rank]
    t = scaling * torch.bmm(a, x.float()[:, :, None])  # [M, rank, 1] fp32
    delta = torch.bmm(b, t)[:, :, 0]  # [M, out] fp32
    used = (lora_indices >= 0)[:, None]
    return torch.where(used, (y.float() + torch.where(used, delta, 0.0)).to(x.dtype), y)


UNFUSED_LINEARS = {f.__name__: f for f in (peft_style, punica_style)}
