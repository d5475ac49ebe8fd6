"""The dequantizer's standard (docs/contract.md#dequantizer): at most 1 ulp from the exact value rounded once, equal to it where exact.

The exact value W = (v - z) * s (reference.dequantize_exact) is rounded once (RN) to the output dtype; ULPs
are counted on the format's number line (reference.rounding.ordinal), so a binade edge is exact. Two
roundings in fp16 ((v - z) in fp16, then * s) reach 2 ulps; fp16 intermediates overflow to inf: both fail.
Block by block of weight rows, as the linear's model (harness.verify.tolerance).
"""
import numpy as np

from int4_lora_harness.reference.granularity import expand
from int4_lora_harness.reference.packing import unpack
from int4_lora_harness.verify.designs import DEQUANTIZER_DESIGN
from int4_lora_harness.verify.judgement import ErrorReport, Tally, row_blocks, weight_rows
from int4_lora_harness.verify.tables import block_weights
from int4_lora_harness.verify.tolerance import ratio_of, ulp_distance


def dequant_judgement(got, weights, output_dtype):
    """got: [out, in] values of `output_dtype` (any float array) -> Judgement, block by block. A block equal to the
    correctly rounded weights everywhere (the usual verdict) is tallied as exact without further arrays."""
    out_features, in_features = weights.shape
    tally, space = Tally(DEQUANTIZER_DESIGN, out_features * in_features), {}
    for rows in row_blocks(out_features, in_features):
        packed, scales, zeros = weight_rows(weights, rows)
        with np.errstate(over="ignore"):
            expected = block_weights(packed, scales, zeros, weights.group_size, output_dtype, need_exact=False,
                                     space=space).w
        if np.array_equal(got[rows], expected):  # equal values everywhere: 0 ulps (+0 and -0 too), ratio 0
            tally.add_exact(expected.shape, lambda i, j, rows=rows, packed=packed, scales=scales, zeros=zeros,
                            expected=expected: _element(rows, packed, scales, zeros, weights.group_size, i, j,
                                                        expected, got[rows], 0.0, 0.0, 0.0))
            continue
        with np.errstate(over="ignore"):
            expected, exact, *_ = block_weights(packed, scales, zeros, weights.group_size, output_dtype,
                                               need_exact=True, space=space)
        got_block = np.asarray(got[rows], np.float64)
        ulps = ulp_distance(got_block, expected, output_dtype)
        allowed = np.where(expected == exact, 0.0, 1.0)  # exact where representable, else 1 ulp
        ratio = ratio_of(ulps, allowed)

        def describe(i, j, rows=rows, packed=packed, scales=scales, zeros=zeros, exact=exact, expected=expected,
                     got_block=got_block, ulps=ulps, allowed=allowed, ratio=ratio):
            return _element(rows, packed, scales, zeros, weights.group_size, i, j, expected, got_block, ulps[i, j],
                            allowed[i, j], ratio[i, j], exact[i, j])
        tally.add(ratio, ulps, describe)
    return tally.judgement()


def _element(rows, packed, scales, zeros, group_size, i, j, expected, got, ulps, allowed, ratio, exact=None):
    """The verdict's record of element (i, j) of a block of rows `rows`; exact None: computed here (the fast path
    keeps no exact weights)."""
    if exact is None:
        from int4_lora_harness.reference.dequantize import dequantize_exact
        exact = dequantize_exact(packed[i:i + 1], scales if np.size(scales) == 1 else np.asarray(scales)[i:i + 1],
                                 None if zeros is None else zeros if np.size(zeros) == 1 else
                                 np.asarray(zeros)[i:i + 1], group_size)[0, j]
    return dict(index=(rows.start + int(i), int(j)), expected=float(expected[i, j]), got=float(got[i, j]),
                ulps=float(ulps), allowed=float(allowed), ratio=float(ratio),
                inputs=element_inputs(packed, scales, zeros, group_size, i, j, exact))


def element_inputs(packed, scales, zero_points, group_size, i, j, exact):
    """The inputs behind weight (i, j) of a block: nibble value v, scale, zero point, group, exact W."""
    rows, in_features = packed.shape[0], 2 * packed.shape[1]
    value = lambda t, name: None if t is None else float(expand(t, rows, in_features, group_size, name)[i, j])  # noqa
    v = int(unpack(packed[i:i + 1])[0, j])
    return dict(v=v, scale=value(scales, "scales"), zero_point=value(zero_points, "zero_points"),
                group=None if group_size is None else int(j) // group_size, exact=float(exact))


def dequant_error(got, packed_weights, scales, zero_points, group_size, output_dtype):
    """got: float64 [out, in] values of `output_dtype` -> ErrorReport with every element (small cases)."""
    with np.errstate(over="ignore"):
        expected, exact, *_ = block_weights(packed_weights, scales, zero_points, group_size, output_dtype,
                                           need_exact=True)
    ulps = ulp_distance(got, expected, output_dtype)
    allowed = np.where(expected == exact, 0.0, 1.0)
    return ErrorReport(DEQUANTIZER_DESIGN, np.asarray(got, np.float64), expected, allowed, ratio_of(ulps, allowed),
                       ulps)
