"""What the suite runs on: the environment the lock pins, and no top-level folder of this checkout (kernels/)
hiding an installed distribution of the same name, however Python was started from the repository root."""
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

from int4_lora_harness.checkout import root_last

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "test-lock.txt"
# Where `kernels` would be imported from, printed without running it: find_spec imports nothing.
WHERE = "import importlib.util; print(importlib.util.find_spec('kernels').origin)"


def installed_kernels():
    """The __init__.py of the registry's `kernels` distribution (transformers imports it), or a skip."""
    try:
        distribution = importlib.metadata.distribution("kernels")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the registry's `kernels` distribution is not installed (transformers pulls it; "
                    "requirements/test-lock.txt pins it)")
    return str(Path(distribution.locate_file("kernels/__init__.py")).resolve())


def python(*args, cwd=ROOT):
    """stdout of this interpreter run with `args` in `cwd`, its lines; the run must exit 0."""
    run = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout.splitlines()


def pins(path):
    """{normalized name: version} of a requirements file's 'name==version' lines (comments skipped)."""
    found = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.]+", line), f"{path.name}: not an exact pin: {line!r}"
            name, version = line.split("==")
            found[normalized(name)] = version
    return found


def normalized(name):
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503: Jinja2 == jinja2, huggingface_hub == huggingface-hub


def test_root_last_moves_this_checkouts_root_behind_every_other_entry(monkeypatch):
    monkeypatch.chdir(ROOT)  # '' is the cwd, so it names the root too
    path = [str(ROOT), "/site-packages", "", "/other"]
    root_last(path)
    assert path == ["/site-packages", "/other", str(ROOT), ""]


def test_root_last_leaves_a_path_without_this_checkout_as_it_was(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = ["", str(tmp_path), "/site-packages", str(ROOT / "kernels")]
    root_last(path)
    assert path == ["", str(tmp_path), "/site-packages", str(ROOT / "kernels")]


def test_importing_the_harness_from_the_root_puts_the_installed_kernels_before_the_folder():
    expected = installed_kernels()
    # python -c in the root puts '' (the root) first on sys.path, as python -m does: the folder shadows...
    before, after = python("-c", f"{WHERE}; import int4_lora_harness; {WHERE}")
    assert before == str(ROOT / "kernels" / "__init__.py"), "the root was not first on sys.path: nothing to prove"
    assert after == expected  # ...until the harness is imported


def test_python_m_pytest_from_the_root_imports_the_installed_kernels(tmp_path):
    expected = installed_kernels()
    test = tmp_path / "test_which_kernels.py"
    test.write_text(f"import kernels\n\ndef test_which():\n    assert kernels.__file__ == {expected!r}, kernels.__file__\n")
    # the harness's pytest plugin imports int4_lora_harness before any test module is collected
    lines = python("-m", "pytest", "-p", "no:cacheprovider", "-q", str(test))
    assert lines[-1].startswith("1 passed"), lines


def test_a_target_looked_up_from_the_root_leaves_the_installed_kernels_first():
    expected = installed_kernels()
    # -I: the root is not on sys.path until import_module puts the cwd there, as for int4-verify --linear mod:fn;
    # examples/ is a folder only the checkout has: found from the cwd, behind the installed distributions
    code = f"from int4_lora_harness.verify.targets import import_module; import_module('examples'); {WHERE}"
    assert python("-I", "-c", code) == [expected]


def test_the_lock_pins_torch_and_triton_as_constraints_txt_does():
    locked, constrained = pins(LOCK), pins(ROOT / "constraints.txt")
    assert {name: locked.get(name) for name in constrained} == constrained


def test_every_locked_distribution_installed_here_is_at_its_locked_version():
    if f"# python {sys.version_info.major}.{sys.version_info.minor}" not in LOCK.read_text().splitlines():
        pytest.skip("the lock was resolved on another Python (tools/shared_env.py installs with constraints.txt alone)")
    installed = {normalized(d.metadata["Name"]): d.version.split("+")[0] for d in importlib.metadata.distributions()}
    differ = {name: (installed[name], version) for name, version in pins(LOCK).items()
              if name in installed and installed[name] != version}
    assert not differ, f"(installed, locked): {differ}; rebuild: python tools/shared_env.py .tox/shared"


def test_ci_runs_the_readmes_test_command_and_the_readme_has_its_two_setup_commands():
    setup = re.search(r"## Set-up.*?```\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL).group(1).splitlines()
    assert setup == ["pip install tox && tox -e verify", "pip install tox && tox -e test"]
    assert setup[1] in (ROOT / ".ci" / "run").read_text().splitlines()
