"""Training-step throughput of every shipped detector's model on one device, in several
precisions and memory formats: the GPU table of docs/benchmarks.md comes from this script.

It needs only torch, timm, numpy and pluggy: it imports the built-in plugin modules named in
pyproject.toml directly (no entry points), so it runs where fbench is not pip-installed:

    PYTHONPATH=harness:plugins python benchmarks/model_throughput.py --device cuda --out DIR

`fbench bench` measures the same bare step side by side with fbench's own training loop and the
data pipeline; this script is the model-only part, for machines without the full stack.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import time
import tomllib
from pathlib import Path

import torch

from fbench.batch import Batch
from fbench.bench import PartTimer
from fbench.detector import as_detector, count_parameters

ROOT = Path(__file__).resolve().parents[1]


def built_in_specs() -> dict:
    entry_points = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "entry-points"]["fbench"]
    specs = {}
    for target in entry_points.values():
        try:
            module = importlib.import_module(target)
        except ImportError as exc:  # a data plugin may need what this machine lacks
            print(f"skipping plugin {target}: {exc}")
            continue
        if hasattr(module, "register_detectors"):
            module.register_detectors(lambda spec: specs.__setitem__(spec.name, spec))
    return specs


def make_batch(n: int, size: int, device: torch.device) -> Batch:
    g = torch.Generator(device="cpu").manual_seed(0)
    rgb = torch.rand(n, 3, size, size, generator=g)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    masks = (torch.rand(n, 1, size, size, generator=g) > 0.5).float()
    batch = Batch(images=(rgb - mean) / std, labels=torch.arange(n) % 3, masks=masks,
                  has_mask=torch.ones(n, dtype=torch.bool),
                  landmarks=torch.rand(n, 468, 2, generator=g), rgb=rgb,
                  index=torch.arange(n))
    if "landmarks_found" in Batch.__dataclass_fields__:  # the landmark stream's flag
        batch.landmarks_found = torch.ones(n, dtype=torch.bool)
    return batch.to(device)


def build(spec, size: int):
    options = {}
    params = inspect.signature(spec.factory).parameters
    if "input_size" in params:
        options["input_size"] = size
    return as_detector(spec.factory(num_classes=3, **options))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(spec, device, batch_size, size, precision, channels_last, compile_model,
            steps, warmup) -> dict:
    torch.manual_seed(0)
    model = build(spec, size).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    batch = make_batch(batch_size, size, device)
    batch.images = batch.images.contiguous(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    fwd = torch.compile(model) if compile_model else model
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
                else torch.autocast(device.type, enabled=False))

    def step():
        with autocast:
            out = fwd(batch)
            loss = sum(model.loss(out, batch).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_compile = time.perf_counter()
    for _ in range(warmup):
        step()
    sync(device)
    t_compile = time.perf_counter() - t_compile
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    sec = (time.perf_counter() - t0) / steps
    flops = None
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            out = model(batch)
            sum(model.loss(out, batch).values()).backward()
        flops = counter.get_total_flops()
    except Exception as exc:  # report, do not lose the timing
        print(f"  flop count failed: {exc}")
    shares = {}
    groups = {}
    for m in model.modules():
        if getattr(m, "bench_group", None):
            groups.setdefault(m.bench_group, []).append(m)
    if groups and not compile_model:
        timer = PartTimer(groups, device)
        timer.enabled = True
        sync(device)
        t = time.perf_counter()
        for _ in range(3):
            step()
        sync(device)
        total = (time.perf_counter() - t) / 3
        timer.enabled = False
        timer.remove()
        shares = {g: v / 3 / total for g, v in timer.totals.items()}
    return {
        "detector": spec.name, "device": str(device), "batch": batch_size, "size": size,
        "precision": precision, "channels_last": channels_last, "compile": compile_model,
        "ms_per_step": 1000 * sec, "images_per_s": batch_size / sec,
        "warmup_s": t_compile, "params_m": count_parameters(model) / 1e6,
        "peak_mb": (torch.cuda.max_memory_allocated(device) / 2**20
                    if device.type == "cuda" else None),
        "gflop_per_step": None if flops is None else flops / 1e9,
        "tflops": None if flops is None else flops / sec / 1e12,
        "shares": shares,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--detectors", nargs="*")
    ap.add_argument("--modes", nargs="*", default=["fp32", "bf16", "bf16-cl"],
                    help="fp32, bf16, bf16-cl (channels_last), bf16-cl-compile, fp32-cl")
    ap.add_argument("--compile-detectors", nargs="*", default=[])
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    specs = built_in_specs()
    names = args.detectors or sorted(specs)
    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        modes = list(args.modes) + (["bf16-cl-compile"] if name in args.compile_detectors
                                    else [])
        for mode in modes:
            precision = "bf16" if mode.startswith("bf16") else "fp32"
            try:
                row = measure(specs[name], device, args.batch_size, args.size, precision,
                              "-cl" in mode, mode.endswith("compile"), args.steps, args.warmup)
            except Exception as exc:
                row = {"detector": name, "mode": mode, "error": f"{type(exc).__name__}: {exc}"}
            row["mode"] = mode
            rows.append(row)
            print(json.dumps(row), flush=True)
            (args.out / "model_throughput.json").write_text(json.dumps(rows, indent=1))
            if device.type == "cuda":
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
