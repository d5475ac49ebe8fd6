"""Tests specific to the Triton fast path (kernels/triton_int4.py); the shared properties live in test_backends.

Runs on CUDA natively, or on CPU under Triton's interpreter (TRITON_INTERPRET=1, set before
triton is imported), which costs ~0.1 s per program instance: shapes here stay within a few tiles.
Every comparison uses int4_lora_harness.verify.tolerance, the repo's error model of SPEC §5 (one bound per
correct design, derived from unit roundoffs, K and sum |x||w|), except the one test that
compares with reference.linear directly and states its own bound, and the tests of the interpreter's
bf16 correction (kernels/triton_interpreter.py), which expect GPU arithmetic bit for bit.
"""
import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from int4_lora_harness import reference
from int4_lora_harness.verify.cases import make_linear_case, make_weights, tensor
from int4_lora_harness.verify.dequantizer import dequant_error
from int4_lora_harness.verify.tolerance import linear_error
from int4_lora_harness.kernels import triton_int4, triton_interpreter
from fresh_interpreter import run_fresh

triton_interpreter.fix_bf16()  # where the interpreter's bf16 cannot be corrected: an error here, not a skip below
if triton_int4.unavailable_reason() is not None:
    pytest.skip(f"Triton backend cannot run here: {triton_int4.unavailable_reason()}", allow_module_level=True)
import triton  # noqa: E402  (only where the backend runs: the skip above)
import triton.language as tl  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # cpu only under the interpreter (checked above)
pytestmark = pytest.mark.interpreter


def run_case(case, **replacements):
    """Run triton_int4.linear on a harness LinearCase (fields replaced as given); return (y, ErrorReport)."""
    case = dataclasses.replace(case, **replacements)
    y = triton_int4.linear(*case.torch_args(DEVICE))
    return y, linear_error(y.float().cpu().numpy(), case)


def assert_within_tolerance(report):
    assert report.passed, f"error/allowed {report.max_ratio:.3g} at {report.worst()}"


def test_launch_config_follows_the_m_regime():
    decode = [triton_int4.launch_config(m, 4096, 4096) for m in (1, 7, 16)]
    assert all(c == decode[0] and c["BLOCK_M"] == 16 for c in decode)
    assert [triton_int4.launch_config(m, 4096, 4096)["BLOCK_M"] for m in (17, 64, 256)] == [64, 64, 64]
    prefill = triton_int4.launch_config(1024, 4096, 4096)
    assert prefill["BLOCK_M"] == 128 and prefill == triton_int4.launch_config(1024, 4096, 4096)  # deterministic


@pytest.mark.parametrize("x_dtype", ["fp16", "bf16", "fp32"])
@pytest.mark.parametrize("m", [1, 16, 21, 300])  # decode tile, full decode tile, M % BLOCK_M != 0, 128-row tiles
def test_linear_matches_the_reference_in_every_m_regime(x_dtype, m):
    case = make_linear_case(m, 48, 256, m, x_dtype, rank=8, num_loras=3, group_size=128,
                            zero_granularity="grouped")
    assert_within_tolerance(run_case(case)[1])


def test_linear_equals_reference_linear_within_a_stated_bound():
    # Direct comparison with reference.linear (float64, rounded once to fp16). Bound: the reference's
    # and our final roundings (u16 |y| each), W rounded to fp16 (u16 sum |x||w|) and fp32 accumulation
    # (K u32 sum |x||w|, Higham's worst case), with u16 = 2**-11, u32 = 2**-24.
    case = make_linear_case(7, 40, 128, 9, "fp16", rank=5, num_loras=2, group_size=32, zero_granularity="per-channel")
    y = triton_int4.linear(*case.torch_args(DEVICE)).float().cpu().numpy()
    expected = reference.linear(*case.reference_args(), x_dtype="fp16").astype(np.float64)
    w = reference.dequantize_exact(case.weights.packed, case.weights.scales, case.weights.zero_points, 32)
    magnitude = np.abs(case.x) @ np.abs(w).T + np.abs(case.bias)
    bound = 2 * 2.0**-11 * np.abs(expected) + (2.0**-11 + 128 * 2.0**-24) * magnitude
    assert np.all(np.abs(y - expected) <= bound), np.max(np.abs(y - expected) / bound)


@pytest.mark.parametrize("out_features, in_features", [(35, 96), (1, 64), (65, 200)])  # odd N, N = 1, K % 128 != 0
def test_odd_out_features_and_a_k_tail(out_features, in_features):
    case = make_linear_case(out_features, out_features, in_features, 3, "fp16", rank=4, num_loras=2, group_size=64)
    assert_within_tolerance(run_case(case)[1])


@pytest.mark.parametrize("group_size", [3, 24, 96, 100, 1000])  # odd, not a power of 2, ragged, > in_features
@pytest.mark.parametrize("scales, zeros", [("grouped", "grouped"), ("per-channel", "grouped"),
                                           ("grouped", "per-tensor"), ("grouped", None)])
def test_group_sizes_and_mixed_granularities(group_size, scales, zeros):
    case = make_linear_case(group_size, 24, 200, 5, "fp16", rank=4, num_loras=2, group_size=group_size,
                            scale_granularity=scales, zero_granularity=zeros)
    assert_within_tolerance(run_case(case)[1])


@pytest.mark.parametrize("zero_kind, shift, zero_dtype", [
    ("int", 8, torch.uint8),  # v - z exact in fp16 by dtype
    ("int", 0, torch.int64),  # exact by value (checked)
    ("int", 3000, torch.int32),  # too wide for fp16: the fp32 path
    ("float", 0, None),  # fractional: the fp32 path
])
def test_zero_point_dtypes(zero_kind, shift, zero_dtype):
    case = make_linear_case(11, 40, 256, 4, "fp16", rank=4, num_loras=2, group_size=128,
                            zero_granularity="grouped", zero_kind=zero_kind)
    weights = dataclasses.replace(case.weights, zero_points=case.weights.zero_points + shift)
    case = dataclasses.replace(case, weights=weights)
    args = list(case.torch_args(DEVICE))
    args[3] = args[3] if zero_dtype is None else args[3].to(zero_dtype)
    y = triton_int4.linear(*args)
    assert_within_tolerance(linear_error(y.float().cpu().numpy(), case))


def test_mixed_adapter_indices_inside_one_tile_never_touch_adapter_minus_one():
    # One 16-row decode tile holds -1 and every adapter but the last, which is all NaN: an index -1
    # read as a Python-style wrap-around (lora[-1]) would turn rows into NaN.
    case = make_linear_case(3, 48, 128, 16, "fp16", rank=8, num_loras=4, group_size=64)
    indices = np.array([-1, 0, 2, 1, -1, 2, 0, 0, 1, -1, 2, 1, 0, -1, -1, 2], dtype=np.int64)
    case = dataclasses.replace(case, lora_indices=indices)
    lora_a, lora_b = case.lora_a.copy(), case.lora_b.copy()
    lora_a[-1], lora_b[-1] = np.nan, np.nan
    y, _ = run_case(case, lora_a=lora_a, lora_b=lora_b)
    assert_within_tolerance(linear_error(y.float().cpu().numpy(), case))  # the unused adapter's values don't matter
    y_base, _ = run_case(case, lora_indices=np.full(16, -1, np.int64))
    rows = torch.from_numpy(indices == -1).to(DEVICE)
    assert torch.equal(y[rows], y_base[rows])  # rows without an adapter get exactly nothing added


@pytest.mark.parametrize("rank", [1, 5, 16, 100, 128])
def test_every_rank_up_to_128(rank):
    case = make_linear_case(rank, 32, 128, 6, "fp16", rank=rank, num_loras=3, group_size=128, popularity="distinct")
    assert_within_tolerance(run_case(case)[1])


def test_int32_and_int64_indices_agree():
    case = make_linear_case(5, 32, 128, 7, "bf16", rank=4, num_loras=3, group_size=32, index_dtype="int32")
    y32, report = run_case(case)
    assert_within_tolerance(report)
    y64, _ = run_case(case, lora_indices=case.lora_indices.astype(np.int64))
    assert torch.equal(y32, y64)


def test_packed_weights_are_read_directly(monkeypatch):
    # No [out, in] weight is ever materialized: dequantize is not called and no allocation on the
    # device reaches out * in elements (on CUDA: the peak memory grows by less than one fp16 W).
    case = make_linear_case(1, 256, 512, 16, "fp16", rank=4, num_loras=2, group_size=128)
    args = case.torch_args(DEVICE)
    monkeypatch.setattr(triton_int4, "dequantize", lambda *a, **k: pytest.fail("linear called dequantize"))
    sizes = []
    real_empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, **k: sizes.append(math.prod(a[0])) or real_empty(*a, **k))
    if DEVICE == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    triton_int4.linear(*args)
    assert max(sizes) < 256 * 512, sizes
    if DEVICE == "cuda":
        assert torch.cuda.max_memory_allocated() - before < 256 * 512 * 2


def test_inputs_unchanged_and_results_bitwise_deterministic():
    case = make_linear_case(2, 40, 256, 33, "fp16", rank=8, num_loras=3, group_size=128, zero_granularity="grouped")
    args = case.torch_args(DEVICE)
    copies = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    first, second = triton_int4.linear(*args), triton_int4.linear(*args)
    assert torch.equal(first.view(torch.int16), second.view(torch.int16))
    assert all(not isinstance(a, torch.Tensor) or torch.equal(a, c) for a, c in zip(args, copies))


def test_strided_inputs():
    case = make_linear_case(4, 40, 128, 6, "fp16", rank=4, num_loras=2, group_size=64, zero_granularity="grouped")
    args = list(case.torch_args(DEVICE))
    for i in (0, 1, 2, 3, 5, 6, 7, 9):  # every tensor argument: same values, every other element in memory
        t = args[i]
        args[i] = torch.stack((t, t), dim=-1)[..., 0]
    assert not args[0].is_contiguous()
    assert_within_tolerance(linear_error(triton_int4.linear(*args).float().cpu().numpy(), case))


def test_no_tokens_gives_an_empty_result():
    case = make_linear_case(0, 8, 32, 0, "fp16", rank=2, num_loras=1, group_size=16)
    y = triton_int4.linear(*case.torch_args(DEVICE))
    assert y.shape == (0, 8) and y.dtype == torch.float16


def test_linear_names_the_bad_argument():
    args = list(make_linear_case(0, 6, 16, 3, "fp16", rank=2, num_loras=2, group_size=8).torch_args(DEVICE))
    args[2] = torch.ones(6, 3, device=DEVICE)
    with pytest.raises(ValueError, match=r"scales has 3 groups"):
        triton_int4.linear(*args)


@pytest.mark.parametrize("output_dtype", ["fp16", "bf16", "fp32"])
@pytest.mark.parametrize("zero_kind, scales_dtype", [("int", "fp16"), ("float", "fp32"), ("float", "bf16")])
def test_dequantize_is_correctly_rounded(output_dtype, zero_kind, scales_dtype):
    w = make_weights(np.random.default_rng(0), 70, 200, group_size=24, zero_granularity="grouped",
                     zero_kind=zero_kind, scales_dtype=scales_dtype, scale_exponent=-2.0)
    packed, scales, zeros, group_size = w.torch_args(DEVICE)
    got = triton_int4.dequantize(packed, scales, zeros, group_size, tensor(np.zeros(1), output_dtype, "cpu").dtype)
    report = dequant_error(got.float().cpu().numpy(), w.packed, w.scales, w.zero_points, 24, output_dtype)
    assert report.passed, report.worst()


@pytest.mark.parametrize("zero", [2**23 - 8, 2**23 + 1, -(2**23) - 1, 2**30 + 3])
def test_dequantize_to_fp32_is_correctly_rounded_for_huge_integer_zero_points(zero):
    # past 2**23 - 8, v - z is no longer exact in fp32: the kernel must take its fp64 path
    packed = torch.arange(256, dtype=torch.uint8).reshape(4, 64).to(DEVICE)
    scales = torch.tensor([1.0, 1 + 2**-20, 3.0, 0.1], dtype=torch.float32, device=DEVICE)
    zeros = torch.full((4,), zero, dtype=torch.int64, device=DEVICE)
    got = triton_int4.dequantize(packed, scales, zeros, None, torch.float32)
    report = dequant_error(got.double().cpu().numpy(), packed.cpu().numpy(), scales.cpu().numpy(), zeros.cpu().numpy(),
                           None, "fp32")
    assert report.max_ratio == 0, report.worst()


@pytest.mark.large
def test_large_layer_on_the_gpu():
    # llama3-8b down_proj (out 4096, in 14336), group 128: decode, full decode tile and prefill.
    if DEVICE != "cuda":
        pytest.skip("the large tier needs a GPU (the interpreter would take hours)")
    for m in (1, 16, 257):
        case = make_linear_case(m, 4096, 14336, m, "fp16", rank=16, num_loras=4, group_size=128)
        assert_within_tolerance(run_case(case)[1])


# Compiles, without a GPU, the code only a GPU runs (the inline-PTX unpack, wgmma tiles, fp64
# dequantize): each wrapper's launches are captured instead of run, then triton.compile builds
# them for sm_90 with the ptxas bundled in the triton wheel. Run outside the interpreter.
COMPILE_FOR_SM90 = """
import torch, triton
from triton.backends.compiler import GPUTarget
from int4_lora_harness.verify.cases import make_linear_case
from int4_lora_harness.kernels import triton_int4, triton_kernels

TYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.uint8: "u8",
         torch.int32: "i32", torch.int64: "i64"}
KERNELS = {n: getattr(triton_kernels, n) for n in ("int4_lora_gemm_kernel", "lora_shrink_kernel", "dequantize_kernel")}
launches = []
for name in KERNELS:
    setattr(triton_kernels, name, type("Capture", (), {"__getitem__": lambda self, grid, name=name: (
        lambda *args, **kwargs: launches.append((name, args, kwargs)))})())

def linear(m, n, k, x_dtype, ptx_unpack=False, **params):
    args = make_linear_case(0, n, k, m, x_dtype, **params).torch_args("cpu")
    _, _, *kinds = triton_int4.validate_linear(*args[:8], args[9])
    triton_int4.launch_linear(*args, tuple(kinds), zero_is_exact=triton_int4.exact_zero(args[0].dtype, args[3], True),
                              ptx_unpack=ptx_unpack)

linear(16, 64, 256, "fp16", group_size=128)  # decode: tl.* unpack, scales after the dot, LoRA
linear(16, 64, 256, "fp16", ptx_unpack=True, group_size=128)  # the same with the PTX unpack (fp16)
linear(16, 64, 256, "bf16", ptx_unpack=True, group_size=128)  # PTX unpack (bf16)
linear(300, 64, 256, "fp16", group_size=128, zero_granularity="grouped")  # 128x128 wgmma tiles, zero points
linear(5, 64, 200, "bf16", group_size=24, zero_granularity="grouped", zero_kind="float")  # gathers, K tail
linear(3, 64, 256, "fp32", group_size=64, zero_granularity="per-channel")  # ieee dots
w = make_linear_case(0, 64, 256, 1, "fp32", group_size=32, zero_granularity="grouped", zero_kind="float",
                     scales_dtype="fp32").weights
triton_int4.unavailable_reason = triton_int4.check_device = lambda *a, **k: None
triton_int4.dequantize(*w.torch_args("cpu"), output_dtype=torch.float32)  # fp64 math
for name, args, kwargs in launches:
    fn, kwargs = KERNELS[name], dict(kwargs)
    options = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
    names = [p.name for p in fn.params if not p.is_constexpr]
    signature = {n: f"*{TYPES[a.dtype]}" if isinstance(a, torch.Tensor) else "fp32" if isinstance(a, float) else "i32"
                 for n, a in zip(names, args)}
    signature.update({k: "constexpr" for k in kwargs})
    triton.compile(triton.compiler.ASTSource(fn, signature, kwargs), target=GPUTarget("cuda", 90, 32), options=options)
assert sum(kw.get("USE_ASM", False) for _, _, kw in launches) == 2, "the PTX unpack was not compiled"
print(len(launches), "launches compiled")
"""


def test_gpu_code_paths_compile_for_hopper():
    if DEVICE == "cuda":
        pytest.skip("the GPU runs these kernels for real in the other tests")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", COMPILE_FOR_SM90], cwd=Path(__file__).resolve().parents[1], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]


def test_prepare_linear_launches_what_linear_computes():
    args = make_linear_case(3, 40, 128, 5, "fp16", rank=4, num_loras=2, group_size=32,
                            zero_granularity="grouped").torch_args(DEVICE)
    launch = triton_int4.prepare_linear(*args)
    assert torch.equal(launch(), triton_int4.linear(*args))


# --- bf16 under Triton's interpreter: kernels/triton_interpreter.py ------------------------------------

interpreter_only = pytest.mark.skipif(DEVICE == "cuda", reason="checks the interpreter's corrected bf16 arithmetic; "
                                      "a GPU's is its own (its tl.sum adds in another order)")

@pytest.mark.parametrize("m, scales_dtype, zero_kind", [
    (1, "bf16", "int"),  # decode: v - z in bf16, tile products scaled in fp32 after the dot
    (33, "bf16", "int"),  # prefill: W = (v - z) * s rounded once in bf16 (bf16 scales)
    (5, "fp32", "float"),  # fractional zero points: W in fp32, rounded once to bf16
])
def test_bf16_designs_match_the_reference(m, scales_dtype, zero_kind):
    # Under the interpreter too, bf16 runs the GPU's bf16 designs (bf16 unpack, bf16 dots), not an fp32 stand-in.
    case = make_linear_case(m, 40, 256, m, "bf16", rank=8, num_loras=3, group_size=128, zero_granularity="grouped",
                            zero_kind=zero_kind, scales_dtype=scales_dtype)
    assert_within_tolerance(run_case(case)[1])


# A fresh process (this one was corrected when triton_int4 was imported): the raw interpreter's bf16, then fix_bf16.
RAW_BF16 = """
import json
import torch, triton, triton.language as tl
from int4_lora_harness.kernels import triton_interpreter

@triton.jit
def dot_kernel(a_ptr, b_ptr, c_ptr, N: tl.constexpr):
    tiles = tl.arange(0, N)[:, None] * N + tl.arange(0, N)[None, :]
    tl.store(c_ptr + tiles, tl.dot(tl.load(a_ptr + tiles), tl.load(b_ptr + tiles)))

def dot_error():  # small integers: the fp32 sums are exact, so a correct dot has error 0
    a = (torch.arange(256.0).reshape(16, 16) % 7 - 3).bfloat16()
    c = torch.empty(16, 16)
    dot_kernel[(1,)](a, a.T.contiguous(), c, 16)
    return (c - a.float() @ a.float().T).abs().max().item()

raw = dict(defects=triton_interpreter.defects(), dot_error=dot_error())
corrected = list(triton_interpreter.fix_bf16())
print(json.dumps(dict(raw=raw, corrected=corrected, dot_error=dot_error(), version=triton.__version__)))
"""


def test_the_raw_interpreter_gets_bf16_wrong_and_fix_bf16_corrects_it(tmp_path):
    script = tmp_path / "raw_bf16.py"
    script.write_text(RAW_BF16)
    run = subprocess.run([sys.executable, str(script)], env={**os.environ, "TRITON_INTERPRET": "1"},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.splitlines()[-1])
    raw = result["raw"]
    assert raw["defects"], (f"Triton {result['version']}'s interpreter computes bf16 right now: the correction "
                            "kernels/triton_interpreter.fix_bf16 is no longer needed (remove it and its calls)")
    assert raw["dot_error"] > 0, f"the raw bf16 tl.dot is right now; defects left: {raw['defects']}"
    assert result["corrected"] == raw["defects"] and result["dot_error"] == 0, result


@interpreter_only
def test_fix_bf16_is_idempotent_and_leaves_no_defect():
    assert triton_interpreter.defects() == []  # corrected when triton_int4 was imported
    assert triton_interpreter.fix_bf16() == ()


def test_fix_bf16_is_a_no_op_that_imports_nothing_without_the_interpreter(tmp_path):
    code = ("import sys; from int4_lora_harness.kernels import triton_interpreter as t; "
            "print(t.fix_bf16(), 'triton' in sys.modules)")
    assert run_fresh(code, tmp_path, TRITON_INTERPRET="0")[0].split() == ["()", "False"]


def test_a_triton_the_correction_does_not_fit_is_refused_in_one_line(tmp_path):
    code = ("from int4_lora_harness.kernels import triton_interpreter as t; t._patch = lambda interpreter: None; "
            "from int4_lora_harness.kernels import triton_int4; print(triton_int4.unavailable_reason())")
    reason = run_fresh(code, tmp_path, TRITON_INTERPRET="1")[0].strip()
    assert "cannot correct" in reason and "bf16 1 + 1 gives" in reason and "on a GPU" in reason, reason
    assert "\n" not in reason


@triton.jit
def bf16_ops_kernel(a_ptr, b_ptr, out_ptr, N: tl.constexpr):
    """out [7, N] bf16 from a, b bf16 [N]: + - * /, fma, a compare and Python numbers (rounded once to bf16)."""
    offs = tl.arange(0, N)
    a = tl.load(a_ptr + offs)
    b = tl.load(b_ptr + offs)
    tl.store(out_ptr + offs, a + b)
    tl.store(out_ptr + N + offs, a - b)
    tl.store(out_ptr + 2 * N + offs, a * b)
    tl.store(out_ptr + 3 * N + offs, a / b)
    tl.store(out_ptr + 4 * N + offs, tl.fma(a, b, a))
    tl.store(out_ptr + 5 * N + offs, tl.where(a < b, a, b))
    tl.store(out_ptr + 6 * N + offs, a * 3.0 - 0.1)


@triton.jit
def to_bf16_kernel(x_ptr, out_ptr, N: tl.constexpr):
    offs = tl.arange(0, N)
    tl.store(out_ptr + offs, tl.load(x_ptr + offs).to(tl.bfloat16))


@triton.jit
def bf16_sum_dot_kernel(a_ptr, b_ptr, sum_ptr, dot_ptr, N: tl.constexpr):
    """sum: bf16 [1], tl.sum of a's first row; dot: fp32 [N, N] = a @ b, a and b bf16 [N, N]."""
    tiles = tl.arange(0, N)[:, None] * N + tl.arange(0, N)[None, :]
    a = tl.load(a_ptr + tiles)
    tl.store(sum_ptr, tl.sum(tl.load(a_ptr + tl.arange(0, N)), 0))
    tl.store(dot_ptr + tiles, tl.dot(a, tl.load(b_ptr + tiles)))


def bf16_bits(t):
    """A bf16 tensor's bits as int16, NaNs made one pattern (bitwise comparison that counts NaN == NaN)."""
    return torch.where(t.isnan(), torch.tensor(float("nan"), dtype=torch.bfloat16), t).view(torch.int16)


@interpreter_only
def test_the_corrected_interpreter_computes_bf16_as_a_gpu_does():
    # GPU bf16: exact fp32 widening, fp32 arithmetic, one rounding to nearest even; torch's CPU bf16 ops are the
    # oracle (they compute just so). Negative values catch compares of bit patterns; specials stay special.
    a = (torch.randn(64, generator=torch.Generator().manual_seed(0)) * 4).bfloat16()
    b = (torch.randn(64, generator=torch.Generator().manual_seed(1)) * 4).bfloat16()
    a[:3], b[3:6] = torch.tensor([float("nan"), float("inf"), -0.0]), torch.tensor([0.0, -0.0, 1e-40])
    out = torch.empty(7, 64, dtype=torch.bfloat16)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):  # x / 0, inf - inf: as intended
        bf16_ops_kernel[(1,)](a, b, out, 64)
    x, y = a.float(), b.float()
    expected = torch.stack([x + y, x - y, x * y, x / y, x * y + x, torch.where(x < y, x, y),
                            (x * 3).bfloat16().float() - torch.tensor(0.1).bfloat16().float()]).bfloat16()
    assert torch.equal(bf16_bits(out), bf16_bits(expected)), (out != expected).nonzero()[:5]


@interpreter_only
@pytest.mark.parametrize("values, dtype, expected", [
    # fp32: ties to even (1 + 2**-8 -> 1, 1 + 3 * 2**-8 -> 1 + 2**-6), above a tie, overflow to inf, NaN
    ([1 + 2**-8, 1 + 3 * 2**-8, 1 + 3 * 2**-9, -(1 + 3 * 2**-9), 3.4e38, 2**-133 * 1.5], torch.float32, None),
    # fp64 and int32: one rounding (torch's own conversion goes through fp32 and rounds twice: 1 + 2**-8 + 2**-40 -> 1)
    ([1 + 2**-8 + 2**-40, -(1 + 2**-8 + 2**-40), 2**-134 + 2**-160, 1e300], torch.float64,
     [1 + 2**-7, -(1 + 2**-7), 2**-133, float("inf")]),
    ([257, 259, 2**24 + 2**16 + 1, -(2**31 - 1)], torch.int32, [256, 260, 2**24 + 2**17, -(2**31)]),
])
def test_the_corrected_interpreter_rounds_to_bf16_once_to_nearest_even(values, dtype, expected):
    x = torch.tensor(values + [0] * (8 - len(values)), dtype=dtype)
    out = torch.empty(8, dtype=torch.bfloat16)
    to_bf16_kernel[(1,)](x, out, 8)
    want = x.bfloat16() if expected is None else torch.tensor(expected + [0] * (8 - len(expected))).bfloat16()
    assert torch.equal(out.view(torch.int16), want.view(torch.int16)), (out, want)


@interpreter_only
def test_the_corrected_interpreter_sums_and_dots_bf16():
    # tl.sum of bf16 rounds each partial sum to bf16 (in index order here); tl.dot's products are exact and its
    # sums fp32: on small integers the result is exact.
    a = (torch.randn(16, 16, generator=torch.Generator().manual_seed(2)) * 3).round().bfloat16()
    b = (torch.randn(16, 16, generator=torch.Generator().manual_seed(3)) * 3).round().bfloat16()
    a[0] = torch.randn(16, generator=torch.Generator().manual_seed(4)).bfloat16()
    total, dot = torch.empty(1, dtype=torch.bfloat16), torch.empty(16, 16)
    bf16_sum_dot_kernel[(1,)](a, b, total, dot, 16)
    expected = a[0, 0]
    for value in a[0, 1:]:
        expected = (expected.float() + value.float()).bfloat16()
    assert total.view(torch.int16).item() == expected.view(torch.int16).item(), (total, expected)
    assert torch.equal(dot[1:], (a.float() @ b.float())[1:])  # row 0 holds non-integers: fp32 rounding order
