"""The Python API, timm-style: list, create, run, load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from fbench.plugins.registry import get_registry
from fbench.runs.store import Run as StoredRun
from fbench.train.config import RunConfig, check_options, load_config_file


def list_detectors(pattern: str | None = None) -> list[str]:
    """Registered detector names, optionally filtered by a shell pattern (``"f3net-*"``)."""
    return get_registry().names("detector", pattern)


def list_datasets(pattern: str | None = None) -> list[str]:
    return get_registry().names("dataset", pattern)


def list_transforms(pattern: str | None = None) -> list[str]:
    return get_registry().names("transform", pattern)


def create_detector(name: str, num_classes: int = 3, **options: Any) -> Any:
    """Build a detector's ``torch.nn.Module``; ``options`` go to its factory, checked by name
    and type first (``drop_rate="abc"`` is an :class:`fbench.FbenchError`; ``"0.5"`` is read as
    0.5). What the factory returns is returned as is: an :class:`fbench.Detector` (callable on
    a :class:`fbench.Batch` or a plain image tensor, returning a ``DetectorOutput``) or a plain
    classifier (tensor in, logits out)."""
    spec = get_registry().get("detector", name)
    options = check_options("detector", name, spec.factory, options, reserved=("num_classes",))
    module = spec.factory(num_classes=num_classes, **options)
    if spec.needs_landmarks:
        from fbench.plugins.detector import Detector

        if isinstance(module, Detector) and not module.batch_inputs:
            # the spec knows what the module may not declare: a plain image tensor is not
            # enough, and calling it on one should say so before its forward fails
            module.batch_inputs = ("landmarks",)
    return module


def create_transform(name: str, **options: Any) -> Any:
    """Build a transform's ``torch.nn.Module``; ``options`` checked as
    :func:`create_detector`'s."""
    spec = get_registry().get("transform", name)
    options = check_options("transform", name, spec.factory, options)
    return spec.factory(**options)


def load_dataset(name: str, root: str | None = None, **options: Any) -> pd.DataFrame:
    """A dataset's validated manifest."""
    from fbench.train.resolve import load_manifest

    return load_manifest(get_registry().get("dataset", name), root, options)


def interactive() -> bool:
    """Whether a person is watching: a terminal on stderr, or a Jupyter/IPython kernel."""
    import sys

    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stderr
        return False


def run(config: RunConfig | str | Path | None = None, *, progress: bool | None = None,
        **settings: Any) -> Any:
    """Train and evaluate one configuration; returns the stored :class:`fbench.Run`.

    ``config`` may be a :class:`RunConfig` or a TOML file; keyword ``settings`` (the CLI's
    options: ``detector``, ``dataset``, ``epochs``, ``options={...}``, ...) override it.
    ``progress``: bars and a line per epoch on stderr; by default when a person is watching
    (a terminal or a notebook, :func:`interactive`), silent in scripts and tests.
    """
    if progress is None:
        progress = interactive()
    from fbench.train.engine import train_and_evaluate
    from fbench.train.resolve import resolve

    if config is None:
        base = RunConfig()
    elif isinstance(config, RunConfig):
        base = config
    else:
        base = RunConfig.from_dict(load_config_file(config), source=str(config))
    from rich.console import Console

    cfg = RunConfig.from_dict({**base.to_dict(), **settings})
    console = Console(stderr=True, quiet=not progress)
    return load_run(train_and_evaluate(resolve(cfg), console=console, progress=progress))


def sweep(configs: Any, executor: Any = "local", *, reuse: bool = True, progress: bool = False,
          **executor_options: Any) -> list[Run]:
    """Train many configurations (``RunConfig`` objects or dicts of settings) and return their
    stored runs, in the order given. Each configuration with a completed run in its ``out``
    store is reused (``reuse=False``: all train); the others train on ``executor``: ``local``
    (``jobs=N`` side by side), ``ray`` (``ray_address``, ``cpus_per_run``, ``gpus_per_run``,
    ``num_cpus`` for a Ray started here) or ``slurm`` (``slurm_partition``, ``slurm_time``,
    ``slurm_gpus``, ``cpus_per_run``, ``gpus_per_run``, ``slurm_folder``), or an
    :class:`fbench.use.executors.Executor`. ``out`` must be a path every worker sees. When a
    run fails the others still complete; then :class:`fbench.use.executors.SweepFailed` (an
    :class:`fbench.FbenchError`) lists the failures and holds the completed runs (``.runs``);
    calling ``sweep`` again trains only what is missing.

    >>> runs = fbench.sweep([fbench.RunConfig(detector="resnet18", seed=s) for s in range(3)],
    ...                     executor="ray", cpus_per_run=4)  # doctest: +SKIP
    """
    from rich.console import Console

    from fbench.report.ablate import FinishedRun, sweep_runs
    from fbench.runs.store import prepare_out_dir
    from fbench.use.executors import SweepFailed, make_executor

    chosen = make_executor(executor, **executor_options)
    items = []
    for raw in configs:
        cfg = raw if isinstance(raw, RunConfig) else RunConfig.from_dict(dict(raw))
        label = cfg.name or cfg.detector
        items.append((label, cfg, f"{label} (seed {cfg.seed})"))
    for out in dict.fromkeys(cfg.out for _, cfg, _ in items):
        prepare_out_dir(out)
    # quiet: no console, so warnings stay Python warnings the caller can filter
    done = sweep_runs(items, reuse, Console(stderr=True) if progress else None, progress,
                      chosen)
    runs = [load_run(d.run_dir) for d in done if isinstance(d, FinishedRun)]
    failed = [(f"{d.label} (seed {d.seed}, transform {d.transform})", d.error) for d in done
              if not isinstance(d, FinishedRun)]
    if failed:
        raise SweepFailed(failed, runs)
    return runs


class Run(StoredRun):
    """A stored run as the Python API hands it out: the record (``config``, ``summary``,
    ``epochs``, ``predictions``, ``metrics()``) plus ``predict`` on new images. The store's own
    record knows nothing of the uses made of it; this is where they meet."""

    def run_config(self) -> RunConfig:
        """The validated :class:`RunConfig` this run was resolved to (``.config`` is the stored
        dict, metadata included); ``fbench.run(run.run_config())`` trains it again."""
        return RunConfig.from_stored(self.config, source=str(self.path / "config.json"))

    def load_model(self) -> tuple[Any, Any]:
        """``(detector, transform)`` rebuilt as the run built them, with the selected
        checkpoint's weights, in eval mode on the CPU."""
        from fbench.use.model import load_trained

        model, transform, _ = load_trained(self)
        return model, transform

    def predict(self, inputs: Any, **options: Any) -> pd.DataFrame:
        """Score image files, folders or arrays with this run's selected checkpoint; see
        :func:`fbench.use.predict.predict` for the options and the columns."""
        from fbench.use.predict import predict  # torch loads only when a run is used

        return predict(self, inputs, **options)


def load_run(path: str | Path) -> Run:
    """A stored run: ``.config``, ``.summary``, ``.epochs`` and ``.predictions`` DataFrames."""
    from fbench.runs.store import load_run as _load

    return _as_api_run(_load(path))


def _as_api_run(stored: StoredRun) -> Run:
    import dataclasses

    return Run(**{f.name: getattr(stored, f.name) for f in dataclasses.fields(stored)})


def iter_runs(runs_dir: str | Path = "runs", state: str | None = "completed") -> Any:
    """Every stored run under ``runs_dir`` whose status is ``state`` (``None``: any), oldest
    first; damaged runs are skipped with a warning naming them."""
    from fbench.runs.store import iter_runs as _iter

    return (_as_api_run(r) for r in _iter(runs_dir, state))
