"""Where Hypothesis keeps its files during a verify run: REPORT/.hypothesis, never the current directory.

The search runs with database=None, but Hypothesis still caches what it reads from local modules
(`.hypothesis/constants/<hash>`, each naming a module's absolute path) under its home folder, by default
`./.hypothesis`. A run writes nothing to the cwd except under --report, so the home moves there for the run,
and back afterwards: a pytest session that runs the plugin keeps its own home for its own tests.
"""
from contextlib import contextmanager
from pathlib import Path

FOLDER = ".hypothesis"


def home_for(report):
    """REPORT/.hypothesis for the report folder `report` (a str or Path)."""
    return Path(report) / FOLDER


def use(report):
    """Make REPORT/.hypothesis this process's Hypothesis home (a --jobs worker: the process is the run's)."""
    from hypothesis import configuration
    configuration.set_hypothesis_home_dir(home_for(report))


@contextmanager
def hypothesis_home(report):
    """REPORT/.hypothesis as Hypothesis's home inside the block; the previous home (resolved) after it."""
    from hypothesis import configuration
    previous = _current_home(configuration)
    configuration.set_hypothesis_home_dir(home_for(report))
    try:
        yield
    finally:
        configuration.set_hypothesis_home_dir(previous)


def _current_home(configuration):
    """Hypothesis's home folder now ($HYPOTHESIS_STORAGE_DIRECTORY, a set one, or ./.hypothesis), created by nothing."""
    try:
        found = configuration.storage_directory(intent_to_write=False)
    except TypeError:  # a Hypothesis before 6.13x: storage_directory() is the home's Path itself
        found = configuration.storage_directory()
    return getattr(found, "home_directory", found)
