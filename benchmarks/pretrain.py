"""Pretraining that pays: an encoder pretrained on IMDB's 50,000 unlabelled reviews, fine-tuned
on Movie Review (sentences) and on IMDB's labelled reviews (documents), next to the same
classifiers trained from scratch; and the pretraining objectives (word2vec's continuous bag of
words, the masked LM, ELECTRA's replaced-token detection) compared at equal minutes by the MR
accuracy they give.

    python -m benchmarks.pretrain [--data ../shared/data] [--work runs/pretrain_bench]
        [--stages recipe mr imdb choices compare] [--recipe-epochs 1] [--imdb-epochs 2]
        [--compare-minutes M] [--with-wikipedia]

Stages, each a training run through the CLI exactly as a user would type it (printed):
- ``recipe``: the corpus tokenized once into a token cache (word-level, lower-cased, 20,000
  tokens; with ``--with-wikipedia`` the Wikipedia part too and 30,000 tokens), then the
  documented recipe: ``--task word2vec`` for ``--recipe-epochs`` passes;
- ``mr``: the default classifier on MR from scratch, from scratch with the fine-tuning's
  layer-wise lr decay, and fine-tuned from the recipe's encoder (:data:`FINE_TUNE`); from
  scratch, from the encoder and from the encoder with max pooling (:data:`POOLING_MAX`) again
  with each of :data:`MORE_SEEDS`;
- ``choices``: other fine-tuning choices on MR from the encoder;
- ``imdb``: from scratch, fine-tuned, and fine-tuned with max pooling on IMDB's labelled
  reviews, ``--imdb-epochs`` each, head+tail 256 tokens;
- ``compare``: the objectives at equal minutes: word2vec for one pass, then the masked LM and
  ELECTRA each trained for as long (or ``--compare-minutes``; stopped by SIGINT, which saves the
  step it is at) on their optimizer and a cosine sized to those minutes; each encoder is then
  fine-tuned on MR as the recipe's is.

MR's split: lines 10, 20, ... of each file are validation (Latin-1). IMDB's: lines 20, 40, ...
of each labelled file (1,250 of the 25,000 reviews). A run whose folder in ``--work`` already
holds a finished run of the same command is reused (its stored result), so stages can be run
one at a time (a folder holding another command's run is replaced); the results file keeps
what earlier stages wrote. Writes benchmarks/results/pretrain_imdb.json; skips without the
data.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from minigrad_lm.data.token_cache import TokenizerRequest, prepare_token_cache
from minigrad_lm.checkpoints.metrics import read_metrics

from .harness import machine

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CORPUS = ("imdb/unsup.txt.gz",)
# --with-wikipedia: general English beside the reviews, and a vocabulary for both.
WIKIPEDIA = "wikipedia/enwiki-2015-part.txt.gz"
MR = ("mr/rt-polarity.neg", "mr/rt-polarity.pos")
IMDB = ("imdb/train.neg.txt.gz", "imdb/train.pos.txt.gz")
VOCAB = 20_000
WIKIPEDIA_VOCAB = 30_000
IMDB_EVERY = 20
RESULT = "benchmark_result.json"
# The MR runs (from scratch, and from the recipe's encoder) are repeated with these seeds.
MORE_SEEDS = (1, 2)
STAGES = ("recipe", "mr", "imdb", "choices", "compare")
RUNS = ("recipe", "mr_scratch", "mr_scratch_tuned", "mr_recipe", "imdb_scratch",
        "imdb_recipe", "imdb_pooling_max")
# How the recipe's encoder is fine-tuned: the embeddings at 1/8 of the head's lr, each layer
# at half the lr of the one above (the classifier's defaults otherwise).
FINE_TUNE = ["--layer-decay", "0.5"]
# Max pooling instead of the mean: measured on MR at every seed and on IMDB beside the recipe.
POOLING_MAX = [*FINE_TUNE, "--pooling", "max"]
# Other fine-tuning choices measured on MR from the recipe's encoder.
CHOICES = {"layer_decay_1": ["--layer-decay", "1"],
           "layer_decay_0.8": ["--layer-decay", "0.8"],
           "layer_decay_0.5_word_dropout_0": [*FINE_TUNE, "--word-dropout", "0"],
           "pooling_max": POOLING_MAX}
# The encoder's shape, that every objective pretrains.
ENCODER = ["--tokenizer", "word", "--n-layer", "2", "--d-model", "128", "--n-head", "4",
           "--context", "256"]
# The masked LM's and ELECTRA's batch and optimizer: in 400-step probes a peak lr of 3e-3
# lowered the masked loss faster than 1e-3 or 1e-2.
MASKED = ["--batch-size", "32", "--dropout", "0.0", "--lr", "3e-3", "--min-lr", "1e-4",
          "--warmup-steps", "300", "--weight-decay", "0.01"]
# ELECTRA's step costs about this many masked-LM steps (its 1-layer generator runs besides the
# encoder): its cosine is as much shorter, so both schedules end at about the same minute.
ELECTRA_STEP_COST = 9 / 7
# Masked-LM steps a minute on the 2 cores (32 x 256 tokens at ~11,300 tokens/s): sizes the
# cosine of the comparison's arms to their minutes.
MLM_STEPS_PER_MINUTE = 83


def _command(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "minigrad_lm.train", *argv]


def _training_seconds(steps: list[dict]) -> float:
    """Training time of a run, every leg of a resumed one added (each leg's clock restarts)."""
    total, last = 0.0, 0.0
    for record in steps:
        if record["time"] < last:
            total += last
        last = record["time"]
    return total + last


def _summary(out: str, seconds: float) -> dict:
    records = read_metrics(out)
    steps = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    result = {"seconds": seconds, "train_seconds": _training_seconds(steps),
              "steps": steps[-1]["step"],
              "tokens_per_s": statistics.median(r["tokens_per_s"] for r in steps)}
    if evals and "val_acc" in evals[-1] and "train_acc" in evals[-1]:
        best = max(evals, key=lambda r: r["val_acc"])
        result |= {"val_acc": best["val_acc"], "best_step": best["step"],
                   "val_acc_by_eval": [round(r["val_acc"], 4) for r in evals]}
    elif evals:
        result["last_eval"] = {k: v for k, v in evals[-1].items() if k.startswith("val_")}
    return result


def _same_run(done: dict, argv: list[str], seconds: float | None) -> bool:
    """The stored run is this one: the same command and time limit (a run stopped by time
    never reached its --max-steps, which is then only a cap)."""
    if done.get("limit_seconds") != seconds:
        return False
    if seconds is None:
        return done["argv"] == argv
    return _without_cap(done["argv"]) == _without_cap(argv)


def _without_cap(argv: list[str]) -> list[str]:
    if "--max-steps" not in argv:
        return argv
    i = argv.index("--max-steps")
    return argv[:i] + argv[i + 2:]


def run(argv: list[str], seconds: float | None = None, log=sys.stdout) -> dict:
    """One training run (reused when its folder holds a finished run of ``argv``); with
    ``seconds``, stopped by SIGINT after that long (the trainer saves the step it is at)."""
    out = argv[argv.index("--out") + 1]
    stored = Path(out) / RESULT
    if stored.is_file():
        done = json.loads(stored.read_text())
        if _same_run(done, argv, seconds):
            print(f"reusing {out} (python -m minigrad_lm.train {' '.join(argv)})", flush=True)
            return done
    print(f"python -m minigrad_lm.train {' '.join(argv)}"
          + (f"  [stopped after {seconds:.0f} s]" if seconds else ""), flush=True)
    start = time.perf_counter()
    # A folder holding another command's run (an earlier recipe) is replaced.
    replace = ["--overwrite"] if Path(out).exists() else []
    proc = subprocess.Popen(_command([*argv, *replace]), stdout=log, stderr=subprocess.DEVNULL)
    try:
        code = proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        code = proc.wait()
        code = 0 if code == 128 + signal.SIGINT else code
    if code != 0:
        raise RuntimeError(f"training failed ({code}): {' '.join(argv)}")
    result = {"argv": argv, "limit_seconds": seconds,
              **_summary(out, time.perf_counter() - start)}
    stored.write_text(json.dumps(result, indent=2) + "\n")
    print(f"  -> {json.dumps({k: v for k, v in result.items() if k != 'argv'})}", flush=True)
    return result


def _classify(data: Path, files: tuple[str, ...], out: Path, *extra: str,
              encoding: str = "utf-8", every: int = 10) -> list[str]:
    return ["--task", "classify", "--data", *(str(data / f) for f in files),
            "--val-every-nth", str(every), "--encoding", encoding, *extra, "--out", str(out)]


def _word2vec(corpus: list[str], epochs: int, out: Path) -> list[str]:
    return ["--task", "word2vec", *corpus, *ENCODER, "--epochs", str(epochs), "--out", str(out)]


def _masked(task: str, corpus: list[str], steps: int, out: Path) -> list[str]:
    return ["--task", task, *corpus, *ENCODER, *MASKED, "--eval-every",
            str(max(1, steps // 4)), "--log-every", "100", "--max-steps", str(steps),
            "--decay-steps", str(steps), "--out", str(out)]


def _mr(data: Path, out: Path, *extra: str) -> list[str]:
    return _classify(data, MR, out, *extra, encoding="latin-1")


def _imdb(data: Path, out: Path, epochs: int, *extra: str) -> list[str]:
    return _classify(data, IMDB, out, "--truncation", "head_tail", "--epochs", str(epochs),
                     *extra, every=IMDB_EVERY)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--work", type=Path, default=Path("runs/pretrain_bench"),
                        help="run folders (a finished run there is reused)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                        help="the stages to run (mr and imdb need the recipe's run)")
    parser.add_argument("--recipe-epochs", type=int, default=1,
                        help="word2vec's passes over the corpus in the recipe")
    parser.add_argument("--imdb-epochs", type=int, default=2,
                        help="passes over IMDB's training reviews of each IMDB fine-tune")
    parser.add_argument("--compare-minutes", type=float, default=None,
                        help="training minutes of the masked LM and ELECTRA in the comparison "
                             "(default: those of one word2vec pass)")
    parser.add_argument("--token-cache", type=Path, default=None,
                        help="folder of token caches (default: token_cache in --work)")
    parser.add_argument("--with-wikipedia", action="store_true",
                        help=f"pretrain on {WIKIPEDIA} too, with a vocabulary of "
                             f"{WIKIPEDIA_VOCAB:,} words")
    parser.add_argument("--out", default="benchmarks/results/pretrain_imdb.json")
    args = parser.parse_args(argv)
    corpus_files = [*CORPUS, WIKIPEDIA] if args.with_wikipedia else list(CORPUS)
    vocab = WIKIPEDIA_VOCAB if args.with_wikipedia else VOCAB
    needed = [*corpus_files, *MR, *IMDB]
    missing = [f for f in needed if not (args.data / f).is_file()]
    if missing:
        print(f"skipped: {', '.join(missing)} not in {args.data}")
        return 0
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = open(work / "runs.log", "a")
    results: dict = _previous(args.out) | {"machine": machine()}
    start = time.perf_counter()
    cache = prepare_token_cache(args.token_cache or work / "token_cache",
                                [str(args.data / f) for f in corpus_files],
                                TokenizerRequest("word", vocab, lowercase=True),
                                val_every_nth=100)
    results["corpus"] = {"files": corpus_files, "train_tokens": len(cache.train),
                         "val_tokens": len(cache.val), "vocabulary": vocab,
                         "seconds": time.perf_counter() - start}
    corpus = ["--data", str(cache.folder)]
    encoder = str(work / "word2vec" / "latest")
    if "recipe" in args.stages:
        results["recipe"] = run(_word2vec(corpus, args.recipe_epochs, work / "word2vec"),
                                log=log)
    if "mr" in args.stages:
        results["mr_scratch"] = run(_mr(args.data, work / "mr_scratch"), log=log)
        results["mr_scratch_tuned"] = run(_mr(args.data, work / "mr_scratch_tuned", *FINE_TUNE),
                                          log=log)
        results["mr_recipe"] = run(_mr(args.data, work / "mr_recipe", "--init-from", encoder,
                                       *FINE_TUNE), log=log)
        for seed in MORE_SEEDS:  # the same runs with other seeds: how much a seed moves them
            results[f"seed_mr_scratch_{seed}"] = run(
                _mr(args.data, work / f"mr_scratch_seed{seed}", "--seed", str(seed)), log=log)
            results[f"seed_mr_recipe_{seed}"] = run(
                _mr(args.data, work / f"mr_recipe_seed{seed}", "--init-from", encoder,
                    *FINE_TUNE, "--seed", str(seed)), log=log)
            results[f"seed_mr_pooling_max_{seed}"] = run(
                _mr(args.data, work / f"mr_recipe_pooling_max_seed{seed}", "--init-from",
                    encoder, *POOLING_MAX, "--seed", str(seed)), log=log)
    if "imdb" in args.stages:
        results["imdb_scratch"] = run(_imdb(args.data, work / "imdb_scratch", args.imdb_epochs,
                                            "--context", "256", "--lowercase"), log=log)
        results["imdb_recipe"] = run(_imdb(args.data, work / "imdb_recipe", args.imdb_epochs,
                                           "--init-from", encoder, *FINE_TUNE), log=log)
        results["imdb_pooling_max"] = run(
            _imdb(args.data, work / "imdb_recipe_pooling_max", args.imdb_epochs, "--init-from",
                  encoder, *POOLING_MAX), log=log)
    if "choices" in args.stages:
        for name, flags in CHOICES.items():
            results[f"mr_recipe_{name}"] = run(
                _mr(args.data, work / f"mr_recipe_{name}", "--init-from", encoder, *flags), log=log)
    if "compare" in args.stages:
        recipe = args.recipe_epochs == 1  # then the recipe's runs are this arm's
        out = work / ("word2vec" if recipe else "compare_word2vec")
        results["compare_word2vec"] = run(_word2vec(corpus, 1, out), log=log)
        results["compare_mr_word2vec"] = run(
            _mr(args.data, work / ("mr_recipe" if recipe else "compare_mr_word2vec"),
                "--init-from", str(out / "latest"), *FINE_TUNE), log=log)
        minutes = args.compare_minutes or results["compare_word2vec"]["train_seconds"] / 60
        steps = round(minutes * MLM_STEPS_PER_MINUTE)
        seconds = minutes * 60
        for arm, arm_steps in {"mlm": steps, "electra": round(steps / ELECTRA_STEP_COST)}.items():
            out = work / f"compare_{arm}"
            results[f"compare_{arm}"] = run(_masked(arm, corpus, arm_steps, out),
                                            seconds=seconds, log=log)
            results[f"compare_mr_{arm}"] = run(
                _mr(args.data, work / f"compare_mr_{arm}", "--init-from", str(out / "latest"),
                    *FINE_TUNE), log=log)
    _print_tables(results)
    return _write(results, args.out)


def _previous(out: str) -> dict:
    """The runs earlier stages wrote to the results file (none if there is none)."""
    try:
        with open(out, encoding="utf-8") as f:
            stored = json.load(f)
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in stored.items()
            if k in RUNS or k in {f"mr_recipe_{c}" for c in CHOICES}
            or k.startswith(("compare_", "seed_"))}


def _write(results: dict, out: str) -> int:
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {out}")
    return 0


def _minutes(r: dict) -> str:
    return f"{r['train_seconds'] / 60:.1f} min"


def _print_tables(r: dict) -> None:
    if "recipe" in r:
        print(f"\nrecipe: word2vec, {r['recipe']['steps']:,} steps, {_minutes(r['recipe'])} of "
              f"pretraining, {r['recipe']['tokens_per_s']:,.0f} words/s")
    print("\n| set | from scratch | from scratch, fine-tuning's lr decay | pretrained | "
          "fine-tuning (pretrained) |")
    print("|---|---|---|---|---|")
    for name in ("mr", "imdb"):
        scratch, tuned = r.get(f"{name}_scratch"), r.get(f"{name}_recipe")
        same = r.get(f"{name}_scratch_tuned")
        if scratch and tuned:
            same_acc = f"{same['val_acc']:.3f}" if same else "-"
            print(f"| {name.upper()} | {scratch['val_acc']:.3f} | {same_acc} | "
                  f"{tuned['val_acc']:.3f} | {_minutes(tuned)} |")
    for name, key in (("MR", "mr_recipe_pooling_max"), ("IMDB", "imdb_pooling_max")):
        if key in r:
            print(f"{name} after word2vec with max pooling: {r[key]['val_acc']:.3f} "
                  f"({_minutes(r[key])})")
    seeds = [s for s in MORE_SEEDS if f"seed_mr_recipe_{s}" in r and "mr_recipe" in r]
    if seeds:
        print("\n| MR val accuracy by fine-tuning seed | " + " | ".join(
            ["1337 (default)", *map(str, seeds)]) + " | mean |")
        print("|---|" + "---|" * (len(seeds) + 2))
        arms = {"scratch": "mr_scratch", "recipe": "mr_recipe",
                "pooling_max": "mr_recipe_pooling_max"}
        for arm, first in arms.items():
            if first not in r or not all(f"seed_mr_{arm}_{s}" in r for s in seeds):
                continue
            accs = [r[first]["val_acc"], *(r[f"seed_mr_{arm}_{s}"]["val_acc"] for s in seeds)]
            print(f"| {arm} | " + " | ".join(f"{a:.3f}" for a in accs)
                  + f" | {statistics.mean(accs):.3f} |")
    choices = [k for k in r if k.startswith("mr_recipe_")]
    if choices:
        print("\n| fine-tuning the encoder on MR | val accuracy |\n|---|---|")
        print(f"| {' '.join(FINE_TUNE)} (the recipe's) | {r['mr_recipe']['val_acc']:.3f} |")
        for key in choices:
            print(f"| {key.removeprefix('mr_recipe_')} | {r[key]['val_acc']:.3f} |")
    if "compare_mr_electra" in r:
        print("\n| objective (equal minutes) | steps | pretraining | tokens/s | MR val accuracy |")
        print("|---|---|---|---|---|")
        for arm, label in (("word2vec", "word2vec, one pass"), ("mlm", "masked LM"),
                           ("electra", "replaced-token detection")):
            print(f"| {label} | {r[f'compare_{arm}']['steps']:,} | "
                  f"{_minutes(r[f'compare_{arm}'])} | {r[f'compare_{arm}']['tokens_per_s']:,.0f} "
                  f"| {r[f'compare_mr_{arm}']['val_acc']:.3f} |")


if __name__ == "__main__":
    sys.exit(main())
