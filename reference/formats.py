"""Checkpoint formats into and out of the canonical layout: the names the loaders import.

The converters live in int4_lora_harness.reference.layouts, one module per format (compressed-tensors,
GPTQ v1/v2 with act-order, AWQ, GGUF Q4_0/Q4_1, HQQ); their conventions are in docs/formats.md and
docs/layouts/.
"""
from int4_lora_harness.reference.layouts import (AWQ_ORDER, GPTQ_ZERO_OFFSET, SEQUENTIAL, Canonical, act_order,  # noqa: F401
                                                 from_awq, from_compressed_tensors, from_gguf_q4_0, from_gguf_q4_1,
                                                 from_gptq, from_hqq, int32_to_nibbles, nibbles_to_int32, to_awq,
                                                 to_compressed_tensors, to_gguf_q4_0, to_gguf_q4_1, to_gptq, to_hqq)
from int4_lora_harness.reference.layouts.fields import pad_to_8, words_for  # noqa: F401
