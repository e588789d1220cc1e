"""Pretraining that pays: an encoder pretrained on IMDB's 50,000 unlabelled reviews, fine-tuned
on Movie Review (sentences) and on IMDB's labelled reviews (documents), next to the same
classifiers trained from scratch; and the two pretraining objectives, the masked LM and
ELECTRA's replaced-token detection, compared at equal minutes by the MR accuracy they give.

    python -m benchmarks.pretrain [--data ../shared/data] [--work runs/pretrain_bench]
        [--compare-minutes 13] [--recipe-steps 2000] [--imdb-steps 100]

Stages, each a training run through the CLI exactly as a user would type it (printed):
1. the corpus tokenized once into a token cache (word-level, lower-cased, 20,000 tokens);
2. the masked LM and ELECTRA, each for ``--compare-minutes`` of training (stopped by SIGINT,
   which saves the checkpoint of the step it is at; ELECTRA gets the minutes the masked LM
   trained), each on the learning-rate schedule of the whole recipe;
3. MR fine-tunes from scratch and from each objective; the objective with the better MR
   accuracy is the recipe, and fine-tuning choices (layer-wise lr decay, lr, epochs) are
   measured on it;
4. the recipe's run continued to ``--recipe-steps`` (ELECTRA: as many masked-LM steps' time);
5. MR and IMDB fine-tunes from scratch and from the recipe's encoder.

MR's split: lines 10, 20, ... of each file are validation (Latin-1). IMDB's: lines 20, 40, ...
of each labelled file (1,250 of the 25,000 reviews); its fine-tunes run ``--imdb-steps``. A run
whose folder in ``--work`` already holds a finished run of the same command is reused (its
stored result; for a run stopped by time, whatever its --max-steps cap), so the stages can be
run one at a time (--stop-after). Writes benchmarks/results/pretrain_imdb.json; skips without
the data.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
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
CORPUS = "imdb/unsup.txt.gz"
MR = ("mr/rt-polarity.neg", "mr/rt-polarity.pos")
IMDB = ("imdb/train.neg.txt.gz", "imdb/train.pos.txt.gz")
VOCAB = 20_000
IMDB_EVERY = 20
RESULT = "benchmark_result.json"
STAGES = ("arms", "choices", "all")
# ELECTRA's step costs about this many masked-LM steps (its 1-layer generator runs besides the
# encoder): its cosine is as much shorter, so both schedules end at about the same minute.
ELECTRA_STEP_COST = 9 / 7
# The encoder's shape and the optimizer of pretraining (both objectives).
ENCODER = ["--tokenizer", "word", "--n-layer", "2", "--d-model", "128", "--n-head", "4",
           "--context", "256", "--batch-size", "32", "--dropout", "0.0", "--lr", "1e-3",
           "--min-lr", "1e-4", "--warmup-steps", "200", "--eval-every", "300",
           "--log-every", "100"]


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
    proc = subprocess.Popen(_command(argv), stdout=log, stderr=subprocess.DEVNULL)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--work", type=Path, default=Path("runs/pretrain_bench"),
                        help="run folders (a finished run there is reused)")
    parser.add_argument("--compare-minutes", type=float, default=13.0,
                        help="training minutes of each objective in the comparison")
    parser.add_argument("--recipe-steps", type=int, default=2000,
                        help="masked-LM steps of the recipe (the cosine of both objectives)")
    parser.add_argument("--imdb-steps", type=int, default=100,
                        help="steps of the IMDB fine-tunes (32 reviews each)")
    parser.add_argument("--token-cache", type=Path, default=None,
                        help="folder of token caches (default: token_cache in --work)")
    parser.add_argument("--stop-after", choices=STAGES, default=STAGES[-1],
                        help="run the stages up to this one")
    parser.add_argument("--out", default="benchmarks/results/pretrain_imdb.json")
    args = parser.parse_args(argv)
    needed = [CORPUS, *MR, *IMDB]
    missing = [f for f in needed if not (args.data / f).is_file()]
    if missing:
        print(f"skipped: {', '.join(missing)} not in {args.data}")
        return 0
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = open(work / "runs.log", "a")
    results: dict = {"machine": machine()}
    start = time.perf_counter()
    cache = prepare_token_cache(args.token_cache or work / "token_cache",
                                [str(args.data / CORPUS)],
                                TokenizerRequest("word", VOCAB, lowercase=True),
                                val_every_nth=100)
    results["corpus"] = {"files": [CORPUS], "train_tokens": len(cache.train),
                         "val_tokens": len(cache.val), "vocabulary": VOCAB,
                         "seconds": time.perf_counter() - start}
    corpus = ["--data", str(cache.folder)]
    steps = {"mlm": args.recipe_steps,
             "electra": round(args.recipe_steps / ELECTRA_STEP_COST)}
    arms = {arm: ["--task", arm, *corpus, *ENCODER, "--max-steps", str(steps[arm]),
                  "--decay-steps", str(steps[arm]), "--out", str(work / arm)] for arm in steps}
    results["mlm"] = run(arms["mlm"], seconds=args.compare_minutes * 60, log=log)
    results["electra"] = run(arms["electra"], seconds=results["mlm"]["train_seconds"] + 10,
                             log=log)
    if args.stop_after == "arms":
        return _write(results, args.out)
    mr = {"encoding": "latin-1"}
    tune = {"scratch": _classify(args.data, MR, work / "mr_scratch", **mr)}
    for arm in arms:
        latest = str(work / arm / "latest")
        tune[f"mr_{arm}"] = _classify(args.data, MR, work / f"mr_{arm}", "--init-from", latest,
                                      **mr)
    for name, run_argv in tune.items():
        results[name] = run(run_argv, log=log)
    recipe = max(arms, key=lambda a: results[f"mr_{a}"]["val_acc"])
    results["recipe_objective"] = recipe
    print(f"recipe: {recipe} (MR val {results[f'mr_{recipe}']['val_acc']:.3f})", flush=True)
    choices = {"layer_decay_0.8": ["--layer-decay", "0.8"],
               "lr_5e-4": ["--lr", "5e-4", "--min-lr", "5e-5"]}
    latest = str(work / recipe / "latest")
    for name, flags in choices.items():
        results[f"mr_{recipe}_{name}"] = run(_classify(
            args.data, MR, work / f"mr_{recipe}_{name}", "--init-from", latest, *flags, **mr),
            log=log)
    if args.stop_after == "choices":
        return _write(results, args.out)
    full = work / "recipe"
    if not (full / RESULT).is_file():
        shutil.rmtree(full, ignore_errors=True)
        shutil.copytree(work / recipe, full, ignore=shutil.ignore_patterns(RESULT, "*.lock"))
    results["recipe"] = results[recipe]  # the arm ran its whole schedule in its minutes
    if results[recipe]["steps"] < steps[recipe]:
        results["recipe"] = run(["--out", str(full), "--resume", "--max-steps",
                                 str(steps[recipe]), "--decay-steps", str(steps[recipe])],
                                log=log)
    encoder = str(full / "latest")
    imdb = ["--truncation", "head_tail", "--max-steps", str(args.imdb_steps), "--warmup-steps",
            str(max(1, args.imdb_steps // 10)), "--eval-every", str(max(1, args.imdb_steps // 2))]
    finals = {
        "mr_recipe": _classify(args.data, MR, work / "mr_recipe", "--init-from", encoder, **mr),
        "imdb_scratch": _classify(args.data, IMDB, work / "imdb_scratch", "--context", "256",
                                  "--lowercase", *imdb, every=IMDB_EVERY),
        "imdb_recipe": _classify(args.data, IMDB, work / "imdb_recipe", "--init-from", encoder,
                                 *imdb, every=IMDB_EVERY),
    }
    for name, run_argv in finals.items():
        results[name] = run(run_argv, log=log)
    _print_tables(results)
    return _write(results, args.out)


def _write(results: dict, out: str) -> int:
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {out}")
    return 0


def _minutes(r: dict) -> str:
    return f"{r['train_seconds'] / 60:.1f} min"


def _print_tables(r: dict) -> None:
    print("\n| objective (equal minutes) | steps | pretraining | tokens/s | MR val accuracy |")
    print("|---|---|---|---|---|")
    for arm, label in (("mlm", "masked LM"), ("electra", "replaced-token detection")):
        print(f"| {label} | {r[arm]['steps']:,} | {_minutes(r[arm])} | "
              f"{r[arm]['tokens_per_s']:,.0f} | {r[f'mr_{arm}']['val_acc']:.3f} |")
    recipe = r["recipe_objective"]
    print(f"\n| fine-tuning from the {recipe} encoder on MR | val accuracy |")
    print("|---|---|")
    print(f"| defaults | {r[f'mr_{recipe}']['val_acc']:.3f} |")
    for key in r:
        if key.startswith(f"mr_{recipe}_"):
            print(f"| {key.removeprefix(f'mr_{recipe}_')} | {r[key]['val_acc']:.3f} |")
    print(f"\nrecipe: {recipe}, {r['recipe']['steps']:,} steps, {_minutes(r['recipe'])} of "
          "pretraining")
    print("\n| set | from scratch | pretrained | fine-tuning (pretrained) |")
    print("|---|---|---|---|")
    for name in ("mr", "imdb"):
        scratch, tuned = r[f"{name}_scratch" if name == "imdb" else "scratch"], r[f"{name}_recipe"]
        print(f"| {name.upper()} | {scratch['val_acc']:.3f} | {tuned['val_acc']:.3f} | "
              f"{_minutes(tuned)} |")


if __name__ == "__main__":
    sys.exit(main())
