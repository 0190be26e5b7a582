"""Reading torchrun's environment once, and the process group's lifetime (real gloo groups)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ddpcifar.engine.distributed import (all_gather_objects, all_reduce_sum, broadcast_object,
                                         process_group, read_env)
from ddpcifar.errors import UserError


def test_single_process_defaults(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "TORCHELASTIC_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)
    env = read_env("cpu")
    assert (env.rank, env.local_rank, env.world_size, env.backend) == (0, 0, 1, "gloo")
    assert env.is_main and not env.distributed and env.device == torch.device("cpu")
    # Collectives are no-ops without a group, so one code path serves both cases.
    t = torch.ones(2)
    assert all_reduce_sum(t) is t and t.tolist() == [1.0, 1.0]
    assert all_gather_objects("x") == ["x"] and broadcast_object(5) == 5


def test_torchrun_variables_are_read(monkeypatch):
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "2")
    env = read_env("cpu")
    # The global rank decides who writes; the local rank only picks a GPU.
    assert (env.rank, env.local_rank, env.world_size, env.restart_count) == (5, 1, 8, 2)
    assert not env.is_main and env.distributed


def test_bad_variable_is_one_line(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(UserError, match=r"^environment variable WORLD_SIZE='two' is not an integer$"):
        read_env("cpu")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, results) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    env = read_env("cpu")
    try:
        with process_group(env, timeout_s=60):
            total = all_reduce_sum(torch.tensor([rank + 1.0]))
            gathered = all_gather_objects(rank * 10)
            raise RuntimeError(f"boom {total.item()} {gathered}")
    except RuntimeError as err:
        results.put((rank, str(err), dist.is_initialized()))


@pytest.mark.slow
def test_group_works_and_is_destroyed_on_error():
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    mp.start_processes(_worker, args=(_port(), results), nprocs=2, join=True, start_method="spawn")
    got = sorted(results.get(timeout=10) for _ in range(2))
    assert got == [(0, "boom 3.0 [0, 10]", False), (1, "boom 3.0 [0, 10]", False)]
