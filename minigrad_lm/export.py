"""Export a language model trained here as a Hugging Face GPT-2 folder.

    python -m minigrad_lm.export --ckpt runs/default --to-hf exported/
    python -c "import transformers as t; t.GPT2LMHeadModel.from_pretrained('exported')"

--ckpt takes a run folder (its best/ checkpoint, else latest/) or a checkpoint folder. OUT gets
config.json and model.safetensors as transformers saves them, plus the tokenizer files when the
model was trained with a GPT-2 BPE tokenizer; a char or byte tokenizer has no Hugging Face
GPT-2 form, so only the model is written and a note says so. A model GPT-2 cannot express
(post-norm, sinusoidal positions, no biases, untied head) is refused, naming the setting.
A non-empty OUT is refused unless --overwrite; nothing is written before every check passed.

LoRA: a checkpoint of a --lora-rank run (or --adapter DIR, a PEFT adapter folder loaded onto
--ckpt, which may be a base checkpoint or a GPT-2 folder) is written as the base model plus
adapter_model.safetensors + adapter_config.json, which transformers + peft load
(PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(OUT), OUT)); --merge-lora writes
one plain GPT-2 with the adapters folded into its weights instead.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from .cli import report_errors
from .data.trained_tokenizer import write_gpt2_tokenizer
from .io.files import atomic_write_bytes
from .models.adapters import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    adapter_files,
    apply_spec,
    load_adapter,
)
from .models.hf_gpt2 import HF_TOKENIZER_FILES, config_to_hf, save_gpt2
from .nn.lora import remove_lora
from .checkpoints.folder import BEST, CHECKSUMS, LATEST, read_checkpoint
from .checkpoints.metrics import METRICS

__all__ = ["main"]

# Written by transformers but not by us: a stale one would carry another model's token ids.
_STALE_FILES = (*HF_TOKENIZER_FILES, "generation_config.json")
# Every file an export writes or removes in OUT.
_WRITTEN = ("config.json", "model.safetensors", *_STALE_FILES, ADAPTER_CONFIG, ADAPTER_WEIGHTS)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m minigrad_lm.export",
                                description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", required=True, metavar="DIR",
                   help="run folder (uses best/, else latest/) or checkpoint folder")
    p.add_argument("--to-hf", required=True, metavar="OUT",
                   help="folder to write the Hugging Face GPT-2 model into")
    p.add_argument("--adapter", metavar="DIR",
                   help="LoRA adapter folder (adapter_config.json + adapter_model.safetensors) "
                   "to load onto --ckpt")
    p.add_argument("--merge-lora", action="store_true",
                   help="fold the LoRA adapters into the weights: one plain GPT-2, no adapter "
                   "files")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty OUT, replacing the model and tokenizer files")
    return p


def _same_folder(a: str, b: str) -> bool:
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def _checkpoint_in(folder: str) -> str | None:
    """The checkpoint ``folder`` is or holds as a run folder (its latest/ or best/), else None."""
    for sub in ("", LATEST, BEST, f"{LATEST}.old", f"{BEST}.old"):
        if os.path.isfile(os.path.join(folder, sub, CHECKSUMS)):
            return os.path.join(folder, sub)
    return None


def _check_out(out: str, overwrite: bool, sources: tuple[str, ...]) -> None:
    """Refuse OUT before anything is written: not a folder; one of the ``sources`` being read
    (the checkpoint, --ckpt, --adapter) or inside one; a checkpoint, a run folder or inside
    one; non-empty without --overwrite; a file to replace that is a folder; or a place that
    cannot be written."""
    if os.path.lexists(out) and not os.path.isdir(out):
        raise ValueError(f"--to-hf {out}: exists and is not a folder")
    folder = os.path.abspath(out)
    while not os.path.exists(folder):  # the nearest folder that exists: OUT's or an ancestor
        folder = os.path.dirname(folder)
    for above in (folder, *_ancestors(folder)):
        if any(_same_folder(above, p) for p in sources if p is not None):
            raise ValueError(f"--to-hf {out}: is or is inside {above}, which is being exported; "
                             "choose another folder")
        held = _checkpoint_in(above)
        if held is not None:
            raise ValueError(f"--to-hf {out}: is or is inside a folder holding the checkpoint "
                             f"{held}, which an export must not change; choose another folder")
    if os.path.lexists(os.path.join(out, METRICS)):
        raise ValueError(f"--to-hf {out}: a training run's folder (it has {METRICS}); choose "
                         "another folder")
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise ValueError(f"--to-hf {out}: folder is not empty (pass --overwrite to replace its "
                         "model and tokenizer files)")
    for name in _WRITTEN:
        path = os.path.join(out, name)
        if os.path.lexists(path) and not (os.path.islink(path) or os.path.isfile(path)):
            raise ValueError(f"--to-hf {out}: {name} there is a folder or device, not a file "
                             "an export may replace")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"--to-hf {out}: cannot write into {folder} (permission denied)")


def _ancestors(folder: str):
    while (parent := os.path.dirname(folder)) != folder:
        yield parent
        folder = parent


def _export(args: argparse.Namespace) -> int:
    ckpt = read_checkpoint(args.ckpt)
    if not ckpt.kind.bare_gpt:
        raise ValueError(f"{ckpt.path}: a {ckpt.task} checkpoint; only language models "
                         "(--task lm) can be exported as GPT-2")
    source = ckpt.tokenizer  # None for token ids that came without a tokenizer
    tokenizer = source if getattr(source, "is_gpt2", False) else None
    if tokenizer is not None and tokenizer.vocab_size > ckpt.model_config.vocab_size:
        raise ValueError(f"{ckpt.path}: the tokenizer has {tokenizer.vocab_size} tokens but the "
                         f"model only {ckpt.model_config.vocab_size}")
    config_to_hf(ckpt.model_config)  # refuse what GPT-2 cannot express before touching OUT
    out = args.to_hf
    _check_out(out, args.overwrite, (ckpt.path, args.ckpt, args.adapter))
    model, spec = _model_with_adapters(ckpt, args.adapter)
    _check_finite(model, args.adapter or ckpt.path)
    if spec is None and args.merge_lora:
        raise ValueError(f"--merge-lora: {ckpt.path} has no LoRA adapters (train with "
                         "--lora-rank or pass --adapter DIR)")
    adapter = None if spec is None or args.merge_lora else adapter_files(
        model, spec, os.path.abspath(out))
    remove_lora(model, merge=args.merge_lora)
    if os.path.isdir(out):
        for name in (*_STALE_FILES, ADAPTER_CONFIG, ADAPTER_WEIGHTS):
            if os.path.isfile(os.path.join(out, name)):
                os.unlink(os.path.join(out, name))
    save_gpt2(model.config, model.state_dict(), out,
              tokenizer.eos_token_id if tokenizer is not None else None)
    if tokenizer is not None:
        write_gpt2_tokenizer(tokenizer, out)
    for name, data in (adapter or {}).items():
        atomic_write_bytes(os.path.join(out, name), data)
    c = ckpt.model_config
    print(f"wrote {out}: GPT-2 with {c.n_layer} layers, {c.n_head} heads, d_model {c.d_model}, "
          f"vocabulary {c.vocab_size}, context {c.context_length} "
          f"({model.num_parameters():,} parameters) from {ckpt.path}")
    if spec is not None:
        print(f"LoRA rank {spec.rank} on {', '.join(spec.targets)}: "
              + ("merged into the weights" if args.merge_lora else
                 f"wrote {ADAPTER_WEIGHTS} + {ADAPTER_CONFIG} beside the base model (PEFT)"))
    if tokenizer is not None:
        print(f"wrote the GPT-2 BPE tokenizer ({tokenizer.vocab_size} tokens) beside it")
    elif source is None:
        print("note: the model was trained on token ids without a tokenizer; only the model "
              "was written", file=sys.stderr)
    else:
        kind = getattr(source, "kind", None) or ckpt.tokenizer_dict.get("type")
        print(f"note: the checkpoint's {kind} tokenizer has no Hugging Face GPT-2 form; only "
              f"the model was written (its token ids are the {kind} tokenizer's)",
              file=sys.stderr)
    return 0


def _check_finite(model, source: str) -> None:
    """A NaN or infinite weight (a diverged run, a broken adapter) is refused, never exported
    or merged into the others."""
    for name, p in model.named_parameters():
        if not np.isfinite(p.numpy()).all():
            raise ValueError(f"{source}: weight {name} holds NaN or infinite values; nothing "
                             "was exported")


def _model_with_adapters(ckpt, adapter: str | None):
    """The checkpoint's model with its LoRA layers unmerged (a --lora-rank run's, or those of
    the --adapter folder loaded onto it), and their LoraSpec (None without adapters)."""
    spec = ckpt.adapter_spec
    if spec is not None and adapter is not None:
        raise ValueError(f"--adapter: {ckpt.path} already has LoRA adapters; export it alone")
    model = ckpt.kind.build(ckpt.model_config, ckpt.extras)
    if spec is not None:
        # the checkpoint's weights then load with the adapters apart
        apply_spec(model, spec, os.path.join(ckpt.path, ADAPTER_CONFIG))
    ckpt.load_weights(model)
    if adapter is not None:
        spec = load_adapter(model, adapter)
    return model.eval(), spec


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return report_errors(lambda: _export(args))


if __name__ == "__main__":
    sys.exit(main())
