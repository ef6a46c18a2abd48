"""The train/eval loop: train on ``train``, select the checkpoint on ``val``, evaluate it once
on ``eval``, and store everything a report needs to recompute every number.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.progress import (
    Progress,
)
from torch.utils.data import DataLoader

from fbench.data.images import ManifestDataset, collate
from fbench.errors import FbenchError
from fbench.metrics import PROB_COLUMNS, compute_metrics, val_threshold
from fbench.metrics import segmentation_scores as seg_scores
from fbench.plugins.batch import Batch
from fbench.plugins.detector import Detector, count_parameters
from fbench.progress import make_progress
from fbench.runs import store
from fbench.train.distributed import DistContext, ShardSampler, barrier, broadcast, gather_concat
from fbench.train.resolve import ResolvedRun


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FbenchError(f"unknown device {name!r}.", "use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FbenchError("--device cuda was asked for, but no CUDA GPU is visible.",
                          "use --device cpu (or auto).")
    return device


def prepare_batch(batch: Batch, transform: torch.nn.Module, device: torch.device) -> Batch:
    """Move a uint8 batch to the device and apply the transform there."""
    batch = batch.to(device, non_blocking=True)
    rgb = batch.images.float().div_(255.0)
    batch.rgb = rgb
    batch.images = transform(rgb)
    return batch


@contextlib.contextmanager
def tf32_mode(enabled: bool) -> Any:
    """Allow TensorFloat-32 in CUDA convolutions and matmuls only when asked: PyTorch lets
    cuDNN use TF32 by default, which moves small spectral features (LFS's log-DCT bands)
    measurably. Restores the process's previous flags afterwards."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict(model: Detector, transform: torch.nn.Module, loader: DataLoader,
            device: torch.device, precision: str = "fp32",
            progress: Progress | None = None, description: str = "predict",
            ctx: DistContext | None = None) -> dict[str, Any]:
    """Class probabilities (and per-image Dice/IoU where the model predicts masks) for every
    sample of a loader, in loader order."""
    model.eval()
    probs, index, dice, iou = [], [], [], []
    task = progress.add_task(description, total=len(loader), info="") if progress else None
    for batch in loader:
        batch = prepare_batch(batch, transform, device)
        with autocast(device, precision):
            out = model(batch)
        probs.append(torch.softmax(out.logits.float(), dim=1).cpu())
        index.append(batch.index.cpu())
        if out.mask is not None and batch.masks is not None:
            pm = out.mask.float().cpu().numpy()
            tm = batch.masks.cpu().numpy()
            known = batch.has_mask.cpu().numpy()
            for j in range(len(pm)):
                d, i = seg_scores(pm[j], tm[j]) if known[j] else (math.nan, math.nan)
                dice.append(d)
                iou.append(i)
        if progress:
            progress.advance(task)
    if progress:
        progress.remove_task(task)
    out_dict: dict[str, Any] = {
        "probs": (torch.cat(probs).numpy().astype(np.float64) if probs
                  else np.zeros((0, 3), np.float64)),
        "index": torch.cat(index).numpy() if index else np.zeros(0, np.int64)}
    if dice:
        out_dict["dice"] = np.array(dice)
        out_dict["iou"] = np.array(iou)
    if ctx is not None and ctx.enabled:
        out_dict = _merge_shards(gather_concat(out_dict, ctx))
    return out_dict


def _merge_shards(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The ranks' predictions as one, in dataset order (each index appears once)."""
    keys = set().union(*parts)
    merged = {k: np.concatenate([p[k] for p in parts if k in p]) for k in keys}
    order = np.argsort(merged["index"], kind="stable")
    if len(np.unique(merged["index"])) != len(merged["index"]):
        raise RuntimeError("distributed evaluation scored an image twice (a sharding bug)")
    return {k: v[order] for k, v in merged.items()}


@dataclass
class Loaders:
    train: DataLoader
    val: DataLoader
    eval: DataLoader


def build_loaders(r: ResolvedRun, device: torch.device,
                  ctx: DistContext | None = None) -> Loaders:
    cfg = r.config
    size = r.input_size
    n = len(r.manifest)
    cache = cfg.cache_images
    if cache is None:  # small datasets decode once and stay in memory
        cache = cfg.workers == 0 and n * size * size * 3 < 2 * 1024**3
    with_masks = r.dataset.has_masks
    gen = torch.Generator().manual_seed(cfg.seed)

    ctx = ctx or DistContext()

    def loader(split: str, shuffle: bool) -> DataLoader:
        rows = r.manifest[r.manifest["split"] == split]
        ds = ManifestDataset(rows, size, with_masks=with_masks, cache=cache,
                             resample=cfg.resample)
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
            sampler=sampler, collate_fn=collate,
            num_workers=cfg.workers, pin_memory=device.type == "cuda",
            persistent_workers=cfg.workers > 0,
            generator=gen if shuffle and sampler is None else None,
            # A trailing batch of one breaks BatchNorm in training; shuffling changes which
            # images are left out, so each is still seen.
            drop_last=shuffle and len(ds) > cfg.batch_size * ctx.world_size,
        )

    return Loaders(loader("train", True), loader("val", False), loader("eval", False))


def _predictions_frame(r: ResolvedRun, loader: DataLoader, result: dict[str, Any],
                       split: str) -> pd.DataFrame:
    rows = r.manifest.loc[loader.dataset.row_ids[result["index"]]]
    probs = result["probs"]
    df = pd.DataFrame({
        "id": rows.index.to_numpy(),
        "path": rows["path"].to_numpy(),
        "source": rows["source"].to_numpy(),
        "group": rows["group"].to_numpy(),
        "split": split,
        "label": rows["label"].to_numpy(),
        "pred": probs.argmax(1),
    })
    for c, col in enumerate(PROB_COLUMNS):
        df[col] = probs[:, c]
    if "dice" in result:
        df["dice"] = result["dice"]
        df["iou"] = result["iou"]
    return df


def rng_state(loader_generator: torch.Generator) -> dict[str, Any]:
    """Every random stream a resumed run must continue, as plain tensors and numbers (so a
    checkpoint still loads with ``weights_only=True``)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "loader": loader_generator.get_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any], loader_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    loader_generator.set_state(state["loader"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_checkpoint(path: Path, model: Detector, transform: torch.nn.Module,
                     optimizer: torch.optim.Optimizer, epoch: int, best: float,
                     extra: dict[str, Any] | None = None) -> None:
    state = {"model": model.state_dict(), "transform": transform.state_dict(),
             "optimizer": optimizer.state_dict(), "epoch": epoch, "best_val_macro_f1": best,
             **(extra or {})}
    with store.atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    # weights_only: a checkpoint is data; never unpickle arbitrary objects.
    return torch.load(path, map_location=map_location, weights_only=True)


def make_optimizer(name: str, params: Any, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999))
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=0.9)
    raise FbenchError(f"unknown optimizer {name!r}.", "use adam, adamw or sgd.")


def _open_run_dir(r: ResolvedRun, resume: Path | None, ctx: DistContext) -> Path:
    """A new run directory, or the one being resumed; rank 0 decides, the others follow."""
    if not ctx.is_main:
        return Path(broadcast(None, ctx))
    if resume is not None:
        run_dir = Path(resume)
    else:
        cfg = r.config
        run_dir = store.new_run_dir(cfg.out, cfg.detector, cfg.dataset, cfg.name)
    return Path(broadcast(str(run_dir), ctx))


def _resume_state(run_dir: Path) -> dict[str, Any]:
    status = store.read_json(run_dir / "status.json") if (run_dir / "status.json").is_file() \
        else {}
    if status.get("state") == "completed":
        raise FbenchError(f"run {run_dir} is already completed; nothing to resume.",
                          "start a new run (or `fbench reproduce` it).")
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        raise FbenchError(f"run {run_dir} has no checkpoint to resume from (it stopped during "
                          "its first epoch).", "start the run again.")
    state = load_checkpoint(last)
    if "rng" not in state or "epochs" not in state:
        raise FbenchError(f"{last} was written by an older fbench without resume state.",
                          "start the run again.")
    return state


def train_and_evaluate(r: ResolvedRun, console: Console | None = None,
                       progress: bool = True, resume: str | Path | None = None) -> Path:
    """Run one resolved configuration end to end; returns the run directory (see
    :func:`_train_and_evaluate`). TF32 is allowed on CUDA only when the run asks for it."""
    with tf32_mode(r.config.tf32):
        return _train_and_evaluate(r, console, progress, resume)


def parameter_counts(r: ResolvedRun, model: torch.nn.Module) -> dict[str, Any]:
    """The model's parameters at the run's input size and, for a detector whose size depends
    on the input (a FAD head's filters are N x N), at 224 px, the size the thesis's (and most
    papers') counts refer to."""
    n = count_parameters(model)
    if not r.size_dependent():
        return {"n_parameters": n, "parameters_counted_at": None}
    if r.input_size == 224:
        n224 = n
    else:
        with torch.random.fork_rng(devices=[]):  # counting must not move the run's RNG
            n224 = count_parameters(r.build_model(224))
    return {"n_parameters": n, "parameters_counted_at": r.input_size, "n_parameters_224": n224}


def _train_and_evaluate(r: ResolvedRun, console: Console | None = None,
                        progress: bool = True, resume: str | Path | None = None) -> Path:
    """Run one resolved configuration end to end; returns the run directory.

    ``resume``: a run directory whose ``last.pt`` (written after each epoch with the model,
    optimizer, every RNG stream, the epoch log and the best score so far) to continue from;
    the continued run ends exactly as an uninterrupted one with the same seed would on CPU.
    Under torchrun, trains with DistributedDataParallel; only rank 0 writes."""
    from fbench.plugins.registry import get_registry
    from fbench.runs.environment import describe_environment
    from fbench.train.distributed import device_for, from_environment

    cfg = r.config
    if cfg.precision not in ("fp32", "bf16"):
        raise FbenchError(f"unknown precision {cfg.precision!r}.", "use fp32 or bf16.")
    ctx = from_environment(resolve_device(cfg.device).type)
    device = resolve_device(device_for(cfg.device, ctx))
    if device.type == "cuda" and device.index is not None:  # "cuda" alone: the current GPU
        torch.cuda.set_device(device)
    console = console or Console(stderr=True)
    if not ctx.is_main:
        console = Console(stderr=True, quiet=True)
        progress = False
    seed_everything(cfg.seed, deterministic=device.type == "cpu")

    model = r.build_model().to(device)
    transform = r.build_transform().to(device)
    loaders = build_loaders(r, device, ctx)
    loader_gen = loaders.train.generator or torch.Generator()
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay)
    trained: torch.nn.Module = model
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    resume_state = _resume_state(Path(resume)) if resume is not None else None
    run_dir = _open_run_dir(r, Path(resume) if resume else None, ctx)
    main = ctx.is_main
    resolved = r.stored_config(**parameter_counts(r, model), device=str(device),
                               world_size=ctx.world_size)
    started = time.time()
    resolved["warnings"] = r.warnings()
    for line in resolved["warnings"]:
        console.print(f"[bold yellow]warning:[/] {line}")
    if main:
        if resume_state is None:
            from fbench.data.fingerprint import record_dataset

            # every image's hash, so `fbench reproduce` can tell whether the data changed
            resolved["dataset_fingerprint"] = record_dataset(run_dir, r.manifest,
                                                             r.image_hashes())
            store.write_json(run_dir / "config.json", resolved)
            store.write_json(run_dir / "environment.json", describe_environment(device))
        store.write_json(run_dir / "status.json", {
            "state": "running", "started": started,
            **({"resumed_after_epoch": int(resume_state["epoch"])} if resume_state else {})})
    hook = get_registry().hook
    if main:
        hook.on_run_start(run_dir=str(run_dir), config=resolved)

    epochs: list[dict[str, Any]] = []
    best_score = -math.inf
    first_epoch = 1
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        transform.load_state_dict(resume_state["transform"])
        optimizer.load_state_dict(resume_state["optimizer"])
        restore_rng_state(resume_state["rng"], loader_gen)
        epochs = list(resume_state["epochs"])
        best_score = float(resume_state["best_val_macro_f1"])
        first_epoch = int(resume_state["epoch"]) + 1
        console.print(f"resuming {run_dir.name} after epoch {first_epoch - 1}")
    try:
        with make_progress(console, progress) as bar:
            if r.transform.fit_on_train and resume_state is None:
                transform.fit(prepare_batch(b, torch.nn.Identity(), device).images
                              for b in loaders.train)
            epoch_task = bar.add_task("epochs", total=cfg.epochs, completed=first_epoch - 1,
                                      info="")
            for epoch in range(first_epoch, cfg.epochs + 1):
                sampler = loaders.train.sampler
                if hasattr(sampler, "set_epoch"):
                    sampler.set_epoch(epoch)
                row = train_one_epoch(model, trained, transform, optimizer, loaders.train,
                                       device, cfg.precision, bar, epoch, run_dir, ctx)
                val = predict(model, transform, loaders.val, device, cfg.precision, bar,
                              "validate", ctx)
                val_labels = loaders.val.dataset.labels[val["index"]]
                val_metrics = compute_metrics(val_labels, val["probs"])
                row.update({f"val_{k}": v for k, v in val_metrics.items()
                            if k in ("macro_f1", "accuracy", "auc_ovr", "binary_auc")})
                improved = val_metrics["macro_f1"] > best_score
                if improved:
                    best_score = val_metrics["macro_f1"]
                row["selected"] = improved
                epochs.append(row)
                if main:
                    ckpts = run_dir / "checkpoints"
                    if improved:
                        _save_checkpoint(ckpts / "best.pt", model, transform, optimizer, epoch,
                                         best_score)
                    _save_checkpoint(ckpts / "last.pt", model, transform, optimizer, epoch,
                                     best_score, {"rng": rng_state(loader_gen),
                                                  "epochs": epochs})
                    store.write_json(run_dir / "epochs.json", epochs)
                    hook.on_epoch_end(run_dir=str(run_dir), epoch=epoch, metrics=row)
                barrier(ctx)
                bar.update(epoch_task, advance=1,
                           info=f"loss {row['train_loss']:.3f}  val F1 {row['val_macro_f1']:.3f}")
                console.print(
                    f"epoch {epoch}/{cfg.epochs}  train loss {row['train_loss']:.4f}  "
                    f"val macro-F1 {row['val_macro_f1']:.4f}{'  (best)' if improved else ''}  "
                    f"{row['train_images_per_s']:.0f} img/s"
                )

            # the last epoch's model too, so tables can show it beside the selected one
            # (selection on validation is fbench's choice; the last epoch is what a fixed
            # schedule without selection reports)
            last_epoch = int(epochs[-1]["epoch"]) if epochs else 0
            best = load_checkpoint(run_dir / "checkpoints" / "best.pt", device)
            last_preds = None
            if int(best["epoch"]) != last_epoch:
                last_preds = _evaluate(r, model, transform, loaders, device, bar, ctx)
            model.load_state_dict(best["model"])
            transform.load_state_dict(best["transform"])
            preds = _evaluate(r, model, transform, loaders, device, bar, ctx)
            last_preds = preds if last_preds is None else last_preds
        if not main:
            barrier(ctx)
            return run_dir
        store.write_parquet(run_dir / store.PREDICTIONS, preds)
        store.write_parquet(run_dir / store.LAST_PREDICTIONS, last_preds)
        from fbench.metrics import metrics_from_predictions

        threshold = val_threshold(preds)
        last_threshold = val_threshold(last_preds)
        summary = {
            "run_id": run_dir.name,
            "detector": cfg.detector, "dataset": cfg.dataset, "transform": cfg.transform,
            "seed": cfg.seed, "selected_epoch": int(best["epoch"]), "epochs": cfg.epochs,
            "selection": "val macro-F1",
            "n_parameters": resolved["n_parameters"],
            "train_images_per_s": float(np.mean([e["train_images_per_s"] for e in epochs])),
            "seconds": time.time() - started,
            "eval": metrics_from_predictions(preds, "eval", threshold),
            "val": metrics_from_predictions(preds, "val", threshold),
            "last": {"epoch": last_epoch,
                     "eval": metrics_from_predictions(last_preds, "eval", last_threshold),
                     "val": metrics_from_predictions(last_preds, "val", last_threshold)},
        }
        if resume_state is not None:
            summary["resumed_after_epoch"] = int(resume_state["epoch"])
        store.write_json(run_dir / "summary.json", summary)
        store.write_json(run_dir / "status.json", {"state": "completed", "started": started,
                                                    "finished": time.time()})
        store.append_index(cfg.out, {
            "run_id": run_dir.name, "path": str(run_dir), "detector": cfg.detector,
            "dataset": cfg.dataset, "transform": cfg.transform, "seed": cfg.seed,
            "macro_f1": summary["eval"]["macro_f1"], "finished": time.time(),
        })
        if summary["eval"]["collapsed"]:
            warnings.warn(f"run {run_dir.name} collapsed to the majority class", stacklevel=2)
            console.print("[bold yellow]warning:[/] the selected model predicts (almost) only "
                          "one class: eval macro-F1 is at the majority-class level "
                          f"({summary['eval']['majority_macro_f1']:.3f}). Try a lower --lr.")
        hook.on_run_end(run_dir=str(run_dir), summary=summary)
        barrier(ctx)
        return run_dir
    except BaseException as exc:
        state = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        if main:
            store.write_json(run_dir / "status.json", {
                "state": state, "started": started, "finished": time.time(),
                "error": str(exc) if isinstance(exc, FbenchError)
                else "".join(traceback.format_exception_only(type(exc), exc)).strip(),
            })
        if isinstance(exc, FbenchError):
            exc.problem = f"{exc.problem} (run {run_dir} marked {state})"
            exc.message = f"{exc.message} (run directory {run_dir} marked {state})"
        raise


def _evaluate(r: ResolvedRun, model: Detector, transform: torch.nn.Module, loaders: Loaders,
              device: torch.device, bar: Progress, ctx: DistContext) -> pd.DataFrame:
    """The model's predictions on the val and eval splits, one frame (rank 0's is whole)."""
    precision = r.config.precision
    val = predict(model, transform, loaders.val, device, precision, bar, "validate", ctx)
    ev = predict(model, transform, loaders.eval, device, precision, bar, "evaluate", ctx)
    return pd.concat([_predictions_frame(r, loaders.val, val, "val"),
                      _predictions_frame(r, loaders.eval, ev, "eval")], ignore_index=True)


def train_one_epoch(model: Detector, trained: torch.nn.Module, transform: torch.nn.Module,
                     optimizer: torch.optim.Optimizer, loader: DataLoader, device: torch.device,
                     precision: str, bar: Progress, epoch: int, run_dir: Path,
                     ctx: DistContext | None = None) -> dict[str, Any]:
    """One pass over the training data. ``trained`` is the module called forward (the model,
    or its DistributedDataParallel wrapper, which synchronises gradients); the loss is the
    detector's own."""
    world = ctx.world_size if ctx else 1
    model.train()
    task = bar.add_task(f"epoch {epoch}", total=len(loader), info="")
    totals: dict[str, float] = {}
    n_seen, t0 = 0, time.perf_counter()
    for step, batch in enumerate(loader):
        batch = prepare_batch(batch, transform, device)
        with autocast(device, precision):
            out = trained(batch)
            losses = model.loss(out, batch)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise FbenchError(
                f"the loss became {loss.item()} at epoch {epoch}, step {step + 1} "
                f"({', '.join(f'{k}={v.item():.4g}' for k, v in losses.items())}).",
                f"lower --lr; the last good checkpoint is kept in {run_dir / 'checkpoints'}.",
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
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
    return row
