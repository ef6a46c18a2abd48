"""The train/eval loop: train on ``train``, select the checkpoint on ``val``, evaluate it (and
the last epoch's model) on ``eval``, and hand everything a report needs to the run's
:class:`~fbench.runs.writer.RunWriter`.

The engine says what happened; the writer says where it goes. The pieces that are not the loop
live beside it: :mod:`fbench.train.runtime` (device, seeding, numeric modes, optimizer, RNG
streams), :mod:`fbench.train.loaders`, :mod:`fbench.train.evaluation` (the inference loop).
"""

from __future__ import annotations

import math
import time
import traceback
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rich.console import Console

from fbench.errors import FbenchError
from fbench.markdown import count, rate
from fbench.metrics import compute_metrics, metrics_from_predictions, val_threshold
from fbench.progress import make_progress
from fbench.runs.writer import RunInterrupted, RunWriter, read_checkpoint
from fbench.train.convergence import (
    StopRule,
    collapse_causes,
    make_scheduler,
    recompute_batchnorm,
    stop_record,
)
from fbench.train.distributed import barrier, broadcast
from fbench.train.epoch import NonFiniteLoss, train_one_epoch  # noqa: F401 (bench imports it here)

# Names other modules (bench, robustness, predict, tests) import from the engine.
from fbench.train.evaluation import evaluate_splits, predict, predictions_frame  # noqa: F401
from fbench.train.loaders import Loaders, build_loaders, precise_bn_batches  # noqa: F401
from fbench.train.resolve import ResolvedRun
from fbench.train.runtime import (  # noqa: F401
    autocast,
    compile_for_training,
    make_optimizer,
    memory_format_of,
    prepare_batch,
    resolve_device,
    restore_rng_state,
    rng_state,
    seed_everything,
    tf32_mode,
    training_modes,
    wants_channels_last,
)

if TYPE_CHECKING:  # pragma: no cover
    from rich.progress import Progress

load_checkpoint = read_checkpoint  # the engine's older name for it

VAL_METRICS = ("macro_f1", "accuracy", "auc_ovr", "binary_auc")


def train_and_evaluate(r: ResolvedRun, console: Console | None = None,
                       progress: bool = True, resume: str | Path | None = None) -> Path:
    """Run one resolved configuration end to end; returns the run directory.

    ``resume``: a run directory whose ``last.pt`` (written after each epoch with the model,
    optimizer, every RNG stream, the epoch log and the best score so far) to continue from;
    the continued run ends exactly as an uninterrupted one with the same seed would on CPU.
    Under torchrun, trains with DistributedDataParallel; only rank 0 writes. TF32 is allowed
    on CUDA only when the run asks for it; cuDNN autotunes on CUDA (``training_modes``)."""
    with training_modes(r.config.tf32, resolve_device(r.config.device), r.config.compile):
        return _Training(r, console, progress, resume).run()


class _Training:
    """One run in progress: what it trains, where it stands, and what it has written."""

    def __init__(self, r: ResolvedRun, console: Console | None, progress: bool,
                 resume: str | Path | None) -> None:
        from fbench.train.distributed import device_for, from_environment

        cfg = self.cfg = r.config
        self.r = r
        if cfg.precision not in ("fp32", "bf16"):
            raise FbenchError(f"unknown precision {cfg.precision!r}.", "use fp32 or bf16.")
        self.ctx = from_environment(resolve_device(cfg.device).type)
        self.device = resolve_device(device_for(cfg.device, self.ctx))
        if self.device.type == "cuda" and self.device.index is not None:
            torch.cuda.set_device(self.device)  # "cuda" alone: the current GPU
        main = self.ctx.is_main
        self.console = (console or Console(stderr=True)) if main else Console(stderr=True,
                                                                              quiet=True)
        self.progress = progress and main
        seed_everything(cfg.seed, deterministic=self.device.type == "cpu")
        self.channels_last = wants_channels_last(cfg.channels_last, self.device,
                                                 r.detector.channels_last)
        model = r.build_model().to(self.device)
        self.model = model.to(memory_format=torch.channels_last) if self.channels_last else model
        self.transform = r.build_transform().to(self.device)
        self.loaders = build_loaders(r, self.device, self.ctx, progress=self.progress)
        self.loader_gen = self.loaders.train.generator or torch.Generator()
        self.optimizer = make_optimizer(cfg.optimizer, self.model.parameters(), cfg.lr,
                                        cfg.weight_decay, self.device)  # fused on CUDA
        self.steps_per_epoch = max(1, len(self.loaders.train))
        self.scheduler = make_scheduler(self.optimizer, cfg.schedule, cfg.epochs,
                                        self.steps_per_epoch, cfg.warmup_epochs)
        self.rule = StopRule(cfg.patience, cfg.min_delta, cfg.collapse_epochs)
        self.stopped: dict[str, Any] = {}
        self.trained: torch.nn.Module = self.model
        if self.ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.trained = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                else None)
        if cfg.compile:  # training steps only: evaluation calls the model itself
            self.trained = compile_for_training(self.trained)
        self.resume_state = (RunWriter(Path(resume)).resume_state() if resume is not None
                             else None)
        self.writer = RunWriter(self._open_dir(Path(resume) if resume else None), main)
        self.epochs: list[dict[str, Any]] = []
        self.best_score = -math.inf
        self.first_epoch = 1
        self.started = time.time()

    @property
    def run_dir(self) -> Path:
        return self.writer.path

    def _open_dir(self, resume: Path | None) -> Path:
        """A new run directory, or the one being resumed; rank 0 decides, the others follow."""
        if not self.ctx.is_main:
            return Path(broadcast(None, self.ctx))
        run_dir = resume if resume is not None else RunWriter.create(
            self.cfg.out, self.cfg.detector, self.cfg.dataset, self.cfg.name).path
        return Path(broadcast(str(run_dir), self.ctx))

    def run(self) -> Path:
        from fbench.plugins.registry import get_registry

        self.hook = get_registry().hook
        lock = self.writer.lock()  # one writing process per run: refuses a second one
        try:
            self.stored = self._start()
            with make_progress(self.console, self.progress) as bar:
                self._fit_transform()
                self._train(bar)
                preds, last_preds, best_epoch = self._final_evaluation(bar)
            if self.ctx.is_main:
                self._finish(preds, last_preds, best_epoch)
            barrier(self.ctx)
            return self.run_dir
        except BaseException as exc:
            self._fail(exc)
            raise
        finally:
            lock.release()

    def _start(self) -> dict[str, Any]:
        """Record the resolved settings and the environment, mark the run running, restore a
        resumed run's state."""
        from fbench.runs.environment import describe_environment

        r, w = self.r, self.writer
        stored = r.stored_config(**r.parameter_counts(self.model), device=str(self.device),
                                 world_size=self.ctx.world_size,
                                 cache_used=self.loaders.cache_used,
                                 workers=self.loaders.workers,  # what "auto" resolved to
                                 channels_last_used=self.channels_last)
        stored["warnings"] = r.warnings()
        for line in stored["warnings"]:
            self.console.print(f"[bold yellow]warning:[/] {line}")
        resumed = self.resume_state
        # status first, the big files after: a failure while writing them is then recorded
        w.running(self.started, int(resumed["epoch"]) if resumed else None)
        if resumed is None:
            # every image's hash, so `fbench reproduce` can tell whether the data changed
            stored["dataset_fingerprint"] = w.dataset(r.manifest, r.image_hashes())
            w.config(stored)
            w.environment(describe_environment(self.device))
        if self.ctx.is_main:
            self.hook.on_run_start(run_dir=str(self.run_dir), config=stored)
        if resumed is not None:
            self._restore(resumed)
        return stored

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.transform.load_state_dict(state["transform"])
        self.optimizer.load_state_dict(state["optimizer"])
        if "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
        restore_rng_state(state["rng"], self.loader_gen)
        self.epochs = list(state["epochs"])
        self.best_score = float(state["best_val_macro_f1"])
        self.first_epoch = int(state["epoch"]) + 1
        self.console.print(f"resuming {self.run_dir.name} after epoch {self.first_epoch - 1}")

    def _fit_transform(self) -> None:
        """A transform fitted on train (DCT statistics) sees the training images once."""
        if self.r.transform.fit_on_train and self.resume_state is None:
            self.transform.fit(prepare_batch(b, torch.nn.Identity(), self.device).images
                               for b in self.loaders.train)

    def _train(self, bar: Progress) -> None:
        """Epochs up to the ceiling, unless the stopping rule ends them earlier (a resumed run
        decides from its epoch log, as the uninterrupted run did)."""
        cfg = self.cfg
        task = bar.add_task("epochs", total=cfg.epochs, completed=self.first_epoch - 1, info="")
        reason = self.rule.decide(self.epochs) if self.epochs else None
        epoch = self.first_epoch - 1
        while reason is None and epoch < cfg.epochs:
            epoch += 1
            try:
                row = self._epoch(epoch, bar)
            except NonFiniteLoss as exc:
                if not self.epochs:
                    raise  # nothing to fall back on: the run fails
                self._rewind_to_last_epoch()
                self.stopped = stop_record("nan", epoch - 1, self.rule, self.epochs, exc.problem)
                self.console.print(f"[bold yellow]stopped:[/] {exc.problem} Keeping the "
                                   f"epochs before it ({exc.fix})")
                return
            bar.update(task, advance=1,
                       info=f"loss {row['train_loss']:.3f}  val F1 {row['val_macro_f1']:.3f}")
            self.console.print(
                f"epoch {epoch}/{cfg.epochs}  train loss {row['train_loss']:.4f}  "
                f"val macro-F1 {row['val_macro_f1']:.4f}"
                f"{'  (best)' if row['selected'] else ''}  "
                f"{rate(row['train_images_per_s'])} img/s")
            reason = self.rule.decide(self.epochs)
        last = int(self.epochs[-1]["epoch"]) if self.epochs else 0
        self.stopped = stop_record(reason or "ceiling", last, self.rule, self.epochs)
        if reason == "plateau":
            self.console.print(f"stopped after epoch {last}: no validation gain (> "
                               f"{cfg.min_delta:g}) in {count(cfg.patience, 'epoch')}: "
                               "converged")
        elif reason == "collapse":
            self.console.print(f"[bold yellow]stopped[/] after epoch {last}: validation "
                               "predictions on one class for "
                               f"{count(cfg.collapse_epochs, 'epoch')}")
        elif not self.stopped["converged"]:
            why = self.rule.why_not_converged(self.epochs)
            self.console.print(f"[bold yellow]note:[/] reached the ceiling of "
                               f"{count(cfg.epochs, 'epoch')} {why} (not converged): raise "
                               "--epochs")

    def _rewind_to_last_epoch(self) -> None:
        """Back to the end of the last finished epoch (what ``last.pt`` holds)."""
        state = read_checkpoint(self.writer.checkpoint_path("last"), self.device)
        self.model.load_state_dict(state["model"])
        self.transform.load_state_dict(state["transform"])

    def _precise_bn(self) -> int:
        """BatchNorm statistics recomputed over the run's fixed precise-BN batches."""
        def forward(batch: Any) -> None:
            prepared = prepare_batch(batch, self.transform, self.device,
                                     memory_format_of(self.model))
            with autocast(self.device, self.cfg.precision):
                self.model(prepared)

        batches = precise_bn_batches(self.loaders.train, self.cfg.precise_bn, self.cfg.seed)
        return recompute_batchnorm(self.model, batches, forward)

    def _epoch(self, epoch: int, bar: Progress) -> dict[str, Any]:
        """Train one epoch, score it on val, keep it if it is the best so far, save last.pt."""
        cfg, loaders = self.cfg, self.loaders
        if hasattr(loaders.train.sampler, "set_epoch"):
            loaders.train.sampler.set_epoch(epoch)
        row = train_one_epoch(self.model, self.trained, self.transform, self.optimizer,
                              loaders.train, self.device, cfg.precision, bar, epoch,
                              self.run_dir, self.ctx, self.scheduler, cfg.clip_grad,
                              first_step_apart=cfg.compile and epoch == self.first_epoch)
        if cfg.precise_bn:
            # before validation: stale running statistics can make a model that separates
            # the classes look collapsed in eval mode; the checkpoints keep these statistics
            row["precise_bn_batches"] = self._precise_bn()
        val = predict(self.model, self.transform, loaders.val, self.device, cfg.precision, bar,
                      "validate", self.ctx)
        val_metrics = compute_metrics(loaders.val.dataset.labels[val["index"]], val["probs"])
        row.update({f"val_{k}": v for k, v in val_metrics.items() if k in VAL_METRICS})
        row["val_collapsed"] = bool(val_metrics["collapsed"])
        improved = val_metrics["macro_f1"] > self.best_score
        if improved:
            self.best_score = val_metrics["macro_f1"]
        row["selected"] = improved
        self.epochs.append(row)
        if improved:
            self.writer.checkpoint("best", self._state(epoch))
        self.writer.checkpoint("last", self._state(
            epoch, optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
            rng=rng_state(self.loader_gen), epochs=self.epochs))
        self.writer.epochs(self.epochs)
        if self.ctx.is_main:
            self.hook.on_epoch_end(run_dir=str(self.run_dir), epoch=epoch, metrics=row)
        barrier(self.ctx)
        return row

    def _state(self, epoch: int, **extra: Any) -> dict[str, Any]:
        """``best.pt``: what scoring needs (model, transform); ``last.pt`` adds, in
        ``extra``, what resuming needs (optimizer, scheduler, RNG streams, the epoch log)."""
        return {"model": self.model.state_dict(), "transform": self.transform.state_dict(),
                "epoch": epoch, "best_val_macro_f1": self.best_score, **extra}

    def _final_evaluation(self, bar: Progress) -> tuple[Any, Any, int]:
        """The selected checkpoint's predictions and the last epoch's model's (the same
        frame when the last epoch was selected): selection on validation is fbench's choice;
        the last epoch is what a fixed schedule without selection reports."""
        last_epoch = int(self.epochs[-1]["epoch"]) if self.epochs else 0
        best = read_checkpoint(self.writer.checkpoint_path("best"), self.device)
        last_preds = None
        if int(best["epoch"]) != last_epoch:
            last_preds = self._evaluate(bar)
        self.model.load_state_dict(best["model"])
        self.transform.load_state_dict(best["transform"])
        preds = self._evaluate(bar)
        return preds, preds if last_preds is None else last_preds, int(best["epoch"])

    def _evaluate(self, bar: Progress) -> Any:
        return evaluate_splits(self.r, self.model, self.transform, self.loaders, self.device,
                               bar, self.ctx)

    def _finish(self, preds: Any, last_preds: Any, best_epoch: int) -> None:
        self.writer.predictions(preds, last_preds)
        summary = self._summary(preds, last_preds, best_epoch)
        self.writer.summary(summary)
        # plugins may add to the summary (the landmark coverage); the digests that make later
        # edits visible are taken after them, then the run is marked completed
        self.hook.on_run_end(run_dir=str(self.run_dir), summary=summary)
        self.writer.completed(self.started)
        if not self.cfg.keep_last:  # only a resume needs it, and a completed run has none
            self.writer.remove_checkpoint("last")
        if summary["eval"]["collapsed"]:
            # one warning: the CLI prints it in fbench's voice (warnings_in_voice), the Python
            # API hands it to the caller's warning filters
            causes = collapse_causes(len(self.epochs), self.steps_per_epoch, self.cfg.lr,
                                     self.r.detector.defaults.get("lr"))
            warnings.warn(f"run {self.run_dir.name} collapsed to the majority class: the "
                          "selected model predicts (almost) only one class, eval macro-F1 at "
                          f"the majority-class level ({summary['eval']['majority_macro_f1']:.3f})."
                          f" {causes}", stacklevel=4)

    def _summary(self, preds: Any, last_preds: Any, best_epoch: int) -> dict[str, Any]:
        cfg = self.cfg

        def scored(frame: Any) -> dict[str, Any]:
            t = val_threshold(frame)
            return {"eval": metrics_from_predictions(frame, "eval", t),
                    "val": metrics_from_predictions(frame, "val", t)}

        summary = {
            "run_id": self.run_dir.name,
            "detector": cfg.detector, "dataset": cfg.dataset, "transform": cfg.transform,
            "seed": cfg.seed, "selected_epoch": best_epoch, "epochs": cfg.epochs,
            "epochs_trained": len(self.epochs), "stopped": self.stopped,
            "selection": "val macro-F1",
            "n_parameters": self.stored["n_parameters"],
            "train_images_per_s": float(np.mean([e["train_images_per_s"]
                                                 for e in self.epochs])),
            "seconds": time.time() - self.started,
            **scored(preds),
            "last": {"epoch": int(self.epochs[-1]["epoch"]), **scored(last_preds)},
        }
        if cfg.compile:  # once per process (a resumed run compiles again): not throughput
            summary["compile_warmup_seconds"] = sum(e.get("compile_warmup_seconds", 0.0)
                                                    for e in self.epochs)
        if self.resume_state is not None:
            summary["resumed_after_epoch"] = int(self.resume_state["epoch"])
        return summary

    def _fail(self, exc: BaseException) -> None:
        """Mark the run failed (or interrupted) in its own status; other runs are untouched.
        Ctrl-C or SIGTERM is raised on as a :class:`RunInterrupted` that says how to resume."""
        if isinstance(exc, KeyboardInterrupt):
            resumed = int(self.resume_state["epoch"]) if self.resume_state else 0
            stop = RunInterrupted(self.run_dir, self.writer.saved.get("last", resumed),
                                  self.cfg.epochs, exc)
            stop.not_recorded = self.writer.stopped("interrupted", self.started, stop.reason)
            raise stop from exc
        error = (str(exc) if isinstance(exc, FbenchError)
                 else "".join(traceback.format_exception_only(type(exc), exc)).strip())
        said = (self.writer.stopped("failed", self.started, error)
                or f"run {self.run_dir} marked failed")
        if isinstance(exc, FbenchError):
            exc.problem = f"{exc.problem.rstrip('. ')} ({said})."
            exc.message = f"{exc.problem} Fix: {exc.fix}" if exc.fix else exc.problem
        else:
            exc.add_note(said)
