"""CPU training-step throughput of every model: fp32 vs bf16 autocast, contiguous vs channels_last.

    .venv/bin/python -m benchmarks.models_cpu [--models era_s9 ...]

One timed step is forward + cross-entropy + backward on a random (B, 3, 32, 32) batch in train
mode (no optimizer step: that cost does not depend on precision or layout). Each configuration
gets its own warm-up (the first steps allocate and pick kernels); the four configurations of
a model then take timed steps in turn, and the median per configuration is reported as
images/s. On a shared machine the median is the honest summary: a step
that another process delays is an outlier, not a property of the model.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from ddpcifar.errors import UserError, cli_main
from ddpcifar.models import MODEL_NAMES, build_model
from ddpcifar.models.inspect import count_parameters

_CONFIGS = (  # (label, autocast to bf16?, memory format)
    ("fp32 contiguous", False, torch.contiguous_format),
    ("fp32 channels_last", False, torch.channels_last),
    ("bf16 contiguous", True, torch.contiguous_format),
    ("bf16 channels_last", True, torch.channels_last),
)


def _load() -> str:
    """The 1/5/15-minute load average: with other processes running it says how much the numbers are worth."""
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


class _Setup:
    """One model/input pair in one configuration, ready to run a training step."""

    def __init__(self, name: str, batch_size: int, bf16: bool,
                 memory_format: torch.memory_format) -> None:
        torch.manual_seed(0)
        self.bf16 = bf16
        self.model = build_model(name).to(memory_format=memory_format).train()
        self.images = torch.randn(batch_size, 3, 32, 32).contiguous(memory_format=memory_format)
        self.labels = torch.randint(0, 10, (batch_size,))

    def step(self) -> float:
        """Seconds for one forward + loss + backward (CPU ops are synchronous)."""
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(self.images)
        F.cross_entropy(out.float(), self.labels).backward()
        self.model.zero_grad(set_to_none=True)
        return time.perf_counter() - start


def time_configs(name: str, batch_size: int, warmup: int, iters: int) -> list[float]:
    """Median step seconds of `name` in each of _CONFIGS.

    The configurations take turns step by step (round-robin) rather than one after another,
    so a burst of load from other processes on the shared machine hits all of them alike
    instead of making whichever ran during it look slow.
    """
    setups = [_Setup(name, batch_size, bf16, fmt) for _, bf16, fmt in _CONFIGS]
    for setup in setups:
        for _ in range(warmup):  # first steps allocate memory and pick oneDNN kernels
            setup.step()
    times: list[list[float]] = [[] for _ in setups]
    for _ in range(iters):
        for setup, record in zip(setups, times):
            record.append(setup.step())
    return [statistics.median(record) for record in times]


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.models_cpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), metavar="NAME")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per configuration")
    parser.add_argument("--iters", type=int, default=5, help="timed steps per configuration")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args(argv)
    for name in args.models:
        if name not in MODEL_NAMES:
            raise UserError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
    if args.batch_size < 1 or args.iters < 1 or args.warmup < 0 or args.threads < 1:
        raise UserError("--batch-size, --iters and --threads must be >= 1, --warmup >= 0")

    torch.set_num_threads(args.threads)
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"warm-up {args.warmup}, median of {args.iters} round-robin steps; "
          f"images/s (forward+backward); load average {_load()}")
    print(f"{'model':<10} {'params':>10} " + " ".join(f"{label:>19}" for label, *_ in _CONFIGS))
    for name in args.models:
        params = count_parameters(build_model(name))
        rates = [args.batch_size / seconds
                 for seconds in time_configs(name, args.batch_size, args.warmup, args.iters)]
        print(f"{name:<10} {params:>10,} " + " ".join(f"{rate:>19.1f}" for rate in rates),
              flush=True)
    print(f"# load average at the end: {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
