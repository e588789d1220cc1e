"""Random JSON documents and random bytes thrown at every file reader, through the command-line
tools (issue 12's "done when"): each ends in one ``error:`` line and exit status 2 (or is
accepted, when the document happens to be valid), never in a traceback, and no file changes.

Documents are drawn three ways: any JSON value, the valid file with one value replaced (or
removed, or nested deeply), and raw bytes (also the valid file cut short or with bytes
flipped). The outcomes are tallied per reader and printed at the end (``pytest -s``).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minigrad_lm import generate, plot, train
from minigrad_lm.io.files import CheckpointError, load_safetensors, safetensors_bytes
from tests.cli_support import TINY, run_train, set_file, snapshot, write_corpus
from tests.train.test_hostile_input import _hf_folder

FUZZ = settings(max_examples=30, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))
# After every file is read and checked, a batch this large is refused by the memory estimate:
# an accepted input then stops before training, so nothing is written.
HUGE_BATCH = ["--batch-size", str(10**12)]

OUTCOMES: dict[str, Counter] = defaultdict(Counter)


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    total = sum(sum(c.values()) for c in OUTCOMES.values())
    print(f"\nfuzzed readers: {total} hostile inputs")
    for reader, counts in sorted(OUTCOMES.items()):
        print(f"  {reader}: " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))


# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------

SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=2**62)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)
HOSTILE_TEXTS = st.sampled_from([
    "[" * 100_000 + "]" * 100_000, '{"a":' * 5000 + "1" + "}" * 5000, "1e400", "-1e400",
    "NaN", "[Infinity]", "9" * 5000, '"' + "x" * 100_000 + '"', "", " ", "\ufeff{}", "{",
    "null", "[]", '{"__proto__": {}}',
])


DEEP_MARK, DEEP = '"<deep>"', "[" * 3000 + "1" + "]" * 3000


@st.composite
def mutated(draw, doc):
    """The text of ``doc`` with one value (at any depth) replaced by any JSON value, removed or
    wrapped in deep nesting."""
    doc = json.loads(json.dumps(doc))
    if not isinstance(doc, (dict, list)) or not doc:
        return json.dumps(draw(JSON))
    parent, key = None, None
    node = doc
    while isinstance(node, (dict, list)) and node and (parent is None or draw(st.booleans())):
        keys = sorted(node) if isinstance(node, dict) else list(range(len(node)))
        parent, key = node, draw(st.sampled_from(keys))
        node = parent[key]
    how = draw(st.sampled_from(["replace", "replace", "remove", "nest"]))
    if how == "remove":
        del parent[key]
    elif how == "nest":
        parent[key] = DEEP_MARK.strip('"') if draw(st.booleans()) else [node]
    else:
        parent[key] = draw(JSON)
    return json.dumps(doc).replace(DEEP_MARK, DEEP)


def documents(valid) -> st.SearchStrategy[bytes]:
    """Bytes of hostile JSON files: any document, the valid one mutated, hostile texts."""
    docs = st.one_of(JSON.map(json.dumps), mutated(valid), mutated(valid)) | HOSTILE_TEXTS
    return docs.map(lambda text: text.encode("utf-8", "surrogatepass"))


def damaged(valid: bytes) -> st.SearchStrategy[bytes]:
    """The valid bytes cut short or with a few bytes changed, or random bytes."""
    cut = st.integers(0, max(0, len(valid) - 1)).map(lambda n: valid[:n])

    @st.composite
    def flipped(draw):
        data = bytearray(valid)
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        return bytes(data)

    return st.binary(max_size=300) | cut | flipped()


# --------------------------------------------------------------------------------------------
# Running a tool
# --------------------------------------------------------------------------------------------

_CATEGORIES = [
    ("nested too deeply", r"nested (deeper|too deeply)"), ("not UTF-8", r"not UTF-8"),
    ("not finite", r"not a finite number|must be .*finite"),
    ("malformed JSON or TOML", r"malformed JSON|not valid JSON|not a JSON record|invalid TOML"),
    ("wrong type or range", r"expected |must be |is not an integer|too large|negative"),
    ("missing or unknown key", r"lacks|unknown (key|option)|unknown dtype|unknown tokenizer"),
    ("memory estimate", r"needs about"), ("checksum", r"corrupted|not listed"),
    ("not safetensors", r"\.safetensors: (not a safetensors|truncated|\d+ trailing|tensor )"),
    ("does not fit the model", r"does not (fit|match)|differs|vocabulary of"),
]


def _category(line: str) -> str:
    for name, pattern in _CATEGORIES:
        if re.search(pattern, line):
            return f"refused ({name})"
    return "refused (other)"


def run_tool(reader: str, main, argv: list, folder: Path, accepted: str | None = None) -> None:
    """``main(argv)`` must end in exit 0, or 2 with one ``error:`` line; ``folder`` unchanged.
    An error line matching ``accepted`` is the planned stop after every file was read."""
    before = _tree(folder)
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main([str(a) for a in argv])  # any exception fails the test, with its input
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    assert _tree(folder) == before
    if code == 0:
        OUTCOMES[reader]["accepted"] += 1
        return
    assert code == 2, (code, err.getvalue())
    assert len(lines) == 1 and lines[0].startswith("error: "), err.getvalue()
    assert len(lines[0]) < 800
    if accepted is not None and re.search(accepted, lines[0]):
        OUTCOMES[reader]["accepted, then the planned stop"] += 1
    else:
        OUTCOMES[reader][_category(lines[0])] += 1


def _tree(folder: Path) -> tuple:
    """Every file's hash and every folder: to prove that nothing changed."""
    return snapshot(folder), sorted(str(p) for p in folder.rglob("*") if p.is_dir())


# --------------------------------------------------------------------------------------------
# Fixtures: one run, one Hugging Face folder; each example edits a file and puts it back
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    corpus = write_corpus(root, n_words=400)
    run = root / "run"
    assert run_train("--data", corpus, "--out", run, "--max-steps", "2", "--eval-every", "2",
                     *TINY) == 0
    hf = _hf_folder(root / "gpt2", vocab=300)
    originals = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    yield root, corpus, run, hf, originals


def restore(originals: dict[Path, bytes], root: Path) -> None:
    for path in [p for p in root.rglob("*") if p.is_file() and p not in originals]:
        path.unlink()
    for path, data in originals.items():
        if path.read_bytes() != data:
            path.write_bytes(data)


def _valid_json(path: Path):
    return json.loads(path.read_text())


CHECKPOINT_JSON = ["config.json", "tokenizer.json", "state.json", "optimizer.json",
                   "checksums.json"]


@pytest.mark.parametrize("fname", CHECKPOINT_JSON)
def test_checkpoint_json_files(world, fname):
    root, corpus, run, _, originals = world
    ckpt = run / "latest"

    @FUZZ
    @given(data=documents(_valid_json(ckpt / fname)))
    def fuzz(data):
        try:
            set_file(ckpt, fname, data, checksum=fname != "checksums.json")
            # --resume reads every file of the checkpoint; at step 2 of --max-steps 2 it then
            # stops with one line, having written nothing.
            run_tool(f"checkpoint {fname} (train --resume)", train.main,
                     ["--data", corpus, "--out", run, "--resume", "--max-steps", "2", *TINY],
                     root, accepted=r"is at step 2, not below --max-steps 2")
        finally:
            restore(originals, root)

    fuzz()


@pytest.mark.parametrize("fname", ["model.safetensors", "optimizer.safetensors"])
def test_checkpoint_safetensors(world, fname):
    root, corpus, run, _, originals = world
    ckpt = run / "latest"
    valid = (ckpt / fname).read_bytes()
    tensors = load_safetensors(ckpt / fname)[0]
    header_len = int.from_bytes(valid[:8], "little")
    header = json.loads(valid[8:8 + header_len])

    def with_header(doc: bytes) -> bytes:
        return len(doc).to_bytes(8, "little") + doc + valid[8 + header_len:]

    files = damaged(valid) | documents(header).map(with_header) | st.just(safetensors_bytes({}))
    files |= st.just(safetensors_bytes({k: v[..., :1] for k, v in tensors.items()}))

    @FUZZ
    @given(data=files)
    def fuzz(data):
        try:
            set_file(ckpt, fname, data)
            run_tool(f"checkpoint {fname} (train --resume)", train.main,
                     ["--data", corpus, "--out", run, "--resume", "--max-steps", "2", *TINY],
                     root, accepted=r"is at step 2, not below --max-steps 2")
        finally:
            restore(originals, root)

    fuzz()


@given(data=st.binary(max_size=400))
@FUZZ
def test_safetensors_reader_raises_only_checkpoint_errors(tmp_path_factory, data):
    path = tmp_path_factory.getbasetemp() / "fuzz.safetensors"
    path.write_bytes(data)
    try:
        load_safetensors(path)
        OUTCOMES["load_safetensors (random bytes)"]["accepted"] += 1
    except CheckpointError as e:
        assert "fuzz.safetensors" in str(e) and len(str(e)) < 500
        OUTCOMES["load_safetensors (random bytes)"][_category(str(e))] += 1


@pytest.mark.parametrize("fname", ["config.json", "vocab.json", "tokenizer.json",
                                   "model.safetensors.index.json", "merges.txt"])
def test_hugging_face_folder_files(world, fname):
    root, _, _, hf, originals = world
    if fname == "tokenizer.json":
        valid = {"model": {"type": "BPE", "vocab": _valid_json(hf / "vocab.json"),
                           "merges": []}, "added_tokens": [], "normalizer": None}
    elif fname == "model.safetensors.index.json":
        valid = {"metadata": {}, "weight_map": {"wte.weight": "model.safetensors"}}
    elif fname == "merges.txt":
        valid = None
    else:
        valid = _valid_json(hf / fname)
    files = (documents(valid) if valid is not None else st.text(max_size=200).map(str.encode))
    files |= damaged((hf / fname).read_bytes()) if (hf / fname).exists() else st.nothing()

    @FUZZ
    @given(data=files)
    def fuzz(data):
        try:
            if fname == "model.safetensors.index.json":
                (hf / "model.safetensors").rename(hf / "shard.safetensors")
            (hf / fname).write_bytes(data)
            run_tool(f"Hugging Face {fname} (generate)", generate.main,
                     ["--ckpt", hf, "--prompt", "ab", "--max-new-tokens", "2", "--seed", "0"],
                     root)
        finally:
            if (hf / "shard.safetensors").exists():
                (hf / "shard.safetensors").rename(hf / "model.safetensors")
            restore(originals, root)

    fuzz()


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_config_files(world, suffix):
    root, corpus, _, _, originals = world
    valid = {"lr": 0.001, "n_layer": 2, "dropout": 0.1, "tokenizer": "byte", "seed": 3}
    texts = documents(valid) if suffix == ".json" else st.one_of(
        st.text(max_size=200), st.sampled_from(["lr = inf", "a = " + "[" * 5000, "x = 1",
                                                "lr = 1e400", "seed = -1"])).map(str.encode)

    @FUZZ
    @given(data=texts | st.binary(max_size=200))
    def fuzz(data):
        try:
            (root / f"config{suffix}").write_bytes(data)
            # The flags win over the file: the run folder and the data stay ours.
            run_tool(f"--config {suffix}", train.main,
                     ["--config", root / f"config{suffix}", "--data", corpus,
                      "--out", root / "new", *HUGE_BATCH], root, accepted="needs about")
        finally:
            restore(originals, root)

    fuzz()


def test_classification_files(world):
    root, _, _, _, originals = world
    rows = "sentence\tlabel\nthe good film\t1\na dull one\t0\n"
    lines = st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=30)
                     | st.sampled_from(["x\t99999999999999999999999", "x\t1000000000", "x\t-1",
                                        "x\t1e3", "\t1", "sentence\tlabel", "a\tb\tc"]),
                     max_size=5).map(lambda ls: "sentence\tlabel\n" + "\n".join(ls))
    files = lines.map(str.encode) | damaged(rows.encode())

    @FUZZ
    @given(data=files, suffix=st.sampled_from([".tsv", ".csv"]))
    def fuzz(data, suffix):
        try:
            path = root / f"train{suffix}"
            path.write_bytes(data)
            run_tool(f"classification {suffix}", train.main,
                     ["--task", "classify", "--data", path, "--val-data", path, "--out",
                      root / "new", *TINY, *HUGE_BATCH], root, accepted="needs about")
        finally:
            restore(originals, root)

    fuzz()


def test_token_folder_vocab_json(world):
    root, _, _, _, originals = world
    folder = root / "tokens"
    folder.mkdir()
    np.arange(300, dtype="<u2").tofile(folder / "train.bin")
    np.arange(300, dtype="<u2").tofile(folder / "val.bin")
    originals.update({p: p.read_bytes() for p in folder.iterdir()})

    @FUZZ
    @given(data=documents({"vocab_size": 300}) | documents({"type": "byte"}))
    def fuzz(data):
        try:
            (folder / "vocab.json").write_bytes(data)
            run_tool("token folder vocab.json", train.main,
                     ["--data", folder, "--out", root / "new", *TINY, *HUGE_BATCH], root,
                     accepted="needs about")
        finally:
            restore(originals, root)

    fuzz()


def test_metrics_jsonl(world):
    pytest.importorskip("matplotlib")  # plot's optional extra
    root, _, run, _, originals = world
    record = {"kind": "eval", "step": 2, "train_loss": 3.0, "val_loss": 3.1, "val_acc": 0.1}
    png = root.parent / f"{root.name}-loss.png"  # the one file plot may write
    lines = st.lists(documents(record).map(lambda b: b.replace(b"\n", b" ")), min_size=1,
                     max_size=3).map(lambda ls: b"\n".join(ls) + b"\n")

    @FUZZ
    @given(data=lines | damaged((run / "metrics.jsonl").read_bytes()))
    def fuzz(data):
        try:
            (run / "metrics.jsonl").write_bytes(data)
            run_tool("metrics.jsonl (plot)", plot.main, [run, "--output", png], root)
        finally:
            png.unlink(missing_ok=True)
            restore(originals, root)

    fuzz()
