"""Named benchmark grids: plain dicts of sweeps over real layer shapes (int4_lora_harness.shapes.LAYER_SHAPES).

A grid names its device, backends, timing budget and sweeps. A sweep is a product of
axes; the axes it leaves out take DEFAULTS. Each operation only sees the axes that
change what it computes, so the base GEMM is timed once per M even when a sweep varies
the adapters. Pick a grid with `--bench-grid NAME` or `BENCH_GRID=NAME`; by default
`gpu` where CUDA is available, else `cpu`.
"""
import itertools

from int4_lora_harness.verify.domain import POPULARITIES
from int4_lora_harness.shapes import GPU_TABLE, LAYER_SHAPES

BACKENDS = ("reference", "torch", "triton", "triton-ptx", "dense", "materialize")

# operation -> the axes that change what it computes; the others take their value in ABSENT.
OPERATIONS = {
    "dequantize": ("layer", "group_size", "dtype", "cache_mode"),
    "gemm": ("layer", "m", "group_size", "dtype", "cache_mode"),  # the base alone, no adapters
    "gemm_lora": ("layer", "m", "group_size", "rank", "num_loras", "popularity", "dtype", "cache_mode"),
}
ABSENT = dict(m=None, rank=0, num_loras=0, popularity="none")

DEFAULTS = dict(layer="llama3-8b.k_proj", m=16, group_size=128, rank=16, num_loras=4, popularity="uniform",
                dtype="fp16", cache_mode="warm")


def _positive_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


# axis -> (is this value valid, what a valid value is)
AXES = {
    "layer": (lambda v: v in LAYER_SHAPES, f"a layer of int4_lora_harness.shapes.LAYER_SHAPES ({', '.join(LAYER_SHAPES)})"),
    "m": (_positive_int, "a positive int (tokens)"),
    "group_size": (lambda v: v is None or _positive_int(v), "a positive int, or None for per-channel scales"),
    "rank": (_positive_int, "a positive int"),
    "num_loras": (_positive_int, "a positive int (the 'gemm' operation times the base without adapters)"),
    "popularity": (lambda v: v in POPULARITIES and v != "none", f"one of {[p for p in POPULARITIES if p != 'none']}"),
    "dtype": (lambda v: v in ("fp16", "bf16", "fp32"), "'fp16', 'bf16' or 'fp32'"),
    "cache_mode": (lambda v: v in ("warm", "cold"), "'warm', or 'cold' (GPU L2 flushed before every timed call)"),
}


GRIDS = {
    # One case per operation and backend: does the machinery work here? (seconds)
    "smoke": dict(device="auto", backends=BACKENDS, reference_layers=["llama3-8b.k_proj"],
                  max_time_s=0.05, min_rounds=3, max_rounds=50,
                  sweeps={"one": dict(m=[4])}),
    # This 2-core machine, in under 5 minutes: the smallest Llama layer, and q_proj at decode sizes.
    "cpu": dict(device="cpu", backends=("reference", "torch", "dense", "materialize"),
                reference_layers=["llama3-8b.k_proj"], max_time_s=0.25, min_rounds=5, max_rounds=200,
                sweeps={
                    "layers": dict(layer=["llama3-8b.k_proj"], m=[1, 16], dtype=["fp16", "bf16"]),
                    "q_proj": dict(layer=["llama3-8b.q_proj"], m=[1]),
                    "group_size": dict(group_size=[32, None]),
                    "lora": dict(rank=[8, 64], num_loras=[1, 16]),
                    "popularity": dict(num_loras=[16], popularity=["distinct", "zipf", "identical"]),
                }),
    # A GPU: every Llama-3-8B projection over M from decode to prefill, a 70B layer and the ragged Falcon
    # QKV; dtype, group size and adapters varied on q_proj. Checks dominate its time (about 1 s each on
    # q_proj, 10+ s on the 70B layer, on a 16-core host), so the product is kept narrow.
    "gpu": dict(device="cuda", backends=("torch", "triton", "triton-ptx", "dense", "materialize"), reference_layers=[],
                max_time_s=0.1, min_rounds=20, max_rounds=500,
                sweeps={
                    "llama3-8b": dict(layer=GPU_TABLE, m=[1, 4, 16, 64, 256, 1024]),
                    "decode-cold": dict(layer=GPU_TABLE, m=[1, 4, 16], cache_mode=["cold"]),
                    "larger": dict(layer=["llama3-70b.gate_proj", "falcon-7b.query_key_value"], m=[1, 16, 256]),
                    "bf16": dict(layer=["llama3-8b.q_proj"], m=[1, 16, 256], dtype=["bf16"]),
                    "group_size": dict(layer=["llama3-8b.q_proj"], m=[1, 256], group_size=[32, 64, None]),
                    "lora": dict(layer=["llama3-8b.q_proj"], m=[16, 256], rank=[8, 64], num_loras=[1, 16]),
                    "popularity": dict(layer=["llama3-8b.q_proj"], m=[16, 256], num_loras=[16],
                                       popularity=["distinct", "zipf", "identical"]),
                }),
}

GRID_KEYS = ("device", "backends", "reference_layers", "max_time_s", "min_rounds", "max_rounds", "sweeps")


def default_name(environ, cuda_available):
    """$BENCH_GRID if set, else 'gpu' with CUDA, else 'cpu'."""
    return environ.get("BENCH_GRID") or ("gpu" if cuda_available else "cpu")


def select(name, grids=GRIDS):
    """The grid called `name`, validated; ValueError naming the valid grids otherwise."""
    if name not in grids:
        raise ValueError(f"unknown benchmark grid {name!r}; valid grids: {', '.join(sorted(grids))} "
                         "(set with --bench-grid or BENCH_GRID)")
    validate(grids[name], name)
    return grids[name]


def validate(grid, name):
    """Raise ValueError naming the grid, sweep, axis and value of the first thing that is wrong."""
    missing = [key for key in GRID_KEYS if key not in grid]
    if missing:
        raise ValueError(f"grid {name!r} lacks {missing}")
    if grid["device"] not in ("cpu", "cuda", "auto"):
        raise ValueError(f"grid {name!r}: device must be 'cpu', 'cuda' or 'auto', got {grid['device']!r}")
    unknown = [b for b in grid["backends"] if b not in BACKENDS]
    if unknown:
        raise ValueError(f"grid {name!r}: unknown backends {unknown}; valid: {list(BACKENDS)}")
    bad_layers = [layer for layer in grid["reference_layers"] if layer not in LAYER_SHAPES]
    if bad_layers:
        raise ValueError(f"grid {name!r}: reference_layers {bad_layers} are not in int4_lora_harness.shapes.LAYER_SHAPES")
    if not (_positive_int(grid["min_rounds"]) and _positive_int(grid["max_rounds"])
            and grid["min_rounds"] <= grid["max_rounds"] and grid["max_time_s"] > 0):
        raise ValueError(f"grid {name!r}: needs 0 < min_rounds <= max_rounds (ints) and max_time_s > 0")
    for sweep, axes in grid["sweeps"].items():
        for axis, values in axes.items():
            where = f"grid {name!r}, sweep {sweep!r}"
            if axis not in AXES:
                raise ValueError(f"{where}: unknown axis {axis!r}; axes: {', '.join(AXES)}")
            if not isinstance(values, (list, tuple)) or not values:
                raise ValueError(f"{where}: axis {axis!r} must be a non-empty list, got {values!r}")
            is_valid, rule = AXES[axis]
            for value in values:
                if not is_valid(value):
                    raise ValueError(f"{where}: {axis} must be {rule}, got {value!r}")


def device_for(grid, name, cuda_available):
    """'cpu' or 'cuda' for `grid`; ValueError if it needs CUDA and there is none."""
    if grid["device"] == "auto":
        return "cuda" if cuda_available else "cpu"
    if grid["device"] == "cuda" and not cuda_available:
        raise ValueError(f"grid {name!r} runs on CUDA, which is not available here; "
                         f"try --bench-grid cpu or smoke (valid grids: {', '.join(sorted(GRIDS))})")
    return grid["device"]


def points(grid):
    """Every case of the grid's sweeps as a dict with all of DEFAULTS' axes, in order, without repeats."""
    seen = {}
    for axes in grid["sweeps"].values():
        names = list(axes)
        for values in itertools.product(*axes.values()):
            point = {**DEFAULTS, **dict(zip(names, values))}
            seen.setdefault(tuple(point.items()), point)
    return list(seen.values())


def benchmarks(grid):
    """(backend, operation, point) for every benchmark of the grid, the point reduced to the operation's axes."""
    out = {}
    for point in points(grid):
        for operation, axes in OPERATIONS.items():
            reduced = {axis: point[axis] if axis in axes else ABSENT[axis] for axis in DEFAULTS}
            for backend in grid["backends"]:
                if backend == "dense" and operation == "dequantize":
                    continue  # its weights were dequantized ahead of time: nothing to time
                if backend == "reference" and point["layer"] not in grid["reference_layers"]:
                    continue
                out.setdefault((backend, operation, tuple(reduced.items())), (backend, operation, reduced))
    return list(out.values())


def case_id(backend, operation, point):
    """A readable pytest id, e.g. 'torch-gemm_lora-llama3-8b.k_proj-m16-g128-r16x4-uniform-fp16-warm'."""
    return f"{backend}-{case_name(operation, point)}"


def case_name(operation, point):
    """The case of a benchmark in words, e.g. 'gemm_lora-llama3-8b.k_proj-m16-g128-r16x4-uniform-fp16-warm'; the
    options a domain chose (harness.bench.domain_grid) are named where they differ from the grids' own."""
    group = f"g{point['group_size']}" if point["group_size"] else point.get("granularity") or "per-channel"
    parts = [operation, point["layer"]]
    if point["m"] is not None:
        parts.append(f"m{point['m']}")
    parts.append(group)
    if point["num_loras"]:
        parts += [f"r{point['rank']}x{point['num_loras']}", point["popularity"]]
    parts.append(point["dtype"])
    if point.get("scales_dtype", point["dtype"]) != point["dtype"]:
        parts.append(f"scales-{point['scales_dtype']}")
    if point.get("zero_points", "integer") != "integer":
        parts.append(f"zeros-{point['zero_points']}")
    return "-".join([*parts, point["cache_mode"]])
