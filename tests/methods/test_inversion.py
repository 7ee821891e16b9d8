"""Paper 002's robust inversion: NGD, the multi-resolution loss, the 3-phase inversion and the restorer.

Tiny random-init StyleGAN2 generators (32 px, 16 channels) keep every test on CPU in seconds; the
inversion targets are the generator's own images from a known latent, so the clean truth is known.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from conftest import tiny_stylegan2
from facerestore import degrade
from facerestore.errors import InputError, WeightsMissingError
from facerestore.methods.inversion import (
    NGD,
    MultiResolutionLoss,
    RobustInversionRestorer,
    inpainting_mask,
    make_loss,
    ngd_update,
    normalized_gradient,
    num_levels,
    robust_invert,
    ssim_map,
)
from facerestore.nn.stylegan2 import Generator, to_unit_range


@pytest.fixture(scope="module")
def tiny_g() -> Generator:
    return tiny_stylegan2(64, channel_base=256, channel_max=16, mapping_layers=2, n_avg=1000)


def _known_image(G: Generator, seed: int = 1, psi: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    w = G.sample_w(1, torch.Generator().manual_seed(seed))
    w = G.mapping.w_avg + psi * (w - G.mapping.w_avg)
    with torch.no_grad():
        return w, to_unit_range(G.synthesis(w)).clamp(0, 1)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(((a - b) ** 2).mean()))


# ------------------------------------------------------------------------------------------------ NGD


def test_ngd_step_length_is_exactly_lr_per_vector():
    g = torch.Generator().manual_seed(0)
    for shape in [(3, 512), (2, 18, 512), (1, 7, 33)]:
        p = torch.randn(shape, generator=g, dtype=torch.float64)
        grad = torch.randn(shape, generator=g, dtype=torch.float64) * torch.rand((*shape[:-1], 1), generator=g,
                                                                                  dtype=torch.float64) * 100
        grad[(0,) * (len(shape) - 1)] = 0.0  # one vector with a zero gradient must not move (nor become NaN)
        before = p.clone()
        ngd_update(p, grad, 0.08)
        step = torch.linalg.vector_norm(p - before, dim=-1)
        expected = torch.full_like(step, 0.08)
        expected[(0,) * (len(shape) - 1)] = 0.0
        torch.testing.assert_close(step, expected, rtol=0, atol=1e-12)
        # the step points against the gradient
        cos = F.cosine_similarity((before - p).flatten(0, -2)[1:], grad.flatten(0, -2)[1:], dim=-1)
        torch.testing.assert_close(cos, torch.ones_like(cos))
    assert torch.isfinite(normalized_gradient(torch.zeros(2, 4))).all()


def test_ngd_optimizer_matches_function():
    g = torch.Generator().manual_seed(1)
    p1 = torch.randn(4, 16, generator=g, requires_grad=True)
    p2 = p1.detach().clone()
    c = torch.randn(4, 16, generator=g)
    opt = NGD([p1], lr=0.02)
    ((p1 * c).square().sum()).backward()
    grad = 2 * p2 * c.square()
    opt.step()
    ngd_update(p2, grad, 0.02)
    torch.testing.assert_close(p1.detach(), p2)


# ----------------------------------------------------------------------------------------------- loss


def test_num_levels_gives_paper_k6_at_1024():
    assert num_levels(1024) == 6  # 1024, 512, ..., 32 then stop at 16 (paper: k = 6 for 1024^2)
    assert num_levels(128) == 3
    assert num_levels(16) == 0


def _ssim_reference(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SSIM map with scipy's Gaussian filter (sigma 1.5, radius 5, edge replication)."""
    def f(z):
        return ndimage.gaussian_filter(z, sigma=1.5, mode="nearest", truncate=5 / 1.5)

    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))


def test_substitute_loss_matches_direct_formula():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 64, 64, generator=g, dtype=torch.float64)
    y = (x + 0.2 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    got = MultiResolutionLoss("substitute")(x, y)
    xs, ys = x.numpy(), y.numpy()
    expected = np.zeros(2)
    side = 64
    while side > 16:  # levels 64 and 32, then L1 at 16 px
        for b in range(2):
            ref = np.stack([_ssim_reference(xs[b, c], ys[b, c]) for c in range(3)])
            expected[b] += np.abs(xs[b] - ys[b]).mean() + (1 - ref).mean()
        xs = xs.reshape(2, 3, side // 2, 2, side // 2, 2).mean(axis=(3, 5))
        ys = ys.reshape(2, 3, side // 2, 2, side // 2, 2).mean(axis=(3, 5))
        side //= 2
    expected += 0.1 * np.abs(xs - ys).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    # SSIM map alone against scipy
    np.testing.assert_allclose(ssim_map(x[:1, :1], y[:1, :1])[0, 0].numpy(), _ssim_reference(x[0, 0].numpy(),
                               y[0, 0].numpy()), rtol=1e-10, atol=1e-12)


class _Recorder(torch.nn.Module):
    """Stand-in perceptual distance (mean squared difference) that records its inputs."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, y):
        self.calls.append((x.detach().clone(), y.detach().clone()))
        return (x - y).square().mean(dim=(1, 2, 3))


def test_lpips_levels_l1_at_coarsest_and_inpainting_noise():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(1, 3, 128, 128, generator=g, dtype=torch.float64)
    y = torch.rand(1, 3, 128, 128, generator=g, dtype=torch.float64)
    rec = _Recorder()
    loss = MultiResolutionLoss("lpips", rec)
    got = loss(x, y)
    assert [c[0].shape[-1] for c in rec.calls] == [128, 64, 32]  # equal-weight levels while side > 16
    expected = sum(float((F.avg_pool2d(x, 2**i) - F.avg_pool2d(y, 2**i)).square().mean()) for i in range(3))
    expected += 0.1 * float((F.avg_pool2d(x, 8) - F.avg_pool2d(y, 8)).abs().mean())
    assert got.item() == pytest.approx(expected, rel=1e-12)

    # inpainting: identical N(0.5, 1) noise on the missing pixels of both images, none on known ones
    mask = torch.ones(1, 1, 128, 128, dtype=torch.float64)
    mask[..., 32:96, :] = 0
    rec.calls.clear()
    loss(x * mask, y * mask, mask, torch.Generator().manual_seed(0))
    xn, yn = rec.calls[0]
    torch.testing.assert_close(xn - yn, (x - y) * mask)
    hole = xn[:, :, 32:96]
    assert abs(hole.mean().item() - 0.5) < 0.02 and abs(hole.std().item() - 1.0) < 0.02
    torch.testing.assert_close(xn[:, :, :32], x[:, :, :32])


def test_auto_loss_falls_back_to_substitute_and_announces(monkeypatch, caplog, tiny_g):
    import facerestore.metrics.lpips as lpips_mod

    class Missing:
        def __init__(self, *a, **k):
            raise WeightsMissingError("weights 'lpips-vgg-v0.1' are not cached")

    monkeypatch.setattr(lpips_mod, "LPIPS", Missing)
    with pytest.warns(UserWarning, match="substitute loss"):
        loss = make_loss("auto")
    assert loss.kind == "substitute"
    with pytest.raises(WeightsMissingError):
        make_loss("lpips")
    with pytest.raises(InputError):
        make_loss("vgg")
    with pytest.warns(UserWarning, match="substitute"):
        r = RobustInversionRestorer(generator=tiny_g, task="robust-upsample", loss="auto", steps=(1, 1, 1))
    assert r.loss_kind == "substitute"
    y, p = degrade.apply(torch.rand(1, 3, 32, 32), "robust-upsample", level="XS", generator=0)
    _, details = r.restore(y, params=p, return_details=True)
    assert details.loss_kind == "substitute"


# ---------------------------------------------------------------------------------------- inversion


def test_inpainting_mask_matches_task_mask():
    ones = torch.ones(2, 3, 32, 32)
    y, p = degrade.apply(ones, "robust-inpaint", level="XL", generator=5)
    m = inpainting_mask(p, (32, 32))
    torch.testing.assert_close(m.expand(-1, 3, -1, -1), y)
    assert (m < 0.5).any()
    _, p2 = degrade.apply(ones, "robust-upsample", level="M", generator=5)
    assert inpainting_mask(p2, (4, 4)) is None


@pytest.mark.parametrize("task", ["robust-upsample", "robust-denoise", "robust-deartifact", "robust-inpaint",
                                  "robust-upsample+denoise+deartifact+inpaint"])
def test_surrogate_loss_is_differentiable_end_to_end(tiny_g, task):
    _, x = _known_image(tiny_g)
    y, p = degrade.apply(x, task, level="M", generator=0)
    f_hat = degrade.surrogate(task, p)
    w = tiny_g.mapping.w_avg.clone()[None].requires_grad_(True)
    loss = MultiResolutionLoss("substitute", min_side=2)
    out = loss(f_hat(to_unit_range(tiny_g.synthesis(w))), y, inpainting_mask(p, y.shape[-2:]))
    (grad,) = torch.autograd.grad(out.sum(), w)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_autograd_gradient_matches_finite_differences(tiny_g):
    G = Generator(**tiny_g.config).double().eval()
    G.load_state_dict(tiny_g.state_dict())
    G.requires_grad_(False)
    _, x = _known_image(G)
    y, p = degrade.apply(x, "robust-upsample", level="S", generator=0)
    f_hat = degrade.surrogate("robust-upsample", p)
    loss = MultiResolutionLoss("substitute", min_side=4)

    def fn(w):
        return loss(f_hat(to_unit_range(G.synthesis(w))), y).sum()

    w = G.mapping.w_avg.clone()[None].requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(w), w)
    d = torch.randn(w.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eps = 1e-6
    with torch.no_grad():
        fd = (fn(w + eps * d) - fn(w - eps * d)) / (2 * eps)
    assert float((grad * d).sum()) == pytest.approx(float(fd), rel=1e-5)


_TEST_LRS = (0.16, 0.04, 0.01)  # 2x the paper's: a 15-step budget on a 64-d toy latent space


@pytest.mark.parametrize("task,level", [
    ("robust-upsample", "M"),
    ("robust-inpaint", "XL"),
    ("robust-denoise", "XL"),
    ("robust-deartifact", "XL"),
])
def test_three_phases_lower_the_loss_and_restore_better_than_the_input(tiny_g, task, level):
    _, x = _known_image(tiny_g)
    y, p = degrade.apply(x, task, level=level, generator=0)
    f_hat = degrade.surrogate(task, p)
    loss = make_loss("substitute", min_side=4)
    res = robust_invert(tiny_g, y, f_hat, loss, mask=inpainting_mask(p, y.shape[-2:]), steps=(15, 15, 15),
                        lrs=_TEST_LRS)
    assert list(res.phase_losses) == ["W", "W+", "W++"] and all(len(v) == 15 for v in res.phase_losses.values())
    means = [float(np.mean(v)) for v in res.phase_losses.values()]
    assert means[0] > means[2]
    assert float(res.final_loss.mean()) < res.phase_losses["W"][0]
    baseline = F.interpolate(y, size=32, mode="bicubic", align_corners=False).clamp(0, 1)
    assert _psnr(res.image, x) > _psnr(baseline, x) + 0.5
    assert res.image.shape == (1, 3, 32, 32) and 0 <= res.image.min() and res.image.max() <= 1
    # W++: one latent per output filter of every modulated layer
    assert [t.shape[1] for t in res.w_pp] == [s.out_channels for s in tiny_g.synthesis.layer_specs]


def test_an_inpainted_face_does_not_depend_on_the_other_faces_of_its_batch(tiny_g):
    """Inpainting noise is drawn per face: the first face restored alone or with another face beside it comes out
    the same (it used one generator for the whole batch, so the batch changed every face's noise)."""
    xa, xb = _known_image(tiny_g, seed=2)[1], _known_image(tiny_g, seed=3)[1]
    y, p = degrade.apply(torch.cat([xa, xb]), "robust-inpaint", level="M", generator=0)
    mask = inpainting_mask(p, (32, 32))

    def run(n: int) -> torch.Tensor:
        f_hat = degrade.surrogate("robust-inpaint", p[:n])
        return robust_invert(tiny_g, y[:n], f_hat, make_loss("substitute", min_side=4), mask=mask[:n],
                             steps=(3, 3, 3), seed=7).image

    torch.testing.assert_close(run(1)[0], run(2)[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("task", ["robust-inpaint", "robust-denoise"])
def test_a_face_comes_out_the_same_at_any_position_of_its_batch(tiny_g, task):
    """Inpainting noise and stochastic surrogates (shot noise) were seeded by a face's index in the batch: the same
    face second in a batch came out unlike the face alone (up to 0.24 for denoising). Now seeded by its record."""
    xa, xb = _known_image(tiny_g, seed=2)[1], _known_image(tiny_g, seed=3)[1]
    y, p = degrade.apply(torch.cat([xa, xb]), task, level="M", generator=0)
    r = RobustInversionRestorer(generator=tiny_g, task=task, loss="substitute", steps=(3, 3, 3), min_side=4,
                                progress=False)
    alone = r.restore(y[:1], params=p[:1])
    second = r.restore(torch.cat([y[1:], y[:1]]), params=[p[1], p[0]])[1:]
    torch.testing.assert_close(alone, second, rtol=0, atol=1e-4)  # float rounding of batched convolutions


def test_inversion_is_deterministic_and_leaves_generator_unchanged(tiny_g):
    _, x = _known_image(tiny_g, seed=2)
    task = "robust-denoise+inpaint"  # stochastic surrogate + inpainting noise
    y, p = degrade.apply(x, task, level="M", generator=0)
    state = {k: v.clone() for k, v in tiny_g.state_dict().items()}
    runs = []
    for _ in range(2):
        loss = make_loss("substitute", min_side=4)
        runs.append(robust_invert(tiny_g, y, degrade.surrogate(task, p), loss, mask=inpainting_mask(p, (32, 32)),
                                  steps=(3, 3, 3), seed=7))
    torch.testing.assert_close(runs[0].image, runs[1].image, rtol=0, atol=0)
    assert runs[0].phase_losses == runs[1].phase_losses
    for k, v in tiny_g.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)
    assert not any(prm.requires_grad for prm in tiny_g.parameters())


def test_dense_wpp_layout_runs_and_moves_rows_by_lr(tiny_g):
    _, x = _known_image(tiny_g)
    y, p = degrade.apply(x, "robust-upsample", level="XS", generator=0)
    res = robust_invert(tiny_g, y, degrade.surrogate("robust-upsample", p), make_loss("substitute", min_side=4),
                        steps=(0, 0, 1), lrs=(0.1, 0.1, 0.3), wpp_layout="dense")
    moved = torch.linalg.vector_norm(res.w_pp - res.w_plus[:, :, None], dim=-1)
    # every row moves by exactly lr, except rows no layer reads (zero gradient) which stay
    assert torch.all(((moved - 0.3).abs() < 1e-5) | (moved < 1e-7))
    read: dict[int, int] = {}
    for s in tiny_g.synthesis.layer_specs:
        read[s.w_index] = max(read.get(s.w_index, 0), s.out_channels)
    assert int((moved > 0.29).sum()) == sum(read.values())


# ------------------------------------------------------------------------------------------ restorer


def test_restorer_api(tiny_g):
    r = RobustInversionRestorer(generator=tiny_g, task="robust-upsample", level="M", loss="substitute",
                                steps=(2, 2, 2), min_side=4)
    _, x = _known_image(tiny_g)
    y, p = degrade.apply(x, "robust-upsample", level="M", generator=0)
    out = r.restore(y, fidelity=0)  # records drawn for the construction task (exact: avg-pool surrogate)
    assert out.shape == (1, 3, 32, 32) and out.dtype == y.dtype
    # the same inversion (only the projection reads the records' filter)
    torch.testing.assert_close(out, r.restore(y, params=p, fidelity=0), rtol=0, atol=0)
    _, det = r.restore(y, params=p, return_details=True)
    assert set(det.phase_losses) == {"W", "W+", "W++"}
    comp = "robust-upsample+denoise+deartifact+inpaint"
    yc, pc = degrade.apply(x, comp, generator=0)
    assert r.restore(yc, task=comp, params=pc).shape == (1, 3, 32, 32)
    yi, _ = degrade.apply(x, "robust-inpaint", generator=0)
    with pytest.raises(InputError, match="params"):
        r.restore(yi, task="robust-inpaint")
    with pytest.raises(InputError):
        r.restore(torch.rand(1, 3, 8, 8))  # 32 px generator / 8 = 4 px targets expected
    with pytest.raises(InputError):
        RobustInversionRestorer(generator=tiny_g, weights="x.pkl", loss="substitute")
    assert math.isclose(sum(r.lrs), 0.08 + 0.02 + 0.005) and r.steps == (2, 2, 2)
    assert RobustInversionRestorer(generator=tiny_g, loss="substitute").steps == (150, 150, 150)


def test_lpips_kind_runs_with_the_real_vgg_network():
    from facerestore.metrics.lpips import LPIPSNet

    torch.manual_seed(0)
    net = LPIPSNet("vgg").eval().requires_grad_(False)  # random weights: only shapes and gradients matter here
    loss = MultiResolutionLoss("lpips", net)
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    y = torch.rand(2, 3, 64, 64)
    out = loss(x, y)
    assert out.shape == (2,) and torch.isfinite(out).all()
    (g,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    torch.testing.assert_close(loss(y, y), torch.zeros(2), atol=1e-6, rtol=0)


def test_default_prior_is_the_builtin_64px_face_generator():
    from facerestore.nn.stylegan2_io import builtin_prior_path

    r = RobustInversionRestorer(weights="builtin:stylegan2-face-64.safetensors", task="robust-upsample", level="S",
                                loss="substitute", steps=(2, 2, 2))
    assert r.G.img_resolution == 64 and r.spec.size == 64
    assert all(float(p) == 0.0 for n, p in r.G.named_parameters() if n.endswith("noise_strength"))
    clean = to_unit_range(r.G(torch.randn(1, 512, generator=torch.Generator().manual_seed(0)))).clamp(0, 1)
    y, p = degrade.apply(clean, "robust-upsample", level="S", generator=0)
    assert y.shape[-1] == 16 and r.restore(y, params=p).shape == (1, 3, 64, 64)
    from safetensors import safe_open

    with safe_open(builtin_prior_path(), "pt") as f:  # shipped in half precision with its settings inside
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
        assert "stylegan2_config" in f.metadata()


def test_blind_mode_projects_the_resized_input_onto_the_prior(tiny_g):
    from facerestore.methods import resize_crop

    r = RobustInversionRestorer(generator=tiny_g, loss="substitute", steps=(3, 3, 3), min_side=4)
    _, x = _known_image(tiny_g)
    big = F.interpolate(x, size=(64, 64), mode="bicubic", align_corners=False).clamp(0, 1)
    out, det = r.restore(big, return_details=True)  # no task: f = identity at the generator's resolution
    assert out.shape == (1, 3, 32, 32)
    torch.testing.assert_close(out, r.restore(resize_crop(big, (32, 32))), rtol=0, atol=0)
    assert det.phase_losses["W++"][-1] < det.phase_losses["W"][0]


def test_fidelity_projects_onto_the_observation_through_its_filter(tiny_g):
    from facerestore.methods import resize_crop
    from facerestore.methods.inversion.restorer import DEFAULT_DETAIL, UNKNOWN_FILTER, recorded_filters

    x = torch.cat([_known_image(tiny_g)[1], _known_image(tiny_g, seed=5)[1]])
    r = RobustInversionRestorer(generator=tiny_g, loss="substitute", steps=(2, 2, 2), min_side=4, progress=False)
    # tasks project by default, whole-photo crops (the blind mode) do not
    assert r.spec.supports_fidelity and r.fidelity_used(None, blind=False) == 1.0 and r.fidelity_used(None) == 0.0
    # robust-upsample with its records: each image is projected through the filter that made its observation
    y, p = degrade.apply(x, "robust-upsample", level="M", generator=3)
    filters = recorded_filters(p, 2)
    assert filters == [rec["ops"][0]["method"] for rec in p] and len(set(filters)) == 2  # two filters in one batch
    out, det = r.restore(y, params=p, return_details=True)
    assert det.projection_filters == filters and det.projection_detail == DEFAULT_DETAIL == r.detail_used(blind=False)
    ref = torch.cat([degrade.project_resize(det.image[i:i + 1], y[i:i + 1], filters[i], detail=DEFAULT_DETAIL)
                     for i in range(2)])
    torch.testing.assert_close(out, ref.clamp(0, 1), rtol=0, atol=0)
    reduce = lambda t: torch.cat([degrade.resize(t[i:i + 1], size=y.shape[-2:], method=filters[i], clamp=False)  # noqa: E731
                                  for i in range(2)])
    gaps = [(reduce(r.restore(y, params=p, fidelity=f)) - y).abs().mean().item() for f in (0.0, 0.5, 1.0)]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.1 * gaps[0]
    # without records the filter is unknown: the guess UNKNOWN_FILTER (bicubic) for every image
    out_u, det_u = r.restore(y, task="robust-upsample", return_details=True)
    assert det_u.projection_filters == [UNKNOWN_FILTER] * 2 == ["bicubic"] * 2
    torch.testing.assert_close(out_u, degrade.project_resize(det_u.image, y, "bicubic", detail=DEFAULT_DETAIL).clamp(
        0, 1), rtol=0, atol=0)
    with pytest.raises(InputError, match="3 records for 2 images"):
        recorded_filters([*p, p[0]], 2)
    plain = [{**p[0], "ops": [{**p[0]["ops"][0], "antialias": False}]}, p[1]]
    with pytest.raises(InputError, match="antialiased"):
        recorded_filters(plain, 2)
    # other tasks keep the paper's output, and refuse an explicit fidelity
    yd, pd = degrade.apply(x, "robust-denoise", level="M", generator=0)
    out_d, det_d = r.restore(yd, params=pd, return_details=True)
    torch.testing.assert_close(out_d, det_d.image, rtol=0, atol=0)
    assert det_d.projection_filters is None
    with pytest.raises(InputError, match="drop fidelity"):
        r.restore(yd, params=pd, fidelity=0.5)
    # the blind mode at the generator's full side projects onto the 2x reduction, not onto the input's pixels
    face = resize_crop(F.interpolate(x, size=(64, 64), mode="bicubic", align_corners=False).clamp(0, 1), (32, 32))
    out_b, det_b = r.restore(face, fidelity=1.0, return_details=True)
    assert det_b.work_resolution == 32 and det_b.projection_detail == 1.0  # whole-photo faces keep all the detail
    torch.testing.assert_close(out_b, degrade.project_area(det_b.image, F.avg_pool2d(face, 2)).clamp(0, 1),
                               rtol=0, atol=0)
    assert not torch.allclose(out_b, face, atol=1e-3)


def test_detail_scales_the_prior_detail_the_observation_cannot_confirm(tiny_g):
    x = torch.cat([_known_image(tiny_g)[1], _known_image(tiny_g, seed=5)[1]])
    y, p = degrade.apply(x, "robust-upsample", level="M", generator=3)
    outs, dets = {}, {}
    for d in (0.0, 0.5, 1.0):
        r = RobustInversionRestorer(generator=tiny_g, loss="substitute", steps=(2, 2, 2), min_side=4, progress=False,
                                    detail=d)
        outs[d], dets[d] = r.restore(y, params=p, return_details=True)
        assert dets[d].projection_detail == d
    torch.testing.assert_close(dets[0.0].image, dets[1.0].image, rtol=0, atol=0)  # the same inversion (seeded)
    filters = dets[1.0].projection_filters
    # detail 0 at fidelity 1: the smooth image whose reduction is y, nothing of the generator's image left
    smooth = torch.cat([degrade.project_resize(torch.zeros(1, 3, 32, 32), y[i:i + 1], filters[i]) for i in range(2)])
    torch.testing.assert_close(outs[0.0], smooth.clamp(0, 1), rtol=0, atol=1e-6)
    # the unclamped outputs are linear in detail, and every detail gives the same reduction
    raw = {d: torch.cat([degrade.project_resize(dets[d].image[i:i + 1], y[i:i + 1], filters[i], detail=d)
                         for i in range(2)]) for d in outs}
    torch.testing.assert_close(raw[0.5], 0.5 * (raw[0.0] + raw[1.0]), rtol=0, atol=1e-6)
    reduce = lambda t: torch.cat([degrade.resize(t[i:i + 1], size=y.shape[-2:], method=filters[i], clamp=False)  # noqa: E731
                                  for i in range(2)])
    torch.testing.assert_close(reduce(raw[0.5]), reduce(raw[1.0]), rtol=0, atol=1e-5)
    assert (outs[0.5] - outs[0.0]).abs().mean() < (outs[1.0] - outs[0.0]).abs().mean()
    # an explicit detail below 1 is refused where there is no observation to keep, and outside [0, 1]
    yd, pd = degrade.apply(x, "robust-denoise", level="M", generator=0)
    r = RobustInversionRestorer(generator=tiny_g, loss="substitute", steps=(1, 1, 1), min_side=4, progress=False,
                                detail=0.5)
    with pytest.raises(InputError, match="drop detail"):
        r.restore(yd, params=pd)
    with pytest.raises(InputError, match="detail must lie in"):
        RobustInversionRestorer(generator=tiny_g, loss="substitute", detail=2.0)


def test_task_level_is_read_from_the_size_or_required(tiny_g):
    """Without records or a level, robust-upsample's level is the size ratio (exact); levelled tasks whose
    level cannot be read from the target are refused instead of silently assuming M."""
    r = RobustInversionRestorer(generator=tiny_g, task="robust-upsample", loss="substitute", steps=(1, 1, 1),
                                min_side=4)
    _, x = _known_image(tiny_g)
    y, p = degrade.apply(x, "robust-upsample", level="S", generator=0)  # 32 px / 4
    assert r._level("robust-upsample", y, None) == "S"
    torch.testing.assert_close(r.restore(y, fidelity=0), r.restore(y, params=p, fidelity=0), rtol=0, atol=0)
    with pytest.raises(InputError, match="not a robust-upsample level"):
        r.restore(torch.rand(1, 3, 6, 6))
    yd, _ = degrade.apply(x, "robust-denoise", level="L", generator=0)
    with pytest.raises(InputError, match="not guessed"):
        r.restore(yd, task="robust-denoise")
    assert r.restore(yd, task="robust-denoise", level="L").shape == (1, 3, 32, 32)


# ------------------------------------------------------------------------------------- work resolution, bf16


@pytest.fixture(scope="module")
def tiny_msg():
    """A tiny MobileStyleGAN (32 px image; renders 16 / 8 px as exact box averages)."""
    from conftest import tiny_mobilestylegan

    return tiny_mobilestylegan((16, 16, 8), with_w_avg=True).requires_grad_(False)


def _msg_target(G) -> torch.Tensor:
    w = G.mapping.w_avg + 0.5 * (G.mapping(torch.randn(1, 16, generator=torch.Generator().manual_seed(3))) -
                                 G.mapping.w_avg)
    with torch.no_grad():
        return to_unit_range(G.synthesis(w)).clamp(0, 1)


def test_work_resolution_is_checked():
    from conftest import tiny_mobilestylegan
    from facerestore.methods.inversion.invert import check_work_resolution

    G = tiny_mobilestylegan((16, 16, 8))
    assert check_work_resolution(G, None) is None and check_work_resolution(G, 32) is None  # its own size
    assert check_work_resolution(G, 16) == 16
    for bad in (24, 64, 2):
        with pytest.raises(ValueError):
            check_work_resolution(G, bad)
    torch.manual_seed(0)
    sg2 = Generator(z_dim=16, w_dim=16, img_resolution=32, channel_base=64, channel_max=8, mapping_layers=1)
    with pytest.raises(ValueError, match="only its own"):
        check_work_resolution(sg2, 16)  # StyleGAN2 has no cheaper exact output
    with pytest.raises(InputError, match="work_resolution"):
        RobustInversionRestorer(generator=G, loss="substitute", work_resolution=12)
    # defaults: the prior's own size for small or StyleGAN2 priors, 512 for the 1024 px MobileStyleGAN
    from facerestore.methods.inversion.restorer import DEFAULT_WORK_RESOLUTION
    from facerestore.nn import mobilestylegan as msg

    assert RobustInversionRestorer(generator=G, loss="substitute").work_resolution == 32
    assert RobustInversionRestorer(generator=sg2, loss="substitute").work_resolution == 32
    big = msg.Generator()  # the FFHQ architecture (zero weights): only its sizes matter here
    assert RobustInversionRestorer(generator=big, loss="substitute").work_resolution == DEFAULT_WORK_RESOLUTION == 512
    assert RobustInversionRestorer(generator=big, loss="substitute", work_resolution=1024).work_resolution == 1024


def test_inversion_at_a_work_resolution_optimises_the_box_average_and_renders_full_size(tiny_msg):
    G = tiny_msg
    target = F.avg_pool2d(_msg_target(G), 2)  # 16 px: what the generator's 16 px output must match
    loss = make_loss("substitute", min_side=4)
    res = robust_invert(G, target, lambda x: x, loss, steps=(4, 4, 4), resolution=16)
    assert res.image.shape == (1, 3, 32, 32)  # rendered at the full size
    with torch.no_grad():
        seen = to_unit_range(G.synthesis(res.w_pp, resolution=16))
    # the 16 px image the loss saw is exactly the 2x2 box average of the returned 32 px one (before clamping)
    full = to_unit_range(G.synthesis(res.w_pp))
    torch.testing.assert_close(F.avg_pool2d(full, 2), seen, rtol=0, atol=1e-5)
    torch.testing.assert_close(res.final_loss, loss(seen, target, None, torch.Generator().manual_seed(0)))
    assert res.phase_losses["W++"][-1] < res.phase_losses["W"][0]
    # its own size is the default (bit for bit)
    a = robust_invert(G, _msg_target(G), lambda x: x, loss, steps=(2, 2, 2), resolution=32)
    b = robust_invert(G, _msg_target(G), lambda x: x, loss, steps=(2, 2, 2))
    torch.testing.assert_close(a.image, b.image, rtol=0, atol=0)


def test_restorer_blind_mode_at_a_work_resolution(tiny_msg):
    x = _msg_target(tiny_msg)
    big = F.interpolate(x, size=(64, 64), mode="bicubic", align_corners=False).clamp(0, 1)
    r = RobustInversionRestorer(generator=tiny_msg, loss="substitute", steps=(3, 3, 3), min_side=4,
                                work_resolution=16)
    out = r.restore(big)
    assert out.shape == (1, 3, 32, 32) and r.spec.size == 32  # the method still returns the prior's size
    from facerestore.methods import resize_crop

    target = resize_crop(big, (16, 16))
    ref = robust_invert(tiny_msg, target, lambda v: v, r.loss_fn, steps=(3, 3, 3), resolution=16)
    torch.testing.assert_close(out, ref.image, rtol=0, atol=0)  # by default the paper's output
    # with fidelity 1 that image is moved onto the 16 px observation: its box average reproduces it
    projected = r.restore(big, fidelity=1.0)
    torch.testing.assert_close(projected, degrade.project_area(ref.image, target).clamp(0, 1), rtol=0, atol=0)
    assert (F.avg_pool2d(projected, 2) - target).abs().max() < (F.avg_pool2d(ref.image, 2) - target).abs().max()


def test_bf16_generator_keeps_float32_latents_and_loss(tiny_msg):
    import copy

    x = _msg_target(tiny_msg)
    r32 = RobustInversionRestorer(generator=copy.deepcopy(tiny_msg), loss="substitute", steps=(4, 4, 4),
                                  min_side=4, progress=False)
    r16 = RobustInversionRestorer(generator=copy.deepcopy(tiny_msg), loss="substitute", steps=(4, 4, 4),
                                  min_side=4, progress=False).set_half(True)
    assert r16.G.synthesis.const.dtype == torch.bfloat16
    out32, d32 = r32.restore(x, return_details=True)
    out16, d16 = r16.restore(x, return_details=True)
    assert out16.dtype == torch.float32 and d16.w.dtype == torch.float32
    assert all(t.dtype == torch.float32 for t in d16.w_pp)
    # bf16 rounding changes the path a little, not the result: losses and images agree closely
    assert abs(float(d16.final_loss) - float(d32.final_loss)) < 0.1 * float(d32.final_loss)
    assert _psnr(out16, out32) > 30
    assert d16.phase_losses["W++"][-1] < d16.phase_losses["W"][0]


def test_bf16_leaves_the_mapping_and_loss_exactly_float32(tiny_msg):
    import copy

    r = RobustInversionRestorer(generator=copy.deepcopy(tiny_msg), loss="substitute", steps=(1, 1, 1), min_side=4,
                                progress=False).set_half(True)
    assert r.G.synthesis.const.dtype == torch.bfloat16 and r.precision == "bf16"
    assert torch.equal(r.G.mapping.w_avg, tiny_msg.mapping.w_avg)  # the start latent, not rounded to bf16
    assert all(p.dtype == torch.float32 for p in r.G.mapping.parameters())
    assert all(t.dtype == torch.float32 for t in r.loss_fn.state_dict().values() if t.is_floating_point())


def test_records_as_a_tuple_are_read_like_a_list(tiny_g):
    _, x = _known_image(tiny_g)
    y, params = degrade.apply(x, "robust-upsample", level="XS", generator=0)
    r = RobustInversionRestorer(generator=tiny_g, loss="substitute", steps=(2, 2, 2), min_side=4, progress=False)
    torch.testing.assert_close(r.restore(y, params=tuple(params)), r.restore(y, params=list(params)))


def test_bad_phase_settings_fail_at_construction(tiny_g):
    for kw, match in (({"steps": (1, 2)}, "three phases"), ({"steps": (0, 1, 1)}, "three phases"),
                      ({"wpp_layout": "dens"}, "wpp_layout")):
        with pytest.raises(InputError, match=match):
            RobustInversionRestorer(generator=tiny_g, loss="substitute", **kw)


# ------------------------------------------------------------------------------ blind mode at the detail side


def _rms_after_round_trip(x: torch.Tensor, s: int) -> float:
    """Independent of detail_side: F.interpolate directly (area down, bicubic up, clamped)."""
    full = x.shape[-1]
    small = F.interpolate(x, size=(s, s), mode="area")
    back = F.interpolate(small, size=(full, full), mode="bicubic", align_corners=False).clamp(0, 1)
    return float((back - x).square().mean().sqrt())


def test_detail_side_is_the_smallest_side_within_the_tolerance():
    from facerestore.methods.restorer import DETAIL_TOLERANCE, detail_side, resize_crop

    g = torch.Generator().manual_seed(0)
    noise = torch.rand(2, 3, 128, 128, generator=g)
    assert detail_side(noise) == [128, 128]  # every pixel carries detail
    assert detail_side(torch.full((1, 3, 64, 64), 0.3)) == [16]  # nothing to lose: the smallest side
    assert detail_side(torch.full((1, 3, 64, 64), 0.3), min_side=5) == [8]  # min_side rounded up to a power of 2
    # smooth content enlarged from 16, 32, 64 px into 256 px crops: the definition holds, checked independently
    face = resize_crop(torch.rand(1, 3, 32, 32, generator=g), (256, 256))
    crops = torch.cat([resize_crop(resize_crop(face, (s, s)), (256, 256)) for s in (16, 32, 64)])
    sides = detail_side(crops)
    for crop, side, source in zip(crops, sides, (16, 32, 64)):
        # near the side it was enlarged from; above it, as bicubic enlargement leaves detail near that side's
        # Nyquist frequency that a reduction to it and back does not reproduce (a real face has little there)
        assert source <= side <= 4 * source
        assert _rms_after_round_trip(crop[None], side) <= DETAIL_TOLERANCE
        if side > 16:
            assert _rms_after_round_trip(crop[None], side // 2) > DETAIL_TOLERANCE
    assert sides[0] < sides[1] < sides[2]  # more detail, a larger side
    # per image: a batch gives each image's own answer; a looser tolerance never asks for more
    assert sides == [detail_side(c[None])[0] for c in crops]
    assert all(a <= b for a, b in zip(detail_side(crops, tolerance=4 / 255), sides))
    with pytest.raises(ValueError, match="square"):
        detail_side(torch.rand(1, 3, 32, 48))


def test_blind_mode_compares_a_small_face_at_its_detail_side(tiny_msg):
    from facerestore.methods.restorer import detail_side, resize_crop

    x = _msg_target(tiny_msg)  # a 32 px face of the prior
    crop = resize_crop(resize_crop(x, (4, 4)), (64, 64))  # a 4 px face enlarged into a 64 px crop
    r = RobustInversionRestorer(generator=tiny_msg, loss="substitute", steps=(3, 3, 3), min_side=4, progress=False)
    side = r.blind_side(crop)
    assert side == max(8, detail_side(resize_crop(crop, (32, 32)), min_side=8)[0]) and side < 32  # floor: 2 levels
    out, details = r.restore(crop, return_details=True)
    assert details.work_resolution == side and out.shape == (1, 3, 32, 32)
    ref = robust_invert(tiny_msg, resize_crop(crop, (side, side)), lambda v: v, r.loss_fn, steps=(3, 3, 3),
                        resolution=side)
    torch.testing.assert_close(details.image, ref.image, rtol=0, atol=0)  # the generator's image, before projection
    # a fixed work resolution is kept whatever the face; a face with full detail keeps the full side
    fixed = RobustInversionRestorer(generator=tiny_msg, loss="substitute", min_side=4, work_resolution=32)
    assert fixed.blind_side(crop) == 32
    assert r.blind_side(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))) == 32
    # the batch is compared at its largest side: the sharp face is not starved of detail
    assert r.blind_side(torch.cat([crop, torch.rand(1, 3, 64, 64)])) == 32


def test_blind_mode_reduces_the_image_of_a_generator_that_renders_only_its_own_size():
    from facerestore.methods.restorer import resize_crop

    torch.manual_seed(0)
    sg2 = Generator(z_dim=16, w_dim=16, img_resolution=32, channel_base=64, channel_max=8, mapping_layers=1).eval()
    sg2.requires_grad_(False)
    crop = resize_crop(torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(2)), (64, 64))
    r = RobustInversionRestorer(generator=sg2, loss="substitute", steps=(2, 2, 2), min_side=4, progress=False)
    out, details = r.restore(crop, return_details=True)
    side = details.work_resolution
    assert side < 32 and out.shape == (1, 3, 32, 32)
    with torch.no_grad():  # the loss saw the area reduction of the generator's own image
        seen = F.interpolate(to_unit_range(sg2.synthesis(details.w_pp)), size=(side, side), mode="area")
    target = resize_crop(crop, (side, side))
    torch.testing.assert_close(details.final_loss, r.loss_fn(seen, target, None, torch.Generator().manual_seed(0)))


def test_records_say_which_loss_steps_and_start_the_inversion_used(tiny_g):
    """`auto` resolves to LPIPS-VGG once its weights are cached: every output record says which loss (and budget,
    and start) made it."""
    r = RobustInversionRestorer(generator=tiny_g, loss="substitute", steps=(2, 3, 4), min_side=4, progress=False)
    d = r.describe()
    assert d["loss"] == "substitute" and d["steps"] == [2, 3, 4] and d["start"] == "mean"


def test_under_bf16_the_method_sees_the_float32_crop_the_pipeline_grouped_it_by(tiny_msg):
    """set_half rounded the input to bf16 before the blind side was measured: a face near a side threshold was
    fitted at another side than the batch key the pipeline grouped it by (one face pulling its batch-mates up)."""
    import copy

    r = RobustInversionRestorer(generator=copy.deepcopy(tiny_msg), loss="substitute", steps=(1, 1, 1), min_side=4,
                                progress=False).set_half(True)
    seen = []
    real = r.blind_side
    r.blind_side = lambda lq: seen.append(lq.dtype) or real(lq)
    r.restore(torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(0)), size=(48, 48))
    assert seen and all(d == torch.float32 for d in seen)
