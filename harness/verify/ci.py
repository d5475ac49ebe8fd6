"""The CI outputs of a run, made from its verdict file once it ends: --junit-xml FILE and --summary-json.

Both read the verdict the run wrote (harness.verify.record), so they say what the verdict says; a run that
ended in a usage error or an interrupt gets them too. With --summary-json, stdout carries that one JSON line
and nothing else: every other line of the run goes to stderr, the --jobs workers' and rank processes' too.
"""
import json
import os
import sys
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

from int4_lora_harness.verify.targets import UsageError


def check_junit_path(path):
    """--junit-xml FILE: its folder made (like pytest's --junitxml) and writable; UsageError naming the flag."""
    file = Path(path)
    if file.is_dir():
        raise UsageError(f"--junit-xml {path} is a folder; it must name a file")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--junit-xml {path}: cannot make its folder: {error.strerror or error}") from None
    if not os.access(file.parent, os.W_OK):
        raise UsageError(f"--junit-xml {path}: its folder {file.parent} is not writable")


@contextmanager
def humans_on_stderr(enabled):
    """Inside the block, what the run prints (this process through sys.stdout, its child processes through fd 1)
    goes to stderr when `enabled`; stdout is left for the summary line."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 1)
        os.close(saved)


def verdict_path(options):
    """REPORT/verify/<run-id>.json of a run whose options are known, else None."""
    if not options.get("run_id"):
        return None
    return Path(options["report"]) / "verify" / f"{options['run_id']}.json"


def write_outputs(args, options, status, error=None):
    """Write --junit-xml and print --summary-json for a run that ended with `status` (error: its usage error, or
    'interrupted'); the exit status, 2 where the JUnit file could not be written (said on stderr)."""
    if not (args.junit_xml or args.summary_json):
        return status
    from int4_lora_harness.verify import junit, record, summary
    path = verdict_path(options)
    verdict = json.loads(path.read_text(encoding="utf-8")) if path is not None and path.is_file() else None
    if args.junit_xml:
        try:
            record.write_atomic(Path(args.junit_xml), junit.document(verdict, path, status, error))
        except OSError as failure:
            print(f"usage error: --junit-xml {args.junit_xml}: not written: {failure.strerror or failure}",
                  file=sys.stderr)
            status = 2
    if args.summary_json:
        print(summary.line(verdict, path, status, error, args.junit_xml), flush=True)
    return status
