"""A repro script (harness/verify/repro.py) prints the wrong value a planted wrong kernel returns, as a user runs it."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from int4_lora_harness.verify.designs import SETS
from int4_lora_harness.verify.domain import FULL
from int4_lora_harness.verify.plan import coverage_cases
from int4_lora_harness.verify.repro import write_repro
from planted.bugs import missing_offset

ROOT = Path(__file__).resolve().parents[1]
LINGERS = '''import threading
import time

from planted.bugs import missing_offset


def dequantize(**kwargs):
    threading.Thread(target=time.sleep, args=(30,), name="lingers").start()  # the process cannot exit for 30 s
    return missing_offset(**kwargs)
'''
WORST = re.compile(r"^FAIL  within tolerance: worst element \((\d+), (\d+)\): expected \S+, got (\S+),", re.MULTILINE)


def target(kind, folder):
    if kind == "returns":
        return "planted.bugs:missing_offset"
    (folder / "lingers.py").write_text(LINGERS)
    return f"{folder / 'lingers.py'}:dequantize"


@pytest.mark.parametrize("kind", ["returns", "returns and leaves a thread running"])
def test_the_repro_of_a_wrong_kernel_prints_the_value_it_returned(tmp_path, kind):
    case = coverage_cases("dequantizer", FULL, 0)[0][2]
    script = write_repro(tmp_path, target(kind, tmp_path), "dequantizer", case,
                         dict(layout="canonical", designs=SETS["all"], device="cpu", timeout=60.0))
    run = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "tests")})
    assert run.returncode == 1, run.stdout + run.stderr
    worst = WORST.search(run.stdout)
    assert worst, run.stdout + run.stderr
    row, column, got = int(worst[1]), int(worst[2]), float(worst[3])
    assert got == float(missing_offset(**case.torch_kwargs("cpu"))[row, column])  # the kernel's own wrong value
    assert "failed: the failure is still there" in run.stdout
    if kind != "returns":  # a process that will not exit is a note after the values, never a failure of its own
        assert "note: the candidate's process did not exit" in run.stdout, run.stdout
