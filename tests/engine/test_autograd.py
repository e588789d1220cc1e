"""The engine's contracts: accumulation, broadcasting, graph lifetime, dtypes, devices, errors."""
import gc
import weakref

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigrad_lm as mg
from minigrad_lm.testing import arrays, broadcastable_pairs, shapes
from tests.helpers import T


@given(data=st.data(), shape=shapes())
def test_gradient_of_sum_of_uses_is_sum_of_gradients(device, data, shape):
    x = data.draw(arrays(shape))
    a = T(x, device, requires_grad=True)
    (a * a + a.exp() + a).sum().backward()
    separate = []
    for f in (lambda t: t * t, lambda t: t.exp(), lambda t: t):
        b = T(x, device, requires_grad=True)
        f(b).sum().backward()
        separate.append(b.grad.numpy())
    np.testing.assert_allclose(a.grad.numpy(), sum(separate), rtol=1e-12)


@given(data=st.data(), shapes_=broadcastable_pairs())
def test_broadcast_gradients_have_input_shapes(device, data, shapes_):
    a = T(data.draw(arrays(shapes_[0])), device, requires_grad=True)
    b = T(data.draw(arrays(shapes_[1])), device, requires_grad=True)
    (a * b).sum().backward()
    assert a.grad.shape == a.shape and b.grad.shape == b.shape


def test_gradients_accumulate_across_backward_calls(device):
    a = T(np.array([1.0, 2.0]), device, requires_grad=True)
    (a * 3).sum().backward()
    (a * 3).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [6.0, 6.0])


def test_two_leaves_never_share_a_gradient_array(device):
    a = T(np.ones(3), device, requires_grad=True)
    b = T(np.ones(3), device, requires_grad=True)
    (a + b).sum().backward()
    a.grad.data += 1  # must not change b.grad
    np.testing.assert_array_equal(b.grad.numpy(), np.ones(3))


def test_no_grad_builds_no_graph(device):
    a = T(np.ones(3), device, requires_grad=True)
    with mg.no_grad():
        y = (a * 2).sum()
    assert not y.requires_grad and y.is_leaf

    @mg.no_grad()
    def f(t):
        return t * 2
    assert f(a).is_leaf and mg.is_grad_enabled()


def test_detach_stops_gradient(device):
    a = T(np.array([1.0, 2.0]), device, requires_grad=True)
    (a.detach() * a).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [1.0, 2.0])


@given(data=st.data(), shape=shapes())
def test_float32_stays_float32(device, data, shape):
    x = T(data.draw(arrays(shape, low=0.5, high=2, distinct=True)).astype(np.float32), device,
          requires_grad=True)
    outs = [x * 2.5, 1.5 - x, x / 3, x ** 2, x.exp(), x.log(), x.sqrt(), x.tanh(), x.sigmoid(),
            x.gelu(), x.gelu("tanh"), x.mean(), x.var(), x.std() if x.size > 1 else x,
            x.logsumexp(), x.softmax(-1)
            if x.ndim else x, x.max(), mg.maximum(x, 1.0), mg.where(x.numpy() > 1, x, 0.0)]
    for y in outs:
        assert y.dtype == np.float32
    sum(y.sum() for y in outs).backward()
    assert x.grad.dtype == np.float32


def test_long_chain_backpropagates_without_recursion(device):
    x = T(np.array([1.0]), device, requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y * 1.0
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0])


def test_graph_is_freed_after_backward_and_second_backward_raises(device):
    x = T(np.ones(4), device, requires_grad=True)
    y = (x.exp() * 2).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="already freed"):
        y.backward()


def test_retain_graph_allows_second_backward(device):
    x = T(np.ones(4), device, requires_grad=True)
    y = (x.exp() * 2).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 4 * np.e * np.ones(4))


def test_intermediate_arrays_are_released_after_backward():
    x = mg.tensor(np.ones((100, 100)), requires_grad=True)
    h = x.exp()
    probe = weakref.ref(h._ctx)
    loss = h.sum()
    del h
    loss.backward()
    gc.collect()
    assert probe() is None


def test_reshape_of_contiguous_array_is_a_view():
    x = mg.tensor(np.arange(12.0))
    assert np.shares_memory(x.reshape(3, 4).numpy(), x.numpy())


def test_non_scalar_backward_needs_gradient(device):
    x = T(np.ones(3), device, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"shape \(3,\) needs an explicit gradient"):
        (x * 2).backward()
    (x * 2).backward(mg.tensor(np.ones(3), device=device))
    np.testing.assert_array_equal(x.grad.numpy(), [2, 2, 2])


def test_nan_gradient_seed_is_refused(device):
    x = T(np.ones(3), device, requires_grad=True)
    with pytest.raises(ValueError, match="NaN"):
        (x * 2).backward(np.array([1.0, np.nan, 1.0]))


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(TypeError, match="int64"):
        mg.tensor([1, 2, 3], requires_grad=True)


def test_shape_errors_name_the_shapes(device):
    a, b = T(np.ones((2, 3)), device), T(np.ones((4, 5)), device)
    with pytest.raises(ValueError, match=r"matmul: shapes \(2, 3\) and \(4, 5\) do not align"):
        a @ b
    with pytest.raises(ValueError, match=r"add: shapes \(2, 3\) and \(4, 5\) cannot be broadcast"):
        a + b
    with pytest.raises(ValueError, match=r"cannot reshape tensor of shape \(2, 3\)"):
        a.reshape(4, 2)
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        a.sum(axis=2)


def test_out_of_range_gather_is_refused_on_every_backend(device):
    x = T(np.ones((5, 2)), device, requires_grad=True)
    with pytest.raises(IndexError, match="index 5 is out of bounds for axis 0 with size 5"):
        x[np.array([0, 5])]
    with pytest.raises(IndexError, match="index -6 is out of bounds"):
        x[mg.tensor(np.array([-6]), device=device)]


def test_backward_without_requires_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        mg.tensor([1.0]).sum().backward()


def test_cuda_without_cupy_or_gpu_gives_one_clear_error():
    if mg.cuda_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="pip install"):
        mg.tensor([1.0], device="cuda")


def test_unknown_device_is_refused():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        mg.tensor([1.0], device="tpu")


def test_default_device_from_environment(monkeypatch):
    """MINIGRAD_DEVICE is read (a bad one is named), and set_default_device overrides it."""
    monkeypatch.setattr(mg.backend.devices, "_default_device", None)
    monkeypatch.setenv("MINIGRAD_DEVICE", "tpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        mg.zeros(2)
    monkeypatch.setenv("MINIGRAD_DEVICE", "cpu")
    assert mg.get_default_device() == "cpu" and mg.zeros(2).device == "cpu"
    monkeypatch.setenv("MINIGRAD_DEVICE", "tpu")
    mg.set_default_device("cpu")
    assert mg.zeros(2).device == "cpu"


def test_mixing_devices_names_both(device):
    if device == "cpu":
        pytest.skip("needs a GPU to have two devices")
    a, b = T(np.ones(2), "cpu"), T(np.ones(2), device)
    with pytest.raises(RuntimeError, match=f"cpu and {device}"):
        a + b


def test_to_device_round_trip_is_differentiable(device):
    x = T(np.array([1.0, 2.0]), "cpu", requires_grad=True)
    y = x.to(device) * 3
    y.to("cpu").sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])


def test_factories_and_seed(device):
    mg.manual_seed(3)
    a = mg.randn(2, 3, device=device)
    mg.manual_seed(3)
    b = mg.randn(2, 3, device=device)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert a.dtype == np.float32 and a.device == device
    assert mg.zeros(2, 2, device=device).numpy().sum() == 0
    assert mg.ones_like(a).numpy().sum() == 6
    assert mg.full((2,), 7.0, device=device).numpy().tolist() == [7.0, 7.0]
    assert mg.arange(5, device=device).numpy().tolist() == [0, 1, 2, 3, 4]
    u = mg.rand(1000, device=device).numpy()
    assert 0 <= u.min() and u.max() < 1 and len(np.unique(u)) > 990  # uniform on [0, 1)
    assert 0.45 < u.mean() < 0.55 and 0.07 < u.var() < 0.097  # 1/2 and 1/12, +-5 sigma


def test_comparisons_have_no_gradient(device):
    x = T(np.array([1.0, -1.0]), device, requires_grad=True)
    m = x > 0
    assert m.dtype == np.bool_ and not m.requires_grad
    assert (x == x).numpy().all() and not (x != x).numpy().any()


def test_gradcheck_reports_input_element_and_values():
    class WrongExp(mg.Function):
        def forward(self, x):
            self.y = np.exp(x)
            return self.y

        def backward(self, gy):
            return (gy * self.y * 2,)
    x = mg.tensor(np.array([0.1, 0.2]))
    with pytest.raises(mg.GradcheckError, match=r"input 0 .* element \(\d,\): analytic .* vs "
                                                r"numeric"):
        mg.gradcheck(lambda t: WrongExp.apply(t), [x])


def test_unbroadcast_reduces_and_checks_the_shape():
    from minigrad_lm.engine.tensor import unbroadcast
    g = np.arange(24.0).reshape(4, 3, 2)
    np.testing.assert_array_equal(unbroadcast(g, (3, 1)), g.sum(axis=(0, 2))[:, None])
    np.testing.assert_array_equal(unbroadcast(g, (1, 2)), g.sum(axis=(0, 1))[None])
    for wrong in ((2, 3), (3, 2, 4), (6,), (1, 6)):
        with pytest.raises(RuntimeError, match=r"cannot reduce to shape"):
            unbroadcast(g, wrong)
    with pytest.raises(RuntimeError, match=r"gradient of shape \(3, 2\) cannot reduce to shape "
                                           r"\(2, 3\)"):
        unbroadcast(np.ones((3, 2)), (2, 3))


def test_a_backward_returning_a_wrong_shape_is_an_error():
    class Transposing(mg.Function):  # a buggy op: its gradient has the shape of its output
        def forward(self, x):
            return x.T.copy()

        def backward(self, gy):
            return (gy,)

    x = mg.tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"\(3, 2\) cannot reduce to shape \(2, 3\)"):
        Transposing.apply(x).sum().backward()
