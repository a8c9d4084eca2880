"""Data-parallel training under torchrun: `torchrun --nproc_per_node=N -m ddpm_core.train …`.

torchrun starts N copies of the trainer and tells each its RANK, LOCAL_RANK and WORLD_SIZE. Each copy holds the whole
(small) data set, draws its share of every epoch's shuffle through torch's DistributedSampler, and trains a
DistributedDataParallel wrapper of the same network, whose backward pass averages the gradients of all ranks: the
global batch is TrainConfig.batch_size, batch_size / N per rank. Only rank 0 writes the run folder (metrics,
checkpoints, previews, evaluation) and keeps the EMA weights. Without torchrun (WORLD_SIZE unset) everything here is
a no-op and training runs in one process.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DistributedSampler


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_from_env() -> World:
    """The process's place among torchrun's processes (one process: rank 0 of 1)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), size)


def start(world: World, device: torch.device) -> torch.device:
    """Join the process group (NCCL on GPUs, gloo on CPUs); returns this rank's device (cuda:LOCAL_RANK on GPUs)."""
    if not world.active:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def finish(world: World) -> None:
    if world.active and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """DistributedDataParallel around model under torchrun (the module itself otherwise)."""
    if not world.active:
        return model
    ids = [device.index] if device.type == "cuda" else None
    # A 1×1 convolution's weight gradient (C, C, 1, 1) can come back with "channels-last" strides, which for size-1
    # dimensions describe the same memory as the bucket's: torch's stride warning about it is noise in train.log.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    # gradients as views into DDP's buckets: no copy per step, and no stride mismatch for the 1×1 convolutions
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True)


def per_rank_batch(batch_size: int, world: World) -> int:
    if batch_size % world.size:
        raise ValueError(f"batch_size ({batch_size}) must divide evenly among the {world.size} processes")
    return batch_size // world.size


def epoch_indices(n: int, world: World, seed: int, epoch: int, generator: torch.Generator) -> Tensor:
    """This rank's shuffled share of range(n) for one epoch: DistributedSampler's under torchrun (every rank the
    same permutation, a disjoint slice each), else a permutation from generator."""
    if not world.active:
        return torch.randperm(n, generator=generator, device=generator.device)
    sampler = DistributedSampler(range(n), num_replicas=world.size, rank=world.rank, shuffle=True, seed=seed,
                                 drop_last=True)  # fmt: skip
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), device=generator.device)


def batch_indices(n: int, batch: int, world: World, seed: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Index tensors of `batch` samples, epoch after epoch (a short last batch of an epoch is dropped)."""
    epoch = 0
    while True:
        order = epoch_indices(n, world, seed, epoch, generator)
        for i in range(0, len(order) - batch + 1, batch):
            yield order[i : i + batch]
        epoch += 1


def mean_across(value: Tensor, world: World) -> Tensor:
    """The mean of a tensor over all ranks (itself in one process): logged losses speak for the global batch."""
    if world.active:
        value = value.clone()
        dist.all_reduce(value)
        value /= world.size
    return value


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True on every rank when flag is True on any (a STOP seen by rank 0 stops all of them together)."""
    if not world.active:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
