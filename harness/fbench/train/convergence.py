"""What makes a run converge and say that it did: the learning-rate schedule (with linear
warm-up), precise BatchNorm statistics before each validation, and the stopping rule
(plateau, ceiling, non-finite loss, collapse to one class).

The engine calls these; nothing here knows about run directories. Every decision is a pure
function of the run's settings and its epoch log, so a resumed run decides exactly as an
uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from fbench.markdown import count

SCHEDULES = ("cosine", "step", "constant")
STEP_MILESTONES = (0.5, 0.75)
"""``step``: the rate falls tenfold at these fractions of the epoch ceiling."""
STOP_REASONS = ("plateau", "ceiling", "nan", "collapse")
CONVERGENCE_WINDOW = 3
"""Without a patience, a run that improved in its last this-many epochs is not converged."""


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """The learning rate at optimizer ``step`` (0-based) as a fraction of the base rate: a
    linear warm-up from ``1/(warmup_steps+1)`` to 1 over ``warmup_steps``, then ``schedule``
    over the remaining steps up to ``total_steps`` (the ceiling): ``constant`` stays at 1,
    ``cosine`` falls to 0 at the ceiling, ``step`` is 1, 0.1, 0.01 (see
    :data:`STEP_MILESTONES`)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}")
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "step":
        return 0.1 ** sum(progress >= m for m in STEP_MILESTONES)
    return 1.0


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, epochs: int,
                   steps_per_epoch: int, warmup_epochs: float) -> LambdaLR:
    """A per-step scheduler for ``optimizer`` (its state dict goes into ``last.pt``, so a resumed
    run continues the same curve)."""
    total = epochs * steps_per_epoch
    warmup = min(total, round(warmup_epochs * steps_per_epoch))
    return LambdaLR(
        optimizer, lambda step: lr_factor(step, total, warmup, schedule))


_BN = (torch.nn.modules.batchnorm._BatchNorm,)


@torch.no_grad()
def recompute_batchnorm(model: torch.nn.Module, batches: Iterable[Any],
                        forward: Callable[[Any], Any]) -> int:
    """Precise BatchNorm: replace every BatchNorm layer's running statistics by the cumulative
    average over ``batches`` seen by the current weights (``forward(batch)`` runs the model).
    Only the BatchNorm layers are in training mode meanwhile (dropout stays off, so no random
    number is drawn); the model is left in eval mode. Returns the number of batches used (0 when
    the model has no BatchNorm, or no batch came: the statistics are then left as they were)."""
    layers = [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]
    if not layers:
        return 0
    momenta = [m.momentum for m in layers]
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in layers]
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
        m.train()
    n = 0
    try:
        for batch in batches:
            forward(batch)
            n += 1
    finally:
        for m, momentum, state in zip(layers, momenta, saved, strict=True):
            m.momentum = momentum
            if n == 0:  # no batch came: keep the statistics there were, not reset ones
                m.load_state_dict(state)
        model.eval()
    return n


@dataclass(frozen=True)
class StopRule:
    """When training stops before its ceiling. ``patience``: epochs without a validation
    macro-F1 gain above ``min_delta`` (0: never on a plateau); ``collapse_epochs``: epochs in a
    row whose validation predictions sit on one class (0: never)."""

    patience: int = 0
    min_delta: float = 0.0
    collapse_epochs: int = 0

    def epochs_since_gain(self, scores: Sequence[float]) -> int:
        """Epochs since the last one that beat every earlier score by more than min_delta."""
        best, since = -math.inf, 0
        for s in scores:
            if s > best + self.min_delta:
                best, since = s, 0
            else:
                since += 1
        return since

    def decide(self, epochs: Sequence[dict[str, Any]]) -> str | None:
        """``plateau`` or ``collapse`` when the epoch log says to stop now, else None."""
        scores = [float(e["val_macro_f1"]) for e in epochs]
        if self.patience and self.epochs_since_gain(scores) >= self.patience:
            return "plateau"
        k = self.collapse_epochs
        if k and len(epochs) >= k and all(e.get("val_collapsed") for e in epochs[-k:]):
            return "collapse"
        return None

    def converged(self, reason: str, epochs: Sequence[dict[str, Any]]) -> bool:
        """A plateau is convergence; reaching the ceiling is, if validation stopped improving
        in the last epochs (``patience`` of them, or :data:`CONVERGENCE_WINDOW` without one);
        a collapse or a non-finite loss is not."""
        if reason == "plateau":
            return True
        if reason != "ceiling":
            return False
        scores = [float(e["val_macro_f1"]) for e in epochs]
        return len(scores) > self.window and self.epochs_since_gain(scores) >= self.window

    @property
    def window(self) -> int:
        """Epochs without a gain that make a plateau."""
        return self.patience or CONVERGENCE_WINDOW

    def why_not_converged(self, epochs: Sequence[dict[str, Any]]) -> str:
        """Why a run that reached its ceiling is not converged, in a few words."""
        if len(epochs) <= self.window:
            return (f"too soon to see a plateau (it takes {count(self.window, 'epoch')} "
                    "without a gain)")
        return "still improving on validation"


def stop_record(reason: str, epoch: int, rule: StopRule, epochs: Sequence[dict[str, Any]],
                detail: str | None = None) -> dict[str, Any]:
    """What a run stores of why it stopped (``summary.json``'s ``stopped``)."""
    out: dict[str, Any] = {"reason": reason, "epoch": epoch,
                           "converged": rule.converged(reason, epochs)}
    if detail:
        out["detail"] = detail
    return out


def collapse_causes(epochs: int, steps_per_epoch: int, lr: float,
                    preferred_lr: float | None) -> str:
    """The likely causes of a run that collapsed to one class, from what it did: too few
    steps, or a learning rate above the detector's measured default (or, failing both, the
    rate itself)."""
    causes = []
    if epochs * steps_per_epoch < 200:
        causes.append(f"too little training ({count(epochs, 'epoch')} of "
                      f"{count(steps_per_epoch, 'step')}: "
                      "raise --epochs or use more images)")
    if preferred_lr is not None and lr > preferred_lr:
        causes.append(f"a learning rate above this detector's measured default "
                      f"(--lr {lr:g}; try {preferred_lr:g})")
    elif not causes:
        causes.append(f"the learning rate (--lr {lr:g}; try {lr / 3:.2g})")
    return "Likely: " + "; ".join(causes) + "."
