"""Training throughput of the NumPy scratch CNN against the same network in PyTorch (CPU, fp32).

One training step = forward + softmax cross-entropy + backward + SGD (momentum, weight decay)
update, on the same random batch, same batch size, same thread count for both (NumPy's OpenBLAS
and torch's intra-op pool). The two engines are timed in alternating rounds, so load from other
processes on a shared machine hits both alike; warm-up steps are excluded and the median step
time of each engine is reported, with the ratio torch/numpy in images per second.

    .venv/bin/python benchmarks/scratch_vs_torch.py --threads 2 --batch-size 128
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/provenance.py

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from provenance import cpu_model  # noqa: E402

from ddpcifar.scratch.blas import get_blas_threads, set_blas_threads  # noqa: E402
from ddpcifar.scratch.layers import SoftmaxCrossEntropy  # noqa: E402
from ddpcifar.scratch.network import DEFAULT_ARCHITECTURE, Sequential  # noqa: E402
from ddpcifar.scratch.optim import SGD  # noqa: E402


def torch_model(architecture: list[dict[str, Any]], in_channels: int = 3) -> nn.Sequential:
    """The same layer list as a torch module (NCHW; shapes inferred like Sequential does)."""
    layers: list[nn.Module] = []
    channels, features = in_channels, None
    probe = torch.zeros(1, in_channels, 32, 32)
    for spec in Sequential(architecture).architecture:  # validated, defaults filled in
        kind = spec["type"]
        if kind == "conv":
            layers.append(nn.Conv2d(channels, spec["out"], spec["kernel"], stride=spec["stride"],
                                    padding=spec["padding"]))
            channels = spec["out"]
        elif kind == "relu":
            layers.append(nn.ReLU())
        elif kind == "maxpool":
            layers.append(nn.MaxPool2d(spec["size"], spec["stride"] or spec["size"]))
        elif kind == "flatten":
            layers.append(nn.Flatten())
            features = nn.Sequential(*layers)(probe).shape[1]
        else:
            layers.append(nn.Linear(features, spec["out"]))
            features = spec["out"]
    return nn.Sequential(*layers)


def numpy_step(batch: int, seed: int) -> Callable[[], None]:
    net = Sequential(DEFAULT_ARCHITECTURE, seed=seed)
    loss = SoftmaxCrossEntropy()
    opt = SGD(net.params(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, batch)

    def step() -> None:
        loss.forward(net.forward(x, train=True), y)
        net.backward(loss.backward())
        opt.step(net.grads())

    return step


def torch_step(batch: int, seed: int) -> Callable[[], None]:
    torch.manual_seed(seed)
    model = torch_model(DEFAULT_ARCHITECTURE)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def conv_variants(batch: int, repeats: int = 7) -> dict[str, float]:
    """Median ms of one forward conv (the default net's second layer: 16x16, 32->64, 3x3)
    computed three ways from the same NHWC window view: one matmul on the im2col copy,
    np.einsum (optimize=True) and np.tensordot straight on the strided view."""
    from ddpcifar.scratch.im2col import im2col, pad_hw, windows

    rng = np.random.default_rng(0)
    x = pad_hw(rng.standard_normal((batch, 16, 16, 32)).astype(np.float32), 1)
    w = rng.standard_normal((3, 3, 32, 64)).astype(np.float32)
    variants = {
        "im2col_matmul": lambda: im2col(x, 3, 3, 1) @ w.reshape(-1, 64),
        "einsum": lambda: np.einsum("nhwijc,ijco->nhwo", windows(x, 3, 3, 1), w, optimize=True),
        "tensordot": lambda: np.tensordot(windows(x, 3, 3, 1), w, axes=([3, 4, 5], [0, 1, 2])),
    }
    ref = variants["im2col_matmul"]().reshape(batch, 16, 16, 64)
    out = {}
    for name, fn in variants.items():
        assert np.allclose(fn().reshape(ref.shape), ref, rtol=1e-3, atol=1e-3), name
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        out[name] = round(1000 * statistics.median(ts[1:]), 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="for both engines")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per engine")
    parser.add_argument("--rounds", type=int, default=5, help="alternating timing rounds")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per engine per round")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--conv-variants", action="store_true",
                        help="also time im2col+matmul vs einsum vs tensordot for one conv")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    if not set_blas_threads(args.threads):
        print("warning: could not set NumPy's BLAS threads", file=sys.stderr)
    engines = {"numpy": numpy_step(args.batch_size, 0), "torch": torch_step(args.batch_size, 0)}
    times: dict[str, list[float]] = {name: [] for name in engines}
    for name, step in engines.items():
        for _ in range(args.warmup):
            step()
    for _ in range(args.rounds):
        for name, step in engines.items():
            for _ in range(args.steps):
                t0 = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - t0)

    result: dict[str, Any] = {
        "batch_size": args.batch_size,
        "threads": {"torch": torch.get_num_threads(), "numpy_blas": get_blas_threads()},
        "timed_steps": args.rounds * args.steps,
        "machine": f"{cpu_model()}, {len(os.sched_getaffinity(0))} CPUs visible",
        "load_average_1m": round(os.getloadavg()[0], 2),
        "torch": torch.__version__, "numpy": np.__version__,
    }
    for name, ts in times.items():
        median = statistics.median(ts)
        result[name] = {"median_step_s": round(median, 5),
                        "images_per_s": round(args.batch_size / median, 1),
                        "min_step_s": round(min(ts), 5), "max_step_s": round(max(ts), 5)}
    result["torch_over_numpy"] = round(result["torch"]["images_per_s"]
                                       / result["numpy"]["images_per_s"], 2)
    if args.conv_variants:
        result["conv_forward_ms"] = conv_variants(args.batch_size)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
