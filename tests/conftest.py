"""Shared fixtures: the device under test and the hypothesis profiles."""
import os

import pytest
from hypothesis import HealthCheck, settings

import minigrad_lm as mg

settings.register_profile("default", max_examples=20, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("gpu", max_examples=5, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# MINIGRAD_TEST_DEVICE=cuda runs the device-parametrized tests on the GPU only; by default they
# run on the CPU and on CUDA when a GPU is present (skipped with a reason otherwise).
_REQUESTED = os.environ.get("MINIGRAD_TEST_DEVICE")
DEVICES = [_REQUESTED] if _REQUESTED else ["cpu", "cuda"]


@pytest.fixture(scope="session", params=DEVICES)
def device(request):
    name = mg.backend.normalize_device(request.param)
    if name != "cpu" and not mg.cuda_available():
        pytest.skip("CUDA device not available (CuPy or a GPU is missing)")
    return name

