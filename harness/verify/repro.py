"""Write a standalone repro for a failing case: repro_<name>.py (torch only) and its tensors, repro_<name>.pt.

The .pt file holds the contract's inputs, the expected values (float64) and the absolute error
allowed per element; the script loads them, calls the candidate in the order int4_lora_harness.verify.properties
does (values, inputs unchanged, a second call, an in-place update of packed_weights) and prints
each mismatch.
"""
import re
from pathlib import Path

import numpy as np
import torch

from int4_lora_harness.verify.cases import TORCH_DTYPES, DequantCase
from int4_lora_harness.verify.tolerance import dequant_error, linear_error
from int4_lora_harness.reference.rounding import spacing

SCRIPT = '''"""Repro written by `python -m int4_lora_harness verify`: {target} ({contract}) on a case where {failed} failed.

Case: {case}
Run: python {script_name}   (exit status 1 while the mismatch is there)
"""
import importlib
import importlib.util
import pathlib
import sys

import torch

TARGET = {target!r}
HERE = pathlib.Path(__file__).resolve().parent


def load(target):
    module_name, _, function_name = target.rpartition(":")
    if module_name.endswith(".py"):
        spec = importlib.util.spec_from_file_location(pathlib.Path(module_name).stem, module_name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        sys.path.insert(0, str(pathlib.Path.cwd()))
        module = importlib.import_module(module_name)
    return getattr(module, function_name)


case = torch.load(HERE / {data_name!r})
device = sys.argv[1] if len(sys.argv) > 1 else {device!r}
inputs = {{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in case["inputs"].items()}}
function = load(TARGET)


def call(inputs):
    return function(**inputs) if case["contract"] == "dequantizer" else function(*inputs.values())


def same_bits(a, b):
    """Bitwise equal tensors (NaN == NaN, -0 != +0)."""
    if not isinstance(b, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype:
        return False
    ints = {{1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}}[a.element_size()]
    return torch.equal(a.contiguous().view(ints).cpu(), b.contiguous().view(ints).cpu())


# The harness's sequence of properties: values, inputs unchanged, deterministic, tracks input updates.
before = {{k: v.clone() for k, v in inputs.items() if isinstance(v, torch.Tensor)}}
got = call(inputs)
if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(case["expected"].shape) or got.dtype != case["dtype"]:
    print(f"MISMATCH: expected a {{case['dtype']}} tensor of shape {{list(case['expected'].shape)}}, got "
          f"{{type(got).__name__}} {{getattr(got, 'dtype', '')}} {{list(getattr(got, 'shape', []))}}")
    sys.exit(1)
failed = []
error = (got.double().cpu() - case["expected"]).abs()
bad = ~(error <= case["allowed"])  # NaN counts as bad
print(f"{{int(bad.sum())}} of {{bad.numel()}} elements outside the allowed error")
if bad.any():
    worst = torch.nan_to_num(error - case["allowed"], nan=float("inf")).flatten().argmax()
    index = tuple(int(i) for i in torch.unravel_index(worst, error.shape))
    print(f"worst element {{index}}: expected {{case['expected'][index].item()!r}}, got {{got.cpu()[index].item()!r}}, "
          f"allowed error {{case['allowed'][index].item():.3g}}")
    failed.append("within tolerance")
changed = [k for k, v in before.items() if not same_bits(v, inputs[k])]
if changed:
    print(f"MISMATCH: the call modified its inputs {{changed}}")
    failed.append("inputs unchanged")
if not same_bits(got, call(inputs)):
    print("MISMATCH: a second call on the same inputs gives a different result")
    failed.append("deterministic")
inputs["packed_weights"].bitwise_not_()  # every weight v -> -v - 1, in place (same tensor object)
updated = call(inputs)
fresh = call({{k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}})
if not same_bits(updated, fresh):
    print("MISMATCH: after packed_weights changed in place, the result differs from fresh tensors "
          "holding the same values (a stale cache?)")
    failed.append("tracks input updates")
if failed:
    print("failed:", ", ".join(failed))
    sys.exit(1)
print("no mismatch: the candidate now passes this case")
'''


def _allowed_abs(case, got):
    """float64 absolute error allowed per element, the envelope of int4_lora_harness.verify.tolerance's rule."""
    if isinstance(case, DequantCase):
        w = case.weights
        report = dequant_error(got, w.packed, w.scales, w.zero_points, w.group_size, case.output_dtype)
        return report.expected, report.allowed * spacing(report.expected, case.output_dtype)
    report = linear_error(got, case)
    return report.expected, report.allowed + 0.5 * spacing(np.abs(report.expected) + report.allowed, case.x_dtype)


def write_repro(folder, target, contract, case, got, failed, case_words, device):
    """Write repro_<name>.py and .pt into `folder` (name: the target's module and function); return the script."""
    name = re.sub(r"[^A-Za-z0-9_]+", "_", Path(target.replace(":", "_")).name)[-60:] or "candidate"
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    script, data = folder / f"repro_{name}.py", folder / f"repro_{name}.pt"
    if got is not None:
        expected, allowed = _allowed_abs(case, np.asarray(got, np.float64))
    else:  # the candidate raised or returned no tensor: keep the reference values for the shape check
        expected, allowed = _allowed_abs(case, np.zeros(case.weights.shape if isinstance(case, DequantCase)
                                                        else (case.x.shape[0], case.weights.shape[0])))
    inputs = case.torch_kwargs("cpu")
    dtype = TORCH_DTYPES[case.output_dtype if isinstance(case, DequantCase) else case.x_dtype]
    torch.save(dict(contract=contract, inputs=inputs, dtype=dtype, expected=torch.from_numpy(np.asarray(expected, np.float64)),
                    allowed=torch.from_numpy(np.asarray(allowed, np.float64))), data)
    script.write_text(SCRIPT.format(target=target, contract=contract, failed=", ".join(failed) or "a call",
                                    case=case_words, script_name=script.name, data_name=data.name, device=device))
    return script
