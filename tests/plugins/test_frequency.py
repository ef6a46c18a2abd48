"""The frequency transforms (dct, dft, dft-legacy) and the reusable DCT maths behind them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.fft import dctn

import fbench
from fbench import FbenchError
from fbench_blocks.dct import (
    dct_2d,
    dct_basis_2d,
    dct_matrix,
    idct_2d,
    sliding_dct_2d,
)
from fbench_frequency.dft import ccs_packed_dft

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(3, 1, 1)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(3, 1, 1)


def test_transforms_are_registered_with_fit_only_for_dct():
    assert {"dct", "dft", "dft-legacy"} <= set(fbench.list_transforms())
    from fbench.plugins.registry import get_registry

    reg = get_registry()
    assert reg.get("transform", "dct").fit_on_train
    assert not reg.get("transform", "dft").fit_on_train
    assert not reg.get("transform", "dft-legacy").fit_on_train
    assert reg.provider("transform", "dct") == "frequency"


@pytest.mark.parametrize("n", [1, 8, 10, 224])
def test_dct_matrix_is_orthonormal(n):
    d = dct_matrix(n, dtype=torch.float64)
    assert torch.allclose(d @ d.T, torch.eye(n, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (1, 3, 32, 32), (4, 5)])
def test_dct_2d_equals_scipy_dctn_ortho_and_inverts(shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float64)
    expected = dctn(x, type=2, norm="ortho", axes=(-2, -1))
    got = dct_2d(torch.from_numpy(x))
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-10)
    np.testing.assert_allclose(idct_2d(got).numpy(), x, atol=1e-10)


def test_dct_2d_in_float32_matches_scipy_at_299_px():
    x = np.random.default_rng(1).random((1, 3, 299, 299)).astype(np.float32)
    expected = dctn(x.astype(np.float64), type=2, norm="ortho", axes=(-2, -1))
    np.testing.assert_allclose(dct_2d(torch.from_numpy(x)).numpy(), expected, atol=2e-4)


def test_dct_2d_keeps_float32_for_half_inputs_and_under_autocast():
    x = torch.rand(1, 3, 16, 16)
    assert dct_2d(x.bfloat16()).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = dct_2d(x)
    assert y.dtype == torch.float32
    assert torch.allclose(y, dct_2d(x))


def test_dct_used_first_under_inference_mode_still_trains_later():
    with torch.inference_mode():
        dct_2d(torch.rand(1, 3, 17, 17))  # caches the 17-px matrix
    x = torch.rand(1, 3, 17, 17, requires_grad=True)
    idct_2d(dct_2d(x)).sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x), atol=1e-5)


def test_sliding_dct_equals_the_dct_of_every_window():
    x = torch.randn(2, 2, 13, 12, dtype=torch.float64)
    s, stride, pad = 4, 2, 1
    got = sliding_dct_2d(x, s, stride, pad, basis=dct_basis_2d(s, dtype=torch.float64))
    patches = torch.nn.functional.unfold(x, s, padding=pad, stride=stride)  # [B, C·s², L]
    h = (13 + 2 * pad - s) // stride + 1
    w = (12 + 2 * pad - s) // stride + 1
    windows = patches.reshape(2, 2, s, s, h * w).permute(0, 1, 4, 2, 3)    # [B, C, L, s, s]
    expected = dct_2d(windows).reshape(2, 2, h, w, s * s).permute(0, 1, 4, 2, 3)
    assert torch.allclose(got, expected.reshape(2, 2 * s * s, h, w), atol=1e-10)


def _log_dct_numpy(x: np.ndarray) -> np.ndarray:
    return np.log(np.abs(dctn(x.astype(np.float64), type=2, norm="ortho", axes=(-2, -1))) + 1e-12)


def test_dct_transform_standardises_with_training_statistics():
    rng = np.random.default_rng(2)
    train = [rng.random((3, 3, 16, 16)).astype(np.float32) for _ in range(3)]
    t = fbench.create_transform("dct")
    t.fit(torch.from_numpy(b) for b in train)
    logs = _log_dct_numpy(np.concatenate(train))
    np.testing.assert_allclose(t.mean.numpy(), logs.mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(t.std.numpy(), logs.std(axis=0, ddof=1), rtol=1e-4, atol=1e-5)
    assert t.mean.shape == (3, 16, 16) and t.mean.dtype == torch.float32
    y = t(torch.from_numpy(np.concatenate(train))).double()
    assert y.mean(dim=0).abs().max() < 1e-4
    assert torch.allclose(y.std(dim=0), torch.ones_like(y[0]), atol=1e-3)


def test_dct_state_loads_into_a_fresh_unfitted_transform():
    x = torch.rand(4, 3, 12, 12)
    fitted = fbench.create_transform("dct")
    fitted.fit([x[:2], x[2:]])
    state = fitted.state_dict()
    assert set(state) == {"mean", "std"}  # stored with checkpoints, not trained
    assert not list(fitted.parameters())
    fresh = fbench.create_transform("dct")
    assert not fresh.fitted
    with pytest.raises(FbenchError, match="no training statistics"):
        fresh(x)
    fresh.load_state_dict(state)
    assert fresh.fitted
    assert torch.equal(fresh(x), fitted(x))
    with pytest.raises(FbenchError, match="fitted on"):
        fresh(torch.rand(1, 3, 8, 8))


def test_dct_fit_reads_only_fit_batches_and_grayscale_gives_three_equal_channels():
    def batches():
        yield torch.rand(2, 3, 8, 8)
        yield torch.rand(2, 3, 8, 8)
        raise AssertionError("read past fit_batches")

    t = fbench.create_transform("dct", grayscale=True, fit_batches=2)
    t.fit(batches())
    assert t.mean.shape == (1, 8, 8)
    y = t(torch.rand(2, 3, 8, 8))
    assert y.shape == (2, 3, 8, 8)
    assert torch.equal(y[:, 0], y[:, 2])
    raw = fbench.create_transform("dct", standardize=False)
    raw.fit([torch.rand(1, 3, 8, 8)])  # nothing to fit
    x = torch.rand(1, 3, 8, 8)
    np.testing.assert_allclose(raw(x).numpy(), _log_dct_numpy(x.numpy()), atol=1e-4)


def test_dft_is_the_centred_log_magnitude_spectrum():
    x = torch.rand(2, 3, 10, 9, generator=torch.Generator().manual_seed(4))
    y = fbench.create_transform("dft")(x)
    spectrum = np.fft.fftshift(np.fft.fft2(x.numpy(), norm="ortho"), axes=(-2, -1))
    # Compared as magnitudes: a near-zero coefficient's log is ill-conditioned in float32.
    np.testing.assert_allclose(np.exp(y.numpy()), np.abs(spectrum), rtol=1e-4, atol=1e-5)
    gray = fbench.create_transform("dft", grayscale=True)(x)
    assert gray.shape == x.shape and torch.equal(gray[:, 0], gray[:, 1])


@pytest.mark.parametrize("shape", [(16, 16), (7, 9), (6, 5)])
def test_ccs_packing_equals_opencv_dft(shape):
    cv2 = pytest.importorskip("cv2")
    a = np.random.default_rng(3).random(shape).astype(np.float32)
    np.testing.assert_allclose(ccs_packed_dft(torch.from_numpy(a)).numpy(), cv2.dft(a),
                               rtol=1e-5, atol=1e-4)


def test_dft_legacy_is_what_the_thesis_fed_its_resnet():
    cv2 = pytest.importorskip("cv2")
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(5))
    y = fbench.create_transform("dft-legacy")(x)
    assert y.shape == x.shape
    for i in range(2):
        normalised = (x[i].numpy() - IMAGENET_MEAN) / IMAGENET_STD
        for c in range(3):
            np.testing.assert_allclose(y[i, c].numpy(), cv2.dft(normalised[c]),
                                       rtol=1e-5, atol=1e-3)
    plain = fbench.create_transform("dft-legacy", normalize=False)(x)
    np.testing.assert_allclose(plain[0, 0].numpy(), cv2.dft(x[0, 0].numpy()), atol=1e-4)


def test_dct_transform_trains_a_detector_end_to_end(tmp_path):
    """The engine fits the transform on train, stores it in the checkpoint, and reloads it."""
    run = fbench.run(detector="resnet18", dataset="synthetic", transform="dct", epochs=1,
                     batch_size=16, seed=0, input_size=16, out=str(tmp_path),
                     dataset_options={"n_per_class": 12, "image_size": 16})
    assert run.status["state"] == "completed"
    state = torch.load(run.path / "checkpoints" / "best.pt", map_location="cpu",
                       weights_only=True)["transform"]
    assert state["mean"].shape == (3, 16, 16)
    fresh = fbench.create_transform("dct")
    fresh.load_state_dict(state)
    assert fresh.fitted
