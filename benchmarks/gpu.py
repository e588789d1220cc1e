"""GPU benchmarks: a GPT-2-small-sized train step and KV-cache generation, minigrad_lm on CuPy
against PyTorch eager CUDA in the same run (float32, TF32 off for both).

    python -m benchmarks.gpu [--batch 8] [--context 1024] [--steps 5] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

import minigrad_lm as mg
from minigrad_lm.models import GPT, GPTConfig
from minigrad_lm.nn import KVCache
from minigrad_lm.optim import Adam

from .harness import median_seconds, median_train_step


def gpt2_small(context: int) -> GPTConfig:
    return GPTConfig(vocab_size=50257, context_length=context, n_layer=12, n_head=12,
                     d_model=768)


def train_step_rows(batch: int, context: int, steps: int) -> list[dict]:
    cp = mg.backend.cupy()
    pool = cp.get_default_memory_pool()
    cfg = gpt2_small(context)
    mg.manual_seed(0)
    model = GPT(cfg).to("cuda")
    opt = Adam(model.parameters(), lr=1e-4)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg.vocab_size, (batch, context + 1))
    x, y = ids[:, :-1], ids[:, 1:]  # host batches, as the training CLI samples them

    ours, _ = median_train_step(lambda: model.loss(x, y), opt, steps,
                                cp.cuda.Device().synchronize)
    tokens = batch * context
    rows = [{"bench": "train step", "impl": "minigrad_lm (CuPy)", "ms": ours * 1e3,
             "tokens_per_s": tokens / ours, "peak_gib": pool.total_bytes() / 2 ** 30}]
    try:
        import torch

        from .torch_gpt import from_minigrad
    except ImportError:
        return rows
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    tm = from_minigrad(model, device="cuda")
    model = opt = None  # free the GPU memory for the reference
    pool.free_all_blocks()
    topt = torch.optim.Adam(tm.parameters(), lr=1e-4)
    tx, ty = (torch.tensor(a, device="cuda") for a in (ids[:, :-1], ids[:, 1:]))
    torch.cuda.reset_peak_memory_stats()

    theirs, _ = median_train_step(lambda: tm.loss(tx, ty), topt, steps, torch.cuda.synchronize)
    rows.append({"bench": "train step", "impl": "PyTorch eager CUDA", "ms": theirs * 1e3,
                 "tokens_per_s": tokens / theirs,
                 "peak_gib": torch.cuda.max_memory_reserved() / 2 ** 30})
    rows[0]["ratio_vs_torch"] = theirs / ours
    tm = topt = None
    torch.cuda.empty_cache()
    return rows


def generation_rows(context: int, new_tokens: int) -> list[dict]:
    cp = mg.backend.cupy()
    cfg = gpt2_small(context)
    mg.manual_seed(0)
    model = GPT(cfg).to("cuda").eval()
    prompt = np.random.default_rng(0).integers(0, cfg.vocab_size, (1, 16))

    def generate():
        with mg.no_grad():
            cache = KVCache(16 + new_tokens)
            logits = model(prompt, cache=cache)
            for _ in range(new_tokens):
                nxt = logits.data[:, -1].argmax(axis=-1)[:, None]
                logits = model(nxt, cache=cache)
    seconds = median_seconds(generate, repeats=3, warmup=1, sync=cp.cuda.Device().synchronize)
    rows = [{"bench": "generation (batch 1, KV cache)", "impl": "minigrad_lm (CuPy)",
             "tokens_per_s": new_tokens / seconds}]
    try:
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        return rows
    hf = GPT2LMHeadModel(GPT2Config(n_positions=context, n_embd=768, n_layer=12, n_head=12,
                                    vocab_size=cfg.vocab_size)).cuda().eval()
    tp = torch.tensor(prompt, device="cuda")

    def hf_generate():
        with torch.no_grad():
            hf.generate(tp, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                        do_sample=False, use_cache=True, pad_token_id=0)
    theirs = median_seconds(hf_generate, repeats=3, warmup=1, sync=torch.cuda.synchronize)
    rows.append({"bench": "generation (batch 1, KV cache)", "impl": "transformers (PyTorch)",
                 "tokens_per_s": new_tokens / theirs})
    rows[0]["ratio_vs_torch"] = theirs / seconds
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--out")
    args = p.parse_args(argv)
    cp = mg.backend.cupy()
    info = {"gpu": cp.cuda.runtime.getDeviceProperties(0)["name"].decode(),
            "cupy": cp.__version__, "precision": "float32, TF32 off for both",
            "batch": args.batch, "context": args.context, "time": time.strftime("%Y-%m-%d")}
    print(json.dumps(info))
    rows = train_step_rows(args.batch, args.context, args.steps)
    rows += generation_rows(args.context, args.new_tokens)
    for row in rows:
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"info": info, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
