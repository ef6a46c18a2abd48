"""The pieces of a training process that are not the loop: seeding, the device, numeric modes
(TF32, bf16 autocast), the CUDA fast paths (cuDNN autotuning, channels_last, fused Adam,
torch.compile, loader processes), moving and transforming a batch, the optimizer, and the
random streams a resumed run continues. ``fbench run`` and ``fbench bench`` share them.

The fast paths change speed, not results beyond float tolerance: a run records them in its
``config.json`` but they are no part of its configuration (:mod:`fbench.report.tables`), and
on CPU each defaults to what fbench did before them, so a CPU run's numbers do not move."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from fbench.errors import FbenchError
from fbench.plugins.batch import Batch


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FbenchError(f"unknown device {name!r}.", "use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FbenchError("--device cuda was asked for, but no CUDA GPU is visible.",
                          "use --device cpu (or auto).")
    return device


def prepare_batch(batch: Batch, transform: torch.nn.Module, device: torch.device,
                  memory_format: torch.memory_format | None = None) -> Batch:
    """Move a uint8 batch to the device and apply the transform there; ``memory_format``
    (:func:`memory_format_of` the model): the transform's output laid out so (None: as it
    is)."""
    batch = batch.to(device, non_blocking=True)
    rgb = batch.images.float().div_(255.0)
    batch.rgb = rgb
    images = transform(rgb)
    if memory_format is not None and images.dim() == 4:
        images = images.contiguous(memory_format=memory_format)
    batch.images = images
    return batch


@contextlib.contextmanager
def tf32_mode(enabled: bool) -> Any:
    """Allow TensorFloat-32 in CUDA convolutions and matmuls only when asked: PyTorch lets
    cuDNN use TF32 by default, which moves small spectral features (LFS's log-DCT bands)
    measurably. Restores the process's previous flags afterwards."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@contextlib.contextmanager
def cudnn_autotune(device: torch.device) -> Iterator[None]:
    """Let cuDNN time its convolution algorithms for each new input shape and keep the
    fastest (``cudnn.benchmark``), on CUDA only: a run's shapes repeat every step, so timing
    them once pays for itself. It picks among algorithms that compute the same
    convolution, so numbers move within float tolerance (CUDA runs are not bit-exact anyway);
    on CPU the flag does nothing, and it is left alone. A process that asked for deterministic
    kernels (``cudnn.deterministic`` or ``torch.use_deterministic_algorithms``, e.g. a check
    that two runs give identical predictions) is left alone too: autotuning may pick another
    algorithm in each run. Restores the process's previous flag afterwards, as
    :func:`tf32_mode` does."""
    if device.type != "cuda" or torch.backends.cudnn.deterministic \
            or torch.are_deterministic_algorithms_enabled():
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


@contextlib.contextmanager
def training_modes(tf32: bool, device: torch.device, compiled: bool) -> Iterator[None]:
    """What holds for the whole of a run in this process: :func:`tf32_mode`,
    :func:`cudnn_autotune` on ``device``, and :func:`compile_failures_said` when the model is
    ``compiled``; each restored (or left) afterwards, as is the deterministic-kernels flag
    a CPU run sets (:func:`seed_everything`), so a later CUDA run in the same process still
    autotunes."""
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        with tf32_mode(tf32), cudnn_autotune(device), compile_failures_said(compiled):
            yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def fused_optimizer(name: str, device: torch.device | None) -> bool:
    """Whether ``name`` runs as one fused kernel per step: Adam and AdamW on CUDA (a few
    launches instead of several per parameter tensor; the update is the same to float
    tolerance). Never on CPU: a fused update may round differently in the last bits, and a
    CPU run's numbers must stay those it has always produced."""
    return device is not None and device.type == "cuda" and name in ("adam", "adamw")


def make_optimizer(name: str, params: Any, lr: float, weight_decay: float,
                   device: torch.device | None = None) -> torch.optim.Optimizer:
    """The run's optimizer, fused on CUDA (:func:`fused_optimizer`) for the parameters on
    ``device``."""
    fused = {"fused": True} if fused_optimizer(name, device) else {}
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999),
                                **fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **fused)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=0.9)
    raise FbenchError(f"unknown optimizer {name!r}.", "use adam, adamw or sgd.")


def wants_channels_last(setting: str, device: torch.device, allowed: bool) -> bool:
    """Whether the model and its input batches are kept channels_last (NHWC), per the
    ``channels_last`` setting: ``auto`` on CUDA (tensor-core convolutions run in NHWC; cuDNN
    otherwise transposes around each), ``on`` on CPU too (where it rarely helps and the
    convolutions compute in another order, moving a CPU run's numbers within float
    tolerance), ``off`` never. Never for a detector whose spec says it breaks or slows under
    it (``DetectorSpec.channels_last``): ``on`` means wherever the detector allows it, so one
    setting serves a sweep over detectors."""
    return allowed and (setting == "on" or (setting == "auto" and device.type == "cuda"))


def memory_format_of(model: torch.nn.Module) -> torch.memory_format | None:
    """``channels_last`` when the model's 4-D weights are stored so (a model moved with
    ``.to(memory_format=torch.channels_last)``), else None: the training and inference loops
    lay each input batch out as the model's weights are, so a convolution needs no transpose,
    and leave a default model's batches exactly as the transform made them. (A 1x1 kernel is
    both; one that is channels_last only decides.)"""
    for p in model.parameters():
        if (p.dim() == 4 and not p.is_contiguous()
                and p.is_contiguous(memory_format=torch.channels_last)):
            return torch.channels_last
    return None


def compile_for_training(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` wrapped by ``torch.compile`` (the wrapper a run's training steps call).
    Compiling happens at the first call (and again for a shape or mode it has not seen), so
    the first step is slow: a run keeps it out of its throughput. The wrapper shares the
    module's parameters; checkpoints are taken from the module itself, so their keys have no
    ``_orig_mod.`` prefix and load into an uncompiled model."""
    return torch.compile(module)


@contextlib.contextmanager
def compile_failures_said(enabled: bool) -> Iterator[None]:
    """torch.compile's failures (no C++ compiler, an operation it cannot lower) as one line
    that says how to train without it, instead of a page of compiler traceback."""
    if not enabled:
        yield
        return
    try:
        yield
    except Exception as exc:
        if not _compile_failure(exc):
            raise
        lines = [line for line in str(exc).splitlines() if line.strip()]
        first = lines[0].strip()[:300] if lines else type(exc).__name__
        notes = " ".join(getattr(exc, "__notes__", []))
        raise FbenchError(f"torch.compile could not compile the model: {first}"
                          + (f" ({notes})" if notes else ""),
                          "train without --compile (compile = false).") from exc


def _compile_failure(exc: Exception) -> bool:
    from torch._dynamo.exc import TorchDynamoException

    try:
        from torch._inductor.exc import InductorError
    except ImportError:  # an older torch: inductor's errors reach here wrapped by dynamo's
        return isinstance(exc, TorchDynamoException)
    return isinstance(exc, TorchDynamoException | InductorError)


LOADER_PROCESSES_MAX = 8
"""The most loader processes ``workers = "auto"`` starts for one GPU."""
PREFETCH_FACTOR = 4
"""Batches each loader process prepares ahead (PyTorch's default is 2): enough to ride out a
slow image while the GPU computes."""


def resolve_workers(setting: int | str, device: torch.device, in_memory: bool = False) -> int:
    """The DataLoader processes a run's ``workers`` setting means on ``device``: a number as
    given; ``auto``:

    - 0 where the run keeps the decoded images in memory (``cache_images = true``): each
      loader process would keep a copy of its own;
    - on CPU, 0: the model computes on the same cores, so every loader process takes cores
      from it, and loading in the run's own process is cheap there (the decoded-image cache,
      or a small dataset's images decoded once and kept in memory, which needs 0);
    - on CUDA, the cores this process may use (its CPU affinity, shared among the node's
      processes under torchrun: ``LOCAL_WORLD_SIZE``) less one for the process itself, which
      feeds the GPU and must not wait for a core, between 1 (loading then overlaps the GPU's
      step) and :data:`LOADER_PROCESSES_MAX` (a judgement, not a measurement: past about 8
      processes per GPU each further one mostly adds memory, its prefetched batches and
      its start-up time; a dataset that needs more decoding sets ``workers = N``)."""
    if setting != "auto":
        return int(setting)
    if device.type != "cuda" or in_memory:
        return 0
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count() or 1)
    per_process = cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(LOADER_PROCESSES_MAX, per_process - 1))


def rng_state(loader_generator: torch.Generator) -> dict[str, Any]:
    """Every random stream a resumed run must continue, as plain tensors and numbers (so a
    checkpoint still loads with ``weights_only=True``)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "loader": loader_generator.get_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any], loader_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    loader_generator.set_state(state["loader"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
