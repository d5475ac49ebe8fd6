"""A busy machine changes how long things take, never the verdict: Hypothesis's wall-clock health checks are off in
the verifier's search (a draw of a whole layer can take 30 s at load 12), as the limits are (harness.verify.limits)."""
import json
import types
from unittest import mock

import pytest
from hypothesis import settings
from hypothesis.internal.conjecture import data as conjecture_data

from int4_lora_harness.__main__ import main


class SlowClock:
    """time.perf_counter as Hypothesis's draw timer sees it on a machine 100x busier: 4 s pass per reading."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 4.0
        return self.now


@pytest.fixture
def hypothesis_defaults():
    """Hypothesis's own default settings, as `int4-verify` runs under them (this suite's conftest loads a profile
    of its own, health checks off, which would hide the verifier's settings)."""
    before = settings.get_current_profile_name()
    settings.load_profile("default")
    yield
    settings.load_profile(before)


def test_a_search_whose_draws_take_minutes_of_wall_time_still_passes_a_correct_candidate(tmp_path, capsys,
                                                                                       hypothesis_defaults):
    slow = types.SimpleNamespace(perf_counter=SlowClock().perf_counter, monotonic=conjecture_data.time.monotonic)
    with mock.patch.object(conjecture_data, "time", slow):
        code = main(["verify", "--report", str(tmp_path), "--dequantizer",
                     "int4_lora_harness.kernels.torch_path:dequantize", "--no-large-tier", "--examples", "12",
                     "--quiet", "--in-process"])
    out = capsys.readouterr().out
    assert code == 0, out
    [result] = json.loads((tmp_path / "verify.json").read_text())["results"]
    assert result["passed"] and result["fuzzed_cases"] == 12
