"""Every op of the registry (tests/engine/op_registry.py) through the same checks: values and
float64 gradcheck on hypothesis inputs; a second backward of a retained graph; the CPU kernel
against its xp reference; the CPU kernel split into chunks and blocks against one chunk; the
CUDA path against the CPU one. And every Function of the engine is in some row's graph."""
import importlib
import inspect
import pkgutil
import re

import numpy as np
import pytest
from hypothesis import find, given
from hypothesis import strategies as st

import minigrad_lm as mg
from minigrad_lm.backend import threads
from minigrad_lm.backend.kernels import cpu, cuda
from minigrad_lm.engine import ops, recompute
from minigrad_lm.engine.tensor import Function, Tensor
from minigrad_lm.nn import functional as F
from minigrad_lm.nn import tiled_attention
from tests.engine.op_registry import OPS
from tests.helpers import T

SAMPLED_OPS = [op for op in OPS if op.sample is not None]


@pytest.fixture(autouse=True)
def small_attention_tiles(monkeypatch):
    """Tiled attention by tiles of 2 queries x 3 keys, so that the small hypothesis inputs span
    several tiles, most lengths not a multiple of them."""
    monkeypatch.setattr(tiled_attention, "QUERY_TILE", 2)
    monkeypatch.setattr(tiled_attention, "KEY_TILE", 3)


def by_name(ops):
    return pytest.mark.parametrize("op", ops, ids=[op.name for op in ops])


def values_and_grads(op, arrays, device="cpu"):
    """fn's output and its inputs' gradients for a fixed upstream gradient."""
    ts = [T(a, device, requires_grad=True) for a in arrays]
    y = op.fn(*ts)
    up = np.random.default_rng(1).standard_normal(y.shape).astype(y.dtype)
    y.backward(mg.tensor(up, device=device))
    return [y.numpy()] + [t.grad.numpy() for t in ts]


def assert_all_close(got, want, rtol, atol):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


@by_name(OPS)
@given(data=st.data())
def test_values_and_gradcheck(device, op, data):
    arrays = data.draw(op.inputs)
    tensors = [T(a, device) for a in arrays]
    if op.ref is not None:
        np.testing.assert_allclose(op.fn(*tensors).numpy(), op.ref(*arrays), rtol=1e-7,
                                   atol=1e-10)
    assert mg.gradcheck(op.fn, tensors)


def _engine_functions() -> set:
    """Every public concrete Function class of the engine's ops, nn.functional and recompute."""
    modules = [importlib.import_module(f"{ops.__name__}.{m.name}")
               for m in pkgutil.iter_modules(ops.__path__)] + [F, recompute]
    return {obj for module in modules for name, obj in vars(module).items()
            if inspect.isclass(obj) and issubclass(obj, Function) and obj is not Function
            and obj.__module__ == module.__name__ and not name.startswith("_")}


def _graph_functions(y: Tensor) -> set:
    seen, todo = set(), [y._ctx]
    while todo:
        fn = todo.pop()
        if isinstance(fn, Function) and type(fn) not in seen:
            seen.add(type(fn))
            todo.extend(fn.parents)
    return seen


def test_every_function_of_the_engine_is_in_a_row():
    found = set()
    for op in OPS:
        arrays = find(op.inputs, lambda _: True)  # the simplest inputs of the row
        found |= _graph_functions(op.fn(*(T(a, requires_grad=True) for a in arrays)))
    assert {f.__name__ for f in _engine_functions() - found} == set()


def assert_second_backward_repeats_the_first(op, arrays, device="cpu"):
    ts = [T(a, device, requires_grad=True) for a in arrays]
    y = op.fn(*ts)
    up = mg.tensor(np.random.default_rng(1).standard_normal(y.shape), device=device,
                   dtype=y.dtype)
    y.backward(up, retain_graph=True)
    first = [t.grad.numpy().copy() for t in ts]
    y.backward(up)
    for t, g in zip(ts, first):
        np.testing.assert_allclose(t.grad.numpy(), 2 * g, rtol=1e-12, atol=1e-12)


@by_name(OPS)
@given(data=st.data())
def test_second_backward_of_a_retained_graph_repeats_the_first(device, op, data):
    assert_second_backward_repeats_the_first(op, data.draw(op.inputs), device)


@by_name([op for op in SAMPLED_OPS if op.cpu_kernel])
def test_cpu_kernel_matches_its_reference(monkeypatch, op):
    """The kernel with its compiled loops (the default), with its NumPy passes
    (MINIGRAD_CPU_KERNELS=numpy; a kernel that exists only compiled then leaves the op to its
    reference) and the reference (0) agree."""
    arrays = op.sample(np.random.default_rng(0))
    kernel, calls = getattr(cpu, op.cpu_kernel), []
    monkeypatch.setattr(cpu, op.cpu_kernel, lambda *a: calls.append(1) or kernel(*a))
    results = {}
    for flag in ("1", "numpy", "0"):
        monkeypatch.setenv("MINIGRAD_CPU_KERNELS", flag)
        before = len(calls)
        results[flag] = values_and_grads(op, arrays)
        expected = flag == "1" or flag == "numpy" and op.cpu_kernel not in cpu.COMPILED_ONLY
        assert (len(calls) > before) == expected, flag
    assert_all_close(results["1"], results["0"], rtol=1e-5, atol=1e-6)
    assert_all_close(results["numpy"], results["0"], rtol=1e-5, atol=1e-6)


def force_split(monkeypatch, split: bool) -> None:
    """Chunks on 2 threads, blocks of 4 elements, blocks of 2 queries and tiles of 2 x 3; or one
    of each."""
    monkeypatch.setattr(threads, "_threads", 2 if split else 1)
    monkeypatch.setattr(threads, "MIN_CHUNK_ELEMENTS", 0 if split else 1 << 16)
    monkeypatch.setattr(threads, "BLOCK_ELEMENTS", 4 if split else 1 << 30)
    monkeypatch.setattr(F, "QUERY_BLOCK_ROWS", 2 if split else 1 << 20)
    monkeypatch.setattr(tiled_attention, "QUERY_TILE", 2 if split else 1 << 20)
    monkeypatch.setattr(tiled_attention, "KEY_TILE", 3 if split else 1 << 20)


@by_name([op for op in SAMPLED_OPS if op.chunked])
def test_cpu_kernel_split_matches_one_chunk(monkeypatch, op):
    arrays = op.sample(np.random.default_rng(0))
    results = []
    for split in (False, True):
        force_split(monkeypatch, split)
        results.append(values_and_grads(op, arrays))
    if threads._ready():
        assert len(threads.batch_chunks(4, 1)) == 2  # the split path really ran
    assert_all_close(*results, rtol=1e-5, atol=1e-6)


@by_name([op for op in SAMPLED_OPS if op.chunked])
def test_second_backward_of_a_retained_split_graph_repeats_the_first(monkeypatch, op):
    force_split(monkeypatch, True)
    arrays = [a.astype(np.float64) for a in op.sample(np.random.default_rng(0))]
    assert_second_backward_repeats_the_first(op, arrays)


@by_name(SAMPLED_OPS)
def test_cuda_path_matches_cpu(gpu, op):
    arrays = op.sample(np.random.default_rng(0))
    before = {name: cuda.calls[name] for name in op.cuda_kernels}
    on_gpu = values_and_grads(op, arrays, gpu)
    assert [n for n in op.cuda_kernels if cuda.calls[n] == before[n]] == []  # each one ran
    assert_all_close(on_gpu, values_and_grads(op, arrays), rtol=1e-4, atol=1e-5)


# Kernels whose GPU check is a test of their own rather than a row.
CHECKED_ELSEWHERE = {"adam": "tests/backend/test_cuda.py::test_adam_kernel_matches_xp_update"}


def test_every_cuda_kernel_has_a_gpu_check():
    launched = set(re.findall(r'calls\["(\w+)"\]', inspect.getsource(cuda)))
    claimed = {name for op in SAMPLED_OPS for name in op.cuda_kernels}
    assert claimed <= launched  # a row names a real launch
    assert launched - claimed - set(CHECKED_ELSEWHERE) == set()
