"""Generation throughput of a GPT-2-small-sized model (124M parameters, random weights): batch 1,
greedy, KV cache, float32 on the CPU; minigrad_lm beside transformers (same weights, loaded
from our export) when it is installed.

    python -m benchmarks.generation_gpt2 [--new-tokens 32] [--prompt-tokens 16] [--repeats 3]
                                         [--threads N]

--threads sets both NumPy's BLAS pool (needs threadpoolctl, the ``bench`` extra) and PyTorch's.
On a shared machine prefer --threads 1: an oversubscribed OpenMP pool busy-waits and can make
PyTorch several times slower than it is, which would flatter the comparison.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import tempfile

import numpy as np

import minigrad_lm as mg
from minigrad_lm.inference.sampling import generate
from minigrad_lm.models import GPT, GPTConfig

from .harness import machine, median_seconds

GPT2_SMALL = {"vocab_size": 50257, "context_length": 1024, "n_layer": 12, "n_head": 12,
              "d_model": 768}


def _ours(model: GPT, prompt: np.ndarray, new_tokens: int, repeats: int):
    out = {}

    def run():
        out["ids"] = generate(model, prompt, new_tokens, temperature=0)
    return median_seconds(run, repeats=repeats, warmup=1), out["ids"]


def _transformers(model: GPT, prompt: np.ndarray, new_tokens: int, repeats: int):
    """(median seconds, ids) of GPT2LMHeadModel.generate on our weights, or None."""
    try:
        import torch
        from transformers import GPT2LMHeadModel
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        hf = GPT2LMHeadModel.from_pretrained(folder).eval()
    ids = torch.tensor(prompt[None])
    out = {}

    def run():
        with torch.inference_mode():
            out["ids"] = hf.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                     do_sample=False, use_cache=True, pad_token_id=0)
    seconds = median_seconds(run, repeats=repeats, warmup=1)
    return seconds, out["ids"][0, len(prompt):].numpy()


@contextlib.contextmanager
def _threads(n: int | None):
    """Both engines on the same number of threads, for a like-for-like comparison."""
    if n is None:
        yield
        return
    with contextlib.suppress(ImportError):
        import torch
        torch.set_num_threads(n)
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=n, user_api="blas"):
        yield


def _run(args: argparse.Namespace) -> None:
    mg.manual_seed(0)
    model = GPT(GPTConfig(**{**GPT2_SMALL, "n_layer": args.n_layer})).eval()
    prompt = np.random.default_rng(0).integers(0, GPT2_SMALL["vocab_size"], args.prompt_tokens)
    print(json.dumps(machine()))
    print(f"GPT-2 small shape, {model.num_parameters() / 1e6:.1f}M parameters, prompt "
          f"{args.prompt_tokens} tokens, {args.new_tokens} new tokens, batch 1, greedy, "
          f"median of {args.repeats}")

    rows = [("minigrad_lm (NumPy, KV cache)", *_ours(model, prompt, args.new_tokens,
                                                      args.repeats))]
    theirs = _transformers(model, prompt, args.new_tokens, args.repeats)
    if theirs is not None:
        rows.append(("transformers (PyTorch, use_cache)", *theirs))
    base = rows[0][1]
    print(f"{'engine':36} {'tokens/s':>9} {'ms/token':>9} {'speed vs ours':>14}")
    for name, seconds, _ in rows:
        print(f"{name:36} {args.new_tokens / seconds:9.1f} {seconds / args.new_tokens * 1e3:9.1f} "
              f"{base / seconds:13.2f}x")
    if theirs is not None:
        same = int(np.sum(rows[0][2] == rows[1][2]))
        print(f"greedy tokens identical: {same}/{args.new_tokens}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per engine (median)")
    p.add_argument("--n-layer", type=int, default=12, help="fewer for a quick smoke run")
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS and PyTorch threads (default: each library's own)")
    args = p.parse_args(argv)
    with _threads(args.threads):
        _run(args)


if __name__ == "__main__":
    main()
