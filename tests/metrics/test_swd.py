"""MS-SWD: Lab conversion vs scikit-image, pyramid vs scipy, sliced W1 vs brute force and
scipy.stats.wasserstein_distance, invariants, determinism, gradients; works without any weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage, stats
from skimage import color

from facerestore import metrics
from facerestore.errors import InputError
from facerestore.metrics.swd import (
    MSSWD,
    gaussian_pyramid,
    min_size,
    ms_swd,
    random_projections,
    resize_short_side,
    sliced_wasserstein,
    srgb_to_lab,
)


def test_srgb_to_lab_matches_skimage():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 16, 16, generator=g, dtype=torch.float64)
    x[0, :, 0, 0] = 0.0  # black, white and a dark value below the sRGB linear segment
    x[0, :, 0, 1] = 1.0
    x[0, :, 0, 2] = 0.02
    ours = srgb_to_lab(x)[0].permute(1, 2, 0).numpy()
    ref = color.rgb2lab(x[0].permute(1, 2, 0).numpy(), illuminant="D65")
    # FLIP's and scikit-image's sRGB matrices differ in the 4th-5th digit
    np.testing.assert_allclose(ours, ref, atol=0.05)
    np.testing.assert_allclose(ours[0, 1], [100, 0, 0], atol=1e-3)


def test_gaussian_pyramid_matches_scipy():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 2, 21, 18, generator=g, dtype=torch.float64)
    pyr = gaussian_pyramid(x, 3)
    assert [p.shape[-2:] for p in pyr] == [(21, 18), (11, 9), (6, 5)]
    k1 = np.array([1, 4, 6, 4, 1]) / 16
    level = x[0].numpy()
    for p in pyr[1:]:
        # torch's "reflect" padding is scipy's "mirror" (edge sample not repeated)
        level = np.stack([ndimage.convolve(c, np.outer(k1, k1), mode="mirror") for c in level])[:, ::2, ::2]
        np.testing.assert_allclose(p[0].numpy(), level, rtol=1e-12, atol=1e-12)


def test_projections_are_unit_and_seeded():
    p = random_projections(8, 3, 5, torch.Generator().manual_seed(3))
    assert p.shape == (8, 3, 5, 5)
    torch.testing.assert_close(p.flatten(1).norm(dim=1), torch.ones(8, dtype=torch.float64))
    torch.testing.assert_close(p, random_projections(8, 3, 5, torch.Generator().manual_seed(3)))


def brute_force_swd(x: np.ndarray, y: np.ndarray, proj: np.ndarray) -> float:
    """Mean over directions of the 1-D W1 distance between the sets of projected k x k patches."""
    k = proj.shape[-1]
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p)), mode="reflect")
    yp = np.pad(y, ((0, 0), (p, p), (p, p)), mode="reflect")
    h, w = x.shape[1:]
    dists = []
    for d in proj:
        a = [float((xp[:, i : i + k, j : j + k] * d).sum()) for i in range(h) for j in range(w)]
        b = [float((yp[:, i : i + k, j : j + k] * d).sum()) for i in range(h) for j in range(w)]
        dists.append(stats.wasserstein_distance(a, b))
    return float(np.mean(dists))


def test_sliced_wasserstein_matches_brute_force():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 9, 11, generator=g, dtype=torch.float64)
    y = torch.rand(2, 3, 9, 11, generator=g, dtype=torch.float64) ** 2
    proj = random_projections(4, 3, 3, g)
    got = sliced_wasserstein(x, y, proj)
    for n in range(2):
        ref = brute_force_swd(x[n].numpy(), y[n].numpy(), proj.numpy())
        assert abs(got[n].item() - ref) < 1e-10


def test_ms_swd_is_mean_over_levels_of_lab_swd():
    g = torch.Generator().manual_seed(5)
    x = torch.rand(1, 3, 40, 44, generator=g, dtype=torch.float64)
    y = (x + 0.1).clamp(0, 1)
    got = ms_swd(x, y, num_scale=3, num_proj=6, patch_size=5, generator=torch.Generator().manual_seed(9))
    g2 = torch.Generator().manual_seed(9)
    ref = 0
    for xs, ys in zip(gaussian_pyramid(x, 3), gaussian_pyramid(y, 3)):
        proj = random_projections(6, 3, 5, g2)  # fresh directions per level, drawn in order
        ref += brute_force_swd(srgb_to_lab(xs)[0].numpy(), srgb_to_lab(ys)[0].numpy(), proj.numpy())
    assert abs(got.item() - ref / 3) < 1e-9


@pytest.fixture(scope="module")
def faces(astronaut_tensor):
    return astronaut_tensor[:, :, 96:352:2, 128:384:2]  # (1, 3, 128, 128): the face


def test_invariants(faces):
    m = MSSWD(num_proj=32)
    x = faces
    y = (x * torch.tensor([1.0, 0.9, 0.8]).view(1, 3, 1, 1)).clamp(0, 1)
    assert m(x, x).item() == 0
    torch.testing.assert_close(m(x, y), m(y, x))
    torch.testing.assert_close(MSSWD(num_proj=32)(x, y), m(x, y))  # a new instance, same seed: same directions
    assert not torch.equal(MSSWD(num_proj=32, seed=1)(x, y), m(x, y))
    b = m(torch.cat([x, y]), torch.cat([y, y]))
    torch.testing.assert_close(b, torch.cat([m(x, y), torch.zeros(1)]), rtol=1e-5, atol=1e-6)


def test_colour_shift_ordering_and_misalignment_tolerance(faces):
    m = MSSWD(num_proj=32)
    x = faces
    scores = [m(x, (x + torch.tensor([s, 0.0, -s]).view(1, 3, 1, 1)).clamp(0, 1)).item() for s in (0.02, 0.05, 0.15)]
    assert scores[0] < scores[1] < scores[2]
    # a 2-pixel shift barely changes the colour distribution: far below a visible colour cast
    shifted = torch.roll(x, shifts=(2, 2), dims=(2, 3))
    assert m(x, shifted).item() < scores[1]


def test_gradients_flow(faces):
    x = faces[:, :, :96, :96].clone().requires_grad_(True)
    y = faces[:, :, :96, :96] * 0.9
    MSSWD(num_proj=8)(x, y).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_resize_and_size_limits():
    assert min_size() == 81  # 5 levels, 11x11 patches: the 5th level needs 6 px
    m = MSSWD(num_proj=4)
    with pytest.raises(InputError, match="at least 81"):
        m(torch.rand(1, 3, 80, 200), torch.rand(1, 3, 80, 200))
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(1, 3, 300, 260, generator=g), torch.rand(1, 3, 300, 260, generator=g)
    ref = MSSWD(num_proj=4, resize=False)(resize_short_side(x, 256), resize_short_side(y, 256))
    torch.testing.assert_close(m(x, y), ref)


def test_works_offline_through_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path))  # empty cache: no weights needed
    m = metrics.create("ms_swd")
    assert m.name == "ms_swd" and m.lower_better
    x = torch.rand(2, 3, 96, 96)
    assert m(x, x.flip(-1)).shape == (2,)
