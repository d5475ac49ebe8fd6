"""The torch path against the system it replaces, side by side in one run (issue 17).

Dequantize: `torch_path.dequantize` vs `int4_lora_harness.bench.seed.seed_dequantize` on [out, in] =
4096 x 4096 (a Llama q_proj) and 11008 x 4096 (Llama-2-7B's gate_proj), g128 fp16 scales, fp16
output, with fp16, int8 and no zero points. Linear:
`torch_path.linear` vs `materialize` (harness.bench.baselines: dequantize to x.dtype on
every call, then F.linear + the LoRA delta) at M = 1 and 16, 4096 x 4096 g128 fp16, 4 adapters of
rank 16. pytest-benchmark groups each pair, so its table shows them next to each other. Beside each
dequantize pair, two floors: `fresh_output_floor`, allocating the [out, in] fp16 result with torch.empty
and writing it once, what any dequantizer that returns a new tensor pays at least (a fresh mapping's
first-touch page faults where the allocator returns one: on this VM about 20 ms at 4096 x 4096 and 50-70 ms
at 11008 x 4096; about 3 ms at 4096 x 4096 when it reuses memory just freed), and `huge_page_output_floor`,
the same on transparent huge pages (kernels.native.empty_output, what torch_path's CPU output is: about 6 ms
and 14 ms).

Timed on one thread (torch.set_num_threads(1) for this module, restored after): on a shared 2-core
host OpenMP's per-op barriers wait on descheduled threads, which then dominates every multi-op path.

Run: `python -m pytest benchmarks/test_bench_seed.py --benchmark-only -p no:cacheprovider`
(benchmarks/conftest.py's grid options do not apply: these cases are fixed). No parquet rows:
the seed is not a backend of the grids. Before timing, each torch path result is checked against
the reference on its first rows (the seed is wrong by design and is not checked).
"""
import numpy as np
import pytest
import torch

from int4_lora_harness import reference
from int4_lora_harness.bench.baselines import materialize_linear
from int4_lora_harness.bench.devices import cpu_dequantizer
from int4_lora_harness.bench.seed import seed_dequantize
from int4_lora_harness.kernels import native, torch_path

GROUP_SIZE = 128
SHAPES = {"4096x4096": (4096, 4096), "11008x4096": (11008, 4096)}  # [out, in]
ZERO_POINTS = ("fp16", "int8", "none")
ROUNDS = 5
CHECKED_ROWS = 8


def make_base(out_features, in_features, zero_kind, seed=0):
    """(packed, fp16 scales [out, in / 128], zero points of `zero_kind` or None), seeded."""
    g = torch.Generator().manual_seed(seed)
    groups = in_features // GROUP_SIZE
    packed = torch.randint(0, 256, (out_features, in_features // 2), dtype=torch.uint8, generator=g)
    scales = (torch.rand(out_features, groups, generator=g) * 0.02 + 0.001).half()
    zero_points = {"none": None,
                   "int8": torch.randint(-8, 8, (out_features, groups), generator=g).to(torch.int8),
                   "fp16": (torch.rand(out_features, groups, generator=g) * 16 - 8).half()}[zero_kind]
    return packed, scales, zero_points


def check_rows(got, packed, scales, zero_points):
    """got's first CHECKED_ROWS rows equal reference.dequantize's, bit for bit."""
    rows = slice(0, CHECKED_ROWS)
    z = None if zero_points is None else zero_points[rows].float().numpy()
    expected = reference.dequantize(packed[rows].numpy(), scales[rows].float().numpy(), z, GROUP_SIZE, "fp16")
    assert np.array_equal(got[rows].numpy().view(np.uint16), expected.view(np.uint16))


def fresh_output(packed_weights, scales, zero_points, group_size, output_dtype):
    """A new [out, in] tensor of output_dtype, written once: the least a dequantizer returning one costs."""
    return torch.empty(packed_weights.shape[0], 2 * packed_weights.shape[1], dtype=output_dtype).fill_(1)


def huge_page_output(packed_weights, scales, zero_points, group_size, output_dtype):
    """fresh_output on transparent huge pages, as torch_path's CPU output is."""
    return native.empty_output((packed_weights.shape[0], 2 * packed_weights.shape[1]), output_dtype).fill_(1)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("zero_kind", ZERO_POINTS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("implementation", ["torch_path", "seed", "fresh_output_floor", "huge_page_output_floor"])
def test_dequantize(benchmark, implementation, shape, zero_kind):
    packed, scales, zero_points = make_base(*SHAPES[shape], zero_kind)
    fn = dict(torch_path=torch_path.dequantize, seed=seed_dequantize, fresh_output_floor=fresh_output,
              huge_page_output_floor=huge_page_output)[implementation]
    benchmark.group = f"dequantize {shape} g{GROUP_SIZE} fp16 scales, zero points {zero_kind}, fp16 out"
    benchmark.extra_info["cpu_dequantizer"] = cpu_dequantizer()  # the C kernel, or the torch ops and why
    got = benchmark.pedantic(fn, args=(packed, scales, zero_points, GROUP_SIZE, torch.float16), rounds=ROUNDS,
                             warmup_rounds=1, iterations=1)
    if implementation == "torch_path":
        check_rows(got, packed, scales, zero_points)


@pytest.mark.parametrize("m", [1, 16])
@pytest.mark.parametrize("implementation", ["torch_path", "materialize"])
def test_linear(benchmark, implementation, m):
    packed, scales, zero_points = make_base(4096, 4096, "int8")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(m, 4096, generator=g).half()
    lora_a = (torch.randn(4, 16, 4096, generator=g) * 0.01).half()
    lora_b = (torch.randn(4, 4096, 16, generator=g) * 0.25).half()
    indices = torch.arange(m, dtype=torch.int32) % 5 - 1  # -1, 0, 1, 2, 3, -1, ...
    fn = torch_path.linear if implementation == "torch_path" else materialize_linear
    benchmark.group = f"linear M={m} 4096x4096 g{GROUP_SIZE} fp16, 4 adapters of rank 16"
    args = (x, packed, scales, zero_points, GROUP_SIZE, lora_a, lora_b, indices, 1.0, None)
    got = benchmark.pedantic(fn, args=args, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    assert got.shape == (m, 4096) and got.dtype == torch.float16 and torch.isfinite(got).all()
