"""Fast paths for the INT4 + LoRA contract of SPEC.md, by name in kernels.registry.BACKENDS."""
from kernels.registry import BACKENDS, Backend, available

__all__ = ["BACKENDS", "Backend", "available"]
