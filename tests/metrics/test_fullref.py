"""PSNR / SSIM / MS-SSIM against skimage and brute-force numpy references, plus invariants."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.signal import correlate2d
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from facerestore import metrics
from facerestore.errors import InputError
from facerestore.metrics.color import rgb_to_gray_matlab, rgb_to_y_bt601
from facerestore.metrics.fullref import MS_SSIM_WEIGHTS, ms_ssim, psnr, ssim

SK_SSIM = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().double().cpu().numpy()


def _y_np(img: np.ndarray) -> np.ndarray:
    """(..., 3, H, W) -> (..., H, W): the BT.601 'MATLAB' Y formula, written out."""
    r, g, b = img[..., 0, :, :], img[..., 1, :, :], img[..., 2, :, :]
    return (16.0 + 65.481 * r + 128.553 * g + 24.966 * b) / 255.0


@pytest.fixture(scope="module")
def pairs(astronaut_tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A natural image pair (astronaut vs noisy, blurred-ish copy) and a random pair, 3 images of 96x80."""
    g = torch.Generator().manual_seed(0)
    nat = astronaut_tensor[..., 100:196, 200:280]
    noisy = (nat + 0.05 * torch.randn(nat.shape, generator=g)).clamp(0, 1)
    rnd_a = torch.rand(2, 3, 96, 80, generator=g)
    rnd_b = (rnd_a + 0.2 * torch.rand(2, 3, 96, 80, generator=g)).clamp(0, 1)
    return torch.cat([noisy, rnd_b]), torch.cat([nat, rnd_a])


def test_psnr_matches_skimage(pairs):
    pred, target = pairs
    ours = _np(psnr(pred, target))
    ref = [peak_signal_noise_ratio(_np(t), _np(p), data_range=1.0) for p, t in zip(pred, target)]
    np.testing.assert_allclose(ours, ref, rtol=1e-10)


def test_psnr_y_channel_and_crop(pairs):
    pred, target = pairs
    ours = _np(psnr(pred, target, crop_border=4, y_channel=True))
    p_np, t_np = _y_np(_np(pred))[:, 4:-4, 4:-4], _y_np(_np(target))[:, 4:-4, 4:-4]
    ref = [peak_signal_noise_ratio(t, p, data_range=1.0) for p, t in zip(p_np, t_np)]
    np.testing.assert_allclose(ours, ref, rtol=1e-6)  # Y computed from float32 inputs on both sides


def test_psnr_identical_is_inf(pairs):
    _, target = pairs
    assert torch.isinf(psnr(target, target)).all()


def test_ssim_matches_skimage_rgb(pairs):
    pred, target = pairs
    ours = _np(ssim(pred, target))
    ref = [structural_similarity(_np(t), _np(p), data_range=1.0, channel_axis=0, **SK_SSIM)
           for p, t in zip(pred, target)]
    np.testing.assert_allclose(ours, ref, atol=1e-9)


def test_ssim_matches_skimage_y_with_crop(pairs):
    pred, target = pairs
    ours = _np(ssim(pred, target, crop_border=3, y_channel=True))
    p_np, t_np = _y_np(_np(pred))[:, 3:-3, 3:-3], _y_np(_np(target))[:, 3:-3, 3:-3]
    ref = [structural_similarity(t, p, data_range=1.0, **SK_SSIM) for p, t in zip(p_np, t_np)]
    np.testing.assert_allclose(ours, ref, atol=1e-7)


def test_ssim_natural_photo(astronaut_tensor):
    """The face region of the photo vs a quantised + shifted copy (a natural, non-random difference)."""
    x = astronaut_tensor[..., 32:288, 128:384]
    y = torch.roll(torch.round(x * 31) / 31, shifts=1, dims=-1)
    ref = structural_similarity(_np(x[0]), _np(y[0]), data_range=1.0, channel_axis=0, **SK_SSIM)
    assert float(ssim(y, x)[0]) == pytest.approx(ref, abs=1e-9)
    assert float(ssim(x, x)[0]) == pytest.approx(1.0, abs=1e-12)
    assert float(ssim(x, 1 - x)[0]) < 0  # anti-correlated images: SSIM is not clamped


def test_y_conversion_formula():
    x = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    np.testing.assert_allclose(_np(rgb_to_y_bt601(x))[:, 0], _y_np(_np(x)), rtol=1e-14)
    ends = rgb_to_y_bt601(torch.stack([torch.zeros(3, 1, 1), torch.ones(3, 1, 1)]).double())
    np.testing.assert_allclose(_np(ends).ravel(), [16 / 255, 235 / 255], rtol=1e-12)


def test_gray_matlab_formula():
    """MATLAB rgb2gray: first row of the inverse NTSC matrix, uint8 rounding half away from zero."""
    coef = np.linalg.inv(np.array([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.106, 1.703]]))[0]
    v = np.random.default_rng(2).integers(0, 256, size=(1, 3, 16, 16))
    got = _np(rgb_to_gray_matlab(torch.from_numpy(v / 255.0).float()))[0, 0] * 255
    want = np.floor(np.einsum("c,bchw->bhw", coef, v.astype(np.float64)) + 0.5)[0]
    np.testing.assert_array_equal(np.round(got), want)


# ---------------------------------------------------------------- MS-SSIM


def _ms_ssim_reference(a: np.ndarray, b: np.ndarray, method: str = "product") -> float:
    """Wang's msssim.m on one gray image pair, written with scipy (data range 1)."""
    x = np.arange(11) - 5.0
    g = np.exp(-(x**2) / (2 * 1.5**2))
    win = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    vals = []
    for level in range(5):
        f = [correlate2d(z, win, mode="valid") for z in (a, b, a * a, b * b, a * b)]
        mu1, mu2 = f[0], f[1]
        s1, s2, s12 = f[2] - mu1**2, f[3] - mu2**2, f[4] - mu1 * mu2
        cs = (2 * s12 + c2) / (s1 + s2 + c2)
        full = (2 * mu1 * mu2 + c1) / (mu1**2 + mu2**2 + c1) * cs
        vals.append((full if level == 4 else cs).mean())
        # imfilter(ones(2)/4, 'symmetric', 'same') then every second pixel
        ap, bp = (np.pad(z, ((0, 1), (0, 1)), mode="symmetric") for z in (a, b))
        a = (ap[:-1, :-1] + ap[1:, :-1] + ap[:-1, 1:] + ap[1:, 1:])[::2, ::2] / 4
        b = (bp[:-1, :-1] + bp[1:, :-1] + bp[:-1, 1:] + bp[1:, 1:])[::2, ::2] / 4
    w = np.array(MS_SSIM_WEIGHTS)
    if method == "product":
        return float(np.prod(np.array(vals) ** w))
    # msssim.m, method 'wtd_sum': weight = weight./sum(weight), then a weighted sum of the same means
    return float(np.sum(np.array(vals) * (w / w.sum())))


@pytest.mark.parametrize("method", ["product", "wtd_sum"])
@pytest.mark.parametrize("size", [(192, 200), (181, 177)])  # even, odd (symmetric border of the 2x2 filter)
def test_ms_ssim_matches_bruteforce(astronaut_tensor, size, method):
    h, w = size
    x = rgb_to_gray_matlab(astronaut_tensor[..., 150:150 + h, 160:160 + w])
    g = torch.Generator().manual_seed(3)
    y = (x + 0.03 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    ref = _ms_ssim_reference(_np(y[0, 0]), _np(x[0, 0]), method)
    assert float(ms_ssim(y, x, method=method)[0]) == pytest.approx(ref, abs=1e-10)


def test_ms_ssim_wtd_sum_module_and_errors(astronaut_tensor):
    x = astronaut_tensor[..., 40:232, 160:352]
    assert float(ms_ssim(x, x, method="wtd_sum")[0]) == pytest.approx(1.0, abs=1e-12)  # normalised weights
    g = torch.Generator().manual_seed(8)
    y = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    m = metrics.create("ms_ssim", method="wtd_sum")
    assert "wtd_sum" in repr(m)
    torch.testing.assert_close(m(y, x), ms_ssim(y, x, method="wtd_sum"), rtol=0, atol=0)
    assert not torch.allclose(m(y, x), ms_ssim(y, x))  # the two poolings really differ
    with pytest.raises(InputError, match="method"):
        ms_ssim(y, x, method="sum")
    with pytest.raises(InputError, match="method"):
        metrics.create("ms_ssim", method="sum")


def test_ms_ssim_identity_and_monotone_in_noise(astronaut_tensor):
    x = astronaut_tensor[..., 40:232, 160:352]
    assert float(ms_ssim(x, x)[0]) == pytest.approx(1.0, abs=1e-12)
    g = torch.Generator().manual_seed(4)
    n = torch.randn(x.shape, generator=g)
    scores = [float(ms_ssim((x + s * n).clamp(0, 1), x)[0]) for s in (0.01, 0.03, 0.1, 0.3)]
    assert all(a > b for a, b in itertools.pairwise(scores)), scores
    assert 0 < scores[-1] < scores[0] < 1


def test_ms_ssim_too_small():
    x = torch.rand(1, 3, 170, 300)
    with pytest.raises(InputError, match="at least 176"):
        ms_ssim(x, x)


# ---------------------------------------------------------------- modules, batching, dtypes, devices


@pytest.mark.parametrize("name,fn,kw", [
    ("psnr", psnr, {}), ("psnr_y", psnr, {"y_channel": True}),
    ("ssim", ssim, {}), ("ssim_y", ssim, {"y_channel": True}), ("ms_ssim", ms_ssim, {}),
    ("ssim_gray", ssim, {"gray": True}), ("ms_ssim_gray", ms_ssim, {"gray": True, "method": "wtd_sum"}),
])
def test_registry_modules_match_functions(name, fn, kw):
    g = torch.Generator().manual_seed(5)
    size = (176, 180) if name.startswith("ms_ssim") else (48, 40)
    t = torch.rand(2, 3, *size, generator=g)
    p = (t + 0.1 * torch.randn(t.shape, generator=g)).clamp(0, 1)
    m = metrics.create(name)
    out = m(p, t)
    assert out.shape == (2,)
    if kw.pop("gray", False):  # the official convention: MATLAB rgb2gray of 8-bit data, then the function
        p, t = rgb_to_gray_matlab(p), rgb_to_gray_matlab(t)
    torch.testing.assert_close(out, fn(p, t, **kw), rtol=0, atol=0)
    assert m.lower_better is False and m.needs_reference is True


def test_batched_equals_per_image(pairs):
    pred, target = pairs
    for fn in (psnr, ssim):
        whole = fn(pred, target)
        single = torch.cat([fn(pred[i : i + 1], target[i : i + 1]) for i in range(len(pred))])
        torch.testing.assert_close(whole, single, rtol=0, atol=1e-13)


def test_dtypes_agree(pairs):
    pred, target = pairs
    ref = ssim(pred.double(), target.double())
    assert ref.dtype == torch.float64
    for dt in (torch.float32, torch.float16, torch.bfloat16):
        p, t = pred.to(dt), target.to(dt)
        # only the input rounding differs: all arithmetic is float64
        torch.testing.assert_close(ssim(p, t), ssim(p.double(), t.double()), rtol=0, atol=1e-12)
    assert torch.allclose(ssim(pred.half(), target.half()), ref, atol=5e-3)


@pytest.mark.gpu
def test_cuda_matches_cpu(pairs):
    pred, target = pairs
    for fn in (psnr, ssim):
        torch.testing.assert_close(fn(pred.cuda(), target.cuda()).cpu(), fn(pred, target), rtol=1e-9, atol=1e-9)


def test_input_errors():
    m = metrics.create("ssim")
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(InputError, match="needs a reference"):
        m(x)
    with pytest.raises(InputError, match="differ in size"):
        m(x, torch.rand(1, 3, 32, 30))
    with pytest.raises(InputError, match="at least 11x11"):
        ssim(x[..., :10, :10], x[..., :10, :10])
    with pytest.raises(InputError, match="crop_border"):
        psnr(x, x, crop_border=16)
    # 8-bit data read as [0, 1] floats once gave a PSNR of -40 dB
    x8 = (x * 255).round().to(torch.uint8)
    for name in ("psnr", "ssim", "niqe"):
        with pytest.raises(InputError, match="uint8; metrics take float images"):
            metrics.create(name)(x8, x8)


@pytest.mark.parametrize("fn", [ssim, ms_ssim])
def test_y_channel_is_independent_of_the_data_range(astronaut_tensor, fn):
    """The BT.601 Y offset (16/255 of a [0, 1] range) is added in [0, 1] units: SSIM in 0-255 units equals SSIM in
    [0, 1] units (it once shifted the luminance term: 0.7326 against 0.7353)."""
    x = astronaut_tensor[..., :192, :192].double()
    y = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=x.dtype)).clamp(0, 1)
    a = fn(y, x, y_channel=True)
    b = fn(y * 255, x * 255, data_range=255.0, y_channel=True)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_every_weight_free_metric_scores_its_min_side_and_refuses_less():
    """The registry's ``min_side`` is what the benchmark checks before restoring any face: it must be exact."""
    from facerestore.errors import FaceRestoreError
    from facerestore.metrics.registry import SPECS

    g = torch.Generator().manual_seed(0)
    checked = 0
    for spec in SPECS:
        if spec.weights or spec.kind == "distribution" or spec.min_side <= 1:
            continue
        m = metrics.create(spec.name)
        for side, ok in ((spec.min_side, True), (spec.min_side - 1, False)):
            x = torch.rand(1, 3, side, side, generator=g)
            y = (x + 0.05 * torch.rand(x.shape, generator=g)).clamp(0, 1)
            if ok:
                assert torch.isfinite(m(x, y) if spec.needs_reference else m(x)).all(), spec.name
            else:
                with pytest.raises(FaceRestoreError):
                    m(x, y) if spec.needs_reference else m(x)
        checked += 1
    assert checked >= 7  # ssim, ssim_y, ms_ssim, ssim_gray, ms_ssim_gray, ms_swd, niqe


def test_inputs_are_not_modified():
    g = torch.Generator().manual_seed(6)
    p, t = torch.rand(2, 3, 180, 176, generator=g, dtype=torch.float64), torch.rand(2, 3, 180, 176, generator=g,
                                                                                     dtype=torch.float64)
    p0, t0 = p.clone(), t.clone()
    for fn in (psnr, ssim, ms_ssim):
        fn(p, t)
    assert torch.equal(p, p0) and torch.equal(t, t0)
