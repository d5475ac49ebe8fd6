"""The judge's big matrix products, on torch's CPU BLAS rather than NumPy's.

The tolerance model and the exact probes multiply a few tokens by a whole layer: skinny GEMMs of
16 x 14336 by 14336 x 4096. NumPy's OpenBLAS runs them on threads that wait for each other by
spinning, which a busy machine turns into a 50x slowdown (harness.verify.numerics: the judge keeps
NumPy's BLAS on one thread); torch's BLAS runs the big ones on OpenMP threads that sleep when idle
(harness.verify.limits.THREAD_WAIT), so the judge keeps every core on a quiet machine and loses
little on a busy one. Small products stay on NumPy's one thread. The judge runs under
harness.verify.numerics.judge_numerics, so float32 products are float32 (torch's default "highest" matmul
precision), whatever the user's process set.
"""
import numpy as np
import torch

# multiply-adds from which torch's threads take a product (16 x 4096 x 256; below, one thread is done in ~1 ms
# while waking another can cost a scheduler tick on a busy machine: 15 ms per 16 x 128 x 64 product at load 10)
PARALLEL_FROM = 1 << 24


def products(a, b):
    """a @ b.T: a [M, K], b [N, K] NumPy arrays of one dtype (float64 or float32) -> [M, N] of that dtype.
    Below PARALLEL_FROM multiply-adds on NumPy's one thread: waking a second thread costs more than the product."""
    if a.dtype != b.dtype:
        raise TypeError(f"products needs one dtype, got a {a.dtype} and b {b.dtype}")
    if a.shape[0] * a.shape[1] * b.shape[0] < PARALLEL_FROM:
        return a @ b.T
    return torch.mm(_tensor(a), _tensor(b).T).numpy()


def _tensor(array):
    """A CPU tensor over `array`'s memory (a copy only where NumPy marks it read-only or its strides are negative)."""
    if not array.flags.writeable or any(s < 0 for s in array.strides):
        array = array.copy()
    return torch.from_numpy(array)
