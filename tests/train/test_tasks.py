"""The task registry: tasks own their rules (no task name is compared outside train/tasks/),
every registered task is complete, and checkpoints written by format 1 (tests/fixtures/v1_runs:
two steps of each task, written before the registry) still load, score and train on."""
from __future__ import annotations

import ast
import dataclasses
import json
import shutil
import typing
from pathlib import Path

import numpy as np
import pytest

from minigrad_lm.checkpoints.kinds import KINDS, CheckpointKind
from minigrad_lm.checkpoints.upgrade import upgrade
from minigrad_lm.io.files import CheckpointError
from minigrad_lm.models import GPT, GPTConfig, Seq2SeqConfig, Seq2SeqTransformer
from minigrad_lm.checkpoints.folder import read_checkpoint
from minigrad_lm.train.config import PER_TASK, TrainConfig
from minigrad_lm.train.tasks import TASKS, task_name
from tests.cli_support import assert_one_line_error, run_module, run_train

PACKAGE = Path(__file__).resolve().parents[2] / "minigrad_lm"
TASKS_FOLDER = PACKAGE / "train" / "tasks"
V1 = Path(__file__).resolve().parents[1] / "fixtures" / "v1_runs"


def _names_a_task(node: ast.AST) -> bool:
    """A task's name as a literal ("lm", ("lm", "classify")) or as ``SomeTask.name`` /
    ``SomeKind.name``."""
    if isinstance(node, ast.Constant):
        return node.value in TASKS
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_a_task(e) for e in node.elts)
    return (isinstance(node, ast.Attribute) and node.attr == "name"
            and isinstance(node.value, ast.Name) and node.value.id.endswith(("Task", "Kind")))


def _task_comparisons(source: str) -> list[int]:
    return [node.lineno for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Compare)
            and any(_names_a_task(side) for side in (node.left, *node.comparators))]


def test_no_task_name_is_compared_outside_the_tasks():
    found = [f"{path.relative_to(PACKAGE)}:{line}" for path in sorted(PACKAGE.rglob("*.py"))
             if TASKS_FOLDER not in path.parents
             for line in _task_comparisons(path.read_text(encoding="utf-8"))]
    assert not found


def test_the_comparison_finder_finds_them():
    assert _task_comparisons('if cfg.task == "lm": pass') == [1]
    assert _task_comparisons('x = task in ("classify", "translate")') == [1]
    assert _task_comparisons("ok = ckpt.task != LMKind.name") == [1]
    assert _task_comparisons('ok = device == "cpu" and TASKS[cfg.task].kind') == []


def test_every_task_is_complete_and_has_a_checkpoint_kind():
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert set(TASKS) == set(KINDS)
    for name, task in TASKS.items():
        assert task.name == name and task.kind is KINDS[name]
        assert task.summary and task.best_metric.startswith("val_")
        assert set(PER_TASK) <= set(task.defaults) <= set(fields), name
        assert all(fields[o].default is None for o in task.options), name
        assert set(task.init_from) <= set(TASKS)
        assert not task.__abstractmethods__, name


def test_every_checkpoint_kind_scores_and_reports_a_file_for_evaluate():
    base = CheckpointKind.__dict__
    for name, kind in KINDS.items():
        assert kind.score_file.__func__ is not base["score_file"].__func__, name
        assert kind.report is not base["report"].__func__, name


@pytest.mark.parametrize(("values", "task"), [
    ({}, "lm"), ({"task": "lm"}, "lm"), ({"task": "lm", "attention": "causal"}, "lm"),
    ({"task": "lm", "attention": "bidirectional"}, "mlm"), ({"task": "mlm"}, "mlm"),
    ({"task": "classify", "attention": "bidirectional"}, "classify"),
])
def test_the_old_spelling_of_the_masked_lm_names_it(values, task):
    assert task_name(values) == task


@pytest.mark.parametrize("values", [{}, {"task": "mlm"}, {"task": "translate", "data": ["a", "b"],
                                     "val_data": ["c", "d"]},
                                    {"task": "classify", "data": "x.tsv", "val_every_nth": 5}])
def test_a_resolved_config_is_fully_typed(values):
    """Every field whose type has no None holds a value of that type (lr is a float)."""
    cfg = TrainConfig(**values)
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if type(None) not in typing.get_args(hints[f.name]):
            assert value is not None and isinstance(value, hints[f.name]), f.name
    assert {"lr", "batch_size", "context", "tokenizer", "dropout"} <= set(PER_TASK)


def test_each_task_fills_in_its_own_defaults():
    assert TrainConfig().max_steps == 2000 and TrainConfig().tokenizer == "char"
    mlm = TrainConfig(task="lm", attention="bidirectional")
    assert (mlm.task, mlm.tokenizer, mlm.max_steps) == ("mlm", "word", 2000)
    clf = TrainConfig(task="classify", data="x.tsv", val_every_nth=5)
    assert (clf.epochs, clf.max_steps, clf.lr) == (3, None, 1e-3)
    assert TrainConfig(task="classify", data="x.tsv", val_every_nth=5, max_steps=7).epochs is None


@pytest.mark.parametrize(("values", "message"), [
    ({"epochs": 2}, "--epochs applies to --task word2vec or classify or translate"),
    ({"task": "mlm", "attention": "causal"}, "attention is bidirectional"),
    ({"task": "mlm", "tokenizer": "char"}, "needs a [MASK] token"),
    ({"task": "translate", "data": "a.txt"}, "--data SOURCE_FILE TARGET_FILE"),
    ({"task": "translate", "data": ["a", "b"], "val_data": ["c", "d"], "positional": "alibi"},
     "--positional alibi: translate takes learned or sinusoidal"),
])
def test_each_task_checks_its_own_options(values, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        TrainConfig(**values)


# --------------------------------------------------------------------------------------------
# Model sizes from the config alone
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [{}, {"bias": False}, {"tie_weights": False},
                                {"positional": "sinusoidal"}, {"positional": "alibi"}])
def test_the_gpt_parameter_count_is_the_models(kw):
    config = GPTConfig(vocab_size=37, context_length=8, n_layer=2, n_head=2, d_model=8, **kw)
    assert config.parameter_count() == GPT(config).num_parameters()


@pytest.mark.parametrize("kw", [{}, {"bias": False}, {"tie_weights": False},
                                {"share_embeddings": False}, {"positional": "learned"},
                                {"d_ff": 5, "n_layer": 3}])
def test_the_encoder_decoder_parameter_count_is_the_models(kw):
    config = Seq2SeqConfig(**{"vocab_size": 23, "context_length": 9, "n_layer": 2,
                              "n_head": 2, "d_model": 8, "d_ff": 12, **kw})
    assert config.parameter_count() == Seq2SeqTransformer(config).num_parameters()


def test_a_classifier_head_counts_in_its_checkpoints_memory():
    config = GPTConfig(vocab_size=37, context_length=8, n_layer=1, n_head=2, d_model=8)
    extras = {"num_classes": 5, "pooling": "mean"}
    model = KINDS["classify"].build(config, extras)
    head = KINDS["classify"].head(config, extras)
    assert config.parameter_count() + head.parameters == sum(
        p.size for _, p in model.named_parameters())


# --------------------------------------------------------------------------------------------
# Format-1 checkpoints of every task
# --------------------------------------------------------------------------------------------

# Recorded by `python -m minigrad_lm.evaluate --json` with the code that wrote the fixtures.
V1_SCORES = {
    "lm": ("text.txt", {"tokens": 1960, "loss": 3.5607664770009566, "accuracy": 0.075}),
    "mlm": ("text.txt", {"tokens": 72, "loss": 3.825733608669705, "accuracy": 0.0}),
    "classify": ("rows.tsv", {"rows": 16, "loss": 0.6933630704879761, "accuracy": 0.5}),
}


@pytest.mark.parametrize("task", ["lm", "mlm", "classify", "translate"])
def test_a_format_1_checkpoint_reads_as_its_task(task):
    ckpt = read_checkpoint(str(V1 / task))
    assert ckpt.task == task
    assert json.loads((V1 / task / "latest" / "config.json").read_text())["version"] == 1
    model = ckpt.build_model()
    assert model.num_parameters() > 0
    if task == "classify":
        assert ckpt.extras == {"num_classes": 2, "pooling": "cls"}


@pytest.mark.parametrize("task", sorted(V1_SCORES))
def test_evaluate_scores_a_format_1_checkpoint_as_before(task):
    data, expected = V1_SCORES[task]
    out = run_module("minigrad_lm.evaluate", "--ckpt", V1 / task, "--data", V1 / data, "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["task"] == task
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-6), key


def test_evaluate_scores_a_translation_model_by_loss_perplexity_and_bleu():
    out = run_module("minigrad_lm.evaluate", "--ckpt", V1 / "translate", "--data",
                     V1 / "src.txt", V1 / "tgt.txt", "--json")
    assert out.returncode == 0, out.stderr
    m = json.loads(out.stdout)
    assert m["task"] == "translate" and m["pairs"] == 16 and m["beam_size"] == 4
    assert m["perplexity"] == pytest.approx(np.exp(m["loss"]))
    assert 0 <= m["bleu"] <= 100 and m["tokens"] > 16
    line = run_module("minigrad_lm.evaluate", "--ckpt", V1 / "translate", "--data",
                      V1 / "src.txt", V1 / "tgt.txt")
    assert line.returncode == 0 and "| BLEU " in line.stdout and "16 pairs" in line.stdout
    one = run_module("minigrad_lm.evaluate", "--ckpt", V1 / "translate", "--data", V1 / "src.txt")
    assert one.returncode == 2
    assert_one_line_error(one.stderr, "SOURCE_FILE TARGET_FILE")


RESUME_DATA = {"lm": ["text.txt"], "mlm": ["text.txt"], "classify": ["rows.tsv"],
               "translate": ["src.txt", "tgt.txt"]}


@pytest.mark.parametrize("task", sorted(RESUME_DATA))
def test_a_format_1_run_resumes_as_its_task(tmp_path, task):
    run = tmp_path / task
    shutil.copytree(V1 / task, run)
    data = [V1 / f for f in RESUME_DATA[task]]
    val = ["--val-data", *data] if task in ("classify", "translate") else []
    assert run_train("--out", run, "--resume", "--max-steps", "3", "--data", *data, *val) == 0
    ckpt = read_checkpoint(str(run / "latest"))
    assert ckpt.task == task and ckpt.state["step"] == 3
    assert json.loads((run / "latest" / "config.json").read_text())["version"] == 2
    assert ckpt.state["train_config"]["task"] == task


@pytest.mark.parametrize("pretrained", ["lm", "mlm"])
def test_a_format_1_language_model_starts_a_classifier(tmp_path, pretrained):
    out = tmp_path / "clf"
    attention = ["--attention", "causal"] if pretrained == "lm" else []
    assert run_train("--task", "classify", "--data", V1 / "rows.tsv", "--val-data",
                     V1 / "rows.tsv", "--init-from", V1 / pretrained, "--out", out,
                     "--max-steps", "1", "--eval-batches", "1", "--log-every", "1000",
                     "--peak-flops", "1e11", *attention,
                     *(["--tokenizer", "char"] if pretrained == "lm" else [])) == 0
    assert read_checkpoint(str(out)).task == "classify"


def test_the_format_1_upgrade_is_one_step():
    gpt = dict(json.loads((V1 / "mlm" / "latest" / "config.json").read_text())["model"])
    v1 = {"format": "minigrad_lm.checkpoint", "version": 1, "num_classes": None, "model": gpt}
    config, state = upgrade({**v1, "task": "lm"}, {"best_val_loss": 2.5}, "c.json")
    assert config["task"] == "mlm" and "num_classes" not in config and config["version"] == 2
    assert state["best_score"] == 2.5
    config, state = upgrade({**v1, "task": "classify", "num_classes": 3},
                            {"best_score": 0.7, "train_config": {"task": "classify"}}, "c.json")
    assert (config["pooling"], config["num_classes"], state["best_score"]) == ("mean", 3, 0.7)
    assert state["train_config"] == {"task": "classify", "word_dropout": 0.0}
    assert upgrade({**v1, "version": 2}, {}, "c.json") == ({**v1, "version": 2}, {})
    with pytest.raises(CheckpointError, match="c.json: checkpoint format version 3"):
        upgrade({**v1, "version": 3, "task": "lm"}, {}, "c.json")
