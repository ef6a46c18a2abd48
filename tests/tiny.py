"""Shared by tests that need a detector which trains in seconds."""

from __future__ import annotations


def blind_detector(num_classes: int = 3, spare: int = 0):
    """Ignores its image: a learnable bias is every image's logits, so it predicts one class
    for all of them (a run of it always collapses). ``spare`` is unused: it makes
    configurations that score exactly alike."""
    import torch
    from torch import nn

    class Blind(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(num_classes))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.new_zeros(len(x), 1) + self.bias

    return Blind()


def tiny_cnn(num_classes: int = 3, width: int = 4, depth: int = 1):
    """``depth`` conv-ReLU layers, global pooling, a linear head."""
    from torch import nn

    layers, channels = [], 3
    for _ in range(depth):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, num_classes))


def tiny_plugin(name: str, input_size: int = 32, width: int = 4, depth: int = 1):
    """A plugin object that registers one tiny_cnn detector called ``name`` (register it with
    ``fbench.registered(tiny_plugin(...))`` for a test's duration)."""
    import fbench

    class TinyPlugin:
        @fbench.hookimpl
        def register_detectors(self, register):
            register(fbench.DetectorSpec(
                name=name, summary="a tiny test CNN", input_size=input_size,
                factory=lambda num_classes=3: tiny_cnn(num_classes, width, depth)))

    return TinyPlugin()


LANDMARKS = 468  # the face mesh's points: what a run with landmarks hands a detector


def detector_batch(spec, size: int, n: int = 2):
    """``n`` random images through ``spec``'s default transform (fitted where it fits on
    train), with what any detector may need: labels of different classes, masks, landmarks."""
    import torch

    import fbench
    from fbench.plugins.registry import get_registry

    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(n, 3, size, size, generator=g)
    transform = fbench.create_transform(spec.transform)
    if get_registry().get("transform", spec.transform).fit_on_train:
        transform.fit([rgb])
    with torch.no_grad():
        images = transform(rgb)
    return fbench.Batch(images=images, rgb=rgb, labels=torch.arange(n) % 3,
                        masks=(torch.rand(n, 1, size, size, generator=g) > 0.5).float(),
                        has_mask=torch.ones(n, dtype=torch.bool),
                        landmarks=0.3 + 0.4 * torch.rand(n, LANDMARKS, 2, generator=g),
                        landmarks_found=torch.ones(n, dtype=torch.bool), index=torch.arange(n))
