"""A candidate cannot forge its verdict: each attack of tests/planted/forgers.py ends as exit 1 with a complete
verdict file that says what happened, nothing forged reaches the report folder, and no process of the candidate
outlives the run (docs/threat-model.md). The judge never imports the attackers: only their own process does."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from int4_lora_harness.__main__ import main
from int4_lora_harness.verify import sandbox

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--no-large-tier", "--examples", "5", "--quiet"]


def walls_here():
    """Why the sandbox cannot be had on this machine, or None (then these tests demand it)."""
    probe = subprocess.run([sys.executable, "-c", "from int4_lora_harness.verify import sandbox; "
                            "print(sandbox.landlock(['/usr'], []))"], capture_output=True, text=True, timeout=120)
    return None if probe.returncode == 0 else probe.stderr.strip().splitlines()[-1]


def verify(report, *args, env=None):
    """(exit status, stdout) of `int4-verify --dequantizer ...` run in this process."""
    if env:
        os.environ.update(env)
    try:
        return main(["verify", "--report", str(report), "--dequantizer", *args, *FAST])
    finally:
        for k in env or {}:
            os.environ.pop(k, None)


def verdict(report):
    return json.loads((report / "verify.json").read_text())


def cmdline(pid):
    """A process's command line ('' once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def candidate_processes(marker):
    """PIDs of live processes whose command line holds `marker`."""
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and int(e) != os.getpid() and marker in cmdline(e)]


# `python` with SIGINT at its default, whatever this process inherited: a suite started in the background by a
# non-interactive shell (`nohup tox -e test &`) has SIGINT ignored, a child keeps that across exec, and Python
# then installs no KeyboardInterrupt handler. A run sent SIGINT is started through this.
INTERRUPTIBLE_PYTHON = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                        "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"]


def ours(judge):
    """The candidate processes (int4_lora_harness.verify.child) under the judge process `judge`."""
    from int4_lora_harness.verify.limits import tree
    return [p for p in tree(judge) if "int4_lora_harness.verify.child" in cmdline(p)]


def test_a_shape_that_would_run_code_when_unpickled_reaches_the_judge_as_plain_ints(tmp_path, capsys):
    code = verify(tmp_path, "planted.forgers:shape_runs_code")
    assert code == 1
    result = verdict(tmp_path)["results"][0]
    assert result["failure"]["kind"] == "wrong" and "shape, dtype and device" in result["failure"]["failed"]
    assert "planted.forgers" not in sys.modules  # the judge never imported the attacker


def test_a_candidate_that_patches_the_childs_bookkeeping_still_fails_on_what_the_judge_computes(tmp_path, capsys):
    code = verify(tmp_path, "planted.forgers:patches_the_child")
    assert code == 1
    failed = verdict(tmp_path)["results"][0]["failure"]["failed"]
    assert "inputs unchanged" in failed, failed  # its scribble, seen in the shared memory by the judge


def test_a_candidate_cannot_write_or_delete_verdicts_in_the_report_folder(tmp_path, capsys):
    if (why := walls_here()) is not None:
        pytest.skip(f"no Landlock here: {why}")
    earlier = tmp_path / "verify" / "earlier.json"
    earlier.parent.mkdir()
    earlier.write_text("{}")
    code = verify(tmp_path, "planted.forgers:writes_a_verdict", env={"HOSTILE_REPORT": str(tmp_path)})
    assert code == 1
    written = verdict(tmp_path)
    assert written["status"] == "complete" and written["exit_status"] == 1 and "2099" not in json.dumps(written)
    assert earlier.exists() and not (tmp_path / "verify" / "2099-forged.json").exists()
    assert written["results"][0]["sandbox"]["sandboxed"] is True


def test_a_detached_process_that_would_rewrite_the_verdict_dies_with_the_run(tmp_path, capsys):
    if (why := walls_here()) is not None:
        pytest.skip(f"no sandbox here: {why}")
    code = verify(tmp_path, "planted.forgers:detaches_a_rewriter", env={"HOSTILE_REPORT": str(tmp_path)})
    assert code == 1
    assert candidate_processes("int4-hostile-rewriter") == []
    time.sleep(4)  # past the moment it would have rewritten the verdict
    assert verdict(tmp_path)["exit_status"] == 1


def test_a_grandchild_holding_the_output_pipe_does_not_hold_the_run(tmp_path):
    run = subprocess.run([sys.executable, "-m", "int4_lora_harness", "verify", "--report", str(tmp_path),
                          "--dequantizer", "planted.forgers:holds_the_pipe", *FAST],
                         env={**os.environ, "PYTHONPATH": str(ROOT / "tests")}, capture_output=True, text=True,
                         timeout=80)  # the grandchild sleeps 90 s: a run it held would not end within this
    assert run.returncode == 1, run.stdout + run.stderr
    assert candidate_processes("int4-hostile-holder") == []


@pytest.mark.parametrize("signum, jobs", [(signal.SIGTERM, "1"), (signal.SIGINT, "2")])
def test_a_signal_to_the_verifier_ends_the_run_as_interrupted_and_leaves_no_candidate(tmp_path, signum, jobs):
    log = tmp_path / "out.log"
    with open(log, "w") as out:
        run = subprocess.Popen([*INTERRUPTIBLE_PYTHON, "-m", "int4_lora_harness", "verify", "--report",
                                str(tmp_path), "--dequantizer", "planted.forgers:ignores_sigterm_and_sleeps",
                                "--seeds", "0,1", "--jobs", jobs, "--timeout", "600", *FAST],
                               env={**os.environ, "PYTHONPATH": str(ROOT / "tests")}, stdout=out,
                               stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while len(ours(run.pid)) < 2 * int(jobs) and time.monotonic() < deadline:
            time.sleep(0.5)  # each candidate: its warden and its PID 1
        time.sleep(2)  # the candidates are in their first call
        started = ours(run.pid)
        run.send_signal(signum)
        try:
            code = run.wait(timeout=60)  # within seconds; a run that hangs fails here
        finally:
            from int4_lora_harness.verify.limits import kill_tree
            kill_tree(run)  # whatever happened, nothing of this test outlives it
    assert code == 1, log.read_text()
    assert verdict(tmp_path)["status"] == "interrupted"
    assert len(started) == 2 * int(jobs) and not any(os.path.exists(f"/proc/{p}") and "verify.child" in cmdline(p)
                                                     for p in started)


def test_a_gibibyte_of_the_wrong_shape_is_judged_from_its_header(tmp_path, capsys):
    code = verify(tmp_path, "planted.forgers:returns_a_gibibyte")
    assert code == 1
    failure = verdict(tmp_path)["results"][0]["failure"]
    assert failure["kind"] == "wrong" and "shape [536870912]" in failure["message"]


def test_text_from_the_candidate_cannot_pass_for_the_harnesss_own_lines(tmp_path, capsys):
    code = verify(tmp_path, "planted.forgers:prints_a_fake_verdict")
    out = capsys.readouterr()
    assert code == 1
    lines = (out.out + out.err).splitlines()
    assert not any(line.startswith("overall: all 1 PASS") for line in lines), lines
    assert any(line.startswith("overall:") and "FAILED" in line for line in lines)
    assert "\x1b" not in out.out + out.err


def test_no_cache_a_candidate_writes_survives_its_run(tmp_path, capsys):
    if (why := walls_here()) is not None:
        pytest.skip(f"no Landlock here: {why}")
    from int4_lora_harness.cbuild import cache_dir
    code = verify(tmp_path, "planted.forgers:poisons_the_caches", env={"HOSTILE_REPORT": str(tmp_path)})
    assert code == 1
    assert not (tmp_path / "caches").exists()  # it could not write beside the verdicts either
    for folder in (cache_dir(), Path("~/.triton/cache").expanduser()):
        assert not (folder / "gather-poisoned.so").exists()
