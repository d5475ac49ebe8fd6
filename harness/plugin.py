"""The pytest plugin (entry point `pytest11`): verify a TARGET inside a user's own test run.

    pytest --int4-dequantizer mypkg/ops.py:dequantize --int4-linear mypkg.ops:linear [--int4-profile thorough]

adds one test per contract, `int4-verify[linear mypkg.ops:linear]`, that runs the same verification as
`int4-verify` (the candidate in a child process; fuzzed cases, the coverage floor, the large tier and the
probes) and fails with the verdict's lines. The verdict file, the repro scripts and Hypothesis's own files
(REPORT/.hypothesis) go to --int4-report (default reports/): the run writes nothing else to the cwd, and the
session's own tests keep their Hypothesis home (harness.verify.hypothesis_home). For a user's own @given tests, see int4_lora_harness.testing; the `int4_settings` fixture is
the harness's Hypothesis settings for --int4-profile (nothing is registered on import).
"""
import json
from pathlib import Path

import pytest

from int4_lora_harness.verify.cli import positive_int  # no torch, no hypothesis: cheap to import
from int4_lora_harness.verify.domain import LAYOUT_NAMES, PROFILE_EXAMPLES


def pytest_addoption(parser):
    group = parser.getgroup("int4", "int4-lora-harness: verify an INT4 + LoRA kernel")
    group.addoption("--int4-dequantizer", metavar="TARGET", help="verify this dequantizer (pkg.mod:fn or file.py:fn)")
    group.addoption("--int4-linear", metavar="TARGET", help="verify this linear (pkg.mod:fn or file.py:fn)")
    group.addoption("--int4-layout", default="canonical", choices=LAYOUT_NAMES,
                    help="the TARGETs' weight layout (docs/layouts/)")
    group.addoption("--int4-profile", default="ci", choices=sorted(PROFILE_EXAMPLES), help="40 or 600 fuzzed cases")
    group.addoption("--int4-examples", type=positive_int, default=None,
                    help="fuzzed cases per contract (overrides --int4-profile)")
    group.addoption("--int4-device", default="cpu", choices=["cpu", "cuda"], help="where the inputs are created")
    group.addoption("--int4-no-large-tier", action="store_true", help="skip the real layer shapes and probes")
    group.addoption("--int4-report", default="reports",
                    help="folder for the verdict file, repro scripts and Hypothesis's files (.hypothesis/)")


class VerifyItem(pytest.Item):
    """One contract's verification of one TARGET, as a test item."""

    def __init__(self, *, contract, target, **kwargs):
        super().__init__(**kwargs)
        self.contract, self.target = contract, target

    def runtest(self):
        from int4_lora_harness.__main__ import command
        option = self.config.getoption
        argv = ["verify", f"--{self.contract}", self.target, "--layout", option("int4_layout"), "--profile",
                option("int4_profile"), "--device", option("int4_device"), "--report", option("int4_report"), "--quiet"]
        if option("int4_no_large_tier"):
            argv.append("--no-large-tier")
        if option("int4_examples") is not None:
            argv += ["--examples", str(option("int4_examples"))]
        try:
            status = command(argv)  # Ctrl-C propagates: it ends the session, as in any test
        except SystemExit as error:  # a flag argparse refused (its line is on the captured stderr)
            status = error.code
        if status == 2:
            raise VerifyFailed("int4-verify: usage error (the line on the captured stderr says which flag or "
                               "environment variable, and the rule)")
        if status != 0:
            raise VerifyFailed("\n".join([f"int4-verify exited with status {status}:",
                                          *failed_lines(Path(option("int4_report")) / "verify.json")]))

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, VerifyFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.target, None, f"int4-verify {self.contract} {self.target}"


def failed_lines(path):
    """The summary line and the failure of each failed result of the verdict at `path`, escaped (the candidate
    controls its exception's text: it must not print lines of its own into pytest's report)."""
    from int4_lora_harness.verify.candidate_text import escaped
    from int4_lora_harness.verify.printing import summary_line
    lines = []
    for result in json.loads(Path(path).read_text())["results"]:
        failure = result.get("failure") or {}
        if not result["passed"]:
            lines.append(escaped(summary_line(result)))
            lines += [escaped(f"    {failure.get('kind')}: {failure.get('message')}")]
            lines += [escaped(f"    raised at {failure['where']}")] if failure.get("where") else []
    return lines + [f"(the verdict: {path})"]


class VerifyFailed(Exception):
    """A verification that did not pass (its lines are in the captured output)."""


def pytest_collection_modifyitems(session, config, items):
    for contract in ("dequantizer", "linear"):
        target = config.getoption(f"int4_{contract}")
        if target:
            items.append(VerifyItem.from_parent(session, name=f"int4-verify[{contract} {target}]", contract=contract,
                                                target=target))


@pytest.fixture
def int4_settings(pytestconfig):
    """hypothesis.settings of the harness for --int4-profile, to decorate a test with or pass to settings(parent=)."""
    from int4_lora_harness.verify.strategies import harness_settings
    return harness_settings(pytestconfig.getoption("int4_profile"))
