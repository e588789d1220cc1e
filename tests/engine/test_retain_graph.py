"""backward(retain_graph=True) then backward() again: every Function gives the same gradients
the second time (so they add up to twice the first), or refuses with a clear error.

One row per Function class; a test checks that every Function of the engine has its row, so a new
op cannot skip this check.
"""
import importlib
import inspect
import pkgutil

import numpy as np
import pytest

import minigrad_lm as mg
from minigrad_lm.engine import ops, recompute
from minigrad_lm.engine.recompute import checkpoint
from minigrad_lm.engine.tensor import Function
from minigrad_lm.nn import functional as F
from tests.helpers import T

_rng = np.random.default_rng(0)
X = _rng.uniform(0.5, 1.5, (2, 3, 4))  # positive: log, sqrt, pow are defined
Y = _rng.uniform(0.5, 1.5, (2, 3, 4))
TIES = np.array([[1.0, 1.0, 0.5], [2.0, -1.0, 2.0]])
IDS = np.array([[0, 2, 2], [1, 0, 3]])
TARGETS = np.array([1, 3, -100, 0, 2, 2])

# Function name -> (inputs, builder of the output from tensors of those inputs). Sizes are big
# enough (64 rows) for the CPU chunked and blocked paths of the fused Functions.
ROWS = {
    "Add": ([X, Y[0]], lambda a, b: a + b),
    "Sub": ([X, Y], lambda a, b: a - b),
    "Mul": ([X, Y], lambda a, b: a * b),
    "Div": ([X, Y], lambda a, b: a / b),
    "PowScalar": ([X], lambda a: a ** 3),
    "Pow": ([X, Y], lambda a, b: a ** b),
    "Maximum": ([TIES, TIES[::-1]], mg.maximum),
    "Minimum": ([TIES, TIES[::-1]], mg.minimum),
    "Neg": ([X], lambda a: -a),
    "Exp": ([X], mg.exp),
    "Log": ([X], mg.log),
    "Sqrt": ([X], mg.sqrt),
    "Tanh": ([X], mg.tanh),
    "Sigmoid": ([X], mg.sigmoid),
    "Relu": ([X - 1], mg.relu),
    "Abs": ([X - 1], mg.abs),
    "Clip": ([X], lambda a: a.clip(0.7, 1.2)),
    "Gelu": ([_rng.standard_normal((64, 300))], lambda a: a.gelu("tanh") + a.gelu()),
    "Where": ([X, Y], lambda a, b: mg.where(X > 1, a, b)),
    "MaskedFill": ([X], lambda a: a.masked_fill(X > 1, 0.0)),
    "Sum": ([X], lambda a: a.sum(axis=1)),
    "Mean": ([X], lambda a: a.mean(axis=(0, 2))),
    "MaxMin": ([TIES], lambda a: a.max(axis=1) + a.min()),
    "LogSumExp": ([X], lambda a: a.logsumexp(axis=-1)),
    "Softmax": ([_rng.standard_normal((64, 40))], lambda a: a.softmax(-1) + a.softmax(0)),
    "LogSoftmax": ([X], lambda a: a.log_softmax(1)),
    "Reshape": ([X], lambda a: a.reshape(4, 6)),
    "Transpose": ([X], lambda a: a.transpose(2, 0, 1)),
    "BroadcastTo": ([X[0]], lambda a: a.broadcast_to(5, 3, 4)),
    "AsType": ([X], lambda a: a.astype(np.float32)),
    "ToDevice": ([X], lambda a: ops.ToDevice.apply(a, a.device)),
    "GetItem": ([X], lambda a: a[np.array([0, 1, 1]), 1:]),
    "Concatenate": ([X, Y], lambda a, b: mg.concatenate([a, b], axis=1)),
    "Stack": ([X, Y], lambda a, b: mg.stack([a, b], axis=2)),
    "MatMul": ([X, Y[0].T], lambda a, b: a @ b),
    "Linear": ([X, Y[0], Y[1, :, 0]], F.linear),
    "LayerNorm": ([_rng.standard_normal((64, 40)), X[0, 0].repeat(10), Y[0, 0].repeat(10)],
                  lambda x, w, b: F.layer_norm(x, (40,), w, b)),
    "CrossEntropy": ([_rng.standard_normal((6, 4))],
                     lambda z: F.cross_entropy(z, TARGETS, label_smoothing=0.1)
                     + F.cross_entropy(z, TARGETS, reduction="sum")
                     + F.cross_entropy(z, TARGETS, reduction="none")[0]),
    "Embedding": ([X.reshape(6, 4)], lambda w: F.embedding(IDS, w)),
    "Dropout": ([X], lambda a: F.dropout(a, 0.5)),
    "Attention": ([_rng.standard_normal((2, 2, 130, 4)) for _ in range(3)],
                  lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=True)
                  + F.scaled_dot_product_attention(q, k, v, dropout_p=0.3)),
    "QKVAttention": ([_rng.standard_normal((2, 130, 12))],
                     lambda qkv: F.multi_head_attention(qkv, 2, causal=True)),
    "Checkpoint": ([X, Y], lambda a, b: checkpoint(
        lambda p, q: F.dropout(p * q, 0.5).exp() * p, a, b)),
}


def _functions():
    """Every concrete Function class the engine defines."""
    found = set()
    ops_modules = [importlib.import_module(f"{ops.__name__}.{m.name}")
                   for m in pkgutil.iter_modules(ops.__path__)]
    for module in (*ops_modules, F, recompute):
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, Function) and obj is not Function
                    and obj.__module__ == module.__name__ and not name.startswith("_")):
                found.add(name)
    return found


def test_every_function_has_a_row():
    assert _functions() - set(ROWS) == set()


@pytest.mark.parametrize("name", sorted(ROWS))
def test_second_backward_of_a_retained_graph_repeats_the_first(device, name):
    inputs, build = ROWS[name]
    ts = [T(a, device, requires_grad=True) for a in inputs]
    mg.manual_seed(0)
    y = build(*ts)
    up = mg.tensor(np.random.default_rng(1).standard_normal(y.shape), device=device,
                   dtype=y.dtype)
    y.backward(up, retain_graph=True)
    first = [t.grad.numpy().copy() for t in ts]
    y.backward(up)
    for t, g in zip(ts, first):
        np.testing.assert_allclose(t.grad.numpy(), 2 * g, rtol=1e-12, atol=1e-12)
