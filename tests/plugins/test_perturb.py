"""The perturbation transforms (jpeg, blur, noise, resize, crop): registered through the plugin
door, shape- and range-preserving, monotone in their level, seeded, geometry-consistent, and
refusing bad levels with the accepted range."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fbench
from fbench import FbenchError

NAMES = ("jpeg", "blur", "noise", "resize", "crop")
LEVEL = {"jpeg": "quality", "blur": "sigma", "noise": "sigma", "resize": "factor",
         "crop": "fraction"}
MILD = {"jpeg": 90, "blur": 1.0, "noise": 0.05, "resize": 0.5, "crop": 0.8}


def _images(b: int = 2, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth colour gradients plus texture: in [0, 1], with both low and high frequencies."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([xx, yy, (xx + yy) / 2])[None].repeat(b, 1, 1, 1)
    return (0.7 * base + 0.3 * torch.rand(b, 3, h, w, generator=g)).clamp(0, 1)


def test_registered_as_transforms_of_the_perturb_plugin():
    from fbench.plugins.registry import get_registry
    from fbench.plugins.specs import factory_options

    reg = get_registry()
    assert set(NAMES) <= set(fbench.list_transforms())
    for name in NAMES:
        spec = reg.get("transform", name)
        assert reg.provider("transform", name) == "perturb"
        assert not spec.fit_on_train
        assert spec.geometric == (name == "crop")  # the one that moves pixels
        options = list(factory_options(spec.factory))
        # the level is the first option (what `--perturb name:L1,L2` sets), then the seed
        assert options[0] == LEVEL[name] and "seed" in options


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [(32, 32), (31, 45)])
def test_shape_and_range_are_kept(name, size):
    # dtype and device (and fit/geometry as the spec declares) are the contract test's
    x = _images(3, *size)
    y = fbench.create_transform(name, **{LEVEL[name]: MILD[name]})(x)
    assert y.shape == x.shape
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert not torch.equal(y, x)  # a mild level still changes the images


@pytest.mark.parametrize(("name", "level"), [("blur", 0), ("noise", 0), ("resize", 1),
                                             ("crop", 1)])
def test_neutral_level_is_the_identity(name, level):
    x = _images()
    assert torch.equal(fbench.create_transform(name, **{LEVEL[name]: level})(x), x)


def _error(name: str, level: float) -> float:
    x = _images(2, 48, 48)
    y = fbench.create_transform(name, **{LEVEL[name]: level})(x)
    return float((y - x).abs().mean())


@pytest.mark.parametrize(("name", "weak", "strong"), [
    ("jpeg", 95, 10), ("blur", 0.5, 2.0), ("noise", 0.02, 0.2), ("resize", 0.75, 0.25),
    ("crop", 0.9, 0.6)])
def test_stronger_level_changes_the_image_more(name, weak, strong):
    assert _error(name, strong) > _error(name, weak) > 0


def test_jpeg_quality_100_is_nearly_lossless_and_10_is_not():
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    wave = 0.5 + 0.25 * torch.sin(12 * xx) * torch.cos(9 * yy)
    x = torch.stack([wave, xx, yy])[None]  # smooth: chroma subsampling loses little
    q100 = fbench.create_transform("jpeg", quality=100)(x)
    q10 = fbench.create_transform("jpeg", quality=10)(x)
    assert float((q100 - x).abs().mean()) < 0.01
    assert float((q10 - x).abs().mean()) > 3 * float((q100 - x).abs().mean())
    # 8-bit output, as a decoded JPEG file
    assert torch.allclose(q10 * 255, (q10 * 255).round(), atol=1e-4)


def test_jpeg_keeps_colours_where_they_are():
    # a red left half and a blue right half stay red and blue: channels are not swapped
    x = torch.zeros(1, 3, 32, 32)
    x[:, 0, :, :16] = 1.0
    x[:, 2, :, 16:] = 1.0
    y = fbench.create_transform("jpeg", quality=50)(x)
    assert float(y[0, 0, :, :12].mean()) > 0.8 and float(y[0, 2, :, :12].mean()) < 0.2
    assert float(y[0, 2, :, 20:].mean()) > 0.8 and float(y[0, 0, :, 20:].mean()) < 0.2


@pytest.mark.parametrize("quality", [95, 50, 10])
def test_jpeg_equals_opencv_libjpeg_image_by_image(quality):
    """The batched torchvision path gives the pixels of saving each image with OpenCV and
    reading it back (what the perturbation did before, one image at a time)."""
    import cv2
    import numpy as np

    g = torch.Generator().manual_seed(quality)
    x = torch.rand(4, 3, 40, 56, generator=g)
    x = torch.nn.functional.avg_pool2d(x, 3, 1, 1)  # texture libjpeg must really quantise
    y = fbench.create_transform("jpeg", quality=quality)(x)
    for img, out in zip(x, y, strict=True):
        rgb = (img.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        ok, data = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]),
                                [int(cv2.IMWRITE_JPEG_QUALITY), quality])
        ref = cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1]
        got = (out.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        assert ok and np.abs(got.astype(int) - ref.astype(int)).max() <= 1


def test_blur_keeps_a_flat_image_and_removes_a_checkerboard():
    flat = torch.full((1, 3, 16, 16), 0.4)
    blur = fbench.create_transform("blur", sigma=2.0)
    assert torch.allclose(blur(flat), flat, atol=1e-6)
    checker = ((torch.arange(16)[:, None] + torch.arange(16)[None]) % 2).float()
    checker = checker.expand(1, 3, 16, 16).contiguous()
    assert float(blur(checker).std()) < 0.05 * float(checker.std())
    # a kernel wider than the image still works (replicated edges)
    assert blur(torch.rand(1, 3, 4, 4)).shape == (1, 3, 4, 4)


def test_resize_halves_the_resolution():
    checker = ((torch.arange(32)[:, None] + torch.arange(32)[None]) % 2).float()
    checker = checker.expand(1, 3, 32, 32).contiguous()
    y = fbench.create_transform("resize", factor=0.5)(checker)
    # the finest pattern cannot survive half the sampling rate
    assert torch.allclose(y, torch.full_like(y, 0.5), atol=1e-5)


def test_noise_is_seeded_and_has_the_asked_strength():
    x = torch.full((4, 3, 64, 64), 0.5)
    a = fbench.create_transform("noise", sigma=0.05, seed=3)(x)
    b = fbench.create_transform("noise", sigma=0.05, seed=3)(x)
    c = fbench.create_transform("noise", sigma=0.05, seed=4)(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert abs(float((a - x).std()) - 0.05) < 0.005
    module = fbench.create_transform("noise", sigma=0.05, seed=3)
    first = module(x)
    assert not torch.equal(module(x), first)  # a sequence: the next batch gets new noise
    module.reset()
    assert torch.equal(module(x), first)


def test_crop_zooms_into_the_centre_and_maps_masks_and_points_alike():
    crop = fbench.create_transform("crop", fraction=0.5)
    h = w = 32
    x = torch.zeros(1, 3, h, w)
    x[:, :, 12:20, 12:20] = 1.0  # a square around the centre, 8 px wide
    y = crop(x)
    # kept fraction 0.5: the square doubles to 16 px
    assert abs(float((y[0, 0] > 0.5).sum()) - 16 * 16) <= 2 * 16
    mask = (x[:, :1] > 0.5).float()
    m = crop.map_masks(mask)
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(m[0, 0] > 0.5, y[0, 0] > 0.5)
    # the square's corner (12, 12) of 32 lies at the crop's (4, 4) of 16, i.e. (8, 8) of 32
    pts = torch.tensor([[[12 / w, 12 / h], [0.5, 0.5]]])
    mapped = crop.map_points(pts, (h, w))
    np.testing.assert_allclose(mapped[0].numpy(), [[8 / w, 8 / h], [0.5, 0.5]], atol=1e-6)


@pytest.mark.parametrize(("name", "bad"), [("jpeg", 0), ("jpeg", 101), ("blur", -1),
                                           ("noise", 2), ("resize", 0), ("resize", 1.5),
                                           ("crop", 0)])
def test_bad_levels_are_refused_with_the_range(name, bad):
    with pytest.raises(FbenchError) as err:
        fbench.create_transform(name, **{LEVEL[name]: bad})
    text = err.value.format_message()
    assert LEVEL[name] in text and f"--perturb {name}:" in text


@pytest.mark.parametrize("bad", [50.5, "high"])
def test_a_level_of_the_wrong_type_is_refused_by_its_type(bad):
    with pytest.raises(FbenchError, match="option quality must be an integer"):
        fbench.create_transform("jpeg", quality=bad)


def test_perturbations_hold_no_state_for_a_checkpoint():
    for name in NAMES:
        assert fbench.create_transform(name).state_dict() == {}
