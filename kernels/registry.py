"""Backends by name: what implements the two contracts and whether it can run here.

Adding a fast path means adding one entry to BACKENDS; the property tests and
`verify` pick it up without changes.
"""
import importlib
import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Backend:
    name: str
    module: str  # imported on first use, so a missing optional dependency never breaks `import kernels`
    cpu_needs_interpreter: bool = False  # Triton runs CPU tensors only under TRITON_INTERPRET=1
    cuda_only: bool = False  # never runs CPU tensors (inline PTX)

    def _load(self):
        return importlib.import_module(self.module)

    def unavailable_reason(self, device="cpu"):
        """None when this backend can run on `device` ('cpu' | 'cuda') here, else why not."""
        if device == "cuda" and not torch.cuda.is_available():
            return "CUDA is not available"
        if device == "cpu" and self.cuda_only:
            return "runs on CUDA tensors only"
        if device == "cpu" and self.cpu_needs_interpreter and os.environ.get("TRITON_INTERPRET") != "1":
            return "runs on CPU only under TRITON_INTERPRET=1"
        try:
            module = self._load()
        except ImportError as error:
            return f"cannot import {self.module}: {error}"
        return getattr(module, "unavailable_reason", lambda: None)()

    @property
    def dequantize(self):
        return self._load().dequantize

    @property
    def linear(self):
        return self._load().linear


BACKENDS = {
    "torch": Backend("torch", "int4_lora_harness.kernels.torch_path"),
    "triton": Backend("triton", "int4_lora_harness.kernels.triton_int4", cpu_needs_interpreter=True),
    "triton-ptx": Backend("triton-ptx", "int4_lora_harness.kernels.triton_ptx", cuda_only=True),  # inline PTX unpack
}


def available(device="cpu"):
    """Backends that can run on `device` here, by name."""
    return {name: b for name, b in BACKENDS.items() if b.unavailable_reason(device) is None}
