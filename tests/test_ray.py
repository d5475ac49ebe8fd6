"""--ray: verify and bench spread over Ray, one verdict (or parquet) file written by the driver, the exit status of a
local run. Most tests share one local Ray instance of 2 CPUs started here (the driver uses a Ray it finds up, and
leaves it up); the embedded default and the interrupt run `python -m int4_lora_harness` with an instance of its own.
Ray's files go to a short temporary folder (its sockets' paths must stay under 108 bytes), never the cwd."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from int4_lora_harness.__main__ import main
from int4_lora_harness.shapes import LARGE_TIER
from int4_lora_harness.verify import plan
from int4_lora_harness.verify.parts import SMALL

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), "RAY_USAGE_STATS_ENABLED": "0"}
FAST = ["--no-large-tier", "--examples", "5", "--timeout", "60", "--quiet"]
CORRECT = "planted.bugs:correct_dequantize_fp32_math"
BUG = "planted.bugs:missing_offset"
NO_RAY = "the ray extra is not installed here: pip install 'int4-lora-harness[ray]'"


@pytest.fixture(scope="module")
def ray_folder():
    folder = tempfile.mkdtemp(prefix="ray-")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def local_ray(ray_folder):
    """A local Ray instance with 2 CPUs in this process, shut down after the module's tests."""
    ray = pytest.importorskip("ray", reason=NO_RAY)
    from int4_lora_harness.verify.ray_jobs import start_local
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(ROOT / "tests"))  # the workers' (they inherit it): planted.* are TARGETs
        patch.setenv("RAY_USAGE_STATS_ENABLED", "0")
        start_local(num_cpus=2, _temp_dir=ray_folder)
        yield ray
        ray.shutdown()


def verify(report, *args):
    return main(["verify", "--report", str(report), *args])


def verdict_files(report):
    return sorted((report / "verify").glob("*.json"))


def test_a_correct_candidate_on_ray_passes_with_every_task_in_one_verdict_naming_its_node(tmp_path, capsys, local_ray):
    code = verify(tmp_path, "--dequantizer", CORRECT, "--seeds", "0,1", "--ray", *FAST)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "ray: 1 node, 2 CPUs" in out
    [path] = verdict_files(tmp_path)
    verdict = json.loads(path.read_text())
    assert verdict["status"] == "complete" and verdict["exit_status"] == 0 and verdict["ray"] == "local"
    tasks = [f"dequantizer {CORRECT} seed 0", f"dequantizer {CORRECT} seed 1"]
    assert verdict["tasks"] == tasks
    assert sorted(r["task"] for r in verdict["results"]) == tasks
    assert {r["seed"] for r in verdict["results"]} == {0, 1} and all(r["passed"] for r in verdict["results"])
    node_id, nice = local_ray.get_runtime_context().get_node_id(), os.getpriority(os.PRIO_PROCESS, 0)
    assert all(r["node"] == dict(id=node_id, host=socket.gethostname(), nice=nice) for r in verdict["results"])
    assert "ray: note" not in out  # its workers run at this process's niceness, not Ray's default 15 below
    from test_forgery import walls_here
    assert all(r["sandbox"]["sandboxed"] is (walls_here() is None) for r in verdict["results"])
    assert "repro_files" not in path.read_text()


def test_a_planted_bug_on_ray_exits_1_and_the_driver_writes_its_repro(tmp_path, capsys, local_ray):
    code = verify(tmp_path, "--dequantizer", BUG, "--seeds", "0,1", "--ray", *FAST)
    assert code == 1
    [path] = verdict_files(tmp_path)
    verdict = json.loads(path.read_text())
    assert verdict["status"] == "complete" and verdict["exit_status"] == 1
    assert len(verdict["results"]) == 2 and not any(r["passed"] for r in verdict["results"])
    result = verdict["results"][0]
    assert result["failure"]["kind"] == "wrong" and Path(result["repro"]).parent == tmp_path
    from int4_lora_harness.verify.repro import replay
    assert replay(Path(result["repro"]).with_suffix(".case"), ["--in-process"]) == 1


def test_a_long_plan_on_ray_runs_a_task_per_part_merged_into_one_result_with_the_first_failure(tmp_path, capsys,
                                                                                                 local_ray):
    bug = "planted.large:dequantize_raises_past_a_million_weights"  # every large-tier case raises, nothing below
    code = verify(tmp_path, "--dequantizer", bug, "--ray", "--examples", "5", "--timeout", "60", "--quiet")
    assert code == 1, capsys.readouterr().out
    verdict = json.loads((tmp_path / "verify.json").read_text())
    assert verdict["status"] == "complete" and verdict["tasks"] == [f"dequantizer {bug} seed 0"]
    [result] = verdict["results"]
    assert result["task"] == f"dequantizer {bug} seed 0" and result["fuzzed_cases"] == 5
    assert [(p["part"], p["passed"], p["task"]) for p in result["parts"]] == [
        (part, part == SMALL, f"dequantizer {bug} seed 0 part {part}") for part in (SMALL, *LARGE_TIER)]
    node_id = local_ray.get_runtime_context().get_node_id()
    assert all(p["node"]["id"] == node_id for p in result["parts"])
    failing = [e for e in result["explicit"] if not e["passed"]]
    assert [e["group"] for e in failing] == ["large tier"] * len(LARGE_TIER)
    assert failing[0]["shape"].startswith(LARGE_TIER[0])  # the first failure in plan order is the verdict's
    assert result["failure"]["kind"] == "raised" and "too many weights" in result["failure"]["message"]
    assert result["planned"]["large tier"] == len(plan.large_tier_rows("dequantizer"))
    assert Path(result["repro"]).parent == tmp_path and Path(result["repro"]).with_suffix(".case").is_file()


def test_a_task_run_niced_by_a_cluster_is_noted_once_per_host():
    from int4_lora_harness.verify.ray_jobs import niced_note
    own, noted = os.getpriority(os.PRIO_PROCESS, 0), set()
    assert niced_note(dict(node=dict(host="a", nice=own)), noted) is None
    assert niced_note(dict(node=None), noted) is None  # a worker that died before it returned
    note = niced_note(dict(node=dict(host="a", nice=own + 15)), noted)
    assert note.startswith("ray: note: the tasks on a run at nice") and "RAY_worker_niceness=0" in note
    assert niced_note(dict(node=dict(host="a", nice=own + 15)), noted) is None
    assert niced_note(dict(node=dict(host="b", nice=own + 1)), noted) is not None


def test_a_target_ray_cannot_import_is_a_usage_error_as_without_ray(tmp_path, capsys, local_ray):
    code = verify(tmp_path, "--dequantizer", "planted.bugs:no_such_function", "--ray", *FAST)
    err = capsys.readouterr().err
    assert code == 2 and "no function 'no_such_function'" in err and len(err.strip().splitlines()) == 1, err
    assert json.loads((tmp_path / "verify.json").read_text())["status"] == "usage error"


def test_bench_on_ray_writes_one_parquet_file_with_every_benchmark(tmp_path, capsys, local_ray):
    from int4_lora_harness.bench import store
    target = "int4_lora_harness.kernels.torch_path:linear"
    code = main(["bench", "--linear", target, "--grid", "smoke", "--bench-dir", str(tmp_path), "--quiet",
                 "--no-project-backends", "--ray"])
    assert code == 0, capsys.readouterr().out
    assert len(list(tmp_path.glob("*.parquet"))) == 1
    rows = store.load_runs(tmp_path)
    assert set(rows["backend"]) == {"dense", "materialize", target}
    assert set(rows[rows["backend"] == target]["operation"]) == {"gemm", "gemm_lora"}
    assert (rows["median_s"] > 0).all() and set(rows["host"]) == {socket.gethostname()}


def test_bench_on_ray_refuses_a_planted_bug(tmp_path, capsys, local_ray):
    code = main(["bench", "--dequantizer", BUG, "--grid", "smoke", "--bench-dir", str(tmp_path), "--quiet",
                 "--no-project-backends", "--ray"])
    assert code == 1 and "REFUSED" in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    (["--jobs", "2"], "--ray and --jobs N"),
    (["--in-process"], "--in-process cannot"),
])
def test_flags_ray_cannot_honour_are_usage_errors(tmp_path, capsys, flags, message):
    pytest.importorskip("ray", reason=NO_RAY)
    assert verify(tmp_path, "--dequantizer", CORRECT, "--ray", *flags, *FAST) == 2
    assert message in capsys.readouterr().err


def test_without_ray_installed_the_flag_is_a_usage_error_naming_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    assert verify(tmp_path, "--dequantizer", CORRECT, "--ray", *FAST) == 2
    assert "pip install 'int4-lora-harness[ray]'" in capsys.readouterr().err
    assert main(["bench", "--dequantizer", CORRECT, "--bench-dir", str(tmp_path), "--ray"]) == 2
    assert "pip install 'int4-lora-harness[ray]'" in capsys.readouterr().err


def ray_processes(folder):
    """PIDs of live processes whose command line names `folder` (Ray's own: gcs_server, raylet, workers)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            line = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace") if entry.isdigit() else ""
        except OSError:
            continue
        found += [int(entry)] if folder in line else []
    return found


def run_verify(report, ray_tmp, *args, **popen):
    """`python -m int4_lora_harness verify --ray` in its own process, Ray's files under `ray_tmp`."""
    from test_forgery import INTERRUPTIBLE_PYTHON
    return subprocess.Popen([*INTERRUPTIBLE_PYTHON, "-m", "int4_lora_harness", "verify", "--report", str(report),
                             "--ray", *args], env={**ENV, "RAY_TMPDIR": ray_tmp}, **popen)


def test_the_embedded_default_starts_a_local_instance_and_shuts_it_down(tmp_path):
    pytest.importorskip("ray", reason=NO_RAY)
    ray_tmp = tempfile.mkdtemp(prefix="ray-")
    try:
        run = run_verify(tmp_path, ray_tmp, "--dequantizer", CORRECT, *FAST, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        out, _ = run.communicate(timeout=600)
        assert run.returncode == 0, out
        where = json.loads((tmp_path / "verify.json").read_text())["results"][0]["node"]
        assert where["host"] == socket.gethostname() and where["nice"] == os.getpriority(os.PRIO_PROCESS, 0), out
        assert_ray_gone(ray_tmp)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def assert_ray_gone(ray_tmp, seconds=30):
    """Within `seconds`, no process of the local Ray instance whose files are in `ray_tmp` is left."""
    deadline = time.monotonic() + seconds
    while ray_processes(ray_tmp) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray_processes(ray_tmp) == []


def candidates_under(pid):
    from int4_lora_harness.verify.limits import tree
    return [p for p in tree(pid) if "int4_lora_harness.verify.child" in
            Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]


def test_an_interrupt_cancels_the_tasks_and_the_verdict_says_which_finished(tmp_path):
    pytest.importorskip("ray", reason=NO_RAY)
    ray_tmp, log = tempfile.mkdtemp(prefix="ray-"), tmp_path / "out.log"
    try:
        with open(log, "w") as out:
            run = run_verify(tmp_path, ray_tmp, "--dequantizer", "planted.forgers:ignores_sigterm_and_sleeps",
                             "--seeds", "0,1", *FAST, stdout=out, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 300
            while len(candidates_under(run.pid)) < 4 and time.monotonic() < deadline:
                time.sleep(0.5)  # each candidate: its warden and its PID 1
            time.sleep(2)  # the candidates are in their first call
            started = candidates_under(run.pid)
            run.send_signal(signal.SIGINT)
            try:
                code = run.wait(timeout=90)  # within seconds; a run that hangs fails here
            finally:
                from int4_lora_harness.verify.limits import kill_tree
                kill_tree(run)
        verdict = json.loads((tmp_path / "verify.json").read_text())
        assert code == 1, log.read_text()
        assert verdict["status"] == "interrupted" and verdict["finished_tasks"] == []
        assert sorted(verdict["unfinished_tasks"]) == sorted(verdict["tasks"]) and len(verdict["tasks"]) == 2
        assert len(started) == 4 and not any(os.path.exists(f"/proc/{p}") for p in started)
        assert_ray_gone(ray_tmp)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def parent_of(pid):
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_task_whose_ray_worker_dies_is_reported_crashed_and_not_judged(tmp_path):
    pytest.importorskip("ray", reason=NO_RAY)
    ray_tmp, log = tempfile.mkdtemp(prefix="ray-"), tmp_path / "out.log"
    try:
        with open(log, "w") as out:
            run = run_verify(tmp_path, ray_tmp, "--dequantizer", "planted.forgers:ignores_sigterm_and_sleeps", *FAST,
                             stdout=out, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 300
            while len(candidates_under(run.pid)) < 2 and time.monotonic() < deadline:
                time.sleep(0.5)
            candidates = candidates_under(run.pid)
            parents = {parent_of(p) for p in candidates} - set(candidates)  # the Ray worker that judges it
            assert len(parents) == 1, candidates
            os.kill(parents.pop(), signal.SIGKILL)
            try:
                code = run.wait(timeout=120)
            finally:
                from int4_lora_harness.verify.limits import kill_tree
                kill_tree(run)
        result = json.loads((tmp_path / "verify.json").read_text())["results"][0]
        assert code == 1, log.read_text()
        assert not result["passed"] and result["failure"]["kind"] == "crashed" and result["node"] is None
        assert "the Ray worker judging it ended before it returned" in result["failure"]["message"]
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
