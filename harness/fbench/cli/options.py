"""Options several commands share, each declared once with one help text, and
:func:`command_line`, which rebuilds the current command from its parsed parameters.

The training settings default to ``None`` (unset): the value then comes from a TOML file, the
detector's preferences or :class:`fbench.train.config.RunConfig`, which is why each help text
names its default instead of click showing one."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

epochs = click.option("--epochs", type=click.IntRange(min=1),
                      help="The most epochs a run trains (patience stops it earlier on a "
                           "plateau); default: the detector's preference, else 20.")
batch_size = click.option("--batch-size", type=click.IntRange(min=1),
                          help="Batch size; default: the detector's preference, else 64.")
lr = click.option("--lr", type=click.FloatRange(min=0, min_open=True),
                  help="Learning rate (Adam); default: the detector's preference, else 1e-3.")
device = click.option("--device", help="auto, cpu, cuda or cuda:N. [default: auto]")
precision = click.option("--precision", type=click.Choice(["fp32", "bf16"]),
                         help="bf16 autocast (fast on recent GPUs). [default: fp32]")
input_size = click.option("--input-size", type=click.IntRange(min=8),
                          help="Side of the square model input; default: the detector's, but "
                          "never above the dataset's native size.")
resample = click.option("--resample", type=click.Choice(["bilinear", "area"]),
                        help="How images are resized to the input size: antialiased bilinear "
                        "(as torchvision and the thesis) or OpenCV area. [default: bilinear]")
cache = click.option("--cache", type=click.Choice(["auto", "off", "build"]),
                     help="The decoded-image cache (`fbench data cache`): auto reads it when it "
                     "is built for the run's images, size and resampler (else decodes), build "
                     "builds it first when missing, off never touches it. [default: auto]")
protocol = click.option("--protocol",
                        help="fbench (these defaults and the detector's preferences) or a "
                        "published training recipe the detector declares, e.g. thesis (Adam, "
                        "the thesis's lr and batch, 30 epochs, 224 px); flags given here still "
                        "win. [default: fbench]")
data_root = click.option("--data-root", type=click.Path(path_type=Path),
                         help="Directory holding the dataset's files (not needed for synthetic).")
dataset_option = click.option("--dataset-option", multiple=True, metavar="KEY=VALUE",
                              help="A dataset option, repeatable: "
                              "--dataset-option n_per_class=500.")
set_ = click.option("--set", "set_", multiple=True, metavar="KEY=VALUE",
                    help="A detector option (its factory's keyword), repeatable: "
                    "--set depth=thesis.")
no_progress = click.option("--no-progress", is_flag=True, help="No progress bars.")


class Workers(click.ParamType):
    """A number of DataLoader processes (0 or more), or ``auto``."""

    name = "N|auto"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> int | str:
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        try:
            number = int(text)
        except ValueError:
            number = -1
        if number < 0:
            self.fail(f"{value!r} is neither a number of processes (0 or more) nor auto.",
                      param, ctx)
        return number


WORKERS_HELP = ("DataLoader worker processes, or auto: 0 on CPU (the model needs the cores; "
                "cached or in-memory images load cheaply), on CUDA one per core this process "
                "may use less one, 1 to 8 (pinned memory, 4 batches ahead each).")
channels_last = click.option(
    "--channels-last", type=click.Choice(["auto", "on", "off"]),
    help="Memory format of the model and its input batches: auto is channels_last on CUDA "
    "(faster convolutions on tensor cores), on is channels_last on CPU too, off never; a "
    "detector that declares it breaks under channels_last keeps the default layout. Speed "
    "only: recorded, not part of the configuration. [default: auto]")

_CONVERGENCE = (
    click.option("--schedule", type=click.Choice(["cosine", "step", "constant"]),
                 help="Learning-rate schedule over the epoch ceiling (step: x0.1 at 1/2 and "
                 "3/4); constant is the thesis's. [default: cosine]"),
    click.option("--warmup-epochs", type=click.FloatRange(min=0),
                 help="Linear warm-up of the learning rate, in epochs. [default: 1 from a "
                 "ceiling of 10 epochs, else 0]"),
    click.option("--patience", type=click.IntRange(min=0),
                 help="Stop when validation macro-F1 has not improved for N epochs "
                 "(--epochs is the ceiling; 0: never). [default: 3]"),
    click.option("--min-delta", type=click.FloatRange(min=0),
                 help="The validation macro-F1 gain that counts as improving. [default: 0]"),
    click.option("--collapse-epochs", type=click.IntRange(min=0),
                 help="Stop when validation predictions sit on one class for N epochs in a "
                 "row (0: never). [default: 3]"),
    click.option("--precise-bn", type=click.IntRange(min=0),
                 help="Training batches over which BatchNorm statistics are recomputed before "
                 "each validation (0: off). [default: up to 32 when an epoch has under 500 "
                 "steps, else 0]"),
    click.option("--clip-grad", type=click.FloatRange(min=0, min_open=True),
                 help="Clip the gradients' total norm to this value. [default: off]"),
)


def convergence(command: click.decorators.FC) -> click.decorators.FC:
    """The convergence settings (schedule, warm-up, stopping rule, precise BN, clipping)."""
    for option in reversed(_CONVERGENCE):
        command = option(command)
    return command


def _is_unset(param: click.Parameter, value: object) -> bool:
    return value is None or value == () or value is False or (
        isinstance(param, click.Option) and value == param.default and not param.required)


def _option_words(param: click.Option, value: object) -> list[str]:
    flag = max(param.opts, key=len)
    values = list(value) if isinstance(value, (tuple, list)) else [value]
    if param.is_flag:
        return [flag if value or not param.secondary_opts else max(param.secondary_opts, key=len)]
    if param.multiple:
        return [word for v in values
                for word in [flag, *(map(str, v) if isinstance(v, tuple) else [str(v)])]]
    return [flag, *map(str, values)]


def command_line() -> str:
    """The current command, rebuilt from its parsed parameters (what a table header needs to
    say how to regenerate it; independent of how the CLI was launched)."""
    ctx = click.get_current_context()
    parts = ["fbench", ctx.info_name or ""]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if _is_unset(param, value):
            continue
        if isinstance(param, click.Argument):
            parts += [str(v) for v in (value if isinstance(value, (tuple, list)) else [value])]
        else:
            parts += _option_words(param, value)
    return " ".join(shlex.quote(p) for p in parts)
