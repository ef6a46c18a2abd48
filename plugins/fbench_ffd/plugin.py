"""Entry point of ``ffd-attention`` (Dang et al., CVPR 2020). torch and timm are imported
inside the factory, so ``fbench list`` stays fast.

The spec is static, so it declares the needs of the default: ``map_supervision=full`` trains the
map on forgery masks, hence ``needs_masks=True`` (``fbench run`` refuses a dataset without
masks before anything is built). ``weak`` and ``none`` need no masks; on a dataset without them
use the Python API with a mask-less batch, or a dataset that has masks (they are ignored then).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fbench import DetectorSpec, hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from fbench_ffd.model import FFDAttention


def make_ffd_attention(num_classes: int = 3, depth: str = "thesis",
                       attention_after: int | None = None, map_supervision: str = "full",
                       map_weight: float = 1.0, weak_fake_target: float = 0.75,
                       dropout: float = 0.0,
                       pretrained_path: str | None = None) -> FFDAttention:
    """Xception + a direct-regression attention map after block ``attention_after`` (default
    7 at ``depth=full`` as the paper, 8 at the thesis's depth); the map multiplies the features
    and is returned as the output mask. ``map_supervision``: full (L1 to the forgery mask),
    weak (map maximum → 0 for real, → ``weak_fake_target`` for forged), none."""
    from fbench_ffd.model import build_ffd

    return build_ffd(num_classes, pretrained_path, depth=depth,
                     attention_after=attention_after, map_supervision=map_supervision,
                     map_weight=map_weight, weak_fake_target=weak_fake_target, dropout=dropout)


@hookimpl
def register_detectors(register: Callable[[DetectorSpec], Any]) -> None:
    register(DetectorSpec(
        name="ffd-attention",
        summary="FFD (Dang et al. 2020): Xception + attention map after the middle flow, "
                "map supervised by forgery masks (full|weak|none)",
        factory=make_ffd_attention,
        family="ffd",
        input_size=224,
        transform="raw",
        needs_masks=True,
        # The batch of the thesis's Xception runs (64), so that ffd-attention and
        # f3net-xception differ only in the attention layer; lr measured in docs/lr-sweep.md
        defaults={"lr": 3e-3, "batch_size": 64},
        traits={"backbone": "Xception", "head": "attention map", "fusion": "–",
                "multi_task": "yes (map)"},
    ))
