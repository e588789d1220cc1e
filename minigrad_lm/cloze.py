"""Make cloze questions from unlabelled text, as a SQuAD file for ``--task qa`` (pretraining).

    python -m minigrad_lm.cloze ../shared/data/wikipedia/enwiki-2015-part.txt.gz \\
        --out runs/cloze.json --questions 40000

Each line of the text files (gzip or not) is a document; its passages keep their sentences
and a name or number of one sentence is asked for by a noisy paraphrase of it
(minigrad_lm/data/cloze.py). --exclude names SQuAD files whose contexts are held out: a
document that shares a run of 13 words with one of them makes no questions, so that pretraining
never reads the text it is evaluated on. The file is written once every option and input has
been checked; an existing --out is kept unless --overwrite.
"""
from __future__ import annotations

import argparse
import os
import sys
from itertools import chain

from .cli import report_errors
from .data.cloze import cloze_articles, shingles
from .data.qa import read_qa
from .data.streaming import iter_lines
from .io.files import atomic_write_bytes, json_text
from .io.untrusted import MAX_JSON_BYTES, require_regular_file

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m minigrad_lm.cloze",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", metavar="TEXT",
                        help="text files, one document a line (gzip read as such)")
    parser.add_argument("--out", required=True, help="the SQuAD JSON file to write")
    parser.add_argument("--questions", type=int, default=40_000,
                        help="how many questions to make (default: 40000)")
    parser.add_argument("--seed", type=int, default=0,
                        help="draws the sentences and answers (default: 0)")
    parser.add_argument("--exclude", nargs="+", default=[], metavar="SQUAD_JSON",
                        help="SQuAD files whose contexts no question may come from")
    parser.add_argument("--encoding", default="utf-8", help="of the text files")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser


def _make(args: argparse.Namespace) -> int:
    if args.questions < 1:
        raise ValueError(f"--questions must be >= 1, got {args.questions}")
    for path in args.files:
        require_regular_file(path)
    folder = os.path.dirname(os.path.abspath(args.out))
    parent = folder
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"--out {args.out}: {parent} is not a folder")
    if os.path.isdir(args.out):
        raise ValueError(f"--out {args.out}: is a folder")
    if os.path.exists(args.out) and not args.overwrite:
        raise ValueError(f"--out {args.out}: exists (give --overwrite to replace it)")
    held_out = None
    if args.exclude:
        contexts = {e.context for e in read_qa(args.exclude).examples}
        held_out = set().union(*map(shingles, contexts))
    documents = chain.from_iterable(iter_lines(p, args.encoding) for p in args.files)
    articles, size, made = [], 0, 0
    for article in cloze_articles(documents, args.questions, args.seed, held_out):
        made += sum(len(p["qas"]) for p in article["paragraphs"])
        articles.append(json_text(article, indent=None))
        size += len(articles[-1]) + 1
        if size > MAX_JSON_BYTES:  # stopped before the questions fill the memory
            raise ValueError(f"--questions {args.questions}: the file would hold more than "
                             f"{MAX_JSON_BYTES:,} bytes, what --task qa reads; ask for fewer")
    if not made:
        raise ValueError(f"{', '.join(args.files)}: no sentence yields a question (none has "
                         "a name or a number after its first word)")
    os.makedirs(folder, exist_ok=True)
    atomic_write_bytes(args.out, ('{"version":"1.1","data":[' + ",".join(articles) + "]}"
                                  ).encode("utf-8"))
    short = " (all the text yields)" if made < args.questions else ""
    print(f"{made:,} cloze questions{short} about {len(articles):,} documents: {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return report_errors(lambda: _make(args))


if __name__ == "__main__":
    sys.exit(main())
