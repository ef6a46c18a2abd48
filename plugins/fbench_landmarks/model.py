"""The two-stream RGB + facial-landmark detector, after "Complement Face Forensic Detection and
Localization with Facial Landmarks" (Songsri-in & Zafeiriou, arXiv 1910.05455).

The paper feeds facial landmarks to a detection and a localization network beside the RGB
image; its exact fusion is not public, so where the streams meet is an option (``fusion``):

- ``early``: the landmark heatmaps are extra input channels of the RGB backbone (one network);
- ``mid``: a small landmark CNN's stride-8 map is projected to the backbone's stride-8 stage and
  added to it, so the rest of the backbone sees face geometry beside appearance (default);
- ``late``: the landmark CNN runs to stride 32 on its own; the two pooled vectors are
  concatenated before the classifier.

An optional mask head (``mask_head``) decodes the backbone's multi-scale features, with the
heatmaps at stride 4, to a forgery mask; it is trained with BCE + Dice on rows whose mask is
known.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fbench import Batch, Detector, DetectorOutput, FbenchError
from fbench_landmarks.heatmaps import channels, group_matrix, render_heatmaps

FUSIONS = ("early", "mid", "late")
MID_STRIDE = 8
"""Where ``fusion=mid`` joins the streams: after the backbone stage at this stride (resnet18's
``layer2``); early enough that three more stages mix the two, late enough that the landmark
CNN has a receptive field of whole facial parts."""


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class LandmarkStream(nn.Module):
    """A small CNN on the heatmaps: per level a stride-2 conv and a conv (BN, ReLU), channel
    widths ``width · (1, 2, 4, 8, 8)``; ``levels`` of them reach stride ``2 ** levels``."""

    def __init__(self, in_channels: int, levels: int, width: int = 32) -> None:
        super().__init__()
        widths = [width * m for m in (1, 2, 4, 8, 8)][:levels]
        layers: list[nn.Module] = []
        prev = in_channels
        for wd in widths:
            layers += [_conv(prev, wd, stride=2), _conv(wd, wd)]
            prev = wd
        self.layers = nn.Sequential(*layers)
        self.channels = prev

    def forward(self, heat: torch.Tensor) -> torch.Tensor:
        return self.layers(heat)


class MaskDecoder(nn.Module):
    """Top-down decoder over the backbone features at strides 4..32: each step up-samples ×2
    (to the next map's size), concatenates that map, 3×3 conv; at stride 4 the heatmaps join
    (face geometry for localization); a 1×1 conv gives mask logits, resized to the input."""

    def __init__(self, feature_channels: list[int], heat_channels: int, width: int = 64) -> None:
        super().__init__()
        deepest, *higher = reversed(feature_channels)  # deepest first
        self.lateral = nn.Conv2d(deepest, width, 1)
        self.up = nn.ModuleList(_conv(width + c, width) for c in higher)
        self.head = nn.Sequential(_conv(width + heat_channels, width), nn.Conv2d(width, 1, 1))

    def forward(self, features: list[torch.Tensor], heat: torch.Tensor,
                size: tuple[int, int]) -> torch.Tensor:
        deepest, *higher = reversed(features)
        y = self.lateral(deepest)
        for block, skip in zip(self.up, higher, strict=True):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, skip], dim=1))
        heat = F.adaptive_avg_pool2d(heat, y.shape[-2:]).to(y.dtype)
        logits = self.head(torch.cat([y, heat], dim=1))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def _stage_module(backbone: nn.Module, index: int) -> nn.Module:
    """The module whose output is feature ``index`` of a timm ``features_only`` model."""
    returns = getattr(backbone, "return_layers", None)
    if isinstance(returns, dict):  # FeatureListNet: flattened children, listed in order
        return backbone[list(returns)[index]]
    return backbone.get_submodule(backbone.feature_info.module_name()[index])


class TwoStreamLandmark(Detector):
    """RGB backbone (any timm model with ``features_only``, random init) + landmark heatmaps,
    fused per ``fusion``; logits from the pooled deepest map (and, for ``late``, the landmark
    stream's pooled vector); optional mask head.

    ``batch.images``: the transform's output (``raw``: ImageNet-normalised RGB, 3 channels);
    ``batch.landmarks`` ``[B, K, 2]`` and ``batch.landmarks_found`` ``[B]`` (rows without a face
    get empty heatmaps).
    """

    batch_inputs = ("landmarks",)  # a plain image tensor is not enough to call it

    def __init__(self, num_classes: int = 3, backbone: str = "resnet18", fusion: str = "mid",
                 heatmap: str = "regions", sigma: float = 0.01, landmark_width: int = 32,
                 mask_head: bool = False, dropout: float = 0.2, bce_weight: float = 1.0,
                 dice_weight: float = 1.0) -> None:
        super().__init__()
        import timm

        if fusion not in FUSIONS:
            raise FbenchError(f"unknown fusion {fusion!r}.",
                              "use early (heatmaps as input channels), mid (landmark features "
                              "added at the stride-8 stage) or late (pooled vectors "
                              "concatenated).")
        if not 0.0 < float(sigma) <= 0.2:
            raise FbenchError(f"sigma={sigma!r} must lie in (0, 0.2]: the Gaussian's width as a "
                              "fraction of the image side.", "the default is 0.01.")
        if not isinstance(landmark_width, int) or landmark_width < 1:
            raise FbenchError(f"landmark_width must be a positive integer, got "
                              f"{landmark_width!r}.")
        if not 0.0 <= dropout < 1.0:
            raise FbenchError(f"dropout must be in [0, 1), got {dropout}.")
        if min(bce_weight, dice_weight) < 0:
            raise FbenchError("loss weights must be >= 0.")
        self.fusion = fusion
        self.heatmap = heatmap
        self.sigma = float(sigma)
        self.mask_head = bool(mask_head)
        self.weights = {"bce": float(bce_weight), "dice": float(dice_weight)}
        heat_channels = channels(heatmap)
        self.register_buffer("groups", group_matrix(heatmap), persistent=False)

        in_chans = 3 + heat_channels if fusion == "early" else 3
        try:
            self.backbone = timm.create_model(backbone, pretrained=False, features_only=True,
                                              in_chans=in_chans)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise FbenchError(f"backbone {backbone!r} cannot be built as a timm feature "
                              f"extractor ({exc}).",
                              "name a timm model with features_only support, e.g. resnet18, "
                              "resnet34, efficientnet_b0, convnext_atto.") from None
        info = self.backbone.feature_info
        feat_channels, reductions = info.channels(), info.reduction()

        self.landmarks: LandmarkStream | None = None
        self.project: nn.Module | None = None
        self._pending: torch.Tensor | None = None
        if fusion == "mid":
            stage = max(i for i, r in enumerate(reductions) if r <= MID_STRIDE)
            levels = max(1, reductions[stage].bit_length() - 1)
            self.landmarks = LandmarkStream(heat_channels, levels, landmark_width)
            self.project = nn.Sequential(
                nn.Conv2d(self.landmarks.channels, feat_channels[stage], 1, bias=False),
                nn.BatchNorm2d(feat_channels[stage]))
            # The BN scale starts at 0: the model starts as the RGB backbone alone and lets the
            # landmark features in as far as they help (its gradient is not 0, so it learns);
            # at a scale of 1 they would start as loud as the RGB features, half of them from
            # images without a face, which slowed learning in short runs.
            nn.init.zeros_(self.project[1].weight)
            # A forward hook adds the landmark features to the stage's output, so the rest of
            # the (unmodified, any-architecture) timm backbone runs on the fused map.
            _stage_module(self.backbone, stage).register_forward_hook(self._inject)
        elif fusion == "late":
            self.landmarks = LandmarkStream(heat_channels, 5, landmark_width)

        pooled = feat_channels[-1] + (self.landmarks.channels if fusion == "late" else 0)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(pooled, num_classes)
        self.decoder: MaskDecoder | None = None
        if self.mask_head:
            keep = [c for c, r in zip(feat_channels, reductions, strict=True) if r >= 4]
            self.decoder = MaskDecoder(keep, heat_channels)
        self._decoder_levels = [i for i, r in enumerate(reductions) if r >= 4]

    def _inject(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
        extra = self._pending
        if extra is None:
            return None
        if extra.shape[-2:] != output.shape[-2:]:  # odd input sizes round differently
            extra = F.interpolate(extra, size=output.shape[-2:], mode="bilinear",
                                  align_corners=False)
        return output + extra.to(output.dtype)

    def render(self, batch: Batch, size: tuple[int, int]) -> torch.Tensor:
        """The batch's landmark heatmaps ``[B, C, H, W]`` (no gradient: landmarks are data)."""
        if batch.landmarks is None:
            raise FbenchError("two-stream-landmark needs facial landmarks, and the batch has "
                              "none.", "prepare them once with `fbench data landmarks DATASET`;"
                              " fbench run then attaches them.")
        sigma_px = max(self.sigma * min(size), 0.5)  # below half a pixel a point can vanish
        found = batch.landmarks_found
        if found is None:  # a batch built by hand: the cache's all-zero points mean no face
            found = batch.landmarks.flatten(1).any(dim=1)
        with torch.no_grad():
            return render_heatmaps(batch.landmarks, self.groups, size, sigma_px, found)

    def forward(self, batch: Batch) -> DetectorOutput:
        images = batch.images
        if images.shape[1] != 3:
            raise FbenchError(f"two-stream-landmark expects 3-channel images from the "
                              f"transform, got {images.shape[1]}.", "use --transform raw.")
        size = (int(images.shape[-2]), int(images.shape[-1]))
        heat = self.render(batch, size).to(images.dtype)
        lm_pooled = None
        if self.fusion == "early":
            features = self.backbone(torch.cat([images, heat], dim=1))
        elif self.fusion == "mid":
            assert self.landmarks is not None and self.project is not None
            self._pending = self.project(self.landmarks(heat))
            try:
                features = self.backbone(images)
            finally:
                self._pending = None
        else:
            assert self.landmarks is not None
            features = self.backbone(images)
            lm_pooled = F.adaptive_avg_pool2d(self.landmarks(heat), 1).flatten(1)
        pooled = F.adaptive_avg_pool2d(features[-1], 1).flatten(1)
        if lm_pooled is not None:
            pooled = torch.cat([pooled, lm_pooled.to(pooled.dtype)], dim=1)
        logits = self.fc(self.dropout(pooled))
        if self.decoder is None:
            return DetectorOutput(logits=logits)
        mask_logits = self.decoder([features[i] for i in self._decoder_levels], heat, size)
        return DetectorOutput(logits=logits, mask=torch.sigmoid(mask_logits.float()),
                              aux={"mask_logits": mask_logits})

    def loss(self, output: DetectorOutput, batch: Batch) -> dict[str, torch.Tensor]:
        assert batch.labels is not None
        terms = {"ce": F.cross_entropy(output.logits.float(), batch.labels)}
        if self.decoder is None:
            return terms
        if batch.masks is None:
            raise FbenchError("two-stream-landmark with mask_head=true needs forgery masks, and "
                              "this dataset has none.",
                              "use a dataset with masks (e.g. synthetic, seg_2), or "
                              "--set mask_head=false.")
        from fbench_blocks.losses import mask_losses

        masks = mask_losses(output.aux["mask_logits"], batch.masks, batch.has_mask)
        terms.update({k: v * self.weights[k] for k, v in masks.items()})
        return terms
