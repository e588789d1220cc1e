"""LoRA adapters in the PEFT layout: round trips, refusals, and (with peft installed) the same
logits in transformers + peft as here."""
import json
import os

import numpy as np
import pytest

import minigrad_lm as mg
from minigrad_lm.io.files import CheckpointError, load_safetensors
from minigrad_lm.models import GPT, GPTConfig, SequenceClassifier
from minigrad_lm.models.adapters import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    LoraSpec,
    apply_spec,
    load_adapter,
    parse_targets,
    read_adapter_spec,
    save_adapter,
)
from minigrad_lm.nn.lora import lora_layers

CFG = GPTConfig(vocab_size=13, context_length=8, n_layer=2, n_head=2, d_model=16)
IDS = np.random.default_rng(0).integers(0, 13, (2, 8))
SPEC = LoraSpec(rank=4, alpha=8.0, targets=("qkv", "out", "fc", "proj"))


def _trained(model, seed=3):
    """Adapters (and a classifier head) with non-zero values, as after training."""
    r = np.random.default_rng(seed)
    for m in lora_layers(model).values():
        m.lora_B.data[...] = r.standard_normal(m.lora_B.shape) * 0.2
    if isinstance(model, SequenceClassifier):
        model.classifier.bias.data[...] = r.standard_normal(model.classifier.bias.shape)
    return model


def _gpt(seed=0):
    mg.manual_seed(seed)
    return GPT(CFG).eval()


def test_files_have_the_peft_names_and_shapes(tmp_path):
    model = _trained(_gpt())
    apply_spec(model, SPEC)
    save_adapter(model, SPEC, str(tmp_path), base_model="gpt2")
    config = json.loads((tmp_path / ADAPTER_CONFIG).read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8
    assert config["target_modules"] == ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]
    tensors, _ = load_safetensors(str(tmp_path / ADAPTER_WEIGHTS))
    assert len(tensors) == 2 * 4 * CFG.n_layer
    assert tensors["base_model.model.transformer.h.1.attn.c_attn.lora_A.weight"].shape == (4, 16)
    assert tensors["base_model.model.transformer.h.1.attn.c_attn.lora_B.weight"].shape == (48, 4)
    assert tensors["base_model.model.transformer.h.0.mlp.c_proj.lora_A.weight"].shape == (4, 64)


@pytest.mark.parametrize("task", ["lm", "classify"])
def test_saved_adapters_load_onto_the_base_and_give_the_same_logits(device, tmp_path, task):
    def make():
        body = _gpt()
        return body if task == "lm" else SequenceClassifier(body, 3).eval()
    model = make()
    apply_spec(model, SPEC)
    _trained(model).to(device)
    save_adapter(model, SPEC, str(tmp_path))
    fresh = make().to(device)
    assert not np.allclose(fresh(IDS).numpy(), model(IDS).numpy())
    assert load_adapter(fresh, str(tmp_path)) == SPEC
    assert all(p.device == device for p in fresh.parameters())
    tol = 0 if device == "cpu" else 1e-6  # a GPU's GEMMs may round equal products differently
    np.testing.assert_allclose(fresh(IDS).numpy(), model(IDS).numpy(), rtol=tol, atol=tol)


def test_refuses_adapters_that_do_not_fit(tmp_path):
    model = _gpt()
    apply_spec(model, LoraSpec(2, 4.0, ("qkv",)))
    save_adapter(model, LoraSpec(2, 4.0, ("qkv",)), str(tmp_path))
    deeper = GPT(GPTConfig(vocab_size=13, context_length=8, n_layer=3, n_head=2, d_model=16))
    with pytest.raises(CheckpointError, match=r"does not fit this model \(3 layers.*missing"):
        load_adapter(deeper, str(tmp_path))
    assert not lora_layers(deeper)  # nothing changed
    wider = GPT(GPTConfig(vocab_size=13, context_length=8, n_layer=2, n_head=2, d_model=32))
    with pytest.raises(CheckpointError, match=r"lora_A.weight has shape \(2, 16\), expected "
                                              r"\(2, 32\)"):
        load_adapter(wider, str(tmp_path))
    config = json.loads((tmp_path / ADAPTER_CONFIG).read_text())
    for change, match in (({"peft_type": "IA3"}, "not a LoRA adapter"),
                          ({"r": 0}, "'r' must be an integer"),
                          ({"target_modules": ["q_proj"]}, "'q_proj' is not one of GPT-2's"),
                          ({"use_dora": True}, "use_dora=True is not supported")):
        (tmp_path / ADAPTER_CONFIG).write_text(json.dumps({**config, **change}))
        with pytest.raises(CheckpointError, match=match):
            read_adapter_spec(str(tmp_path))


def test_bare_c_proj_means_both_projections(tmp_path):
    (tmp_path / ADAPTER_CONFIG).write_text(json.dumps(
        {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["c_attn", "c_proj"]}))
    assert read_adapter_spec(str(tmp_path)).targets == ("qkv", "out", "proj")


def test_target_names_are_checked():
    assert parse_targets("qkv, fc") == ("qkv", "fc")
    for bad in ("", "qkv,qkv", "c_attn"):
        with pytest.raises(ValueError, match="give distinct names among qkv, out, fc, proj"):
            parse_targets(bad)


def test_exported_lora_gpt2_gives_the_same_logits_in_transformers_and_peft(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    model = _gpt()
    base_dir, adapter_dir = str(tmp_path / "base"), str(tmp_path / "adapter")
    model.save_pretrained(base_dir)
    apply_spec(model, SPEC)
    _trained(model)
    save_adapter(model, SPEC, adapter_dir, base_model=base_dir)
    hf = transformers.GPT2LMHeadModel.from_pretrained(base_dir)
    hf = peft.PeftModel.from_pretrained(hf, adapter_dir).eval()
    with torch.no_grad():
        theirs = hf(torch.tensor(IDS)).logits.numpy()
    np.testing.assert_allclose(model(IDS).numpy(), theirs, atol=1e-5)
    merged = hf.merge_and_unload()
    with torch.no_grad():
        np.testing.assert_allclose(merged(torch.tensor(IDS)).logits.numpy(), theirs, atol=1e-5)
    assert os.path.isfile(os.path.join(adapter_dir, ADAPTER_WEIGHTS))
