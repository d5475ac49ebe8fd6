"""The serving layer around the INT4 + LoRA linear (docs/contract.md#layer): stacked adapter slots, merged output slices and
tensor parallelism, as a third contract (`layer`) that verify judges (docs/serving.md).

Read in this order: cases (LayerCase, the contract's parameters), strategies (what is drawn), tolerance
(the all-reduce's extra error), rank (the program of a tp rank process: the candidate's side), replies (what the
judge reads from a rank), ranks (the judge's side: the processes, their limits, their ends), properties, verify_layer
(the entry point of `verify --layer`). The ground truth is int4_lora_harness.reference.layer; a torch
implementation is int4_lora_harness.kernels.torch_layer (the judge never imports it: it is a TARGET).
"""
__all__ = ["cases", "properties", "rank", "ranks", "replies", "strategies", "tolerance", "verify_layer"]
