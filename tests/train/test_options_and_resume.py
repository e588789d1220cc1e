"""Options against the tasks that use them and the runs they resume, attacked with generated
combinations: an option a task cannot use is refused by name; a resume that contradicts what
its checkpoint was trained with (model shape, adapters, vocabulary, validation split, and each
task's own) is one error line naming both values and changes nothing; a state.json of another
task than its config.json is one line; translate's decoding options are checked before --out is
touched."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minigrad_lm.train.config import LEARNED_VOCAB_OPTIONS, TASK_OPTIONS, TrainConfig, applicable
from minigrad_lm.train.tasks import TASKS
from tests.cli_support import TINY, assert_one_line_error, run_train, snapshot, write_corpus
from tests.train.test_hostile_input import edit_json

V1 = Path(__file__).resolve().parents[1] / "fixtures" / "v1_runs"
V1_TASKS = sorted(t for t in TASKS if (V1 / t).is_dir())  # tasks that existed in format 1
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))
# A value of each option, given as a flag, besides the one a run was trained with.
VALUES = {
    "context": ["4", "32"], "n_layer": ["2", "3"], "n_head": ["1", "4"], "d_model": ["16", "4"],
    "norm": ["pre", "post"], "positional": ["learned", "sinusoidal"],
    "attention": ["causal", "bidirectional"], "tokenizer": ["char", "byte", "word", "bpe"],
    "vocab_size": ["50", "1000000000000"], "min_count": ["2", "7"], "lowercase": [],
    "val_every_nth": ["3", "9"], "lora_rank": ["2", "1000"], "lora_alpha": ["4", "1e6"],
    "lora_targets": ["fc", "qkv,out"], "pooling": ["mean", "cls", "last"],
    "mask_prob": ["0.3", "0.5"], "d_ff": ["64", "7"], "embeddings": ["shared", "separate"],
    "batch_tokens": ["100", "9999"], "recompute": ["blocks"], "word_dropout": ["0.2"],
    "label_smoothing": ["0.2"], "beam_size": ["2"], "length_penalty": ["0.5"], "epochs": ["2"],
    "sample_tokens": ["0", "30"], "stride": ["8"], "max_answer_tokens": ["5"],
    "truncation": ["head_tail"], "layer_decay": ["0.8"], "generator_layers": ["2"],
    "token_cache": ["cache"],
}
BASE = {"lm": ["--data", "x.txt"], "mlm": ["--data", "x.txt"], "electra": ["--data", "x.txt"],
        "word2vec": ["--data", "x.txt"],
        "classify": ["--data", "x.tsv", "--val-data", "y.tsv"],
        "translate": ["--data", "a", "b", "--val-data", "c", "d"],
        "qa": ["--data", "x.json", "--val-data", "y.json"]}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _saved(task: str) -> dict:
    """What a v1 run was trained with (less the options it saved but never read)."""
    return applicable(
        json.loads((V1 / task / "latest" / "state.json").read_text())["train_config"])


@FUZZ
@given(st.sampled_from(sorted(BASE)).flatmap(lambda task: st.tuples(
    st.just(task), st.sampled_from([o for o in TASK_OPTIONS
                                    if o not in TASKS[task].options and o in VALUES]))))
def test_an_option_a_task_cannot_use_is_refused_by_name(tmp_path_factory, capsys, case):
    task, option = case
    out = tmp_path_factory.mktemp("refused") / "run"
    capsys.readouterr()
    assert run_train("--task", task, *BASE[task], "--out", out, _flag(option),
                     VALUES[option][0]) == 2
    assert_one_line_error(capsys.readouterr().err, f"{_flag(option)} applies to --task ")
    assert not out.exists()


@FUZZ
@given(st.sampled_from(sorted(TASKS)), st.sampled_from(["char", "byte"]),
       st.sampled_from(LEARNED_VOCAB_OPTIONS), st.booleans())
def test_a_learned_vocabulary_option_with_a_char_or_byte_tokenizer_is_refused_by_name(
        tmp_path_factory, capsys, task, tokenizer, option, negated):
    """--vocab-size, --min-count and --lowercase shape a learned (word or bpe) vocabulary:
    given with char or byte, they are refused by name before --out is made."""
    out = tmp_path_factory.mktemp("vocab") / "run"
    given_as = ([f"--no-{option}" if negated else _flag(option)] if option == "lowercase"
                else [_flag(option), VALUES[option][0]])
    capsys.readouterr()
    assert run_train("--task", task, *BASE[task], "--tokenizer", tokenizer, "--out", out,
                     *given_as) == 2
    assert_one_line_error(capsys.readouterr().err, f"{_flag(option)} applies to a learned "
                          f"vocabulary (--tokenizer word or bpe), not --tokenizer {tokenizer}")
    assert not out.exists()


@pytest.mark.parametrize("tokenizer", ["word", "bpe"])
def test_a_learned_vocabulary_fills_in_its_option_defaults(tokenizer):
    cfg = TrainConfig(data="x", tokenizer=tokenizer)
    assert (cfg.min_count, cfg.lowercase) == (1, False)
    assert (TrainConfig(data="x").min_count, TrainConfig(data="x").lowercase) == (None, None)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_a_task_records_none_of_the_options_it_does_not_use(task):
    cfg = TrainConfig(task=task, data=["a", "b"] if task == "translate" else "x",
                      val_data=["c", "d"] if task == "translate" else (
                          "y" if task in ("classify", "qa") else None))
    unused = [o for o in TASK_OPTIONS if o not in TASKS[task].options]
    assert all(getattr(cfg, o) is None for o in unused)
    assert all(getattr(cfg, o) is not None for o in TASKS[task].defaults)


def _contradictions():
    def options(task):
        saved = _saved(task)
        return [(task, o, v) for o in TASKS[task].fixed for v in VALUES[o]
                if (o in TASKS[task].options or o not in TASK_OPTIONS)
                and str(saved.get(o)) != v and not (o == "lora_alpha" and not saved["lora_rank"])]
    return st.sampled_from([c for task in V1_TASKS for c in options(task)])


@FUZZ
@given(case=_contradictions())
def test_a_resume_that_contradicts_its_checkpoint_is_refused_naming_both(
        tmp_path_factory, capsys, case):
    task, option, value = case
    run = tmp_path_factory.mktemp("resume") / "run"
    shutil.copytree(V1 / task, run)
    before = snapshot(run)
    capsys.readouterr()
    assert run_train("--out", run, "--resume", "--max-steps", "3", _flag(option), value) == 2
    saved = _saved(task).get(option)
    shown = "(not given)" if saved is None else str(saved)
    assert_one_line_error(capsys.readouterr().err,
                          f"was trained with {_flag(option)} {shown}, not {value}")
    assert snapshot(run) == before


@pytest.mark.parametrize("other", ["lm", "classify", "translate"])
@pytest.mark.parametrize("task", ["mlm", "translate"])
def test_a_state_json_of_another_task_is_one_line(tmp_path, capsys, task, other):
    if other == task:
        return
    run = tmp_path / "run"
    shutil.copytree(V1 / task, run)
    edit_json(run / "latest", "state.json",
              lambda s: s["train_config"].update({**_saved(other), "out": str(run)}))
    before = snapshot(run)
    assert run_train("--out", run, "--resume", "--max-steps", "3") == 2
    assert_one_line_error(capsys.readouterr().err, "state.json: its training configuration is "
                          f"of --task {other} but config.json holds a {task} model")
    assert snapshot(run) == before


@pytest.mark.parametrize("flags", [["--beam-size", "1000000000"],
                                   ["--length-penalty", "1e308"],
                                   ["--beam-size", "100000", "--d-model", "512"]])
def test_translate_decoding_options_are_checked_before_out_is_touched(tmp_path, capsys, flags):
    run = tmp_path / "run"
    shutil.copytree(V1 / "translate", run)
    before = snapshot(run)
    args = [*(["--data", *map(str, (V1 / "src.txt", V1 / "tgt.txt"))] * 1),
            "--val-data", str(V1 / "src.txt"), str(V1 / "tgt.txt"), "--task", "translate",
            "--tokenizer", "word", "--out", run, "--overwrite", *flags]
    assert run_train(*args) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, flags[0])
    assert snapshot(run) == before


def test_a_resumed_run_records_only_what_it_uses(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(V1 / "translate", run)
    assert run_train("--out", run, "--resume", "--max-steps", "3") == 0
    recorded = json.loads((run / "train_config.json").read_text())
    unused = [o for o in TASK_OPTIONS if o not in TASKS["translate"].options]
    assert {o: recorded[o] for o in unused} == {o: None for o in unused}


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(task=st.sampled_from(V1_TASKS), key=st.sampled_from(sorted(VALUES)),
       value=st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4)
       | st.lists(st.integers(), max_size=2))
def test_a_hand_edited_state_json_value_is_named_by_its_file_and_key(tmp_path_factory, capsys,
                                                                      task, key, value):
    """A resumed run either accepts the edited value or says which file and key hold it."""
    run = tmp_path_factory.mktemp("edited") / "run"
    shutil.copytree(V1 / task, run)
    edit_json(run / "latest", "state.json",
              lambda s: s["train_config"].update({key: value, "out": str(run)}))
    capsys.readouterr()
    status = run_train("--out", run, "--resume", "--max-steps", "3", "--eval-every", "100")
    err = capsys.readouterr().err
    assert status in (0, 2), err
    if status == 2:
        assert_one_line_error(err)
        assert "state.json" in err or "--max-steps" in err, err


@pytest.fixture(scope="module")
def word_lm(tmp_path_factory):
    """A word-level causal language model (--task lm's default tokenizer is char)."""
    folder = tmp_path_factory.mktemp("word_lm")
    corpus = write_corpus(folder)
    assert run_train("--data", corpus, "--tokenizer", "word", *TINY, "--max-steps", "1",
                     "--sample-tokens", "0", "--out", folder / "run") == 0
    return corpus, folder / "run"


@pytest.mark.parametrize("task", ["lm", "mlm"])
def test_init_from_adopts_the_checkpoints_tokenizer(word_lm, tmp_path, task):
    corpus, source = word_lm
    out = tmp_path / "run"
    assert run_train("--task", task, "--data", corpus, *TINY, "--max-steps", "1",
                     "--init-from", source, "--out", out) == 0
    assert json.loads((out / "train_config.json").read_text())["tokenizer"] == "word"


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(task=st.sampled_from(["lm", "mlm", "classify"]),
       given_as=st.sampled_from([["--tokenizer", "char"], ["--tokenizer", "byte"],
                                 ["--tokenizer", "bpe"], ["--vocab-size", "7"],
                                 ["--vocab-size", "100000"], ["--min-count", "2"],
                                 ["--lowercase"], ["--no-lowercase"]]))
def test_init_from_with_another_vocabulary_is_refused_naming_both(word_lm, tmp_path_factory,
                                                                 capsys, task, given_as):
    corpus, source = word_lm
    out = tmp_path_factory.mktemp("init") / "run"
    data = [corpus, corpus] if task == "classify" else [corpus]
    capsys.readouterr()
    assert run_train("--task", task, "--data", *data, "--init-from", source, "--out", out,
                     *given_as) == 2
    size = json.loads((source / "latest" / "config.json").read_text())["model"]["vocab_size"]
    assert_one_line_error(capsys.readouterr().err,
                          f"its tokenizer is word with {size:,} tokens",
                          given_as[0].replace("--no-", "--"))
    assert not out.exists()
