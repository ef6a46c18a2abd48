"""The data loaders of a run: train (shuffled, seeded; sharded under torchrun), val and eval
(unpadded shards, gathered afterwards), over the manifest's decoded images: read from the
decoded-image cache (:mod:`fbench.data.cache`) when the run's ``cache`` setting allows it and
one is built (or ``build``: built first), else decoded as they are loaded."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from fbench.data.cache import CachedDataset, ImageCache, build_cache, open_cache
from fbench.data.images import ManifestDataset, collate
from fbench.train.distributed import DistContext, ShardSampler, barrier
from fbench.train.resolve import ResolvedRun
from fbench.train.runtime import PREFETCH_FACTOR, resolve_workers


@dataclass
class Loaders:
    train: DataLoader
    val: DataLoader
    eval: DataLoader
    cache_used: bool = False
    """Whether the images came from the decoded-image cache (else they are decoded)."""
    workers: int = 0
    """The loader processes each loader uses (the run's ``workers`` setting resolved)."""


def loader_processes(workers: int, device: torch.device) -> dict[str, Any]:
    """The DataLoader arguments for ``workers`` processes feeding ``device``: pinned memory
    on CUDA (the copy to the GPU then runs asynchronously), and with processes, kept across
    epochs and each :data:`~fbench.train.runtime.PREFETCH_FACTOR` batches ahead."""
    extra = {"persistent_workers": True, "prefetch_factor": PREFETCH_FACTOR} if workers else {}
    return {"num_workers": workers, "pin_memory": device.type == "cuda", **extra}


def image_cache(r: ResolvedRun, ctx: DistContext | None = None,
                progress: bool = True) -> ImageCache | None:
    """The decoded-image cache the run reads, per its ``cache`` setting: ``off`` none, ``auto``
    the built one (None when there is none, or it is out of date: a warning says so),
    ``build`` the built one, built first when missing (by rank 0 under torchrun)."""
    setting = r.config.cache
    if setting == "off":
        return None
    args = (r.manifest, r.input_size, r.config.resample, r.dataset.has_masks)
    ctx = ctx or DistContext()
    if setting == "build":
        if ctx.is_main:
            build_cache(*args, r.image_hashes, progress=progress)
        barrier(ctx)
    return open_cache(*args, r.image_hashes)


def build_loaders(r: ResolvedRun, device: torch.device,
                  ctx: DistContext | None = None, progress: bool = True) -> Loaders:
    cfg = r.config
    size = r.input_size
    n = len(r.manifest)
    workers = resolve_workers(cfg.workers, device, in_memory=bool(cfg.cache_images))
    cache = cfg.cache_images
    if cache is None:  # small datasets decode once and stay in memory
        cache = workers == 0 and n * size * size * 3 < 2 * 1024**3
    with_masks = r.dataset.has_masks
    gen = torch.Generator().manual_seed(cfg.seed)

    ctx = ctx or DistContext()
    # read from the cache's memory map (the OS keeps its pages), never also kept in memory
    images = image_cache(r, ctx, progress)

    def loader(split: str, shuffle: bool) -> DataLoader:
        rows = r.manifest[r.manifest["split"] == split]
        ds = (CachedDataset(rows, images, with_masks=with_masks) if images is not None
              else ManifestDataset(rows, size, with_masks=with_masks, cache=cache,
                                   resample=cfg.resample))
        sampler = None
        if ctx.enabled:
            from torch.utils.data.distributed import DistributedSampler

            # training: each rank a disjoint shuffled shard (seeded per epoch); evaluation:
            # unpadded shards, gathered afterwards so every image counts exactly once
            sampler = (DistributedSampler(ds, ctx.world_size, ctx.rank, shuffle=True,
                                          seed=cfg.seed, drop_last=True) if shuffle
                       else ShardSampler(len(ds), ctx))
        return DataLoader(
            ds, batch_size=cfg.batch_size, shuffle=shuffle and sampler is None,
            sampler=sampler, collate_fn=collate, **loader_processes(workers, device),
            generator=gen if shuffle and sampler is None else None,
            # A trailing batch of one breaks BatchNorm in training; shuffling changes which
            # images are left out, so each is still seen.
            drop_last=shuffle and len(ds) > cfg.batch_size * ctx.world_size,
        )

    return Loaders(loader("train", True), loader("val", False), loader("eval", False),
                   cache_used=images is not None, workers=workers)


def precise_bn_batches(train: DataLoader, n: int, seed: int) -> Iterator[Any]:
    """``n`` batches of the training images for precise BatchNorm: always the same ones for a
    seed (a generator of their own, so the training order is not moved), shuffled across
    classes, taken whole (every rank takes the same, so their statistics agree)."""
    from itertools import islice

    from torch.utils.data import RandomSampler

    sampler = RandomSampler(train.dataset, generator=torch.Generator().manual_seed(seed + 1))
    loader = DataLoader(train.dataset, batch_size=train.batch_size, sampler=sampler,
                        collate_fn=train.collate_fn, num_workers=train.num_workers,
                        pin_memory=train.pin_memory,
                        drop_last=len(train.dataset) > train.batch_size)
    return islice(iter(loader), n)
