"""Run the red-team candidates of tests/planted/attack.py through the real CLI and say which attacks succeeded.

    .tox/shared/bin/python tests/attack_run.py [NAME ...]     # default: every attack

Each run gets its own folder (report, cache, marker) under a temporary directory: the judge's cache is
INT4_LORA_HARNESS_CACHE there, so nothing here poisons the machine's real ~/.cache. Every process started is
killed by its pid (its own session) before the script ends. Exit status 0 always: the lines say what happened.
"""
import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = str(ROOT / ".tox" / "shared" / "bin" / "python")
FAST = ["--no-large-tier", "--examples", "5", "--quiet"]


def world(name):
    """A fresh folder with report/, cache/ and the marker path, and the environment that points there."""
    base = Path(tempfile.mkdtemp(prefix=f"attack-{name}-"))
    (base / "report").mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tests"), INT4_LORA_HARNESS_CACHE=str(base / "cache"),
               HOSTILE_MARKER=str(base / "marker"))
    env.pop("TRITON_CACHE_DIR", None)
    return base, env


def verify(base, env, args, timeout=300, **popen):
    """(exit status | None if it was still running at `timeout` and killed, output) of one int4-verify run."""
    process = subprocess.Popen([PY, "-m", "int4_lora_harness", "verify", "--report", str(base / "report"), *args],
                               env=env, cwd=str(base), stdout=popen.pop("stdout", subprocess.PIPE),
                               stderr=subprocess.STDOUT, start_new_session=True, **popen)
    try:
        out, _ = process.communicate(timeout=timeout)
        return process.returncode, (out or b"").decode(errors="replace")
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the judge's own session (its candidates die with it)
        out, _ = process.communicate()
        return None, (out or b"").decode(errors="replace")


def verdict(base):
    try:
        return json.loads((base / "report" / "verify.json").read_text())
    except (OSError, ValueError):
        return None


def marker(base):
    path = base / "marker"
    return path.read_text() if path.exists() else ""


def leftovers(text):
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and text.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                found.append(int(entry))
        except OSError:
            pass
    return [p for p in found if p != os.getpid() and b"attack_run.py" not in Path(f"/proc/{p}/cmdline").read_bytes()]


def summary(v):
    if v is None:
        return "no verdict"
    return f"status={v.get('status')} exit_status={v.get('exit_status')} passed=" + \
        str([r.get("passed") for r in v.get("results", [])])


def say(name, succeeded, what):
    print(f"[{'SUCCEEDED' if succeeded else 'held'}] {name}: {what}", flush=True)


# --- the attacks --------------------------------------------------------------------------------------------------

def rotates_output_buffers():
    base, env = world("rotate")
    code, out = verify(base, env, ["--dequantizer", "planted.attack:rotates_output_buffers", *FAST])
    v = verdict(base)
    sys.path.insert(0, str(ROOT / "tests"))
    import torch
    from planted.attack import rotates_output_buffers as f
    packed = torch.randint(0, 256, (4, 8), dtype=torch.uint8)
    first = f(packed_weights=packed, scales=torch.ones(1, dtype=torch.float16))
    kept = first.clone()
    for _ in range(16):
        f(packed_weights=packed ^ 0x11, scales=torch.ones(1, dtype=torch.float16))
    wrong = not torch.equal(first, kept)
    say("rotates_output_buffers", code == 0 and wrong, f"exit {code}, {summary(v)}; result of call 1 changed by "
        f"call 17: {wrong}")


def caches_on_a_sample():
    base, env = world("cache")
    code, out = verify(base, env, ["--dequantizer", "planted.attack:caches_on_a_sample", *FAST])
    v = verdict(base)
    import torch
    sys.path.insert(0, str(ROOT / "tests"))
    from planted.attack import caches_on_a_sample as f
    packed, scales = torch.randint(0, 256, (4, 8), dtype=torch.uint8), torch.ones(1, dtype=torch.float16)
    before = f(packed_weights=packed, scales=scales).clone()
    packed[1, 3] ^= 0x11  # an in-place update of one element (not the first or last)
    stale = torch.equal(f(packed_weights=packed, scales=scales), before)
    say("caches_on_a_sample", code == 0 and stale, f"exit {code}, {summary(v)}; result stale after an in-place update "
        f"of one element: {stale}")


def trickles_its_replies():
    base, env = world("trickle")
    start = time.monotonic()
    code, out = verify(base, env, ["--dequantizer", "planted.attack:trickles_its_replies", "--timeout", "2", *FAST],
                       timeout=60)
    v = verdict(base)
    say("trickles_its_replies", code is None, f"--timeout 2 and a candidate using no CPU: after "
        f"{time.monotonic() - start:.0f} s the judge was {'still running (killed)' if code is None else f'done, exit {code}'}"
        f"; {summary(v)}")


def trickle_survives_sigterm():
    base, env = world("trickle-term")
    process = subprocess.Popen([PY, "-m", "int4_lora_harness", "verify", "--report", str(base / "report"),
                                "--dequantizer", "planted.attack:trickles_its_replies", "--timeout", "2", *FAST],
                               env=env, cwd=str(base), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    time.sleep(25)  # in its first calls
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=40)
    except subprocess.TimeoutExpired:
        code = None
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    say("trickle_survives_sigterm", code is None, f"SIGTERM to the judge: {'still running 40 s later (killed)' if code is None else f'exit {code}'}; "
        f"{summary(verdict(base))}")


def claims_a_result_without_bytes():
    base, env = world("nobytes")
    code, out = verify(base, env, ["--dequantizer", "planted.attack_nobytes:claims_a_result_without_bytes", *FAST])
    v = verdict(base)
    last = [line for line in out.splitlines() if line.strip()][-1:]
    say("claims_a_result_without_bytes", "Traceback" in out, f"exit {code}, {summary(v)}; last line: {last}")


def widens_its_walls():
    base, env = world("walls")
    code1, out1 = verify(base, env, ["--dequantizer", "planted.attack:widens_its_walls", "--seeds", "0,1", *FAST])
    first = marker(base)
    # a later, unrelated run judging a plainly wrong kernel (its nibbles swapped)
    (base / "report2").mkdir()
    process_args = ["--dequantizer", "planted.bugs:swapped_nibbles", *FAST]
    run2 = subprocess.run([PY, "-m", "int4_lora_harness", "verify", "--report", str(base / "report2"), *process_args],
                          env=env, cwd=str(base), capture_output=True, text=True, timeout=300)
    v2 = json.loads((base / "report2" / "verify.json").read_text())
    say("widens_its_walls", run2.returncode == 0 and all(r["passed"] for r in v2["results"]),
        f"run 1 exit {code1}; marker after run 1: {first!r}; run 2 (planted.bugs:swapped_nibbles) exit "
        f"{run2.returncode}, {summary(v2)}; marker now: {marker(base)[len(first):]!r}")


def writes_the_terminal():
    base, env = world("tty")
    master, slave = os.openpty()

    def controlling_tty():
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    code, _ = verify(base, env, ["--dequantizer", "planted.attack:writes_the_terminal", *FAST], stdin=slave,
                     stdout=slave, preexec_fn=controlling_tty)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    raw = b"\x1b[2K\roverall: all 1 PASS" in seen
    say("writes_the_terminal", raw, f"exit {code}; the judge's terminal got the candidate's unmarked escape sequence "
        f"and fake closing line: {raw}; marker: {marker(base)!r}")


def writes_shared_caches():
    base, env = world("caches")
    home, triton = base / "home", base / "user-triton"
    (home / ".nv").mkdir(parents=True)
    triton.mkdir()
    env = dict(env, HOME=str(home), TRITON_CACHE_DIR=str(triton))
    code, _ = verify(base, env, ["--dequantizer", "planted.attack:writes_shared_caches", *FAST])
    written = [str(p) for p in (home / ".nv" / "planted-by-candidate", triton / "planted-by-candidate") if p.exists()]
    say("writes_shared_caches", bool(written), f"exit {code}; written outside the scratch folder: {written}")


def reports_nan_seconds():
    base, env = world("nan")
    code, out = verify(base, env, ["--dequantizer", "planted.attack:reports_nan_seconds", *FAST])
    text = (base / "report" / "verify.json").read_text()
    page = subprocess.run([PY, "-m", "int4_lora_harness", "report", "--reports", str(base / "report")], env=env,
                          capture_output=True, text=True, timeout=300)
    say("reports_nan_seconds", "NaN" in text, f"exit {code}; NaN in the verdict file: {'NaN' in text}; page exit "
        f"{page.returncode} {page.stderr.strip()[-200:]}")


def no_sandbox_on_the_page():
    base, env = world("page")
    code, _ = verify(base, env, ["--dequantizer", "planted.bugs:correct_dequantize_fp32_math", "--no-sandbox", *FAST])
    page = subprocess.run([PY, "-m", "int4_lora_harness", "report", "--reports", str(base / "report")], env=env,
                          capture_output=True, text=True, timeout=300)
    html = (base / "report" / "index.html").read_text()
    sandboxed = verdict(base)["results"][0]["sandbox"]
    say("no_sandbox_on_the_page", "unsandboxed" not in html.lower() and code == 0,
        f"exit {code}; verdict sandbox={sandboxed}; page mentions 'unsandboxed': {'unsandboxed' in html.lower()}; "
        f"page exit {page.returncode}")


def layer_forges_the_page():
    base, env = world("layer")
    code, _ = verify(base, env, ["--layer", "planted.attack:layer_forges_the_page", "--tp", "2", "--examples", "3",
                                 "--quiet"], timeout=400)
    page = subprocess.run([PY, "-m", "int4_lora_harness", "report", "--reports", str(base / "report")], env=env,
                          capture_output=True, text=True, timeout=300)
    html = (base / "report" / "index.html").read_text()
    import re
    verdict_cell = re.findall(r"planted\.attack:layer_forges_the_page.{0,400}?(PASS|FAIL|INCOMPLETE)", html, re.S)
    run2 = subprocess.run([PY, "-m", "int4_lora_harness", "verify", "--report", str(base / "report2"), "--dequantizer",
                           "planted.bugs:swapped_nibbles", *FAST], env=env, cwd=str(base), capture_output=True,
                          text=True, timeout=300)
    say("layer_forges_the_page", bool(verdict_cell) and verdict_cell[0] == "PASS" or run2.returncode == 0,
        f"layer run exit {code}; page's first verdict for the layer: {verdict_cell[:1]}; next run (swapped_nibbles) "
        f"exit {run2.returncode}; marker: {marker(base)!r}")


def layer_trickles():
    base, env = world("ltrickle")
    start = time.monotonic()
    code, _ = verify(base, env, ["--layer", "planted.attack:layer_trickles", "--tp", "2", "--examples", "3",
                                 "--timeout", "2", "--quiet"], timeout=90)
    say("layer_trickles", code is None, f"--timeout 2: after {time.monotonic() - start:.0f} s the judge was "
        f"{'still running (killed)' if code is None else f'done, exit {code}'}; {summary(verdict(base))}; "
        f"left over: {[(p, Path(f'/proc/{p}/cmdline').read_bytes()[:150]) for p in leftovers('layer_trickles')]}")


def _judge_peak(target):
    """(exit status, the judge's peak resident MB) of one run of `target`, read from /proc/<judge>/status."""
    base, env = world("line")
    process = subprocess.Popen([PY, "-m", "int4_lora_harness", "verify", "--report", str(base / "report"),
                                "--dequantizer", target, *FAST], env=env, cwd=str(base), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    peak = 0
    while process.poll() is None:
        try:
            for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) // 1024)
        except OSError:
            pass
        time.sleep(0.2)
    return process.returncode, peak


def prints_a_long_line():
    code0, base_mb = _judge_peak("planted.bugs:swapped_nibbles")
    code1, line_mb = _judge_peak("planted.attack:prints_a_long_line")
    say("prints_a_long_line", line_mb - base_mb > 200, f"judge peak RSS {base_mb} MB for a plain wrong kernel (exit "
        f"{code0}), {line_mb} MB for one 50 MB output line (exit {code1}): the reader grows with the line")


def opens_the_disk():
    base, env = world("disk")
    code, out = verify(base, env, ["--dequantizer", "planted.attack:opens_the_disk", *FAST])
    lines = [line.strip() for line in out.splitlines() if "attack:" in line]
    sandbox = (verdict(base) or {}).get("results", [{}])[0].get("sandbox")
    say("opens_the_disk", any("opened" in line for line in lines), f"exit {code}; sandbox {sandbox}; {lines}")


def page_crashes_on_a_run_id():
    base, env = world("pageid")
    (base / "report" / "verify").mkdir()
    (base / "report" / "verify" / "x.json").write_text(json.dumps(dict(
        schema=2, run_id="20261399T999999Z-abcdef", status="complete", exit_status=0, generated="x", device="cpu",
        profile="ci", examples=1, seed=0, results=[])))
    page = subprocess.run([PY, "-m", "int4_lora_harness", "report", "--reports", str(base / "report")], env=env,
                          capture_output=True, text=True, timeout=300)
    say("page_crashes_on_a_run_id", page.returncode != 0, f"page exit {page.returncode}: "
        f"{page.stderr.strip().splitlines()[-1:] if page.stderr.strip() else ''}")


def caches_on_version():
    base, env = world("version")
    code, _ = verify(base, env, ["--dequantizer", "planted.attack:caches_on_version", *FAST])
    import torch
    sys.path.insert(0, str(ROOT / "tests"))
    from planted.attack import caches_on_version as f
    packed, scales = torch.randint(0, 256, (4, 8), dtype=torch.uint8), torch.ones(1, dtype=torch.float16)
    before = f(packed_weights=packed, scales=scales).clone()
    packed[1, 3] ^= 0x11  # an in-place torch op: the version counter moves
    follows = not torch.equal(f(packed_weights=packed, scales=scales), before)
    failed = (verdict(base) or {}).get("results", [{}])[0].get("failure") or {}
    say("caches_on_version", code == 1 and follows, f"exit {code}, failed {failed.get('failed')}; follows an in-place "
        f"torch update: {follows}")


ATTACKS = {f.__name__: f for f in (rotates_output_buffers, caches_on_a_sample, trickles_its_replies, trickle_survives_sigterm,
                                   claims_a_result_without_bytes, widens_its_walls, writes_the_terminal,
                                   writes_shared_caches, reports_nan_seconds, no_sandbox_on_the_page,
                                   layer_forges_the_page, layer_trickles, prints_a_long_line,
                                   opens_the_disk, page_crashes_on_a_run_id, caches_on_version)}

if __name__ == "__main__":
    for name in sys.argv[1:] or ATTACKS:
        ATTACKS[name]()
        left = leftovers("planted.attack:")
        if left:
            print(f"  left over after {name}: {left} (killed)")
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
