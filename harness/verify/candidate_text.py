"""Text a candidate controls, made safe to print, and where in its code it raised.

A candidate chooses its exception's type name and message, the repr of what it returns, the traceback
its child process sends: a newline and ANSI escapes in any of them could print a line that passes for the
harness's own ("overall: all 1 PASS"). `escaped` keeps such text on its one line, every control and format
character shown as an escape. `raised_at` reads the child's traceback text (harness.verify.child's
"raised" reply: `traceback`, and `message` to cut the exception's own text away) and says which file and
line of the candidate's code raised.
"""
import re
import sysconfig
import unicodedata
from pathlib import Path

SHOWN = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\x1b"}
HIDDEN = {"Cc", "Cf", "Zl", "Zp", "Cs", "Cn"}  # control, format (bidi, zero-width), separators, surrogates, unassigned
FRAME = re.compile(r'^  File "(?P<file>[^"\n]+)", line (?P<line>\d+), in ', re.MULTILINE)  # traceback's own format
JUDGE = Path(__file__).resolve().parent  # harness/verify: the child's frames (call_candidate) are the judge's
LIBRARIES = [Path(sysconfig.get_path(k)).resolve() for k in ("stdlib", "platstdlib", "purelib", "platlib")]


def escaped(text):
    """`text` (any object, as str) on one line: each control, format or separator character (newline, CR, tab, ESC
    of an ANSI sequence, bidi overrides, U+2028) written as a visible escape (\\n, \\x1b, \\u202e); the rest kept."""
    return "".join(SHOWN.get(c) or (_code(c) if unicodedata.category(c) in HIDDEN else c) for c in str(text))


def _code(character):
    number = ord(character)
    return f"\\x{number:02x}" if number < 0x100 else f"\\u{number:04x}" if number < 0x10000 else f"\\U{number:08x}"


def frames(traceback_text, message=None):
    """[(file, line)] of the traceback's frames, outermost first; the text from the last occurrence of `message`
    (the exception's own text, which may quote 'File "..."' lines) on is not read."""
    text = traceback_text or ""
    if message:
        cut = text.rfind(message)
        text = text[:cut] if cut >= 0 else text
    return [(m["file"], int(m["line"])) for m in FRAME.finditer(text)]


def is_candidates(path):
    """True for a file of the candidate's own code: not the judge's (harness/verify), not Python's or an installed
    library's, not a pseudo-file such as <string>."""
    if path.startswith("<"):
        return False
    resolved = Path(path).resolve()
    return not any(resolved.is_relative_to(folder) for folder in (JUDGE, *LIBRARIES))


def is_judges(path):
    return Path(path).resolve().is_relative_to(JUDGE)


def raised_at(traceback_text, message=None):
    """'file:line' of the innermost frame of the candidate's own code in the child's traceback text (else the
    innermost frame outside the judge, e.g. in torch, where every frame is a library's), or None without frames.

    traceback_text: the child's "raised" reply's `traceback` (traceback.format_exception's text, its last
    entries); message: the reply's `message` (str of the exception), whose text is not searched for frames."""
    found = frames(traceback_text, message)
    for wanted in (is_candidates, lambda path: not is_judges(path)):
        inner = [f"{path}:{line}" for path, line in found if wanted(path)]
        if inner:
            return inner[-1]
    return None
