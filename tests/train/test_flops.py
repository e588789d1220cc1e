"""MFU is never above 100%: the peak is re-measured when a run beats it, and never left below
a rate the run has achieved."""
from __future__ import annotations

import pytest

from minigrad_lm.checkpoints.metrics import read_metrics
from minigrad_lm.train.flops import MAX_REPROBES, Peak
from tests.cli_support import TINY, run_train, write_corpus


class Probe:
    """A peak measurement that returns the next of ``values`` (the last one for ever)."""

    def __init__(self, *values: float):
        self.values, self.calls = list(values), 0

    def __call__(self, device: str, seconds: float) -> float:
        self.calls += 1
        return self.values[min(self.calls, len(self.values)) - 1]


def test_a_busy_first_probe_is_measured_again_when_the_run_beats_it():
    probe = Probe(1e9, 5e9)  # the first probe ran while the machine was busy
    peak = Peak("cpu", None, probe)
    assert peak.utilisation(2e9) == pytest.approx(0.4)
    assert probe.calls == 2 and not peak.raised_to_achieved
    assert peak.utilisation(1e9) == pytest.approx(0.2)


def test_utilisation_never_exceeds_one_and_re_probing_is_bounded():
    probe = Probe(1e9)
    peak = Peak("cpu", None, probe)
    for achieved in (3e9, 4e9, 5e9, 6e9, 7e9):
        assert peak.utilisation(achieved) == pytest.approx(1.0)
    assert probe.calls == 1 + MAX_REPROBES and peak.raised_to_achieved
    assert peak.utilisation(3.5e9) == pytest.approx(0.5)


def test_a_configured_peak_is_never_measured_and_still_caps_at_one():
    probe = Probe(1e12)
    peak = Peak("cpu", 2e9, probe)
    assert peak.utilisation(1e9) == pytest.approx(0.5)
    assert peak.utilisation(4e9) == pytest.approx(1.0) and probe.calls == 0
    assert peak.source == "configured"


def test_a_run_with_a_far_too_low_peak_reports_mfu_of_at_most_one(tmp_path, capsys):
    corpus = write_corpus(tmp_path)
    out = tmp_path / "run"
    argv = [a for a in TINY if a not in ("--peak-flops", "1e11")]
    assert run_train("--data", corpus, "--out", out, *argv, "--peak-flops", "1000",
                     "--max-steps", "4", "--eval-every", "4", "--log-every", "2") == 0
    mfus = [r["mfu"] for r in read_metrics(str(out)) if r["kind"] == "train"]
    assert len(mfus) == 4 and all(0 < m <= 1.0 for m in mfus)
    printed = capsys.readouterr().out
    assert "outran the configured peak" in printed
