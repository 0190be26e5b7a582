"""Train from a run spec: parse, build, train, close.

    torchrun --nproc_per_node=4 -m ddpcifar.train specs/era_s9.json --set train.epochs=2
    python -m ddpcifar.train specs/era_s9.json          # one process, the same code path
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Sequence

from ddpcifar.runs import states
from ddpcifar.runs.rundir import claim_run_dir, has_started, read_state
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
    parser.add_argument("--resume", nargs="?", const="yes", choices=("yes", "auto"),
                        help="continue the existing run directory from its latest checkpoint "
                             "(automatic after a torchrun elastic restart); --resume auto: "
                             "continue it if it has a checkpoint, else start fresh in it, so the "
                             "same command can be resubmitted (as logging.resume=auto)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CUDA when available, else CPU")
    return parser.parse_args(argv)


NEW, RESUME, DONE = "new", "resume", "done"


def decide_resume(run_dir: Path, *, asked: str | None, restarted: bool) -> str:
    """NEW run, RESUME, or DONE (`auto` found the run finished: nothing to do)?

    `asked`: None (an existing run is refused), "yes" (--resume: there must be a checkpoint) or
    "auto" (resume when there is a checkpoint, else start fresh in the directory).
    """
    started = has_started(run_dir)  # a run queued by `ddpcifar.runs` has not started yet
    has_checkpoint = any((run_dir / "checkpoints" / n).exists() for n in ("last.pt", "prev.pt"))
    if asked == "yes" and not started:
        raise UserError(f"--resume: no run to resume at {run_dir}")
    if asked == "yes" and not has_checkpoint:
        raise UserError(f"--resume: {run_dir} has no checkpoint to resume from")
    if restarted or asked == "auto":
        # An elastic restart (or a resubmission) before the first checkpoint starts again.
        if not has_checkpoint:
            return NEW
        return DONE if asked == "auto" and read_state(run_dir) == states.FINISHED else RESUME
    if started and not asked:
        raise UserError(f"run directory {run_dir} already exists; pass --resume to continue it "
                        "or pick another name with --set logging.run_name=NAME")
    return RESUME if asked else NEW


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
    asked = args.resume or ("auto" if spec.logging.resume == "auto" else None)
    with ExitStack() as claim, process_group(env, timeout_s=spec.distributed.timeout_s):
        # Rank 0 claims the run directory, decides and every rank follows, so all of them fail
        # (or go on) together.
        decision: tuple[str, bool, str | None] = (NEW, False, None)
        if env.is_main:
            try:
                claim.enter_context(claim_run_dir(spec.run_dir))
                plan = decide_resume(spec.run_dir, asked=asked, restarted=env.restart_count > 0)
                # Only a finished run resumed on purpose evaluates again; an attempt killed after
                # its final checkpoint had already logged that evaluation.
                again = (asked == "yes" and env.restart_count == 0
                         and read_state(spec.run_dir) == states.FINISHED)
                decision = (plan, again, None)
            except UserError as err:
                decision = (NEW, False, str(err))
        plan, again, error = broadcast_object(decision)
        if error:
            raise UserError(error)
        if plan == DONE:
            if env.is_main:
                print(f"{spec.run_dir} has finished; nothing to resume (--resume auto)",
                      file=sys.stderr)
            return 0
        trainer = Trainer(spec, env, resume=plan == RESUME, evaluate_again=again)
        trainer.fit()
    return 0


def _run_numpy(spec, args: argparse.Namespace, world_size: int) -> int:
    from ddpcifar.engine.numpy_runner import run_scratch_spec

    if world_size > 1:
        raise UserError("model 'scratch_cnn' runs on the NumPy engine in a single process; "
                        "launch it with `python -m ddpcifar.train`, not torchrun")
    if args.resume or spec.logging.resume == "auto":
        raise UserError("--resume: the NumPy engine (model 'scratch_cnn') does not resume; "
                        "start a new run with --set logging.run_name=NAME")
    with claim_run_dir(spec.run_dir):
        decide_resume(spec.run_dir, asked=None, restarted=False)
        run_scratch_spec(spec)
    return 0


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return _run_torch(args)


if __name__ == "__main__":
    sys.exit(main())
