"""A standalone repro of a failing case: repro_<name>.py and the case it replays, repro_<name>.case.

The script replays the case through the same properties the verdict used (harness.verify.properties,
in a child process unless --in-process), prints each one and the worst element, and exits 1 while
the failure is there, 0 once the candidate passes it:

    python reports/repro_mykernel_linear.py [cpu|cuda] [--in-process]
"""
import pickle
import re
import sys
from pathlib import Path

SCRIPT = '''"""Repro written by `int4-harness verify`: {target} ({contract}) on the case where it failed.

Case: {case}
Run: python {script_name} [cpu|cuda] [--in-process]   (exit status 1 while the failure is there)
"""
import pathlib
import sys

from int4_lora_harness.verify.repro import replay

if __name__ == "__main__":  # the candidate's child process re-imports this file: it must not replay again
    sys.exit(replay(pathlib.Path(__file__).with_name({data_name!r}), sys.argv[1:]))
'''


def _name(target, contract):
    stem = re.sub(r"[^A-Za-z0-9_]+", "_", Path(target.replace(":", "_")).name)[-60:] or "candidate"
    return f"{stem}_{contract}"


def write_repro(folder, target, contract, case, options):
    """Write repro_<name>.py and .case into `folder`; return the script's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = _name(target, contract)
    script, data = folder / f"repro_{name}.py", folder / f"repro_{name}.case"
    saved = dict(target=target, contract=contract, case=case, layout=options["layout"],
                 designs=tuple(options["designs"]), device=options["device"], timeout=options["timeout"])
    data.write_bytes(pickle.dumps(saved))
    script.write_text(SCRIPT.format(target=target, contract=contract, case=case.describe(), script_name=script.name,
                                    data_name=data.name))
    return script


def replay(path, argv):
    """Replay a saved case; 1 while any property fails or the candidate does not return, else 0.

    The properties' lines (the wrong values among them) are printed before the candidate's process is stopped:
    a process that then will not exit is a note after them, never a failure."""
    from int4_lora_harness.verify.executor import CandidateFailure, ChildExecutor
    from int4_lora_harness.verify.in_process import InProcessExecutor
    from int4_lora_harness.verify.numerics import judge_numerics
    from int4_lora_harness.verify.properties import run_properties
    from int4_lora_harness.verify.targets import load_target, parameters
    saved = pickle.loads(Path(path).read_bytes())
    device = next((a for a in argv if a in ("cpu", "cuda")), saved["device"])
    names = parameters(saved["contract"], saved["layout"])
    if "--in-process" in argv:
        executor = InProcessExecutor(load_target(saved["target"], names, saved["contract"]), device, saved["timeout"])
    else:
        executor = ChildExecutor(saved["target"], names, saved["contract"], device, saved["timeout"])
    try:
        with judge_numerics():
            run = run_properties(executor, saved["case"], saved["designs"], saved["layout"])
    except CandidateFailure as failure:
        show(f"FAIL: the candidate {failure.kind}: {failure.message}")
        stop(executor)
        return 1
    failed = False
    for o in run.outcomes:
        status = "PASS" if o.passed else "FAIL" if o.passed is False else "----"
        failed |= o.passed is False
        show(f"{status}  {o.name}: {o.message}")
    stop(executor)
    print("failed: the failure is still there" if failed else "no mismatch: the candidate now passes this case")
    return 1 if failed else 0


def stop(executor):
    """Stop the candidate's process (and all it started); a note where it would not exit by itself."""
    executor.close()
    if executor.exit_note:
        show(f"note: {executor.exit_note}")


def show(line):
    """Print a line holding the candidate's text (its exception, its values) on one line, escaped."""
    from int4_lora_harness.verify.candidate_text import escaped
    print(escaped(line))


if __name__ == "__main__":
    sys.exit(replay(sys.argv[1], sys.argv[2:]))
