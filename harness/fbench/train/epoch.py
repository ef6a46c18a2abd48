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
from fbench.train.runtime import autocast, prepare_batch

if TYPE_CHECKING:  # pragma: no cover
    from rich.progress import Progress


class NonFiniteLoss(FbenchError):
    """The loss became NaN or infinite; the weights are those before the offending step."""


def train_one_epoch(model: Detector, trained: torch.nn.Module, transform: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, loader: DataLoader, device: torch.device,
                    precision: str, bar: Progress, epoch: int, run_dir: Path,
                    ctx: DistContext | None = None, scheduler: Any = None,
                    clip_grad: float | None = None) -> dict[str, Any]:
    """One pass over the training data. ``trained`` is the module called forward (the model,
    or its DistributedDataParallel wrapper, which synchronises gradients); the loss is the
    detector's own. ``scheduler`` steps after every optimizer step; ``clip_grad`` clips the
    gradients' total norm first (the row records the largest norm seen before clipping)."""
    world = ctx.world_size if ctx else 1
    model.train()
    task = bar.add_task(f"epoch {epoch}", total=len(loader), info="")
    totals: dict[str, float] = {}
    n_seen, t0, max_norm = 0, time.perf_counter(), 0.0
    for step, batch in enumerate(loader):
        batch = prepare_batch(batch, transform, device)
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
        bar.update(task, advance=1, info=f"loss {totals['loss'] / n_seen:.3f}")
    bar.remove_task(task)
    elapsed = time.perf_counter() - t0
    row: dict[str, Any] = {"epoch": epoch, "train_loss": totals.pop("loss") / n_seen}
    row.update({f"train_{k}": v / n_seen for k, v in totals.items()})
    row["train_seconds"] = elapsed
    row["train_images_per_s"] = n_seen * world / elapsed  # all ranks together
    row["lr"] = float(optimizer.param_groups[0]["lr"])  # the rate the next step would use
    if clip_grad is not None:
        row["max_grad_norm"] = max_norm
    return row
