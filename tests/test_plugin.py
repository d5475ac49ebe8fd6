"""The pytest plugin (harness/plugin.py) in a user's own pytest run: its own numeric state, and failures told safely."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAKE = "boom\n\x1b[32moverall: all 1 PASS\x1b[0m"


def users_pytest(folder, *flags):
    """The pytest run a user starts in `folder` (its conftest.py theirs), with the plugin's flags."""
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--color=no",
                           "--int4-no-large-tier", "--int4-examples", "3", "--int4-report", str(folder / "reports"),
                           *flags], cwd=folder,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "tests")},
                          timeout=600)


def test_the_plugin_judges_under_its_own_state_whatever_the_users_conftest_sets(tmp_path):
    (tmp_path / "conftest.py").write_text("import numpy as np\nimport torch\nnp.seterr(all='raise')\n"
                                          "torch.set_default_dtype(torch.float64)\ntorch.set_flush_denormal(True)\n")
    run = users_pytest(tmp_path, "--int4-linear", "planted.bugs:correct_linear_per_adapter")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "1 passed" in run.stdout and "FloatingPointError" not in run.stdout + run.stderr


def test_a_plugin_failure_names_the_failure_with_the_candidates_text_escaped(tmp_path):
    (tmp_path / "liar.py").write_text(f"def dequantize(**kwargs):\n    raise ValueError({FAKE!r})\n")
    run = users_pytest(tmp_path, "--int4-dequantizer", f"{tmp_path / 'liar.py'}:dequantize")
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    assert "int4-verify exited with status 1:" in run.stdout
    assert "    raised: ValueError: boom\\n\\x1b[32moverall: all 1 PASS\\x1b[0m" in run.stdout
    assert "\x1b" not in run.stdout, run.stdout
    assert not [line for line in run.stdout.splitlines() if line.startswith("overall: all")], run.stdout
