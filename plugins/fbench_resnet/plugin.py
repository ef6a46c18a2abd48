"""Entry point of the ResNet18 baseline: the smallest built-in detector, and the one to copy
when writing a new one."""

from __future__ import annotations

from fbench import DetectorSpec, hookimpl


def make_resnet18(num_classes: int = 3, pretrained_path: str | None = None,
                  drop_rate: float = 0.0):
    """timm's resnet18, trained from scratch unless ``pretrained_path`` names a local
    state dict (loaded with ``weights_only=True``; the classifier head is re-initialised
    when its shape differs)."""
    from fbench_resnet.model import build_resnet

    return build_resnet("resnet18", num_classes, pretrained_path, drop_rate)


@hookimpl
def register_detectors(register) -> None:
    register(DetectorSpec(
        name="resnet18",
        summary="ResNet18 (timm) classifier on the transformed image; the thesis's baseline",
        factory=make_resnet18,
        family="resnet",
        input_size=224,
        transform="raw",
        defaults={"lr": 1e-3, "batch_size": 64, "epochs": 8},
        traits={"backbone": "ResNet18", "head": "–", "fusion": "–", "multi_task": "no"},
        # the thesis's final table (eval split of seg_2): a reference, not a result
        references={"thesis, seg_2": {"accuracy": 83.04, "macro_f1": 87.23, "params_m": 11.4}},
    ))
