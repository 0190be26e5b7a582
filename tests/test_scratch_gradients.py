"""The NumPy engine's hand-written backward passes against torch.autograd, in float64.

Relative error is max|a - b| / max(max|a|, max|b|, 1e-30) over the whole array: one number per
compared array, scale-free, and it must stay below 1e-6. The scratch layers are NHWC with
(kh, kw, in, out) conv and (in, out) linear weights; inputs and weights are transposed into
torch's NCHW / (out, in, kh, kw) / (out, in) layouts before the comparison.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddpcifar.scratch.layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU, SoftmaxCrossEntropy
from ddpcifar.scratch.network import Sequential
from ddpcifar.scratch.optim import SGD, clip_grad_norm, is_decayed

TOL = 1e-6


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0), 1e-30)
    return float(np.abs(a - b).max(initial=0.0) / scale)


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.tensor(x.transpose(0, 3, 1, 2), dtype=torch.float64, requires_grad=True)


def nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize(
    "n, h, w, cin, cout, kernel, stride, padding",
    [
        (2, 7, 5, 3, 4, 3, 1, 1),  # non-square, same padding
        (1, 7, 5, 2, 3, 3, 2, 1),  # batch 1, stride 2 on odd sizes
        (3, 6, 6, 2, 5, 1, 1, 0),  # 1x1 kernel
        (2, 9, 7, 3, 2, 5, 1, 2),  # 5x5 kernel, padding 2
        (2, 9, 8, 2, 3, 5, 2, 0),  # 5x5, stride 2, no padding
        (1, 5, 7, 1, 1, 3, 3, 2),  # stride larger than needed, padding 2
    ],
)
def test_conv2d_matches_torch(n, h, w, cin, cout, kernel, stride, padding):
    rng = np.random.default_rng(1)
    conv = Conv2d(cin, cout, kernel, stride=stride, padding=padding, rng=rng, dtype=np.float64)
    conv.bias[...] = rng.standard_normal(cout)
    x = rng.standard_normal((n, h, w, cin))

    out = conv.forward(x)
    grad_out = rng.standard_normal(out.shape)
    dx = conv.backward(grad_out)

    xt = nchw(x)
    wt = torch.tensor(conv.weight.transpose(3, 2, 0, 1), requires_grad=True)
    bt = torch.tensor(conv.bias, requires_grad=True)
    yt = F.conv2d(xt, wt, bt, stride=stride, padding=padding)
    yt.backward(torch.tensor(grad_out.transpose(0, 3, 1, 2)))

    assert out.dtype == np.float64
    assert rel_error(out, nhwc(yt)) < TOL
    assert rel_error(dx, nhwc(xt.grad)) < TOL
    assert rel_error(conv.grads()["weight"], wt.grad.numpy().transpose(2, 3, 1, 0)) < TOL
    assert rel_error(conv.grads()["bias"], bt.grad.numpy()) < TOL


@pytest.mark.parametrize(
    "n, h, w, c, size, stride",
    [
        (2, 8, 6, 3, 2, None),  # the usual 2x2/2
        (1, 7, 5, 2, 2, None),  # odd sizes: last row/column dropped
        (2, 7, 5, 2, 3, None),  # 3x3/3 on odd sizes
        (2, 7, 7, 2, 3, 2),  # overlapping windows
        (1, 6, 5, 1, 2, 1),  # stride 1, heavy overlap
    ],
)
def test_maxpool_matches_torch(n, h, w, c, size, stride):
    rng = np.random.default_rng(2)
    pool = MaxPool2d(size, stride)
    x = rng.standard_normal((n, h, w, c))
    out = pool.forward(x)
    grad_out = rng.standard_normal(out.shape)
    dx = pool.backward(grad_out)

    xt = nchw(x)
    yt = F.max_pool2d(xt, size, stride if stride is not None else size)
    yt.backward(torch.tensor(grad_out.transpose(0, 3, 1, 2)))
    assert rel_error(out, nhwc(yt)) < TOL
    assert rel_error(dx, nhwc(xt.grad)) < TOL


@pytest.mark.parametrize("size, h, w", [(2, 6, 6), (3, 6, 9), (2, 7, 5)])
def test_maxpool_ties_route_gradient_once_like_torch(size, h, w):
    # 0/1 input has ties in most windows; torch gives each window's gradient to one position.
    # (2, 6, 6) and (3, 6, 9) take the tiling path, (2, 7, 5) the strided-slab path.
    x = np.random.default_rng(3).integers(0, 2, size=(2, h, w, 2)).astype(np.float64)
    pool = MaxPool2d(size)
    out = pool.forward(x)
    grad_out = np.random.default_rng(4).standard_normal(out.shape)
    dx = pool.backward(grad_out)
    xt = nchw(x)
    F.max_pool2d(xt, size).backward(torch.tensor(grad_out.transpose(0, 3, 1, 2)))
    assert rel_error(dx, nhwc(xt.grad)) < TOL
    assert np.count_nonzero(dx) == out.size  # exactly one position per window


def test_relu_matches_torch():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 5, 3, 4))
    relu = ReLU()
    out = relu.forward(x)
    grad_out = rng.standard_normal(out.shape)
    dx = relu.backward(grad_out)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.relu(xt)
    yt.backward(torch.tensor(grad_out))
    assert rel_error(out, yt.detach().numpy()) < TOL
    assert rel_error(dx, xt.grad.numpy()) < TOL


@pytest.mark.parametrize("n", [1, 4])
def test_linear_matches_torch(n):
    rng = np.random.default_rng(5)
    lin = Linear(7, 3, rng=rng, dtype=np.float64)
    lin.bias[...] = rng.standard_normal(3)
    x = rng.standard_normal((n, 7))
    out = lin.forward(x)
    grad_out = rng.standard_normal(out.shape)
    dx = lin.backward(grad_out)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(lin.weight.T.copy(), requires_grad=True)
    bt = torch.tensor(lin.bias, requires_grad=True)
    yt = F.linear(xt, wt, bt)
    yt.backward(torch.tensor(grad_out))
    assert rel_error(out, yt.detach().numpy()) < TOL
    assert rel_error(dx, xt.grad.numpy()) < TOL
    assert rel_error(lin.grads()["weight"], wt.grad.numpy().T) < TOL
    assert rel_error(lin.grads()["bias"], bt.grad.numpy()) < TOL


def test_flatten_matches_torch():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 2, 5, 4))  # NHWC, flattened in that order
    flat = Flatten()
    out = flat.forward(x)
    grad_out = rng.standard_normal(out.shape)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.flatten(xt, 1)
    yt.backward(torch.tensor(grad_out))
    assert rel_error(out, yt.detach().numpy()) < TOL
    assert rel_error(flat.backward(grad_out), xt.grad.numpy()) < TOL


@pytest.mark.parametrize("n, smoothing", [(1, 0.0), (6, 0.0), (1, 0.1), (6, 0.3)])
def test_softmax_cross_entropy_matches_torch(n, smoothing):
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((n, 10)) * 5
    labels = rng.integers(0, 10, n)
    ce = SoftmaxCrossEntropy(label_smoothing=smoothing)
    loss = ce.forward(logits, labels)
    dlogits = ce.backward()
    lt = torch.tensor(logits, requires_grad=True)
    lossT = F.cross_entropy(lt, torch.tensor(labels), label_smoothing=smoothing)
    lossT.backward()
    assert abs(loss - lossT.item()) / abs(lossT.item()) < TOL
    assert rel_error(dlogits, lt.grad.numpy()) < TOL


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    ce = SoftmaxCrossEntropy()
    loss = ce.forward(np.array([[1000.0, 0.0, -1000.0]]), np.array([0]))
    assert loss == pytest.approx(0.0, abs=1e-12)
    assert np.isfinite(ce.backward()).all()


SMALL_NET = [
    {"type": "conv", "out": 3, "kernel": 3, "padding": 1},
    {"type": "relu"},
    {"type": "maxpool", "size": 2},
    {"type": "conv", "out": 4, "kernel": 3, "stride": 2, "padding": 1},
    {"type": "relu"},
    {"type": "flatten"},
    {"type": "linear", "out": 5},
]


def test_whole_network_matches_central_differences():
    """Analytic gradients of a small network vs (L(p+h) - L(p-h)) / 2h in float64."""
    rng = np.random.default_rng(8)
    net = Sequential(SMALL_NET, input_shape=(8, 6, 2), seed=3, dtype=np.float64, input_grad=True)
    for name, p in net.params().items():
        if name.endswith("bias"):
            p[...] = 0.1 * rng.standard_normal(p.shape)
    x = rng.standard_normal((3, 8, 6, 2))
    y = rng.integers(0, 5, 3)
    ce = SoftmaxCrossEntropy()

    def loss() -> float:
        return ce.forward(net.forward(x, train=False), y)

    ce.forward(net.forward(x), y)
    dx = net.backward(ce.backward())
    grads = {k: v.copy() for k, v in net.grads().items()}
    h = 1e-6
    checked = 0
    for name, p in net.params().items():
        for flat in rng.choice(p.size, size=min(4, p.size), replace=False):
            idx = np.unravel_index(flat, p.shape)
            old = p[idx]
            p[idx] = old + h
            up = loss()
            p[idx] = old - h
            down = loss()
            p[idx] = old
            numeric = (up - down) / (2 * h)
            assert abs(numeric - grads[name][idx]) <= 1e-6 * max(abs(numeric), 1e-3), name
            checked += 1
    assert dx is not None and dx.shape == x.shape
    for flat in rng.choice(x.size, size=6, replace=False):
        idx = np.unravel_index(flat, x.shape)
        old = x[idx]
        x[idx] = old + h
        up = loss()
        x[idx] = old - h
        down = loss()
        x[idx] = old
        numeric = (up - down) / (2 * h)
        assert abs(numeric - dx[idx]) <= 1e-6 * max(abs(numeric), 1e-3)
        checked += 1
    assert checked == sum(min(4, p.size) for p in net.params().values()) + 6


def test_network_without_input_grad_skips_first_layer_input_gradient():
    net = Sequential(SMALL_NET, input_shape=(8, 6, 2), dtype=np.float64)
    ce = SoftmaxCrossEntropy()
    ce.forward(net.forward(np.ones((2, 8, 6, 2))), np.array([0, 1]))
    assert net.backward(ce.backward()) is None
    assert set(net.grads()) == {"0.weight", "0.bias", "3.weight", "3.bias", "6.weight", "6.bias"}


def test_float32_stays_float32():
    net = Sequential(SMALL_NET, input_shape=(8, 6, 2), dtype=np.float32)
    out = net.forward(np.ones((2, 8, 6, 2), dtype=np.float32))
    ce = SoftmaxCrossEntropy()
    ce.forward(out, np.array([0, 1]))
    net.backward(ce.backward())
    assert out.dtype == np.float32
    assert all(g.dtype == np.float32 for g in net.grads().values())


# ---- optimizer and schedule ------------------------------------------------------------------


def test_sgd_follows_the_momentum_formula_step_by_step():
    rng = np.random.default_rng(9)
    w0 = rng.standard_normal((3, 2))
    params = {"0.weight": w0.copy(), "0.bias": np.zeros(2)}
    opt = SGD(params, lr=0.1, momentum=0.8, weight_decay=0.01)
    b = np.zeros_like(w0)
    w = w0.copy()
    for lr in (0.1, 0.05, 0.2):
        g = rng.standard_normal((3, 2))
        opt.lr = lr
        opt.step({"0.weight": g, "0.bias": np.zeros(2)})
        b = 0.8 * b + (g + 0.01 * w)
        w = w - lr * b
        np.testing.assert_allclose(params["0.weight"], w, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_matches_torch_sgd_while_lr_changes(nesterov):
    """The update torch.optim.SGD makes, step for step, so optimizer.* and a per-step
    schedule mean the same in both engines (torch decays every parameter of a group: the
    bias goes in a group without decay, as the torch engine does)."""
    rng = np.random.default_rng(10)
    w0, b0 = rng.standard_normal((4, 3)), rng.standard_normal(3)
    grads = [(rng.standard_normal((4, 3)), rng.standard_normal(3)) for _ in range(6)]
    lrs = [0.1, 0.1, 0.1, 0.02, 0.05, 0.0]

    params = {"0.weight": w0.copy(), "0.bias": b0.copy()}
    ours = SGD(params, lr=0.1, momentum=0.9, nesterov=nesterov, weight_decay=0.05)
    tw = torch.tensor(w0, requires_grad=True)
    tb = torch.tensor(b0, requires_grad=True)
    theirs = torch.optim.SGD([{"params": [tw], "weight_decay": 0.05},
                              {"params": [tb], "weight_decay": 0.0}], lr=0.1, momentum=0.9,
                             nesterov=nesterov)
    for (gw, gb), lr in zip(grads, lrs):
        ours.lr = lr
        ours.step({"0.weight": gw, "0.bias": gb})
        for group in theirs.param_groups:
            group["lr"] = lr
        tw.grad, tb.grad = torch.tensor(gw), torch.tensor(gb)
        theirs.step()
        assert rel_error(params["0.weight"], tw.detach().numpy()) < 1e-12
        assert rel_error(params["0.bias"], tb.detach().numpy()) < 1e-12
    # the two momentum variants really differ (the test above could not pass for both otherwise)
    plain = {"0.weight": w0.copy(), "0.bias": b0.copy()}
    other = SGD(plain, lr=0.1, momentum=0.9, nesterov=not nesterov, weight_decay=0.05)
    for (gw, gb), lr in zip(grads, lrs):
        other.lr = lr
        other.step({"0.weight": gw, "0.bias": gb})
    assert rel_error(plain["0.weight"], params["0.weight"]) > 1e-3


@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_matches_torch(max_norm):
    rng = np.random.default_rng(12)
    arrays = {"0.weight": rng.standard_normal((3, 3, 2, 4)), "0.bias": rng.standard_normal(4),
              "3.weight": rng.standard_normal((8, 5))}
    ours = {k: v.copy() for k, v in arrays.items()}
    norm = clip_grad_norm(ours, max_norm)
    tensors = [torch.zeros(v.shape, dtype=torch.float64, requires_grad=True) for v in arrays.values()]
    for t, v in zip(tensors, arrays.values()):
        t.grad = torch.tensor(v)
    torch_norm = torch.nn.utils.clip_grad_norm_(tensors, max_norm)
    assert norm == pytest.approx(float(torch_norm), rel=1e-12)
    for t, v in zip(tensors, ours.values()):
        assert rel_error(v, t.grad.numpy()) < 1e-12
    clipped = np.sqrt(sum(np.square(v).sum() for v in ours.values()))
    assert clipped <= min(max_norm, norm) + 1e-9


def test_weight_decay_applies_to_weights_not_biases():
    w, b = np.full((2, 2), 3.0), np.full(2, 3.0)
    opt = SGD({"1.weight": w, "1.bias": b}, lr=0.1, momentum=0.0, weight_decay=0.5)
    opt.step({"1.weight": np.zeros((2, 2)), "1.bias": np.zeros(2)})
    np.testing.assert_allclose(w, 3.0 * (1 - 0.1 * 0.5))
    np.testing.assert_array_equal(b, 3.0)
    assert is_decayed("12.weight") and not is_decayed("12.bias")


def test_tiny_network_overfits_a_tiny_batch():
    rng = np.random.default_rng(11)
    net = Sequential(SMALL_NET, input_shape=(8, 6, 2), seed=0, dtype=np.float64)
    x = rng.standard_normal((10, 8, 6, 2))
    y = rng.integers(0, 5, 10)
    ce = SoftmaxCrossEntropy()
    opt = SGD(net.params(), lr=0.05, momentum=0.9)
    first = None
    for _ in range(300):
        loss = ce.forward(net.forward(x), y)
        first = loss if first is None else first
        net.backward(ce.backward())
        opt.step(net.grads())
    assert loss < 0.05 * first
    assert (net.forward(x, train=False).argmax(axis=1) == y).all()
