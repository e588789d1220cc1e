"""The masked LM's first steps in PyTorch: is a plateau the objective's or the engine's?

    python -m benchmarks.mlm_reference --cache runs/token_cache/KEY [--steps 400]
        [--context 128] [--lr 3e-3]

Trains the encoder of ``python -m minigrad_lm.train --task mlm --n-layer 2 --d-model 128
--n-head 4 --batch-size 32 --dropout 0 --min-lr LR/10 --warmup-steps 100 --max-steps STEPS
--decay-steps STEPS`` (weight decay 0.1 on matrices, betas 0.9/0.99, clipping at 1.0) in
PyTorch eager, from minigrad_lm's own initial weights (benchmarks/torch_gpt.py, made
bidirectional), on windows of the same token cache masked by minigrad_lm's own masking
(data/masking.py). Every 100 steps it prints the val loss and accuracy on the hidden tokens,
and the accuracy at the ``[MASK]`` positions alone, to set beside the training CLI's run.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

import minigrad_lm as mg
from minigrad_lm.data.masking import mask_draws, mask_tokens
from minigrad_lm.data.text import load_token_folder
from minigrad_lm.data.tokenizer import tokenizer_from_dict
from minigrad_lm.models import GPT, GPTConfig

BATCH, WARMUP, EVAL_BATCHES = 32, 100, 8


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, required=True, help="a token cache folder")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args(argv)
    try:
        import torch
        import torch.nn.functional as TF
    except ImportError:
        print("skipped: PyTorch is not installed")
        return 0
    from .torch_gpt import from_minigrad

    train, val, tokenizer_dict = load_token_folder(args.cache)
    tokenizer = tokenizer_from_dict(tokenizer_dict)
    vocab = tokenizer.vocab_size
    cfg = GPTConfig(vocab_size=vocab, context_length=args.context, n_layer=2, n_head=4,
                    d_model=128, causal=False)
    mg.manual_seed(1337)
    model = from_minigrad(GPT(cfg))
    for layer in model.layers:
        layer.attn.causal = False
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    others = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": matrices, "weight_decay": 0.1},
                             {"params": others, "weight_decay": 0.0}], lr=args.lr,
                            betas=(0.9, 0.99))

    def batch(ids, rng, n):
        starts = rng.integers(0, len(ids) - args.context, n)
        x = np.stack([np.asarray(ids[s:s + args.context], dtype=np.int64) for s in starts])
        return mask_tokens(x, mask_draws(rng, n, args.context, vocab), tokenizer.mask_id, 0.15)

    def lr_at(step):
        if step < WARMUP:
            return args.lr * (step + 1) / WARMUP
        done = min(1.0, (step - WARMUP) / max(1, args.steps - WARMUP))
        floor = args.lr / 10
        return floor + 0.5 * (args.lr - floor) * (1 + math.cos(math.pi * done))

    def evaluate():
        rng = np.random.default_rng(1)
        loss = right = scored = at_mask = masked = 0
        with torch.no_grad():
            for _ in range(EVAL_BATCHES):
                inputs, targets = batch(val, rng, BATCH)
                picked = targets != -100
                logits = model(torch.tensor(inputs))[torch.tensor(picked)]
                wanted = torch.tensor(targets[picked])
                loss += TF.cross_entropy(logits, wanted, reduction="sum").item()
                hit = logits.argmax(-1) == wanted
                right, scored = right + hit.sum().item(), scored + len(wanted)
                is_mask = torch.tensor(inputs[picked] == tokenizer.mask_id)
                at_mask, masked = at_mask + hit[is_mask].sum().item(), masked + is_mask.sum().item()
        return loss / scored, right / scored, at_mask / masked

    rng, start = np.random.default_rng(0), time.perf_counter()
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        inputs, targets = batch(train, rng, BATCH)
        picked = torch.tensor(targets != -100)
        logits = model(torch.tensor(inputs))[picked]
        loss = TF.cross_entropy(logits, torch.tensor(targets)[picked])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % 100 == 0:
            val_loss, acc, acc_mask = evaluate()
            print(f"step {step + 1}: val loss {val_loss:.3f}, hidden tokens right {acc:.1%}, "
                  f"[MASK] positions right {acc_mask:.1%} ({time.perf_counter() - start:.0f} s)",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
