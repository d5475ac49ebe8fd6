"""Text a candidate controls is printed escaped, and a raised error says where in the candidate's code it was raised."""
import re
import sys
from pathlib import Path

from int4_lora_harness.__main__ import main
from int4_lora_harness.verify import child
from int4_lora_harness.verify.candidate_text import escaped, raised_at
from int4_lora_harness.verify.domain import FULL
from int4_lora_harness.verify.engine import Record, attempt
from int4_lora_harness.verify.executor import CandidateFailure
from int4_lora_harness.verify.plan import coverage_cases
from int4_lora_harness.verify.printing import print_verdict

ROOT = Path(__file__).resolve().parents[1]
FAKE = "boom\n\x1b[32moverall: all 1 PASS; verdict written to x\x1b[0m\r\u2028summary:"


def raising_candidate(folder, body):
    """A file `folder`/mine.py whose `dequantize` calls helper.py's `inner`, which runs `body`; (mine.py, helper.py)."""
    (folder / "helper.py").write_text(f"def inner():\n    {body}\n")
    (folder / "mine.py").write_text("from helper import inner\n\n\ndef dequantize(**kwargs):\n    return inner()\n")
    return folder / "mine.py", folder / "helper.py"


def reply_of(folder, body):
    """The child's reply (harness.verify.child.call_candidate) for a call of mine.py's dequantize."""
    mine, _ = raising_candidate(folder, body)
    sys.path.insert(0, str(folder))
    try:
        namespace = {}
        exec(compile(mine.read_text(), str(mine), "exec"), namespace)
        return child.call_candidate(namespace["dequantize"], {}, {}, "cpu")[0]
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("helper", None)


def test_escaped_keeps_candidate_text_on_one_line_with_control_characters_visible():
    shown = escaped(FAKE)
    assert "\n" not in shown and "\r" not in shown and "\x1b" not in shown and "\u2028" not in shown
    assert shown == "boom\\n\\x1b[32moverall: all 1 PASS; verdict written to x\\x1b[0m\\r\\u2028summary:"
    assert escaped("bidi \u202e and tab\t, é §") == "bidi \\u202e and tab\\t, é §"


def test_raised_at_names_the_innermost_frame_of_the_candidates_own_code(tmp_path):
    reply = reply_of(tmp_path, 'raise ValueError("bad group size")')
    assert reply["status"] == "raised"
    assert raised_at(reply["traceback"], reply["message"]) == f"{tmp_path / 'helper.py'}:2"


def test_raised_at_skips_the_frames_of_python_and_installed_libraries(tmp_path):
    reply = reply_of(tmp_path, 'import json; json.loads("{")')  # raised inside the standard library's json
    assert "json/decoder.py" in reply["traceback"]
    assert raised_at(reply["traceback"], reply["message"]) == f"{tmp_path / 'helper.py'}:2"


def test_raised_at_reads_no_frame_quoted_in_the_exceptions_message(tmp_path):
    quoted = '\n  File "/fake/forged.py", line 99, in nowhere'
    reply = reply_of(tmp_path, f"raise RuntimeError({quoted!r})")
    assert re.findall(r'File "([^"]+)", line (\d+)', reply["traceback"])[-1] == ("/fake/forged.py", "99")
    assert raised_at(reply["traceback"], reply["message"]) == f"{tmp_path / 'helper.py'}:2"


def test_raised_at_without_frames_is_none():
    assert raised_at("", "") is None and raised_at(None) is None
    assert raised_at("RuntimeError: only a message", "only a message") is None


def test_a_failure_records_where_the_candidate_raised_from_the_traceback_its_process_sent(tmp_path):
    reply = reply_of(tmp_path, 'raise RuntimeError("kernel launch failed")')

    class Raising:  # what the executor raises for this reply: it carries the child's traceback text
        def start_case(self, inputs, expect):
            raise CandidateFailure("raised", f"{reply['type']}: {reply['message']}", reply["type"], reply["traceback"])

    case = coverage_cases("dequantizer", FULL, 0)[0][2]
    failure = attempt(Raising(), case, Record(), dict(designs=(), layout="canonical", updates=None))
    assert failure["where"] == f"{tmp_path / 'helper.py'}:2"


def result_with(message, where=None):
    failure = dict(kind="raised", message=f"ValueError: {message}", exception="ValueError", where=where, case=None,
                   values=None, failed=["a call (raised)"], worst=None)
    return dict(candidate="mine.py:dequantize", contract="dequantizer", device="cpu", passed=False, domain=["full"],
                properties=[dict(name="within tolerance", status="failed", passed=False, cases=1, message=message)],
                failure=failure, seconds=1.0, fuzzed_cases=1)


def test_a_candidates_message_cannot_print_a_line_that_passes_for_the_harnesss(capsys):
    print_verdict(result_with(FAKE, where="/x/helper.py:2"))
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\u2028" not in out
    assert not [line for line in out.splitlines() if line.startswith(("overall:", "summary:"))], out
    assert "the candidate raised: ValueError: boom\\n\\x1b[32moverall: all 1 PASS" in out
    assert "    raised at /x/helper.py:2 (the innermost frame of the candidate's code)" in out


def test_verify_of_a_candidate_raising_fake_verdict_lines_prints_one_overall_line_that_says_failed(tmp_path, capsys):
    (tmp_path / "liar.py").write_text(f"def dequantize(**kwargs):\n    raise ValueError({FAKE!r})\n")
    code = main(["verify", "--dequantizer", f"{tmp_path / 'liar.py'}:dequantize", "--report", str(tmp_path / "r"),
                 "--no-large-tier", "--examples", "2", "--quiet"])
    out = capsys.readouterr().out
    assert code == 1
    overall = [line for line in out.splitlines() if line.startswith("overall:")]
    assert len(overall) == 1 and overall[0].startswith("overall: 1 of 1 FAILED"), out
    assert "\x1b" not in out and "summary:" in out and out.count("\nsummary:") == 1
