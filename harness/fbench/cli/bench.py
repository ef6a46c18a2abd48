"""``fbench bench``: images/s of the data pipeline, the bare model step and fbench's own
training step, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

import fbench.cli.options as options
from fbench.cli.output import console as make_console
from fbench.errors import FbenchError


@click.command("bench")
@click.option("--detector", "-d", "detectors", multiple=True, required=True,
              help="Detector to measure (repeat for several: one row each).")
@click.option("--dataset", default="synthetic", show_default=True,
              help="Dataset whose images feed the data pipeline and the batches.")
@options.data_root
@options.dataset_option
@options.set_
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--input-size", type=click.IntRange(min=8),
              help="Input side in pixels [default: the detector's, capped at the dataset's].")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto",
              show_default=True, help="auto: bf16 autocast on CUDA, fp32 on CPU.")
@click.option("--channels-last/--no-channels-last", default=None,
              help="Memory format [default: channels_last on CUDA only, as `fbench run` "
              "--channels-last auto; never for a detector that declares it breaks under it].")
@click.option("--compile", "compile_model", is_flag=True, help="torch.compile the model.")
@click.option("--steps", type=click.IntRange(min=1), default=10, show_default=True,
              help="Training steps per timed round.")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed rounds (bare loop and fbench step alternate; the median counts).")
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--workers", type=options.Workers(), metavar="N|auto", default="auto",
              show_default=True, help=options.WORKERS_HELP + " As `fbench run` resolves it.")
@click.option("--cache-images/--no-cache-images", default=None,
              help="Keep decoded, resized images in memory [default: for small datasets].")
@click.option("--output", "-o", type=click.Path(path_type=Path),
              help="Also write the table as markdown (with the command at its top).")
def bench_cmd(detectors: tuple[str, ...], dataset: str, data_root: Path | None,
              dataset_option: tuple[str, ...], set_: tuple[str, ...], device: str,
              batch_size: int, input_size: int | None, precision: str,
              channels_last: bool | None, compile_model: bool, steps: int, rounds: int,
              warmup: int, workers: int | str, cache_images: bool | None,
              output: Path | None) -> None:
    """Measure images/s of the data pipeline, of the bare model step and of fbench's own
    training step side by side; print the harness overhead (fbench step / bare loop, goal
    <= 1.05), data/model throughput ratio, peak memory and achieved TFLOP/s.

    \b
    fbench bench -d resnet18 -d f3net-mix --device cpu --batch-size 8
    fbench bench -d f3net-mix --device cuda --batch-size 32 --input-size 224 --compile
    """
    import tempfile

    from fbench.report.console import bench_markdown, bench_table
    from fbench.train.config import RunConfig, parse_assignments
    from fbench.use.bench import machine_load, run_bench

    console = make_console(stderr=True)
    load = machine_load()  # before measuring: what other processes load the machine with
    results = []
    failed: list[tuple[str, FbenchError]] = []
    with tempfile.TemporaryDirectory(prefix="fbench-bench-") as scratch:
        for det in detectors:
            config = RunConfig(
                detector=det, dataset=dataset, device=device, batch_size=batch_size,
                input_size=input_size, precision=precision, workers=workers,
                cache_images=cache_images, out=scratch,
                data_root=str(data_root) if data_root else None,
                dataset_options=parse_assignments(dataset_option, "--dataset-option"),
                options=parse_assignments(set_, "--set"))
            # One detector that cannot be measured (say, a missing landmark cache) must not
            # throw away the minutes of rows already measured: note it, measure the rest.
            try:
                with console.status(f"measuring {det}..."):
                    results.append(run_bench(config, steps=steps, warmup=warmup,
                                             rounds=rounds, channels_last=channels_last,
                                             compile_model=compile_model))
            except FbenchError as err:
                failed.append((det, err))
                console.print(f"{det}: not measured: {err.format_message()}", markup=False,
                              highlight=False)
    if not results:
        raise failed[0][1]
    make_console().print(bench_table(results))
    notes = _caveats(results, load)
    for note in notes:
        make_console().print(note, markup=False, highlight=False)
    if output:
        from fbench.files import atomic_path

        with atomic_path(output) as tmp:
            tmp.write_text(bench_markdown(results, options.command_line())
                           + "".join(f"\n{note}\n" for note in notes))
        click.echo(f"written to {output}")
    if failed:
        raise FbenchError(
            f"{len(failed)} of {len(detectors)} detectors not measured: "
            + ", ".join(det for det, _ in failed) + " (each one's reason is printed above).")


def _caveats(results: list[Any], load: tuple[float, int] | None) -> list[str]:
    """How far apart the timed rounds were, and the machine's load: an overhead measured
    while other processes compete for the cores (e.g. 0.58, below the bare loop) is noise."""
    notes = []
    for r in results:
        if r.overhead_low is None:
            continue
        spread = (f"{r.overhead_low:.3f} to {r.overhead_high:.3f} over the rounds"
                  if r.overhead_high != r.overhead_low else "one round: no spread")
        notes.append(f"{r.detector}: overhead {r.overhead_ratio:.3f} (median; {spread})")
    if load is None:
        return notes
    avg, cores = load
    notes.append(f"1-minute load average {avg:.2f} on {cores} core{'s' * (cores != 1)} "
                 "before measuring")
    if avg > cores:
        notes.append("caveat: the machine was busy (load above its cores): other processes "
                     "took turns with the measured one, so these timings and the overhead are "
                     "unreliable; measure again on an idle machine.")
    return notes
