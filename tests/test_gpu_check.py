"""benchmarks/gpu_check.py, the verdict of `bash benchmarks/gpu_check.sh`: it passes only a run
that really tested the GPU, and fails loudly on one that skipped, crashed or left a task out."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import minigrad_lm as mg
from benchmarks import gpu_check
from tests.cli_support import REPO

STEPS = "tests.train.test_task_steps"


def junit(path: Path, cases: list[tuple[str, str, str]]) -> Path:
    """A pytest-style JUnit report of (classname, name, outcome[:message]) cases."""
    body = []
    for classname, name, outcome in cases:
        kind, _, message = outcome.partition(":")
        inner = "" if kind == "passed" else f'<{kind} message="{message}"/>'
        body.append(f'<testcase classname="{classname}" name="{name}" time="0.5">{inner}'
                    "</testcase>")
    path.write_text('<?xml version="1.0"?><testsuites><testsuite name="pytest">'
                    + "".join(body) + "</testsuite></testsuites>")
    return path


GOOD = [("tests.engine.test_ops", "test_exp[cuda]", "passed"),
        (STEPS, "test_two_training_steps_match_the_cpu[cuda-lm]", "passed"),
        (STEPS, "test_two_training_steps_match_the_cpu[cuda-translate]", "passed")]
BENCH = {"rows": []}


def verdict(tmp_path, cases, status=0, bench=BENCH, device="cuda"):
    tests = gpu_check.summarize(junit(tmp_path / "r.xml", cases))
    return tests, gpu_check.problems(tests, status, bench, device)


def test_a_whole_run_passes_and_its_summary_counts_everything(tmp_path):
    tests, found = verdict(tmp_path, GOOD + [("tests.x", "test_torch", "skipped:no torch")])
    assert found == []
    assert (tests["tests"], tests["passed"], tests["skipped"]) == (4, 3, 1)
    assert tests["skip_reasons"] == {"no torch": 1}
    assert tests["task_steps"] == {"test_two_training_steps_match_the_cpu[cuda-lm]": "passed",
                                   "test_two_training_steps_match_the_cpu[cuda-translate]":
                                       "passed"}


@pytest.mark.parametrize("cases, status, bench, message", [
    (GOOD + [("tests.x", "test_y[cuda]", "failure:assert 1 == 2")], 1, BENCH,
     "1 failed and 0 erred: tests.x::test_y[cuda]: assert 1 == 2"),
    (GOOD + [("tests.x", "test_y[cuda]", "error:fixture broke")], 1, BENCH, "1 erred"),
    (GOOD + [("tests.x", "test_y[cuda]", "skipped:CUDA device not available (CuPy ...)")], 0,
     BENCH, "1 tests skipped for want of a GPU"),
    ([c for c in GOOD if c[0] != STEPS], 0, BENCH, "did not all pass: none ran"),
    (GOOD[:2] + [(STEPS, "test_two_training_steps_match_the_cpu[cuda-translate]",
                  "skipped:no sacrebleu")], 0, BENCH, "did not all pass"),
    ([("tests.x", "test_y", "skipped:no")], 0, BENCH, "no test passed"),
    (GOOD, 0, None, "the benchmark wrote no results"),
    (GOOD, 2, BENCH, "pytest exited with status 2"),
    (GOOD, 124, BENCH, "ran past its time limit (TEST_TIMEOUT) after 3 tests"),
])
def test_what_fails_the_run(tmp_path, cases, status, bench, message):
    _, found = verdict(tmp_path, cases, status, bench)
    assert any(message in line for line in found), found


def test_no_report_fails_and_the_record_says_why(tmp_path):
    assert gpu_check.record(tmp_path, "cpu", 4, None) == 1
    saved = json.loads((tmp_path / "dry_run_cpu.json").read_text())
    assert saved["tests"] is None and "no JUnit report (exit status 4)" in saved["problems"][0]


def test_the_test_an_interrupt_stopped_is_not_counted(tmp_path):
    report = junit(tmp_path / "r.xml", GOOD)
    report.write_text(report.read_text().replace("</testsuite>", '<testcase time="0.0" />'
                                                 "</testsuite>"))
    assert gpu_check.summarize(report)["tests"] == len(GOOD)


def test_only_a_passing_gpu_run_goes_into_the_results(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "card", lambda: {"gpu": "NVIDIA H200", "kind": "h200"})
    results = tmp_path / "results"
    results.mkdir()
    junit(tmp_path / "pytest_cuda.xml", GOOD)
    bench = tmp_path / "gpu_bench.json"
    assert gpu_check.record(tmp_path, "cuda", 0, bench, results) == 1  # no benchmark results
    assert (tmp_path / "gpu_h200.json").exists() and not (results / "gpu_h200.json").exists()
    bench.write_text(json.dumps(BENCH))
    assert gpu_check.record(tmp_path, "cuda", 0, bench, results) == 0
    saved = json.loads((results / "gpu_h200.json").read_text())
    assert saved["card"]["gpu"] == "NVIDIA H200" and saved["bench"] == BENCH and saved["date"]


def test_the_cpu_dry_run_needs_no_benchmark(tmp_path):
    junit(tmp_path / "pytest_cpu.xml", GOOD)
    assert gpu_check.record(tmp_path, "cpu", 0, None) == 0
    saved = json.loads((tmp_path / "dry_run_cpu.json").read_text())
    assert saved["problems"] == [] and saved["tests"]["passed"] == 3 and saved["date"]


@pytest.mark.parametrize("name, kind", [
    ("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA H200", "h200"), ("NVIDIA A100-SXM4-80GB", "a100"),
    ("NVIDIA GeForce RTX 4090", "nvidia_geforce_rtx_4090")])
def test_the_record_is_named_after_the_card(name, kind):
    assert gpu_check.kind_of(name) == kind


@pytest.mark.skipif(mg.cuda_available(), reason="checks the refusal on a machine without a GPU")
def test_the_script_fails_loudly_without_a_gpu(tmp_path):
    env = {"OUT": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHON": sys.executable}
    result = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "error: device 'cuda' is not available" in result.stderr
    assert not (tmp_path / "pytest_cuda.xml").exists()  # no test ran
