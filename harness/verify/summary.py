"""--summary-json: one line of JSON that says how a run ended (its fields: docs/verify_schema.md#summary-json).

Made from the verdict file the run wrote; None for a run that ended before it had one (a usage error in
its flags). Nothing in it is the candidate's text but what the verdict holds as plain strings (JSON escapes
newlines and control characters, so it stays one line).
"""
import json

SUMMARY_SCHEMA = 1


def result_row(result):
    """{target, candidate, contract, seed, passed, kind[, style, tp]} of one verdict result; kind is its failure's
    kind (wrong, raised, hung, slow, crashed), null when it passed."""
    row = dict(target=result.get("target", result.get("candidate")), candidate=result.get("candidate"),
               contract=result.get("contract"), seed=result.get("seed"), passed=bool(result.get("passed")),
               kind=None if result.get("passed") else (result.get("failure") or {}).get("kind"))
    if result.get("contract") == "layer":
        row.update(style=result.get("style"), tp=result.get("tp"))
    return row


def line(verdict, path, exit_status, error=None, junit=None):
    """The summary line (no newline). verdict: the verdict dict or None; path: its file or None; error: a usage
    error's text or 'interrupted'; junit: the --junit-xml file or None."""
    results = (verdict or {}).get("results") or []
    passed = sum(bool(r.get("passed")) for r in results)
    status = (verdict or {}).get("status") or ("usage error" if exit_status == 2 else "unknown")
    summary = dict(schema=SUMMARY_SCHEMA, exit_status=exit_status, status=status,
                   run_id=(verdict or {}).get("run_id"),
                   counts=dict(results=len(results), passed=passed, failed=len(results) - passed,
                               skipped=len((verdict or {}).get("skipped") or [])),
                   results=[result_row(r) for r in results], verdict=None if path is None else str(path),
                   junit_xml=junit, error=error or (verdict or {}).get("error"))
    return json.dumps(summary, separators=(",", ":"), allow_nan=False)
