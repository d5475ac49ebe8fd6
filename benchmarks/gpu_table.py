"""The Triton INT4 + multi-LoRA kernel against dense fp16 and against dequantize-then-matmul, on a GPU.

For each Llama-3-8B layer and M this prints one markdown row: our kernel without and with
adapters; (a) a dense fp16 matmul on weights dequantized ahead of time, plus the LoRA in plain
torch; (b) dequantizing on every call (our Triton dequantize kernel, the fastest way to
materialize W) and then (a)'s matmul; (c) the HBM roofline, the fewest bytes the base GEMM must
move over the peak bandwidth. Timings are medians of harness.bench.timing (CUDA events, the L2 cache
flushed before every call), so decode figures stream weights from HBM.
Our kernel is timed through launch_linear: linear() adds a host sync (kernels.checks reads the
index range back) that a serving loop would not repeat per layer.

    python benchmarks/gpu_table.py                 # the table
    python benchmarks/gpu_table.py --sweep         # time candidate launch configs per shape and M
    python benchmarks/gpu_table.py --ptx           # the same with the inline-PTX nibble unpack
"""
import argparse
import sys

import torch

from int4_lora_harness.verify.cases import CONTRACT_PARAMETERS
from int4_lora_harness.bench.baselines import dense_forward
from int4_lora_harness.bench.devices import gpu_peaks
from int4_lora_harness.bench.timing import one_call_seconds, rounds_for, time_calls
from int4_lora_harness.bench.work import work
from int4_lora_harness.shapes import GPU_TABLE, LAYER_SHAPES
from int4_lora_harness.kernels import triton_int4
from int4_lora_harness.kernels.checks import validate_linear


DECODE_CONFIGS = [dict(BLOCK_M=16, BLOCK_N=n, BLOCK_K=128, num_warps=w, num_stages=s)
                  for n, w, s in [(32, 4, 4), (32, 4, 6), (32, 4, 8), (64, 4, 4), (64, 4, 6), (64, 4, 8),
                                  (128, 4, 4), (128, 8, 4), (128, 8, 6), (64, 8, 6)]]
PREFILL_CONFIGS = [dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=w, num_stages=s)
                   for bm, bn, bk, w, s in [(64, 64, 128, 4, 4), (64, 128, 64, 4, 4), (64, 128, 128, 4, 3),
                                            (128, 128, 64, 8, 3), (128, 128, 64, 4, 4), (128, 128, 128, 8, 3),
                                            (128, 256, 64, 8, 3)]]


def make_problem(n, k, m, group_size, rank, num_loras, zero_points, seed=0):
    """Random fp16 problem on the GPU: dict of the docs/contract.md#linear arguments (no bias)."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=gen, device="cuda")  # noqa: E731
    groups = -(-k // group_size)
    p = dict(x=rand(m, k).half(),
             packed_weights=torch.randint(0, 256, (n, k // 2), generator=gen, device="cuda", dtype=torch.uint8),
             scales=(rand(n, groups).abs() * 0.01 + 0.001).half(), zero_points=None, group_size=group_size,
             lora_a=(rand(num_loras, rank, k) * 0.02).half(), lora_b=(rand(num_loras, n, rank) * 0.02).half(),
             lora_indices=torch.randint(-1, num_loras, (m,), generator=gen, device="cuda"), scaling=0.5, bias=None)
    if zero_points != "none":
        zeros = torch.randint(0, 16, (n, groups), generator=gen, device="cuda")
        p["zero_points"] = zeros.to(getattr(torch, zero_points))
    return p


def dense(p, w):
    """(a): x @ W^T on weights dequantized ahead of time, plus the LoRA in plain torch (harness.bench.baselines)."""
    return dense_forward(p["x"], w, p["lora_a"], p["lora_b"], p["lora_indices"], p["scaling"], None)


def spec_args(p, lora):
    args = [p[key] for key in CONTRACT_PARAMETERS["linear"]]
    if not lora:
        args[5] = args[6] = None
        args[7] = torch.full_like(p["lora_indices"], -1)
    return args


def triton_fn(p, lora, config=None, ptx_unpack=False):
    """Our kernel, validated once here, then launched without the per-call host sync."""
    if config is None:
        return triton_int4.prepare_linear(*spec_args(p, lora), ptx_unpack=ptx_unpack)
    args = spec_args(p, lora)
    _, _, scale_kind, zero_kind = validate_linear(*args[:8], args[9])
    zero_is_exact = triton_int4.exact_zero(torch.float16, p["zero_points"], check_values=True)
    return lambda: triton_int4.launch_linear(*args, (scale_kind, zero_kind), config=config, zero_is_exact=zero_is_exact,
                                             ptx_unpack=ptx_unpack)


def base_bytes(n, k, m, p):
    """Fewest bytes the base GEMM moves (harness.bench.work): packed weights, scales, zero points, x and y, each once."""
    extra = sum(t.numel() * t.element_size() for t in (p["scales"], p["zero_points"]) if t is not None)
    return work("packed", "gemm", n, k, m, 2, n * k // 2 + extra)[0]


def bench(fn, args):
    """Median microseconds of `fn` by harness.bench.timing (CUDA events, the L2 flushed before every call)."""
    rounds = rounds_for(one_call_seconds(fn, "cuda"), args.rep_ms / 1e3, 10, 1000)
    return 1e6 * time_calls(fn, "cuda", rounds, cache_mode="cold").median_s


def copy_bandwidth(args):
    """Device-to-device copy of 1 GiB: bytes read + written over the median time, in TB/s."""
    src = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    return 2 * src.numel() / bench(lambda: dst.copy_(src), args) / 1e6


def targets(m, t_base, t_lora, t_a, roofline):
    """The issue's targets for this row, met or not: M <= 16: >= 3x (a) and >= 75% of roofline;
    every M: LoRA <= 15% over the base; M >= 256: within 1.3x of (a)."""
    checks = [("LoRA<=15%", t_lora <= 1.15 * t_base)]
    if m <= 16:
        checks += [(">=3x(a)", t_a >= 3 * t_lora), (">=75%roof", roofline >= 0.75 * t_base)]
    if m >= 256:
        checks += [("<=1.3x(a)", t_lora <= 1.3 * t_a)]
    return " ".join(f"{name}:{'met' if ok else 'MISSED'}" for name, ok in checks)


def sweep(args):
    """Time the base kernel under each candidate config; print the best per layer and M."""
    print("| layer | M | best config | us | runner-up us | all (us) |\n| --- | --- | --- | --- | --- | --- |")
    for layer in args.layers:
        n, k = LAYER_SHAPES[layer]
        for m in args.m:
            p = make_problem(n, k, m, args.group_size, args.rank, args.num_loras, args.zero_points)
            configs = DECODE_CONFIGS if m <= 16 else PREFILL_CONFIGS
            times = [bench(triton_fn(p, False, c, args.ptx), args) for c in configs]
            order = sorted(range(len(configs)), key=times.__getitem__)
            best = configs[order[0]]
            name = "BN{BLOCK_N} BM{BLOCK_M} BK{BLOCK_K} w{num_warps} s{num_stages}".format(**best)
            print(f"| {layer} | {m} | {name} | {times[order[0]]:.1f} | {times[order[1]]:.1f} | "
                  f"{' '.join(f'{t:.0f}' for t in times)} |", flush=True)


def table(args):
    print(f"device: {torch.cuda.get_device_name()}; triton kernel vs (a) dense fp16 + torch LoRA, "
          f"(b) triton dequantize every call + (a); fp16, group {args.group_size}, rank {args.rank}, "
          f"{args.num_loras} adapters, zero points: {args.zero_points}, unpack: {'PTX' if args.ptx else 'tl.*'}")
    measured = copy_bandwidth(args)
    print(f"roofline peak: {args.peak_tbps:.2f} TB/s (datasheet, used below); measured D2D copy: {measured:.2f} TB/s")
    print("\n| layer (out x in) | M | triton base us | triton+LoRA us | (a) dense+LoRA us | (b) materialize+LoRA us "
          "| roofline us | speedup vs (a) | % of roofline | LoRA overhead % | max rel err vs (a) | issue targets |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for layer in args.layers:
        n, k = LAYER_SHAPES[layer]
        for m in args.m:
            p = make_problem(n, k, m, args.group_size, args.rank, args.num_loras, args.zero_points)
            w16 = triton_int4.dequantize(p["packed_weights"], p["scales"], p["zero_points"], args.group_size)
            baseline = lambda: dense(p, w16)  # noqa: E731
            materialize = lambda: dense(p, triton_int4.dequantize(  # noqa: E731
                p["packed_weights"], p["scales"], p["zero_points"], args.group_size))
            base, with_lora = triton_fn(p, False, ptx_unpack=args.ptx), triton_fn(p, True, ptx_unpack=args.ptx)
            expected = baseline().float()
            err = ((with_lora().float() - expected).abs().max() / expected.abs().max()).item()
            t_base, t_lora, t_a, t_b = (bench(f, args) for f in (base, with_lora, baseline, materialize))
            roofline = base_bytes(n, k, m, p) / (args.peak_tbps * 1e6)
            print(f"| {layer} ({n}x{k}) | {m} | {t_base:.1f} | {t_lora:.1f} | {t_a:.1f} | {t_b:.1f} | {roofline:.1f} "
                  f"| {t_a / t_lora:.2f}x | {100 * roofline / t_base:.0f}% | {100 * (t_lora / t_base - 1):.0f}% "
                  f"| {err:.1e} | {targets(m, t_base, t_lora, t_a, roofline)} |", flush=True)
            del w16, p


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", nargs="+", default=GPU_TABLE, choices=sorted(LAYER_SHAPES),
                        help="layers of int4_lora_harness.shapes.LAYER_SHAPES to time (default: harness.shapes.GPU_TABLE, four Llama-3-8B layers)")
    parser.add_argument("--m", nargs="+", type=int, default=[1, 4, 16, 64, 256, 1024], help="token counts M")
    parser.add_argument("--group-size", type=int, default=128, help="quantization group size along in_features")
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank")
    parser.add_argument("--num-loras", type=int, default=4, help="adapters; tokens pick one of them or none (-1)")
    parser.add_argument("--zero-points", default="none", choices=["none", "uint8", "int32"],
                        help="none: symmetric weights; else grouped integer zero points of that dtype")
    parser.add_argument("--peak-tbps", type=float, default=None,
                        help="HBM peak for the roofline (default: the device's datasheet figure in int4_lora_harness.bench.devices)")
    parser.add_argument("--rep-ms", type=int, default=100, help="measuring time per measurement (milliseconds)")
    parser.add_argument("--ptx", action="store_true", help="time the inline-PTX unpack (kernels/triton_ptx.py)")
    parser.add_argument("--sweep", action="store_true", help="time candidate launch configs instead of the table")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("benchmarks/gpu_table.py needs a CUDA GPU")
    if args.peak_tbps is None:
        gbps, _, source = gpu_peaks(torch.cuda.get_device_name())
        if gbps != gbps:  # NaN: not a device of the table
            sys.exit(f"{source}: give --peak-tbps")
        args.peak_tbps = gbps / 1e3
    sweep(args) if args.sweep else table(args)


if __name__ == "__main__":
    main()
