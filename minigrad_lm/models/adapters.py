"""LoRA adapters on disk in the Hugging Face PEFT layout, so a PEFT user recognizes them:

    adapter_config.json         {"peft_type": "LORA", "r": 8, "lora_alpha": 16,
                                 "target_modules": ["attn.c_attn"], ...}
    adapter_model.safetensors   base_model.model.transformer.h.0.attn.c_attn.lora_A.weight (r, in)
                                base_model.model.transformer.h.0.attn.c_attn.lora_B.weight (out, r)

Module names are GPT-2's (transformers' GPT2LMHeadModel), so an adapter trained here loads with
``PeftModel.from_pretrained`` onto the exported base model, and one trained with PEFT on GPT-2
loads here. A classifier's head (ours, not GPT-2's) is saved as PEFT saves ``modules_to_save``:
``base_model.model.classifier.weight`` / ``.bias``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from ..io.files import (
    CheckpointError,
    atomic_write_bytes,
    json_text,
    load_safetensors,
    read_json,
    safetensors_bytes,
)
from ..nn import Module
from ..nn.lora import add_lora, lora_layers
from . import GPT

__all__ = ["ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "LoraSpec", "adapter_files", "apply_spec",
           "check_spec", "load_adapter", "parse_targets", "read_adapter_spec", "save_adapter"]

ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
_PREFIX = "base_model.model."
# our Linear attribute (the --lora-targets name) -> GPT-2 module inside block i, and ours
_HF = {"qkv": "attn.c_attn", "out": "attn.c_proj", "fc": "mlp.c_fc", "proj": "mlp.c_proj"}
_OURS = {"qkv": "attn.qkv", "out": "attn.out", "fc": "ff.fc", "proj": "ff.proj"}
_KEY = re.compile(r"base_model\.model\.transformer\.h\.(\d+)\.(attn\.c_attn|attn\.c_proj|"
                  r"mlp\.c_fc|mlp\.c_proj)\.lora_([AB])\.weight")


@dataclass(frozen=True)
class LoraSpec:
    """What an adapter is: rank, alpha and the adapted Linear layers (our attribute names)."""

    rank: int
    alpha: float
    targets: tuple[str, ...]


def parse_targets(text: str) -> tuple[str, ...]:
    """"qkv,fc" -> ("qkv", "fc"), every name one of the GPT's Linear layers."""
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [t for t in names if t not in _HF]
    if not names or bad or len(set(names)) != len(names):
        raise ValueError(f"--lora-targets {text!r}: give distinct names among "
                         f"{', '.join(_HF)} separated by commas (qkv: the packed query/key/value "
                         "projection, out: attention output, fc and proj: the feed-forward "
                         "layers)")
    return names


def _gpt(model: Module) -> GPT:
    """The GPT that takes the adapters: the model itself, or the ``body`` of a head on one."""
    return model if isinstance(model, GPT) else model.body


def _head(model: Module) -> dict[str, str]:
    """PEFT name -> our name of the parameters of a model's own head (``peft_head``: saved as
    PEFT's ``modules_to_save``)."""
    if model.peft_head is None:
        return {}
    names = (f"{model.peft_head}.{n}" for n in ("weight", "bias"))
    return {_PREFIX + name: name for name in names}


def _target(gpt: GPT, i: int, target: str):
    """Layer ``i``'s Linear that the --lora-targets name ``target`` adapts."""
    module, attribute = _OURS[target].split(".")
    return getattr(getattr(gpt.layers[i], module), attribute)


def check_spec(model: Module, spec: LoraSpec, source: str) -> None:
    """Refuse a rank above a target layer's smaller side (more weights than the layer itself;
    a hostile one allocates gigabytes), naming ``source`` (a flag, adapter_config.json)."""
    gpt = _gpt(model)
    for t in spec.targets:
        layer = _target(gpt, 0, t)
        most = min(layer.in_features, layer.out_features)
        if spec.rank > most:
            raise CheckpointError(f"{source}: rank {spec.rank} does not fit layer {t} "
                                  f"({layer.in_features} -> {layer.out_features}): at most "
                                  f"{most}")


def apply_spec(model: Module, spec: LoraSpec, source: str = "LoRA") -> None:
    """Give the GPT (or a classifier's GPT body) fresh adapters as `spec` says, after
    :func:`check_spec`; the body's other weights are frozen, a classifier's head stays
    trainable."""
    check_spec(model, spec, source)
    add_lora(_gpt(model), spec.targets, spec.rank, spec.alpha)


def adapter_files(model: Module, spec: LoraSpec, base_model: str | None = None) -> dict:
    """The two PEFT files (name -> bytes) holding `model`'s adapters (and classifier head)."""
    tensors = {}
    for name, layer in lora_layers(_gpt(model)).items():
        _, i, path = name.split(".", 2)  # layers.<i>.attn.qkv
        hf = f"{_PREFIX}transformer.h.{i}.{_HF[path.rsplit('.', 1)[-1]]}"
        tensors[f"{hf}.lora_A.weight"] = layer.lora_A.numpy().copy()
        tensors[f"{hf}.lora_B.weight"] = layer.lora_B.numpy().copy()
    params = dict(model.named_parameters())
    tensors.update({peft: params[ours].numpy().copy() for peft, ours in _head(model).items()})
    config = {
        "peft_type": "LORA",
        "task_type": model.peft_task_type,
        "base_model_name_or_path": base_model,
        "r": spec.rank,
        "lora_alpha": spec.alpha,
        "lora_dropout": 0.0,
        "target_modules": [_HF[t] for t in spec.targets],
        "fan_in_fan_out": True,  # GPT-2's Conv1D layers store weights transposed
        "bias": "none",
        "modules_to_save": None if model.peft_head is None else [model.peft_head],
        "init_lora_weights": True,
        "inference_mode": True,
        "use_rslora": False,
        "use_dora": False,
    }
    return {ADAPTER_WEIGHTS: safetensors_bytes(tensors, {"format": "pt"}),
            ADAPTER_CONFIG: (json_text(config) + "\n").encode()}


def save_adapter(model: Module, spec: LoraSpec, folder: str, base_model: str | None = None):
    """Write the adapter files into `folder` (each atomically)."""
    os.makedirs(folder, exist_ok=True)
    for name, data in adapter_files(model, spec, base_model).items():
        atomic_write_bytes(os.path.join(folder, name), data)


def read_adapter_spec(folder: str) -> LoraSpec:
    """The LoraSpec of `folder`/adapter_config.json, refusing what we do not implement."""
    path = os.path.join(folder, ADAPTER_CONFIG)
    config = read_json(path)
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise CheckpointError(f"{path}: not a LoRA adapter config (peft_type must be 'LORA')")
    r, alpha, targets = config.get("r"), config.get("lora_alpha"), config.get("target_modules")
    if not isinstance(r, int) or isinstance(r, bool) or not 1 <= r <= 65536:
        raise CheckpointError(f"{path}: 'r' must be an integer in [1, 65536], got {r!r}")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0 < alpha < 1e9:
        raise CheckpointError(f"{path}: 'lora_alpha' must be a positive number, got {alpha!r}")
    if isinstance(targets, str):
        targets = [targets]
    if not isinstance(targets, list) or not targets or not all(
            isinstance(t, str) for t in targets):
        raise CheckpointError(f"{path}: 'target_modules' must be a list of module names")
    ours = []
    for t in targets:  # PEFT matches names by suffix: "c_proj" is both attn and mlp c_proj
        hits = [k for k, hf in _HF.items() if hf == t or hf.endswith("." + t)]
        if not hits:
            raise CheckpointError(f"{path}: target module {t!r} is not one of GPT-2's "
                                  f"{', '.join(_HF.values())}")
        ours += [k for k in hits if k not in ours]
    for key, allowed in (("bias", ("none", None)), ("use_dora", (False, None)),
                         ("use_rslora", (False, None)), ("rank_pattern", ({}, None)),
                         ("alpha_pattern", ({}, None)), ("layers_to_transform", (None,))):
        if config.get(key) not in allowed:
            raise CheckpointError(f"{path}: {key}={config.get(key)!r} is not supported")
    return LoraSpec(r, float(alpha), tuple(ours))


def load_adapter(model: Module, folder: str) -> LoraSpec:
    """Add the adapters saved in `folder` (PEFT layout) to `model`, a GPT or classifier whose
    base weights are already loaded (a checkpoint of ours or a GPT-2 folder); returns the
    spec. Names and shapes are checked before anything changes."""
    spec = read_adapter_spec(folder)
    path = os.path.join(folder, ADAPTER_WEIGHTS)
    gpt = _gpt(model)
    check_spec(model, spec, os.path.join(folder, ADAPTER_CONFIG))
    tensors, _ = load_safetensors(path)
    want = {}
    for i in range(gpt.config.n_layer):
        for t in spec.targets:
            lin = _target(gpt, i, t)
            hf = f"{_PREFIX}transformer.h.{i}.{_HF[t]}"
            want[f"{hf}.lora_A.weight"] = (f"layers.{i}.{_OURS[t]}.lora_A",
                                           (spec.rank, lin.in_features))
            want[f"{hf}.lora_B.weight"] = (f"layers.{i}.{_OURS[t]}.lora_B",
                                           (lin.out_features, spec.rank))
    head = _head(model)
    stray = sorted(set(tensors) - set(want) - set(head))
    missing = sorted(set(want) - set(tensors))
    if stray or missing:
        raise CheckpointError(f"{path}: does not fit this model ({gpt.config.n_layer} layers, "
                              f"targets {', '.join(spec.targets)}): missing {missing[:4]}, "
                              f"unexpected {stray[:4]}")
    for key, (_, shape) in want.items():
        if tensors[key].shape != shape:
            raise CheckpointError(f"{path}: {key} has shape {tensors[key].shape}, expected "
                                  f"{shape}")
    apply_spec(model, spec, os.path.join(folder, ADAPTER_CONFIG))
    state = {ours: tensors[key].astype(np.float32) for key, (ours, _) in want.items()}
    state.update({ours: tensors[key].astype(np.float32) for key, ours in head.items()
                  if key in tensors})
    try:
        model.load_state_dict({f"body.{k}" if head and k.startswith("layers.") else k: v
                               for k, v in state.items()}, strict=False)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return spec
