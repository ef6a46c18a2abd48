"""The transform modules registered by this plugin: ``dct`` (Frank et al. 2020), ``dft`` and
``dft-legacy``. Each maps a float batch in [0, 1], ``[B, 3, H, W]``, on the model's device to
the detector's input; none has trainable parameters."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from fbench import FbenchError
from fbench_blocks.dct import dct_2d
from fbench_frequency.dft import ccs_packed_dft, log_magnitude_dft

# ITU-R BT.601 luma, the weights PIL's convert("L") and Frank et al.'s grayscale use.
LUMA = (0.299, 0.587, 0.114)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` → ``[B, 1, H, W]`` luma."""
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def _check_batch(x: torch.Tensor, name: str) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise FbenchError(f"the {name} transform expects RGB batches [B, 3, H, W], "
                          f"got shape {tuple(x.shape)}.")


class LogDCT(nn.Module):
    """Frank et al. 2020 ("Leveraging Frequency Analysis for Deep Fake Image Recognition"):
    orthonormal 2-D DCT-II per channel, ``log(|X| + eps)``, then per-coefficient
    standardisation with the mean and std of the training split.

    The statistics are buffers (``mean``, ``std``: ``[C, H, W]``), stored in checkpoints. They
    start empty, because the input size is only known once data arrives; ``fit`` fills them,
    and ``load_state_dict`` resizes them to whatever a checkpoint holds, so a fresh, unfitted
    module loads a fitted one's state.
    """

    def __init__(self, grayscale: bool = False, eps: float = 1e-12, standardize: bool = True,
                 fit_batches: int | None = None, min_std: float = 1e-6) -> None:
        super().__init__()
        if eps <= 0:
            raise FbenchError(f"dct: eps must be > 0, got {eps}.")
        if fit_batches is not None and fit_batches < 1:
            raise FbenchError(f"dct: fit_batches must be >= 1 or None, got {fit_batches}.")
        self.grayscale = bool(grayscale)
        self.eps = float(eps)
        self.standardize = bool(standardize)
        self.fit_batches = fit_batches
        self.min_std = float(min_std)
        self.register_buffer("mean", torch.empty(0))
        self.register_buffer("std", torch.empty(0))

    @property
    def fitted(self) -> bool:
        return self.mean.numel() > 0

    def log_dct(self, x: torch.Tensor) -> torch.Tensor:
        """The unstandardised ``log(|DCT(x)| + eps)``, ``[B, C, H, W]`` (``C`` = 1 in grayscale)."""
        _check_batch(x, "dct")
        if self.grayscale:
            x = to_gray(x.float())
        return torch.log(dct_2d(x).abs() + self.eps)

    @torch.no_grad()
    def fit(self, batches: Iterable[torch.Tensor]) -> LogDCT:
        """Per-coefficient mean and std over all images of ``batches`` (the first
        ``fit_batches`` of them when set). Accumulated in float64 with Chan's pairwise update,
        so tens of thousands of images lose no precision."""
        if not self.standardize:
            return self
        count = 0
        mean: torch.Tensor | None = None
        m2: torch.Tensor | None = None
        for i, batch in enumerate(batches):
            y = self.log_dct(batch).double()
            n_b = y.shape[0]
            mean_b = y.mean(dim=0)
            m2_b = ((y - mean_b) ** 2).sum(dim=0)
            if mean is None or m2 is None:
                count, mean, m2 = n_b, mean_b, m2_b
            elif mean_b.shape != mean.shape:
                raise FbenchError(f"dct: fit saw images of shape {tuple(y.shape[1:])} after "
                                  f"{tuple(mean.shape)}; all training images must share a size.")
            else:
                total = count + n_b
                delta = mean_b - mean
                mean = mean + delta * (n_b / total)
                m2 = m2 + m2_b + delta ** 2 * (count * n_b / total)
                count = total
            # Stop before asking for the next batch: the engine's batches are decoded lazily.
            if self.fit_batches is not None and i + 1 >= self.fit_batches:
                break
        if mean is None or m2 is None:
            raise FbenchError("dct: fit received no training images.")
        std = (m2 / max(count - 1, 1)).sqrt().clamp_min(self.min_std)
        self.mean = mean.float().to(self.mean.device)
        self.std = std.float().to(self.std.device)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.log_dct(x)
        if self.standardize:
            if not self.fitted:
                raise FbenchError(
                    "the dct transform has no training statistics yet.",
                    "call fit(batches) with training images first (fbench run does), load a "
                    "fitted state, or create it with standardize=False.")
            if y.shape[1:] != self.mean.shape:
                raise FbenchError(
                    f"the dct transform was fitted on {tuple(self.mean.shape)} coefficients "
                    f"and got {tuple(y.shape[1:])}.",
                    "use the input size the transform was fitted at.")
            y = (y - self.mean) / self.std
        # Keep the detector's 3-channel stem usable with grayscale: the channel is repeated.
        return y.expand(-1, 3, -1, -1) if self.grayscale else y

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any,
                              **kwargs: Any) -> None:
        # Buffers of a fresh module are empty: give them the checkpoint's shape so the
        # standard copy succeeds.
        for name in ("mean", "std"):
            incoming = state_dict.get(prefix + name)
            if isinstance(incoming, torch.Tensor):
                current = getattr(self, name)
                setattr(self, name, torch.empty(incoming.shape, dtype=current.dtype,
                                                device=current.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        shape = tuple(self.mean.shape) if self.fitted else "unfitted"
        return f"grayscale={self.grayscale}, eps={self.eps}, standardize={self.standardize}, " \
               f"stats={shape}"


class LogDFT(nn.Module):
    """Centred log-magnitude of the orthonormal 2-D DFT, per channel (or of the luma)."""

    def __init__(self, grayscale: bool = False, eps: float = 1e-12) -> None:
        super().__init__()
        if eps <= 0:
            raise FbenchError(f"dft: eps must be > 0, got {eps}.")
        self.grayscale = bool(grayscale)
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x, "dft")
        if self.grayscale:
            return log_magnitude_dft(to_gray(x.float()), self.eps).expand(-1, 3, -1, -1)
        return log_magnitude_dft(x, self.eps)


class LegacyDFT(nn.Module):
    """What the thesis code fed its "DCT" ResNet18 runs: the image normalised with ImageNet
    statistics, then ``cv2.dft`` per channel, i.e. the unscaled real DFT in OpenCV's packed
    (CCS) layout, same shape as the input, no magnitude or log. Kept to reproduce those runs;
    it is not a DCT."""

    def __init__(self, normalize: bool = True, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise FbenchError("dft-legacy: mean and std need three values each, std > 0.")
        self.normalize = bool(normalize)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x, "dft-legacy")
        if self.normalize:
            x = (x - self.mean) / self.std
        return ccs_packed_dft(x)
