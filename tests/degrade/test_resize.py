"""resize vs PIL (float "F" images exactly, 8-bit RGB within one level), PULSE's downsampler vs a brute-force
evaluation of its formula, its projection vs a least-squares solve on the full operator, and mosaic vs numpy
block means."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from facerestore.degrade.resize import (
    downsample_pulse_bicubic,
    mosaic,
    project_area,
    project_pulse_bicubic,
    project_resize,
    resize,
    resize_weights,
)
from facerestore.errors import InputError

PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "area": Image.Resampling.BOX,
}
# (H, W) -> (H', W'): down, up, non-integer, non-square, one axis only, mixed up/down, and shapes where
# Pillow runs its vertical pass first
SIZE_PAIRS = [
    ((64, 64), (16, 16)),
    ((37, 53), (10, 29)),
    ((10, 10), (3, 3)),
    ((13, 17), (40, 29)),
    ((100, 100), (29, 71)),
    ((8, 8), (8, 20)),
    ((50, 30), (50, 7)),
    ((24, 40), (61, 13)),
    ((41, 23), (9, 23)),
    ((7, 5), (16, 11)),
]


def _to_tensor(u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(u8).permute(2, 0, 1)[None].float() / 255.0


def _to_u8(x: torch.Tensor) -> np.ndarray:
    return np.round(x[0].permute(1, 2, 0).numpy() * 255.0).astype(np.int64)


@pytest.mark.parametrize("method", list(PIL_FILTERS))
def test_weights_match_pil_float_images(method):
    # PIL's "F" mode resamples with the same coefficients but no 8-bit rounding or clipping
    rng = np.random.default_rng(0)
    for (h, w), (oh, ow) in SIZE_PAIRS:
        a = rng.random((h, w)).astype(np.float32) * 4 - 2
        ref = np.asarray(Image.fromarray(a, mode="F").resize((ow, oh), PIL_FILTERS[method]))
        y = resize(torch.from_numpy(a).double()[None, None], (oh, ow), method=method, clamp=False)
        np.testing.assert_allclose(y[0, 0].numpy(), ref, atol=2e-6)


def test_nearest_index_map_matches_pil_exhaustively():
    bad = []
    for n_in in range(1, 41):
        a = np.arange(n_in, dtype=np.float32)[None]
        for n_out in range(1, 41):
            ref = np.asarray(Image.fromarray(a, mode="F").resize((n_out, 1), Image.Resampling.NEAREST))[0]
            y = resize(torch.from_numpy(a)[None, None], (1, n_out), method="nearest")[0, 0, 0].numpy()
            if not np.array_equal(y, ref):
                bad.append((n_in, n_out))
    assert not bad


@pytest.mark.parametrize("method", list(PIL_FILTERS))
def test_matches_pil_on_random_8bit_rgb(method):
    rng = np.random.default_rng(1)
    for (h, w), (oh, ow) in SIZE_PAIRS:
        u8 = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ref = np.asarray(Image.fromarray(u8).resize((ow, oh), PIL_FILTERS[method])).astype(np.int64)
        y = resize(_to_tensor(u8), (oh, ow), method=method)
        assert y.shape == (1, 3, oh, ow)
        assert np.abs(_to_u8(y) - ref).max() <= 1, ((h, w), (oh, ow))


@pytest.mark.parametrize("method", ["bilinear", "bicubic", "lanczos", "area"])
def test_matches_pil_on_astronaut(astronaut, method):
    u8 = np.round(astronaut * 255).astype(np.uint8)
    x = _to_tensor(u8)
    for oh, ow in [(128, 128), (77, 203), (700, 600)]:
        ref = np.asarray(Image.fromarray(u8).resize((ow, oh), PIL_FILTERS[method])).astype(np.int64)
        diff = np.abs(_to_u8(resize(x, (oh, ow), method=method)) - ref)
        # PIL rounds to 8 bits between its two passes, we do not: off-by-one levels are common, more never
        assert diff.max() <= 1 and diff.mean() < 0.3


def test_no_antialias_bilinear_equals_plain_interpolation():
    # torch's bilinear (align_corners=False) clamps at the borders where PIL renormalises: same values
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.random((2, 3, 30, 44)))
    for size in [(10, 11), (7, 40), (61, 90)]:
        ref = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
        torch.testing.assert_close(resize(x, size, method="bilinear", antialias=False, clamp=False), ref)
    # and antialiased bilinear is torch's PIL-style antialiased mode
    ref = F.interpolate(x, size=(10, 11), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(resize(x, (10, 11), method="bilinear", clamp=False), ref)


def test_no_antialias_cubic_keeps_four_taps():
    w = resize_weights(64, 8, "bicubic", antialias=False)
    assert ((w != 0).sum(dim=1) <= 4).all()
    w_aa = resize_weights(64, 8, "bicubic", antialias=True)
    assert ((w_aa != 0).sum(dim=1) > 16).any()
    torch.testing.assert_close(w.sum(dim=1), torch.ones(8, dtype=torch.float64))


def test_scale_argument_and_errors():
    x = torch.rand(1, 3, 20, 30)
    assert resize(x, scale=0.25).shape == (1, 3, 5, 8)  # 7.5 rounds up
    assert resize(x, scale=(0.5, 2)).shape == (1, 3, 10, 60)
    assert resize(x, 12).shape == (1, 3, 12, 12)
    torch.testing.assert_close(resize(x, scale=1.0), x)
    with pytest.raises(InputError):
        resize(x, (10, 10), scale=0.5)
    with pytest.raises(InputError):
        resize(x, (10, 10), method="hamming")
    with pytest.raises(InputError):
        resize(x, scale=0.01)


def test_dtypes_and_clamp():
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    assert resize(x, (8, 8)).dtype == torch.float64
    # a hard edge overshoots with cubic filters; the 8-bit-like clamp removes it
    edge = torch.zeros(1, 1, 8, 8)
    edge[..., 4:] = 1.0
    up = resize(edge, (8, 32), method="lanczos", clamp=False)
    assert up.max() > 1.0 and up.min() < 0.0
    up = resize(edge, (8, 32), method="lanczos")
    assert up.max() <= 1.0 and up.min() >= 0.0


def test_gradcheck_resize():
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.random((1, 2, 5, 7))).requires_grad_()
    for method in ("bilinear", "bicubic", "lanczos", "area"):
        f = lambda t, m=method: resize(t, (3, 9), method=m, clamp=False)  # noqa: E731
        assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-6)
    # inside (0, 1) and with a smooth filter the clamp is inactive: gradient passes through
    xin = (0.3 + 0.4 * x.detach()).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: resize(t, (4, 3), method="bilinear"), (xin,), eps=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------- PULSE


def _pulse_brute_force(x: np.ndarray, factor: int) -> np.ndarray:
    """Direct evaluation of PULSE's BicubicDownSample formula (no matrices)."""

    def cubic(t, a=-0.5):
        t = abs(t)
        if t <= 1:
            return (a + 2) * t**3 - (a + 3) * t**2 + 1
        if t < 2:
            return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
        return 0.0

    taps = 4 * factor
    k = np.array([cubic((i - math.floor(taps / 2) + 0.5) / factor) for i in range(taps)])
    k /= k.sum()
    pad = taps - factor
    top, left = pad // 2, pad // 2
    xp = np.pad(x, ((0, 0), (0, 0), (top, pad - top), (left, pad - left)), mode="reflect")
    b, c, h, w = x.shape
    oh, ow = (h + pad - taps) // factor + 1, (w + pad - taps) // factor + 1
    out = np.zeros((b, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * factor : i * factor + taps, j * factor : j * factor + taps]
            out[:, :, i, j] = np.einsum("bcpq,p,q->bc", patch, k, k)
    return out


@pytest.mark.parametrize(("shape", "factor"), [((16, 16), 2), ((32, 24), 4), ((27, 19), 3), ((64, 64), 8)])
def test_pulse_downsample_matches_brute_force(shape, factor):
    rng = np.random.default_rng(4)
    x = rng.random((2, 3, *shape))
    y = downsample_pulse_bicubic(torch.from_numpy(x), factor)
    assert y.shape == (2, 3, shape[0] // factor, shape[1] // factor)
    np.testing.assert_allclose(y.numpy(), _pulse_brute_force(x, factor), atol=1e-12)


def test_pulse_downsample_properties():
    const = torch.full((1, 3, 32, 32), 0.7)
    torch.testing.assert_close(downsample_pulse_bicubic(const, 4), torch.full((1, 3, 8, 8), 0.7))
    with pytest.raises(InputError):
        downsample_pulse_bicubic(const, 2.5)
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: downsample_pulse_bicubic(t, 2), (x,), eps=1e-6, atol=1e-6)


def _pulse_operator(shape: tuple[int, int], factor: int) -> np.ndarray:
    """The full (h*w, H*W) matrix of PULSE's downsampling, column by column from the brute-force formula."""
    n = shape[0] * shape[1]
    basis = np.eye(n).reshape(n, 1, *shape)
    return _pulse_brute_force(basis, factor).reshape(n, -1).T


@pytest.mark.parametrize(("shape", "factor"), [((12, 12), 3), ((16, 8), 4), ((10, 14), 2)])
def test_pulse_projection_is_the_nearest_consistent_image(shape, factor):
    rng = np.random.default_rng(7)
    x, y = rng.random((1, 1, *shape)), rng.random((1, 1, shape[0] // factor, shape[1] // factor))
    A = _pulse_operator(shape, factor)
    # independent reference: min ||z - x|| subject to A z = y, solved through the normal equations of A A^T
    residual = y.reshape(-1) - A @ x.reshape(-1)
    ref = x.reshape(-1) + A.T @ np.linalg.solve(A @ A.T, residual)
    got = project_pulse_bicubic(torch.from_numpy(x), torch.from_numpy(y), factor)
    np.testing.assert_allclose(got.numpy().reshape(-1), ref, atol=1e-9)
    np.testing.assert_allclose(A @ got.numpy().reshape(-1), y.reshape(-1), atol=1e-9)  # reproduces y
    # idempotent, and an image that already reproduces y is left alone
    torch.testing.assert_close(project_pulse_bicubic(got, torch.from_numpy(y), factor), got, rtol=0, atol=1e-10)
    # strength s shrinks the mismatch to (1 - s) of x's, linearly
    half = project_pulse_bicubic(torch.from_numpy(x), torch.from_numpy(y), factor, strength=0.25)
    np.testing.assert_allclose(A @ half.numpy().reshape(-1) - y.reshape(-1), 0.75 * -residual, atol=1e-9)
    torch.testing.assert_close(project_pulse_bicubic(torch.from_numpy(x), torch.from_numpy(y), factor, 0.0),
                               torch.from_numpy(x), rtol=0, atol=0)


def test_pulse_projection_dtype_gradient_and_errors():
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    y = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: project_pulse_bicubic(t, y, 4), (x,), eps=1e-6, atol=1e-6)
    out = project_pulse_bicubic(x.detach().float(), y.float(), 4)
    assert out.dtype == torch.float32 and out.shape == x.shape
    with pytest.raises(InputError, match="does not match"):
        project_pulse_bicubic(x.detach(), y, 2)
    with pytest.raises(InputError, match="strength"):
        project_pulse_bicubic(x.detach(), y, 4, strength=1.5)


@pytest.mark.parametrize(("shape", "factor"), [((16, 16), 4), ((24, 12), 3), ((8, 8), 1)])
def test_area_projection_reproduces_the_box_average_with_a_bicubic_correction(shape, factor):
    rng = np.random.default_rng(8)
    x = rng.random((1, 2, *shape))
    y = rng.random((1, 2, shape[0] // factor, shape[1] // factor))
    got = project_area(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    # it reproduces the observation under avg_pool2d (the "area" reduction)
    np.testing.assert_allclose(F.avg_pool2d(torch.from_numpy(got), factor).numpy(), y, atol=1e-10)
    # the correction is PIL's bicubic enlargement of some low-resolution image c: solve for c on the full operator
    # (the enlargement, built from PIL itself on unit images) and check that it explains the whole correction
    h, w = shape[0] // factor, shape[1] // factor
    basis = np.eye(h * w).reshape(h * w, h, w).astype(np.float32)
    lift = np.stack([np.asarray(Image.fromarray(b, "F").resize((shape[1], shape[0]), Image.Resampling.BICUBIC))
                     for b in basis]).reshape(h * w, -1).T  # (H*W, h*w)
    for ch in range(2):
        delta = (got - x)[0, ch].reshape(-1)
        c, *_ = np.linalg.lstsq(lift, delta, rcond=None)
        np.testing.assert_allclose(lift @ c, delta, atol=1e-5)
    half = project_area(torch.from_numpy(x), torch.from_numpy(y), strength=0.5).numpy()
    np.testing.assert_allclose(F.avg_pool2d(torch.from_numpy(half), factor).numpy() - y,
                               0.5 * (F.avg_pool2d(torch.from_numpy(x), factor).numpy() - y), atol=1e-10)
    with pytest.raises(InputError, match="integer factor"):
        project_area(torch.from_numpy(x), torch.rand(1, 2, 5, 5, dtype=torch.float64))


def _pil_reduce(img: np.ndarray, size: tuple[int, int], method: str) -> np.ndarray:
    """PIL's own reduction of a float (H, W) image (mode "F": no clamp, no rounding) to size (h, w)."""
    return np.asarray(Image.fromarray(img.astype(np.float32), "F").resize(size[::-1], PIL_FILTERS[method]))


@pytest.mark.parametrize(("shape", "size", "method"), [((32, 32), (4, 4), "lanczos"), ((32, 24), (8, 6), "bilinear"),
                                                       ((30, 30), (7, 11), "bicubic"), ((16, 16), (4, 4), "area")])
def test_resize_projection_reproduces_pil_reduction_with_a_bicubic_correction(shape, size, method):
    rng = np.random.default_rng(9)
    x = rng.random((1, 2, *shape))
    y = rng.random((1, 2, *size))
    got = project_resize(torch.from_numpy(x), torch.from_numpy(y), method).numpy()
    # independent reference: PIL reduces the projected image to y (float32 images: 1e-5)
    for ch in range(2):
        np.testing.assert_allclose(_pil_reduce(got[0, ch], size, method), y[0, ch], atol=2e-5)
    # the correction lies in the span of PIL's bicubic enlargement of size-h images (smooth, no blocks)
    basis = np.eye(size[0] * size[1]).reshape(-1, *size).astype(np.float32)
    lift = np.stack([np.asarray(Image.fromarray(b, "F").resize((shape[1], shape[0]), Image.Resampling.BICUBIC))
                     for b in basis]).reshape(len(basis), -1).T
    for ch in range(2):
        delta = (got - x)[0, ch].reshape(-1)
        c, *_ = np.linalg.lstsq(lift, delta, rcond=None)
        np.testing.assert_allclose(lift @ c, delta, atol=1e-5)
    # idempotent; strength s leaves (1 - s) of the mismatch; 0 returns x
    again = project_resize(torch.from_numpy(got), torch.from_numpy(y), method).numpy()
    np.testing.assert_allclose(again, got, atol=1e-10)
    quarter = project_resize(torch.from_numpy(x), torch.from_numpy(y), method, strength=0.25).numpy()
    for ch in range(2):
        np.testing.assert_allclose(_pil_reduce(quarter[0, ch], size, method) - y[0, ch],
                                   0.75 * (_pil_reduce(x[0, ch], size, method) - y[0, ch]), atol=2e-5)
    np.testing.assert_array_equal(project_resize(torch.from_numpy(x), torch.from_numpy(y), method, 0.0).numpy(), x)


def test_resize_projection_area_is_project_area_and_errors():
    x, y = torch.rand(2, 3, 24, 24, dtype=torch.float64), torch.rand(2, 3, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(project_resize(x, y, "area"), project_area(x, y), rtol=0, atol=0)
    xg = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: project_resize(t, y, "lanczos"), (xg,), eps=1e-6, atol=1e-6)
    assert project_resize(x.float(), y.float(), "bicubic").dtype == torch.float32
    with pytest.raises(InputError, match="larger than the image"):
        project_resize(y, x)
    with pytest.raises(InputError, match="does not match"):
        project_resize(x, y[:1])
    with pytest.raises(InputError, match="unknown resize method"):
        project_resize(x, y, "gaussian")



@pytest.mark.parametrize(("shape", "size", "method"), [((32, 32), (4, 4), "lanczos"), ((30, 24), (7, 6), "bicubic")])
def test_resize_projection_detail_scales_only_what_the_reduction_destroys(shape, size, method):
    rng = np.random.default_rng(11)
    x, y = torch.from_numpy(rng.random((1, 2, *shape))), torch.from_numpy(rng.random((1, 2, *size)))
    full = project_resize(x, y, method, strength=0.6)
    # strength 1, detail 0: C y, the smooth image that reproduces y (the projection of a black image, x gone)
    smooth = project_resize(x, y, method, detail=0.0)
    torch.testing.assert_close(smooth, project_resize(torch.zeros_like(x), y, method), rtol=0, atol=1e-10)
    for ch in range(2):  # independent check: PIL reduces it to y
        np.testing.assert_allclose(_pil_reduce(smooth[0, ch].numpy(), size, method), y[0, ch].numpy(), atol=2e-5)
    # any detail: the same reduction as detail 1 (PIL's), and linear in detail between 0 and 1
    removed = project_resize(x, y, method, strength=0.6, detail=0.0)
    for d in (0.3, 0.75):
        got = project_resize(x, y, method, strength=0.6, detail=d)
        torch.testing.assert_close(got, removed + d * (full - removed), rtol=0, atol=1e-10)
        for ch in range(2):
            np.testing.assert_allclose(_pil_reduce(got[0, ch].numpy(), size, method),
                                       _pil_reduce(full[0, ch].numpy(), size, method), atol=2e-5)
    # what detail removes is x minus the lift of x's own reduction: zero for an image in C's range
    in_range = project_resize(torch.zeros_like(x), y, method)
    torch.testing.assert_close(project_resize(in_range, y, method, detail=0.0), in_range, rtol=0, atol=1e-10)
    xg = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: project_resize(t, y, method, 0.5, detail=0.25), (xg,), eps=1e-6,
                                    atol=1e-6)
    with pytest.raises(InputError, match="detail must lie in"):
        project_resize(x, y, method, detail=1.5)

# ----------------------------------------------------------------------------------------------- mosaic


def test_mosaic_divisible_equals_reshape_mean():
    rng = np.random.default_rng(5)
    x = rng.random((2, 3, 32, 48))
    means = x.reshape(2, 3, 2, 16, 3, 16).mean(axis=(3, 5))
    ref = np.repeat(np.repeat(means, 16, axis=2), 16, axis=3)
    np.testing.assert_allclose(mosaic(torch.from_numpy(x), 16).numpy(), ref, atol=1e-12)


@pytest.mark.parametrize(("shape", "block"), [((37, 53), 16), ((10, 7), 4), ((5, 5), 8), ((30, 20), (7, 3))])
def test_mosaic_partial_blocks(shape, block):
    rng = np.random.default_rng(6)
    x = rng.random((1, 3, *shape))
    bh, bw = (block, block) if isinstance(block, int) else block
    ref = np.empty_like(x)
    for i in range(0, shape[0], bh):
        for j in range(0, shape[1], bw):
            ref[:, :, i : i + bh, j : j + bw] = x[:, :, i : i + bh, j : j + bw].mean(axis=(2, 3), keepdims=True)
    y = mosaic(torch.from_numpy(x), block)
    assert y.shape == x.shape
    np.testing.assert_allclose(y.numpy(), ref, atol=1e-12)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    from facerestore.degrade.color import adjust_color
    from facerestore.degrade.kernels import blur, gaussian_blur, gaussian_kernel, motion_kernel
    from facerestore.degrade.masks import stroke_mask

    x = torch.rand(2, 3, 40, 56)
    xc = x.cuda()
    ops = [
        lambda t: resize(t, (17, 90), method="lanczos"),
        lambda t: resize(t, (17, 90), method="nearest"),
        lambda t: downsample_pulse_bicubic(t, 4),
        lambda t: mosaic(t, 16),
        lambda t: blur(t, gaussian_kernel(5, [1.0, 2.0], device=t.device)),
        lambda t: blur(t, motion_kernel(21, 9, 30.0)),
        lambda t: gaussian_blur(t, [0.5, 3.0]),
        lambda t: adjust_color(t, 1.2, 0.8, 1.3, 0.2),
    ]
    for op in ops:
        y = op(xc)
        assert y.device.type == "cuda"
        torch.testing.assert_close(y.cpu(), op(x), atol=1e-5, rtol=1e-5)
    m_cpu, p = stroke_mask(64, 9, generator=0)
    m_gpu, _ = stroke_mask(64, 9, params=p, device="cuda")
    assert torch.equal(m_gpu.cpu(), m_cpu)
