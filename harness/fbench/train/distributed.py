"""torch.distributed for ``torchrun --nproc-per-node N -m fbench run ...``.

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and the rendezvous address); fbench
reads them, joins the process group (NCCL on GPUs, gloo on CPU), shards the data, and gathers
every evaluation back so each image is counted exactly once. Only rank 0 writes the run
directory. Without those variables everything here is a no-op for one process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistContext:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_environment(device_type: str) -> DistContext:
    """Join the process group torchrun prepared (once per process); one process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistContext(dist.get_world_size(), dist.get_rank(),
                       int(os.environ.get("LOCAL_RANK", "0")))


def broadcast(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's value of ``obj`` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def gather_concat(parts: dict[str, Any], ctx: DistContext) -> list[dict[str, Any]]:
    """Every rank's ``parts`` (picklable), in rank order, on every rank."""
    if not ctx.enabled:
        return [parts]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, parts)
    return out


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` of a dataset, in order and without padding, so that
    the shards of all ranks together hold every evaluation image exactly once (torch's
    DistributedSampler pads to equal shards, which would count some images twice)."""

    def __init__(self, n: int, ctx: DistContext) -> None:
        self.indices = list(range(ctx.rank, n, ctx.world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def cleanup(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def device_for(name: str, ctx: DistContext) -> str:
    """Each local rank takes its own GPU; on CPU all share the host."""
    if ctx.enabled and name in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{ctx.local_rank}"
    return name
