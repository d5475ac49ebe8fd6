"""Our own suite: the harness's Hypothesis profiles (HYPOTHESIS_PROFILE, ci by default), planted bugs, the device fixture."""
import os

import pytest
import torch
from hypothesis import settings

from int4_lora_harness.verify.domain import PROFILE_EXAMPLES
from int4_lora_harness.verify.strategies import harness_settings

for _name in PROFILE_EXAMPLES:  # registered here, for this suite only (users get harness_settings)
    settings.register_profile(_name, harness_settings(_name))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine")
    return request.param
