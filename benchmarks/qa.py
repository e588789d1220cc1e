"""Question answering on real data: bAbI's 20 tasks (1k) and SQuAD v1.1 held-out articles.

    python -m benchmarks.qa [--data ../shared/data] [--arms babi squad]
        [--babi-reading facts|tokens] [--babi-epochs N] [--babi-seeds 1337 ...]
        [--squad-epochs 2] [--init-from DIR] [--cloze TEXT...] [--smoke]

bAbI: one model trained jointly on the 20 tasks' training files (18,013 questions; 20
separate models would cost 20 runs), validated on their valid files; reported as the error
per task, the mean error and the failed tasks (error > 5%); ``--babi-seeds`` repeats the run
with other seeds (its error moves by a few points with the seed) and adds their mean. The
model reads each story as
facts (``--qa-input facts``, the default for bAbI); ``--babi-reading tokens`` measures the
``[CLS] question [SEP] story`` token windows instead. SQuAD: the 38 articles of
``squad/train.json`` split by article, every 5th held out (articles 5, 10, ..., 35); exact
match and F1 on the held-out articles of readers trained on the others: from scratch with
learned positions instead of ALiBi (``--positional learned``), without the question match
(``--no-question-match``) and with both defaults, from ``--init-from`` (a
pretrained encoder: word2vec's, a masked LM's, or a GPT-2 folder), and with ``--cloze TEXT``
from a span reader pretrained on cloze questions made from that text (``python -m
minigrad_lm.cloze``, the documents that hold any of the SQuAD file's articles left out),
itself started from ``--init-from`` when given. Every run goes through the training CLI as a
user would type it, and the best checkpoint is scored by ``python -m minigrad_lm.evaluate``'s
function. ``--smoke`` runs a tiny model for a few steps on a slice of the data (a check that
the benchmark works, in about a minute; its figures mean nothing and are not written).
Results go to benchmarks/results/qa_babi.json (qa_babi_tokens.json for the token reading) and
qa_squad.json. Skips with a message when the data is not there.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from minigrad_lm import cloze
from minigrad_lm.evaluate import evaluate
from minigrad_lm.checkpoints.folder import read_checkpoint

from .harness import cli_training, machine

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BABI_TASKS = range(1, 21)
SQUAD_EVERY = 5
# The recipes (2 CPU cores). bAbI read as facts: the question and up to 255 facts a story (all
# of bAbI's); read as tokens: a 3-layer encoder on [CLS] question [SEP] story windows.
BABI_RECIPES = {
    "facts": ["--qa-input", "facts", "--n-layer", "2", "--d-model", "64", "--n-head", "4",
              "--context", "256", "--lr", "3e-3", "--batch-size", "32", "--dropout", "0.1",
              "--lowercase"],
    "tokens": ["--qa-input", "tokens", "--n-layer", "3", "--d-model", "128", "--n-head", "4",
               "--context", "256", "--lr", "1e-3", "--batch-size", "32", "--dropout", "0.1",
               "--lowercase"],
}
BABI_EPOCHS = {"facts": 50, "tokens": 8}
SQUAD_VOCABULARY = ["--lowercase", "--vocab-size", "20000"]
SQUAD_SHAPE = ["--n-layer", "3", "--d-model", "128", "--n-head", "4", "--context", "256",
               *SQUAD_VOCABULARY]
SQUAD_TRAINING = ["--lr", "1e-3", "--batch-size", "32", "--dropout", "0.1"]
CLOZE_QUESTIONS = 40_000  # one epoch of them: about 7 minutes of pretraining
SMOKE_SHAPE = ["--n-layer", "1", "--d-model", "32", "--n-head", "2"]
SMOKE = ["--max-steps", "12", "--eval-every", "12", "--batch-size", "8", "--log-every", "4"]


def _train(argv: list[str]) -> dict:
    """One training run through the CLI: its time, median tokens/s and best eval."""
    print(f"python -m minigrad_lm.train {shlex.join(argv)}", flush=True)
    seconds, evals, steps = cli_training(argv)
    best = max(evals, key=lambda r: r["val_f1"])
    return {"argv": argv, "train_seconds": seconds, "steps": evals[-1]["step"],
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in steps),
            "best_step": best["step"], "val_f1_by_eval": [round(r["val_f1"], 2) for r in evals]}


def _score(run_dir: str, files: list[str]) -> dict:
    ckpt = read_checkpoint(run_dir)
    start = time.perf_counter()
    metrics = evaluate(ckpt, ckpt.build_model(), files)
    return {**metrics, "eval_seconds": time.perf_counter() - start}


def babi(data: Path, tmp: str, reading: str, epochs: int, extra: list[str], smoke: bool,
         seeds: list[int]) -> dict:
    """The first seed's run, with the other seeds' runs under ``more_seeds``: a run's mean
    error moves by a few points with its seed (or its float rounding), so several say more."""
    tasks = list(BABI_TASKS)[:3] if smoke else list(BABI_TASKS)
    train_files = [str(data / "babi" / f"qa{t}_train.txt") for t in tasks]
    valid_files = [str(data / "babi" / f"qa{t}_valid.txt") for t in tasks]
    # evaluated once an epoch (563 steps of 32 questions): scoring 1,987 questions costs time
    length = ([*SMOKE_SHAPE, *SMOKE] if smoke else
              ["--epochs", str(epochs), "--log-every", "100", "--eval-every", "563"])
    runs = []
    for seed in seeds:
        out = f"{tmp}/babi_{seed}"
        run = _train(["--task", "qa", "--data", *train_files, "--val-data", *valid_files,
                      *BABI_RECIPES[reading], *extra, *length, "--seed", str(seed),
                      "--out", out])
        run["valid"] = _score(out, valid_files)
        runs.append(run)
    first = runs[0]
    if len(runs) > 1:
        first["more_seeds"] = {str(seed): run for seed, run in zip(seeds[1:], runs[1:])}
        first["mean_error_over_seeds"] = statistics.mean(
            run["valid"]["babi"]["mean_error"] for run in runs)
    return first


def _split_squad(path: Path, tmp: str, smoke: bool) -> tuple[str, str, int, int]:
    """Write the training and held-out articles (every SQUAD_EVERY-th) as two SQuAD files."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    articles = doc["data"][:10] if smoke else doc["data"]
    held = [a for i, a in enumerate(articles, 1) if i % SQUAD_EVERY == 0]
    kept = [a for i, a in enumerate(articles, 1) if i % SQUAD_EVERY]
    files = []
    for name, part in (("train", kept), ("heldout", held)):
        out = os.path.join(tmp, f"squad_{name}.json")
        with open(out, "w", encoding="utf-8") as f:
            json.dump({"version": doc.get("version", "1.1"), "data": part}, f)
        files.append(out)
    return files[0], files[1], len(kept), len(held)


def _cloze_reader(data: Path, tmp: str, text: list[str], start: list[str], shape: list[str],
                  extra: list[str], smoke: bool) -> dict:
    """Cloze questions from ``text`` (documents holding any of the SQuAD file's articles left
    out), and a span reader pretrained on them for one epoch (every 20th article validates)."""
    questions = os.path.join(tmp, "cloze.json")
    count = 400 if smoke else CLOZE_QUESTIONS
    argv = [*text, "--out", questions, "--questions", str(count), "--exclude",
            str(data / "squad" / "train.json")]
    print(f"python -m minigrad_lm.cloze {shlex.join(argv)}", flush=True)
    started = time.perf_counter()
    if cloze.main(argv) != 0:
        raise RuntimeError("the cloze questions could not be made")
    made = time.perf_counter() - started
    length = SMOKE if smoke else ["--epochs", "1", "--log-every", "100"]
    run = _train(["--task", "qa", "--data", questions, "--val-every-nth", "2" if smoke else "20",
                  *SQUAD_TRAINING, *(start or shape), *extra, *length,
                  "--out", f"{tmp}/cloze_reader"])
    return {**run, "questions": count, "making_seconds": made}


def squad(data: Path, tmp: str, epochs: int, extra: list[str], init_from: str | None,
          cloze_text: list[str], smoke: bool) -> dict:
    train_file, held_file, n_train, n_held = _split_squad(data / "squad" / "train.json", tmp,
                                                          smoke)
    length = SMOKE if smoke else ["--epochs", str(epochs), "--log-every", "100"]
    common = ["--task", "qa", "--data", train_file, "--val-data", held_file, *SQUAD_TRAINING]
    results: dict = {"train_articles": n_train, "heldout_articles": n_held}
    shape = [*SQUAD_SHAPE, *(SMOKE_SHAPE if smoke else [])]
    start = ["--init-from", init_from] if init_from else []
    if init_from:
        # the pretrained encoder brings its shape and tokenizer; from scratch gets the same
        # shape (and a vocabulary of its own), so the arms differ in their start alone
        c = read_checkpoint(init_from).model_config
        shape = ["--n-layer", str(c.n_layer), "--d-model", str(c.d_model), "--n-head",
                 str(c.n_head), "--context", str(c.context_length), *SQUAD_VOCABULARY]
    arms = {"scratch_learned": [*shape, "--positional", "learned"],
            "scratch_no_match": [*shape, "--no-question-match"], "scratch": shape}
    if init_from:
        arms["pretrained"] = start
    if cloze_text:
        results["cloze_reader"] = _cloze_reader(data, tmp, cloze_text, start, shape, extra,
                                                smoke)
        arms["cloze"] = ["--init-from", f"{tmp}/cloze_reader/latest"]
    for name, begin in arms.items():
        argv = [*common, *begin, *extra, *length, "--out", f"{tmp}/squad_{name}"]
        results[name] = _train(argv)
        results[name]["heldout"] = _score(f"{tmp}/squad_{name}", [held_file])
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="the shared data folder (babi/, squad/)")
    parser.add_argument("--arms", nargs="+", choices=("babi", "squad"), default=["babi", "squad"])
    parser.add_argument("--babi-reading", choices=tuple(BABI_RECIPES), default="facts",
                        help="how the bAbI model reads a story (default: facts)")
    parser.add_argument("--babi-epochs", type=int,
                        help="default: " + ", ".join(f"{n} read as {r}"
                                                     for r, n in BABI_EPOCHS.items()))
    parser.add_argument("--babi-seeds", type=int, nargs="+", default=[1337], metavar="SEED",
                        help="bAbI runs, one a seed (default: 1337, the CLI's default seed)")
    parser.add_argument("--squad-epochs", type=int, default=2)
    parser.add_argument("--init-from", metavar="DIR",
                        help="a pretrained encoder (or GPT-2 folder) for the SQuAD arm")
    parser.add_argument("--cloze", nargs="+", metavar="TEXT", default=[],
                        help="text to make cloze questions from: a span reader pretrained on "
                             "them (from --init-from, if given) is fine-tuned on SQuAD too")
    parser.add_argument("--train-args", default="", metavar="'FLAGS'",
                        help="more training flags for every run (e.g. '--n-layer 4')")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny model, few steps, slices of the data: checks the benchmark")
    parser.add_argument("--results", default="benchmarks/results")
    args = parser.parse_args(argv)
    needed = {"babi": args.data / "babi" / "qa1_train.txt",
              "squad": args.data / "squad" / "train.json"}
    extra = shlex.split(args.train_args)
    os.makedirs(args.results, exist_ok=True)
    for arm in args.arms:
        if not needed[arm].is_file():
            print(f"skipped {arm}: {needed[arm]} is not there")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            result = (babi(args.data, tmp, args.babi_reading,
                           args.babi_epochs or BABI_EPOCHS[args.babi_reading], extra, args.smoke,
                           args.babi_seeds)
                      if arm == "babi" else
                      squad(args.data, tmp, args.squad_epochs, extra, args.init_from,
                            args.cloze, args.smoke))
        result["machine"] = machine()
        _print_table(arm, result)
        if not args.smoke:
            tokens = arm == "babi" and args.babi_reading == "tokens"
            out = os.path.join(args.results, f"qa_{arm}{'_tokens' if tokens else ''}.json")
            with open(out, "w", encoding="utf-8") as f:
                json.dump(result, f, indent=2)
            print(f"wrote {out}")
    return 0


def _print_table(arm: str, r: dict) -> None:
    if arm == "babi":
        b = r["valid"]["babi"]
        print("\n| task | " + " | ".join(b["task_accuracy"]) + " |")
        print("|---|" + "---|" * len(b["task_accuracy"]))
        print("| valid error | " + " | ".join(f"{1 - a:.1%}" for a in b["task_accuracy"].values())
              + " |")
        print(f"\nbAbI mean error {b['mean_error']:.1%}, failed tasks {b['failed_tasks']} "
              f"of {len(b['task_accuracy'])}; {r['train_seconds'] / 60:.1f} min of training, "
              f"{r['tokens_per_s']:,.0f} tokens/s")
        for seed, run in r.get("more_seeds", {}).items():
            other = run["valid"]["babi"]
            print(f"seed {seed}: mean error {other['mean_error']:.1%}, failed tasks "
                  f"{other['failed_tasks']}; {run['train_seconds'] / 60:.1f} min")
        if "mean_error_over_seeds" in r:
            print(f"mean error over the {1 + len(r['more_seeds'])} seeds: "
                  f"{r['mean_error_over_seeds']:.1%}")
        return
    print("\n| SQuAD held-out articles | EM | F1 | wall time | tokens/s |")
    print("|---|---|---|---|---|")
    for name in ("scratch_learned", "scratch_no_match", "scratch", "pretrained", "cloze"):
        if name in r:
            run, h = r[name], r[name]["heldout"]
            print(f"| {name} | {h['exact_match']:.1f} | {h['f1']:.1f} | "
                  f"{run['train_seconds'] / 60:.1f} min | {run['tokens_per_s']:,.0f} |")


if __name__ == "__main__":
    sys.exit(main())
