"""What the candidate's process prints, shown so that it cannot pass for the harness's own lines.

A thread reads the process's stdout and stderr (one pipe) and prints each line as `  candidate| ...`,
with control characters and escape sequences made visible (`visible`), so a candidate cannot print a
fake verdict, move the cursor or clear the screen. The first PRINTED_LINES are printed, the rest counted;
the last TAIL_LINES are kept for the verdict.
"""
import sys
import threading
from collections import deque

PRINTED_LINES = 200
TAIL_LINES = 20
LINE_CAP = 500


def visible(text, cap=LINE_CAP):
    """`text` on one line: control characters (newlines, ESC, carriage returns, ...) as \\n, \\x1b, ...; at most
    `cap` characters, then an ellipsis."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return out if len(out) <= cap else out[:cap] + "..."


class CandidateOutput:
    """Reads the candidate's output pipe on a daemon thread until it closes."""

    def __init__(self, pipe, stream=None):
        self.pipe, self.stream, self.lines, self.printed = pipe, stream, deque(maxlen=TAIL_LINES), 0
        self.thread = threading.Thread(target=self._read, name="int4-harness-candidate-output", daemon=True)
        self.thread.start()

    def _read(self):
        for raw in iter(lambda: self.pipe.readline(LINE_CAP * 4), b""):  # a line without end is read in pieces
            line = visible(raw.decode("utf-8", "replace").rstrip("\n"))
            self.lines.append(line)
            self.printed += 1
            if self.printed <= PRINTED_LINES:
                print(f"  candidate| {line}", file=self.stream or sys.stderr, flush=True)
        if self.printed > PRINTED_LINES:
            print(f"  candidate| ... {self.printed - PRINTED_LINES} more lines not shown", file=self.stream or sys.stderr,
                  flush=True)

    def tail(self):
        return list(self.lines)

    def close(self):
        """Wait a little for the last lines; a pipe still held open by a process the judge could not find
        (outside a PID namespace) is left to the daemon thread, never closed under its read."""
        self.thread.join(2.0)
        if not self.thread.is_alive():
            self.pipe.close()
