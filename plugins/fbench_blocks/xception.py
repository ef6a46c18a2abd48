"""The Xception backbone of every F3Net stream: timm's ``legacy_xception`` (the Keras-ported
Xception the public F3Net code used), with an adapted stem and, at the thesis's depth, the
middle-flow blocks 4–7 removed. Run stage by stage so MixBlocks can sit between blocks.

Its weights start as the thesis's did (``init="reference"``) unless ``init="timm"``."""

from __future__ import annotations

import torch
from torch import nn

from fbench import FbenchError

DEPTHS = ("thesis", "full")
INITS = ("reference", "timm")
"""``reference``: PyTorch's default initialisation of every layer, which the thesis's Xception
got (its ``xception.py`` has the Kaiming loop commented out, and its 12- and 6-channel stems are
fresh ``nn.Conv2d``); ``timm``: timm's ``legacy_xception`` loop, Kaiming-normal fan-out on every
convolution, which gives the depthwise 3 × 3 convolutions a far smaller scale (std
``sqrt(2 / (9·C))`` instead of ``1 / sqrt(27)``)."""
THESIS_REMOVED = (4, 5, 6, 7)
"""Middle-flow blocks the thesis commented out of its Xception, in every variant."""

BLOCK_CHANNELS = {1: 128, 2: 256, 3: 728, **{k: 728 for k in range(4, 12)}, 12: 1024}
STEM, EXIT = 0, 13
"""Stage points: 0 is after the stem (conv1, conv2), k after block k, 13 after the exit flow
(conv3, conv4: 2048 channels, ReLU'd)."""

_STEM = ("conv1", "bn1", "act1", "conv2", "bn2", "act2")
_EXIT = ("conv3", "bn3", "act3", "conv4", "bn4", "act4")


def check_init(init: str) -> None:
    if init not in INITS:
        raise FbenchError(f"unknown init {init!r}.",
                          "use init=reference (PyTorch's default, as the thesis's Xception) or "
                          "init=timm (Kaiming fan-out on every convolution).")


def reset_to_default_init(module: nn.Module) -> None:
    """Give every convolution, linear layer and batch norm in ``module`` PyTorch's default
    initialisation again (what a freshly built ``nn.Conv2d`` etc. gets)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear | nn.BatchNorm2d):
            m.reset_parameters()


def kept_blocks(depth: str) -> tuple[int, ...]:
    if depth not in DEPTHS:
        raise FbenchError(f"unknown depth {depth!r}.", "use depth=thesis (blocks 4-7 removed, "
                          "as the thesis) or depth=full (the paper's Xception).")
    removed = THESIS_REMOVED if depth == "thesis" else ()
    return tuple(k for k in range(1, 13) if k not in removed)


class XceptionBackbone(nn.Module):
    """Xception features ``[B, in_chans, H, W]`` → ``[B, 2048, h, w]`` (no pooling, no head).

    ``stem_stride=1`` is the LFS stream's stem (its input is already at half resolution).
    ``init``: see :data:`INITS`.
    Module names equal timm's ``legacy_xception`` (``conv1``, ``block8``, ``conv4``, …), so its
    ImageNet state dict loads with :meth:`load_xception_state`.
    """

    def __init__(self, in_chans: int = 3, depth: str = "thesis", stem_stride: int = 2,
                 init: str = "reference") -> None:
        super().__init__()
        import timm

        check_init(init)
        self.depth = depth
        self.init = init
        self.blocks = kept_blocks(depth)
        net = timm.create_model("legacy_xception", pretrained=False, num_classes=0,
                                in_chans=in_chans)
        if stem_stride != 2:
            conv1 = nn.Conv2d(in_chans, 32, 3, stem_stride, 0, bias=False)
            nn.init.kaiming_normal_(conv1.weight, mode="fan_out", nonlinearity="relu")
            net.conv1 = conv1
        for name in _STEM + tuple(f"block{k}" for k in self.blocks) + _EXIT:
            self.add_module(name, getattr(net, name))
        if init == "reference":
            # After the modules are taken: timm's loop has run on them, and this undoes it.
            reset_to_default_init(self)
        self.in_chans = in_chans
        self.stem_stride = stem_stride
        self.num_features = 2048

    def channels_at(self, point: int) -> int:
        """Channels of the feature map at a stage point (see ``STEM``/``EXIT``)."""
        if point == STEM:
            return 64
        if point == EXIT:
            return self.num_features
        self._check_point(point)
        return BLOCK_CHANNELS[point]

    def _check_point(self, point: int) -> None:
        if point not in (STEM, EXIT) and point not in self.blocks:
            raise FbenchError(
                f"Xception at depth={self.depth} has no block {point}.",
                f"choose among blocks {', '.join(map(str, self.blocks))}.")

    def forward_between(self, x: torch.Tensor, start: int = -1, stop: int = EXIT) -> torch.Tensor:
        """Run the stages after point ``start`` up to and including point ``stop`` (``-1``:
        from the input image)."""
        if start >= 0:
            self._check_point(start)
        self._check_point(stop)
        if start < STEM <= stop:
            for name in _STEM:
                x = getattr(self, name)(x)
        for k in self.blocks:
            if start < k <= stop:
                x = getattr(self, f"block{k}")(x)
        if start < EXIT <= stop:
            for name in _EXIT:
                x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_between(x)

    def load_xception_state(self, state: dict[str, torch.Tensor]) -> int:
        """Load an Xception state dict (e.g. timm's ImageNet ``legacy_xception``); tensors of
        removed blocks and the classifier are ignored. A 3-channel ``conv1`` is spread over a
        wider stem as the public F3Net code did (each RGB group gets ``w · 3 / in_chans``).
        Returns how many tensors were loaded."""
        own = self.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        w = state.get("conv1.weight")
        if (isinstance(w, torch.Tensor) and w.dim() == 4 and w.shape[1] == 3
                and own["conv1.weight"].shape[1] != 3):
            target = own["conv1.weight"]
            reps = -(-target.shape[1] // 3)
            spread = w.repeat(1, reps, 1, 1)[:, :target.shape[1]] * (3.0 / target.shape[1])
            if spread.shape == target.shape:
                usable["conv1.weight"] = spread
        self.load_state_dict(usable, strict=False)
        return len(usable)

    def extra_repr(self) -> str:
        return (f"in_chans={self.in_chans}, depth={self.depth!r}, stem_stride={self.stem_stride}, "
                f"init={self.init!r}, blocks={self.blocks}")
