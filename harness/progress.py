"""Progress bars for the fuzz, the explicit examples and benchmark sweeps: tqdm on stderr.

tqdm because it is small, has no dependencies of its own, and degrades sensibly when stderr is not
a terminal (a CI log gets an occasional line, not a stream of redraws). `quiet()` stands in when
progress is off (--quiet, parallel jobs, the pytest plugin).
"""
import sys


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


def bar(total, desc, enabled=True):
    """A tqdm bar of `total` steps on stderr (updated at most every 0.5 s on a terminal, 10 s in a log)."""
    if not enabled:
        return _Quiet()
    from tqdm import tqdm
    tty = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True, mininterval=0.5 if tty else 10,
                unit="case")


def say(text):
    """One line on stdout, flushed at once (piped output arrives as it happens)."""
    print(text, flush=True)
