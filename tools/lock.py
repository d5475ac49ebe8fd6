"""Remake requirements/test-lock.txt: every distribution the test environment resolves, pinned.

    python tools/lock.py .tox/relock

Builds a fresh environment in the given folder (it must not exist) from pyproject.toml and constraints.txt
alone, as tools/shared_env.py does but without the old lock, and writes what pip resolved there: `pip freeze`
less the editable project. Then run `tox -e test` (tools/shared_env.py rebuilds .tox/shared through the new
lock), read the diff of the lock, and commit it. The local version label is dropped (torch 2.13.0+cpu ->
torch==2.13.0): `==2.13.0` admits the CPU wheel where an index offers it and the CUDA wheel from PyPI.
"""
import re
import subprocess
import sys
from pathlib import Path

from shared_env import CONSTRAINTS, LOCK, ROOT, install

HEADER = """\
# Every distribution the test environment (.tox/shared) resolved, pinned. tools/shared_env.py passes this file
# beside constraints.txt to every pip call, so a fresh clone (`tox -e test`, .ci/run) gets what CI got.
# Remake it with `python tools/lock.py .tox/relock` (a fresh environment from pyproject.toml and constraints.txt
# alone, then `pip freeze --exclude-editable`), never by hand. Resolved on (tools/shared_env.py reads this line):
# python {python}
"""


def pins(python):
    """`pip freeze` of `python`'s environment less editable installs, local version labels dropped: lines 'name==version'."""
    frozen = subprocess.run([str(python), "-I", "-m", "pip", "freeze", "--exclude-editable"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    unpinned = [line for line in frozen if "==" not in line]
    if unpinned:  # a direct URL or a local path pins nothing another machine can resolve
        raise SystemExit(f"pip freeze gave lines that are not 'name==version': {unpinned}")
    return [re.sub(r"\+[\w.]+$", "", line) for line in frozen]


def main(folder):
    folder = Path(folder)
    if folder.exists():
        raise SystemExit(f"{folder} exists: the lock is resolved in a fresh environment, give a new folder")
    python = install(folder, [CONSTRAINTS])
    version = subprocess.run([str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    lines = pins(python)
    LOCK.parent.mkdir(exist_ok=True)
    LOCK.write_text(HEADER.format(python=version) + "".join(f"{line}\n" for line in lines))
    print(f"{LOCK.relative_to(ROOT)}: {len(lines)} distributions pinned, as resolved in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
