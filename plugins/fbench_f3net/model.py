"""F3Net detectors: the RGB Xception baseline, FAD, LFS, Both, Mix, and the thesis's Mix + Seg.

One class builds every variant so the ablation differs in exactly one thing at a time; the
stages are run explicitly so MixBlocks (and the decoder) can tap the streams between blocks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fbench import Batch, Detector, DetectorOutput, FbenchError
from fbench_blocks.decoder import SegDecoder
from fbench_blocks.frequency import LFS_ORDERS, FADHead, LFSHead
from fbench_blocks.losses import DICE_REDUCTIONS, multitask_loss
from fbench_blocks.options import parse_int_list
from fbench_blocks.xception import EXIT, XceptionBackbone, check_init, kept_blocks
from fbench_f3net.mixblock import MixBlock

VARIANTS = ("xception", "fad", "lfs", "both", "mix", "mix-seg")
MIX_AFTER = {"thesis": (8, 11), "full": (7, 12)}
"""Default MixBlock positions: the thesis's (both at 728 channels, after its blocks 8 and 11)
and the paper's (after blocks 7 and 12)."""


def parse_mix_after(value: Any, depth: str) -> tuple[int, ...]:
    """``None`` (the depth's default), ``"8,11"`` or ``[8, 11]`` → ascending block numbers that
    exist at ``depth``."""
    if value is None:
        return MIX_AFTER[depth]
    try:
        points = parse_int_list(value)
    except (TypeError, ValueError):
        raise FbenchError(f"mix_after={value!r} is not a list of block numbers.",
                          "write e.g. --set mix_after=8,11") from None
    kept = kept_blocks(depth)
    if not points or list(points) != sorted(set(points)) or any(p not in kept for p in points):
        raise FbenchError(
            f"mix_after={value!r}: MixBlocks go after distinct, ascending Xception blocks that "
            f"exist at depth={depth} ({', '.join(map(str, kept))}).",
            f"the default at this depth is {','.join(map(str, MIX_AFTER[depth]))}.")
    return points


def _match_size(b: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    # The LFS stream (stride-1 stem on a half-size map) and the FAD stream round differently
    # at some input sizes and can end one pixel apart; align LFS to FAD before mixing.
    if b.shape[-2:] == a.shape[-2:]:
        return b
    return F.interpolate(b, size=a.shape[-2:], mode="bilinear", align_corners=False)


def _pool(x: torch.Tensor) -> torch.Tensor:
    # The exit flow already ends in a ReLU: pooling is all that is left of Xception's head.
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


class F3Net(Detector):
    """An F3Net variant (``xception``, ``fad``, ``lfs``, ``both``, ``mix``) on ImageNet-
    normalised RGB (``batch.images`` after the ``raw`` transform).

    - ``xception``: one RGB Xception stream;
    - ``fad`` / ``lfs``: one frequency head + one Xception stream (12- / 6-channel stem; the
      LFS stem has stride 1);
    - ``both``: both streams, pooled features concatenated (4096);
    - ``mix``: both streams exchanging information through MixBlocks after ``mix_after``.

    Every variant ends in dropout (``dropout``, 0.2) and a linear classifier. ``init`` is the
    Xception backbones' initialisation (``reference``: PyTorch's defaults, as the thesis;
    ``timm``: timm's Kaiming fan-out); every other layer has PyTorch's defaults either way, as
    in the thesis's code.
    """

    def __init__(self, variant: str = "mix", num_classes: int = 3, depth: str = "thesis",
                 input_size: int = 224, lfs_order: str = "log-first",
                 mix_after: Any = None, dropout: float = 0.2, init: str = "reference") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise FbenchError(f"unknown F3Net variant {variant!r}.",
                              f"choose one of {', '.join(VARIANTS)}.")
        kept_blocks(depth)  # validates depth
        check_init(init)
        if lfs_order not in LFS_ORDERS:
            raise FbenchError(f"unknown lfs_order {lfs_order!r}.",
                              "use lfs_order=paper (sum, then log) or log-first (the thesis).")
        if not isinstance(input_size, int) or input_size < 16:
            raise FbenchError(f"input_size must be an integer >= 16, got {input_size!r}.")
        if not 0.0 <= dropout < 1.0:
            raise FbenchError(f"dropout must be in [0, 1), got {dropout}.")
        self.variant = variant
        self.depth = depth
        self.input_size = input_size
        self.lfs_order = lfs_order
        uses_fad = variant in ("fad", "both", "mix", "mix-seg")
        uses_lfs = variant in ("lfs", "both", "mix", "mix-seg")
        self.mixes = variant in ("mix", "mix-seg")
        self.mix_after = parse_mix_after(mix_after, depth) if self.mixes else ()

        self.rgb = XceptionBackbone(3, depth, init=init) if variant == "xception" else None
        self.fad_head = FADHead(input_size) if uses_fad else None
        self.fad = XceptionBackbone(12, depth, init=init) if uses_fad else None
        self.lfs_head = LFSHead(order=lfs_order) if uses_lfs else None
        self.lfs = XceptionBackbone(6, depth, stem_stride=1, init=init) if uses_lfs else None
        self.mix = None
        if self.mixes:
            assert self.fad is not None
            self.mix = nn.ModuleList(MixBlock(self.fad.channels_at(p)) for p in self.mix_after)
        n_streams = int(uses_fad) + int(uses_lfs) or 1
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2048 * n_streams, num_classes)

    def backbones(self) -> list[XceptionBackbone]:
        return [b for b in (self.rgb, self.fad, self.lfs) if b is not None]

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Pooled features ``[B, 2048 · streams]`` and, for the mixing variants, the
        concatenated stream maps after the last MixBlock (the decoder's input)."""
        if self.rgb is not None:
            return _pool(self.rgb(images)), None
        a = self.fad_head(images) if self.fad_head is not None else None
        b = self.lfs_head(images) if self.lfs_head is not None else None
        fused = None
        if self.mix is not None:
            assert a is not None and b is not None and self.fad is not None
            assert self.lfs is not None
            prev = -1
            for point, block in zip(self.mix_after, self.mix, strict=True):
                a = self.fad.forward_between(a, prev, point)
                b = _match_size(self.lfs.forward_between(b, prev, point), a)
                a, b = block(a, b)
                prev = point
            fused = torch.cat([a, b], dim=1)
            a = self.fad.forward_between(a, prev, EXIT)
            b = self.lfs.forward_between(b, prev, EXIT)
            return torch.cat([_pool(a), _pool(b)], dim=1), fused
        pooled = []
        if a is not None and self.fad is not None:
            pooled.append(_pool(self.fad(a)))
        if b is not None and self.lfs is not None:
            pooled.append(_pool(self.lfs(b)))
        return torch.cat(pooled, dim=1), fused

    def forward(self, batch: Batch) -> DetectorOutput:
        pooled, _ = self.features(batch.images)
        return DetectorOutput(logits=self.fc(self.dropout(pooled)))


class F3NetSeg(F3Net):
    """The thesis's multi-task F3Net: Mix plus a decoder from the concatenated stream maps after
    the last MixBlock to a forgery mask at the input resolution.

    ``loss`` = ``ce_weight``·CE + ``bce_weight``·BCE + ``dice_weight``·Dice; the mask terms use
    only rows whose mask is known (``batch.has_mask``).
    """

    def __init__(self, num_classes: int = 3, depth: str = "thesis", input_size: int = 224,
                 lfs_order: str = "log-first", mix_after: Any = None, dropout: float = 0.2,
                 ce_weight: float = 1.0, bce_weight: float = 1.0, dice_weight: float = 1.0,
                 dice_reduction: str = "image", decoder_activation: str = "none",
                 init: str = "reference") -> None:
        super().__init__("mix-seg", num_classes, depth, input_size, lfs_order, mix_after,
                         dropout, init)
        if dice_reduction not in DICE_REDUCTIONS:
            raise FbenchError(f"unknown dice_reduction {dice_reduction!r}.",
                              "use image (per image, averaged) or batch (the thesis).")
        if decoder_activation not in ("none", "relu"):
            raise FbenchError(f"unknown decoder_activation {decoder_activation!r}.",
                              "use none (the thesis's affine decoder) or relu.")
        if min(ce_weight, bce_weight, dice_weight) < 0:
            raise FbenchError("loss weights must be >= 0.")
        assert self.fad is not None
        fused_channels = 2 * self.fad.channels_at(self.mix_after[-1])
        self.decoder = SegDecoder(fused_channels, activation=decoder_activation)
        self.weights = {"ce": float(ce_weight), "bce": float(bce_weight),
                        "dice": float(dice_weight)}
        self.dice_reduction = dice_reduction

    def forward(self, batch: Batch) -> DetectorOutput:
        images = batch.images
        pooled, fused = self.features(images)
        assert fused is not None
        mask_logits = self.decoder(fused, size=tuple(images.shape[-2:]))
        return DetectorOutput(logits=self.fc(self.dropout(pooled)),
                              mask=torch.sigmoid(mask_logits.float()),
                              aux={"mask_logits": mask_logits})

    def loss(self, output: DetectorOutput, batch: Batch) -> dict[str, torch.Tensor]:
        return multitask_loss(output, batch, self.weights, self.dice_reduction)


def _read_state(path: str) -> dict[str, torch.Tensor]:
    from fbench import read_state_dict

    return read_state_dict(path)


def load_pretrained(model: F3Net, path: str) -> None:
    """Load local weights: an F3Net state dict of this variant (keys such as
    ``fad.block8.…``) loads as is; otherwise the file is taken as an Xception state dict
    (e.g. timm's ImageNet ``legacy_xception``) and loaded into every stream's backbone, with
    the 3-channel stem spread over the 12- or 6-channel stems. Tensors whose shape differs
    (another number of classes) keep their fresh initialisation."""
    state = _read_state(path)
    own = model.state_dict()
    direct = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if direct:
        model.load_state_dict(direct, strict=False)
        return
    if sum(b.load_xception_state(state) for b in model.backbones()) == 0:
        raise FbenchError(f"no tensor in {path} matches the model's parameters.",
                          "give an F3Net checkpoint of this variant or an Xception state dict.")


def build_f3net(variant: str, num_classes: int = 3, pretrained_path: str | None = None,
                **options: Any) -> F3Net:
    """The detector for one variant; ``options`` are the factory's keyword options."""
    model: F3Net
    if variant == "mix-seg":
        model = F3NetSeg(num_classes=num_classes, **options)
    else:
        model = F3Net(variant, num_classes=num_classes, **options)
    if pretrained_path:
        load_pretrained(model, pretrained_path)
    return model


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, as the thesis counted them (fixed DCT matrices and band masks are
    buffers, so they never count)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["F3Net", "F3NetSeg", "VARIANTS", "MIX_AFTER", "build_f3net", "load_pretrained",
           "parse_mix_after", "count_parameters"]
