"""Train from a run spec: parse, build, train, close.

    torchrun --nproc_per_node=4 -m ddpcifar.train specs/era_s9.json --set train.epochs=2
    python -m ddpcifar.train specs/era_s9.json          # one process, the same code path
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Sequence

from ddpcifar.runs.rundir import claim_run_dir, has_started
from ddpcifar.errors import UserError, cli_main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ddpcifar.train",
        description="Train a CIFAR-10 model from a JSON run spec. Launch with torchrun for "
                    "several processes (gloo on CPU, nccl on CUDA); without it, one process.",
        epilog="Examples: torchrun --standalone --nproc_per_node=2 -m ddpcifar.train "
               "specs/era_s9.json --set train.epochs=2 | python -m ddpcifar.spec schema")
    parser.add_argument("spec", type=Path, help="run spec (JSON); see specs/ for examples")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE",
                        help="override a spec field, validated like the file (repeatable); "
                             "VALUE is JSON if it parses, else a string")
    parser.add_argument("--resume", action="store_true",
                        help="continue the existing run directory from its latest checkpoint "
                             "(automatic after a torchrun elastic restart)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CUDA when available, else CPU")
    return parser.parse_args(argv)


def decide_resume(run_dir: Path, *, asked: bool, restarted: bool) -> bool:
    """New run or resume? Refuse to overwrite an existing run unless told to resume."""
    started = has_started(run_dir)  # a run queued by `ddpcifar.runs` has not started yet
    has_checkpoint = any((run_dir / "checkpoints" / n).exists() for n in ("last.pt", "prev.pt"))
    if asked and not started:
        raise UserError(f"--resume: no run to resume at {run_dir}")
    if asked and not has_checkpoint:
        raise UserError(f"--resume: {run_dir} has no checkpoint to resume from")
    if restarted:
        # An elastic restart before the first checkpoint simply starts again.
        return has_checkpoint
    if started and not asked:
        raise UserError(f"run directory {run_dir} already exists; pass --resume to continue it "
                        "or pick another name with --set logging.run_name=NAME")
    return asked


def _run_torch(args: argparse.Namespace) -> int:
    from ddpcifar.engine.checkpoint import check_torch_version
    from ddpcifar.engine.distributed import broadcast_object, process_group, read_env
    from ddpcifar.engine.trainer import Trainer
    from ddpcifar.spec import load_spec

    check_torch_version()  # before anything is trained that could not be resumed safely
    env = read_env(args.device)
    spec = load_spec(args.spec, args.overrides, world_size=env.world_size,
                     cuda=env.device.type == "cuda")
    if spec.model.engine == "numpy":
        return _run_numpy(spec, args, env.world_size)
    with ExitStack() as claim, process_group(env, timeout_s=spec.distributed.timeout_s):
        # Rank 0 claims the run directory, decides and every rank follows, so all of them fail
        # (or go on) together.
        decision: tuple[bool, str | None] = (False, None)
        if env.is_main:
            try:
                claim.enter_context(claim_run_dir(spec.run_dir))
                decision = (decide_resume(spec.run_dir, asked=args.resume,
                                          restarted=env.restart_count > 0), None)
            except UserError as err:
                decision = (False, str(err))
        resume, error = broadcast_object(decision)
        if error:
            raise UserError(error)
        trainer = Trainer(spec, env, resume=resume)
        trainer.fit()
    return 0


def _run_numpy(spec, args: argparse.Namespace, world_size: int) -> int:
    from ddpcifar.engine.numpy_runner import run_scratch_spec

    if world_size > 1:
        raise UserError("model 'scratch_cnn' runs on the NumPy engine in a single process; "
                        "launch it with `python -m ddpcifar.train`, not torchrun")
    if args.resume:
        raise UserError("--resume: the NumPy engine (model 'scratch_cnn') does not resume; "
                        "start a new run with --set logging.run_name=NAME")
    with claim_run_dir(spec.run_dir):
        decide_resume(spec.run_dir, asked=False, restarted=False)
        run_scratch_spec(spec)
    return 0


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return _run_torch(args)


if __name__ == "__main__":
    sys.exit(main())
