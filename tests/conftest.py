"""Hypothesis profile from HYPOTHESIS_PROFILE (ci by default, thorough in tox -e thorough) and the device fixture."""
import os

import pytest
import torch
from hypothesis import settings

import harness.strategies  # noqa: F401  (registers the ci and thorough profiles)

settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine")
    return request.param
