"""--junit-xml FILE: the verdict as JUnit XML, for CI test reports (docs/verify_schema.md#junit-xml).

    <testsuites name="int4-verify" tests= failures= errors= skipped= time=>
      <testsuite name="TARGET [contract] seed S">          one per result (candidate x contract x seed; a layer's
        <properties> target, contract, seed, ...           style too)
        <testcase name="property: within tolerance">       one per property of the contract, and "(the process)"
        <testcase name="plan: coverage" time=>             one per group of cases: fuzzed, then the explicit ones
          <failure type="wrong" message="...">             the message, the minimal case, the repro script
          <skipped message="not run: ..."/>                a group the run did not reach, or skipped (--no-large-tier)
      <testsuite name="int4-verify run">                   only for what is not a result's: a usage error, an
                                                           interrupt, no candidate, a backend skipped here
Text the candidate controls (its exception's message) is escaped as everywhere (candidate_text.escaped): no control
character reaches the XML, so the file always parses.
"""
import json
import xml.etree.ElementTree as ET

from int4_lora_harness.verify.candidate_text import escaped
from int4_lora_harness.verify.shrink import shrink_words

CALL_KINDS = ("raised", "hung", "slow", "crashed")  # failures of the process, not of a property
PROCESS = "(the process)"


def document(verdict, path, exit_status, error=None):
    """The JUnit XML text of `verdict` (a dict, or None when the run ended before writing one), whose file is `path`;
    exit_status and error: how the run ended (error: a usage error's text, or 'interrupted')."""
    root = ET.Element("testsuites", name="int4-verify")
    for result in (verdict or {}).get("results") or []:
        root.append(result_suite(result, path, (verdict or {}).get("generated")))
    run = run_suite(verdict, exit_status, error)
    if len(run):
        root.append(run)
    for key in ("tests", "failures", "errors", "skipped"):
        root.set(key, str(sum(int(s.get(key)) for s in root)))
    root.set("time", f"{sum(float(s.get('time')) for s in root):.3f}")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def suite_name(result):
    where = f", style {result.get('style')}, tp {result.get('tp')}" if result.get("contract") == "layer" else ""
    return f"{result.get('candidate')} [{result.get('contract')}{where}] seed {result.get('seed')}"


def result_suite(result, path, generated):
    """The testsuite of one result: its properties, the process, its groups of cases."""
    name = suite_name(result)
    suite = ET.Element("testsuite", name=_text(name), time=f"{float(result.get('seconds') or 0):.3f}")
    if generated:
        suite.set("timestamp", generated)
    properties = ET.SubElement(suite, "properties")
    for key in ("target", "candidate", "kind", "contract", "seed", "device", "layout", "style", "tp", "repro"):
        if result.get(key) is not None:
            ET.SubElement(properties, "property", name=key, value=_text(result[key]))
    ET.SubElement(properties, "property", name="domain", value=_text(", ".join(result.get("domain") or ["full"])))
    ET.SubElement(properties, "property", name="verdict", value=_text(path))
    classname = _text(f"int4-verify.{result.get('contract')}.{result.get('candidate')}")
    for case_name, count, seconds, outcome in property_cases(result) + plan_cases(result):
        suite.append(testcase(classname, case_name, count, seconds, outcome, result))
    _count(suite)
    return suite


def property_cases(result):
    """[(name, cases, seconds, outcome)] for each property and the process; outcome: None (passed), ('failure',
    message) or ('skipped', message)."""
    failure = result.get("failure") or {}
    cases = []
    for line in result.get("properties") or []:
        status = line.get("status") or ("passed" if line.get("passed") else "failed")
        if status == "failed":
            outcome = ("failure", line.get("message") or failure.get("message") or "failed")
        elif status in ("not judged", "not run"):
            outcome = ("skipped", status)
        else:
            outcome = None
        cases.append((f"property: {line['name']}", line.get("cases", 0), 0.0, outcome))
    called = failure.get("kind") in CALL_KINDS
    cases.append((f"property: {PROCESS}", None, 0.0,
                  ("failure", f"the candidate {failure['kind']}: {failure.get('message')}") if called else None))
    return cases


def plan_cases(result):
    """[(name, cases, seconds, outcome)] for each group of cases in the order they run: a layer's named cases, the
    fuzzed search, each planned group of explicit examples, then the groups skipped (--no-large-tier)."""
    failure = result.get("failure") or {}
    ran = [dict(e, group="named") for e in result.get("named") or []] + list(result.get("explicit") or [])
    found_by_search = not result.get("passed") and failure.get("case") is not None and \
        all(e.get("passed") for e in ran) and result.get("refusal") is None  # a layer's refusal runs after it
    search = ("plan: fuzzed", result.get("fuzzed_cases", 0), _search_seconds(result),
              ("failure", f"{failure.get('kind')}: {failure.get('message')}") if found_by_search else None)
    cases = [] if ran and ran[0]["group"] == "named" else [search]
    planned = dict(result.get("planned") or {})
    for group in list(planned) + list(dict.fromkeys(e["group"] for e in ran if e["group"] not in planned)):
        these = [e for e in ran if e["group"] == group]
        bad = [e for e in these if not e.get("passed")]
        count = planned.get(group, len(these))
        if bad:
            outcome = ("failure", f"{group} example {bad[0].get('shape')}: {failure.get('kind')}: "
                                  f"{failure.get('message')}")
        elif len(these) < count:
            outcome = ("skipped", f"not run: {len(these)} of {count} cases ran (a run stops at its first failure)")
        else:
            outcome = None
        cases.append((f"plan: {group}", len(these), sum(e.get("seconds") or 0.0 for e in these), outcome))
        if group == "named":
            cases.append(search)
    if result.get("large_tier_skipped"):
        for group in ("large tier", "probes") if result.get("contract") == "linear" else ("large tier",):
            cases.append((f"plan: {group}", 0, 0.0, ("skipped", f"skipped: {result['large_tier_skipped']}")))
    return cases


def _search_seconds(result):
    """The search's seconds (shrinking included): the result's, less its explicit examples'."""
    explicit = sum(e.get("seconds") or 0.0 for e in result.get("explicit") or [])
    return max(0.0, float(result.get("seconds") or 0.0) - explicit)


def testcase(classname, name, count, seconds, outcome, result):
    """One testcase, its name stable from run to run (CI tracks it by name); `count` cases in its system-out."""
    case = ET.Element("testcase", classname=classname, name=_text(name), time=f"{seconds:.3f}")
    if count is not None:
        ET.SubElement(case, "system-out").text = f"{count} cases"
    if outcome is None:
        return case
    kind, message = outcome
    if kind == "skipped":
        ET.SubElement(case, "skipped", message=_text(message))
        return case
    failure = result.get("failure") or {}
    element = ET.SubElement(case, "failure", message=_text(message), type=_text(failure.get("kind") or "wrong"))
    element.text = "\n".join(_text(line) for line in failure_lines(result))
    return case


def failure_lines(result):
    """The failure in lines, as the console prints it: message, where, hint, the case, its shrinking, the repro."""
    failure = result.get("failure") or {}
    lines = [f"{failure.get('kind')}: {failure.get('message')}"]
    if failure.get("where"):
        lines.append(f"raised at {failure['where']}")
    if failure.get("hint"):
        lines.append(f"hint: {failure['hint']}")
    if failure.get("case") is not None:
        lines.append(f"minimal case: {json.dumps(failure['case'])}")
    shrink = failure.get("shrink")
    if shrink:
        lines.append(f"shrinking: {shrink_words(shrink)}")
    if failure.get("worst"):
        lines.append(f"worst element: {json.dumps(failure['worst'])}")
    lines.append(f"repro: python {result['repro']}" if result.get("repro") else "repro: none (no case to replay)")
    return lines


def run_suite(verdict, exit_status, error):
    """The run's own testsuite: a usage error, an interrupt, no candidate verified, backends skipped here."""
    suite = ET.Element("testsuite", name="int4-verify run", time="0.000")
    classname = "int4-verify.run"
    status = (verdict or {}).get("status")
    if exit_status == 2 or status == "usage error":
        case = ET.SubElement(suite, "testcase", classname=classname, name="usage", time="0.000")
        ET.SubElement(case, "error", message=_text(error or (verdict or {}).get("error") or "usage error"),
                      type="usage error")
    elif error == "interrupted" or status in ("interrupted", "running"):
        case = ET.SubElement(suite, "testcase", classname=classname, name="run", time="0.000")
        ET.SubElement(case, "error", message=f"the run was {status or 'interrupted'}: its results so far are above",
                      type="interrupted")
    elif not (verdict or {}).get("results"):
        case = ET.SubElement(suite, "testcase", classname=classname, name="candidates", time="0.000")
        ET.SubElement(case, "failure", message="no candidate was verified", type="no candidate")
    for skipped in (verdict or {}).get("skipped") or []:
        case = ET.SubElement(suite, "testcase", classname=classname, name=_text(f"backend {skipped['candidate']}"),
                             time="0.000")
        ET.SubElement(case, "skipped", message=_text(skipped["reason"]))
    _count(suite)
    return suite


def _count(suite):
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    for key, tag in (("failures", "failure"), ("errors", "error"), ("skipped", "skipped")):
        suite.set(key, str(sum(c.find(tag) is not None for c in cases)))


def _text(value):
    """Any value as XML-safe text on one line (control characters escaped: candidate_text.escaped)."""
    return escaped("" if value is None else value)
