"""`export` attacked with generated destinations and adapter folders: every --to-hf is either
written (outside everything being read, with no checkpoint in or above it) or refused with one
error line before anything on disk changes; an adapter_config.json is checked against the
model's shapes before any adapter is allocated; NaN weights are never exported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minigrad_lm import export
from minigrad_lm.io.files import load_safetensors, save_safetensors
from minigrad_lm.models.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from tests.cli_support import TINY, assert_one_line_error, run_train, snapshot, write_corpus

FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A base run, a LoRA run on it, an earlier export and an adapter-only folder."""
    folder = tmp_path_factory.mktemp("export")
    corpus = write_corpus(folder)
    base, lora = folder / "base", folder / "lora"
    assert run_train("--data", corpus, "--out", base, "--max-steps", "2", "--eval-every", "2",
                     *TINY) == 0
    assert run_train("--data", corpus, "--out", lora, "--init-from", base, "--max-steps", "2",
                     "--eval-every", "2", "--lora-rank", "2", "--lora-targets", "qkv,fc",
                     *TINY) == 0
    adapter = folder / "adapter"
    adapter.mkdir()
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        shutil.copy(lora / "latest" / name, adapter / name)
    assert export.main(["--ckpt", str(base / "latest"), "--to-hf", str(folder / "done")]) == 0
    (folder / "a_file").write_text("not a folder")
    (folder / "odd").mkdir()
    (folder / "odd" / "config.json").mkdir()  # a folder where a file would be replaced
    return folder


DESTINATIONS = st.sampled_from([
    "base", "base/latest", "base/best", "base/latest/hf", "base/best/x/y", "lora",
    "lora/latest", "lora/latest/sub", "adapter", "adapter/hf", "done", "a_file", "a_file/x",
    "odd", "fresh", "fresh/deeper", "base/hf", ".",
])
SOURCES = st.sampled_from([
    ("base/latest", None), ("base", None), ("lora/latest", None), ("base/latest", "adapter"),
    ("base/latest", "lora/latest"), ("done", None), ("done", "adapter"),
])


@FUZZ
@given(dest=DESTINATIONS, source=SOURCES, overwrite=st.booleans(), merge=st.booleans())
def test_an_export_writes_only_where_it_may(world, tmp_path_factory, capsys, dest, source,
                                            overwrite, merge):
    ckpt, adapter = source
    world = shutil.copytree(world, tmp_path_factory.mktemp("copy") / "world", symlinks=True)
    out = world / dest
    argv = ["--ckpt", str(world / ckpt), "--to-hf", str(out)]
    argv += ["--adapter", str(world / adapter)] if adapter else []
    argv += ["--overwrite"] if overwrite else []
    argv += ["--merge-lora"] if merge else []
    before = snapshot(world)
    capsys.readouterr()
    status = export.main(argv)
    err = capsys.readouterr().err
    if status == 2:
        assert_one_line_error(err)
        assert snapshot(world) == before
        return
    assert status == 0, err
    changed = {k for k in set(snapshot(world)) | set(before)
               if snapshot(world).get(k) != before.get(k)}
    written = out.resolve().relative_to(world.resolve()).as_posix()
    assert all(k.startswith(f"{written}/") or written == "." for k in changed), changed
    for protected in ("base", "lora", "adapter"):
        assert not any(k.startswith(f"{protected}/") for k in changed), (protected, changed)


ADAPTER_CONFIGS = st.fixed_dictionaries({
    "peft_type": st.just("LORA"),
    "r": st.integers(1, 2**20) | st.sampled_from([1, 2, 16, 17, 48, 65536]),
    "lora_alpha": st.floats(1e-3, 1e3),
    "target_modules": st.lists(st.sampled_from(["attn.c_attn", "mlp.c_fc", "c_proj",
                                                "attn.c_proj"]), min_size=1, max_size=3),
})


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(config=ADAPTER_CONFIGS)
def test_an_adapter_config_is_checked_against_the_models_shapes(world, tmp_path_factory,
                                                                capsys, config):
    folder = tmp_path_factory.mktemp("adapter")
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config))
    shutil.copy(world / "adapter" / ADAPTER_WEIGHTS, folder / ADAPTER_WEIGHTS)
    out = tmp_path_factory.mktemp("out") / "hf"
    capsys.readouterr()
    status = export.main(["--ckpt", str(world / "base" / "latest"), "--adapter", str(folder),
                          "--to-hf", str(out)])
    err = capsys.readouterr().err
    if config["r"] > 16:  # d_model 16: the smaller side of every adapted layer
        assert status == 2
        assert_one_line_error(err, f"{folder / ADAPTER_CONFIG}: ")
        assert "does not fit" in err or "must be an integer in [1, 65536]" in err
        assert not out.exists()
    elif status == 2:  # a rank or target the weights file does not hold
        assert_one_line_error(err, str(folder))
        assert not out.exists()


def test_nan_adapter_weights_are_never_merged_into_an_export(world, tmp_path, capsys):
    folder = tmp_path / "nan"
    shutil.copytree(world / "adapter", folder)
    tensors, metadata = load_safetensors(folder / ADAPTER_WEIGHTS)
    name = sorted(tensors)[0]
    tensors[name] = np.full_like(tensors[name], np.nan)
    save_safetensors(folder / ADAPTER_WEIGHTS, tensors, metadata)
    for merge in ([], ["--merge-lora"]):
        capsys.readouterr()
        assert export.main(["--ckpt", str(world / "base" / "latest"), "--adapter", str(folder),
                            "--to-hf", str(tmp_path / "hf"), *merge]) == 2
        assert_one_line_error(capsys.readouterr().err, "NaN or infinite")
        assert not Path(tmp_path / "hf").exists()
