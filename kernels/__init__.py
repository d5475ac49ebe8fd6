"""Fast paths for the INT4 + LoRA contract of docs/contract.md, by name in kernels.registry.BACKENDS."""
from int4_lora_harness.kernels.registry import BACKENDS, Backend, available

__all__ = ["BACKENDS", "Backend", "available"]
