"""An example fbench plugin: registers the detector ``tiny-cnn``.

Keep module import light (no torch at import time) so ``fbench list`` stays fast; build the
model inside the factory.
"""

from __future__ import annotations

import fbench


def make_tiny_cnn(num_classes: int = 3, width: int = 16, depth: int = 3):
    """A plain CNN: ``depth`` conv-BN-ReLU-pool stages of growing ``width``, then a linear head.

    The harness wraps any module mapping images ``[B, 3, H, W]`` to logits, so a plugin need
    not know about fbench's Batch type unless it wants masks or its own loss."""
    from torch import nn

    layers, channels = [], 3
    for i in range(depth):
        out = width * 2**i
        layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                   nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        channels = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


@fbench.hookimpl
def register_detectors(register):
    register(fbench.DetectorSpec(
        name="tiny-cnn",
        summary="Example third-party detector: a small plain CNN",
        factory=make_tiny_cnn,
        family="example",
        input_size=64,
        defaults={"lr": 3e-3, "epochs": 4},
    ))
