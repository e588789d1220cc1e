"""`train --lora-rank` (lm and classify), `--recompute`, the peak-memory eval line, and export
of LoRA checkpoints (adapters beside the base, or merged)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from minigrad_lm import classify as classify_cli
from minigrad_lm import export
from minigrad_lm.io.files import load_safetensors
from minigrad_lm.models import GPT
from minigrad_lm.models.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, load_adapter
from minigrad_lm.checkpoints.folder import read_checkpoint
from minigrad_lm.checkpoints.metrics import read_metrics
from tests.cli_support import TINY, run_train, write_corpus
from tests.test_classify_cli import CLASSIFY, sentiment_rows, write_tsv

IDS = np.random.default_rng(0).integers(0, 20, (2, 16))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora")
    corpus = write_corpus(folder)
    base, lora = folder / "base", folder / "lora"
    assert run_train("--data", corpus, "--out", base, "--max-steps", "4", "--eval-every", "4",
                     *TINY) == 0
    assert run_train("--data", corpus, "--out", lora, "--init-from", base, "--max-steps", "6",
                     "--eval-every", "3", "--lora-rank", "2", "--lora-alpha", "4",
                     "--lora-targets", "qkv,fc", "--recompute", "blocks", "--dropout", "0.1",
                     "--lr", "1e-2", *TINY) == 0
    return corpus, base, lora


def test_lora_run_trains_only_the_adapters_and_saves_them_in_the_peft_layout(runs, capsys):
    _, base, lora = runs
    latest = lora / "latest"
    assert json.loads((latest / ADAPTER_CONFIG).read_text())["r"] == 2
    assert {ADAPTER_CONFIG, ADAPTER_WEIGHTS} <= set(json.loads(
        (latest / "checksums.json").read_text()))
    adapters, _ = load_safetensors(latest / ADAPTER_WEIGHTS)
    assert sorted(adapters) == sorted(
        f"base_model.model.transformer.h.0.{m}.lora_{x}.weight"
        for m in ("attn.c_attn", "mlp.c_fc") for x in "AB")
    weights, _ = load_safetensors(latest / "model.safetensors")
    base_weights, _ = load_safetensors(base / "latest" / "model.safetensors")
    for name, value in base_weights.items():  # the base is frozen
        np.testing.assert_array_equal(weights[name], value, err_msg=name)
    optimizer, _ = load_safetensors(latest / "optimizer.safetensors")
    n_adapter = sum(a.size for a in adapters.values())
    assert optimizer["g0.exp_avg"].size == n_adapter  # no state for the frozen base
    evals = [r for r in read_metrics(str(lora)) if r["kind"] == "eval"]
    assert evals and all(r["peak_memory_bytes"] > 2**20 for r in evals)


def test_lora_checkpoint_builds_merged_and_matches_base_plus_adapter(runs):
    _, base, lora = runs
    merged = read_checkpoint(str(lora / "latest")).build_model()
    assert isinstance(merged, GPT) and "layers.0.attn.qkv.lora_A" not in merged.state_dict()
    model = read_checkpoint(str(base / "latest")).build_model()
    load_adapter(model, str(lora / "latest"))
    np.testing.assert_allclose(merged(IDS).numpy(), model.eval()(IDS).numpy(), atol=1e-5)


def test_lora_run_resumes(runs, capsys):
    corpus, _, lora = runs
    assert run_train("--data", corpus, "--out", lora, "--resume", "--max-steps", "7",
                     *TINY) == 0
    out = capsys.readouterr().out
    assert "LoRA rank 2 (alpha 4) on qkv, fc" in out and "peak mem" in out


def test_export_writes_base_plus_adapter_or_merged(runs, tmp_path, capsys):
    _, base, lora = runs
    assert export.main(["--ckpt", str(lora / "latest"), "--to-hf", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / ADAPTER_WEIGHTS).is_file()
    assert export.main(["--ckpt", str(lora / "latest"), "--to-hf", str(tmp_path / "m"),
                        "--merge-lora"]) == 0
    assert not (tmp_path / "m" / ADAPTER_WEIGHTS).exists()
    assert export.main(["--ckpt", str(base / "latest"), "--adapter", str(lora / "latest"),
                        "--to-hf", str(tmp_path / "b"), "--merge-lora"]) == 0
    merged = GPT.from_pretrained(str(tmp_path / "m")).eval()
    want = read_checkpoint(str(lora / "latest")).build_model()(IDS).numpy()
    np.testing.assert_allclose(merged(IDS).numpy(), want, atol=1e-5)
    np.testing.assert_allclose(GPT.from_pretrained(str(tmp_path / "b")).eval()(IDS).numpy(),
                               want, atol=1e-5)
    unmerged = GPT.from_pretrained(str(tmp_path / "a")).eval()
    load_adapter(unmerged, str(tmp_path / "a"))
    np.testing.assert_allclose(unmerged(IDS).numpy(), want, atol=1e-5)
    capsys.readouterr()
    assert export.main(["--ckpt", str(base / "latest"), "--to-hf", str(tmp_path / "x"),
                        "--merge-lora"]) == 2
    assert "has no LoRA adapters" in capsys.readouterr().err


def test_exported_adapter_loads_in_transformers_and_peft(runs, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    _, _, lora = runs
    out = tmp_path / "a"
    assert export.main(["--ckpt", str(lora / "latest"), "--to-hf", str(out)]) == 0
    ours = read_checkpoint(str(lora / "latest")).build_model()(IDS).numpy()
    base = tmp_path / "base"  # the base model alone, for PeftModel to add the adapter to
    base.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(out / name, base / name)
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(base))
    with torch.no_grad():
        plain = hf(torch.tensor(IDS)).logits.numpy()
        assert not np.allclose(plain, ours, atol=1e-4)  # the adapter matters
        theirs = peft.PeftModel.from_pretrained(hf, str(out)).eval()(torch.tensor(IDS)).logits
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-4)


def test_classify_with_lora(tmp_path, capsys):
    write_tsv(tmp_path / "train.tsv", sentiment_rows(120, seed=0))
    write_tsv(tmp_path / "dev.tsv", sentiment_rows(40, seed=1))
    out = tmp_path / "clf"
    assert run_train(*CLASSIFY, "--data", tmp_path / "train.tsv", "--val-data",
                     tmp_path / "dev.tsv", "--out", out, "--max-steps", "6", "--eval-every", "3",
                     "--lora-rank", "4", "--lora-targets", "qkv,out,fc,proj") == 0
    adapters, _ = load_safetensors(out / "latest" / ADAPTER_WEIGHTS)
    assert {"base_model.model.classifier.weight", "base_model.model.classifier.bias"} <= set(
        adapters)
    assert json.loads((out / "latest" / ADAPTER_CONFIG).read_text())["task_type"] == "SEQ_CLS"
    capsys.readouterr()
    assert classify_cli.main(["--ckpt", str(out), "a great film"]) == 0
    assert capsys.readouterr().out.strip()


def test_bad_lora_options_are_one_line_errors(runs, tmp_path, capsys):
    corpus, _, _ = runs
    for flags, match in ((["--lora-rank", "2", "--lora-targets", "attn"],
                          "--lora-targets 'attn': give distinct names"),
                         (["--lora-rank", "-1"], "--lora-rank must be >= 0"),
                         (["--lora-rank", "2", "--lora-alpha", "0"], "--lora-alpha must be > 0")):
        assert run_train("--data", corpus, "--out", tmp_path / "r", "--max-steps", "1", *flags,
                         *TINY) == 2
        err = capsys.readouterr().err
        assert match in err and len(err.strip().splitlines()) == 1
        assert not Path(tmp_path / "r").exists()
    with pytest.raises(SystemExit):
        run_train("--data", corpus, "--out", tmp_path / "r", "--recompute", "layers", *TINY)
    assert "invalid choice: 'layers'" in capsys.readouterr().err
