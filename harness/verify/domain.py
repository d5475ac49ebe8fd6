"""The input space a verification draws from, and how a run narrows it (no torch, no hypothesis: cheap to import).

A kernel that supports only part of the contract says so with a Domain (the CLI's domain flags, or
a native layout's own limits, verify.layouts); every strategy, explicit example and large-tier
shape is drawn inside it, and a narrowed run says what it left out (`describe`).
"""
from dataclasses import dataclass, fields, replace

GRANULARITIES = ("per-tensor", "per-channel", "grouped")
DTYPES = ("fp16", "bf16", "fp32")
ZERO_POINTS = ("none", "integer", "fractional", "any")  # which zero points a kernel takes
POPULARITIES = ("uniform", "distinct", "zipf", "identical", "none")  # how tokens pick adapters
GROUP_SIZES = (2, 16, 24, 32, 64, 96, 128)
SCALINGS = (1.0, 0.5, 2.0, 0.0, -1.0, 0.125, -3.5)
OUTPUT = "output"  # in scale_dtypes: the scales come in the output (x) dtype
PROFILE_EXAMPLES = {"ci": 40, "thorough": 600}  # fuzzed cases per search, by profile
# the weight layouts a candidate may take (verify.layouts.LAYOUTS holds each; test_layouts checks the two agree)
LAYOUT_NAMES = ("canonical", "gptq", "gptq_v2", "awq", "compressed-tensors", "gguf-q4_0", "gguf-q4_1", "hqq")
# log2 of the scale magnitude: tiny (subnormal weights) to large enough that a half-precision
# intermediate overflows while a bf16/fp32 result stays finite (|W| up to 16 * 2**17).
SCALE_EXPONENTS = {"fp16": (-24, 13), "bf16": (-24, 16), "fp32": (-24, 16)}
LINEAR_SCALE_EXPONENTS = {"fp16": (-16, 2), "bf16": (-16, 14), "fp32": (-16, 14)}  # y stays finite


@dataclass(frozen=True)
class Domain:
    """The part of the input space to draw from; the defaults cover all of it."""
    dtypes: tuple = DTYPES  # x / output dtypes
    scale_dtypes: tuple = DTYPES  # or (OUTPUT,): scales in the output dtype
    group_sizes: tuple | None = None  # None: GROUP_SIZES plus any size from 2 to past in_features
    granularities: tuple = GRANULARITIES  # for scales and zero points alike
    zero_points: str = "any"  # one of ZERO_POINTS
    same_granularity: bool = False  # zero points always have the scales' granularity
    ragged: bool = True  # a last group shorter than group_size (in_features % group_size != 0)
    in_multiple_of: int = 2  # in_features is a multiple of this (always even: two nibbles per byte)
    out_multiple_of: int = 1  # out_features is a multiple of this (AWQ packs 8 rows per int32)
    bias: bool = True
    max_rank: int = 64
    max_loras: int = 8
    popularities: tuple = POPULARITIES  # the LoRA index patterns drawn
    long_k: bool = True  # sometimes draw in_features >= 1024, where fp16 accumulation shows

    def __post_init__(self):
        _check_subset("dtypes", self.dtypes, DTYPES)
        _check_subset("scale_dtypes", self.scale_dtypes, (*DTYPES, OUTPUT))
        _check_subset("granularities", self.granularities, GRANULARITIES)
        _check_subset("popularities", self.popularities, POPULARITIES)
        if self.zero_points not in ZERO_POINTS:
            raise ValueError(f"zero_points must be one of {ZERO_POINTS}, got {self.zero_points!r}")
        if self.group_sizes is not None and (not self.group_sizes or min(self.group_sizes) < 1):
            raise ValueError(f"group_sizes must be positive ints, got {self.group_sizes!r}")
        for name in ("in_multiple_of", "out_multiple_of", "max_rank", "max_loras"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "max_loras" else 1):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.in_multiple_of % 2:
            raise ValueError(f"in_multiple_of must be even (two nibbles per byte), got {self.in_multiple_of}")

    def describe(self):
        """One line per narrowed field, so a narrowed run is never mistaken for a full one."""
        full = Domain()
        return [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if getattr(self, f.name) != getattr(full, f.name)]

    def narrow(self, **limits):
        """This domain with `limits` applied on top (a layout's own limits; tuples intersect, flags AND)."""
        merged = {}
        if OUTPUT in self.scale_dtypes and "scale_dtypes" in limits and OUTPUT not in limits["scale_dtypes"]:
            # scales in the output dtype, which the layout's scale dtypes must then hold
            limits = dict(limits, dtypes=tuple(limits.get("dtypes", DTYPES)) and tuple(
                d for d in limits.get("dtypes", DTYPES) if d in limits["scale_dtypes"]))
            limits.pop("scale_dtypes")
        for name, value in limits.items():
            mine = getattr(self, name)
            if isinstance(mine, tuple) and isinstance(value, tuple):
                value = tuple(v for v in mine if v in value)
                if not value:
                    raise ValueError(f"{name}: {mine!r} and the layout's {limits[name]!r} have nothing in common")
            elif name in ("in_multiple_of", "out_multiple_of"):
                value = _lcm(mine, value)
            elif name in ("bias", "ragged", "long_k"):
                value = mine and value
            elif name == "same_granularity":
                value = mine or value
            elif name == "zero_points" and mine != "any" and value != "any" and mine != value:
                raise ValueError(f"zero_points: {mine!r} and the layout's {value!r} have nothing in common")
            elif name == "zero_points" and value == "any":
                value = mine
            merged[name] = value
        return replace(self, **merged)

    def scale_dtype_choices(self, output_dtype):
        """The scales' dtypes a case of `output_dtype` may use."""
        return tuple(dict.fromkeys(output_dtype if d == OUTPUT else d for d in self.scale_dtypes))

    def zero_kinds(self):
        """harness.cases.make_weights zero_kind values this domain allows (empty: no zero points)."""
        integer, fractional = ("int32", "int8", "int64"), ("float", "fp32")
        return {"none": (), "integer": integer, "fractional": fractional, "any": integer + fractional}[self.zero_points]

    def allows_shape(self, out_features, in_features, group_size):
        """True when (out, in, group_size) lies inside the domain (group_size None: no groups)."""
        if out_features % self.out_multiple_of or in_features % self.in_multiple_of:
            return False
        if group_size is not None and (self.group_sizes is not None and group_size not in self.group_sizes):
            return False
        return self.ragged or group_size is None or in_features % group_size == 0


def _check_subset(name, values, allowed):
    if not isinstance(values, tuple) or not values or any(v not in allowed for v in values):
        raise ValueError(f"{name} must be a non-empty tuple of {allowed}, got {values!r}")


def _lcm(a, b):
    from math import lcm
    return lcm(a, b)


FULL = Domain()
