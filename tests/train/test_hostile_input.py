"""Issue 12, findings 1-8: hostile or careless input ends in one ``error:`` line (exit 2, no
traceback, nothing changed on disk), never in a runaway allocation, an endless read, a
clobbered run folder or a lost generation."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from minigrad_lm import classify as classify_cli
from minigrad_lm import generate as generate_cli
from minigrad_lm import plot
from minigrad_lm.backend import memory
from minigrad_lm.cli import error_line
from minigrad_lm.data.text import unigram_baseline
from minigrad_lm.inference import sampling
from minigrad_lm.io.files import (
    CheckpointError,
    load_safetensors,
    read_json,
    safetensors_bytes,
    save_safetensors,
    sha256_file,
)
from minigrad_lm.io.untrusted import InputError, parse_json
from minigrad_lm.models import GPT, GPTConfig
from minigrad_lm.train.run_folder import RunLock
from minigrad_lm.train.trainer import Trainer
from tests.cli_support import (
    REPO,
    TINY,
    assert_one_line_error,
    run_module,
    run_train,
    snapshot,
    write_corpus,
)

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("data"), n_words=600)


@pytest.fixture
def lm_run(tiny_lm_run) -> Path:
    return tiny_lm_run


@pytest.fixture
def run(tmp_path, lm_run) -> Path:
    """A copy of the run to damage."""
    shutil.copytree(lm_run, tmp_path / "run")
    return tmp_path / "run"


def edit(folder: Path, fname: str, data: bytes | str) -> None:
    """Replace a checkpoint file and its checksum, so that the reader meets the content."""
    data = data.encode() if isinstance(data, str) else data
    (folder / fname).write_bytes(data)
    sums = json.loads((folder / "checksums.json").read_text())
    sums[fname] = hashlib.sha256(data).hexdigest()
    (folder / "checksums.json").write_text(json.dumps(sums))


def edit_json(folder: Path, fname: str, change) -> None:
    value = json.loads((folder / fname).read_text())
    change(value)
    edit(folder, fname, json.dumps(value))


def refused(capsys, main, argv, *fragments, folder: Path | None = None) -> str:
    """``main(argv)`` exits 2 with one error line holding ``fragments``; ``folder`` unchanged."""
    before = snapshot(folder) if folder is not None else None
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, *fragments)
    if folder is not None:
        assert snapshot(folder) == before
    return err


def generate(argv):
    return generate_cli.main(argv)


def train(argv):
    return run_train(*argv)


RESUME = ["--resume", "--max-steps", "16", *TINY]  # the shared run is at step 12


def resume_argv(run: Path, corpus: Path) -> list:
    return ["--data", corpus, "--out", run, *RESUME]


# --------------------------------------------------------------------------------------------
# 1. Exceptions that escaped as tracebacks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fname", ["config.json", "tokenizer.json", "state.json"])
def test_deeply_nested_checkpoint_json_is_one_line(run, capsys, fname):
    edit(run / "latest", fname, DEEP)
    refused(capsys, generate, ["--ckpt", run / "latest"], fname, "nested deeper", folder=run)


def test_deeply_nested_checksums_json_is_one_line(run, capsys):
    (run / "latest" / "checksums.json").write_text(DEEP)
    refused(capsys, generate, ["--ckpt", run / "latest"], "checksums.json", "nested deeper")


def test_deeply_nested_config_file_and_metrics_line(tmp_path, run, corpus, capsys):
    (tmp_path / "deep.json").write_text(DEEP)
    refused(capsys, train, ["--config", tmp_path / "deep.json", "--out", tmp_path / "new"],
            "deep.json", "nested deeper")
    assert not (tmp_path / "new").exists()
    with open(run / "metrics.jsonl", "a") as f:
        f.write(DEEP + "\n" + json.dumps({"kind": "train", "step": 9, "loss": 1.0}) + "\n")
    refused(capsys, plot.main, [run], "metrics.jsonl", "nested deeper", folder=run)


def test_deeply_nested_safetensors_header_and_vocab_json(tmp_path, corpus, capsys):
    header = DEEP.encode()
    (tmp_path / "deep.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(CheckpointError, match="deep.safetensors.*nested deeper"):
        load_safetensors(tmp_path / "deep.safetensors")
    folder = tmp_path / "tokens"
    folder.mkdir()
    np.arange(200, dtype="<u2").tofile(folder / "train.bin")
    np.arange(200, dtype="<u2").tofile(folder / "val.bin")
    (folder / "vocab.json").write_text(DEEP)
    refused(capsys, train, ["--data", folder, "--out", tmp_path / "new", *TINY],
            "vocab.json", "nested deeper", folder=tmp_path)


def _header_file(path: Path, header: dict, data: bytes = b"") -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    return path


def test_safetensors_header_values_of_the_wrong_type(tmp_path):
    entry = {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}
    path = _header_file(tmp_path / "m.safetensors", {"w": entry}, b"\0" * 4)
    with pytest.raises(CheckpointError, match=r"m\.safetensors: .*sequence, expected string or"):
        load_safetensors(path)


@pytest.mark.parametrize(("change", "fragments"), [
    (lambda c: c["model"].update(activation=["gelu"]), ("config.json", "model.activation",
                                                        "expected one of")),
    (lambda c: c["model"].update(bias="yes"), ("config.json", "model.bias", "true or false")),
    (lambda c: c["model"].update(dropout=[0.1]), ("model.dropout", "finite number")),
    (lambda c: c.update(task=["lm"]), ("config.json", "key 'task'")),
])
def test_config_json_values_of_the_wrong_type_name_the_key(run, capsys, change, fragments):
    edit_json(run / "latest", "config.json", change)
    refused(capsys, generate, ["--ckpt", run / "latest"], *fragments, folder=run)


def test_tokenizer_json_of_the_wrong_type(run, capsys):
    edit_json(run / "latest", "tokenizer.json", lambda t: t.update(type=["char"]))
    refused(capsys, generate, ["--ckpt", run / "latest"], "tokenizer.json", "key 'type'")
    edit_json(run / "latest", "tokenizer.json", lambda t: t.update(type="char", chars=7))
    refused(capsys, generate, ["--ckpt", run / "latest"], "tokenizer.json")


def test_hf_weight_map_values_that_are_not_strings(tmp_path, capsys):
    folder = _hf_folder(tmp_path / "gpt2", vocab=300)
    os.unlink(folder / "model.safetensors")
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"wte.weight": ["a.safetensors"]}}))
    refused(capsys, generate, ["--ckpt", folder, "--prompt", "hi"],
            "model.safetensors.index.json", "weight_map.wte.weight", folder=tmp_path)


@pytest.mark.parametrize("tokenizer_json", [
    {"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [5]}},
    {"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [None]}},
    {"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "normalizer": "NFC"},
    {"model": {"type": ["BPE"], "vocab": {"a": 0}, "merges": []}},
])
def test_hf_tokenizer_json_of_odd_shape_is_one_line(tmp_path, capsys, tokenizer_json):
    folder = _hf_folder(tmp_path / "gpt2", vocab=300)
    for name in ("vocab.json", "merges.txt"):
        os.unlink(folder / name)
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    refused(capsys, generate, ["--ckpt", folder, "--prompt", "hi"], "tokenizer.json",
            folder=tmp_path)


def test_a_label_too_large_for_an_integer_is_one_line(tmp_path, capsys):
    tsv = tmp_path / "train.tsv"
    tsv.write_text("sentence\tlabel\nthe good film\t99999999999999999999999\nbad\t0\n")
    refused(capsys, train, ["--task", "classify", "--data", tsv, "--val-data", tsv,
                            "--out", tmp_path / "new", *TINY], "train.tsv:2", "too large",
            folder=tmp_path)


def test_a_csv_field_over_the_csv_module_limit_is_one_line(tmp_path, capsys):
    csv_file = tmp_path / "train.csv"
    csv_file.write_text('text,label\n"' + "x" * 200_000 + '",1\nbad,0\n')
    refused(capsys, train, ["--task", "classify", "--data", csv_file, "--val-data", csv_file,
                            "--out", tmp_path / "new", *TINY], "train.csv:2", "malformed CSV",
            folder=tmp_path)


@pytest.mark.parametrize(("line", "fragments"), [
    ({"kind": "train", "step": "one", "loss": 1.0}, ("metrics.jsonl:", "key 'step'")),
    ({"kind": "train", "step": 1, "loss": "low"}, ("metrics.jsonl:", "key 'loss'")),
    ([1, 2], ("metrics.jsonl:", "expected an object")),
])
def test_plot_of_odd_metrics_lines_is_one_line(run, capsys, line, fragments):
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
    refused(capsys, plot.main, [run], *fragments, folder=run)


def test_plot_of_eval_records_without_train_loss(run, capsys):
    pytest.importorskip("matplotlib")  # plot's optional extra
    lines = [json.dumps({"kind": "eval", "step": s, "val_loss": 2.0 / s}) for s in (1, 2)]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert plot.main([str(run)]) == 0
    assert (run / "loss.png").read_bytes().startswith(b"\x89PNG")


# --------------------------------------------------------------------------------------------
# 2. Sizes nobody checked: estimated and refused before allocating
# --------------------------------------------------------------------------------------------


def test_require_names_the_estimate_and_the_available_memory(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": (2**30, "available"))
    memory.require(2**29, "weights", "a small model")
    with pytest.raises(MemoryError, match=r"a big model needs about 2\.0 GiB \(weights\), but "
                                          r"only 1\.0 GiB of memory is available"):
        memory.require(2**31, "weights", "a big model")


@pytest.mark.parametrize(("key", "value", "fragment"), [
    ("d_model", 100_000, "needs about"),
    ("d_model", 1_000_000_000, "needs about"),
    ("n_layer", 1_000_000_000, "needs about"),
    ("context_length", 10**12, "model.context_length"),
])
def test_huge_checkpoint_configs_are_refused_before_allocating(run, capsys, key, value, fragment):
    edit_json(run / "latest", "config.json", lambda c: c["model"].update({key: value}))
    start = time.perf_counter()
    refused(capsys, generate, ["--ckpt", run / "latest"], "config.json", fragment, folder=run)
    assert time.perf_counter() - start < 10


def test_a_billion_classes_in_a_checkpoint_are_refused(run, capsys):
    def classifier(c):
        c.update(task="classify", num_classes=10**9, pooling="mean")

    edit_json(run / "latest", "config.json", classifier)
    refused(capsys, classify_cli.main, ["--ckpt", run / "latest", "a film"], "config.json",
            "num_classes", folder=run)


@pytest.mark.parametrize("flags", [["--batch-size", "1000000000"], ["--n-layer", "100000000"],
                                   ["--d-model", "1000000", "--n-head", "1"]])
def test_huge_command_line_sizes_are_refused_before_allocating(tmp_path, corpus, capsys, flags):
    argv = ["--data", corpus, "--out", tmp_path / "new", *TINY, *flags]
    refused(capsys, train, argv, "needs about", "available")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("label", ["1000000000", "1000000"])
def test_huge_tsv_labels_are_refused(tmp_path, capsys, label):
    tsv = tmp_path / "train.tsv"
    tsv.write_text(f"sentence\tlabel\nthe good film\t{label}\nbad\t0\n")
    refused(capsys, train, ["--task", "classify", "--data", tsv, "--val-data", tsv,
                            "--out", tmp_path / "new", *TINY], "train.tsv:2", "too large")


def test_a_huge_hf_config_is_refused_before_the_model_is_built(tmp_path, capsys):
    folder = _hf_folder(tmp_path / "gpt2", vocab=300)
    config = json.loads((folder / "config.json").read_text())
    config.update(n_embd=65536, n_head=16)
    (folder / "config.json").write_text(json.dumps(config))
    refused(capsys, generate, ["--ckpt", folder, "--prompt", "hi"], "config.json",
            "needs about", folder=tmp_path)


# --------------------------------------------------------------------------------------------
# 3. Unbounded reads
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_dev_zero_as_data_is_refused_at_once(tmp_path):
    result = run_module("minigrad_lm.train", "--data", "/dev/zero", "--out", tmp_path / "new",
                        timeout=60)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "/dev/zero: is not a regular file")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)
    previous = signal.signal(signal.SIGALRM, signal.default_int_handler)
    signal.alarm(10)  # a regression would block in open(): fail instead of hanging
    try:
        with pytest.raises(CheckpointError, match="is not a regular file"):
            read_json(fifo)
        with pytest.raises(CheckpointError, match="is not a regular file"):
            load_safetensors(fifo)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_unigram_baseline_never_copies_a_memory_mapped_file_whole(tmp_path):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 300, size=8_000_000).astype("<u2")  # 16 MB; as int64 64 MB
    ids.tofile(tmp_path / "train.bin")
    train = np.memmap(tmp_path / "train.bin", dtype="<u2", mode="r")
    val = ids[:1000]
    counts = np.bincount(ids, minlength=300) + 1.0
    want = -np.mean(np.log(counts[val]) - np.log(counts.sum()))
    assert unigram_baseline(train, val, 300) == pytest.approx(want, rel=1e-9)
    assert _peak(lambda: unigram_baseline(train, val, 300)) < 24e6


def test_safetensors_weights_stay_mapped_and_are_hashed_in_chunks(tmp_path):
    path = tmp_path / "big.safetensors"
    weights = np.arange(8_000_000, dtype=np.float32)  # 32 MB
    save_safetensors(path, {"w": weights})
    assert _peak(lambda: load_safetensors(path, mmap=True)) < 4e6
    assert _peak(lambda: sha256_file(path)) < 4e6
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    mapped = load_safetensors(path, mmap=True)[0]["w"]
    assert np.array_equal(mapped, weights) and not mapped.flags.writeable


# --------------------------------------------------------------------------------------------
# 4. Non-finite hyperparameters; a run that fails before its first checkpoint
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("flag", "value"), [("--lr", "inf"), ("--weight-decay", "inf"),
                                             ("--grad-clip", "nan"), ("--peak-flops", "inf")])
def test_non_finite_flags_are_refused(tmp_path, corpus, capsys, flag, value):
    refused(capsys, train, ["--data", corpus, "--out", tmp_path / "new", *TINY, flag, value],
            flag, "finite")
    assert not (tmp_path / "new").exists()


def test_non_finite_config_file_values_are_refused(tmp_path, corpus, capsys):
    (tmp_path / "c.json").write_text('{"lr": 1e400}')
    refused(capsys, train, ["--config", tmp_path / "c.json", "--data", corpus, "--out",
                            tmp_path / "new"], "c.json", "inf is not a finite number")
    (tmp_path / "c.toml").write_text("weight_decay = inf\n")
    refused(capsys, train, ["--config", tmp_path / "c.toml", "--data", corpus, "--out",
                            tmp_path / "new"], "c.toml", "--weight-decay", "finite")
    assert not (tmp_path / "new").exists()


def test_a_run_that_failed_before_its_first_checkpoint_can_be_started_again(
        tmp_path, corpus, capsys, monkeypatch):
    out = tmp_path / "run"
    real_step = Trainer._train_step

    def diverge(self):
        if self.step == 1:
            raise ValueError("the loss became inf at step 2")
        return real_step(self)

    monkeypatch.setattr(Trainer, "_train_step", diverge)
    argv = ["--data", corpus, "--out", out, "--max-steps", "4", "--eval-every", "2", *TINY]
    assert run_train(*argv) == 2
    monkeypatch.setattr(Trainer, "_train_step", real_step)
    refused(capsys, train, [*argv[:4], "--resume", *argv[4:]], "stopped before its first "
            "checkpoint", folder=out)
    assert run_train(*argv) == 0
    assert "starting it again" in capsys.readouterr().out
    assert (out / "latest" / "model.safetensors").is_file()


# --------------------------------------------------------------------------------------------
# 5. One writer per run folder
# --------------------------------------------------------------------------------------------


HOLD = ("import sys, time; from minigrad_lm.train.run_folder import RunLock; RunLock(sys.argv[1])"
        ".acquire(); print('locked', flush=True); time.sleep(120)")


def test_a_second_writer_is_refused_naming_the_holder_and_a_stale_lock_is_taken_over(
        run, corpus, capsys):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        refused(capsys, train, resume_argv(run, corpus), f"pid {holder.pid}",
                "another training", folder=run)
        refused(capsys, train, ["--data", corpus, "--out", run, "--overwrite", *TINY],
                f"pid {holder.pid}", folder=run)
    finally:
        holder.kill()  # as a crash would: the lock file stays, the kernel drops the lock
        holder.wait()
    assert (run / "train.lock").exists()
    assert run_train(*resume_argv(run, corpus)) == 0
    assert not (run / "train.lock").exists()


def test_run_lock_refuses_a_second_holder_and_is_released(tmp_path):
    first, second = RunLock(str(tmp_path)), RunLock(str(tmp_path))
    first.acquire()
    with pytest.raises(InputError, match=f"pid {os.getpid()}"):
        second.acquire()
    first.release()
    second.acquire()
    second.release()
    assert not (tmp_path / "train.lock").exists()


# --------------------------------------------------------------------------------------------
# 6. plot through a link; resume validated before writing; an empty optimizer state
# --------------------------------------------------------------------------------------------


def test_plot_replaces_a_planted_symlink_instead_of_following_it(run, tmp_path):
    pytest.importorskip("matplotlib")  # plot's optional extra
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (run / "loss.png").symlink_to(victim)
    assert plot.main([str(run)]) == 0
    assert victim.read_text() == "precious"
    assert not (run / "loss.png").is_symlink()
    assert (run / "loss.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(("key", "value"), [("best_val_loss", "low"), ("best_step", -3),
                                            ("step", "4"), ("world_size", 0),
                                            ("batch_rng", "seeded")])
def test_a_hand_edited_state_json_is_refused_before_anything_is_written(
        run, corpus, capsys, key, value):
    edit_json(run / "latest", "state.json", lambda s: s.update({key: value}))
    refused(capsys, train, resume_argv(run, corpus), "state.json", folder=run)


def test_an_empty_optimizer_state_is_refused(run, corpus, capsys):
    edit(run / "latest", "optimizer.safetensors", safetensors_bytes({}))
    refused(capsys, train, resume_argv(run, corpus), "optimizer.safetensors",
            "no moment buffers", folder=run)


# --------------------------------------------------------------------------------------------
# 7. Generation within the tokenizer's vocabulary, streamed
# --------------------------------------------------------------------------------------------


def test_sampling_stays_below_the_vocabulary_limit():
    config = GPTConfig(vocab_size=40, context_length=8, n_layer=1, n_head=2, d_model=8)
    seen = []
    new = sampling.generate(GPT(config), [1], 200, temperature=50.0, seed=0, vocab_limit=5,
                            on_token=seen.append)
    assert new.max() < 5 and seen == new.tolist()
    assert sampling.generate(GPT(config), [1], 200, temperature=50.0, seed=0).max() >= 5


def test_generate_on_a_padded_hf_vocabulary_decodes_every_token(tmp_path, capsys):
    folder = _hf_folder(tmp_path / "gpt2", vocab=300)  # tokenizer: 257 tokens
    capsys.readouterr()
    assert generate_cli.main(["--ckpt", str(folder), "--prompt", "ab", "--max-new-tokens",
                              "100", "--temperature", "50", "--seed", "0"]) == 0
    assert capsys.readouterr().out.startswith("ab")


def test_generate_streams_so_an_interruption_keeps_the_text(lm_run, capsys, monkeypatch):
    real, calls = sampling._sample, []

    def interrupt_at_five(probs, rng):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(probs, rng)

    monkeypatch.setattr(sampling, "_sample", interrupt_at_five)
    capsys.readouterr()
    code = generate_cli.main(["--ckpt", str(lm_run), "--prompt", "The", "--seed", "0"])
    captured = capsys.readouterr()
    assert code == 130 and "interrupted" in captured.err
    assert captured.out.startswith("The") and len(captured.out) == len("The") + 4 + 1


# --------------------------------------------------------------------------------------------
# 8. Messages that misled
# --------------------------------------------------------------------------------------------


def test_a_foreign_hf_folder_is_named_as_such(tmp_path, capsys):
    folder = tmp_path / "llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    err = refused(capsys, generate, ["--ckpt", folder], "model_type 'llama'", folder=tmp_path)
    assert "checksums" not in err


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_dev_zero_as_classification_data_is_not_called_missing(tmp_path, capsys):
    err = refused(capsys, train, ["--task", "classify", "--data", "/dev/zero", "--val-data",
                                  "/dev/zero", "--out", tmp_path / "new", *TINY],
                  "/dev/zero: is not a regular file")
    assert "no such file" not in err


def test_a_vocab_size_given_as_a_string_says_so(run, capsys):
    edit(run / "latest", "tokenizer.json", json.dumps({"type": "external", "vocab_size": "31"}))
    refused(capsys, generate, ["--ckpt", run / "latest"], "tokenizer.json", "key 'vocab_size'",
            "expected an integer", "'31'", folder=run)


def test_shape_errors_name_the_file(run, corpus, capsys):
    tensors = load_safetensors(run / "latest" / "model.safetensors")[0]
    tensors["ln_f.weight"] = np.ones(3, dtype=np.float32)
    edit(run / "latest", "model.safetensors", safetensors_bytes(tensors))
    refused(capsys, generate, ["--ckpt", run / "latest"], "model.safetensors", "ln_f.weight",
            folder=run)
    shutil.copy(run / "best" / "model.safetensors", run / "latest" / "model.safetensors")
    edit(run / "latest", "model.safetensors", (run / "best" / "model.safetensors").read_bytes())
    buffers = load_safetensors(run / "latest" / "optimizer.safetensors")[0]
    name = sorted(buffers)[0]
    buffers[name] = np.ones(3, dtype=np.float32)
    edit(run / "latest", "optimizer.safetensors", safetensors_bytes(buffers))
    refused(capsys, train, resume_argv(run, corpus), "optimizer.safetensors", name, folder=run)


def test_a_non_utf8_config_file_is_named(tmp_path, corpus, capsys):
    (tmp_path / "c.json").write_bytes(b'{"lr": "\xff"}')
    refused(capsys, train, ["--config", tmp_path / "c.json", "--out", tmp_path / "new"],
            "c.json: not UTF-8")


def test_error_lines_quote_at_most_a_few_hundred_characters(tmp_path, run, capsys):
    key = "k" * 2_000_000
    path = _header_file(tmp_path / "m.safetensors", {key: {"dtype": "F32", "shape": [1],
                                                           "data_offsets": [0, 8]}}, b"\0" * 8)
    with pytest.raises(CheckpointError) as info:
        load_safetensors(path)
    assert len(str(info.value)) < 400
    edit(run / "latest", "model.safetensors", path.read_bytes())
    err = refused(capsys, generate, ["--ckpt", run / "latest"], "model.safetensors")
    assert len(err) < 700
    assert len(error_line(ValueError("x" * 10**6))) < 700


def test_parse_json_refuses_what_python_would_choke_on():
    with pytest.raises(InputError, match="f.json: malformed JSON"):
        parse_json("1" * 5000, "f.json")  # more digits than int() converts
    with pytest.raises(InputError, match="f.json: key 'a.b': inf is not a finite number"):
        parse_json(b'{"a": {"b": 1e400}}', "f.json")
    with pytest.raises(InputError, match="non-standard JSON constant NaN"):
        parse_json("[NaN]", "f.json")


# --------------------------------------------------------------------------------------------
# A tiny Hugging Face GPT-2 folder (written in the standard file formats)
# --------------------------------------------------------------------------------------------


def _byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins of the 256 bytes (vocab.json's alphabet)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    codes, extra = dict.fromkeys(keep), 0
    out = {}
    for b in range(256):
        if b in codes:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


def _hf_folder(folder: Path, vocab: int) -> Path:
    """config.json + model.safetensors of a 1-layer GPT-2 with ``vocab`` embeddings, and a
    byte-level tokenizer (vocab.json + merges.txt) of 257 tokens: a padded vocabulary."""
    model = GPT(GPTConfig(vocab_size=vocab, context_length=16, n_layer=1, n_head=2, d_model=8))
    model.save_pretrained(str(folder))
    tokens = {s: i for i, s in enumerate(_byte_symbols())}
    tokens["<|endoftext|>"] = 256
    (folder / "vocab.json").write_text(json.dumps(tokens), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return folder
