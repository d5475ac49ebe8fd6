"""The judge's own numeric state, whatever the user's process set: `with judge_numerics(): ...`.

A user's process may set np.seterr(all="raise"), a float64 default dtype, a CUDA default device,
inference mode, deterministic algorithms, flush-to-zero of denormals or a lower float32 matmul precision
(in a conftest.py, a fixture, around a test). None of that may change a verdict or end the judge with the
user's exception. The judge's entry points (engine.verify_candidate, verify's run, the pytest plugin,
int4_lora_harness.testing, the serving judge) run under `judge_numerics()`: the state a fresh interpreter
starts with (NumPy's default error handling, torch's defaults), which is also the state of the
candidate's own child process. The caller's state is restored on exit.

One thing differs from a fresh interpreter: NumPy's BLAS runs on one thread (JUDGE_BLAS_THREADS). NumPy's
OpenBLAS parks its threads by spinning and hands work between them at barriers; on a busy machine a thread
that loses its core holds the others up, and the judge's skinny GEMMs (16 tokens x a layer) ran 50x slower
at load 10 on 2 cores (16 x 14400 x 291 float64: 440 ms on 2 threads, 8 ms on one). The judge's big
products run on torch's BLAS instead (harness.verify.gemm), whose OpenMP threads sleep when idle.
"""
import contextlib
import functools

import numpy as np

NUMPY_DEFAULT = dict(divide="warn", over="warn", under="ignore", invalid="warn")  # np.geterr() of a fresh interpreter
TINY_FP32 = 1e-40  # a float32 subnormal: it multiplies to 0 only where denormals are flushed
JUDGE_BLAS_THREADS = 1  # NumPy's BLAS threads while the judge runs (see above)


def torch_defaults():
    """A fresh interpreter's torch settings, in the fields `torch_state` reads."""
    import torch
    return dict(dtype=torch.float32, deterministic=(False, False), flush_denormal=False, matmul_precision="highest")


def torch_state():
    """The process's torch settings that change what a computation gives or whether it raises."""
    import torch
    tiny = torch.tensor([TINY_FP32], dtype=torch.float32, device="cpu")
    return dict(dtype=torch.get_default_dtype(),
                deterministic=(torch.are_deterministic_algorithms_enabled(),
                               torch.is_deterministic_algorithms_warn_only_enabled()),
                flush_denormal=bool((tiny * 1.0)[0] == 0), matmul_precision=torch.get_float32_matmul_precision())


def set_torch_state(state):
    import torch
    torch.set_default_dtype(state["dtype"])
    now = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    if state["deterministic"] != now:  # setting it imports torch._inductor: seconds, so only when it changes
        torch.use_deterministic_algorithms(state["deterministic"][0], warn_only=state["deterministic"][1])
    torch.set_flush_denormal(state["flush_denormal"])
    torch.set_float32_matmul_precision(state["matmul_precision"])


@contextlib.contextmanager
def judge_numerics():
    """Run the body under NumPy's default error state and torch's defaults: float32 default dtype, CPU default
    device, grad mode on, inference mode off (as in a fresh interpreter), NumPy's BLAS on JUDGE_BLAS_THREADS;
    the caller's state comes back on exit, raised or not."""
    import torch
    from threadpoolctl import threadpool_limits
    saved = torch_state()
    with contextlib.ExitStack() as stack:
        for context in (np.errstate(**NUMPY_DEFAULT), torch.inference_mode(False), torch.enable_grad(),
                        threadpool_limits(JUDGE_BLAS_THREADS, user_api="blas")):
            stack.enter_context(context)
        if torch.get_default_device().type != "cpu":  # set_default_device or `with torch.device(...)`
            stack.enter_context(torch.device("cpu"))  # the innermost device context wins
        set_torch_state(torch_defaults())
        try:
            yield
        finally:
            set_torch_state(saved)


def judged(function):
    """`function` run under judge_numerics() (for the entry points that are plain functions)."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with judge_numerics():
            return function(*args, **kwargs)
    return wrapper
