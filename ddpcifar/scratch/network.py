"""A Sequential classifier built from a plain-data list of layer definitions.

An architecture is a JSON-able list such as
`[{"type": "conv", "out": 32, "kernel": 3, "padding": 1}, {"type": "relu"},
  {"type": "maxpool", "size": 2}, {"type": "flatten"}, {"type": "linear", "out": 10}]`.
Input channels and features are inferred by running shapes through the list, so a definition
only states what the layer produces. Definitions are checked when the network is built and a bad
one raises UserError naming the layer and the field.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np

from ddpcifar.atomic import atomic_open
from ddpcifar.errors import UserError
from ddpcifar.scratch.im2col import output_size
from ddpcifar.scratch.layers import Conv2d, Flatten, Linear, MaxPool2d, Module, ReLU

# Three conv blocks (32-64-128 channels, each halving the resolution) and one linear layer:
# 114 k parameters, about 21 MFLOP per image forward. Pooling comes before ReLU: the two commute
# (max is monotone), and ReLU on the pooled map touches 4x fewer values. See docs/numpy_cnn.md
# for its accuracy and speed.
DEFAULT_ARCHITECTURE: list[dict[str, Any]] = [
    {"type": "conv", "out": 32, "kernel": 3, "padding": 1},
    {"type": "maxpool", "size": 2},
    {"type": "relu"},
    {"type": "conv", "out": 64, "kernel": 3, "padding": 1},
    {"type": "maxpool", "size": 2},
    {"type": "relu"},
    {"type": "conv", "out": 128, "kernel": 3, "padding": 1},
    {"type": "maxpool", "size": 2},
    {"type": "relu"},
    {"type": "flatten"},
    {"type": "linear", "out": 10},
]

# The members of a saved network that are not weights.
_NOT_WEIGHTS = ("architecture", "input_shape", "meta")

# Allowed keys per layer type: (required, optional with defaults).
_SCHEMA: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "conv": (("out", "kernel"), {"stride": 1, "padding": 0}),
    "relu": ((), {}),
    "maxpool": (("size",), {"stride": None}),
    "flatten": ((), {}),
    "linear": (("out",), {}),
}


def _checked(index: int, spec: Any) -> dict[str, Any]:
    """Validate one layer definition and fill in its defaults."""
    where = f"architecture[{index}]"
    if not isinstance(spec, dict) or "type" not in spec:
        raise UserError(f"{where}: a layer must be an object with a 'type': {spec!r}")
    kind = spec["type"]
    if kind not in _SCHEMA:
        raise UserError(f"{where}.type: unknown layer type (expected one of "
                        f"{', '.join(_SCHEMA)}): {kind!r}")
    required, optional = _SCHEMA[kind]
    unknown = set(spec) - {"type", *required, *optional}
    if unknown:
        raise UserError(f"{where}: unknown field(s) for {kind}: {', '.join(sorted(unknown))}")
    out = {"type": kind, **optional}
    for key in required:
        if key not in spec:
            raise UserError(f"{where}.{key}: required for a {kind} layer")
    out.update({k: v for k, v in spec.items() if k != "type"})
    for key, value in out.items():
        if key == "type" or value is None:
            continue
        minimum = 0 if key == "padding" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise UserError(f"{where}.{key}: must be an integer >= {minimum}: {value!r}")
    return out


class Sequential:
    """Layers applied in order; parameters are named '<layer index>.<name>' (e.g. '0.weight')."""

    def __init__(
        self,
        architecture: Sequence[dict[str, Any]],
        *,
        input_shape: tuple[int, int, int] = (32, 32, 3),
        seed: int = 0,
        dtype: np.dtype | type = np.float32,
        input_grad: bool = False,
    ) -> None:
        """`input_grad=True` makes `backward` return d(loss)/d(input) (gradient checks only)."""
        self.architecture = [_checked(i, spec) for i, spec in enumerate(architecture)]
        if not self.architecture:
            raise UserError("architecture: must list at least one layer")
        self.input_shape = input_shape
        self.dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        self.layers: list[Module] = []
        shape: tuple[int, ...] = tuple(input_shape)  # per-sample shape, HWC or (features,)
        for i, spec in enumerate(self.architecture):
            layer, shape = self._build(i, spec, shape, rng)
            self.layers.append(layer)
        if len(shape) != 1:
            raise UserError(f"architecture: must end in a linear layer (ends with shape {shape})")
        self.num_outputs = shape[0]
        # Nothing upstream of the first parametrised layer wants d(loss)/d(input): backward
        # stops there, and that layer skips computing its input gradient.
        self._first_param = 0 if input_grad else next(
            (i for i, layer in enumerate(self.layers) if layer.params()), 0)
        if not input_grad:
            self.layers[self._first_param].needs_input_grad = False

    def _build(self, i: int, spec: dict[str, Any], shape: tuple[int, ...],
               rng: np.random.Generator) -> tuple[Module, tuple[int, ...]]:
        kind = spec["type"]
        where = f"architecture[{i}]"
        if kind in ("conv", "maxpool") and len(shape) != 3:
            raise UserError(f"{where}: {kind} needs an image input, got features {shape}")
        if kind == "conv":
            h, w, c = shape
            k, s, p = spec["kernel"], spec["stride"], spec["padding"]
            ho, wo = output_size(h, k, s, p), output_size(w, k, s, p)
            if ho < 1 or wo < 1:
                raise UserError(f"{where}: kernel {k} does not fit a {h}x{w} input")
            return (Conv2d(c, spec["out"], k, stride=s, padding=p, rng=rng, dtype=self.dtype),
                    (ho, wo, spec["out"]))
        if kind == "maxpool":
            h, w, c = shape
            stride = spec["stride"] or spec["size"]
            ho, wo = output_size(h, spec["size"], stride, 0), output_size(w, spec["size"], stride, 0)
            if ho < 1 or wo < 1:
                raise UserError(f"{where}: pool size {spec['size']} does not fit a {h}x{w} input")
            return MaxPool2d(spec["size"], stride), (ho, wo, c)
        if kind == "relu":
            return ReLU(), shape
        if kind == "flatten":
            return Flatten(), (int(np.prod(shape)),)
        # linear
        if len(shape) != 1:
            raise UserError(f"{where}: linear needs flat features; add a flatten layer first")
        return Linear(shape[0], spec["out"], rng=rng, dtype=self.dtype), (spec["out"],)

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        """Logits for an (N, H, W, C) batch; `train=True` keeps what backward needs."""
        for layer in self.layers:
            x = layer.forward(x, train)
        return x

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        """Propagate d(loss)/d(logits) back; gradients land in each layer's `grads()`.

        Returns d(loss)/d(input) when the network was built with `input_grad=True`, else None.
        """
        for layer in reversed(self.layers[self._first_param:]):
            grad = layer.backward(grad)
        return grad if self._first_param == 0 and grad.size else None

    def params(self) -> dict[str, np.ndarray]:
        return {f"{i}.{name}": arr for i, layer in enumerate(self.layers)
                for name, arr in layer.params().items()}

    def grads(self) -> dict[str, np.ndarray]:
        return {f"{i}.{name}": arr for i, layer in enumerate(self.layers)
                for name, arr in layer.grads().items()}

    def num_parameters(self) -> int:
        return int(sum(p.size for p in self.params().values()))

    def save(self, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> None:
        """Write the weights and the architecture to an .npz file atomically (no pickles).

        `meta` (JSON-able, e.g. the input normalisation) is stored as the JSON string 'meta';
        `read_meta` returns it.
        """
        arrays = dict(self.params())
        arrays["architecture"] = np.array(json.dumps(self.architecture))
        arrays["input_shape"] = np.array(self.input_shape, dtype=np.int64)
        if meta is not None:
            arrays["meta"] = np.array(json.dumps(meta))
        with atomic_open(path, "wb") as fh:
            np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Sequential":
        """Rebuild a network saved by `save` (loads with allow_pickle=False)."""
        with np.load(path, allow_pickle=False) as data:
            arch = json.loads(str(data["architecture"]))
            shape = tuple(int(v) for v in data["input_shape"])
            names = [k for k in data.files if k not in _NOT_WEIGHTS]
            dtype = data[names[0]].dtype if names else np.float32
            net = cls(arch, input_shape=shape, dtype=dtype)  # type: ignore[arg-type]
            params = net.params()
            if set(names) != set(params):
                raise UserError(f"checkpoint does not match its architecture: {path}")
            for name in names:
                params[name][...] = data[name]
        return net


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The `meta` a network was saved with; {} for a file written without (or before) it."""
    with np.load(path, allow_pickle=False) as data:
        if "meta" not in data.files:
            return {}
        meta = json.loads(str(data["meta"]))
    if not isinstance(meta, dict):
        raise UserError(f"'meta' of {path} is not a JSON object")
    return meta
