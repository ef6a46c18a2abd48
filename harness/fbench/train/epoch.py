"""One pass over the training data: the step every run (and ``fbench bench``) takes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader

from fbench.errors import FbenchError
from fbench.plugins.detector import Detector
from fbench.train.distributed import DistContext
from fbench.train.runtime import autocast, memory_format_of, prepare_batch

if TYPE_CHECKING:  # pragma: no cover
    from rich.progress import Progress


class NonFiniteLoss(FbenchError):
    """The loss became NaN or infinite; the weights are those before the offending step."""


def train_one_epoch(model: Detector, trained: torch.nn.Module, transform: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, loader: DataLoader, device: torch.device,
                    precision: str, bar: Progress, epoch: int, run_dir: Path,
                    ctx: DistContext | None = None, scheduler: Any = None,
                    clip_grad: float | None = None,
                    first_step_apart: bool = False) -> dict[str, Any]:
    """One pass over the training data. ``trained`` is the module called forward (the model,
    its DistributedDataParallel wrapper, which synchronises gradients, or its torch.compile
    wrapper); the loss is the detector's own. Batches are laid out as the model's weights are
    (channels_last or not). ``scheduler`` steps after every optimizer step; ``clip_grad``
    clips the gradients' total norm first (the row records the largest norm seen before
    clipping). ``first_step_apart``: the first step (torch.compile's warm-up) is left out of
    the throughput, and what it took above the other steps' mean is the row's
    ``compile_warmup_seconds``."""
    world = ctx.world_size if ctx else 1
    model.train()
    memory_format = memory_format_of(model)
    task = bar.add_task(f"epoch {epoch}", total=len(loader), info="")
    totals: dict[str, float] = {}
    n_seen, t0, max_norm = 0, time.perf_counter(), 0.0
    first: tuple[float, int] | None = None  # the first step's seconds and images, kept apart
    for step, batch in enumerate(loader):
        batch = prepare_batch(batch, transform, device, memory_format)
        with autocast(device, precision):
            out = trained(batch)
            losses = model.loss(out, batch)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise NonFiniteLoss(
                f"the loss became {loss.item()} at epoch {epoch}, step {step + 1} "
                f"({', '.join(f'{k}={v.item():.4g}' for k, v in losses.items())}).",
                f"lower --lr or set --clip-grad; the last good checkpoint is kept in "
                f"{run_dir / 'checkpoints'}.",
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad is not None:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            max_norm = max(max_norm, float(norm))
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        b = len(batch)
        n_seen += b
        for k, v in losses.items():
            totals[k] = totals.get(k, 0.0) + float(v.detach()) * b
        totals["loss"] = totals.get("loss", 0.0) + float(loss.detach()) * b
        if first_step_apart and step == 0:  # float() above waited for the step to finish
            first = (time.perf_counter() - t0, b)
        bar.update(task, advance=1, info=f"loss {totals['loss'] / n_seen:.3f}")
    bar.remove_task(task)
    elapsed = time.perf_counter() - t0
    row: dict[str, Any] = {"epoch": epoch, "train_loss": totals.pop("loss") / n_seen}
    row.update({f"train_{k}": v / n_seen for k, v in totals.items()})
    row["train_seconds"] = elapsed
    timed_s, timed_images = elapsed, n_seen
    if first is not None:
        timed_s, timed_images, row["compile_warmup_seconds"] = _apart(
            elapsed, n_seen, first, step + 1)
    row["train_images_per_s"] = timed_images * world / timed_s  # all ranks together
    row["lr"] = float(optimizer.param_groups[0]["lr"])  # the rate the next step would use
    if clip_grad is not None:
        row["max_grad_norm"] = max_norm
    return row


def _apart(elapsed: float, images: int, first: tuple[float, int], steps: int
           ) -> tuple[float, int, float]:
    """The seconds and images the throughput counts without the first step, and that step's
    warm-up: its time above the other steps' mean. An epoch of one step has nothing else to
    time: the throughput counts it, and its whole time is the warm-up."""
    first_s, first_images = first
    if steps < 2:
        return elapsed, images, first_s
    rest_s = elapsed - first_s
    return rest_s, images - first_images, max(0.0, first_s - rest_s / (steps - 1))
