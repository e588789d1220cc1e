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

# By default the device-parametrized tests run on the CPU, and on CUDA when a GPU is present
# (skipped with a reason otherwise). MINIGRAD_TEST_DEVICE=cuda (or cpu) runs only them, on that
# device only, and a GPU asked for that way must be there: an error, not a run of skips.
_REQUESTED = os.environ.get("MINIGRAD_TEST_DEVICE")
DEVICES = [_REQUESTED] if _REQUESTED else ["cpu", "cuda"]


def _missing_cuda() -> str | None:
    """Why CUDA cannot be used here, or None when it can."""
    try:
        mg.backend.cupy()
    except RuntimeError as exc:
        return str(exc)
    return None


def pytest_configure(config):
    if _REQUESTED and mg.backend.normalize_device(_REQUESTED) != "cpu":
        reason = _missing_cuda()
        if reason is not None:
            raise pytest.UsageError(f"MINIGRAD_TEST_DEVICE={_REQUESTED}: {reason}")


def pytest_collection_modifyitems(config, items):
    """With MINIGRAD_TEST_DEVICE set, the tests that take no device are deselected."""
    if not _REQUESTED:
        return
    off = [item for item in items if "device" not in getattr(item, "fixturenames", ())]
    if off:
        config.hook.pytest_deselected(items=off)
        items[:] = [item for item in items if "device" in getattr(item, "fixturenames", ())]


@pytest.fixture(scope="session", params=DEVICES)
def device(request):
    name = mg.backend.normalize_device(request.param)
    if name != "cpu" and not mg.cuda_available():
        pytest.skip("CUDA device not available (CuPy or a GPU is missing)")
    return name


@pytest.fixture
def gpu(device):
    """The device, for checks that compare a GPU with the CPU: skipped where it is the CPU."""
    if device == "cpu":
        pytest.skip("compares a GPU with the CPU")
    return device


@pytest.fixture(scope="session")
def tiny_lm_run(tmp_path_factory):
    """A finished 12-step run of a tiny GPT on a synthetic corpus, evaluated at steps 6 and 12:
    shared by the tests that read one (those that damage it copy it first)."""
    from tests.cli_support import TINY, run_train, write_corpus

    folder = tmp_path_factory.mktemp("tiny_lm")
    out = folder / "run"
    assert run_train("--data", write_corpus(folder), "--out", out, "--max-steps", "12",
                     "--eval-every", "6", *TINY) == 0
    return out
