"""Sentence classification on real data: the Movie Review corpus (Pang & Lee), trained with the
default classifier from scratch and after in-domain pretraining (a masked language model, the
encoder's own objective, and a causal one), next to bag-of-words logistic regressions.

    python -m benchmarks.classify [--mr ../shared/data/mr] [--mlm-steps 3000] [--lm-steps 800]
        [--out benchmarks/results/classify_mr.json]

MR's split (the shared data's README): lines 10, 20, 30, ... of each file are validation (1,066
rows), the rest training (9,596). Every run goes through the training CLI exactly as a user
would type it; the pretraining text is the training rows alone (the validation lines are held
out of it too). Prints a table of val accuracy, wall time and tokens/s, and writes it as JSON.
Skips with a message when the corpus is not there.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from minigrad_lm.data.labeled import load_class_files

from .harness import cli_training, machine

DEFAULT_MR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mr"
FILES = ("rt-polarity.neg", "rt-polarity.pos")
EVERY = 10


def _split(mr: Path):
    rows = load_class_files([mr / f for f in FILES], encoding="latin-1")
    return rows.hold_out_every(EVERY)


def bag_of_words_baselines(mr: Path) -> dict[str, float] | None:
    """Logistic regression on binary unigram (and unigram + bigram) counts, as in the shared
    data's README; None without scikit-learn."""
    try:
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        return None
    train, val = _split(mr)
    scores = {}
    for name, ngrams in (("unigrams", (1, 1)), ("unigrams + bigrams", (1, 2))):
        vec = CountVectorizer(binary=True, ngram_range=ngrams, token_pattern=r"\S+")
        fit = LogisticRegression(max_iter=2000).fit(vec.fit_transform(train.texts), train.labels)
        scores[name] = float((fit.predict(vec.transform(val.texts)) == val.labels).mean())
    return scores


def _train(argv: list[str]) -> dict:
    """One training run through the CLI; its best val score, time and median tokens/s."""
    seconds, evals, steps = cli_training(argv)
    metric = "val_acc" if "val_acc" in evals[0] and "train_acc" in evals[0] else "val_loss"
    pick = max if metric == "val_acc" else min
    best = pick(evals, key=lambda r: r[metric])
    return {"argv": argv, "seconds": seconds, "steps": len(steps),
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in steps),
            "best_step": best["step"], metric: best[metric],
            "val_acc_by_eval": [round(r["val_acc"], 4) for r in evals]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mr", type=Path, default=DEFAULT_MR, help="folder of the MR files")
    parser.add_argument("--mlm-steps", type=int, default=3000,
                        help="pretraining steps of the masked language model")
    parser.add_argument("--lm-steps", type=int, default=800,
                        help="pretraining steps of the causal language model (0: skip it)")
    parser.add_argument("--out", default="benchmarks/results/classify_mr.json")
    args = parser.parse_args(argv)
    if not all((args.mr / f).is_file() for f in FILES):
        print(f"skipped: the Movie Review corpus is not at {args.mr} ({', '.join(FILES)})")
        return 0
    data = ["--data", *(str(args.mr / f) for f in FILES), "--val-every-nth", str(EVERY),
            "--encoding", "latin-1"]
    results: dict = {"machine": machine(), "baselines": bag_of_words_baselines(args.mr)}
    with tempfile.TemporaryDirectory() as tmp:
        pretrain = [*data, "--tokenizer", "word", "--n-layer", "2", "--dropout", "0.1"]
        runs = {
            "scratch": ["--task", "classify", *data, "--out", f"{tmp}/scratch"],
            "mlm": ["--task", "lm", *pretrain, "--attention", "bidirectional",
                    "--max-steps", str(args.mlm_steps), "--decay-steps", str(args.mlm_steps),
                    "--eval-every", str(max(1, args.mlm_steps // 4)), "--out", f"{tmp}/mlm"],
            "pretrained_mlm": ["--task", "classify", *data, "--init-from", f"{tmp}/mlm",
                               "--out", f"{tmp}/pretrained_mlm"],
        }
        if args.lm_steps:
            runs |= {
                "lm": ["--task", "lm", *pretrain, "--sample-tokens", "0",
                       "--max-steps", str(args.lm_steps),
                       "--decay-steps", str(args.lm_steps),
                       "--eval-every", str(max(1, args.lm_steps // 4)), "--out", f"{tmp}/lm"],
                "pretrained": ["--task", "classify", *data, "--init-from", f"{tmp}/lm",
                               "--out", f"{tmp}/pretrained"],
                "pretrained_causal": ["--task", "classify", *data, "--init-from", f"{tmp}/lm",
                                      "--attention", "causal",
                                      "--out", f"{tmp}/pretrained_causal"],
            }
        for name, run_argv in runs.items():
            print(f"{name}: python -m minigrad_lm.train {' '.join(run_argv)}", flush=True)
            results[name] = _train(run_argv)
            print(f"  -> {json.dumps({k: v for k, v in results[name].items() if k != 'argv'})}",
                  flush=True)
    _print_table(results)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {args.out}")
    return 0


def _print_table(r: dict) -> None:
    print("\n| model (MR, val = every 10th line) | val accuracy | wall time | tokens/s |")
    print("|---|---|---|---|")
    for name, score in (r["baselines"] or {}).items():
        print(f"| bag of words, logistic regression ({name}) | {score:.3f} | | |")
    rows = [("scratch", "default classifier (bidirectional), from scratch")]
    for name, source, kind in (("pretrained_mlm", "mlm", "default"),
                               ("pretrained", "lm", "default"),
                               ("pretrained_causal", "lm", "causal")):
        if source in r:
            lm = r[source]
            objective = "masked LM" if source == "mlm" else "causal LM"
            minutes = lm["seconds"] / 60
            rows.append((name, f"{kind} classifier after {objective} pretraining "
                               f"({lm['steps']} steps, {minutes:.1f} min)"))
    for name, label in rows:
        run = r[name]
        print(f"| {label} | {run['val_acc']:.3f} (step {run['best_step']}) | "
              f"{run['seconds'] / 60:.1f} min | {run['tokens_per_s']:,.0f} |")


if __name__ == "__main__":
    sys.exit(main())
