"""Multi-process data-parallel training: the process group, and the few collectives training needs.

Processes are started by `torchrun` (or `nanogpt train --nproc N`, which runs torchrun), which sets
RANK, LOCAL_RANK and WORLD_SIZE. `setup()` joins the group (NCCL on CUDA, gloo on the CPU); without
those variables everything here is a cheap no-op for a single process. Rank 0 is the main process:
only it prints, and only it writes files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from nanogpt_cli.errors import NanoGPTError

T = TypeVar("T")


@dataclass(frozen=True)
class Group:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def torchrun_command(nproc: int, train_args: list[str]) -> list[str]:
    """The command that runs `nanogpt train TRAIN_ARGS` in `nproc` processes on this machine. "--"
    stops torchrun from reading our flags as its own (it would take --run for --run-path)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "nanogpt_cli", "--", "train", *train_args]


def launch(nproc: int, train_args: list[str]) -> int:
    """Run `nanogpt train TRAIN_ARGS` under torchrun with `nproc` processes; return its exit status."""
    return subprocess.run(torchrun_command(nproc, train_args)).returncode


def setup() -> Group:
    """Join the process group torchrun described in the environment (once); a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Group()
    group = Group(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(group.local_rank)
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return group


def current() -> Group:
    if not (dist.is_available() and dist.is_initialized()):
        return Group()
    return Group(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def teardown(finished: bool = True) -> None:
    """Leave the process group. After a run that every rank finished together, wait for all of them
    first: a rank that exits while another is still tearing down can make gloo abort the process.
    (After an error on one rank only, waiting could hang, so then nobody waits.)"""
    if dist.is_available() and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def broadcast(value: T) -> T:
    """Rank 0's value, on every rank."""
    if not current().active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 only; every rank gets its result, or raises the same NanoGPTError."""
    group = current()
    if not group.active:
        return fn()
    result, error = None, None
    if group.is_main:
        try:
            result = fn()
        except NanoGPTError as exc:
            error = str(exc)
    result, error = broadcast((result, error))
    if error is not None:
        raise NanoGPTError(error)
    return result


def gather(value: Any) -> list[Any]:
    """Every rank's value, in rank order, on every rank."""
    group = current()
    if not group.active:
        return [value]
    values: list[Any] = [None] * group.world
    dist.all_gather_object(values, value)
    return values


def mean(tensor: torch.Tensor) -> torch.Tensor:
    """The average of a tensor over all ranks."""
    if current().active:
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= current().world
    return tensor


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on any (e.g. one process got Ctrl-C)."""
    if not current().active:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
