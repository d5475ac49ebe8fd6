"""A benchmark grid built in the candidate's domain (verify's domain flags: harness.verify.domain.Domain).

A kernel that runs only part of the contract (PyTorch's CPU INT4 kernel is fast only in bf16) is timed where it
runs, not on points it cannot take:
1. substitute: an axis a sweep leaves at its default (harness.bench.grids.DEFAULTS) whose default lies outside
   the domain takes the domain's own value instead: dtype fp16 -> the first of --dtypes, group size 128 -> the
   first of --group-sizes (or no groups when --granularity has no `grouped`), rank -> at most --max-rank, adapters
   -> at most --max-loras, popularity -> the first of --lora-patterns. An axis a sweep names keeps its values: the
   grid asked for them, and the filter decides.
2. filter: each benchmark's point, reduced to its operation's axes (grids.benchmarks), is run only when it lies
   inside the domain; `outside` says why one is not (the flag), and bench counts them.
3. options: what no grid sweeps is chosen in the domain and added to the point (runner.case_options reads it):
   the scales' dtype (x's dtype where allowed, else the domain's first choice), the zero points (integer where
   allowed, else fractional, else none) and the granularity of a point without groups (per-channel, else
   per-tensor).
With the full domain (no domain flags) the grid, its points and their cases are what they were.
"""
from int4_lora_harness.bench import grids
from int4_lora_harness.shapes import LAYER_SHAPES

ZERO_POINTS = {"any": "integer", "integer": "integer", "fractional": "fractional", "none": "none"}  # domain -> case


def substitute(axis, domain):
    """The value a sweep that leaves `axis` out takes in `domain`: DEFAULTS[axis], or the domain's own value when
    the default lies outside it."""
    default = grids.DEFAULTS[axis]
    if axis == "dtype":
        return default if default in domain.dtypes else domain.dtypes[0]
    if axis == "group_size":
        if "grouped" not in domain.granularities:
            return None  # no groups: per-channel or per-tensor scales
        return default if domain.group_sizes is None or default in domain.group_sizes else domain.group_sizes[0]
    if axis == "rank":
        return min(default, domain.max_rank)
    if axis == "num_loras":
        return min(default, domain.max_loras) or default  # no adapters at all: the filter drops gemm_lora
    if axis == "popularity":
        patterns = [p for p in domain.popularities if p != "none"]
        return default if default in patterns or not patterns else patterns[0]
    return default


def fit(grid, domain):
    """`grid` with every sweep's defaulted axes substituted in `domain` (step 1); the same grid for the full domain."""
    sweeps = {}
    for name, axes in grid["sweeps"].items():
        moved = {axis: [substitute(axis, domain)] for axis in grids.DEFAULTS if axis not in axes}
        sweeps[name] = {**axes, **{axis: v for axis, v in moved.items() if v != [grids.DEFAULTS[axis]]}}
    return dict(grid, sweeps=sweeps)


def granularity(point, domain):
    """The scales' granularity of a point in `domain`: grouped with a group size, else per-channel, else
    per-tensor; None when the domain takes neither of the last two."""
    if point["group_size"]:
        return "grouped"
    return next((g for g in ("per-channel", "per-tensor") if g in domain.granularities), None)


def outside(operation, point, domain):
    """None when the benchmark (operation, point reduced to its axes) lies inside `domain`, else why not, naming
    the flag."""
    if point["dtype"] not in domain.dtypes:
        return f"dtype {point['dtype']} (--dtypes)"
    if point["group_size"] and "grouped" not in domain.granularities:
        return "grouped scales (--granularity)"
    if granularity(point, domain) is None:
        return "scales without groups (--granularity)"
    out_features, in_features = LAYER_SHAPES[point["layer"]]
    if not domain.allows_shape(out_features, in_features, point["group_size"]):
        return (f"layer {point['layer']} [{out_features}, {in_features}] with group size {point['group_size']} "
                "(--out-multiple-of, --in-multiple-of, --group-sizes, --no-ragged)")
    if operation != "gemm_lora":
        return None
    if point["rank"] > domain.max_rank:
        return f"rank {point['rank']} (--max-rank {domain.max_rank})"
    if point["num_loras"] > domain.max_loras:
        return f"{point['num_loras']} adapters (--max-loras {domain.max_loras})"
    if point["popularity"] not in domain.popularities:
        return f"popularity {point['popularity']} (--lora-patterns)"
    return None


def with_options(point, domain):
    """`point` plus the case options chosen in `domain` (step 3): scales_dtype, zero_points, granularity."""
    choices = domain.scale_dtype_choices(point["dtype"])
    return dict(point, scales_dtype=point["dtype"] if point["dtype"] in choices else choices[0],
                zero_points=ZERO_POINTS[domain.zero_points], granularity=granularity(point, domain))


def split(benchmarks, domain):
    """(the (backend, operation, point) of `benchmarks` inside `domain`, each point with its options;
    {reason: number of distinct (operation, point) outside})."""
    inside, reasons = [], {}
    for backend, operation, point in benchmarks:
        why = outside(operation, point, domain)
        if why:
            reasons.setdefault(why, set()).add((operation, tuple(point.items())))
        else:
            inside.append((backend, operation, with_options(point, domain)))
    return inside, {why: len(cases) for why, cases in reasons.items()}
