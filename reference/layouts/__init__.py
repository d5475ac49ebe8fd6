"""Native INT4 layouts into and out of the canonical layout of docs/contract.md#packed-weight, one module per format. NumPy only.

Canonical: `packed` uint8 [out, in // 2] (low nibble = column 2j, high nibble = column 2j + 1,
nibble q stands for v = q - 8), scales and zero points per-tensor, [out] or [out, ceil(in / g)],
and W = (v - z) * s. In canonical terms (q = stored 4-bit field, G = number of groups; one page
per layout in docs/layouts/):

| module             | weights                          | v     | zero points                       | z            |
| ------------------ | -------------------------------- | ----- | --------------------------------- | ------------ |
| compressed_tensors | weight_packed int32 [out, in/8]  | q - 8 | weight_zero_point [ceil(out/8), G] | qz - 8       |
| gptq ("v1")        | qweight int32 [in/8, out]        | q - 8 | qzeros [G, ceil(out/8)]           | qz - 7       |
| gptq ("v2")        | qweight int32 [in/8, out]        | q - 8 | qzeros [G, ceil(out/8)]           | qz - 8       |
| awq                | qweight int32 [in, ceil(out/8)]  | q - 8 | qzeros [G, ceil(out/8)]           | qz - 8       |
| gguf (Q4_0)        | blocks uint8 [out, in/32*18]     | q - 8 | none                              | 0            |
| gguf (Q4_1)        | blocks uint8 [out, in/32*20]     | q - 8 | fp16 m per block                  | -8 - m / d   |
| hqq                | W_q uint8 [rows/2, g]            | q - 8 | float zero [rows, 1]              | zero - 8     |

Every `to_*` takes a Canonical and returns the format's arrays by their own names; every `from_*`
takes those names and returns a Canonical; both raise ValueError naming the tensor and the rule.
"""
from int4_lora_harness.reference.layouts.awq import from_awq, to_awq
from int4_lora_harness.reference.layouts.canonical import Canonical
from int4_lora_harness.reference.layouts.compressed_tensors import from_compressed_tensors, to_compressed_tensors
from int4_lora_harness.reference.layouts.fields import AWQ_ORDER, SEQUENTIAL, int32_to_nibbles, nibbles_to_int32
from int4_lora_harness.reference.layouts.gguf import from_gguf_q4_0, from_gguf_q4_1, to_gguf_q4_0, to_gguf_q4_1
from int4_lora_harness.reference.layouts.gptq import GPTQ_ZERO_OFFSET, act_order, from_gptq, to_gptq
from int4_lora_harness.reference.layouts.hqq import from_hqq, to_hqq

__all__ = ["AWQ_ORDER", "GPTQ_ZERO_OFFSET", "SEQUENTIAL", "Canonical", "act_order", "from_awq",
           "from_compressed_tensors", "from_gguf_q4_0", "from_gguf_q4_1", "from_gptq", "from_hqq", "int32_to_nibbles",
           "nibbles_to_int32", "to_awq", "to_compressed_tensors", "to_gguf_q4_0", "to_gguf_q4_1", "to_gptq", "to_hqq"]
