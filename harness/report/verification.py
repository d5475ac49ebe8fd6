"""The verification section: per verify run what it judged and how (the summary's rows: report.summary).

Input: the runs of report.inputs.load_verify_runs (newest first), each with the reports folder it was read
from (`reports_dir`). Every figure is one the verdict file recorded; the words of a design are the ones
verify wrote next to it.
"""
import os
import shlex
import urllib.parse
from collections import Counter
from pathlib import Path

from int4_lora_harness.report import files, verdicts

INCOMPLETE_WORDS = {"running": "the run had not finished when this file was written (still running, or killed)",
                    "interrupted": "the run was interrupted (Ctrl-C) before it judged every candidate"}


def run_state(run):
    """(badge, words) of a run's status: COMPLETE, INCOMPLETE (running, interrupted, unknown) or USAGE ERROR."""
    status = run["status"]
    if verdicts.complete(run):
        return "COMPLETE", "complete" if status else "no status recorded (schema 1 file): read as complete"
    if status == "usage error":
        return "USAGE ERROR", f"usage error: {run['error'] or 'no reason recorded'}"
    return "INCOMPLETE", INCOMPLETE_WORDS.get(status, f"status {status!r}: not a finished run")


def repro_link(repro, reports_dir, page_dir):
    """(href relative to the page | None, text) for a result's `repro` path (as verify wrote it).

    A link only to a regular file inside the reports folder, and below the page's folder: a relative path
    with no '..', every character but letters, digits and '_.-~/' percent-encoded, so that no text in a
    verdict file becomes a scheme ('javascript:'), an absolute path or a way out of the folder. Any other
    repro is shown as text, with the reason it is not a link.
    """
    if not repro:
        return None, None
    for candidate in (Path(repro), Path(reports_dir) / Path(repro).name):
        try:
            if not candidate.is_file():
                continue
            real = files.inside(candidate, reports_dir)
            if real is None or not os.path.isfile(real):
                return None, f"{repro} (outside {reports_dir}: not linked)"
            relative = Path(os.path.relpath(real, os.path.realpath(page_dir)))
        except (OSError, ValueError):  # a path this system cannot resolve: shown as text
            break
        if ".." in relative.parts:
            return None, f"{repro} (not below the page's folder: not linked)"
        return urllib.parse.quote(relative.as_posix()), str(repro)
    return None, f"{repro} (file not found)"


def failure_view(failure):
    """The failure as the page shows it: kind, message, failed properties, the minimal case and its values in
    words (each array on one line), the worst element and its inputs, the design's words."""
    if failure is None:
        return None
    values = failure["values"]
    value_lines = ([(str(k), v) for k, v in values.items() if v is not None] if isinstance(values, dict)
                   else [("note", values)] if values is not None else [])
    return dict(failure, value_lines=value_lines)


def result_block(result, run, reports_dir, page_dir):
    """One result, ready for the template: its verdict and every recorded table."""
    href, text = repro_link(result["repro"], reports_dir, page_dir)
    return dict(result, verdict=verdicts.verdict(result, run), repro_href=href, repro_text=text,
                failure=failure_view(result["failure"]),
                worst_case=result["worst"]["case"] if result["worst"] else None)


def run_sections(runs, page_dir, max_runs, max_results):
    """(per run, newest first, at most `max_runs`: its header, skipped backends and at most `max_results`
    result blocks, with how many were left out; how many runs were left out). A repro is linked only inside the
    reports folder its run was read from (run['reports_dir'])."""
    sections = []
    for run in runs[:max_runs]:
        badge, words = run_state(run)
        blocks = [result_block(r, run, run["reports_dir"], page_dir) for r in run["results"][:max_results]]
        sections.append(dict(run, badge=badge, state=words, command_line=shlex.join(run["command"]),
                             blocks=blocks, results_left_out=max(0, len(run["results"]) - max_results),
                             counts=Counter(verdicts.verdict(r, run) for r in run["results"])))
    return sections, max(0, len(runs) - max_runs)
