"""The layers of the NumPy CNN, each with a hand-written forward and backward pass.

Arrays are NHWC (see im2col.py). A layer caches what its backward pass needs during a training
forward pass (`train=True`) and nothing during evaluation. Computation follows the dtype of the
parameters and the input: float32 for training speed, float64 for gradient checks.
Conventions: conv weights are (kh, kw, in, out) and linear weights are (in, out), i.e. the
transpose of torch's layout, because that is the orientation the matmul wants.
"""

from __future__ import annotations

import numpy as np

from ddpcifar.scratch.im2col import col2im, im2col, output_size, pad_hw


class Module:
    """Base class: forward, backward, and the parameters/gradients it owns (by name)."""

    # Layers with parameters may skip d(loss)/d(input) when nothing upstream needs it.
    needs_input_grad: bool = True

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def params(self) -> dict[str, np.ndarray]:
        """Parameter arrays by name; the optimizer updates these arrays in place."""
        return {}

    def grads(self) -> dict[str, np.ndarray]:
        """Gradients from the latest backward pass, with the same names as `params()`."""
        return {}


class Conv2d(Module):
    """2-D convolution with square kernel, stride and zero padding, via im2col + one matmul."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        *,
        stride: int = 1,
        padding: int = 0,
        rng: np.random.Generator | None = None,
        dtype: np.dtype | type = np.float32,
    ) -> None:
        rng = rng if rng is not None else np.random.default_rng(0)
        self.kernel, self.stride, self.padding = kernel, stride, padding
        fan_in = kernel * kernel * in_channels
        # He initialisation: keeps activation variance roughly constant through ReLU layers.
        self.weight = (rng.standard_normal((kernel, kernel, in_channels, out_channels))
                       * np.sqrt(2.0 / fan_in)).astype(dtype)
        self.bias = np.zeros(out_channels, dtype=dtype)
        self.dweight = np.zeros_like(self.weight)
        self.dbias = np.zeros_like(self.bias)
        # The first layer of a network does not need the gradient of its input (the image);
        # Sequential switches this off there, which skips the most expensive col2im.
        self.needs_input_grad = True
        self._cols: np.ndarray | None = None
        self._padded_shape: tuple[int, int, int, int] | None = None

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        n, h, w, _ = x.shape
        k, s = self.kernel, self.stride
        ho, wo = output_size(h, k, s, self.padding), output_size(w, k, s, self.padding)
        xp = pad_hw(x, self.padding)
        cols = im2col(xp, k, k, s)
        out = cols @ self.weight.reshape(-1, self.weight.shape[3])
        out += self.bias
        if train:
            self._cols, self._padded_shape = cols, xp.shape
        return out.reshape(n, ho, wo, -1)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        assert self._cols is not None and self._padded_shape is not None, "backward before forward"
        cout = self.weight.shape[3]
        g2 = grad.reshape(-1, cout)
        self.dweight = (self._cols.T @ g2).reshape(self.weight.shape)
        self.dbias = g2.sum(axis=0)
        self._cols = None  # the patch matrix is the largest cached array; free it early
        if not self.needs_input_grad:
            return np.empty(0, dtype=grad.dtype)
        dcols = g2 @ self.weight.reshape(-1, cout).T
        dxp = col2im(dcols, self._padded_shape, self.kernel, self.kernel, self.stride)
        p = self.padding
        if p == 0:
            return dxp
        return dxp[:, p:dxp.shape[1] - p, p:dxp.shape[2] - p, :]

    def params(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight, "bias": self.bias}

    def grads(self) -> dict[str, np.ndarray]:
        return {"weight": self.dweight, "bias": self.dbias}


class ReLU(Module):
    """max(x, 0); the backward pass lets the gradient through where the input was positive."""

    def __init__(self) -> None:
        self._mask: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        out = np.maximum(x, 0)
        if train:
            self._mask = x > 0
        return out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        assert self._mask is not None, "backward before forward"
        return grad * self._mask


class MaxPool2d(Module):
    """Max pooling over size x size windows (stride defaults to size), floor output like torch.

    Ties go to the first position of the window in row-major order, as in torch. Two paths:
    Forward takes the maximum over the size*size window offsets, one strided slab each.
    Backward has two paths:
    - tiling (stride == size, sizes divisible; the default network's 2x2/2): the input is
      viewed as (N, Ho, size, Wo, size, C) and the mask is one broadcast compare (2-3x faster
      than the slab loop); the rare windows with tied maxima are fixed up afterwards;
    - anything else: a loop over the window offsets that hands each gradient out once.
    """

    def __init__(self, size: int, stride: int | None = None) -> None:
        self.size = size
        self.stride = stride if stride is not None else size
        self._x: np.ndarray | None = None
        self._out: np.ndarray | None = None

    def _tiles(self, x: np.ndarray) -> np.ndarray | None:
        """The (N, Ho, k, Wo, k, C) view of x when windows tile it exactly, else None."""
        n, h, w, c = x.shape
        k = self.size
        if self.stride != k or h % k or w % k:
            return None
        return x.reshape(n, h // k, k, w // k, k, c)

    def _slab(self, i: int, j: int, ho: int, wo: int) -> tuple[slice, slice, slice, slice]:
        s = self.stride
        return (slice(None), slice(i, i + s * (ho - 1) + 1, s), slice(j, j + s * (wo - 1) + 1, s),
                slice(None))

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        # Strided slabs beat tiles.max(axis=(2, 4)) here, so forward has one path.
        _, h, w, _ = x.shape
        ho = output_size(h, self.size, self.stride, 0)
        wo = output_size(w, self.size, self.stride, 0)
        out = x[self._slab(0, 0, ho, wo)].copy()
        for i in range(self.size):
            for j in range(self.size):
                if i or j:
                    np.maximum(out, x[self._slab(i, j, ho, wo)], out=out)
        if train:
            self._x, self._out = x, out
        return out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        assert self._x is not None and self._out is not None, "backward before forward"
        x, out = self._x, self._out
        self._x = self._out = None
        tiles = self._tiles(x)
        if tiles is not None:
            return self._backward_tiles(tiles, out, grad).reshape(x.shape)
        ho, wo = out.shape[1:3]
        dx = np.zeros_like(x, dtype=grad.dtype)
        # `left` is the gradient not yet routed: once a window's first maximum has taken it,
        # later offsets holding the same value (ties) get nothing.
        left = grad.copy()
        disjoint = self.stride >= self.size  # slabs never overlap: write instead of add
        offsets = [(i, j) for i in range(self.size) for j in range(self.size)]
        for n, (i, j) in enumerate(offsets):
            sl = self._slab(i, j, ho, wo)
            hit = x[sl] == out
            if disjoint:
                np.multiply(left, hit, out=dx[sl])
            else:
                dx[sl] += left * hit
            if n + 1 < len(offsets):
                np.copyto(left, 0, where=hit)
        return dx

    def _backward_tiles(self, tiles: np.ndarray, out: np.ndarray, grad: np.ndarray) -> np.ndarray:
        hit = tiles == out[:, :, None, :, None, :]
        dx = hit * grad[:, :, None, :, None, :].astype(grad.dtype, copy=False)
        tied = hit.sum(axis=(2, 4), dtype=np.uint8) > 1
        if tied.any():
            # Give each tied window's gradient to its first maximum only (torch's rule).
            n, yo, xo, c = np.nonzero(tied)
            window = hit[n, yo, :, xo, :, c].reshape(len(n), -1)  # (m, size*size)
            first = np.zeros_like(window)
            first[np.arange(len(n)), window.argmax(axis=1)] = True
            dx[n, yo, :, xo, :, c] = (first * grad[n, yo, xo, c][:, None]).reshape(
                len(n), self.size, self.size)
        return dx


class Flatten(Module):
    """(N, H, W, C) -> (N, H*W*C), in NHWC order (differs from torch's NCHW flatten order)."""

    def __init__(self) -> None:
        self._shape: tuple[int, ...] | None = None

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        assert self._shape is not None, "backward before forward"
        return grad.reshape(self._shape)


class Linear(Module):
    """y = x @ W + b with W of shape (in, out)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        rng: np.random.Generator | None = None,
        dtype: np.dtype | type = np.float32,
    ) -> None:
        rng = rng if rng is not None else np.random.default_rng(0)
        self.weight = (rng.standard_normal((in_features, out_features))
                       * np.sqrt(2.0 / in_features)).astype(dtype)
        self.bias = np.zeros(out_features, dtype=dtype)
        self.dweight = np.zeros_like(self.weight)
        self.dbias = np.zeros_like(self.bias)
        self.needs_input_grad = True
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        if train:
            self._x = x
        return x @ self.weight + self.bias

    def backward(self, grad: np.ndarray) -> np.ndarray:
        assert self._x is not None, "backward before forward"
        self.dweight = self._x.T @ grad
        self.dbias = grad.sum(axis=0)
        self._x = None
        if not self.needs_input_grad:
            return np.empty(0, dtype=grad.dtype)
        return grad @ self.weight.T

    def params(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight, "bias": self.bias}

    def grads(self) -> dict[str, np.ndarray]:
        return {"weight": self.dweight, "bias": self.dbias}


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log-softmax over the last axis."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class SoftmaxCrossEntropy:
    """Mean cross-entropy of softmax(logits) against integer labels; the loss, not a layer.

    With label smoothing e the target is (1 - e) * onehot + e / K over K classes, as in
    torch's F.cross_entropy(label_smoothing=e): loss = (1 - e) * NLL + e * mean_k(-log p_k).
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing
        self._probs: np.ndarray | None = None
        self._labels: np.ndarray | None = None

    def forward(self, logits: np.ndarray, labels: np.ndarray) -> float:
        logp = log_softmax(logits)
        self._probs, self._labels = np.exp(logp), labels
        nll = -logp[np.arange(len(labels)), labels]
        e = self.label_smoothing
        if e:
            nll = (1 - e) * nll - e * logp.mean(axis=1)
        return float(nll.mean())

    def backward(self) -> np.ndarray:
        """d(mean loss)/d(logits) = (softmax - target) / N."""
        assert self._probs is not None and self._labels is not None, "backward before forward"
        e = self.label_smoothing
        grad = self._probs.copy()
        if e:
            grad -= e / grad.shape[1]
        grad[np.arange(len(self._labels)), self._labels] -= 1 - e
        grad /= len(self._labels)
        return grad

    @property
    def probs(self) -> np.ndarray:
        """Softmax probabilities of the latest forward pass (used for accuracy)."""
        assert self._probs is not None, "forward first"
        return self._probs

    def params(self) -> dict[str, np.ndarray]:
        return {}

    def grads(self) -> dict[str, np.ndarray]:
        return {}
