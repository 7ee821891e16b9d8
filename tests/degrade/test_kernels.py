"""Blur kernels and filtering vs closed forms, scipy.ndimage, cv2.filter2D and Real-ESRGAN's matrix form."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from facerestore.degrade.kernels import (
    KERNEL_KINDS,
    blur,
    gaussian_blur,
    gaussian_kernel,
    generalized_gaussian_kernel,
    kernel_from_params,
    motion_kernel,
    plateau_kernel,
    random_kernel,
)
from facerestore.errors import InputError


def _esrgan_quadratic(size: int, sx: float, sy: float, theta: float) -> np.ndarray:
    """p^T Sigma^-1 p on a centred grid, built the way Real-ESRGAN does (explicit matrices)."""
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    sigma = rot @ np.diag([sx**2, sy**2]) @ rot.T
    inv = np.linalg.inv(sigma)
    ax = np.arange(size) - (size - 1) / 2
    xx, yy = np.meshgrid(ax, ax)  # xx varies along columns, yy along rows
    grid = np.stack([xx, yy], axis=-1)
    return np.sum((grid @ inv) * grid, axis=-1)


# ----------------------------------------------------------------------------------------------- kernels


@pytest.mark.parametrize(("size", "sigma"), [(9, 1.7), (21, 3.0), (8, 1.2), (1, 2.0)])
def test_isotropic_gaussian_is_outer_product_of_1d_gaussian(size, sigma):
    t = np.arange(size) - (size - 1) / 2
    g = np.exp(-(t**2) / (2 * sigma**2))
    g /= g.sum()
    k = gaussian_kernel(size, sigma)
    assert k.shape == (1, size, size) and k.dtype == torch.float32
    np.testing.assert_allclose(k[0].numpy(), np.outer(g, g), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("sigma", [0.8, 2.0, 4.5])
def test_gaussian_kernel_matches_scipy_impulse_response(sigma):
    radius = 10
    delta = np.zeros((2 * radius + 1, 2 * radius + 1))
    delta[radius, radius] = 1.0
    ref = ndi.gaussian_filter(delta, sigma, mode="constant", radius=radius)
    k = gaussian_kernel(2 * radius + 1, sigma, dtype=torch.float64)[0].numpy()
    np.testing.assert_allclose(k, ref, atol=1e-12)


def test_anisotropic_gaussian_matches_matrix_form():
    rng = np.random.default_rng(0)
    for size in (7, 15, 10):
        sx, sy = rng.uniform(0.5, 5, 2)
        theta = rng.uniform(-math.pi, math.pi)
        ref = np.exp(-0.5 * _esrgan_quadratic(size, sx, sy, theta))
        ref /= ref.sum()
        k = gaussian_kernel(size, sx, sy, theta, dtype=torch.float64)[0].numpy()
        np.testing.assert_allclose(k, ref, atol=1e-12)


def test_gaussian_orientation():
    c = 10
    k0 = gaussian_kernel(21, 5.0, 1.0, 0.0)[0]
    # theta = 0: elongated along x (columns)
    assert k0[c, c + 6] > 100 * k0[c + 6, c]
    k90 = gaussian_kernel(21, 5.0, 1.0, math.pi / 2)[0]
    torch.testing.assert_close(k90, k0.T)
    # theta = +pi/4 turns the long axis from +x towards +y (down): the main diagonal
    k45 = gaussian_kernel(21, 5.0, 1.0, math.pi / 4)[0]
    torch.testing.assert_close(k45, k45.T)
    assert k45[c + 4, c + 4] > 100 * k45[c + 4, c - 4]


def test_per_sample_parameters_batch():
    k = gaussian_kernel(11, [1.0, 2.0, 3.0], torch.tensor([1.5, 2.5, 0.7]), 0.3)
    assert k.shape == (3, 11, 11)
    for i, (sx, sy) in enumerate([(1.0, 1.5), (2.0, 2.5), (3.0, 0.7)]):
        torch.testing.assert_close(k[i], gaussian_kernel(11, sx, sy, 0.3)[0])
    torch.testing.assert_close(k.sum(dim=(1, 2)), torch.ones(3))
    with pytest.raises(InputError):
        gaussian_kernel(11, [1.0, 2.0], [1.0, 2.0, 3.0])


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.7])
def test_generalized_gaussian_matches_formula(beta):
    sx, sy, theta = 2.3, 1.1, 0.6
    q = _esrgan_quadratic(13, sx, sy, theta)
    ref = np.exp(-0.5 * q**beta)
    ref /= ref.sum()
    k = generalized_gaussian_kernel(13, sx, sy, theta, beta, dtype=torch.float64)[0].numpy()
    np.testing.assert_allclose(k, ref, atol=1e-12)
    if beta == 1.0:
        np.testing.assert_allclose(k, gaussian_kernel(13, sx, sy, theta, dtype=torch.float64)[0].numpy(), atol=1e-14)


@pytest.mark.parametrize("beta", [1.0, 1.6, 2.0])
def test_plateau_matches_formula(beta):
    sx, sy, theta = 1.7, 3.2, -1.1
    q = _esrgan_quadratic(15, sx, sy, theta)
    ref = 1.0 / (q**beta + 1.0)
    ref /= ref.sum()
    k = plateau_kernel(15, sx, sy, theta, beta, dtype=torch.float64)[0].numpy()
    np.testing.assert_allclose(k, ref, atol=1e-12)


def test_motion_kernel_horizontal_exact():
    k = motion_kernel(15, 7, 0.0)[0]
    ref = torch.zeros(15, 15)
    ref[7, 4:11] = 1.0 / 7
    torch.testing.assert_close(k, ref)
    # even length: the two end pixels are half covered
    k = motion_kernel(15, 6, 0.0)[0].double()
    row = torch.zeros(15, dtype=torch.float64)
    row[5:10] = 1.0
    row[4] = row[10] = 0.5
    torch.testing.assert_close(k[7], row / row.sum())
    assert k.sum().item() == pytest.approx(k[7].sum().item())
    torch.testing.assert_close(motion_kernel(15, 7, 90.0)[0], motion_kernel(15, 7, 0.0)[0].T)


@pytest.mark.parametrize(("length", "angle"), [(9, 30.0), (15, 123.0), (21, -60.0), (12, 200.0), (17, 45.0)])
def test_motion_kernel_orientation_and_length(length, angle):
    k = motion_kernel(25, length, angle, dtype=torch.float64)[0].numpy()
    assert k.sum() == pytest.approx(1.0) and (k >= 0).all()
    ax = np.arange(25) - 12.0
    yy, xx = np.meshgrid(ax, ax, indexing="ij")
    up = -yy  # counter-clockwise angles as displayed: y axis pointing up
    cov = np.array([[np.sum(k * xx * xx), np.sum(k * xx * up)], [np.sum(k * xx * up), np.sum(k * up * up)]])
    evals, evecs = np.linalg.eigh(cov)
    main = evecs[:, -1]
    found = math.degrees(math.atan2(main[1], main[0])) % 180.0
    diff = abs(found - angle % 180.0)
    assert min(diff, 180 - diff) < 1.0
    # a uniform segment of length L has variance L^2 / 12 along its axis
    assert evals[-1] == pytest.approx(length**2 / 12.0, rel=0.1)
    assert evals[0] < 0.3


def test_motion_kernel_clips_length_and_batches():
    k = motion_kernel(9, [3, 50], [0.0, 0.0])
    assert k.shape == (2, 9, 9)
    assert (k[1, 4] > 0).all()  # clipped to the kernel width
    torch.testing.assert_close(k[0], motion_kernel(9, 3, 0.0)[0])


# ----------------------------------------------------------------------------------------------- random


def test_random_kernel_ranges_and_replay():
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(60):
        k, p = random_kernel(g, size=21, kinds=KERNEL_KINDS, sigma_range=(0.2, 3.0))
        seen.add(p["kind"])
        assert k.shape == (21, 21)
        assert float(k.sum()) == pytest.approx(1.0, abs=1e-5)
        assert 0.2 <= p["sigma_x"] <= 3.0 and 0.2 <= p["sigma_y"] <= 3.0
        assert -math.pi <= p["theta"] <= math.pi
        if p["kind"].endswith("_iso") or p["kind"] == "iso":
            assert p["sigma_x"] == p["sigma_y"] and p["theta"] == 0.0
        if p["kind"].startswith("generalized"):
            assert 0.5 <= p["beta"] <= 4.0
        elif p["kind"].startswith("plateau"):
            assert 1.0 <= p["beta"] <= 2.0
        rebuilt = kernel_from_params(json.loads(json.dumps(p)))
        assert torch.equal(rebuilt, k)
    assert seen == set(KERNEL_KINDS)


def test_random_kernel_seeded_determinism_and_probs():
    k1, p1 = random_kernel(123, kinds=("iso", "aniso"))
    k2, p2 = random_kernel(123, kinds=("iso", "aniso"))
    assert p1 == p2 and torch.equal(k1, k2)
    k3, p3 = random_kernel(124, kinds=("iso", "aniso"))
    assert p3["seed"] != p1["seed"] and not torch.equal(k1, k3)
    g = torch.Generator().manual_seed(5)
    kinds = {random_kernel(g, size=7, kinds=("iso", "plateau_aniso"), probs=(0.0, 1.0))[1]["kind"] for _ in range(10)}
    assert kinds == {"plateau_aniso"}
    with pytest.raises(InputError):
        random_kernel(0, kinds=("box",))


# ----------------------------------------------------------------------------------------------- filtering


def _np_image(rng, b=2, c=3, h=23, w=31):
    return rng.random((b, c, h, w))


@pytest.mark.parametrize("shape", [(5, 5), (3, 7), (4, 4), (21, 21), (16, 9)])
def test_blur_matches_cv2_and_scipy(shape):
    rng = np.random.default_rng(1)
    x = _np_image(rng).astype(np.float32)
    k = rng.random(shape).astype(np.float32)
    k /= k.sum()
    y = blur(torch.from_numpy(x), torch.from_numpy(k)).numpy()
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            ref_cv = cv2.filter2D(x[b, c], -1, k)  # default border is BORDER_REFLECT_101
            ref_sp = ndi.correlate(x[b, c].astype(np.float64), k.astype(np.float64), mode="mirror")
            np.testing.assert_allclose(y[b, c], ref_cv, atol=2e-5)
            np.testing.assert_allclose(y[b, c], ref_sp, atol=2e-5)


def test_blur_kernel_larger_than_image_and_float64():
    rng = np.random.default_rng(2)
    x = rng.random((1, 2, 6, 9))
    for size in (9, 31):  # direct and FFT paths, both with pads beyond the image size
        k = rng.random((size, size))
        y = blur(torch.from_numpy(x), torch.from_numpy(k))
        assert y.dtype == torch.float64
        for c in range(2):
            np.testing.assert_allclose(y[0, c].numpy(), ndi.correlate(x[0, c], k, mode="mirror"), atol=1e-10)


def test_blur_per_sample_kernels():
    rng = np.random.default_rng(3)
    x = torch.from_numpy(_np_image(rng, b=3)).float()
    for size in (5, 19):
        ks = gaussian_kernel(size, [0.5, 1.5, 3.0], [2.0, 1.0, 3.0], [0.0, 1.0, 2.0])
        y = blur(x, ks)
        for i in range(3):
            torch.testing.assert_close(y[i : i + 1], blur(x[i : i + 1], ks[i]), atol=1e-5, rtol=0)
    with pytest.raises(InputError):
        blur(x, torch.ones(2, 3, 3) / 9)


def test_gaussian_blur_matches_scipy():
    rng = np.random.default_rng(4)
    x = _np_image(rng, b=2, h=40, w=33)
    sigmas = [0.7, 2.5]
    y = gaussian_blur(torch.from_numpy(x), sigmas).numpy()
    for b, s in enumerate(sigmas):
        radius = math.ceil(3 * max(sigmas))
        for c in range(3):
            ref = ndi.gaussian_filter(x[b, c], s, mode="mirror", radius=radius)
            np.testing.assert_allclose(y[b, c], ref, atol=1e-10)
    # equal to blur with the 2-D kernel
    k = gaussian_kernel(9, 1.3, dtype=torch.float64)
    torch.testing.assert_close(gaussian_blur(torch.from_numpy(x), 1.3, size=9), blur(torch.from_numpy(x), k))


def test_blur_preserves_constant_and_range(astronaut_tensor):
    x = astronaut_tensor[:, :, ::4, ::4]
    y = blur(x, gaussian_kernel(21, 2.0, 5.0, 0.4))
    assert y.shape == x.shape and y.min() >= -1e-5 and y.max() <= 1 + 1e-5
    const = torch.full((1, 3, 17, 13), 0.3)
    torch.testing.assert_close(blur(const, gaussian_kernel(25, 4.0)), const)


def test_gradcheck_blur():
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.random((2, 2, 6, 7))).requires_grad_()
    for size in (3, 17):  # direct conv and FFT paths
        k = torch.from_numpy(rng.random((2, size, size))).requires_grad_()
        # fast_mode checks random directions: the full Jacobian of a 17x17 kernel costs a minute
        assert torch.autograd.gradcheck(blur, (x, k), eps=1e-6, atol=1e-6, fast_mode=size > 3)
    sigma = torch.tensor([0.9, 1.4], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, s: gaussian_blur(a, s, size=5), (x, sigma), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("size", [4, 5, 8])
def test_narrow_kernels_do_not_underflow(size):
    """A kernel narrower than a pixel, or an even-sized one (no tap at the centre), had every tap underflow to 0
    and came out NaN; it is the (normalised) kernel with the exponent taken from its peak: finite, sums to 1,
    and for an odd size the one-tap kernel."""
    for k in (generalized_gaussian_kernel(size, 0.2, 0.2, 0.0, 4.0), gaussian_kernel(size, 0.01)):
        assert bool(torch.isfinite(k).all()) and abs(float(k.sum()) - 1.0) < 1e-6
        if size % 2:
            centre = torch.zeros(size, size, dtype=k.dtype)
            centre[size // 2, size // 2] = 1
            torch.testing.assert_close(k[0], centre)
        else:  # the four taps around the centre, equal by symmetry
            c = size // 2
            torch.testing.assert_close(k[0, c - 1 : c + 1, c - 1 : c + 1], torch.full((2, 2), 0.25, dtype=k.dtype))
    # a wide kernel is unchanged: the same as exp(-0.5 q) normalised
    k = gaussian_kernel(size, 1.3, 0.7, 0.4)
    assert abs(float(k.sum()) - 1.0) < 1e-6


def test_odd_is_the_nearest_odd_integer():
    from facerestore.degrade.presets._common import odd

    assert [odd(v) for v in (0.2, 1, 1.9, 2, 3.6, 4, 33.5, 34, 35.2)] == [1, 1, 1, 3, 3, 5, 33, 35, 35]
