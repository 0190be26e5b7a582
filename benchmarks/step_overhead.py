"""Per-step framework overhead: what the trainer's loop costs around the optimisation step.

Runs the real `Trainer` in this process (one rank; torch keeps every core) on a spec for a
number of steps, and splits the wall time of the training loop, step by step, into

  step    Trainer._step: forward, loss, backward, optimizer step, weight averaging
  loader  drawing the next batch (gather, flip, translate, normalise)
  rest    everything else in the loop: running sums, metric lines, TensorBoard, progress bar

On a CPU every kernel is synchronous, so a wall clock around `_step` is the step's compute. The
first `--warmup` steps (allocator and kernel warm-up) are timed separately and left out.

    python benchmarks/step_overhead.py --spec specs/airbench94.json --steps 40 --out result.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from ddpcifar.data.meta import load_meta
from ddpcifar.engine.distributed import read_env
from ddpcifar.engine.trainer import Trainer
from ddpcifar.spec import load_spec


class _Clock:
    """Seconds per part, counted only once `warmup` steps have run."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.steps = 0
        self.parts = {"step": 0.0, "loader": 0.0}
        self.started: float | None = None

    def add(self, part: str, seconds: float) -> None:
        if self.steps >= self.warmup:
            self.parts[part] += seconds


class _TimedLoader:
    """The trainer's loader with each `next()` timed; everything else passes through."""

    def __init__(self, loader: Any, clock: _Clock) -> None:
        self.loader, self.clock = loader, clock

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.loader)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            self.clock.add("loader", time.perf_counter() - t0)
            yield batch


def measure(spec_path: str, steps: int, warmup: int, data: str, progress: bool) -> dict[str, Any]:
    env = read_env("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [f"data.dir={data}", f"logging.runs_dir={tmp}", "logging.run_name=overhead",
                     f"logging.progress={json.dumps(progress)}"]
        spec = load_spec(Path(spec_path), overrides, world_size=1, cuda=False)
        samples = load_meta(spec.data.dir).counts.train
        if spec.data.max_samples is not None:
            samples = min(samples, spec.data.max_samples)
        steps_per_epoch = samples // spec.train.global_batch_size
        if steps + warmup > steps_per_epoch:
            raise SystemExit(f"--steps + --warmup must fit one epoch ({steps_per_epoch} steps)")
        spec = load_spec(Path(spec_path), [*overrides, f"train.epochs={(steps + warmup) / steps_per_epoch}"],
                         world_size=1, cuda=False)
        trainer = Trainer(spec, env)
        clock = _Clock(warmup)
        trainer.train_loader = _TimedLoader(trainer.train_loader, clock)
        step = trainer._step

        def timed_step(*args: Any) -> Any:
            t0 = time.perf_counter()
            out = step(*args)
            clock.add("step", time.perf_counter() - t0)
            clock.steps += 1
            if clock.steps == warmup:
                clock.started = time.perf_counter()
            return out

        trainer._step = timed_step
        trainer._train_epoch(0)
        total = time.perf_counter() - (clock.started or 0.0)
        trainer.console.close()
        trainer.tb.close()
    measured = clock.steps - warmup
    parts = {**clock.parts, "rest": total - clock.parts["step"] - clock.parts["loader"]}
    step_s = parts["step"]
    return {
        "spec": spec_path, "steps": measured, "warmup": warmup,
        "batch": spec.train.global_batch_size, "progress_bar": progress,
        "ms_per_step": {k: round(1000 * v / measured, 2) for k, v in parts.items()},
        "share_of_step": {k: round(v / step_s, 4) for k, v in parts.items() if k != "step"},
        "overhead_share": round((parts["loader"] + parts["rest"]) / step_s, 4),
        "images_per_s": round(measured * spec.train.global_batch_size / total, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--spec", default="specs/airbench94.json")
    parser.add_argument("--data", default="data/cifar10")
    parser.add_argument("--steps", type=int, default=40, help="measured steps")
    parser.add_argument("--warmup", type=int, default=3, help="steps run before measuring")
    parser.add_argument("--no-progress", action="store_true", help="without the progress bar")
    parser.add_argument("--out", type=Path, help="write the result as JSON")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be >= 1")
    load_before = [round(x, 2) for x in os.getloadavg()]
    result = measure(args.spec, args.steps, args.warmup, args.data, not args.no_progress)
    result.update(machine={"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                           "torch_threads": torch.get_num_threads()},
                  load_before=load_before, load_after=[round(x, 2) for x in os.getloadavg()],
                  command=" ".join(["python", *sys.argv]))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        tmp = args.out.with_name(f".{args.out.name}.tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
