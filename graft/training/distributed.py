"""Training on several processes with DistributedDataParallel, inside processes that torchrun started.

torchrun gives each process RANK, LOCAL_RANK, WORLD_SIZE and a rendezvous in its environment. A
training stage that finds them joins the process group (gloo on the CPU, NCCL on CUDA) and `fit`
trains the model wrapped in DDP:

- Every epoch's order is the single-process run's permutation, seeded by (seed, stage, epoch), and
  DistributedSampler deals it out to the processes; each takes batch_size / world_size images a
  step, so one step of all processes sees the very images one single-process step sees.
- Gradients are averaged by DDP; the epoch's loss and accuracy are summed across processes.
- Process 0 is the primary: only it writes checkpoints, outputs, metrics and tracking entries.
  The others read the checkpoint to resume, and take its validation figures, so that every process
  makes the same keep-best and early-stopping decisions.
- A checkpoint holds the plain model's state, so it resumes under any number of processes.
"""

from __future__ import annotations

import atexit
import gc
import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def primary(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched_world() -> World:
    """What torchrun says about this process (one process when not under torchrun)."""
    env = os.environ
    return World(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)))


def current_world() -> World:
    """The process group this process has joined (one process when none)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), launched_world().local_rank, dist.get_world_size())
    return World()


def is_primary() -> bool:
    return launched_world().primary


def join(device: torch.device) -> torch.device:
    """Join torchrun's process group once; returns the device this process trains on (its own GPU)."""
    world = launched_world()
    if not world.distributed:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_leave)
    return device


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def threads_per_process(threads: int) -> int:
    """train.threads is the machine's share for training: the processes on one machine split it."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, threads // local) if threads else 0


def shard(order: torch.Tensor, world: World) -> torch.Tensor:
    """This process's part of the epoch's order, dealt out by DistributedSampler (padded to equal parts)."""
    if not world.distributed:
        return order
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(len(order)), num_replicas=world.size, rank=world.rank, shuffle=False)
    return order[torch.tensor(list(sampler), dtype=torch.long)]


def local_batch(batch_size: int, world: World) -> int:
    return math.ceil(batch_size / world.size)


def wrap(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """DDP around `model` for its current freeze state (DDP only tracks parameters that train)."""
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    gc.collect()  # a DDP of an earlier phase can sit in a reference cycle; freed, its reducer drops its hooks
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def sync_batchnorm(model: nn.Module, world: World, device: torch.device, asked: bool) -> tuple[nn.Module, str | None]:
    """SyncBatchNorm when asked and possible; else the model as it is, and why not (to say)."""
    if not (asked and world.distributed):
        return model, None
    if device.type != "cuda":
        return model, "train.sync_bn: SyncBatchNorm runs on GPUs only; on the CPU each process keeps its own statistics"
    return nn.SyncBatchNorm.convert_sync_batchnorm(model), None


def sum_across(*values: torch.Tensor, world: World) -> list[torch.Tensor]:
    if not world.distributed:
        return list(values)
    stacked = torch.stack([v.double() for v in values])
    dist.all_reduce(stacked)
    return list(stacked.unbind())


def from_primary(values: list[float], world: World, device: torch.device) -> list[float]:
    """The primary's `values`, in every process."""
    if not world.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(t, 0)
    return t.tolist()


def sync_buffers(model: nn.Module, world: World) -> None:
    """The primary's buffers (BatchNorm statistics) everywhere: the model every process scores is the one it saves."""
    if world.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()
