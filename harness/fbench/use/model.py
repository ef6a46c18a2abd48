"""A stored run's trained detector and transform, rebuilt from its config and loaded with its
selected checkpoint: what predict, robustness and Grad-CAM use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fbench.errors import FbenchError
from fbench.runs.store import Run, load_run


def _as_run(run: Run | str | Path) -> Run:
    return run if isinstance(run, Run) else load_run(run)


def load_trained(run: Run | str | Path) -> tuple[Any, Any, Run]:
    """Rebuild a run's detector and transform from its stored config and load the selected
    (best) checkpoint into both; returns ``(model, transform, run)`` in eval mode on CPU.

    The dataset is not loaded (``resolve`` would): a picture of a few images must not need
    the training data at hand."""
    from fbench.plugins.registry import get_registry
    from fbench.train.config import RunConfig
    from fbench.train.engine import load_checkpoint
    from fbench.train.resolve import build_detector

    r = _as_run(run)
    # the one reading of a stored config: the options as the run used them, validated
    config = RunConfig.from_stored(r.config, source=str(r.path / "config.json"))
    ckpt_path = r.checkpoint("best")
    if not ckpt_path.is_file():
        raise FbenchError(f"run {r.path} has no checkpoints/best.pt.",
                          "use a run that finished at least one epoch.")
    reg = get_registry()
    model = build_detector(reg.get("detector", config.detector), config.options,
                           int(r.config["input_size"]))
    transform = reg.get("transform", config.transform).factory(**config.transform_options)
    state = load_checkpoint(ckpt_path)
    model.load_state_dict(state["model"])
    transform.load_state_dict(state["transform"])
    return model.eval(), transform.eval(), r
