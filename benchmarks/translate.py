"""Multi30k De->En: minigrad_lm's encoder-decoder against torch.nn.Transformer, side by side.

    python -m benchmarks.translate --minutes 30 --no-torch   # the issue's budget, ours alone
    python -m benchmarks.translate --steps 300 --val-limit 500 \
        --out benchmarks/results/translate_cpu_vs_torch.json  # side by side with torch

Both train the same architecture from the same initial weights (copied), on the same BPE
vocabulary and the same token-count batches in the same order (the training CLI's epochs),
with the same AdamW groups, learning-rate schedule and gradient clipping, taking turns step by
step so that this shared machine's drift slows both alike. The step count comes from --steps,
or from --minutes (of our training time) and a short timing of our step. Both are then scored
on the whole val set: loss, and sacrebleu BLEU of beam search (the project's beam search; for
torch over a re-run decoder, as torch.nn.Transformer has no cache).
Tokens/s counts real source + target tokens over pure training time. Reads
../shared/data/multi30k relative to the repository root and skips with a message when absent.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

import minigrad_lm as mg
from minigrad_lm.inference.decoding import DecodeOptions, translate_ids
from minigrad_lm.inference.scoring import bleu
from minigrad_lm.models import Seq2SeqTransformer
from minigrad_lm.optim import AdamW, LRScheduler, clip_grad_norm_, decay_groups, lr_at
from minigrad_lm.train.config import TrainConfig
from minigrad_lm.train.distributed import LOCAL
from minigrad_lm.train.tasks.translate import TranslateTask

from .harness import machine

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "multi30k"
RESULTS = REPO / "benchmarks" / "results" / "translate_cpu.json"

# The settings reported with the results (the rest are the training CLI's, unchanged).
REPORTED = ("tokenizer", "vocab_size", "context", "n_layer", "n_head", "d_model", "dropout", "norm", "positional", "embeddings", "batch_tokens", "label_smoothing",
            "lr", "min_lr", "warmup_steps", "beta1", "beta2", "weight_decay", "grad_clip",
            "beam_size", "length_penalty", "seed")
OVERRIDES = ("d_model", "n_layer", "vocab_size", "batch_tokens", "warmup_steps", "lr")


def _config(args) -> TrainConfig:
    """The training CLI's default translation config, with the flags given here."""
    return TrainConfig(task="translate", data=[str(DATA / "train.de.gz"),
                                               str(DATA / "train.en.gz")],
                       val_data=[str(DATA / "val.de.gz"), str(DATA / "val.en.gz")],
                       **{k: getattr(args, k) for k in OVERRIDES if getattr(args, k) is not None})


class _Ours:
    name = "minigrad_lm"

    def __init__(self, model, cfg, steps: int | None):
        self.model = model
        self.opt = AdamW(decay_groups(model, cfg.weight_decay), lr=cfg.lr,
                         betas=(cfg.beta1, cfg.beta2))
        self.lr_schedule = LRScheduler(self.opt, cfg.warmup_steps, steps, cfg.min_lr)
        self.params = model.parameters()

    def step(self, batch, cfg) -> float:
        self.opt.zero_grad()
        loss = self.model.loss(*batch, label_smoothing=cfg.label_smoothing)
        loss.backward()
        clip_grad_norm_(self.params, cfg.grad_clip)
        self.opt.step()
        self.lr_schedule.step()
        return loss.item()

    def translate(self, sources, options):
        self.model.eval()
        return translate_ids(self.model, sources, options)

    def val_loss(self, task) -> float:
        self.model.eval()
        with mg.no_grad():
            return task._nll(self.model, task.val_batches, task.val_src_ids, task.val_tgt_ids,
                             LOCAL)


class _TorchState:
    """The decoding interface of minigrad_lm.inference.decoding over torch.nn.Transformer (the decoder
    re-runs the prefix each step: torch's Transformer has no cache)."""

    def __init__(self, ref, src):
        import torch
        self.torch, self.ref = torch, ref
        self.src = torch.tensor(src)
        with torch.no_grad():
            self.memory = ref.transformer.encoder(ref._embed(self.src),
                                                  src_key_padding_mask=self.src == ref.cfg.pad_id)
        self.tokens = np.full((len(src), 1), ref.cfg.bos_id, dtype=np.int64)

    def log_probs(self):
        torch, ref = self.torch, self.ref
        t = self.tokens.shape[1]
        with torch.no_grad():
            h = ref.transformer.decoder(
                ref._embed(torch.tensor(self.tokens)), self.memory,
                tgt_mask=torch.triu(torch.ones(t, t, dtype=torch.bool), 1),
                memory_key_padding_mask=self.src == ref.cfg.pad_id)
            logits = h[:, -1] @ ref.emb.weight.T
            return torch.log_softmax(logits.double(), -1).numpy()

    def advance(self, next_tokens, rows=None):
        if rows is not None:
            self.tokens, index = self.tokens[rows], self.torch.tensor(rows)
            self.src, self.memory = self.src[index], self.memory[index]
        self.tokens = np.concatenate([self.tokens, next_tokens[:, None]], axis=1)


class _Torch:
    name = "PyTorch"

    def __init__(self, model, cfg, steps: int):
        import torch

        from .torch_seq2seq import from_minigrad, model_pairs
        self.torch = torch
        self.ref = from_minigrad(model)  # the same initial weights
        decay = {id(p) for g in decay_groups(model, cfg.weight_decay) if g["weight_decay"]
                 for p in g["params"]}
        pairs = model_pairs(model, self.ref)
        groups = [[t for t, ours in pairs if all(id(p) in decay for p in ours)],
                  [t for t, ours in pairs if not all(id(p) in decay for p in ours)]]
        self.opt = torch.optim.AdamW([{"params": groups[0], "weight_decay": cfg.weight_decay},
                                      {"params": groups[1], "weight_decay": 0.0}], lr=cfg.lr,
                                     betas=(cfg.beta1, cfg.beta2))
        # the same schedule as ours, as a factor of the base lr
        self.lr_schedule = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda step: lr_at(step, 1.0, cfg.min_lr / cfg.lr, cfg.warmup_steps, steps))
        self.config = model.config

    def step(self, batch, cfg) -> float:
        torch = self.torch
        self.ref.train()
        self.opt.zero_grad()
        loss = self.ref.loss(*(torch.tensor(a) for a in batch), cfg.label_smoothing)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.ref.parameters(), cfg.grad_clip)
        self.opt.step()
        self.lr_schedule.step()
        return loss.item()

    def start_decoding(self, src, capacity, use_cache=True):
        return _TorchState(self.ref, src)

    def translate(self, sources, options):
        self.ref.eval()
        return translate_ids(self, sources, options)

    def val_loss(self, task) -> float:
        torch, total, tokens = self.torch, 0.0, 0
        self.ref.eval()
        with torch.no_grad():
            for rows in task.val_batches:
                s, t_in, t_out = (torch.tensor(a) for a in task._pad(rows, task.val_src_ids,
                                                                      task.val_tgt_ids))
                logits = self.ref(s, t_in)
                total += float(torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), t_out.reshape(-1),
                    ignore_index=task.pad, reduction="sum"))
                tokens += int((t_out != task.pad).sum())
        return total / tokens


def _train(impls, task, cfg, steps: int, log_every: int) -> dict:
    """Train every implementation for `steps` steps, taking turns step by step, so that the
    drift of this shared machine slows them alike."""
    stats = {i.name: {"seconds": 0.0, "tokens": 0, "losses": []} for i in impls}
    for step in range(steps):
        batch = task.batch_at(task.draw(None, 1, step))
        for impl in impls:
            st = stats[impl.name]
            t0 = time.perf_counter()
            st["losses"].append(impl.step(batch, cfg))
            st["seconds"] += time.perf_counter() - t0
            st["tokens"] += task.tokens(batch)
        if (step + 1) % log_every == 0:
            print(f"  step {step + 1}/{steps}: " + " | ".join(
                f"{n} loss {np.mean(st['losses'][-log_every:]):.3f}, "
                f"{st['tokens'] / st['seconds']:,.0f} tok/s, {st['seconds'] / 60:.1f} min"
                for n, st in stats.items()), flush=True)
    return {n: {"steps": steps, "train_seconds": st["seconds"], "tokens": st["tokens"],
                "tokens_per_s": st["tokens"] / st["seconds"],
                "final_train_loss": float(np.mean(st["losses"][-50:]))}
            for n, st in stats.items()}


def _score(impl, task, cfg, limit: int | None) -> dict:
    t0 = time.perf_counter()
    val_loss = impl.val_loss(task)
    options = DecodeOptions(beam_size=cfg.beam_size, length_penalty=cfg.length_penalty)
    hyps = [task.tokenizer.decode(h).strip()
            for h in impl.translate(task.val_src_ids[:limit], options)]
    return {"val_loss": val_loss, "val_bleu": bleu(hyps, task.val_tgt[:limit]),
            "eval_seconds": time.perf_counter() - t0, "examples": hyps[:4]}


def _estimate_steps(task, cfg, minutes: float) -> int:
    """Steps that fit in `minutes`, from the median of a few timed steps of a throwaway model."""
    mg.manual_seed(cfg.seed + 1)
    probe = _Ours(Seq2SeqTransformer(task.model_config(None)), cfg, None)
    times = []
    for step in range(8):
        batch = task.batch_at(task.draw(None, 1, step))
        t0 = time.perf_counter()
        probe.step(batch, cfg)
        times.append(time.perf_counter() - t0)
    return max(1, int(minutes * 60 / float(np.median(times[2:]))))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.translate",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=12.0,
                        help="training time budget for ours (default: 12)")
    parser.add_argument("--steps", type=int, help="train this many steps instead")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    parser.add_argument("--log-every", type=int, default=50)
    for name in OVERRIDES[:-1]:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"where the results go "
                        f"(default: {RESULTS.relative_to(REPO)})")
    parser.add_argument("--val-limit", type=int, help="BLEU of the first N val pairs only (a "
                        "quick check of the benchmark itself)")
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found (Multi30k; see ../shared/data/README.md)")
        return 0
    cfg = _config(args)
    t0 = time.perf_counter()
    task = TranslateTask(cfg, None)
    print(*task.describe(), sep="\n")
    print(f"data ready in {time.perf_counter() - t0:.1f}s")
    steps = args.steps or _estimate_steps(task, cfg, args.minutes)
    if cfg.warmup_steps > steps // 5:  # a short run still reaches its peak learning rate
        cfg.warmup_steps = max(1, steps // 5)
    mg.manual_seed(cfg.seed)
    model = Seq2SeqTransformer(task.model_config(None))
    impls = [_Ours(model, cfg, steps)]
    if not args.no_torch:
        import torch
        torch.set_num_threads(os.cpu_count() or 1)
        impls.append(_Torch(model, cfg, steps))  # copies the initial weights before ours trains
    print(f"model: {model.num_parameters():,} parameters; {steps} steps; config {cfg.to_dict()}")
    results = {"machine": machine(), "config": {k: getattr(cfg, k) for k in REPORTED},
               "model": model.config.to_dict()}
    trained = _train(impls, task, cfg, steps, args.log_every)
    for impl in impls:
        r = results[impl.name] = {**trained[impl.name], **_score(impl, task, cfg, args.val_limit)}
        print(f"{impl.name}: val BLEU {r['val_bleu']:.2f}, val loss {r['val_loss']:.3f}, "
              f"{r['tokens_per_s']:,.0f} tok/s, {r['train_seconds'] / 60:.1f} min", flush=True)
    _report(results, task, [i.name for i in impls])
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


def _report(results: dict, task, names: list[str]) -> None:
    rows = [("steps", "steps", "{:,}"), ("training wall time (min)", "train_seconds", None),
            ("tokens/s (src + tgt, real)", "tokens_per_s", "{:,.0f}"),
            ("train loss (last 50 steps)", "final_train_loss", "{:.3f}"),
            ("val loss", "val_loss", "{:.3f}"), ("val BLEU (beam 4)", "val_bleu", "{:.2f}")]
    print("\n| | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for label, key, fmt in rows:
        cells = [f"{results[n][key] / 60:.1f}" if fmt is None else fmt.format(results[n][key])
                 for n in names]
        print(f"| {label} | " + " | ".join(cells) + " |")
    for i in range(3):
        print(f"\nsource:      {task.val_src[i]}\nreference:   {task.val_tgt[i]}")
        for n in names:
            print(f"{n + ':':<13}{results[n]['examples'][i]}")


if __name__ == "__main__":
    sys.exit(main())
