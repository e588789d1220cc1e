"""Do the attributions find what the classifier relies on? The deletion check (ERASER's
comprehensiveness, DeYoung et al., 2020) on a Movie Review classifier.

    python -m benchmarks.explain --ckpt runs/mr [--mr ../shared/data/mr] [--sentences 100]
        [--out benchmarks/results/explain_mr.json]

For each of ``--sentences`` validation rows of MR's split (lines 10, 20, ... of each file, taken
evenly from both), the k tokens that a method ranks highest for the predicted class become
[UNK], and the predicted class's logit is measured again: a method that finds the tokens the
model relies on makes it fall further, and flips more predictions, than k random tokens do.
Methods: integrated gradients (50 steps from [UNK], the CLI's default), gradient x input, the
attention each token receives (mean over layers, heads and queries: "attention as
explanation"), and random tokens (the mean of 10 draws). Also reports integrated gradients'
completeness gaps. Skips with a message when the corpus or the checkpoint is not there.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from minigrad_lm.data.labeled import encode_sentences
from minigrad_lm.engine.tensor import no_grad
from minigrad_lm.inference.explain import ExplainOptions, explain_classifier
from minigrad_lm.checkpoints.folder import read_checkpoint

from .classify import DEFAULT_MR, _split
from .harness import machine

KS = (1, 3)
RANDOM_DRAWS = 10


def _logits(model, rows: list[np.ndarray]) -> np.ndarray:
    """Class logits of token-id rows of one length."""
    with no_grad():
        return model(np.stack(rows)).numpy().astype(np.float64)


def _rankings(model, ids: np.ndarray, tokenizer, options: ExplainOptions) -> dict:
    """Token positions, most important first, by each method (random: one draw per row)."""
    ig = explain_classifier(model, ids, **options.attribution(tokenizer))
    gxi = explain_classifier(model, ids,
                             **{**options.attribution(tokenizer), "method": "grad_x_input"})
    received = np.mean([m.probs.mean(axis=(0, 1)) for m in ig.attention], axis=0)  # (T,)
    return {"integrated gradients": np.argsort(-ig.attribution.scores, kind="stable"),
            "gradient x input": np.argsort(-gxi.attribution.scores, kind="stable"),
            "attention received": np.argsort(-received, kind="stable"),
            "_target": ig.target, "_gap": ig.attribution.completeness_gap,
            "_change": ig.attribution.output - ig.attribution.baseline_output}


def run(ckpt_path: str, mr: Path, n: int) -> dict:
    ckpt = read_checkpoint(ckpt_path)
    model, tokenizer = ckpt.build_model(), ckpt.tokenizer
    unk = tokenizer.token_id("[UNK]")
    _, val = _split(mr)
    picked = np.linspace(0, len(val.texts) - 1, n).round().astype(int)
    texts = [val.texts[i] for i in picked]
    ids, lengths, _ = encode_sentences(tokenizer, texts, ckpt.model_config.context_length,
                                       ckpt.extras["pooling"])
    options = ExplainOptions()
    rng = np.random.default_rng(0)
    drops: dict[str, dict[int, list]] = {}
    flips: dict[str, dict[int, list]] = {}
    gaps, start = [], time.perf_counter()
    for row, length in zip(ids, lengths):
        x = row[:length]
        ranks = _rankings(model, x, tokenizer, options)
        target = ranks.pop("_target")
        gaps.append(abs(ranks.pop("_gap")) / max(abs(ranks.pop("_change")), 1e-12))
        ranks["random"] = [rng.permutation(length) for _ in range(RANDOM_DRAWS)]
        base = _logits(model, [x])[0]
        for k in KS:
            if k >= length:
                continue
            for method, order in ranks.items():
                orders = order if method == "random" else [order]
                variants = []
                for o in orders:
                    v = x.copy()
                    v[o[:k]] = unk
                    variants.append(v)
                logits = _logits(model, variants)
                drops.setdefault(method, {}).setdefault(k, []).append(
                    float(np.mean(base[target] - logits[:, target])))
                flips.setdefault(method, {}).setdefault(k, []).append(
                    float(np.mean(logits.argmax(axis=1) != target)))
    seconds = time.perf_counter() - start
    table = {method: {f"k={k}": {"logit_drop": float(np.mean(d)),
                                 "flipped": float(np.mean(flips[method][k])),
                                 "sentences": len(d)}
                      for k, d in by_k.items()}
             for method, by_k in drops.items()}
    return {"checkpoint": ckpt.path, "sentences": n, "methods": table,
            "integrated_gradients_relative_gap": {"median": float(np.median(gaps)),
                                                  "max": float(np.max(gaps))},
            "seconds": seconds, "machine": machine()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", required=True, help="an MR classifier's run or checkpoint folder")
    p.add_argument("--mr", type=Path, default=DEFAULT_MR)
    p.add_argument("--sentences", type=int, default=100)
    p.add_argument("--out", default="benchmarks/results/explain_mr.json")
    args = p.parse_args(argv)
    if not (args.mr / "rt-polarity.neg").exists() or not Path(args.ckpt).exists():
        print(f"skipped: needs {args.mr} and the checkpoint {args.ckpt}")
        return 0
    result = run(args.ckpt, args.mr, args.sentences)
    print(f"{'method':<22} " + " ".join(f"{'k=' + str(k) + ' drop':>10} {'flipped':>8}"
                                        for k in KS))
    for method, by_k in result["methods"].items():
        cells = " ".join(f"{by_k[f'k={k}']['logit_drop']:>10.3f} "
                         f"{by_k[f'k={k}']['flipped']:>8.1%}" for k in KS)
        print(f"{method:<22} {cells}")
    gap = result["integrated_gradients_relative_gap"]
    print(f"integrated gradients: |completeness gap| / |f(x) - f(baseline)|: median "
          f"{gap['median']:.1e}, max {gap['max']:.1e}; {result['seconds']:.0f} s")
    Path(args.out).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
