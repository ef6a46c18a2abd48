"""The pieces of a training process that are not the loop: seeding, the device, numeric modes
(TF32, bf16 autocast), moving and transforming a batch, the optimizer, and the random streams a
resumed run continues."""

from __future__ import annotations

import contextlib
import random
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


def prepare_batch(batch: Batch, transform: torch.nn.Module, device: torch.device) -> Batch:
    """Move a uint8 batch to the device and apply the transform there."""
    batch = batch.to(device, non_blocking=True)
    rgb = batch.images.float().div_(255.0)
    batch.rgb = rgb
    batch.images = transform(rgb)
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


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_optimizer(name: str, params: Any, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999))
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=0.9)
    raise FbenchError(f"unknown optimizer {name!r}.", "use adam, adamw or sgd.")


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
