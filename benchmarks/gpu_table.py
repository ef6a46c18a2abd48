"""One device session, the whole picture (issue 19): every detector of the thesis's final table
trained at batch 32, 224 px, in several precisions and memory formats (fp32, bf16,
channels_last, torch.compile), fed from the decoded-image cache, with each detector's step time,
images/s, its ratio to the thesis's own code, and the projected wall time of the whole thesis
table (30 epochs of seg_2 per row); and a check that reading the cache leaves a run's
predictions exactly as decoding does.

    PYTHONPATH=harness:plugins python benchmarks/gpu_table.py --out gpu --budget-min 8
    python benchmarks/gpu_table.py --tiny --device cpu --out /tmp/tiny   # the test's size

Each figure comes from :func:`fbench.use.bench.run_bench` (data pipeline, bare step, fbench's
own step, fbench's step fed by the DataLoader) and from the engine's own inference loop
(:func:`fbench.train.evaluation.predict`) for the evaluation passes. ``table.json`` (every
figure) and ``table.md`` are rewritten after every measurement, so a crash late in a short
device session keeps the rows already measured.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import gc
import math
import os
import platform
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import fbench
from fbench.errors import FbenchError
from fbench.markdown import count, to_markdown
from fbench.plugins.registry import get_registry
from fbench.train.config import RunConfig

# The thesis's final table, in its order (THESIS.md): the rows this script projects.
THESIS_ROWS = ("resnet18", "f3net-xception", "f3net-fad", "f3net-lfs", "f3net-both",
               "f3net-mix", "graftnet", "f3net-mix-seg", "graftnet-seg")
THESIS_REFERENCE = "thesis, seg_2"  # the key of DetectorSpec.references holding that table

# The thesis's own code on one H100: train step, batch 32 at 224 px, the best of fp32 / bf16 /
# channels_last (issue 19). graftnet-seg was not measured there.
REFERENCE_MS: dict[str, float] = {
    "resnet18": 9.0, "f3net-xception": 13.8, "f3net-fad": 18.1, "f3net-lfs": 22.8,
    "f3net-both": 34.1, "f3net-mix": 65.2, "f3net-mix-seg": 73.4, "graftnet": 29.6,
}
REFERENCE_NOTES: dict[str, str] = {
    "f3net-mix": "reference without channels_last (the thesis's code breaks under it)",
    "graftnet": "reference launch-bound",
}
REFERENCE_GPU = "NVIDIA H100 (the thesis's own code)"

# seg_2 as built (THESIS.md: the published lists, recipe 4 with masks): train 40,579 images,
# from which fbench carves validation (val_fraction 0.1), eval 11,707; 30 epochs a row.
SEG2_TRAIN, SEG2_EVAL, VAL_FRACTION, EPOCHS = 40_579, 11_707, 0.1, 30
FINAL_PASSES = 2  # val + eval scored with the selected model, and again with the last epoch's
GOAL_MINUTES = 60.0  # the whole table, data loading included
GOAL_STEP_FRACTION = 0.5  # every detector's step at most half the reference's

TABLE_JSON, TABLE_MD = "table.json", "table.md"


@dataclass(frozen=True)
class Variant:
    """How one measurement trains: autocast precision, memory format, torch.compile."""

    precision: str
    channels_last: bool = False
    compile: bool = False

    @property
    def label(self) -> str:
        return "+".join([self.precision] + ["cl"] * self.channels_last
                        + ["compile"] * self.compile)


def parse_variant(text: str) -> Variant:
    """``fp32``, ``bf16``, ``bf16+cl`` (channels_last), ``bf16+compile``, ``bf16+cl+compile``."""
    parts = text.lower().replace("channels_last", "cl").split("+")
    extras = set(parts[1:])
    if parts[0] not in ("fp32", "bf16") or not extras <= {"cl", "compile"}:
        raise argparse.ArgumentTypeError(
            f"unknown variant {text!r}: write a precision (fp32 or bf16) followed by any of "
            "+cl (channels_last) and +compile, e.g. bf16+cl+compile")
    return Variant(parts[0], "cl" in extras, "compile" in extras)


@dataclass
class Settings:
    device: str
    detectors: list[str]
    batch_size: int
    input_size: int
    steps: int
    warmup: int
    rounds: int
    variants: list[Variant]
    workers: int
    images_per_class: int
    source_px: int
    data_batches: int
    eval_min_s: float
    budget_s: float | None
    check: dict[str, Any] | None
    """The predictions check's tiny run (detector, px, images per class, epochs, batch)."""
    detector_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    scratch: Path = Path(".")


# What a measurement costs at each size. Full: the issue's batch 32 at 224 px on synthetic
# 256-px PNGs (resized as real data is), enough train images for 10 loader batches.
FULL: dict[str, Any] = {
    "batch_size": 32, "input_size": 224, "steps": 10, "warmup": 2, "rounds": 3,
    "variants": ["fp32", "bf16", "bf16+cl"], "images_per_class": 200, "source_px": 256,
    "data_batches": 10, "eval_min_s": 1.0,
    "check": {"detector": "resnet18", "px": 64, "images_per_class": 64, "epochs": 2,
              "batch_size": 16},
    "detector_options": {},
}
# Tiny: what a 2-core CPU runs in seconds, for the test (two small detectors, 32 px, batch 2,
# one step). GraftNet's token grid must fit a 32-px image (its tests use 4).
TINY: dict[str, Any] = {
    "detectors": ["resnet18", "graftnet"], "batch_size": 2, "input_size": 32, "steps": 1,
    "warmup": 0, "rounds": 1, "variants": ["fp32", "fp32+cl"], "images_per_class": 8,
    "source_px": 32, "data_batches": 2, "eval_min_s": 0.0, "workers": 0,
    "check": {"detector": "resnet18", "px": 32, "images_per_class": 8, "epochs": 1,
              "batch_size": 2},
    "detector_options": {"graftnet": {"token_grid": 4}},
}


def _at_least(low: int) -> Any:
    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer of at least {low}, got {text!r}")
        return value
    return check


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="benchmarks/gpu_table.py",
        description="Every thesis detector's training step on one device, and the projected "
                    "wall time of the thesis's whole table.")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="cuda, cuda:N or cpu [default: cuda when one is visible]")
    ap.add_argument("--detectors", nargs="+", metavar="NAME",
                    help="detectors to measure [default: the thesis's table, 9 rows]")
    ap.add_argument("--batch-size", type=_at_least(1), help="[default: 32]")
    ap.add_argument("--input-size", type=_at_least(16), help="[default: 224]")
    ap.add_argument("--steps", type=_at_least(1), help="batches per timed loop [default: 10]")
    ap.add_argument("--warmup", type=_at_least(0), help="untimed rounds first [default: 2]")
    ap.add_argument("--rounds", type=_at_least(1),
                    help="timed rounds, the median counts [default: 3]")
    ap.add_argument("--variants", nargs="+", type=parse_variant, metavar="VARIANT",
                    help="fp32, bf16, fp32+cl, bf16+cl, bf16+compile, bf16+cl+compile "
                         "[default: fp32 bf16 bf16+cl]; compiled variants run after every "
                         "detector's other variants")
    ap.add_argument("--workers", type=_at_least(0),
                    help="DataLoader workers [default: min(8, cores/2) on CUDA, 0 on CPU]")
    ap.add_argument("--images-per-class", type=_at_least(8),
                    help="synthetic images per class for the loader [default: 200]")
    ap.add_argument("--budget-min", type=float,
                    help="start no new measurement after this many minutes (the rest is "
                         "noted as not measured) [default: no limit]")
    ap.add_argument("--skip-check", action="store_true",
                    help="skip the cache-versus-decoding predictions check")
    ap.add_argument("--out", type=Path, default=Path("gpu-table"),
                    help="folder for table.json and table.md [default: gpu-table]")
    ap.add_argument("--tiny", action="store_true",
                    help="a CPU-sized configuration (the test's): two small detectors, 32 px, "
                         "batch 2, one step, a tiny synthetic dataset")
    return ap.parse_args(argv)


def make_settings(args: argparse.Namespace) -> Settings:
    """The command line over the size's defaults (``--tiny`` or full)."""
    base = TINY if args.tiny else FULL
    cores = os.cpu_count() or 1

    def pick(name: str, default: Any = None) -> Any:
        given = getattr(args, name, None)
        return given if given is not None else base.get(name, default)

    workers = pick("workers", min(8, cores // 2) if args.device.startswith("cuda") else 0)
    variants = args.variants or [parse_variant(v) for v in base["variants"]]
    return Settings(
        device=args.device, detectors=list(pick("detectors", thesis_detectors())),
        batch_size=pick("batch_size"), input_size=pick("input_size"), steps=pick("steps"),
        warmup=pick("warmup"), rounds=pick("rounds"), variants=list(dict.fromkeys(variants)),
        workers=workers, images_per_class=pick("images_per_class"),
        # the synthetic generator draws even sizes; never smaller than the input (a resize down,
        # as real data is)
        source_px=max(base["source_px"], pick("input_size") + pick("input_size") % 2),
        data_batches=base["data_batches"], eval_min_s=base["eval_min_s"],
        budget_s=None if args.budget_min is None else 60.0 * args.budget_min,
        check=None if args.skip_check else dict(base["check"]),
        detector_options=base["detector_options"])


def thesis_detectors() -> list[str]:
    """The thesis table's rows in its order, plus any other registered detector that carries
    that table as its reference (a row added later is not silently left out)."""

    specs = get_registry().specs("detector")
    extra = [name for name, (spec, _) in sorted(specs.items())
             if THESIS_REFERENCE in (spec.references or {}) and name not in THESIS_ROWS]
    return [*THESIS_ROWS, *extra]


def ensure_builtin_plugins() -> None:
    """Run from a checkout with ``PYTHONPATH=harness:plugins`` (no ``pip install``), the
    built-in plugins have no entry points: register them from pyproject.toml's table, as the
    installed package would."""
    import importlib
    import tomllib
    from importlib import metadata


    if any(getattr(ep.dist, "name", None) == "fbench"
           for ep in metadata.entry_points(group="fbench")):
        return
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    table = tomllib.loads(pyproject.read_text())["project"]["entry-points"]["fbench"]
    registry = get_registry()
    for name, module in table.items():
        try:
            registry.register_plugin(importlib.import_module(module), name=name)
        except ImportError as exc:  # a data plugin may need what this machine lacks
            print(f"skipping plugin {name} ({module}): {exc}", file=sys.stderr)


# -- the environment ----------------------------------------------------------------------


def describe_environment(s: Settings, argv: list[str]) -> dict[str, Any]:
    device = torch.device(s.device)
    cuda = device.type == "cuda"
    return {
        "command": "python benchmarks/gpu_table.py " + shlex.join(argv),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "torch_threads": torch.get_num_threads(),
        "fbench": fbench.__version__,
        "python": platform.python_version(),
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


@contextlib.contextmanager
def scratch_space() -> Iterator[Path]:
    """A scratch folder for runs and, unless ``FBENCH_CACHE`` names one, the synthetic data and
    its decoded-image cache: nothing lands in the user's ~/.cache. Restored afterwards."""
    before = os.environ.get("FBENCH_CACHE")
    with tempfile.TemporaryDirectory(prefix="fbench-gpu-table-") as tmp:
        if before is None:
            os.environ["FBENCH_CACHE"] = str(Path(tmp) / "cache")
        try:
            yield Path(tmp)
        finally:
            if before is None:
                os.environ.pop("FBENCH_CACHE", None)


def _release(device: torch.device) -> None:
    """Free what a measurement left, so the next one starts from the same memory."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _one_line(exc: BaseException, limit: int = 240) -> str:
    text = exc.format_message() if isinstance(exc, FbenchError) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- the predictions check ----------------------------------------------------------------


@contextlib.contextmanager
def deterministic_kernels() -> Iterator[list[str]]:
    """Deterministic algorithms for the check (warn-only: an op without a deterministic kernel
    is named, not fatal, and the check reports the difference it makes); the process's flags
    are restored afterwards so the timings use the fast kernels. Yields the list that collects
    the names of the non-deterministic ops that warned."""
    cudnn = torch.backends.cudnn
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(), cudnn.deterministic,
              cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    cudnn.deterministic, cudnn.benchmark = True, False
    warned: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield warned
        warned += sorted({str(w.message).splitlines()[0] for w in caught
                          if "deterministic" in str(w.message)})
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        cudnn.deterministic, cudnn.benchmark = before[2], before[3]


def predictions_check(s: Settings, scratch: Path) -> dict[str, Any]:
    """Train one tiny configuration twice on the device, fp32 and the same seed, reading the
    decoded-image cache (``cache="build"``) and decoding (``cache="off"``), and compare the
    stored probabilities exactly."""
    c = s.check or {}
    base = RunConfig(
        detector=c["detector"], dataset="synthetic", device=s.device, precision="fp32",
        seed=0, epochs=c["epochs"], batch_size=c["batch_size"], input_size=c["px"],
        workers=0, out=str(scratch / "check-runs"),
        dataset_options={"n_per_class": c["images_per_class"], "image_size": c["px"]})
    t0 = time.perf_counter()
    with deterministic_kernels() as warned:
        runs = {setting: fbench.run(base.replace(cache=setting, name=f"cache-{setting}"),
                                    progress=False) for setting in ("build", "off")}
    result = compare_predictions(runs["build"].predictions_of(), runs["off"].predictions_of())
    used = {k: bool(r.config.get("cache_used")) for k, r in runs.items()}
    result.update(
        config={k: c[k] for k in ("detector", "px", "images_per_class", "epochs", "batch_size")},
        cache_used=used, nondeterministic_ops=warned, seconds=time.perf_counter() - t0)
    # the check means something only if one run read the cache and the other decoded
    result["passed"] = result["identical"] and used == {"build": True, "off": False}
    return result


def compare_predictions(a: Any, b: Any) -> dict[str, Any]:
    """Row for row (by split and manifest id): the largest difference of any class
    probability, and whether all are bit-identical."""
    import numpy as np

    from fbench.metrics import PROB_COLUMNS

    key = ["split", "id"]
    a = a.sort_values(key).reset_index(drop=True)
    b = b.sort_values(key).reset_index(drop=True)
    same_rows = len(a) == len(b) and a[key].equals(b[key])
    cols = list(PROB_COLUMNS)
    diff = (float(np.abs(a[cols].to_numpy() - b[cols].to_numpy()).max()) if same_rows
            and len(a) else (0.0 if same_rows else math.inf))
    return {"rows": len(a), "same_rows": bool(same_rows), "max_abs_diff": diff,
            "identical": bool(same_rows and diff == 0.0)}


# -- the measurements ---------------------------------------------------------------------


def bench_config(s: Settings, detector: str, variant: Variant) -> RunConfig:
    """One measurement's run configuration: synthetic images read from the decoded-image cache
    (built on first use in the scratch cache), the loader with ``s.workers`` workers."""
    return RunConfig(
        detector=detector, dataset="synthetic", device=s.device, precision=variant.precision,
        batch_size=s.batch_size, input_size=s.input_size, seed=0, workers=s.workers,
        cache="build", out=str(s.scratch / "bench-runs"),
        dataset_options={"n_per_class": s.images_per_class, "image_size": s.source_px},
        options=dict(s.detector_options.get(detector, {})))


def measure_variant(s: Settings, detector: str, variant: Variant,
                    loading_rates: bool = True) -> dict[str, Any]:
    """One ``run_bench`` of a detector in one variant, as a flat record. Every measurement
    reads the same images, so the per-core decode and cache rates (seconds each, on the
    device's clock) are measured by the first only (``loading_rates``) and copied by the
    table to the others."""
    from fbench.use.bench import run_bench

    t0 = time.perf_counter()
    r = run_bench(bench_config(s, detector, variant), steps=s.steps, warmup=s.warmup,
                  rounds=s.rounds, channels_last=variant.channels_last,
                  compile_model=variant.compile, data_batches=s.data_batches,
                  loading_rates=loading_rates)
    return {
        "step_ms": 1000.0 * r.batch_size / r.step_images_per_s,
        "bare_ms": 1000.0 * r.batch_size / r.bare_images_per_s,
        "images_per_s": r.step_images_per_s,
        "bare_images_per_s": r.bare_images_per_s,
        "loader_images_per_s": r.epoch_images_per_s,
        "data_images_per_s": r.data_images_per_s,
        "decode_images_per_core_s": r.decode_images_per_core_s,
        "cache_images_per_core_s": r.cache_images_per_core_s,
        "overhead_ratio": r.overhead_ratio,
        "peak_memory_mb": r.peak_memory_mb,
        "gflop_per_step": r.gflop_per_step,
        "params_m": r.params_m,
        "seconds": time.perf_counter() - t0,
    }


def measure_eval(s: Settings, detector: str, variant: Variant) -> float:
    """Images/s of the engine's own inference loop (``predict``: transform, forward, softmax,
    per-image Dice for mask models) over the eval split, read from the cache by the same
    loader: what each validation and final evaluation pass costs. Eager (an evaluation pass is
    not compiled), in the variant's precision and memory format."""
    from fbench.train.engine import (
        build_loaders,
        predict,
        prepare_batch,
        resolve_device,
        seed_everything,
    )
    from fbench.train.resolve import resolve

    r = resolve(bench_config(s, detector, variant).replace(audit=False))
    device = resolve_device(s.device)
    seed_everything(0, deterministic=False)
    fmt = torch.channels_last if variant.channels_last else torch.contiguous_format
    model = r.build_model().to(device).to(memory_format=fmt)
    transform = r.build_transform().to(device)
    loaders = build_loaders(r, device, progress=False)
    if r.transform.fit_on_train:
        transform.fit(prepare_batch(b, torch.nn.Identity(), device).images
                      for _, b in zip(range(4), loaders.train, strict=False))
    with torch.no_grad(), tuned_cuda(device):
        predict(model, transform, loaders.eval, device, variant.precision)  # warm-up
        images, seconds = 0, 0.0
        while images == 0 or seconds < s.eval_min_s:
            t0 = time.perf_counter()
            images += len(predict(model, transform, loaders.eval, device,
                                  variant.precision)["index"])
            seconds += time.perf_counter() - t0  # predict copies to the CPU: synchronised
    return images / seconds


def tuned_cuda(device: torch.device) -> contextlib.AbstractContextManager:
    """The flags ``run_bench`` measures the training step under on CUDA (TF32, autotuned
    convolutions), for the evaluation passes too: the engine's own, restored afterwards."""
    from fbench.train.runtime import training_modes

    return training_modes(tf32=device.type == "cuda", device=device, compiled=False)


# -- the projection -----------------------------------------------------------------------


def projection_terms() -> dict[str, Any]:
    """The constants of the projected wall time of one thesis row, as stored in the JSON."""
    val = round(SEG2_TRAIN * VAL_FRACTION)
    return {"epochs": EPOCHS, "train_images": SEG2_TRAIN - val, "val_images": val,
            "eval_images": SEG2_EVAL, "final_passes": FINAL_PASSES,
            "goal_minutes": GOAL_MINUTES}


def projected_minutes(train_images_per_s: float, eval_images_per_s: float) -> float:
    """Minutes of one thesis row: every epoch trains on seg_2's train images less the carved
    validation and scores validation; the end scores val + eval with the selected checkpoint
    and with the last epoch's (worst case: they differ)."""
    t = projection_terms()
    train_s = t["epochs"] * t["train_images"] / train_images_per_s
    eval_images = (t["epochs"] * t["val_images"]
                   + t["final_passes"] * (t["val_images"] + t["eval_images"]))
    return (train_s + eval_images / eval_images_per_s) / 60.0


def formula_text() -> str:
    t = projection_terms()
    return (f"row minutes = ({t['epochs']} × {t['train_images']:,} / train img/s + "
            f"({t['epochs']} × {t['val_images']:,} + {t['final_passes']} × "
            f"({t['val_images']:,} + {t['eval_images']:,})) / eval img/s) / 60. seg_2: "
            f"{SEG2_TRAIN:,} train images ({VAL_FRACTION:g} carved as validation) and "
            f"{SEG2_EVAL:,} eval images; {t['epochs']} epochs. Train img/s: fbench's training "
            "loop fed by the DataLoader reading the decoded-image cache (data loading "
            "included), in the detector's fastest variant; eval img/s: fbench's inference "
            "loop on the eval split, same loader. Not counted: model build, cache build, "
            "checkpoint writes.")


# -- the report -----------------------------------------------------------------------------


@dataclass
class Report:
    """Everything measured so far; written whole after every measurement."""

    out: Path
    environment: dict[str, Any]
    settings: dict[str, Any]
    detectors: list[str]
    measurements: list[dict[str, Any]] = field(default_factory=list)
    evals: dict[str, float] = field(default_factory=dict)
    """eval images/s by ``detector/precision[+cl]``."""
    check: dict[str, Any] | None = None

    def rows(self) -> list[dict[str, Any]]:
        return [detector_row(d, [m for m in self.measurements if m["detector"] == d],
                             self.evals) for d in self.detectors]

    def as_dict(self) -> dict[str, Any]:
        rows = self.rows()
        return {"environment": self.environment, "settings": self.settings,
                "projection": {**projection_terms(), "formula": formula_text()},
                "reference": {"gpu": REFERENCE_GPU, "step_ms": REFERENCE_MS,
                              "notes": REFERENCE_NOTES},
                "predictions_check": self.check, "rows": rows, "total": total_row(rows),
                "measurements": self.measurements}

    def write(self) -> None:
        from fbench.files import atomic_path, write_json

        data = self.as_dict()
        write_json(self.out / TABLE_JSON, _finite(data))
        with atomic_path(self.out / TABLE_MD) as tmp:
            tmp.write_text(markdown(data))


def _finite(obj: Any) -> Any:
    """JSON has no inf or nan: such a figure (a failed comparison) is stored as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def eval_key(detector: str, variant: Variant) -> str:
    return f"{detector}/{variant.precision}{'+cl' if variant.channels_last else ''}"


def detector_row(detector: str, measured: list[dict[str, Any]],
                 evals: dict[str, float]) -> dict[str, Any]:
    """One detector's line: its fastest variant (by fbench's step), against the reference,
    and its projected thesis row."""
    ref = REFERENCE_MS.get(detector)
    row: dict[str, Any] = {
        "detector": detector, "reference_ms": ref, "reference_note": REFERENCE_NOTES.get(detector),
        "notes": [f"{m['variant']}: {m['note']}" for m in measured if m.get("note")]}
    ok = [m for m in measured if m.get("step_ms")]
    if not ok:
        return row
    best = min(ok, key=lambda m: m["step_ms"])
    variant = parse_variant(best["variant"])
    eval_rate = evals.get(eval_key(detector, variant))
    row.update(best_variant=best["variant"], step_ms=best["step_ms"],
               images_per_s=best["images_per_s"],
               train_images_per_s=best["loader_images_per_s"],
               eval_images_per_s=eval_rate, data_images_per_s=best["data_images_per_s"])
    if ref is not None:
        row["speedup_vs_reference"] = ref / best["step_ms"]
        row["goal_met"] = best["step_ms"] <= GOAL_STEP_FRACTION * ref
    if eval_rate:
        row["projected_minutes"] = projected_minutes(best["loader_images_per_s"], eval_rate)
    return row


def total_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    projected = [r for r in rows if "projected_minutes" in r]
    minutes = sum(r["projected_minutes"] for r in projected)
    complete = len(projected) == len(rows)
    # the 60-minute goal is the thesis table's: judged only when every one of its rows is here
    thesis = set(THESIS_ROWS) <= {r["detector"] for r in rows}
    return {"rows": len(rows), "rows_projected": len(projected), "projected_minutes": minutes,
            "complete": complete, "thesis_table": thesis, "goal_minutes": GOAL_MINUTES,
            "goal_met": thesis and complete and minutes <= GOAL_MINUTES,
            "step_goal_met": all(r.get("goal_met", True) for r in rows)
            and all("step_ms" in r for r in rows)}


# -- markdown -------------------------------------------------------------------------------


def _n(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def _rate(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if value >= 10 else f"{value:.2g}"


def markdown(data: dict[str, Any]) -> str:
    env, st, total = data["environment"], data["settings"], data["total"]
    device = env["gpu"] or f"{env['cpu']} CPU ({env['cpu_count']} cores)"
    parts = [
        f"<!-- generated by benchmarks/gpu_table.py: {env['command']} -->\n",
        f"## {device}: the thesis table's training steps\n",
        f"{device}; torch {env['torch']}"
        + (f" (CUDA {env['cuda']}, cuDNN {env['cudnn']})" if env["cuda"] else "")
        + f"; fbench {env['fbench']}; {env['started']}.\n",
        f"Command: `{env['command']}`\n",
        f"Batch {st['batch_size']}, {st['input_size']} px; each step time the median of "
        f"{count(st['rounds'], 'round')} of {count(st['steps'], 'step')} after "
        f"{count(st['warmup'], 'warm-up round')} (`fbench.use.bench.run_bench`); synthetic "
        f"images ({st['images_per_class']} per class, {st['source_px']}-px PNGs) read from the "
        f"decoded-image cache by a DataLoader with {count(st['workers'], 'worker')}. Step: "
        "fbench's own training loop on batches in memory; variants: fp32 or bf16 autocast, "
        "+cl channels_last, +compile torch.compile. "
        f"Reference: {REFERENCE_GPU}, batch 32 at 224 px, best of fp32 / bf16 / "
        "channels_last.\n",
        summary_table(data["rows"]),
        total_line(total),
        f"Projection: {formula_text()}\n",
        check_line(data["predictions_check"]),
        "Every variant measured:\n",
        variant_table(data["measurements"]),
        "The decode rate is for these small PNGs: seg_2's FFHQ images are 1024-px PNGs and "
        "decode several times slower, while the cache's rate does not depend on the source.\n",
    ]
    if env["cuda"]:
        parts.append("fp32 here allows TF32 matmuls and convolutions (`run_bench` turns them "
                     "on, as a tuned CUDA run would); a run's own default is `tf32 = false`.\n")
    return "\n".join(parts)


def summary_table(rows: list[dict[str, Any]]) -> str:
    header = ["detector", "best variant", "step ms", "img/s", "thesis ms", "thesis / fbench",
              "≤ ½ thesis", "train img/s (+ loader)", "eval img/s (+ loader)",
              "projected row (min)", "notes"]
    body = []
    for r in rows:
        goal = {True: "yes", False: "no"}.get(r.get("goal_met"), "–")
        notes = "; ".join(filter(None, [r.get("reference_note"), *r["notes"]]))
        body.append([
            r["detector"], r.get("best_variant", "not measured"), _n(r.get("step_ms")),
            _rate(r.get("images_per_s")), _n(r.get("reference_ms")),
            _n(r.get("speedup_vs_reference"), 2), goal, _rate(r.get("train_images_per_s")),
            _rate(r.get("eval_images_per_s")), _n(r.get("projected_minutes")), notes])
    return to_markdown(header, body, [False, False] + [True] * 8 + [False])


def total_line(total: dict[str, Any]) -> str:
    partial = ("" if total["complete"] else
               f" (only {total['rows_projected']} of {total['rows']} rows projected: a lower "
               "bound)")
    if total["thesis_table"]:
        goal = f"goal ≤ {total['goal_minutes']:g} min: {'met' if total['goal_met'] else 'not met'}"
        what = f"Whole thesis table ({count(total['rows'], 'row')})"
    else:  # a subset (or the tiny test's detectors): a sum, not the thesis's table
        goal = f"the {total['goal_minutes']:g}-min goal is the whole thesis table's: not judged"
        what = f"These {count(total['rows'], 'row')}"
    steps = "yes" if total["step_goal_met"] else "no"
    return (f"**{what}: {_n(total['projected_minutes'])} min projected{partial}; {goal}. "
            f"Every step at most half the thesis's: {steps}.**\n")


def check_line(check: dict[str, Any] | None) -> str:
    if check is None:
        return "Predictions check: skipped (`--skip-check`).\n"
    if "error" in check:
        return f"Predictions check: **FAIL** (it did not run: {check['error']}).\n"
    c, used = check["config"], check["cache_used"]
    verdict = "PASS" if check["passed"] else "FAIL"
    ops = check["nondeterministic_ops"]
    return (f"Predictions check (cache read versus decoded, fp32, seed 0; {c['detector']}, "
            f"{c['px']} px, synthetic {c['images_per_class']} per class, "
            f"{count(c['epochs'], 'epoch')}, batch {c['batch_size']}): **{verdict}**; "
            f"{check['rows']} stored predictions, max |Δ probability| = "
            f"{check['max_abs_diff']}; the first run read the cache: {used['build']}, the "
            f"second decoded: {not used['off']}"
            + (f"; ops without a deterministic kernel: {'; '.join(ops)}" if ops else "")
            + ".\n")


def variant_table(measurements: list[dict[str, Any]]) -> str:
    header = ["detector", "variant", "step ms", "bare ms", "img/s", "+ loader img/s",
              "data img/s", "decode img/s/core", "cache img/s/core", "peak MB", "note"]
    body = [[m["detector"], m["variant"], _n(m.get("step_ms")), _n(m.get("bare_ms")),
             _rate(m.get("images_per_s")), _rate(m.get("loader_images_per_s")),
             _rate(m.get("data_images_per_s")), _rate(m.get("decode_images_per_core_s")),
             _rate(m.get("cache_images_per_core_s")), _n(m.get("peak_memory_mb"), 0),
             m.get("note", "")] for m in measurements]
    return to_markdown(header, body, [False, False] + [True] * 8 + [False])


# -- the run --------------------------------------------------------------------------------


class Table:
    """The measurement loop: cheap variants of every detector first, compiled ones after
    (minutes each), each measurement's record added and written as it comes."""

    def __init__(self, s: Settings, report: Report, t0: float) -> None:
        self.s, self.report, self.t0 = s, report, t0
        self.device = torch.device(s.device)
        self.deadline = None if s.budget_s is None else time.monotonic() + s.budget_s
        self.cl_broken: dict[str, str] = {}
        self.loading: dict[str, float] = {}  # the per-core rates, once measured

    def run(self) -> None:
        plain = [v for v in self.s.variants if not v.compile]
        compiled = [v for v in self.s.variants if v.compile]
        for variants in (plain, compiled):
            if not variants:
                continue
            for detector in self.s.detectors:
                for variant in variants:
                    self.add(detector, variant)
                self.ensure_eval(detector)

    def add(self, detector: str, variant: Variant) -> None:
        record: dict[str, Any] = {"detector": detector, "variant": variant.label}
        skip = self.skip_reason(detector, variant)
        if skip:
            record["note"] = skip
        else:
            self.progress(f"{detector} {variant.label}: measuring")
            try:
                record.update(measure_variant(self.s, detector, variant,
                                              loading_rates=not self.loading))
                rates = {k: record.get(k) for k in ("decode_images_per_core_s",
                                                    "cache_images_per_core_s")}
                if not self.loading and None not in rates.values():
                    self.loading = rates
                record.update(self.loading)
            except Exception as exc:  # one variant's failure is a note, never a lost table
                record["note"] = f"failed: {_one_line(exc)}"
                if variant.channels_last:
                    self.cl_broken[detector] = variant.label
            finally:
                _release(self.device)
        self.report.measurements.append(record)
        self.report.write()
        self.progress(f"{detector} {variant.label}: " + (
            f"{record['step_ms']:.1f} ms/step, {_rate(record['images_per_s'])} img/s"
            if "step_ms" in record else record["note"]))

    def skip_reason(self, detector: str, variant: Variant) -> str | None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            return "not measured: the --budget-min time budget ran out"
        if variant.channels_last and not get_registry().get("detector", detector).channels_last:
            return "skipped: the detector's spec says it does not run in channels_last"
        if variant.channels_last and detector in self.cl_broken:
            return f"skipped: channels_last failed in {self.cl_broken[detector]}"
        return None

    def ensure_eval(self, detector: str) -> None:
        """The eval rate of the detector's fastest variant so far (its precision and memory
        format), measured once."""
        row = detector_row(detector, [m for m in self.report.measurements
                                      if m["detector"] == detector], self.report.evals)
        if "best_variant" not in row or row["eval_images_per_s"] is not None:
            return
        variant = parse_variant(row["best_variant"])
        try:
            rate = measure_eval(self.s, detector, variant)
        except Exception as exc:  # the row keeps its step figures, without a projection
            self.report.measurements.append({"detector": detector, "variant": "eval " + (
                eval_key(detector, variant).split("/")[1]), "note": f"failed: {_one_line(exc)}"})
        else:
            self.report.evals[eval_key(detector, variant)] = rate
            self.progress(f"{detector} eval ({variant.label}): {_rate(rate)} img/s")
        finally:
            _release(self.device)
        self.report.write()

    def progress(self, text: str) -> None:
        elapsed = time.monotonic() - self.t0
        print(f"[{elapsed:6.0f} s] {text}", flush=True)


def run_check(s: Settings, report: Report, scratch: Path) -> None:
    print("predictions check: training twice (cache read, then decoded)...", flush=True)
    try:
        report.check = predictions_check(s, scratch)
    except Exception as exc:  # recorded as a failed check; the table is still measured
        report.check = {"passed": False, "error": _one_line(exc)}
    report.write()
    print(check_line(report.check).strip(), flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.device.startswith("cuda"):
        # cuBLAS needs this before its first handle for deterministic matmuls (the check)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    try:
        return _main(args, argv)
    except FbenchError as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace, argv: list[str]) -> int:

    ensure_builtin_plugins()
    s = make_settings(args)
    for name in s.detectors:
        get_registry().get("detector", name)  # an unknown name stops here, with close matches
    t0 = time.monotonic()
    with scratch_space() as scratch:
        s.scratch = scratch
        settings = {k: v for k, v in dataclasses.asdict(s).items() if k != "scratch"}
        settings["variants"] = [v.label for v in s.variants]
        report = Report(args.out, describe_environment(s, argv), settings, s.detectors)
        if s.check is not None:
            run_check(s, report, scratch)
        Table(s, report, t0).run()
    print(summary_table(report.as_dict()["rows"]))
    print(total_line(report.as_dict()["total"]))
    print(f"written: {args.out / TABLE_MD}, {args.out / TABLE_JSON}")
    measured = any("step_ms" in m for m in report.measurements)
    return 0 if measured and (report.check is None or report.check["passed"]) else 1


if __name__ == "__main__":
    sys.exit(main())

