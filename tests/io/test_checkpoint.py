"""Safetensors format, refusal of foreign/corrupt files, atomic files and checkpoint folders."""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minigrad_lm.io import files as ckpt
from minigrad_lm.io.files import (
    CheckpointError,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    load_safetensors,
    read_json,
    resolve_checkpoint_dir,
    safetensors_bytes,
    save_safetensors,
    write_checkpoint_dir,
)

DTYPES = [
    np.float64,
    np.float32,
    np.float16,
    np.int64,
    np.int32,
    np.int16,
    np.int8,
    np.uint64,
    np.uint32,
    np.uint16,
    np.uint8,
    np.bool_,
]


def _raw_file(path: Path, header: object, data: bytes = b"", pad: bool = True) -> Path:
    """A safetensors-like file with a hand-made header, for corruption tests."""
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    if pad:
        raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    return path


def _entry(dtype: str, shape: list, begin: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def _assert_same(loaded: dict[str, np.ndarray], original: dict[str, np.ndarray]) -> None:
    assert loaded.keys() == original.keys()
    for name, arr in original.items():
        got = loaded[name]
        assert got.shape == arr.shape and got.dtype == arr.dtype.newbyteorder("="), name
        np.testing.assert_array_equal(got, arr)


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------

tensor_dicts = st.dictionaries(
    st.text(min_size=1, max_size=8).filter(lambda s: s != "__metadata__"),
    st.sampled_from(DTYPES).flatmap(
        lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0))
    ),
    max_size=5,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tensors=tensor_dicts, metadata=st.none() | st.dictionaries(st.text(), st.text(), max_size=3))
def test_round_trip_any_dtype_and_shape(tmp_path, tensors, metadata):
    path = tmp_path / "t.safetensors"
    save_safetensors(path, tensors, metadata)
    loaded, meta = load_safetensors(path)
    _assert_same(loaded, tensors)
    assert meta == (metadata or {})
    if len(metadata or {}) <= 1:  # the package writes metadata keys in hash-map order
        assert path.read_bytes() == safetensors_bytes(tensors, metadata)


def test_file_layout_is_the_safetensors_format(tmp_path):
    path = tmp_path / "m.safetensors"
    save_safetensors(
        path, {"b": np.arange(3, dtype=np.int16), "a": np.ones(2, np.float32)}, {"step": "7"}
    )
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert n % 8 == 0
    header = json.loads(raw[8 : 8 + n])
    assert header["__metadata__"] == {"step": "7"}
    assert header["a"] == _entry("F32", [2], 0, 8)  # sorted by name: a first
    assert header["b"] == _entry("I16", [3], 8, 14)
    assert raw[8 + n :] == np.ones(2, "<f4").tobytes() + np.arange(3, dtype="<i2").tobytes()


def test_layout_independent_of_input_order_and_memory_layout(tmp_path):
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    odd = {
        "transposed": base.T,
        "strided": base[:, ::2],
        "big_endian": base.astype(">f8"),
        "scalar": np.array(3.5, dtype=np.float32),
    }
    save_safetensors(tmp_path / "x.safetensors", odd)
    loaded, _ = load_safetensors(tmp_path / "x.safetensors")
    _assert_same(loaded, odd)
    assert loaded["big_endian"].dtype == np.dtype("=f8")


def test_loaded_arrays_are_independent_writable_copies(tmp_path):
    path = tmp_path / "w.safetensors"
    save_safetensors(path, {"w": np.zeros((2, 3), np.float32), "s": np.array(True)})
    loaded, _ = load_safetensors(path)
    for arr in loaded.values():
        assert isinstance(arr, np.ndarray)
        assert arr.flags.writeable and arr.flags.c_contiguous
    assert loaded["s"].shape == ()
    loaded["w"][0, 0] = 5.0
    path.unlink()  # nothing stays mapped to the file
    assert loaded["w"][0, 0] == 5.0


def test_bf16_is_read_as_float32(tmp_path):
    values = np.array([1.5, -2.25, 0.0, 2.0**40, -np.inf], dtype=np.float32)
    bits = (values.view(np.uint32) >> 16).astype("<u2")  # these values are exact in bf16
    path = _raw_file(tmp_path / "bf.safetensors", {"x": _entry("BF16", [5], 0, 10)}, bits.tobytes())
    loaded, _ = load_safetensors(path)
    assert loaded["x"].dtype == np.float32
    np.testing.assert_array_equal(loaded["x"], values)


def test_bool_bytes_other_than_one_are_true(tmp_path):
    path = _raw_file(tmp_path / "b.safetensors", {"m": _entry("BOOL", [3], 0, 3)}, b"\x00\x01\x07")
    np.testing.assert_array_equal(load_safetensors(path)[0]["m"], [False, True, True])


@pytest.mark.parametrize(
    ("tensors", "metadata", "error", "match"),
    [
        ({"c": np.zeros(2, np.complex128)}, None, TypeError, "complex128 cannot be stored"),
        ({"o": np.array([None])}, None, TypeError, "cannot be stored"),
        ({"l": [1.0, 2.0]}, None, TypeError, "expected a numpy.ndarray, got list"),
        ({"__metadata__": np.zeros(1)}, None, ValueError, "reserved"),
        ({"x": np.zeros(1)}, {"step": 3}, TypeError, "str -> str"),
    ],
)
def test_save_refuses_what_safetensors_cannot_hold(tmp_path, tensors, metadata, error, match):
    with pytest.raises(error, match=match):
        save_safetensors(tmp_path / "x.safetensors", tensors, metadata)
    assert list(tmp_path.iterdir()) == []  # not even a temp file is left


def test_interop_with_the_safetensors_package(tmp_path):
    st_numpy = pytest.importorskip("safetensors.numpy")
    tensors = {
        "emb": np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32),
        "half": np.arange(4, dtype=np.float16),
        "ids": np.arange(6, dtype=np.int64).reshape(2, 3),
        "flag": np.array(True),
        "empty": np.zeros((0, 2), np.uint8),
    }
    tensors |= {np.dtype(dt).name: np.arange(6).astype(dt).reshape(3, 2) for dt in DTYPES}
    ours = tmp_path / "ours.safetensors"
    save_safetensors(ours, tensors, {"format": "np"})
    _assert_same(st_numpy.load_file(str(ours)), tensors)

    theirs = tmp_path / "theirs.safetensors"
    st_numpy.save_file(tensors, str(theirs), metadata={"format": "np"})
    loaded, meta = load_safetensors(theirs)
    _assert_same(loaded, tensors)
    assert meta == {"format": "np"}


# --------------------------------------------------------------------------------------------
# Refusing corrupt and foreign files
# --------------------------------------------------------------------------------------------


def _good(tmp_path: Path) -> Path:
    path = tmp_path / "good.safetensors"
    save_safetensors(path, {"a": np.arange(4, dtype=np.float32), "b": np.ones(3, np.int64)})
    return path


def test_refuses_missing_directory_empty_and_tiny_files(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.safetensors: no such file"):
        load_safetensors(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_safetensors(tmp_path)
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.safetensors: empty file"):
        load_safetensors(tmp_path / "empty.safetensors")
    (tmp_path / "tiny.safetensors").write_bytes(b"\x01\x02\x03")
    with pytest.raises(CheckpointError, match=r"only 3 bytes, truncated"):
        load_safetensors(tmp_path / "tiny.safetensors")


def test_refuses_pickle_without_unpickling(tmp_path, monkeypatch):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))

    def forbidden(*args, **kwargs):
        raise AssertionError("something tried to unpickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(np, "load", forbidden)
    with pytest.raises(CheckpointError, match=r"model\.pkl: not a safetensors file.*pickle"):
        load_safetensors(path)


def test_refuses_zip_and_npy(tmp_path):
    pt = tmp_path / "model.pt"  # torch.save writes a zip archive holding a pickle
    with zipfile.ZipFile(pt, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": 1}))
    with pytest.raises(CheckpointError, match=r"model\.pt: not a safetensors file.*zip"):
        load_safetensors(pt)
    npy = tmp_path / "w.npy"
    np.save(npy, np.ones(3), allow_pickle=False)
    with pytest.raises(CheckpointError, match=r"not a safetensors file.*NumPy"):
        load_safetensors(npy)


def test_refuses_random_bytes(tmp_path):
    path = tmp_path / "noise.safetensors"
    rng = np.random.default_rng(1)
    for _ in range(20):
        path.write_bytes(rng.bytes(int(rng.integers(8, 300))))
        with pytest.raises(CheckpointError, match=r"noise\.safetensors"):
            load_safetensors(path)


def test_refuses_truncated_files(tmp_path):
    good = _good(tmp_path)
    raw = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(raw[:-5])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors: truncated \(the header "
                       r"describes 40 data bytes, the file holds 35\)"):
        load_safetensors(cut)
    cut.write_bytes(raw[:40])
    with pytest.raises(CheckpointError, match=r"header length \d+ exceeds file size 40"):
        load_safetensors(cut)


def test_refuses_oversized_header(tmp_path):
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as f:
        f.write((ckpt.MAX_HEADER_BYTES + 8).to_bytes(8, "little"))
        f.truncate(ckpt.MAX_HEADER_BYTES + 100)  # sparse: costs no disk
    with pytest.raises(CheckpointError, match="exceeds the 100000000-byte limit"):
        load_safetensors(path)


def test_trailing_bytes_are_refused(tmp_path):
    path = tmp_path / "t.safetensors"
    path.write_bytes(_good(tmp_path).read_bytes() + b"\x00")
    with pytest.raises(CheckpointError, match="1 trailing bytes"):
        load_safetensors(path)


@pytest.mark.parametrize(
    ("header", "data", "match"),
    [
        (b"\xff\xfe{}", b"", "header is not UTF-8"),
        (b"{not json", b"", "header is not valid JSON"),
        (b'{"a": NaN}', b"", "header is not valid JSON"),
        ([1, 2], b"", "header is a JSON list"),
        (b'{"a": {}, "a": {}}', b"", "duplicate key 'a'"),
        # the rest are the safetensors package's words
        ({"__metadata__": {"k": 1}}, b"", "integer `1`, expected a string"),
        ({"a": [1]}, b"", "expected string or map"),
        ({"a": {"dtype": "F32"}}, b"", "missing field `shape`"),
        ({"a": _entry("F8", [1], 0, 1)}, b"\x00", "unknown variant `F8`"),
        ({"a": _entry("F32", [-1], 0, 0)}, b"", "integer `-1`, expected usize"),
        ({"a": _entry("F32", [1.0], 0, 4)}, b"\x00" * 4, "floating point `1.0`, expected usize"),
        ({"a": _entry("F32", [True], 0, 4)}, b"\x00" * 4, "boolean `true`, expected usize"),
        ({"a": _entry("F32", [1], 4, 0)}, b"\x00" * 4, "invalid offset for tensor `a`"),
        ({"a": _entry("F32", [2], 0, 4)}, b"\x00" * 4, "invalid shape, data type, or offset"),
        (  # overlapping
            {"a": _entry("U8", [2], 0, 2), "b": _entry("U8", [2], 1, 3)},
            b"\x00" * 3,
            "invalid offset for tensor `b`",
        ),
        (  # a gap
            {"a": _entry("U8", [2], 0, 2), "b": _entry("U8", [2], 3, 5)},
            b"\x00" * 5,
            "invalid offset for tensor `b`",
        ),
        ({"a": _entry("F8_E4M3", [1], 0, 1)}, b"\x00", "dtype F8_E4M3, which NumPy cannot hold"),
    ],
)
def test_refuses_malformed_headers(tmp_path, header, data, match):
    path = _raw_file(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(CheckpointError, match=match) as info:
        load_safetensors(path)
    assert "bad.safetensors" in str(info.value) and "\n" not in str(info.value)


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


# --------------------------------------------------------------------------------------------
# Atomic files
# --------------------------------------------------------------------------------------------


def test_atomic_writes_replace_content_and_leave_no_temp(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"one")
    atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    atomic_write_text(tmp_path / "t.txt", "héllo\n")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin", "t.txt"]


def test_atomic_write_respects_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("fail", ["replace", "fsync"])
def test_atomic_write_crash_keeps_previous_file(tmp_path, monkeypatch, fail):
    path = tmp_path / "state.json"
    atomic_write_json(path, {"step": 1})

    def crash(*args, **kwargs):
        raise OSError("simulated crash")

    monkeypatch.setattr(os, fail, crash)
    with pytest.raises(OSError, match="simulated crash"):
        atomic_write_json(path, {"step": 2})
    monkeypatch.undo()
    assert read_json(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_atomic_safetensors_save_crash_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    save_safetensors(path, {"w": np.zeros(3, np.float32)})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # even a Ctrl-C mid-write must not leave a torn file

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        save_safetensors(path, {"w": np.ones(3, np.float32)})
    monkeypatch.undo()
    np.testing.assert_array_equal(load_safetensors(path)[0]["w"], np.zeros(3))
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_json_is_sorted_indented_and_stores_non_finite_as_null(tmp_path):
    path = tmp_path / "metrics.json"
    atomic_write_json(
        path,
        {"val": [1.5, math.nan, np.float32(2.5)], "b": math.inf, "a": np.int64(3), "t": (1, 2)},
    )
    text = path.read_text()
    assert text.startswith('{\n  "a": 3,\n  "b": null,')
    assert "NaN" not in text and "Infinity" not in text
    assert read_json(path) == {"a": 3, "b": None, "t": [1, 2], "val": [1.5, None, 2.5]}


def test_read_json_errors_name_file_and_line(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{\n  "lr": 0.1,\n}\n')
    with pytest.raises(CheckpointError, match=r"config\.json:3: malformed JSON"):
        read_json(path)
    with pytest.raises(CheckpointError, match=r"missing\.json: no such file"):
        read_json(tmp_path / "missing.json")
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(CheckpointError, match=r"config\.json: not UTF-8"):
        read_json(path)


# --------------------------------------------------------------------------------------------
# Checkpoint folders
# --------------------------------------------------------------------------------------------


def _files(step: int) -> dict[str, bytes | str]:
    return {
        "model.safetensors": safetensors_bytes({"w": np.full(4, step, np.float32)}),
        "state.json": json.dumps({"step": step}),
    }


def _step_of(folder: str) -> int:
    """The step a checkpoint folder holds, after checking its two files agree."""
    step = read_json(os.path.join(folder, "state.json"))["step"]
    weights = load_safetensors(os.path.join(folder, "model.safetensors"))[0]["w"]
    assert np.all(weights == step)
    return step


def test_checkpoint_dir_write_and_replace(tmp_path):
    path = tmp_path / "runs" / "ckpt"
    write_checkpoint_dir(path, _files(1))
    assert _step_of(resolve_checkpoint_dir(path)) == 1
    write_checkpoint_dir(path, _files(2))
    assert resolve_checkpoint_dir(path) == str(path)
    assert _step_of(str(path)) == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt"]
    assert sorted(p.name for p in path.iterdir()) == ["model.safetensors", "state.json"]


def test_crash_while_writing_files_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "ckpt"
    write_checkpoint_dir(path, _files(1))
    calls = []

    def fsync_then_crash(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fsync_then_crash)
    with pytest.raises(OSError, match="disk full"):
        write_checkpoint_dir(path, _files(2))
    monkeypatch.undo()
    assert _step_of(resolve_checkpoint_dir(path)) == 1
    assert not (tmp_path / "ckpt.tmp").exists()


def test_crash_before_swap_keeps_previous_and_next_write_recovers(tmp_path, monkeypatch):
    path = tmp_path / "ckpt"
    write_checkpoint_dir(path, _files(1))

    def crash(*args, **kwargs):
        raise OSError("power cut")

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(OSError, match="power cut"):
        write_checkpoint_dir(path, _files(2))
    monkeypatch.undo()
    assert (tmp_path / "ckpt.tmp").is_dir()  # the finished but never swapped-in write
    assert resolve_checkpoint_dir(path) == str(path)
    assert _step_of(str(path)) == 1
    write_checkpoint_dir(path, _files(3))
    assert _step_of(resolve_checkpoint_dir(path)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_crash_between_renames_recovers_old(tmp_path, monkeypatch):
    path = tmp_path / "ckpt"
    write_checkpoint_dir(path, _files(1))
    real_rename = os.rename

    def rename_once_then_crash(src, dst):
        if str(dst).endswith(".old"):
            return real_rename(src, dst)
        raise OSError("power cut")

    monkeypatch.setattr(os, "rename", rename_once_then_crash)
    with pytest.raises(OSError, match="power cut"):
        write_checkpoint_dir(path, _files(2))
    monkeypatch.undo()
    assert not path.exists()
    assert resolve_checkpoint_dir(path) == str(path) + ".old"
    assert _step_of(resolve_checkpoint_dir(path)) == 1
    # The next write must keep .old until the new folder is in place, then drop it.
    write_checkpoint_dir(path, _files(2))
    assert resolve_checkpoint_dir(path) == str(path)
    assert _step_of(str(path)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_crash_before_deleting_old_prefers_new(tmp_path, monkeypatch):
    path = tmp_path / "ckpt"
    write_checkpoint_dir(path, _files(1))
    real_rmtree = shutil.rmtree

    def crash_on_old(target, *args, **kwargs):
        if str(target).endswith(".old"):
            raise OSError("power cut")
        return real_rmtree(target, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", crash_on_old)
    with pytest.raises(OSError, match="power cut"):
        write_checkpoint_dir(path, _files(2))
    monkeypatch.undo()
    assert (tmp_path / "ckpt.old").is_dir()
    assert _step_of(resolve_checkpoint_dir(path)) == 2
    write_checkpoint_dir(path, _files(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_resolve_without_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match=r"no checkpoint at .*ckpt$"):
        resolve_checkpoint_dir(tmp_path / "ckpt")
    (tmp_path / "ckpt.tmp").mkdir()
    with pytest.raises(CheckpointError, match=r"incomplete \.tmp"):
        resolve_checkpoint_dir(tmp_path / "ckpt")


@pytest.mark.parametrize("name", ["", ".", "..", "sub/file", "/etc/passwd"])
def test_checkpoint_file_names_must_be_plain(tmp_path, name):
    with pytest.raises(ValueError, match="plain file name"):
        write_checkpoint_dir(tmp_path / "ckpt", {name: b"x"})
    assert list(tmp_path.iterdir()) == []
