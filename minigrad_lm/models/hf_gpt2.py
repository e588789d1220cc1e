"""GPT-2 checkpoints in the Hugging Face layout: read them into a GPT, write a GPT as one.

A Hugging Face GPT-2 folder holds ``config.json`` (``model_type: "gpt2"``) and
``model.safetensors`` (or shards listed in ``model.safetensors.index.json``). Its names map
onto ours one to one; the only change of layout is that GPT-2's attention and MLP projections
are ``Conv1D`` modules whose weight is (in, out), the transpose of a Linear's (out, in). The LM
head is tied to the token embedding in both. Everything is read from local files: nothing is
ever downloaded, and pickles (``pytorch_model.bin``) are never loaded.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from ..backend import memory
from ..io.files import (
    CheckpointError,
    atomic_write_json,
    load_safetensors,
    read_json,
    save_safetensors,
)
from ..io.untrusted import Bool, Int, MapOf, Num, Object, Optional, Str, check, short
from .config import GPTConfig

__all__ = ["config_from_hf", "config_to_hf", "from_hf_tensors", "is_hf_gpt2_dir",
           "read_gpt2_state", "save_gpt2", "to_hf_tensors"]

# Hugging Face activation_function -> ours. GPT-2 runs ACT2FN[activation_function], so exact
# GELU and ReLU GPT-2s are as valid as the original tanh-GELU one.
HF_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu",
                  "relu": "relu"}
EXPORT_ACTIVATIONS = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}

# GPT2Config's defaults, used for keys a config.json leaves out (as transformers does).
HF_DEFAULTS: dict[str, Any] = {
    "vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12,
    "n_inner": None, "activation_function": "gelu_new", "resid_pdrop": 0.1, "embd_pdrop": 0.1,
    "attn_pdrop": 0.1, "layer_norm_epsilon": 1e-5, "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
    "add_cross_attention": False, "tie_word_embeddings": True,
}

# What the keys we read must hold; the many other keys of a transformers config pass unread.
_SIZE = Int(1, 2**31 - 1)
HF_CONFIG_SPEC = Object({
    "model_type": Str(), "vocab_size": _SIZE, "n_positions": _SIZE, "n_embd": _SIZE,
    "n_layer": _SIZE, "n_head": _SIZE, "n_inner": Optional(_SIZE),
    "activation_function": Str(), "resid_pdrop": Num(0.0, 1.0), "embd_pdrop": Num(0.0, 1.0),
    "attn_pdrop": Num(0.0, 1.0), "layer_norm_epsilon": Num(above=0.0),
    "scale_attn_weights": Bool(), "scale_attn_by_inverse_layer_idx": Bool(),
    "reorder_and_upcast_attn": Bool(), "add_cross_attention": Bool(),
    "tie_word_embeddings": Bool(),
}, extra=True)
INDEX_SPEC = Object({"weight_map": MapOf(Str(), what="an object of tensor name -> shard file")},
                    required=("weight_map",), extra=True)

# (GPT-2 name inside block i, our name inside layer i, stored transposed as a Conv1D weight)
_LAYER_TENSORS = (
    ("ln_1.weight", "norm1.weight", False),
    ("ln_1.bias", "norm1.bias", False),
    ("attn.c_attn.weight", "attn.qkv.weight", True),
    ("attn.c_attn.bias", "attn.qkv.bias", False),
    ("attn.c_proj.weight", "attn.out.weight", True),
    ("attn.c_proj.bias", "attn.out.bias", False),
    ("ln_2.weight", "norm2.weight", False),
    ("ln_2.bias", "norm2.bias", False),
    ("mlp.c_fc.weight", "ff.fc.weight", True),
    ("mlp.c_fc.bias", "ff.fc.bias", False),
    ("mlp.c_proj.weight", "ff.proj.weight", True),
    ("mlp.c_proj.bias", "ff.proj.bias", False),
)
_GLOBAL_TENSORS = (
    ("wte.weight", "tok_emb.weight"),
    ("wpe.weight", "pos_emb.embedding.weight"),
    ("ln_f.weight", "ln_f.weight"),
    ("ln_f.bias", "ln_f.bias"),
)
# The causal-mask buffers older transformers versions saved with the weights.
_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")
# What to remove from a folder that an export replaces, so no stale tokenizer is left behind.
HF_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                      "special_tokens_map.json", "added_tokens.json")


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


def config_from_hf(hf: dict[str, Any], dropout: float | None = None,
                   source: str = "config.json") -> GPTConfig:
    """Our GPTConfig for a GPT-2 ``config.json``; every setting we cannot run is named.

    ``dropout`` overrides the config's ``resid_pdrop`` (our one dropout rate serves GPT-2's
    three, which are all 0.1 in the released models).
    """
    if not isinstance(hf, dict):
        raise CheckpointError(f"{source}: expected a JSON object")
    if hf.get("model_type") != "gpt2":
        raise CheckpointError(f"{source}: model_type {hf.get('model_type')!r} is not 'gpt2'")
    c = check({**HF_DEFAULTS, **hf}, HF_CONFIG_SPEC, source)
    problems = []
    if c["activation_function"] not in HF_ACTIVATIONS:
        problems.append(f"activation_function={c['activation_function']!r} (supported: "
                        f"{', '.join(HF_ACTIVATIONS)})")
    if not c["scale_attn_weights"]:
        problems.append("scale_attn_weights=false (attention here is scaled by 1/sqrt(d))")
    if c["scale_attn_by_inverse_layer_idx"]:
        problems.append("scale_attn_by_inverse_layer_idx=true")
    if c["reorder_and_upcast_attn"]:
        problems.append("reorder_and_upcast_attn=true")
    if c["add_cross_attention"]:
        problems.append("add_cross_attention=true (a decoder of an encoder-decoder model)")
    n_embd = c["n_embd"]
    if c["n_inner"] is not None and c["n_inner"] != 4 * n_embd:
        problems.append(f"n_inner={c['n_inner']} (the MLP width here is 4*n_embd="
                        f"{4 * n_embd if isinstance(n_embd, int) else '?'})")
    if problems:
        raise CheckpointError(f"{source}: unsupported GPT-2 config: " + "; ".join(problems))
    try:
        return GPTConfig(
            vocab_size=c["vocab_size"], context_length=c["n_positions"], n_layer=c["n_layer"],
            n_head=c["n_head"], d_model=n_embd,
            dropout=float(c["resid_pdrop"] if dropout is None else dropout),
            bias=True, norm_first=True, positional="learned", tie_weights=True,
            activation=HF_ACTIVATIONS[c["activation_function"]],
            layer_norm_eps=float(c["layer_norm_epsilon"]))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: {e}") from None


def config_to_hf(config: GPTConfig, eos_token_id: int | None = None) -> dict[str, Any]:
    """The ``config.json`` of ``config`` as GPT-2, or a ValueError naming every setting that
    GPT-2 cannot express. ``eos_token_id`` (e.g. ``<|endoftext|>``) also becomes the BOS id."""
    problems = []
    if not config.norm_first:
        problems.append("norm_first=False (GPT-2 is pre-norm)")
    if config.positional != "learned":
        problems.append(f"positional={config.positional!r} (GPT-2 learns its positions)")
    if not config.bias:
        problems.append("bias=False (GPT-2's linear layers and LayerNorms have biases)")
    if not config.tie_weights:
        problems.append("tie_weights=False (GPT-2's LM head is the token embedding)")
    if config.activation not in EXPORT_ACTIVATIONS:
        problems.append(f"activation={config.activation!r}")
    if not config.causal:
        problems.append("causal=False (GPT-2 attends to earlier tokens only)")
    if problems:
        raise ValueError("cannot export as GPT-2: " + "; ".join(problems))
    return {
        **HF_DEFAULTS,
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": config.vocab_size, "n_positions": config.context_length,
        "n_embd": config.d_model, "n_layer": config.n_layer, "n_head": config.n_head,
        "activation_function": EXPORT_ACTIVATIONS[config.activation],
        "resid_pdrop": config.dropout, "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout, "layer_norm_epsilon": config.layer_norm_eps,
        "bos_token_id": eos_token_id, "eos_token_id": eos_token_id,
        "initializer_range": 0.02, "use_cache": True, "summary_type": "cls_index",
        "summary_use_proj": True, "summary_activation": None, "summary_proj_to_labels": True,
        "summary_first_dropout": 0.1,
    }


# --------------------------------------------------------------------------------------------
# Tensors
# --------------------------------------------------------------------------------------------


def _name_pairs(config: GPTConfig) -> list[tuple[str, str, bool]]:
    pairs = [(hf, ours, False) for hf, ours in _GLOBAL_TENSORS]
    for i in range(config.n_layer):
        pairs += [(f"h.{i}.{hf}", f"layers.{i}.{ours}", t) for hf, ours, t in _LAYER_TENSORS]
    return pairs


def _strip_prefix(tensors: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """GPT2LMHeadModel saves ``transformer.wte.weight``, GPT2Model ``wte.weight``: accept both."""
    out: dict[str, np.ndarray] = {}
    for name, value in tensors.items():
        short = name.removeprefix("transformer.")
        if short in out:
            raise CheckpointError(f"{source}: tensor {short!r} is stored twice (with and "
                                  "without the 'transformer.' prefix)")
        out[short] = value
    return out


def from_hf_tensors(tensors: dict[str, np.ndarray], config: GPTConfig,
                    source: str = "model.safetensors") -> dict[str, np.ndarray]:
    """Our float32 state dict from GPT-2's tensors (either naming), Conv1D weights transposed.

    Missing, unexpected and misshapen tensors are named in GPT-2's terms; mask buffers are
    ignored; an untied ``lm_head.weight`` is accepted only when it equals ``wte.weight``.
    """
    hf = _strip_prefix(tensors, source)
    lm_head = hf.pop("lm_head.weight", None)
    pairs = _name_pairs(config)
    expected = {name for name, _, _ in pairs}
    missing = [name for name, _, _ in pairs if name not in hf]
    unexpected = sorted(n for n in hf if n not in expected and not _BUFFER.fullmatch(n))
    if missing or unexpected:
        what = []
        if missing:
            what.append(f"missing tensors {_few(missing)}")
        if unexpected:
            what.append(f"unexpected tensors {_few(unexpected)}")
        raise CheckpointError(f"{source}: does not match config.json ({config.n_layer} layers): "
                              + "; ".join(what))
    shapes = _our_shapes(config)
    state: dict[str, np.ndarray] = {}
    for name, ours, transposed in pairs:
        value = hf[name]
        if value.dtype.kind != "f":
            raise CheckpointError(f"{source}: tensor {name!r} has dtype {value.dtype}, expected "
                                  "floating point")
        want = shapes[ours][::-1] if transposed else shapes[ours]
        if value.shape != want:
            raise CheckpointError(f"{source}: tensor {name!r} has shape {value.shape}, "
                                  f"config.json implies {want}")
        value = value.astype(np.float32, copy=False)
        state[ours] = np.ascontiguousarray(value.T) if transposed else value
    if lm_head is not None and not (lm_head.shape == state["tok_emb.weight"].shape and
                                    np.array_equal(lm_head.astype(np.float32, copy=False),
                                                   state["tok_emb.weight"])):
        raise CheckpointError(f"{source}: lm_head.weight differs from wte.weight; untied output "
                              "heads are not supported (the LM head here is the token embedding)")
    return state


def to_hf_tensors(state: dict[str, np.ndarray], config: GPTConfig) -> dict[str, np.ndarray]:
    """GPT2LMHeadModel's tensors (``transformer.``-prefixed; the tied head not stored)."""
    return {f"transformer.{hf}": np.ascontiguousarray(state[ours].T) if transposed
            else state[ours] for hf, ours, transposed in _name_pairs(config)}


def _our_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    c, v, p = config.d_model, config.vocab_size, config.context_length
    shapes = {"tok_emb.weight": (v, c), "pos_emb.embedding.weight": (p, c), "ln_f.weight": (c,),
              "ln_f.bias": (c,)}
    layer = {"norm1.weight": (c,), "norm1.bias": (c,), "attn.qkv.weight": (3 * c, c),
             "attn.qkv.bias": (3 * c,), "attn.out.weight": (c, c), "attn.out.bias": (c,),
             "norm2.weight": (c,), "norm2.bias": (c,), "ff.fc.weight": (4 * c, c),
             "ff.fc.bias": (4 * c,), "ff.proj.weight": (c, 4 * c), "ff.proj.bias": (c,)}
    for i in range(config.n_layer):
        shapes.update({f"layers.{i}.{k}": s for k, s in layer.items()})
    return shapes


def _few(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# --------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------


def _read_weights(folder: str) -> tuple[dict[str, np.ndarray], str]:
    single = os.path.join(folder, "model.safetensors")
    if os.path.isfile(single):
        return load_safetensors(single, mmap=True)[0], single
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        weight_map = read_json(index, INDEX_SPEC)["weight_map"]
        tensors: dict[str, np.ndarray] = {}
        for shard in sorted(set(weight_map.values())):
            if os.path.basename(shard) != shard or shard in ("", ".", ".."):
                raise CheckpointError(f"{index}: shard {short(shard)} is not a file name")
            tensors.update(load_safetensors(os.path.join(folder, shard), mmap=True)[0])
        return tensors, index
    pickles = [f for f in ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack")
               if os.path.isfile(os.path.join(folder, f))]
    hint = (f" (it has {', '.join(pickles)}, which is never loaded: convert it with "
            "transformers' save_pretrained, which writes safetensors)") if pickles else ""
    raise CheckpointError(f"{folder}: no model.safetensors{hint}")


def read_gpt2_state(path: str | os.PathLike[str], dropout: float | None = None
                    ) -> tuple[GPTConfig, dict[str, np.ndarray]]:
    """``(config, state dict in our names)`` of a local Hugging Face GPT-2 folder, checked
    against each other; e.g. to load the weights into a classifier's ``body``.

    ``dropout`` overrides the config's rate (``resid_pdrop``). F16/BF16 weights become float32.
    """
    folder = os.fspath(path)
    if not os.path.isdir(folder):
        raise CheckpointError(f"{folder}: not a folder (expected a Hugging Face GPT-2 folder "
                              "with config.json and model.safetensors)")
    config_path = os.path.join(folder, "config.json")
    config = config_from_hf(read_json(config_path), dropout, config_path)
    nbytes, detail = memory.inference_bytes(config)
    memory.require(nbytes, detail, f"{config_path}: GPT-2 with n_embd {config.d_model}, "
                   f"{config.n_layer} layers, vocabulary {config.vocab_size}")
    tensors, source = _read_weights(folder)
    return config, from_hf_tensors(tensors, config, source)


def save_gpt2(config: GPTConfig, state: dict[str, np.ndarray], path: str | os.PathLike[str],
              eos_token_id: int | None = None) -> None:
    """Write a GPT's config and weights as a Hugging Face GPT-2 folder (``config.json`` +
    ``model.safetensors``); settings GPT-2 cannot express raise a ValueError before anything
    is written. The tokenizer, if any, is the caller's to write beside it."""
    hf_config = config_to_hf(config, eos_token_id)
    folder = os.fspath(path)
    os.makedirs(folder, exist_ok=True)
    save_safetensors(os.path.join(folder, "model.safetensors"), to_hf_tensors(state, config),
                     {"format": "pt"})
    atomic_write_json(os.path.join(folder, "config.json"), hf_config)


def is_hf_gpt2_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder whose ``config.json`` says ``model_type: "gpt2"`` (a
    minigrad_lm checkpoint folder is not one); never raises."""
    try:
        config = read_json(os.path.join(path, "config.json"))
    except (OSError, ValueError, TypeError):
        return False
    return isinstance(config, dict) and config.get("model_type") == "gpt2"
