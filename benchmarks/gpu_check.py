"""The bookkeeping of benchmarks/gpu_check.sh: the card it runs on, and one record of the run
(card, date, the device test suite's outcome, the benchmark's rows) that fails loudly when the
suite did not really run on the GPU.

    python -m benchmarks.gpu_check card          # exit 1 without CuPy or a GPU
    python -m benchmarks.gpu_check record OUT --device cuda --pytest-status N [--bench JSON]
        [--results benchmarks/results]

`record` reads OUT/pytest_<device>.xml (pytest's JUnit report) and writes OUT/gpu_<card>.json
(OUT/dry_run_cpu.json for the CPU dry run), and a copy into --results when the GPU run passed.
Its exit status is 1 when a test failed or erred, when no test passed, when a test was skipped
for want of a GPU, when a task's training steps did not run, when pytest ran out of time, or
(on a GPU) when the benchmark did not finish.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np

import minigrad_lm as mg

TASK_STEPS = "tests/train/test_task_steps.py"
NO_GPU = "CUDA device not available"  # tests/conftest.py's skip reason
TIMED_OUT = 124  # timeout(1)'s status; its SIGINT makes pytest write the report so far


def kind_of(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100', 'NVIDIA H200' -> 'h200'; else the name as a slug."""
    model = re.search(r"\b[A-Z]+\d+[A-Z]*\b", name.removeprefix("NVIDIA "))
    return model.group().lower() if model else re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def card() -> dict:
    """The first GPU CuPy sees; RuntimeError (naming what is missing) without CuPy or a GPU."""
    cp = mg.backend.cupy()
    props = cp.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode()
    return {"gpu": name, "kind": kind_of(name), "gpus": cp.cuda.runtime.getDeviceCount(),
            "memory_gib": round(props["totalGlobalMem"] / 2 ** 30, 1),
            "cuda_runtime": cp.cuda.runtime.runtimeGetVersion(),
            "cuda_driver": cp.cuda.runtime.driverGetVersion(), "cupy": cp.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def _outcome(case: ET.Element) -> tuple[str, str]:
    """(outcome, message) of one JUnit testcase."""
    for tag in ("failure", "error", "skipped"):
        found = case.find(tag)
        if found is not None:
            return {"failure": "failed", "error": "error", "skipped": "skipped"}[tag], \
                found.get("message", "")
    return "passed", ""


def summarize(junit: Path) -> dict:
    """Counts, failures, skip reasons and the task steps' outcomes of a JUnit report."""
    counts, reasons, failures, steps, seconds = Counter(), Counter(), [], {}, 0.0
    for case in ET.parse(junit).getroot().iter("testcase"):
        if not case.get("name"):  # the test an interrupt stopped: pytest records no name
            continue
        outcome, message = _outcome(case)
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        counts[outcome] += 1
        seconds += float(case.get("time", 0))
        if outcome == "skipped":
            reasons[message] += 1
        elif outcome != "passed":
            failures.append(f"{name}: {message[:300]}")
        if case.get("classname", "").endswith(Path(TASK_STEPS).stem):
            steps[case.get("name", "")] = outcome
    return {"tests": sum(counts.values()), "passed": counts["passed"],
            "failed": counts["failed"], "errors": counts["error"], "skipped": counts["skipped"],
            "test_seconds": round(seconds, 1), "skip_reasons": dict(reasons),
            "failures": failures, "task_steps": steps}


def problems(tests: dict | None, pytest_status: int, bench: dict | None, device: str
             ) -> list[str]:
    """Why this run does not prove the device paths; empty when it does."""
    if tests is None:
        return [f"pytest wrote no JUnit report (exit status {pytest_status}); see the pytest "
                "log"]
    found = []
    if pytest_status == TIMED_OUT:
        found.append(f"pytest ran past its time limit (TEST_TIMEOUT) after {tests['tests']} "
                     "tests; the report holds those")
    if tests["failed"] or tests["errors"]:
        found.append(f"{tests['failed']} failed and {tests['errors']} erred: "
                     + "; ".join(tests["failures"][:5]))
    if not tests["passed"]:
        found.append("no test passed")
    no_gpu = sum(n for reason, n in tests["skip_reasons"].items() if NO_GPU in reason)
    if no_gpu:
        found.append(f"{no_gpu} tests skipped for want of a GPU")
    steps = tests["task_steps"]
    if not steps or any(outcome != "passed" for outcome in steps.values()):
        found.append(f"the task steps ({TASK_STEPS}) did not all pass: {steps or 'none ran'}")
    if pytest_status not in (0, 1, TIMED_OUT) and not found:  # 1: failures, reported above
        found.append(f"pytest exited with status {pytest_status}")
    if device != "cpu" and bench is None:
        found.append("the benchmark wrote no results (see gpu_bench.log)")
    return found


def record(out: Path, device: str, pytest_status: int, bench_path: Path | None,
           results: Path | None = None) -> int:
    junit = out / f"pytest_{device}.xml"
    tests = summarize(junit) if junit.is_file() else None
    bench = json.loads(bench_path.read_text()) if bench_path and bench_path.is_file() else None
    found = problems(tests, pytest_status, bench, device)
    about = card() if device != "cpu" else {"gpu": None, "kind": "cpu"}
    result = {"card": about, "date": time.strftime("%Y-%m-%d"),
              "command": "bash benchmarks/gpu_check.sh" + (" --cpu" if device == "cpu" else ""),
              "device": device, "hypothesis_profile": "gpu", "tests": tests, "problems": found,
              "bench": bench}
    name = f"gpu_{about['kind']}.json" if device != "cpu" else "dry_run_cpu.json"
    paths = [out / name] + ([results / name] if results and device != "cpu" and not found else [])
    for path in paths:
        path.write_text(json.dumps(result, indent=2) + "\n")
    if tests is not None:
        print(f"{device}: {tests['passed']} passed, {tests['failed']} failed, "
              f"{tests['errors']} errors, {tests['skipped']} skipped; task steps: "
              f"{tests['task_steps']}")
    for line in found:
        print(f"FAIL: {line}", file=sys.stderr)
    print(f"{'FAILED' if found else 'PASSED'}; record in {' and '.join(map(str, paths))}")
    return 1 if found else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("card", help="print the GPU CuPy sees; exit 1 without one")
    rec = sub.add_parser("record", help="write the run's record; exit 1 if it proves nothing")
    rec.add_argument("out", type=Path)
    rec.add_argument("--device", choices=("cuda", "cpu"), required=True)
    rec.add_argument("--pytest-status", type=int, required=True)
    rec.add_argument("--bench", type=Path)
    rec.add_argument("--results", type=Path, help="where a passing GPU run's record also goes")
    args = p.parse_args(argv)
    if args.command == "card":
        try:
            print(json.dumps(card()))
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    return record(args.out, args.device, args.pytest_status, args.bench, args.results)


if __name__ == "__main__":
    sys.exit(main())
