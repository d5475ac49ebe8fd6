"""A candidate's scratch folder: its temporary files and every cache it builds (harness.verify.executor's
candidate_env), removed after the run. A judge killed by SIGKILL cannot remove its own, so each folder's name
holds its judge's PID, and each new one sweeps the folders of judges that are gone.
"""
import os
import shutil
import tempfile
from pathlib import Path

PREFIX = "int4-candidate-"  # + the judge's PID + "-" + mkdtemp's letters, in the temp folder


def make():
    """A new scratch folder for a candidate of this judge (the folders of gone judges swept first)."""
    sweep()
    return tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")


def sweep(folder=None):
    """Remove the scratch folders (candidate_env) of judges that are gone: a judge killed by SIGKILL cannot remove
    its own. Each folder's name holds its judge's PID; a PID in use (by anyone) keeps its folder."""
    folder = folder or tempfile.gettempdir()
    for path in Path(folder).glob(f"{PREFIX}*-*"):
        pid = path.name.removeprefix(PREFIX).split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid):
    """Whether a process with this PID exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
