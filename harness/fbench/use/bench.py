"""``fbench bench``: where the time of a training step goes, measured side by side in one run.

Four numbers for one detector, batch size and input size:

- data pipeline alone: images/s of the training DataLoader (decode, resize, collate), no
  model; and per core, decoding or reading a decoded-image cache
  (:func:`fbench.data.cache.loading_rates`);
- bare loop: a minimal hand-written training step on tensors already in memory (transform,
  forward, the detector's loss, backward, optimizer step): what the model itself costs;
- fbench step: the engine's own training loop (``train_one_epoch``: batch preparation, the
  detector's named losses, the non-finite check, loss bookkeeping, progress bar) on the same
  in-memory batches. ``fbench step / bare loop`` is the harness overhead (goal <= 1.05);
- fbench epoch: the engine's loop fed by the real DataLoader, to show whether data loading is
  the bottleneck.

Bare loop and fbench step alternate in rounds so that a busy machine slows both alike; the
median round is reported. Frequency modules (transforms, and model parts that declare
``bench_group``) are timed with hooks to give their share of a step.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from fbench.plugins.batch import Batch
from fbench.train.config import RunConfig


@dataclass
class BenchResult:
    detector: str
    device: str
    batch_size: int
    input_size: int
    precision: str
    channels_last: bool
    compiled: bool
    threads: int
    data_images_per_s: float
    bare_images_per_s: float
    step_images_per_s: float
    epoch_images_per_s: float
    overhead_ratio: float
    """fbench step time / bare loop time."""
    data_to_model_ratio: float
    """data pipeline images/s / bare-loop images/s (> 1: data loading keeps up)."""
    peak_memory_mb: float
    gflop_per_step: float | None
    achieved_tflops: float | None
    params_m: float
    shares: dict[str, float] = field(default_factory=dict)
    """fraction of a bare step spent in named parts (e.g. frequency transforms)."""
    overhead_low: float | None = None
    overhead_high: float | None = None
    """The lowest and highest overhead of one round (fbench step / bare loop of that round):
    how far apart the repeats were, where the median is ``overhead_ratio``."""
    decode_images_per_core_s: float | None = None
    cache_images_per_core_s: float | None = None
    """Images per CPU-second of the data pipeline, decoding or reading the cache."""

    def as_row(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "shares"} | {
            f"share_{k}": v for k, v in self.shares.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    # ru_maxrss is in KiB on Linux: the process's peak resident memory
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


class PartTimer:
    """Forward time of modules that declare ``bench_group`` (and of the transform), with
    device synchronisation around each, summed per group while enabled."""

    def __init__(self, modules: dict[str, list[torch.nn.Module]], device: torch.device) -> None:
        self.device = device
        self.totals: dict[str, float] = {g: 0.0 for g in modules}
        self.enabled = False
        self._handles = []
        for group, mods in modules.items():
            for m in mods:
                self._handles.append(m.register_forward_pre_hook(self._start))
                self._handles.append(m.register_forward_hook(self._make_stop(group)))
        self._t0: dict[int, float] = {}

    def _start(self, module: torch.nn.Module, args: Any) -> None:
        if self.enabled:
            _sync(self.device)
            self._t0[id(module)] = time.perf_counter()

    def _make_stop(self, group: str) -> Callable[..., None]:
        def stop(module: torch.nn.Module, args: Any, out: Any) -> None:
            if self.enabled and id(module) in self._t0:
                _sync(self.device)
                self.totals[group] += time.perf_counter() - self._t0.pop(id(module))
        return stop

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def _flops(model: torch.nn.Module, transform: torch.nn.Module, batch: Batch) -> float | None:
    """FLOPs of one forward+backward, counted by torch's FlopCounterMode (matmuls and
    convolutions; elementwise work is not counted, so achieved TFLOP/s is a lower bound)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            b = Batch(images=transform(batch.rgb), labels=batch.labels, masks=batch.masks,
                      has_mask=batch.has_mask, landmarks=batch.landmarks, rgb=batch.rgb)
            out = model(b)
            sum(model.loss(out, b).values()).backward()
        model.zero_grad(set_to_none=True)
        return float(counter.get_total_flops())
    except Exception:  # a counting failure must not lose the timing results
        return None


def run_bench(config: RunConfig, steps: int = 10, warmup: int = 3, rounds: int = 3,
              channels_last: bool | None = None, compile_model: bool = False,
              data_batches: int = 10, console: Any = None,
              loading_rates: bool = True) -> BenchResult:
    """Measure one configuration (see the module docstring). ``config`` names the detector,
    dataset (for the data pipeline and batch contents), batch size, input size, device and
    precision (``auto``: bf16 on CUDA, fp32 on CPU). ``channels_last``: None as a run's
    ``auto`` (on CUDA), True as ``on``, False as ``off``; never for a detector whose spec
    says it breaks under it. Measured as a tuned CUDA run would allow (autotuned
    convolutions, TF32, fused Adam), the process's flags restored afterwards; a model
    torch.compile cannot compile is one line (:func:`~fbench.train.runtime.training_modes`).
    ``loading_rates=False`` leaves out the per-core decode and cache rates (seconds of their
    own; they depend on the images, not the model: a caller measuring many detectors on the
    same images needs them once)."""
    from fbench.train.runtime import resolve_device, training_modes

    device = resolve_device(config.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)  # peak memory from here on
    with training_modes(device.type == "cuda", device, compile_model):
        return _measure(config, device, steps, warmup, rounds, channels_last, compile_model,
                        data_batches, console, loading_rates)


def _measure(config: RunConfig, device: torch.device, steps: int, warmup: int, rounds: int,
             channels_last: bool | None, compile_model: bool, data_batches: int,
             console: Any, with_loading_rates: bool) -> BenchResult:
    from fbench.data.cache import loading_rates
    from fbench.plugins.detector import count_parameters
    from fbench.progress import make_progress
    from fbench.train.engine import build_loaders, seed_everything, train_one_epoch
    from fbench.train.resolve import resolve
    from fbench.train.runtime import (
        autocast,
        compile_for_training,
        make_optimizer,
        prepare_batch,
        wants_channels_last,
    )

    precision = config.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    r = resolve(config.replace(precision=precision, audit=False))
    cfg = r.config
    setting = {None: "auto", True: "on", False: "off"}[channels_last]
    channels_last = wants_channels_last(setting, device, r.detector.channels_last)
    seed_everything(cfg.seed, deterministic=False)

    model = r.build_model().to(device)
    transform = r.build_transform().to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    loaders = build_loaders(r, device)
    if r.transform.fit_on_train:
        transform.fit(prepare_batch(b, torch.nn.Identity(), device).images
                      for _, b in zip(range(4), loaders.train, strict=False))
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay,
                               device)  # fused on CUDA, as a run's

    # 1. the data pipeline alone
    data_rate, raw_batches = _data_pipeline(loaders.train, steps, data_batches, device)
    # per core: decoding, and reading from a decoded-image cache, the first training images
    decode_rate, cache_rate = loading_rates(
        r.manifest[r.manifest["split"] == "train"].head(cfg.batch_size * data_batches),
        r.input_size, cfg.resample, r.dataset.has_masks, cfg.batch_size) \
        if with_loading_rates else (None, None)

    forward: torch.nn.Module = compile_for_training(model) if compile_model else model

    # 2. the bare loop: what any training script must do at least
    def bare() -> None:
        model.train()
        for b in raw_batches:
            x = b.images.float().div(255.0)
            batch = Batch(images=transform(x).contiguous(memory_format=memory_format),
                          labels=b.labels, masks=b.masks, has_mask=b.has_mask,
                          landmarks=b.landmarks, rgb=x, index=b.index)
            with autocast(device, precision):
                out = forward(batch)
                loss = sum(model.loss(out, batch).values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    # 3. fbench's own training loop, on the same batches
    bar_console = console or _quiet_console()

    def fbench_step() -> None:
        with make_progress(bar_console, False) as bar:  # lays batches out as the model is
            train_one_epoch(model, forward, transform, optimizer, raw_batches, device,
                            precision, bar, 1, _scratch_dir())

    for _ in range(warmup):
        bare()
        fbench_step()
    bare_times, step_times = [], []
    for _ in range(rounds):
        bare_times.append(_timed(bare, device))
        step_times.append(_timed(fbench_step, device))
    bare_s = statistics.median(bare_times) / steps
    step_s = statistics.median(step_times) / steps
    # paired by round: a busy moment slows both of a round alike, so the ratio's spread shows
    # how much the machine moved the measurement
    per_round = [s / b for s, b in zip(step_times, bare_times, strict=True)]

    # 4. the engine fed by the DataLoader (as a run trains)
    def loader_epoch() -> None:
        with make_progress(bar_console, False) as bar:
            train_one_epoch(model, forward, transform, optimizer,
                            _take(loaders.train, data_batches), device, precision, bar, 1,
                            _scratch_dir())

    epoch_s = _timed(loader_epoch, device)
    epoch_images = sum(len(b) for b in _take(loaders.train, data_batches))

    shares = _shares(_bench_groups(r.transform.name, transform, model), bare, device)

    flops = _flops(model, transform, _prepared(raw_batches[0], transform, memory_format))
    bs = raw_batches[0].images.shape[0]
    return BenchResult(
        detector=cfg.detector, device=str(device), batch_size=bs, input_size=r.input_size,
        precision=precision, channels_last=channels_last, compiled=compile_model,
        threads=torch.get_num_threads() if device.type == "cpu" else 0,
        data_images_per_s=data_rate, bare_images_per_s=bs / bare_s,
        step_images_per_s=bs / step_s, epoch_images_per_s=epoch_images / epoch_s,
        overhead_ratio=step_s / bare_s, data_to_model_ratio=data_rate / (bs / bare_s),
        peak_memory_mb=_peak_memory_mb(device),
        gflop_per_step=None if flops is None else flops / 1e9,
        achieved_tflops=None if flops is None else flops / bare_s / 1e12,
        params_m=count_parameters(model) / 1e6, shares=shares,
        overhead_low=min(per_round), overhead_high=max(per_round),
        decode_images_per_core_s=decode_rate, cache_images_per_core_s=cache_rate,
    )


def machine_load() -> tuple[float, int] | None:
    """The 1-minute load average and the number of cores, or None where the system does not
    say: a load above the cores means other processes took turns with the measured one."""
    try:
        return os.getloadavg()[0], os.cpu_count() or 1
    except (AttributeError, OSError):  # not on Windows, nor where /proc/loadavg is missing
        return None


def _data_pipeline(loader: Any, steps: int, data_batches: int, device: torch.device
                   ) -> tuple[float, list[Batch]]:
    """Images/s of the loader alone over ``data_batches`` batches, and ``steps`` of its
    batches on ``device`` (repeated when the dataset has fewer) for the timed loops."""
    n_img, t0 = 0, time.perf_counter()
    raw_batches: list[Batch] = []
    for i, b in enumerate(loader):
        n_img += len(b)
        if len(raw_batches) < max(steps, 1):
            raw_batches.append(b)
        if i + 1 >= data_batches:
            break
    data_rate = n_img / (time.perf_counter() - t0)
    while len(raw_batches) < steps:  # small datasets: reuse batches
        raw_batches.append(raw_batches[len(raw_batches) % max(1, len(raw_batches))])
    return data_rate, [b.to(device) for b in raw_batches[:steps]]


def _bench_groups(transform_name: str, transform: torch.nn.Module, model: torch.nn.Module
                  ) -> dict[str, list[torch.nn.Module]]:
    """The frequency work to time: the transform (unless raw) and the model parts that
    declare ``bench_group``."""
    groups: dict[str, list[torch.nn.Module]] = {}
    if transform_name != "raw":
        groups[f"transform:{transform_name}"] = [transform]
    for m in model.modules():
        label = getattr(m, "bench_group", None)
        if label:
            groups.setdefault(label, []).append(m)
    return groups


def _shares(groups: dict[str, list[torch.nn.Module]], bare: Callable[[], Any],
            device: torch.device) -> dict[str, float]:
    """The fraction of one bare-loop pass each group's forward takes."""
    if not groups:
        return {}
    timer = PartTimer(groups, device)
    timer.enabled = True
    total = _timed(bare, device)
    timer.enabled = False
    timer.remove()
    return {g: t / total for g, t in timer.totals.items()}


def _prepared(b: Batch, transform: torch.nn.Module, memory_format: torch.memory_format) -> Batch:
    x = b.images.float().div(255.0)
    return Batch(images=transform(x).contiguous(memory_format=memory_format), labels=b.labels,
                 masks=b.masks, has_mask=b.has_mask, landmarks=b.landmarks, rgb=x)


class _take:
    """The first ``n`` batches of a loader, with a length (the engine's loop shows progress)."""

    def __init__(self, loader: Any, n: int) -> None:
        self.loader, self.n = loader, min(n, len(loader))

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for i, b in enumerate(self.loader):
            if i >= self.n:
                return
            yield b


def _quiet_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, quiet=True)


def _scratch_dir() -> Any:
    from pathlib import Path

    return Path(os.devnull)
