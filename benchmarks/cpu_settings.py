"""Each detector's training step on this CPU under every setting issue 19 names, side by side:
fp32 (the default), channels_last, bf16 autocast (oneDNN, AMX where the CPU has it), both, and
torch.compile; optionally the thesis's own code in the same rounds.

    python benchmarks/cpu_settings.py --out cpu-settings                 # every thesis row
    python benchmarks/cpu_settings.py -d graftnet -d resnet18 --variants fp32,channels_last
    python benchmarks/cpu_settings.py --reference-code /tmp/thesis_ref   # + the thesis's code

One detector per child process (a crash in one setting is that detector's row, not the
table's). In the child, every setting gets its own copy of one randomly initialised model and
optimizer, and the settings take turns, round after round, on one random batch: a busy moment
of the machine slows every setting of that round alike, and the median round counts. A step is
what a run does per batch (forward, the detector's loss, backward, Adam), on a batch already
prepared (the data pipeline is ``fbench bench``'s business). Before training, each setting's
training-mode logits (dropout seeded alike) are compared with fp32's on the same weights: the
largest difference, relative to the largest logit, says whether a setting stays within float
tolerance (compiled settings are not compared: that would compile a second graph).

``--reference-code DIR`` adds the thesis's own model, with its own training loss, as one
more setting ("thesis"): DIR holds an ``adapter.py`` with ``build(name, num_classes,
input_size)`` and ``train_loss(name, model, images, labels, masks)`` that calls that code (a
checkout of shenjiyuan123/Graduate_thesis and the adapter; neither ships with fbench), stepped
by the same Adam as every other setting. Every ratio is then against it; without it, against
fbench's fp32.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class Setting:
    name: str
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False


SETTINGS = {s.name: s for s in (
    Setting("fp32"),
    Setting("channels_last", channels_last=True),
    Setting("bf16", precision="bf16"),
    Setting("bf16+channels_last", precision="bf16", channels_last=True),
    Setting("compile", compile=True),
    Setting("compile+channels_last", compile=True, channels_last=True),
)}
DEFAULT_SETTINGS = "fp32,channels_last,bf16,bf16+channels_last,compile"
REFERENCE = "thesis"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", "--detector", action="append", dest="detectors",
                   help="a detector (repeat); default: the thesis's table")
    p.add_argument("--variants", default=DEFAULT_SETTINGS,
                   help=f"comma-separated, of {', '.join(SETTINGS)} (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=2, help="timed steps per setting per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads(),
                   help="torch threads (default: torch's, %(default)s here)")
    p.add_argument("--reference-code", type=Path, default=None,
                   help="a folder with adapter.py for the thesis's own code (see above)")
    p.add_argument("--out", type=Path, default=Path("cpu-settings"),
                   help="folder for settings.json and settings.md (rewritten after each row)")
    p.add_argument("--child", help=argparse.SUPPRESS)  # one detector, in a child process
    args = p.parse_args(argv)
    unknown = [v for v in args.variants.split(",") if v not in SETTINGS]
    if unknown or "fp32" not in args.variants.split(","):
        p.error(f"--variants: unknown {unknown}; fp32 must be one of them")
    if args.reference_code and not (args.reference_code / "adapter.py").is_file():
        p.error(f"--reference-code {args.reference_code}: no adapter.py there")
    return args


# -- in the child: one detector --------------------------------------------------------------


class Trainer:
    """One setting's model, optimizer and step, on its copy of the batch."""

    def __init__(self, name: str, model: torch.nn.Module, loss: Any, batch: Any,
                 setting: Setting | None) -> None:
        from fbench.train.runtime import compile_for_training, make_optimizer

        cpu = torch.device("cpu")
        self.name, self.setting, self.loss_of = name, setting or Setting("fp32"), loss
        fmt = torch.channels_last if self.setting.channels_last else torch.contiguous_format
        self.model = model.to(memory_format=fmt)
        self.batch = copy.copy(batch)  # images already through the detector's transform
        self.batch.images = batch.images.clone().contiguous(memory_format=fmt)
        self.forward = compile_for_training(self.model) if self.setting.compile else self.model
        self.optimizer = make_optimizer("adam", self.model.parameters(), 1e-4, 0.0, cpu)
        self.times: list[float] = []
        # fbench's settings share the weights, so their logits are compared; a reference model
        # has its own, and a compiled one would need a second compilation
        self.compared = setting is not None and not self.setting.compile
        self.warmup_s = 0.0

    def step(self) -> None:
        from fbench.train.runtime import autocast

        self.model.train()
        with autocast(torch.device("cpu"), self.setting.precision):
            loss = self.loss_of(self.forward, self.batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    @torch.no_grad()
    def logits(self) -> torch.Tensor:
        """Training-mode logits (batch statistics: at initialisation, running statistics
        would leave some models' logits almost constant), dropout seeded alike."""
        from fbench.train.runtime import autocast

        self.model.train()
        torch.manual_seed(1)
        with autocast(torch.device("cpu"), self.setting.precision):
            out = self.model(self.batch)
        return (out.logits if hasattr(out, "logits") else out).float()


def fbench_loss(model: Any, batch: Any) -> torch.Tensor:
    out = model(batch)
    return sum(getattr(model, "_orig_mod", model).loss(out, batch).values())


def reference_trainer(code: Path, detector: str, input_size: int, batch: Any) -> Trainer:
    sys.path.insert(0, str(code))
    import adapter  # the user's, next to the thesis's code

    torch.manual_seed(0)
    model = adapter.build(detector, num_classes=3, input_size=input_size)

    def loss(forward: Any, b: Any) -> torch.Tensor:
        return adapter.train_loss(detector, forward, b.images, b.labels, b.masks)

    return Trainer(REFERENCE, model, loss, batch, None)


def measure(detector: str, args: argparse.Namespace) -> dict[str, Any]:
    from fbench.plugins.registry import get_registry
    from fbench.train.resolve import build_detector
    from fbench.use.sample_batch import random_batch
    from fbench_landmarks.heatmaps import MESH_POINTS

    torch.set_num_threads(args.threads)
    spec = get_registry().get("detector", detector)
    torch.manual_seed(0)
    base = build_detector(spec, {}, args.input_size)
    batch = random_batch(spec, args.input_size, args.batch_size,
                         landmark_points=MESH_POINTS)
    trainers = [Trainer(name, copy.deepcopy(base), fbench_loss, batch, SETTINGS[name])
                for name in args.variants.split(",")]
    if args.reference_code:
        trainers.append(reference_trainer(args.reference_code, detector, args.input_size,
                                          batch))
    reference = next(t for t in trainers if t.name == "fp32").logits()
    scale = float(reference.abs().max())
    diffs = {t.name: float((t.logits() - reference).abs().max()) / scale for t in trainers
             if t.compared}
    for t in trainers:  # first steps: allocation, oneDNN's kernel choice, compilation
        start = time.perf_counter()
        t.step()
        t.step()
        t.warmup_s = time.perf_counter() - start
    for _ in range(args.rounds):
        for t in trainers:
            start = time.perf_counter()
            for _ in range(args.steps):
                t.step()
            t.times.append((time.perf_counter() - start) / args.steps)
    return {"detector": detector, "threads": args.threads, "logit_scale": scale,
            "relative_logit_diff": diffs,
            "step_s": {t.name: statistics.median(t.times) for t in trainers},
            "rounds_s": {t.name: t.times for t in trainers},
            "warmup_s": {t.name: t.warmup_s for t in trainers}}


# -- in the parent: one child per detector, the table ------------------------------------------


def thesis_detectors() -> list[str]:
    """The thesis table's rows: benchmarks/gpu_table.py's list, one list for both scripts."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gpu_table import thesis_detectors as rows

    return rows()


def run_child(detector: str, argv: list[str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, *argv, "--child", detector],
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    return {"detector": detector, "error": f"exit {proc.returncode}: {tail[:200]}"}


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    names = args.variants.split(",") + ([REFERENCE] if args.reference_code else [])
    base = REFERENCE if args.reference_code else "fp32"
    head = (f"Batch {args.batch_size}, {args.input_size} px, {args.threads} torch threads, "
            f"{args.steps} steps × {args.rounds} rounds (median round); each setting's step "
            f"time / {base}'s (lower is faster); [max |logit − fp32's| / max |fp32 logit|].\n\n")
    cols = ["detector", f"{base} s/step", *[n for n in names if n != base], "best"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['detector']} | {row['error']} |")
            continue
        ref = row["step_s"][base]
        cells = []
        for n in names:
            if n == base:
                continue
            diff = row["relative_logit_diff"].get(n)
            cells.append(f"{row['step_s'][n] / ref:.2f}"
                         + ("" if diff is None or n == "fp32" else f" [{diff:.1e}]"))
        ours = {n: row["step_s"][n] for n in args.variants.split(",")}
        best = min(ours, key=ours.get)
        lines.append(f"| {row['detector']} | {ref:.2f} | " + " | ".join(cells)
                     + f" | {best} {ours[best] / ref:.2f} |")
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args)))
        return 0
    detectors = args.detectors or thesis_detectors()
    args.out.mkdir(parents=True, exist_ok=True)
    child_argv = ["--variants", args.variants, "--batch-size", str(args.batch_size),
                  "--input-size", str(args.input_size), "--steps", str(args.steps),
                  "--rounds", str(args.rounds), "--threads", str(args.threads)]
    if args.reference_code:
        child_argv += ["--reference-code", str(args.reference_code)]
    rows: list[dict[str, Any]] = []
    for detector in detectors:
        start = time.perf_counter()
        rows.append(run_child(detector, child_argv))
        print(f"{detector}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        (args.out / "settings.json").write_text(json.dumps(rows, indent=1))
        (args.out / "settings.md").write_text(markdown(rows, args))
    print(markdown(rows, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
