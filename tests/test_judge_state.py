"""The judge runs under its own NumPy error state and torch defaults, whatever the user's process set."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings

from int4_lora_harness import testing
from int4_lora_harness.verify.numerics import judge_numerics, torch_state
from planted.bugs import correct_linear_per_adapter


class UsersState:
    """NumPy raising on every floating-point error, a float64 default dtype, denormals flushed: set, then restored."""

    def __enter__(self):
        self.numpy, self.torch = np.seterr(all="raise"), torch_state()
        torch.set_default_dtype(torch.float64)
        torch.set_flush_denormal(True)
        torch.use_deterministic_algorithms(True, warn_only=True)

    def __exit__(self, *exc):
        np.seterr(**self.numpy)
        torch.set_default_dtype(self.torch["dtype"])
        torch.set_flush_denormal(self.torch["flush_denormal"])
        enabled, warn_only = self.torch["deterministic"]
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def test_judge_numerics_sets_a_fresh_interpreters_state_and_gives_the_callers_back():
    with UsersState():
        users = np.geterr(), torch_state()
        with torch.inference_mode(), judge_numerics():
            assert np.geterr() == dict(divide="warn", over="warn", under="ignore", invalid="warn")
            assert torch_state() == dict(dtype=torch.float32, deterministic=(False, False), flush_denormal=False,
                                         matmul_precision="highest")
            assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled()
            assert np.float16(1e-5) * np.float16(1e-5) == 0  # an underflow, ignored as a fresh NumPy ignores it
        assert (np.geterr(), torch_state()) == users


def test_the_testing_helpers_judge_a_correct_linear_under_a_users_numpy_raise_and_float64_default():
    with UsersState():
        cases = testing.explicit_cases("linear", large_tier=False)[:12]  # their inputs underflow when rounded
        for _, _, case in cases:
            testing.assert_holds(testing.linear_properties(correct_linear_per_adapter, case))
        assert np.geterr()["under"] == "raise"  # the user's state is theirs again between calls


def test_a_users_given_test_draws_and_judges_linear_cases_under_numpy_raise():
    judged = []

    @settings(max_examples=6, deadline=None, database=None)
    @given(case=testing.linear_cases())
    def users_test(case):  # drawing a case rounds its inputs: an underflow the user's state would raise on
        judged.append(testing.failures(testing.linear_properties(correct_linear_per_adapter, case)))

    with UsersState():
        users_test()
    assert judged == [[]] * 6  # every case drawn and judged, each property held, no FloatingPointError


def blas_threads():
    """{library: threads} of every BLAS NumPy loaded here (threadpoolctl's view)."""
    from threadpoolctl import threadpool_info
    return {info["filepath"]: info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}


def test_the_judge_runs_numpys_blas_on_one_thread_and_gives_the_callers_count_back():
    from threadpoolctl import threadpool_limits
    with threadpool_limits(2, user_api="blas"):
        users = blas_threads()
        assert users and set(users.values()) == {2}  # NumPy has a BLAS here, set to the user's 2 threads
        with judge_numerics():
            assert set(blas_threads().values()) == {1}
        assert blas_threads() == users


def test_the_judges_products_are_the_references_and_float32_stays_float32_under_a_users_lower_precision():
    from int4_lora_harness.reference.linear import base_exact
    from int4_lora_harness.verify import gemm
    rng = np.random.default_rng(0)
    x, w, bias = rng.integers(-9, 9, (16, 300)) * 0.5, rng.integers(-8, 8, (40, 300)) * 0.25, rng.normal(size=40)
    assert np.array_equal(base_exact(x, w, bias, gemm.products), base_exact(x, w, bias))  # integer sums: any order
    a, b = np.float32(1 + 2 ** -23), np.float32(1 - 2 ** -23)  # a product bf16 or tf32 inputs would round
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        with judge_numerics():
            product = gemm.products(np.full((1, 1), a), np.full((1, 1), b))
    finally:
        torch.set_float32_matmul_precision(previous)
    assert product.dtype == np.float32 and product[0, 0] == np.float32(np.float64(a) * np.float64(b))
    with pytest.raises(TypeError, match="one dtype"):
        gemm.products(x.astype(np.float32), w)


def test_small_products_stay_on_numpy_and_big_ones_give_the_same_values_on_torch(monkeypatch):
    from int4_lora_harness.verify import gemm
    rng = np.random.default_rng(1)
    x, w = rng.integers(-9, 9, (16, 4096)) * 0.5, rng.integers(-8, 8, (300, 4096)) * 0.25  # 19.7 M multiply-adds
    used = []
    monkeypatch.setattr(gemm.torch, "mm", lambda a, b: used.append(a.shape) or torch.matmul(a, b))
    small = gemm.products(x[:, :64], w[:, :64])
    assert used == [] and np.array_equal(small, x[:, :64] @ w[:, :64].T)
    big = gemm.products(x, w)
    assert used == [(16, 4096)] and np.array_equal(big, x @ w.T)  # integer sums: exact in any order
