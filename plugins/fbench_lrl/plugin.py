"""Entry point of ``lrl`` (Chen et al., AAAI 2021). torch and timm are imported inside the
factory, so ``fbench list`` stays fast. The similarity targets come from forgery masks, so the
spec declares ``needs_masks=True``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fbench import DetectorSpec, hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from fbench_lrl.model import LRL


def make_lrl(num_classes: int = 3, backbone: str = "efficientnet_b0",
             fuse_at: str | list[int] | None = None, sim_at: str | list[int] | None = None,
             sim_grid: Any = 4,
             sim_weight: float = 1.0, mask_head: bool = True, mask_weight: float = 1.0,
             highpass_cutoff: float = 0.355, dropout: float = 0.2,
             pretrained_path: str | None = None) -> LRL:
    """Two timm ``backbone`` streams (RGB; high-pass DCT of the grayscale image), RGB-frequency
    attention at feature levels ``fuse_at`` (default: the three deepest), patch similarity on a
    ``sim_grid``² grid at levels ``sim_at`` (default: the fused levels but the last), an
    optional mask decoder; loss = CE + ``sim_weight``·MSE + ``mask_weight``·(BCE + Dice)."""
    from fbench_lrl.model import build_lrl

    return build_lrl(num_classes, pretrained_path, backbone=backbone, fuse_at=fuse_at,
                     sim_at=sim_at, sim_grid=sim_grid, sim_weight=sim_weight,
                     mask_head=mask_head, mask_weight=mask_weight,
                     highpass_cutoff=highpass_cutoff, dropout=dropout)


@hookimpl
def register_detectors(register: Callable[[DetectorSpec], Any]) -> None:
    register(DetectorSpec(
        name="lrl",
        summary="LRL (Chen et al. 2021): RGB + high-pass DCT EfficientNet streams, "
                "RGB-frequency attention, mask-supervised patch similarity",
        factory=make_lrl,
        family="lrl",
        input_size=224,
        transform="raw",
        needs_masks=True,
        # lr measured (docs/lr-sweep.md): 1e-2, the top of the grid: not shown to be the optimum
        defaults={"lr": 1e-2, "batch_size": 32},
        traits={"backbone": "EfficientNet-B0 ×2", "head": "high-pass DCT",
                "fusion": "RGB-frequency attention", "multi_task": "yes (similarity, mask)"},
    ))
