"""Distributed set-up in one place: read torchrun's environment once, open and close the group.

`python -m ddpcifar.train` without torchrun is world size 1 and takes the same code path: the
collectives below are no-ops then, so the trainer never branches on "am I distributed".

Each attempt of an elastic run keeps its process group's keys apart from every earlier
attempt's (`agree_on_attempt`): under plain torchrun the store outlives the attempts, and a
restarted rank that read a dead peer's address failed to connect (docs/resilience.md).
"""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist

from ddpcifar.engine.device import select_device
from ddpcifar.errors import UserError


@dataclass(frozen=True)
class DistEnv:
    """Who this process is. `rank` is global; `local_rank` only picks the GPU on this node."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str
    restart_count: int  # torchrun's TORCHELASTIC_RESTART_COUNT: > 0 after an elastic restart

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    try:
        return default if raw is None or raw == "" else int(raw)
    except ValueError:
        raise UserError(f"environment variable {name}={raw!r} is not an integer") from None


def read_env(device: str = "auto") -> DistEnv:
    """Read RANK/LOCAL_RANK/WORLD_SIZE as torchrun sets them (absent: a single process)."""
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    world_size = _env_int("WORLD_SIZE", 1)
    # The local rank picks the GPU; the global rank never does (it exceeds the GPU count on
    # every node but the first).
    dev = select_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return DistEnv(
        rank=rank,
        local_rank=local_rank,
        world_size=world_size,
        device=dev,
        backend="nccl" if dev.type == "cuda" else "gloo",
        restart_count=_env_int("TORCHELASTIC_RESTART_COUNT", 0),
    )


@contextmanager
def process_group(env: DistEnv, timeout_s: float = 600.0) -> Iterator[None]:
    """Initialise the process group for a multi-rank run and always destroy it, even on error.

    `timeout_s` bounds every collective: a rank that stops answering becomes an error on the
    others instead of a silent hang. The group's store keys carry a name of this attempt's own.
    """
    if not env.distributed:
        yield
        return
    timeout = dt.timedelta(seconds=timeout_s)
    # The store env:// names: the agent's under torchrun (TORCHELASTIC_USE_AGENT_STORE=True),
    # which outlives every attempt, or one that rank 0 serves (the launch helpers' setting).
    store, _, _ = next(dist.rendezvous("env://", rank=env.rank, world_size=env.world_size,
                                       timeout=timeout))
    store.set_timeout(timeout)
    # The group's keys (gloo's listening addresses above all) go under a name no earlier attempt
    # used: the agent's store still holds the keys of the attempt that died, and a rank that read
    # those got "connectFullMesh failed ... Connection refused" instead of its restarted peer.
    attempt = agree_on_attempt(store, rank=env.rank, world_size=env.world_size,
                               timeout_s=timeout_s)
    kwargs: dict[str, Any] = {"backend": env.backend, "timeout": timeout, "rank": env.rank,
                              "world_size": env.world_size,
                              "store": dist.PrefixStore(f"{ATTEMPT_KEYS}/{attempt}/", store)}
    if env.device.type == "cuda":
        kwargs["device_id"] = env.device
    dist.init_process_group(**kwargs)
    try:
        yield
    except BaseException:
        if dist.is_initialized():  # no barrier: the other ranks may be dead or stuck
            dist.destroy_process_group()
        raise
    # Leave together: a rank that tore its group down while a peer was still working exited
    # with SIGABRT ("terminate called without an active exception") in the launch tests.
    try:
        dist.barrier()
    finally:
        dist.destroy_process_group()


ATTEMPT_KEYS = "ddpcifar/attempt"  # where agree_on_attempt keeps its keys in the store


def agree_on_attempt(store: dist.Store, *, rank: int, world_size: int, timeout_s: float) -> str:
    """A name for this attempt that every rank gets and no earlier attempt used.

    Rank 0 makes it up (a random hex string) and hands it to every other rank. A key read from
    a store that outlives attempts may be a dead attempt's, so nothing is taken from a key
    whose name an earlier attempt could have written: each other rank posts a fresh mailbox
    name under its rank and waits for the answer in that mailbox; rank 0 answers whatever
    mailbox the key names (a dead attempt's too, harmlessly) until each rank has acknowledged
    under the new name. TORCHELASTIC_RESTART_COUNT would not do: an agent that restarts
    because another node's worker failed does not count the restart, so nodes disagree on it.
    """
    if rank != 0:
        mailbox = uuid.uuid4().hex
        store.set(f"{ATTEMPT_KEYS}/ask/{rank}", mailbox)
        name = store.get(f"{ATTEMPT_KEYS}/answer/{mailbox}").decode()  # waits for rank 0
        store.set(f"{ATTEMPT_KEYS}/{name}/ack/{rank}", "1")
        return name
    name = uuid.uuid4().hex
    answered: dict[int, bytes] = {}
    waiting = set(range(1, world_size))
    deadline = time.monotonic() + timeout_s
    while waiting:
        for peer in sorted(waiting):
            if store.check([f"{ATTEMPT_KEYS}/{name}/ack/{peer}"]):
                waiting.discard(peer)
                continue
            ask = f"{ATTEMPT_KEYS}/ask/{peer}"
            if store.check([ask]):
                mailbox = store.get(ask)
                if answered.get(peer) != mailbox:
                    store.set(f"{ATTEMPT_KEYS}/answer/{mailbox.decode()}", name)
                    answered[peer] = mailbox
        if waiting:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Timed out after {timeout_s:g}s waiting for ranks "
                                   f"{sorted(waiting)} to join the process group")
            time.sleep(0.005)  # a few store round trips per pass; ranks start seconds apart
    return name


class PeerTimeoutError(UserError):
    """A collective outlived `distributed.timeout_s`: some rank died, hung or was stopped.

    Not the user's fault, but reported the same way: one line, no traceback (exit status 1).
    """

    exit_code = 1


def as_peer_timeout(err: BaseException, *, rank: int, timeout_s: float) -> PeerTimeoutError | None:
    """A one-line PeerTimeoutError for a backend timeout (gloo: "Timed out waiting ..."), else None.

    NCCL reports its timeouts from a watchdog thread that ends the process instead of raising.
    """
    text = str(err)
    if isinstance(err, RuntimeError) and ("Timed out" in text or "timed out" in text):
        return PeerTimeoutError(
            f"rank {rank}: no answer from the other ranks within distributed.timeout_s="
            f"{timeout_s:g}s (a rank died, hung or was stopped); the run stopped here, "
            "continue it with --resume")
    return None


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over ranks in place (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (a one-element list in a single process)."""
    if dist.is_available() and dist.is_initialized():
        out: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank."""
    if dist.is_available() and dist.is_initialized():
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]
    return obj


class StopVote:
    """Did any rank ask to stop? Asked every step, so every rank stops after the same one.

    A one-element MAX all-reduce of a CPU tensor, over gloo even when training uses NCCL (a
    gloo side group): no device synchronisation, tens of microseconds on one host. Created on
    every rank (making the side group is itself a collective).
    """

    def __init__(self, env: DistEnv) -> None:
        self._group = None
        self._on = env.distributed and dist.is_available() and dist.is_initialized()
        if self._on and env.backend != "gloo":
            self._group = dist.new_group(backend="gloo")

    def any(self, mine: bool) -> bool:
        if not self._on:
            return mine
        flag = torch.tensor([1 if mine else 0], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        return bool(flag.item())


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
