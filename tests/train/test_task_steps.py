"""Two training steps of every task (each of train.tasks.TASKS has a case here) through `python -m
minigrad_lm.train`, as a user runs it, on each device against the same run on the CPU: the
language model, the masked language model, ELECTRA, word2vec, the classifier (bidirectional,
[CLS] pooling, word dropout), translation (beam search in its evaluation), question answering
(span and answer heads), a LoRA fine-tune with recompute, and a resumed run. Compared: every
step's loss and gradient norm, the evaluation, and the weights and Adam moments saved after the
steps; on the CPU the two runs must agree bit for bit. Dropout is off: a GPU draws its masks
from a generator of its own."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from minigrad_lm.io.files import load_safetensors
from minigrad_lm.train.tasks import TASKS
from tests.cli_support import TINY, run_train, write_corpus
from tests.test_classify_cli import CLASSIFY, sentiment_rows, write_tsv

# The run's speed and memory, which differ between devices and between runs.
UNCOMPARED = {"step_seconds", "tokens_per_s", "mfu", "time", "peak_memory_bytes",
              "comm_seconds"}
STEPS = ["--max-steps", "2", "--eval-every", "2", "--log-every", "1", "--dropout", "0"]


def on_the_corpus(folder: Path) -> list:
    return ["--data", folder / "corpus.txt", *TINY]


def lm(folder: Path) -> list:
    return [*on_the_corpus(folder), "--sample-tokens", "8"]


def mlm(folder: Path) -> list:
    return [*on_the_corpus(folder), "--task", "mlm", "--tokenizer", "word"]


def electra(folder: Path) -> list:
    return [*on_the_corpus(folder), "--task", "electra", "--tokenizer", "word"]


def word2vec(folder: Path) -> list:
    return [*on_the_corpus(folder), "--task", "word2vec", "--batch-size", "64"]


def classify(folder: Path) -> list:
    return [*CLASSIFY, "--data", folder / "train.tsv", "--val-data", folder / "dev.tsv",
            "--attention", "bidirectional", "--pooling", "cls", "--tokenizer", "word",
            "--word-dropout", "0.3", "--eval-batches", "2"]


def translate(folder: Path) -> list:
    pytest.importorskip("sacrebleu")
    from tests.test_translate_cli import MODEL, sentences, write_pair
    (train_src, train_tgt), (val_src, val_tgt) = (
        write_pair(folder, name, text, text) for name, text in
        (("train", sentences(60, 1)), ("val", sentences(6, 2))))
    return ["--task", "translate", "--data", train_src, train_tgt, "--val-data", val_src,
            val_tgt, *MODEL, "--beam-size", "2", "--label-smoothing", "0.1"]


def qa(folder: Path) -> list:
    from tests.train.test_qa_cli import QA, copy_task
    train, val = folder / "qa_train.json", folder / "qa_val.json"
    if not train.exists():
        copy_task(train, 4, 0), copy_task(val, 1, 1)
    return [*QA, "--data", train, "--val-data", val]


def lora(folder: Path) -> list:
    base = folder / "base"
    if not base.exists():
        assert run_train(*on_the_corpus(folder), *STEPS, "--out", base) == 0
    return [*on_the_corpus(folder), "--init-from", base, "--lora-rank", "2", "--lora-alpha",
            "4", "--lora-targets", "qkv,fc", "--recompute", "blocks", "--lr", "1e-2"]


CASES = {f.__name__: f for f in (lm, mlm, electra, word2vec, classify, translate, qa, lora)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The tasks' data, one folder for all of them."""
    folder = tmp_path_factory.mktemp("tasks")
    write_corpus(folder)
    write_tsv(folder / "train.tsv", sentiment_rows(120, seed=0))
    write_tsv(folder / "dev.tsv", sentiment_rows(40, seed=1))
    return folder


def train(case: str, folder: Path, device: str, out: Path) -> Path:
    assert run_train(*CASES[case](folder), *STEPS, "--device", device, "--out", out) == 0
    return out


@pytest.fixture(scope="module")
def cpu_run(folder):
    """case -> its run on the CPU, made once."""
    runs: dict[str, Path] = {}

    def run(case: str) -> Path:
        if case not in runs:
            runs[case] = train(case, folder, "cpu", folder / f"{case}-cpu")
        return runs[case]
    return run


def records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in UNCOMPARED}
            for line in lines]


def weights(run: Path, name: str) -> dict[str, np.ndarray]:
    return load_safetensors(run / "latest" / f"{name}.safetensors")[0]


def assert_same_records(got: list[dict], want: list[dict], exact: bool) -> None:
    assert [(r["kind"], r["step"]) for r in got] == [(r["kind"], r["step"]) for r in want]
    for g, w in zip(got, want):
        assert g.keys() == w.keys(), (g, w)
        for key, value in w.items():
            if exact or not isinstance(value, float):
                assert g[key] == value, (w["kind"], w["step"], key)
            else:
                assert g[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (w["kind"], key)


def assert_close_moments(got: dict, want: dict) -> None:
    """Adam's moments are running means of the gradients (and their squares): each buffer
    to a small fraction of its largest element."""
    assert got.keys() == want.keys()
    for name, w in want.items():
        scale = float(np.abs(w).max()) if w.size else 0.0
        np.testing.assert_allclose(got[name], w, rtol=1e-3, atol=1e-3 * scale, err_msg=name)


def assert_close_weights(got: dict, want: dict, lrs: list[float]) -> None:
    """Adam's first steps move a weight by about lr * sign(gradient), so a gradient within
    float rounding of zero may move it the other way on the other device: a few weights may
    differ by up to 2 lr a step, all the others agree to float rounding."""
    assert got.keys() == want.keys()
    g = np.concatenate([got[n].ravel() for n in want]).astype(np.float64)
    w = np.concatenate([want[n].ravel() for n in want]).astype(np.float64)
    off = ~np.isclose(g, w, rtol=1e-4, atol=1e-5)
    assert off.sum() <= 1 + w.size // 1000, f"{off.sum()} of {w.size} weights differ"
    assert np.abs(g - w).max() <= 2 * sum(lrs) + 1e-5


def test_every_task_has_its_steps_here():
    assert set(TASKS) - set(CASES) == set()


@pytest.mark.parametrize("case", CASES)
def test_two_training_steps_match_the_cpu(device, case, folder, cpu_run, tmp_path):
    want = cpu_run(case)
    got = train(case, folder, device, tmp_path / "run")
    exact = device == "cpu"
    assert_same_records(records(got), records(want), exact)
    if exact:
        for name in ("model", "optimizer"):
            got_w, want_w = weights(got, name), weights(want, name)
            assert got_w.keys() == want_w.keys()
            for key in want_w:
                np.testing.assert_array_equal(got_w[key], want_w[key], err_msg=key)
        return
    assert_close_moments(weights(got, "optimizer"), weights(want, "optimizer"))
    lrs = [r["lr"] for r in records(want) if r["kind"] == "train"]
    assert_close_weights(weights(got, "model"), weights(want, "model"), lrs)


def test_a_run_resumed_on_the_device_ends_as_the_cpu_run(device, folder, cpu_run, tmp_path):
    """The checkpoint and the optimizer's state read back onto the device."""
    want = cpu_run("lm")
    out = tmp_path / "run"
    assert run_train(*lm(folder), *STEPS, "--device", device, "--out", out,
                     "--max-steps", "1") == 0
    assert run_train(*lm(folder), *STEPS, "--device", device, "--out", out, "--resume") == 0
    got = [r for r in records(out) if r["kind"] == "train"] + records(out)[-1:]
    assert_same_records(got, records(want), exact=device == "cpu")
