"""Progress bars for the fuzz, the explicit examples and benchmark sweeps: tqdm on stderr.

tqdm because it is small, has no dependencies of its own and draws well on a terminal; when stderr is a
log (CI, a pipe), a plain line every 10 s says how far the run is instead of a stream of redraws.
`quiet()` stands in when progress is off (--quiet, parallel jobs, the pytest plugin).
"""
import sys
import time


class _Quiet:
    def update(self, n=1):
        pass

    def write(self, text):
        print(text, flush=True)  # lines still reach a log when the bar is off

    def close(self):
        pass

    def set_description(self, text):
        pass

    def reset(self, total=None):
        pass


def quiet():
    return _Quiet()


class _Lines(_Quiet):
    """Progress for a log (stderr not a terminal): one plain line every LOG_INTERVAL_S, no carriage returns."""

    def __init__(self, total, desc):
        self.total, self.desc, self.done = total, desc, 0
        self.start = self.last = time.monotonic()

    def update(self, n=1):
        self.done += n
        now = time.monotonic()
        if now - self.last >= LOG_INTERVAL_S:
            self.last = now
            print(f"{self.desc}: {self.done}/{self.total} cases, {now - self.start:.0f} s", file=sys.stderr, flush=True)


LOG_INTERVAL_S = 10.0


def bar(total, desc, enabled=True):
    """A tqdm bar of `total` steps on stderr when it is a terminal, a line every 10 s when it is a log."""
    if not enabled:
        return _Quiet()
    if not sys.stderr.isatty():
        return _Lines(total, desc)
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True, mininterval=0.5, unit="case")


def say(text):
    """One line on stdout, flushed at once (piped output arrives as it happens)."""
    print(text, flush=True)
