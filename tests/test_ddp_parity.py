"""Two DDP ranks equal one process at the same global batch (real gloo groups on CPU).

The parity model has no BatchNorm and no dropout on purpose: BatchNorm statistics are per rank
under DDP (each rank normalises its half batch), and dropout masks come from per-rank RNG
streams, so either would make the runs differ by design, not by bug. Everything else — the
trainer, DDP gradient averaging, the strided data sharding, the schedule — is the real thing.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

STEPS_EPOCHS = 2


class ParityNet(nn.Module):
    outputs_log_probs = False

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(16, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _register() -> None:
    from ddpcifar.models import model_names, register

    if "parity_net" not in model_names():
        register("parity_net")(ParityNet)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spec(tmp: Path, data_dir: Path, name: str, lr: float = 0.05, **train: object) -> Path:
    spec = {
        "data": {"dir": str(data_dir), "loader": "memory", "num_workers": 0},
        "model": {"name": "parity_net"},
        "optimizer": {"name": "sgd", "lr": lr, "momentum": 0.9, "nesterov": True,
                      "weight_decay": 5e-4},
        "schedule": {"name": "onecycle", "warmup_epochs": 0.5},
        # Augmentation streams are seeded per (seed, epoch, rank): deterministic for a given
        # world size, but a 2-rank run augments differently from one process. Off here.
        "augment": {"kind": "none"},
        "train": {"epochs": STEPS_EPOCHS, "global_batch_size": 100, "seed": 5, "amp": "off",
                  "log_every": 5, **train},
        "eval": {"batch_size": 50, "max_samples": 10},
        "logging": {"runs_dir": str(tmp / "runs"), "run_name": name, "tensorboard": False,
                    "progress": False},
    }
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(spec))
    return path


def _worker(rank: int, world: int, port: int, spec_path: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    _register()
    from ddpcifar.engine.distributed import process_group, read_env
    from ddpcifar.engine.trainer import Trainer
    from ddpcifar.spec import load_spec

    env = read_env("cpu")
    spec = load_spec(spec_path, world_size=world)
    with process_group(env, timeout_s=120):
        Trainer(spec, env).fit()


def _final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    from ddpcifar.engine.checkpoint import load_checkpoint

    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["state_dict"]


@pytest.mark.slow
def test_two_ranks_match_one_process(tmp_path, prepared_data):
    data_dir = prepared_data.data_dir
    one = _spec(tmp_path, data_dir, "one")
    two = _spec(tmp_path, data_dir, "two")
    mp.start_processes(_worker, args=(1, _free_port(), str(one)), nprocs=1, join=True,
                       start_method="spawn")
    mp.start_processes(_worker, args=(2, _free_port(), str(two)), nprocs=2, join=True,
                       start_method="spawn")

    a, b = _final_state(tmp_path / "runs" / "one"), _final_state(tmp_path / "runs" / "two")
    assert a.keys() == b.keys()
    steps = json.loads((tmp_path / "runs" / "one" / "summary.json").read_text())["steps"]
    assert steps == STEPS_EPOCHS * (1000 // 100)
    for key in a:
        # fp32 all-reduce sums the two half-batch gradients in another order than one
        # full-batch backward: equal up to float rounding, nowhere near a real difference.
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)
    moved = max((a[k] - ParityNet().state_dict()[k]).abs().max().item() for k in a)
    assert moved > 1e-3, "training must actually change the weights for parity to mean anything"

    # The evaluation, reduced over two ranks, equals the single-process one.
    s1 = json.loads((tmp_path / "runs" / "one" / "summary.json").read_text())["final"]
    s2 = json.loads((tmp_path / "runs" / "two" / "summary.json").read_text())["final"]
    assert s1["count"] == s2["count"] == 200
    assert s1["confusion"] == s2["confusion"]
    assert s1["loss"] == pytest.approx(s2["loss"], rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("world,reduction", [(2, "mean"), (1, "sum")])
def test_micro_batches_match_the_whole_batch(tmp_path, prepared_data, world, reduction):
    """train.micro_batch_size splits each rank's share (50 or 100 images) into micro-batches of
    20 (the last one smaller) whose gradients add up to the whole batch's: the same weights.
    With two ranks every micro-batch but the last skips DDP's reduction (no_sync)."""
    data_dir = prepared_data.data_dir
    lr = 0.05 if reduction == "mean" else 0.05 / 100  # a summed loss: the same step size
    whole = _spec(tmp_path, data_dir, "whole", lr=lr, loss_reduction=reduction)
    micro = _spec(tmp_path, data_dir, "micro", lr=lr, loss_reduction=reduction,
                  micro_batch_size=20)
    mp.start_processes(_worker, args=(1, _free_port(), str(whole)), nprocs=1, join=True,
                       start_method="spawn")
    mp.start_processes(_worker, args=(world, _free_port(), str(micro)), nprocs=world, join=True,
                       start_method="spawn")

    a, b = _final_state(tmp_path / "runs" / "whole"), _final_state(tmp_path / "runs" / "micro")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)
    moved = max((a[k] - ParityNet().state_dict()[k]).abs().max().item() for k in a)
    assert moved > 1e-3
    # The logged training loss is the whole batch's mean, however it was split.
    rows = [[json.loads(line) for line in (tmp_path / "runs" / name / "metrics.jsonl")
             .read_text().splitlines()] for name in ("whole", "micro")]
    train = [[r for r in run if r["kind"] == "train"] for run in rows]
    assert len(train[0]) > 1 and [r["step"] for r in train[0]] == [r["step"] for r in train[1]]
    for key in ("loss", "top1"):
        assert ([r["values"][key] for r in train[1]]
                == pytest.approx([r["values"][key] for r in train[0]], rel=1e-4)), key
