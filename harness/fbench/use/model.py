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
    from fbench.plugins.detector import as_detector
    from fbench.plugins.registry import get_registry
    from fbench.plugins.specs import factory_options
    from fbench.train.config import RunConfig
    from fbench.train.engine import load_checkpoint

    r = _as_run(run)
    cfg = r.config
    # Validates the stored settings (the keys RunConfig knows; the rest is run metadata).
    RunConfig.from_dict({k: v for k, v in cfg.items() if k in RunConfig.__dataclass_fields__},
                        source=str(r.path / "config.json"))
    ckpt_path = r.checkpoint("best")
    if not ckpt_path.is_file():
        raise FbenchError(f"run {r.path} has no checkpoints/best.pt.",
                          "Grad-CAM needs a run that finished at least one epoch.")
    reg = get_registry()
    spec = reg.get("detector", cfg["detector"])
    options = dict(cfg.get("options") or {})
    if "input_size" in factory_options(spec.factory) and "input_size" not in options:
        options["input_size"] = cfg["input_size"]
    model = as_detector(spec.factory(num_classes=3, **options))
    transform = reg.get("transform", cfg["transform"]).factory(
        **(cfg.get("transform_options") or {}))
    state = load_checkpoint(ckpt_path)
    model.load_state_dict(state["model"])
    transform.load_state_dict(state["transform"])
    return model.eval(), transform.eval(), r
