"""Hugging Face GPT-2 folders: the weight-layout mapping, config checks, the byte-level BPE
tokenizer, `python -m minigrad_lm.export`, and (when transformers and PyTorch are installed)
parity of logits, greedy generation and token ids with transformers and tokenizers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

import minigrad_lm as mg
from minigrad_lm import export
from minigrad_lm.data.tokenizer import ByteTokenizer
from minigrad_lm.data.trained_tokenizer import (
    TrainedTokenizer,
    gpt2_tokenizer,
    read_gpt2_tokenizer,
    write_gpt2_tokenizer,
)
from minigrad_lm.inference.sampling import generate
from minigrad_lm.io.files import CheckpointError, load_safetensors, save_safetensors
from minigrad_lm.models import GPT, GPTConfig, SequenceClassifier
from minigrad_lm.models.hf_gpt2 import is_hf_gpt2_dir, read_gpt2_state
from minigrad_lm.optim import AdamW, decay_groups
from minigrad_lm.checkpoints.folder import (
    checkpoint_files,
    read_checkpoint,
    save_checkpoint,
)
from tests.cli_support import snapshot

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TEXTS = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "it's we'll they've I'd you're 'S don't",
    "Ünïcödé façade, naïve café — 東京は日本の首都です。Привет, мир!",
    "emoji 😀🎉 👍🏽 👨‍👩‍👧 and a flag 🇫🇷",
    "  leading and trailing   \n\n\tindented\r\nlines  ",
    "numbers 12345 3.14 ²³ ½ ٣٤ and symbols #@$%^&*()_+{}|",
    "a<|endoftext|>b <|endoftext|>\n<|endoftext|>",
    "\u3000ideographic\u00a0nbsp\u2028line sep\x1cfile sep",
    "",
]


def _tiny_config(**overrides) -> GPTConfig:
    config = {"vocab_size": 300, "context_length": 16, "n_layer": 2, "n_head": 2,
              "d_model": 16}
    return GPTConfig(**{**config, **overrides})


def _model(seed: int = 0, scale: float = 1.0, **overrides) -> GPT:
    """A GPT with weights large enough that logits and greedy choices are far from ties."""
    mg.manual_seed(seed)
    model = GPT(_tiny_config(**overrides))
    rng = np.random.default_rng(seed)
    state = {k: (v + rng.standard_normal(v.shape).astype(np.float32) * 0.1 * scale)
             for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    return model.eval()


def _logits(model: GPT, ids: np.ndarray) -> np.ndarray:
    with mg.no_grad():
        return model(ids).numpy()


# --------------------------------------------------------------------------------------------
# A Hugging Face folder built by hand: GPT-2's names, Conv1D weights stored transposed
# --------------------------------------------------------------------------------------------


def _hf_tensors(model: GPT, prefix: str = "transformer.", dtype=np.float32,
                buffers: bool = True) -> dict[str, np.ndarray]:
    """GPT-2's layout of ``model``, written out independently of the code under test."""
    s = model.state_dict()
    out = {"wte.weight": s["tok_emb.weight"], "wpe.weight": s["pos_emb.embedding.weight"],
           "ln_f.weight": s["ln_f.weight"], "ln_f.bias": s["ln_f.bias"]}
    p = model.config.context_length
    for i in range(model.config.n_layer):
        ours = f"layers.{i}."
        h = f"h.{i}."
        out.update({
            h + "ln_1.weight": s[ours + "norm1.weight"], h + "ln_1.bias": s[ours + "norm1.bias"],
            h + "attn.c_attn.weight": s[ours + "attn.qkv.weight"].T,
            h + "attn.c_attn.bias": s[ours + "attn.qkv.bias"],
            h + "attn.c_proj.weight": s[ours + "attn.out.weight"].T,
            h + "attn.c_proj.bias": s[ours + "attn.out.bias"],
            h + "ln_2.weight": s[ours + "norm2.weight"], h + "ln_2.bias": s[ours + "norm2.bias"],
            h + "mlp.c_fc.weight": s[ours + "ff.fc.weight"].T,
            h + "mlp.c_fc.bias": s[ours + "ff.fc.bias"],
            h + "mlp.c_proj.weight": s[ours + "ff.proj.weight"].T,
            h + "mlp.c_proj.bias": s[ours + "ff.proj.bias"],
        })
    out = {prefix + k: np.ascontiguousarray(v).astype(dtype) for k, v in out.items()}
    if buffers:  # the causal-mask buffers that older transformers versions saved
        for i in range(model.config.n_layer):
            out[f"{prefix}h.{i}.attn.bias"] = np.tril(np.ones((1, 1, p, p), np.float32))
            out[f"{prefix}h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
    return out


def _hf_config(model: GPT, **overrides) -> dict:
    c = model.config
    return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
            "vocab_size": c.vocab_size, "n_positions": c.context_length, "n_embd": c.d_model,
            "n_layer": c.n_layer, "n_head": c.n_head, "layer_norm_epsilon": c.layer_norm_eps,
            "activation_function": "gelu_new", **overrides}


def _write_hf(folder: Path, tensors: dict, config: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_safetensors(folder / "model.safetensors", tensors, {"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _f16_model() -> GPT:
    """Weights exactly representable in float16, so F16 and F32 files hold the same values."""
    model = _model()
    model.load_state_dict({k: v.astype(np.float16).astype(np.float32)
                           for k, v in model.state_dict().items()})
    return model


@pytest.mark.parametrize("prefix", ["transformer.", ""])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_hand_built_hf_folder_gives_the_same_logits(tmp_path, prefix, dtype):
    model = _f16_model()
    folder = _write_hf(tmp_path / "hf", _hf_tensors(model, prefix, dtype), _hf_config(model))
    loaded = GPT.from_pretrained(str(folder))
    assert not loaded.training
    assert all(v.dtype == np.float32 for v in loaded.state_dict().values())
    ids = np.random.default_rng(1).integers(0, 300, (2, 16))
    np.testing.assert_array_equal(_logits(loaded, ids), _logits(model, ids))
    assert loaded.head.weight is loaded.tok_emb.weight


def test_gelu_pytorch_tanh_and_a_tied_lm_head_copy_load(tmp_path):
    model = _model()
    tensors = _hf_tensors(model)
    tensors["lm_head.weight"] = tensors["transformer.wte.weight"].copy()
    config = _hf_config(model, activation_function="gelu_pytorch_tanh", n_inner=64,
                        tie_word_embeddings=False)
    loaded = GPT.from_pretrained(_write_hf(tmp_path, tensors, config))
    ids = np.arange(16)[None] % 300
    np.testing.assert_array_equal(_logits(loaded, ids), _logits(model, ids))


def _load_error(tmp_path: Path, tensors: dict, config: dict) -> str:
    with pytest.raises(CheckpointError) as e:
        GPT.from_pretrained(_write_hf(tmp_path, tensors, config))
    return str(e.value)


def test_missing_unexpected_and_misshapen_tensors_are_named(tmp_path):
    model = _model()
    tensors = _hf_tensors(model)
    del tensors["transformer.h.1.mlp.c_fc.bias"]
    tensors["score.weight"] = np.zeros((2, 16), np.float32)
    msg = _load_error(tmp_path / "a", tensors, _hf_config(model))
    assert "missing tensors h.1.mlp.c_fc.bias" in msg and "unexpected tensors score.weight" in msg

    tensors = _hf_tensors(model)
    tensors["transformer.h.0.attn.c_attn.weight"] = tensors["transformer.h.0.attn.c_attn.weight"].T
    msg = _load_error(tmp_path / "b", tensors, _hf_config(model))
    assert "'h.0.attn.c_attn.weight' has shape (48, 16), config.json implies (16, 48)" in msg

    msg = _load_error(tmp_path / "c", _hf_tensors(model), _hf_config(model, n_layer=3))
    assert "missing tensors h.2.ln_1.weight" in msg

    tensors = _hf_tensors(model)
    tensors["lm_head.weight"] = tensors["transformer.wte.weight"] + 1
    assert "lm_head.weight differs from wte.weight" in _load_error(tmp_path / "d", tensors,
                                                                   _hf_config(model))


@pytest.mark.parametrize("setting, fragment", [
    ({"activation_function": "swish"}, "activation_function='swish'"),
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx=true"),
    ({"reorder_and_upcast_attn": True}, "reorder_and_upcast_attn=true"),
    ({"n_inner": 100}, "n_inner=100"),
    ({"add_cross_attention": True}, "add_cross_attention=true"),
    ({"model_type": "llama"}, "model_type 'llama' is not 'gpt2'"),
    ({"n_head": 3}, "not divisible by n_head=3"),
])
def test_unsupported_configs_are_named(tmp_path, setting, fragment):
    model = _model()
    msg = _load_error(tmp_path, _hf_tensors(model), _hf_config(model, **setting))
    assert fragment in msg and "config.json" in msg


def test_a_pickle_only_folder_is_refused_without_loading_it(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(_hf_config(_model())))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04 not loaded")
    with pytest.raises(CheckpointError, match="pytorch_model.bin, which is never loaded"):
        GPT.from_pretrained(tmp_path)


def test_sharded_safetensors_load(tmp_path):
    model = _model()
    tensors = _hf_tensors(model, buffers=False)
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2],
              "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_safetensors(tmp_path / shard, {k: tensors[k] for k in keys})
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (tmp_path / "config.json").write_text(json.dumps(_hf_config(model)))
    ids = np.arange(10)[None]
    np.testing.assert_array_equal(_logits(GPT.from_pretrained(tmp_path), ids), _logits(model, ids))


def test_save_pretrained_round_trip_is_exact_and_in_transformers_layout(tmp_path):
    model = _model(activation="gelu")
    model.save_pretrained(str(tmp_path))
    tensors, metadata = load_safetensors(tmp_path / "model.safetensors")
    assert metadata == {"format": "pt"}
    assert set(tensors) == set(_hf_tensors(model, buffers=False))  # no lm_head, prefixed
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["architectures"] == ["GPT2LMHeadModel"]
    assert config["activation_function"] == "gelu" and config["n_inner"] is None
    assert config["eos_token_id"] is None  # no tokenizer, so no end-of-text id to claim
    loaded = GPT.from_pretrained(tmp_path)
    assert loaded.config == model.config
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name], value)
    config_, state = read_gpt2_state(tmp_path, dropout=0.25)
    assert config_.dropout == 0.25 and set(state) == set(model.state_dict())


def test_a_loaded_gpt2_fine_tunes_as_a_language_model_and_as_a_classifier(tmp_path):
    _model().save_pretrained(str(tmp_path))
    ids = np.random.default_rng(3).integers(0, 300, (4, 16))
    model = GPT.from_pretrained(tmp_path, dropout=0.1).train()
    optimizer = AdamW(decay_groups(model, 0.1), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = model.loss(ids[:, :-1], ids[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5
    classifier = SequenceClassifier(GPT.from_pretrained(tmp_path).train(), 2)
    optimizer = AdamW(classifier.parameters(), lr=3e-3)
    labels = np.array([0, 1, 0, 1])
    losses = []
    for _ in range(8):
        loss = mg.nn.functional.cross_entropy(classifier(ids), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("setting, fragment", [
    ({"norm_first": False}, "norm_first=False (GPT-2 is pre-norm)"),
    ({"positional": "sinusoidal"}, "positional='sinusoidal'"),
    ({"bias": False}, "bias=False"),
    ({"tie_weights": False}, "tie_weights=False"),
])
def test_export_refuses_what_gpt2_cannot_express(tmp_path, setting, fragment):
    model = GPT(_tiny_config(**setting))
    with pytest.raises(ValueError, match="cannot export as GPT-2") as e:
        model.save_pretrained(str(tmp_path / "out"))
    assert fragment in str(e.value)
    assert not (tmp_path / "out").exists()


def test_is_hf_gpt2_dir_and_reading_one_as_a_checkpoint(tmp_path):
    model = _model()
    hf = tmp_path / "hf"
    model.save_pretrained(str(hf))
    assert is_hf_gpt2_dir(hf)
    ckpt = read_checkpoint(str(hf))
    assert ckpt.tokenizer is None and ckpt.model_config == model.config
    _bpe_files(hf)
    tokenizer = read_checkpoint(str(hf)).tokenizer
    assert isinstance(tokenizer, TrainedTokenizer) and tokenizer.is_gpt2
    assert tokenizer.vocab_size == 261
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours" / "config.json").write_text('{"format": "minigrad_lm.checkpoint"}')
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    for path in (tmp_path / "ours", tmp_path / "bad", tmp_path / "missing", hf / "config.json"):
        assert not is_hf_gpt2_dir(path)


# --------------------------------------------------------------------------------------------
# Byte-level BPE on a handmade vocabulary
# --------------------------------------------------------------------------------------------

MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ã", "¼")]  # "Ã¼" is ü's two UTF-8 bytes


def _bpe_files(folder: Path) -> Path:
    """vocab.json + merges.txt as GPT-2 ships them: 256 byte tokens, merges, <|endoftext|>."""
    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for a, b in MERGES:
        vocab[a + b] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in MERGES), encoding="utf-8")
    return folder


def test_bpe_merges_and_round_trips_any_text(tmp_path):
    tok = read_gpt2_tokenizer(_bpe_files(tmp_path))
    vocab = tok.hf.get_vocab()
    assert tok.vocab_size == 261 and tok.eos_token_id == 260 and tok.is_gpt2
    assert tok.encode(" the").tolist() == [vocab["Ġthe"]]
    assert tok.encode("the").tolist() == [vocab["t"], vocab["he"]]
    assert tok.encode("ü").tolist() == [vocab["Ã¼"]]
    assert tok.encode("a<|endoftext|> the").tolist() == [vocab["a"], 260, vocab["Ġthe"]]
    for text in TEXTS:  # <|endoftext|> decodes as its text, not dropped as a special token
        ids = tok.encode(text)
        assert ids.dtype == np.int64 and tok.decode(ids) == text
    assert tok.decode(tok.encode("é")[:1]) == "\ufffd"  # half a character: replaced, no error
    with pytest.raises(ValueError, match="token id 261 is out of range"):
        tok.decode([0, 261])
    with pytest.raises(ValueError, match="position 1 is a lone surrogate"):
        tok.encode("a\ud800")
    with pytest.raises(ValueError, match="position 0 of text 1 is a lone surrogate"):
        tok.encode_batch(["a", "\udc80"])


def test_a_vocabulary_with_gaps_counts_up_to_its_largest_id():
    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = gpt2_tokenizer({**vocab, "<|endoftext|>": 999}, [], ["<|endoftext|>"])
    assert tok.vocab_size == 1000 and tok.eos_token_id == 999
    assert tok.encode("a<|endoftext|>").tolist() == [vocab["a"], 999]


def test_gpt2_tokenizer_files_round_trip(tmp_path):
    tok = read_gpt2_tokenizer(_bpe_files(tmp_path))
    again = TrainedTokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert again == tok and again.is_gpt2
    assert again.encode(TEXTS[2]).tolist() == tok.encode(TEXTS[2]).tolist()
    write_gpt2_tokenizer(tok, tmp_path / "saved")
    assert read_gpt2_tokenizer(tmp_path / "saved") == tok
    os.remove(tmp_path / "saved" / "tokenizer.json")  # vocab.json + merges.txt alone suffice
    assert read_gpt2_tokenizer(tmp_path / "saved") == tok


def _tokenizer_error(folder: Path, **files: str) -> str:
    folder.mkdir()
    for name, text in files.items():
        (folder / name.replace("_", ".")).write_text(text, encoding="utf-8")
    with pytest.raises(CheckpointError) as e:
        read_gpt2_tokenizer(folder)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_bpe_refuses_what_is_not_byte_level_naming_the_file(tmp_path):
    vocab = {ch: i for i, ch in enumerate(pre_tokenizers.ByteLevel.alphabet())}
    with pytest.raises(ValueError, match="256 byte tokens are missing"):
        gpt2_tokenizer({"a": 0}, [])
    with pytest.raises(ValueError, match="merge 0 .*'ab' is not in the vocabulary"):
        gpt2_tokenizer(vocab, [("a", "b")])
    with pytest.raises(ValueError, match=r"'x': 4294967296 is not token -> id in \[0, "):
        gpt2_tokenizer({**vocab, "x": 2**32}, [])
    with pytest.raises(ValueError, match=r"added tokens \['<\|endoftext\|>'\] are not in"):
        gpt2_tokenizer(vocab, [], ["<|endoftext|>"])
    assert "no GPT-2 tokenizer" in _tokenizer_error(tmp_path / "empty")
    word_piece = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]")).to_str()
    msg = _tokenizer_error(tmp_path / "wp", tokenizer_json=word_piece)
    assert msg.endswith("tokenizer.json: key 'model': expected an object whose 'type' is one "
                        "of 'WordLevel', 'BPE', got 'WordPiece'")
    msg = _tokenizer_error(tmp_path / "bad", tokenizer_json='{"model": {"type": "BPE"}}')
    assert "bad/tokenizer.json: key 'model': lacks 'vocab', 'merges'" in msg
    msg = _tokenizer_error(tmp_path / "old", tokenizer_json='{"type": "gpt2_bpe", "vocab": []}')
    assert "old/tokenizer.json: a GPT-2 BPE tokenizer dict looks like" in msg
    msg = _tokenizer_error(tmp_path / "pair", vocab_json=json.dumps(vocab),
                           merges_txt="#version: 0.2\na b c\n")
    assert msg.endswith("pair/merges.txt: merge 0 ('a b c') is not a pair of tokens")
    msg = _tokenizer_error(tmp_path / "ids", vocab_json='{"a": -1}', merges_txt="")
    assert msg.endswith("ids/vocab.json: vocabulary entry 'a': -1 is not token -> id in "
                        f"[0, {2**31 - 2}]")
    assert "vocab.json: expected a JSON object" in _tokenizer_error(
        tmp_path / "list", vocab_json="[]", merges_txt="")
    (tmp_path / "latin").mkdir()
    (tmp_path / "latin" / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "latin" / "merges.txt").write_bytes(b"#version: 0.2\n\xe9 t\n")
    with pytest.raises(CheckpointError, match=r"merges.txt: not UTF-8 \(bad byte at offset 14"):
        read_gpt2_tokenizer(tmp_path / "latin")


# --------------------------------------------------------------------------------------------
# python -m minigrad_lm.export
# --------------------------------------------------------------------------------------------


def _checkpoint(run: Path, model, task: str = "lm", tokenizer_dict=None) -> Path:
    config = model.config if task == "lm" else model.body.config
    files = checkpoint_files(
        model, task=task, model_config=config,
        tokenizer_dict=tokenizer_dict or ByteTokenizer().to_dict(),
        extras={} if task == "lm" else {"num_classes": model.num_classes,
                                        "pooling": model.pooling},
        optimizer=AdamW(decay_groups(model, 0.1)), state={"step": 0})
    save_checkpoint(str(run), files, best=True)
    return run


def test_export_cli_writes_a_loadable_folder_and_refuses_a_non_empty_one(tmp_path, capsys):
    model = _model(vocab_size=256)
    run = _checkpoint(tmp_path / "run", model)
    out = tmp_path / "hf"
    assert export.main(["--ckpt", str(run), "--to-hf", str(out)]) == 0
    captured = capsys.readouterr()
    assert "wrote" in captured.out and "byte tokenizer has no Hugging Face" in captured.err
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
    ids = np.arange(16)[None]
    np.testing.assert_array_equal(_logits(GPT.from_pretrained(out), ids), _logits(model, ids))

    before = snapshot(out)
    assert export.main(["--ckpt", str(run), "--to-hf", str(out)]) == 2
    assert "error: --to-hf" in capsys.readouterr().err and snapshot(out) == before
    (out / "tokenizer.json").write_text("{}")  # stale: it is not this model's tokenizer
    assert export.main(["--ckpt", str(run), "--to-hf", str(out), "--overwrite"]) == 0
    assert not (out / "tokenizer.json").exists()
    assert export.main(["--ckpt", str(run), "--to-hf", str(run / "best"), "--overwrite"]) == 2
    assert "which is being exported; choose another folder" in capsys.readouterr().err


def test_export_cli_refuses_post_norm_and_classifiers_before_writing(tmp_path, capsys):
    run = _checkpoint(tmp_path / "post", GPT(_tiny_config(vocab_size=256, norm_first=False)))
    assert export.main(["--ckpt", str(run), "--to-hf", str(tmp_path / "out")]) == 2
    assert "norm_first=False (GPT-2 is pre-norm)" in capsys.readouterr().err
    classifier = SequenceClassifier(GPT(_tiny_config(vocab_size=256)), 3)
    run = _checkpoint(tmp_path / "cls", classifier, task="classify")
    assert export.main(["--ckpt", str(run), "--to-hf", str(tmp_path / "out")]) == 2
    assert "a classify checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_export_cli_writes_a_gpt2_tokenizer_beside_the_model(tmp_path):
    tok = read_gpt2_tokenizer(_bpe_files(tmp_path / "tok"))
    run = _checkpoint(tmp_path / "run", _model(vocab_size=261), tokenizer_dict=tok.to_dict())
    out = tmp_path / "hf"
    assert export.main(["--ckpt", str(run), "--to-hf", str(out)]) == 0
    loaded_tok = read_gpt2_tokenizer(out)
    assert loaded_tok == tok
    assert json.loads((out / "config.json").read_text())["eos_token_id"] == 260


def test_export_cli_leaves_out_a_bpe_learned_here(tmp_path, capsys):
    """Its prefix space and [SEP] lines are not GPT-2's, so transformers would read it wrong."""
    tok = TrainedTokenizer.train("bpe", TEXTS, vocab_size=300)
    run = _checkpoint(tmp_path / "run", _model(vocab_size=tok.vocab_size),
                      tokenizer_dict=tok.to_dict())
    assert export.main(["--ckpt", str(run), "--to-hf", str(tmp_path / "hf")]) == 0
    assert "the checkpoint's bpe tokenizer has no Hugging Face" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path / "hf")) == ["config.json", "model.safetensors"]


def test_a_checkpoint_with_a_gpt2_bpe_tokenizer_of_the_first_format_loads_and_exports(tmp_path):
    """fixtures/gpt2_bpe_tokenizer.json is a GPT-2 tokenizer as checkpoints stored it at first
    ({"type": "gpt2_bpe", ...}, from a BPE trained on TEXTS); gpt2_bpe_ids.json holds what that
    code encoded varied texts to."""
    legacy = json.loads((FIXTURES / "gpt2_bpe_tokenizer.json").read_text(encoding="utf-8"))
    expected = json.loads((FIXTURES / "gpt2_bpe_ids.json").read_text(encoding="utf-8"))
    run = _checkpoint(tmp_path / "run", _model(vocab_size=expected["vocab_size"]),
                      tokenizer_dict=legacy)
    tok = read_checkpoint(str(run)).tokenizer
    assert (tok.vocab_size, tok.eos_token_id) == (expected["vocab_size"], 0)
    for text, ids in zip(expected["texts"], expected["ids"], strict=True):
        assert tok.encode(text).tolist() == ids, text
        assert tok.decode(ids) == text
    assert export.main(["--ckpt", str(run), "--to-hf", str(tmp_path / "hf")]) == 0
    exported = read_gpt2_tokenizer(tmp_path / "hf")
    for text, ids in zip(expected["texts"], expected["ids"]):
        assert exported.encode(text).tolist() == ids, text


# --------------------------------------------------------------------------------------------
# Parity with transformers and tokenizers (skipped when they are not installed)
# --------------------------------------------------------------------------------------------


def _transformers():
    """(torch, transformers), or skip the test when either is not installed."""
    return pytest.importorskip("torch"), pytest.importorskip("transformers")


def _hf_model(activation: str = "gelu_new"):
    torch, transformers = _transformers()
    torch.manual_seed(0)
    # A larger init than GPT-2's 0.02 makes the logits far from ties, so greedy paths agree.
    config = transformers.GPT2Config(
        n_layer=2, n_head=2, n_embd=32, vocab_size=100, n_positions=64, initializer_range=0.3,
        activation_function=activation, bos_token_id=None, eos_token_id=None)
    return transformers.GPT2LMHeadModel(config).eval()


@pytest.mark.parametrize("activation", ["gelu_new", "gelu_pytorch_tanh"])
def test_transformers_gpt2_loads_with_the_same_logits_and_greedy_tokens(tmp_path, activation):
    torch, _ = _transformers()
    hf = _hf_model(activation)
    hf.save_pretrained(tmp_path)
    model = GPT.from_pretrained(str(tmp_path))
    ids = np.random.default_rng(0).integers(0, 100, (2, 40))
    with torch.no_grad():
        expected = hf(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(_logits(model, ids), expected, atol=1e-4, rtol=0)
    prompt = ids[0, :6]
    ours = generate(model, prompt, 24, temperature=0)  # the KV-cache greedy loop
    with torch.no_grad():
        theirs = hf.generate(torch.tensor(prompt[None]), max_new_tokens=24, do_sample=False,
                             use_cache=True, pad_token_id=0)[0, len(prompt):].numpy()
    assert ours.tolist() == theirs.tolist()
    assert len(set(ours.tolist())) > 3  # a varied continuation, not one repeated token


@pytest.mark.parametrize("activation", ["gelu_tanh", "gelu"])
def test_an_exported_model_loads_in_transformers_with_the_same_logits(tmp_path, activation):
    torch, transformers = _transformers()
    model = _model(scale=5, vocab_size=100, context_length=32, d_model=32, n_head=4,
                   activation=activation)
    model.save_pretrained(str(tmp_path))
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ids = np.random.default_rng(2).integers(0, 100, (2, 32))
    with torch.no_grad():
        expected = hf(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(_logits(model, ids), expected, atol=1e-4, rtol=0)


def _trained_bpe(folder: Path):
    tokenizers = pytest.importorskip("tokenizers")
    trainer = tokenizers.ByteLevelBPETokenizer()
    trainer.train_from_iterator(TEXTS * 5, vocab_size=400, special_tokens=["<|endoftext|>"])
    folder.mkdir()
    trainer.save_model(str(folder))
    trainer.save(str(folder / "tokenizer.json"))
    return tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))


def test_vocab_and_merges_give_the_ids_of_the_tokenizers_library(tmp_path):
    reference = _trained_bpe(tmp_path / "tok")
    os.remove(tmp_path / "tok" / "tokenizer.json")
    from_txt = read_gpt2_tokenizer(tmp_path / "tok")
    rng = np.random.default_rng(0)
    pieces = list("".join(TEXTS)) + [" ", "  ", "\n", "'s", "'", "S"]
    fuzz = ["".join(rng.choice(pieces, size=int(rng.integers(0, 30)))) for _ in range(300)]
    for text in TEXTS + fuzz:
        expected = reference.encode(text).ids
        assert from_txt.encode(text).tolist() == expected, text
        assert from_txt.decode(expected) == text
    # What write_gpt2_tokenizer writes is read by tokenizers itself.
    write_gpt2_tokenizer(from_txt, tmp_path / "saved")
    again = Tokenizer.from_file(str(tmp_path / "saved" / "tokenizer.json"))
    assert again.encode(TEXTS[3]).ids == reference.encode(TEXTS[3]).ids


def test_an_exported_tokenizer_loads_in_transformers(tmp_path):
    _, transformers = _transformers()
    _trained_bpe(tmp_path / "tok")
    tok = read_gpt2_tokenizer(tmp_path / "tok")
    _model(vocab_size=tok.vocab_size).save_pretrained(tmp_path / "hf", tok.eos_token_id)
    write_gpt2_tokenizer(tok, tmp_path / "hf")
    fast = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    slow = transformers.GPT2Tokenizer.from_pretrained(tmp_path / "hf")  # vocab.json, merges.txt
    for text in TEXTS:
        for hf_tok in (fast, slow):
            assert hf_tok(text)["input_ids"] == tok.encode(text).tolist(), (hf_tok, text)
    assert fast.eos_token_id == slow.eos_token_id == tok.eos_token_id
    with pytest.raises(TypeError, match=r"got TrainedTokenizer\(kind='word'"):
        write_gpt2_tokenizer(TrainedTokenizer.train("word", TEXTS), tmp_path / "word")


def test_cli_commands_take_a_hugging_face_folder(tmp_path):
    """--init-from (lm and classify) and --ckpt (generate) accept a GPT-2 folder."""
    from minigrad_lm import generate
    from tests.cli_support import run_train, write_corpus

    tok = read_gpt2_tokenizer(_bpe_files(tmp_path / "tok"))
    hf_dir = tmp_path / "gpt2"
    _model(vocab_size=tok.vocab_size, context_length=16).save_pretrained(str(hf_dir))
    write_gpt2_tokenizer(tok, hf_dir)
    assert generate.main(["--ckpt", str(hf_dir), "--prompt", "the ü", "--max-new-tokens", "5",
                          "--seed", "0"]) == 0
    corpus = write_corpus(tmp_path, n_words=300)
    assert run_train("--init-from", hf_dir, "--data", corpus, "--out", tmp_path / "lm",
                     "--max-steps", "3", "--batch-size", "2", "--context", "16",
                     "--eval-every", "3", "--eval-batches", "1") == 0
    assert read_checkpoint(str(tmp_path / "lm")).tokenizer == tok  # a tokenizers document
    rows = "sentence\tlabel\n" + "".join(f"the {w}\t{i % 2}\n" for i, w in
                                        enumerate(["good", "bad"] * 10))
    (tmp_path / "train.tsv").write_text(rows, encoding="utf-8")
    assert run_train("--task", "classify", "--init-from", hf_dir, "--data",
                     tmp_path / "train.tsv", "--val-data", tmp_path / "train.tsv",
                     "--out", tmp_path / "clf", "--max-steps", "3", "--batch-size", "4",
                     "--eval-every", "3") == 0
