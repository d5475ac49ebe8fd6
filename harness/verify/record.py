"""The verdict file: one JSON per verify run, written atomically, always (docs/verify_schema.md).

A run writes reports/verify/<run-id>.json and a copy as reports/verify.json (the latest run), first
with status "running" before any candidate is called, then complete: a run that is killed leaves an
"incomplete" verdict behind, never the previous run's PASS. A run that cannot judge (a usage error
found after the folder is known) writes status "usage error" and says why.
"""
import datetime
import json
import os
import platform
import secrets
import socket
import sys
from pathlib import Path

from int4_lora_harness import __version__

SCHEMA_VERSION = 2


def new_run_id(now=None):
    """'20261201T120000Z-a1b2c3': the run's start in UTC, then 6 random hex digits."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def header(run_id, argv, **fields):
    """The run's fields every verdict file carries (schema, version, host, command, ...)."""
    import torch
    from int4_lora_harness.bench.devices import git_state
    from int4_lora_harness.verify.tables import reader
    commit, dirty = git_state()
    return dict(schema=SCHEMA_VERSION, harness_version=__version__, run_id=run_id, status="running",
                generated=datetime.datetime.now().isoformat(timespec="seconds"), finished=None,
                command=["int4-harness", "verify", *argv], cwd=os.getcwd(), host=socket.gethostname(),
                python=platform.python_version(),
                torch=torch.__version__, judge_tables=reader(), harness_commit=commit, harness_dirty=dirty, results=[], **fields)


def prepare_folder(report):
    """The report folder, created if needed; ValueError naming --report when it is a file or not writable."""
    folder = Path(report)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--report {report} is a file; it must name a folder (verify.json and repro scripts go there)")
    try:
        (folder / "verify").mkdir(parents=True, exist_ok=True)
        probe = folder / "verify" / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"--report {report} is not a writable folder: {error.strerror or error}") from None
    return folder


def write(folder, verdict):
    """Write the verdict to <folder>/verify/<run-id>.json and <folder>/verify.json, each atomically."""
    text = json.dumps(verdict, indent=1, default=_plain, allow_nan=True)
    paths = [Path(folder) / "verify" / f"{verdict['run_id']}.json", Path(folder) / "verify.json"]
    for path in paths:
        write_atomic(path, text)
    return paths[0]


def write_atomic(path, text):
    """Write `text` (UTF-8) to `path` (a Path) atomically: a temp file in the same folder, then os.replace; a reader
    sees the old file or the new one, never a part."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def finish(verdict, status, exit_status):
    verdict.update(status=status, exit_status=exit_status,
                   finished=datetime.datetime.now().isoformat(timespec="seconds"))
    return verdict


def _plain(value):
    """JSON for what json does not know: numpy scalars and arrays, tuples inside, anything else as text."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def argv_line():
    return " ".join(sys.argv)
