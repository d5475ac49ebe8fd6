"""A verdict file (docs/verify_schema.md, schema 2; schema 1 read for what it holds) -> plain dicts the page shows.

Every field goes through report.fields.read: the documented type or a default and a note. The dicts
returned have every key the template uses, so a file missing half of them still renders.
"""
from int4_lora_harness.report.fields import dicts, numbers, read

# (field, kind, default, required): the run's fields. generated ... seed are in every schema.
RUN_FIELDS = [
    ("schema", "int", 1, False), ("harness_version", "str", None, False), ("run_id", "str", None, False),
    ("status", "str", None, False), ("exit_status", "int", None, False), ("error", "str", None, False),
    ("generated", "str", "?", True), ("finished", "str", None, False), ("command", "strs", [], False),
    ("host", "str", "?", False), ("python", "str", "?", False), ("torch", "str", "?", False),
    ("judge_tables", "str", None, False),
    ("harness_commit", "str", None, False), ("harness_dirty", "bool", None, False),
    ("device", "str", "?", True), ("profile", "str", "?", True), ("examples", "int", None, True),
    ("seed", "int", None, True), ("designs", "strs", [], False), ("layout", "str", None, False),
    ("domain", "strs", [], False), ("cwd", "str", None, False),
]
# What a usage-error run never reaches (it stops before it judges): not required of it.
NOT_REACHED_BY_USAGE_ERRORS = ("profile", "examples", "seed")
SCHEMA = 2  # the schema this version's verify writes (harness.verify.record.SCHEMA_VERSION)
# The same for one result.
RESULT_FIELDS = [
    ("candidate", "str", "?", True), ("target", "str", None, False), ("source", "str", None, False),
    ("kind", "str", None, False), ("contract", "str", "?", True), ("device", "str", None, False),
    ("layout", "str", None, False), ("seed", "int", None, False), ("domain", "strs", [], False),
    ("accepted_designs", "strs", [], False), ("fuzzed_cases", "int", None, False),
    ("large_tier_skipped", "str", None, False), ("max_ratio", "float", None, False),
    ("seconds", "float", None, False), ("repro", "str", None, False), ("style", "str", None, False),
    ("tp", "int", None, False), ("refusal", "str", None, False),
]
PROPERTY_FIELDS = [("name", "str", "?"), ("status", "str", None), ("cases", "int", None),
                   ("not_judged", "int", None), ("message", "str", "")]
EXPLICIT_FIELDS = [("group", "str", "?"), ("shape", "any", "?"), ("max_ratio", "float", None), ("design", "str", None),
                   ("seconds", "float", None), ("candidate_s", "float", None)]
WORST_FIELDS = [("index", "any", None), ("expected", "float", None), ("got", "float", None), ("ulps", "float", None),
                ("allowed", "float", None), ("ratio", "float", None), ("design", "str", None),
                ("inputs", "dict", {}), ("case", "any", None)]
FAILURE_FIELDS = [("kind", "str", None), ("message", "str", None), ("exception", "str", None), ("case", "any", None),
                  ("values", "any", None), ("failed", "strs", []), ("design_words", "str", None),
                  ("raised", "str", None)]
TIMING_FIELDS = [("candidate_s", "float", None), ("judge_s", "float", None), ("child_start_s", "float", None),
                 ("transfer_s", "float", None), ("transfer_mb", "float", None), ("calls", "int", None)]
# Other lists of explicit examples: schema 1's large_tier and checkpoint; a layer's named merged layers.
OTHER_EXPLICIT = (("large_tier", "large tier"), ("checkpoint", "checkpoint"), ("named", "named layer"))


def fields(obj, table, notes, where):
    """{name: value} of `table`'s fields, each read with its kind and default (and required flag if given)."""
    return {name: read(obj, name, kind, notes, where, default=default, required=rest[0] if rest else False)
            for name, kind, default, *rest in table}


def worst(obj, notes, where):
    """A worst element {index, expected, got, ulps, allowed, ratio, design, inputs, case}, or None."""
    if not isinstance(obj, dict):
        return None
    return fields(obj, WORST_FIELDS, notes, where)


def failure(obj, notes, where):
    """{kind, message, exception, case, values, failed, design_words, worst}, or None. Schema 1's `raised` is
    read as a `raised` failure's message."""
    if not isinstance(obj, dict):
        return None
    out = fields(obj, FAILURE_FIELDS, notes, where)
    if out["raised"] and not out["message"]:
        out.update(kind=out["kind"] or "raised", message=out["raised"])
    out["worst"] = worst(obj.get("worst"), notes, f"{where}worst.")
    return out


def samples(result, notes, where):
    """Per (dtype, granularity): {dtype, granularity, elements_seen, ulps, ratio} with the numbers as floats."""
    out = []
    for i, s in enumerate(dicts(result, "samples", notes, where)):
        at = f"{where}samples[{i}]."
        out.append(dict(dtype=read(s, "dtype", "str", notes, at, "?"), granularity=read(s, "granularity", "str", notes,
                                                                                         at, "?"),
                        elements_seen=read(s, "elements_seen", "int", notes, at),
                        ulps=numbers(s.get("ulps"), notes, f"{at}ulps"),
                        ratio=numbers(s.get("ratio"), notes, f"{at}ratio")))
    return out


def designs(result, notes, where):
    """[(design name, cases, words)] of the designs that explained the cases."""
    out = []
    for name, entry in read(result, "designs", "dict", notes, where, default={}).items():
        entry = entry if isinstance(entry, dict) else {"cases": entry}
        out.append((str(name), read(entry, "cases", "int", notes, f"{where}designs.{name}."),
                    read(entry, "words", "str", notes, f"{where}designs.{name}.")))
    return out


def explicit(result, notes, where):
    """The explicit examples {group, shape, passed, max_ratio, ...}, and those of OTHER_EXPLICIT's lists."""
    groups = [("explicit", None)] + list(OTHER_EXPLICIT)
    out = []
    for key, group in groups:
        for i, e in enumerate(dicts(result, key, notes, where)):
            at = f"{where}{key}[{i}]."
            row = fields(e, EXPLICIT_FIELDS, notes, at)
            row.update(passed=read(e, "passed", "bool", notes, at, default=False), group=group or row["group"])
            out.append(row)
    return out


def result(obj, notes, where):
    """One result as the page shows it (RESULT_FIELDS plus passed, properties, explicit, designs, worst,
    samples, failure, timing, batch_invariance, ranks: [(rank, passed, message)] of a layer)."""
    out = fields(obj, RESULT_FIELDS, notes, where)
    out["passed"] = read(obj, "passed", "bool", notes, where, default=False, required=True)
    walls = read(obj, "sandbox", "dict", notes, where) or {}
    out["unsandboxed"] = None if walls.get("sandboxed") is not False else \
        f"processes {str(walls.get('processes'))[:300]}; files {str(walls.get('files'))[:300]}"
    out["properties"] = []
    for i, p in enumerate(dicts(obj, "properties", notes, where)):
        row = fields(p, PROPERTY_FIELDS, notes, f"{where}properties[{i}].")
        row["passed"] = read(p, "passed", "bool", notes, f"{where}properties[{i}].", default=False)
        row["status"] = row["status"] or ("passed" if row["passed"] else "failed")
        out["properties"].append(row)
    out.update(explicit=explicit(obj, notes, where), designs=designs(obj, notes, where),
               worst=worst(obj.get("worst"), notes, f"{where}worst."), samples=samples(obj, notes, where),
               failure=failure(obj.get("failure"), notes, f"{where}failure."),
               timing=fields(read(obj, "timing", "dict", notes, where, {}), TIMING_FIELDS, notes, f"{where}timing."),
               batch_invariance=read(obj, "batch_invariance", "dict", notes, where),
               ranks=[(read(r, "rank", "int", notes, f"{where}ranks[{i}]."),
                       read(r, "passed", "bool", notes, f"{where}ranks[{i}].", default=False),
                       read(r, "message", "str", notes, f"{where}ranks[{i}].", default=""))
                      for i, r in enumerate(dicts(obj, "ranks", notes, where))])
    return out


def run(obj, notes, path):
    """A whole verdict file -> {the run's fields, skipped: [(candidate, reason)], results: [result]}.

    A field missing from a file of this schema is named as missing, not as 'an older schema?'; a usage-error
    run is not asked for what it never reached (NOT_REACHED_BY_USAGE_ERRORS)."""
    schema = obj.get("schema")
    notes.older = not (isinstance(schema, int) and schema >= SCHEMA)
    stopped = obj.get("status") == "usage error"
    table = [(name, kind, default, required and not (stopped and name in NOT_REACHED_BY_USAGE_ERRORS))
             for name, kind, default, required in RUN_FIELDS]
    out = fields(obj, table, notes, "")
    out["path"] = str(path)
    out["skipped"] = [(read(s, "candidate", "str", notes, f"skipped[{i}].", "?"),
                       read(s, "reason", "str", notes, f"skipped[{i}].", "?"))
                      for i, s in enumerate(dicts(obj, "skipped", notes))]
    out["results"] = [result(r, notes, f"results[{i}].")
                      for i, r in enumerate(dicts(obj, "results", notes, required=out["status"] != "usage error"))]
    return out


def complete(run_):
    """Whether a run's results may show PASS: it ended ('complete'), or it is a schema-1 file (no status field)."""
    return run_["status"] == "complete" or (run_["status"] is None and run_["schema"] == 1)


def verdict(result_, run_):
    """'PASS', 'FAIL' or 'INCOMPLETE' for one result: only the boolean true of a run that ended passes."""
    if not result_["passed"]:
        return "FAIL"
    return "PASS" if complete(run_) else "INCOMPLETE"
