"""Differentiable surrogates: forward vs real degradations (libjpeg), surrogate gradients vs their definitions."""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable

import numpy as np
import pytest
import scipy.fft
import torch
from PIL import Image

import facerestore.degrade.diffjpeg as dj
import facerestore.degrade.surrogates as sg
from facerestore.degrade._random import make_generator
from facerestore.degrade.diffjpeg import (
    DiffJPEG,
    block_dct,
    block_idct,
    diff_jpeg,
    rgb_to_ycbcr_jfif,
    ycbcr_to_rgb_jfif,
)
from facerestore.degrade.jpeg import encode_jpeg, jpeg, quality_to_tables
from facerestore.degrade.noise import dead_pixels
from facerestore.degrade.surrogates import (
    avgpool_downsample,
    bernoulli_unknown_mask,
    clamp_surrogate,
    cubic_round,
    known_mask,
    poisson_bernoulli_surrogate,
    poisson_gaussian,
)
from facerestore.errors import InputError

QUALITIES = [6, 9, 12, 15, 18, 30, 50, 75, 95]
SUBSAMPLINGS = ["4:4:4", "4:2:2", "4:2:0"]
MAX_MAE = 2.0 / 255


def rand(*shape, seed=0, dtype=torch.float64):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def to8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255 + 0.5).floor() / 255


# ---------------------------------------------------------------- elementary surrogate gradients


def test_clamp_surrogate_forward_and_gradient():
    x = torch.linspace(-2, 3, 501, dtype=torch.float64, requires_grad=True)
    y = clamp_surrogate(x)
    assert torch.equal(y, x.detach().clamp(0, 1))
    (g,) = torch.autograd.grad(y.sum(), x)
    s = torch.sigmoid(2 * (x.detach() - 0.5))
    assert torch.allclose(g, 2 * s * (1 - s), atol=1e-15)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.8, 1.0])
def test_cubic_round_forward_and_gradient(alpha):
    x = torch.linspace(-4, 4, 1601, dtype=torch.float64, requires_grad=True)
    y = cubic_round(x, alpha)
    xn = x.detach().numpy()
    ref = np.sign(xn) * np.floor(np.abs(xn) + 0.5)  # ties away from zero, like libjpeg's quantiser
    assert np.array_equal(y.detach().numpy(), ref)
    assert float(cubic_round(torch.tensor(2.5), alpha)) == 3.0 and float(cubic_round(torch.tensor(-2.5), alpha)) == -3.0
    (g,) = torch.autograd.grad(y.sum(), x)
    d = xn - ref
    assert np.allclose(g.numpy(), (1 - alpha) + 3 * alpha * d**2, atol=1e-15)
    # Same as autograd of the paper's lerp(x, round(x) + (x - round(x))^3, alpha) with round held constant.
    xx = x.detach().clone().requires_grad_(True)
    r = torch.from_numpy(ref)
    (g2,) = torch.autograd.grad(torch.lerp(xx, r + (xx - r) ** 3, alpha).sum(), xx)
    assert torch.allclose(g, g2, atol=1e-15)


def test_cubic_round_rejects_bad_alpha():
    with pytest.raises(InputError):
        cubic_round(torch.zeros(3), 1.5)


# ------------------------------------------------------ surrogate-gradient check with anchored proxies


class Anchored:
    """A non-smooth op replaced, around recorded inputs x0, by exact(x0) + g(x) - g(x0) with g smooth.

    Its finite-difference derivative is g'(x0): exactly the surrogate gradient the library claims. The
    op's other arguments are also frozen at their recorded values.
    """

    def __init__(self, exact: Callable, smooth: Callable):
        self.exact, self.smooth = exact, smooth
        self.anchors: list[tuple[torch.Tensor, tuple]] = []
        self.recording = True
        self.i = 0

    def __call__(self, x, *args):
        if self.recording:
            args = tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args)
            self.anchors.append((x.detach().clone(), args))
            return self.exact(x, *args)
        x0, args = self.anchors[self.i]
        self.i += 1
        return self.exact(x0, *args) + self.smooth(x, x0, *args) - self.smooth(x0, x0, *args)


def _clamp_proxy() -> Anchored:
    return Anchored(lambda x: x.clamp(0, 1), lambda x, x0: torch.sigmoid(2 * (x - 0.5)))


def _round_proxy() -> Anchored:
    def smooth(x, x0, alpha):
        r0 = sg.round_half_away(x0)
        return (1 - alpha) * x + alpha * (x - r0) ** 3

    return Anchored(lambda x, alpha: sg.round_half_away(x), smooth)


def _identity_proxy(exact: Callable) -> Anchored:
    return Anchored(exact, lambda x, x0, *args: x)


@contextlib.contextmanager
def patched(module, proxies: dict[str, Anchored]):
    saved = {name: getattr(module, name) for name in proxies}
    try:
        for name, proxy in proxies.items():
            setattr(module, name, proxy)
        yield
    finally:
        for name, fn in saved.items():
            setattr(module, name, fn)


def surrogate_gradcheck(fn: Callable, x: torch.Tensor, module, make_proxies: Callable, fast: bool = False) -> None:
    """gradcheck: numerical Jacobian of the anchored proxy of ``fn`` vs ``fn``'s own autograd gradient."""
    proxies = make_proxies()
    with patched(module, proxies):
        expected = fn(x)
    for p in proxies.values():
        p.recording = False

    class Wrapped(torch.autograd.Function):
        @staticmethod
        def forward(ctx, inp):
            ctx.save_for_backward(inp)
            for p in proxies.values():
                p.i = 0
            with patched(module, proxies):
                return fn(inp)

        @staticmethod
        def backward(ctx, grad):
            (inp,) = ctx.saved_tensors
            with torch.enable_grad():
                xi = inp.detach().requires_grad_(True)
                return torch.autograd.grad(fn(xi), xi, grad)[0]

    # The proxy reproduces the real forward at x, so the check is at the right point.
    assert torch.allclose(Wrapped.apply(x), fn(x), atol=1e-12) and torch.allclose(expected, fn(x), atol=1e-12)
    xg = x.detach().requires_grad_(True)
    assert torch.autograd.gradcheck(Wrapped.apply, (xg,), eps=1e-6, atol=1e-6, fast_mode=fast)


def _diffjpeg_proxies() -> dict[str, Anchored]:
    return {
        "cubic_round": _round_proxy(),
        "clamp_surrogate": _clamp_proxy(),
        "_range_limit": _identity_proxy(dj._range_limit),
        # forward = libjpeg's integer result, gradient = the float chain's
        "_forward_as": Anchored(lambda f, value: value.to(f.dtype), lambda f, f0, value: f),
    }


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize(
    ("subsampling", "shape", "fast"),
    [
        pytest.param("4:2:0", (1, 3, 8, 8), None, marks=pytest.mark.slow),
        ("4:2:0", (1, 3, 16, 16), True),
        ("4:2:2", (1, 3, 16, 16), True),
        ("4:4:4", (1, 3, 16, 16), True),
        ("4:2:0", (1, 3, 10, 14), True),
    ],
)
def test_diff_jpeg_surrogate_gradient(subsampling, shape, fast, exact):
    # Full Jacobian once (float forward: the integer emulation is slower), random projections elsewhere.
    fast = exact if fast is None else fast
    # Extend the range so the clamps and the [0, 255] range limit are exercised too.
    x = rand(*shape, seed=3) * 1.2 - 0.1
    fn = lambda t: diff_jpeg(t, 20, subsampling=subsampling, alpha=0.8, exact=exact)  # noqa: E731
    surrogate_gradcheck(fn, x, dj, _diffjpeg_proxies, fast=fast)


def _pil_tables(quality: int) -> tuple[np.ndarray, np.ndarray]:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="JPEG", quality=quality)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        return (np.array(im.quantization[i], np.float64).reshape(8, 8) for i in (0, 1))


def _ref_chain_jacobian(x: np.ndarray, quality: int, subsampling: str, alpha: float) -> np.ndarray:
    """Independent numpy Jacobian of the float DiffJPEG chain (before the output clamp), 0-1 units.

    JFIF colour matrix, edge-padded box downsampling, scipy's orthonormal DCT, the cubic-round derivative
    (1-a) + 3a (c/Q - round(c/Q))^2, libjpeg's 3/4-1/4 triangle upsampling written out, inverse colour matrix.
    """
    luma = np.array([0.299, 0.587, 0.114])  # JFIF / BT.601: Cb = (B - Y) / 1.772, Cr = (R - Y) / 1.402
    m = np.stack([luma, (np.eye(3)[2] - luma) / 1.772, (np.eye(3)[0] - luma) / 1.402])
    hf, vf = {"4:4:4": (1, 1), "4:2:2": (2, 1), "4:2:0": (2, 2)}[subsampling]
    _, h, w = x.shape
    qy, qc = _pil_tables(quality)

    def pad(a, mh, mw):
        return np.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, -a.shape[-2] % mh), (0, -a.shape[-1] % mw)], mode="edge")

    def down(a):
        a = pad(a, vf, 8 * hf)
        return a.reshape(*a.shape[:-2], a.shape[-2] // vf, vf, a.shape[-1] // hf, hf).mean((-3, -1))

    def up1(a, axis):
        a = np.moveaxis(a, axis, -1)
        prev = np.concatenate([a[..., :1], a[..., :-1]], -1)
        nxt = np.concatenate([a[..., 1:], a[..., -1:]], -1)
        out = np.stack([0.75 * a + 0.25 * prev, 0.75 * a + 0.25 * nxt], -1).reshape(*a.shape[:-1], -1)
        return np.moveaxis(out, -1, axis)

    def dct_gain(plane, table):
        """Derivative of the quantise/dequantise step for each coefficient of the (padded) plane."""
        p = pad(plane, 8, 8) - 128.0
        hh, ww = p.shape
        blocks = p.reshape(hh // 8, 8, ww // 8, 8).transpose(0, 2, 1, 3)
        q = scipy.fft.dctn(blocks, norm="ortho", axes=(-2, -1)) / table
        frac = q - np.sign(q) * np.floor(np.abs(q) + 0.5)
        return (1 - alpha) + 3 * alpha * frac**2

    def through(t, gain):  # t (N, hh, ww) tangent planes, already padded
        n, hh, ww = t.shape
        blocks = t.reshape(n, hh // 8, 8, ww // 8, 8).transpose(0, 1, 3, 2, 4)
        c = scipy.fft.dctn(blocks, norm="ortho", axes=(-2, -1)) * gain
        rec = scipy.fft.idctn(c, norm="ortho", axes=(-2, -1))
        return rec.transpose(0, 1, 3, 2, 4).reshape(n, hh, ww)

    ycc = np.einsum("ij,jhw->ihw", m, x * 255.0)
    ycc[1:] += 128.0
    chroma = down(ycc[1:])
    gy = dct_gain(ycc[0], qy)
    gc = [dct_gain(chroma[i], qc) for i in range(2)]

    n = 3 * h * w
    basis = np.eye(n).reshape(n, 3, h, w) * 255.0
    t = np.einsum("ij,njhw->nihw", m, basis)
    ty = through(pad(t[:, 0], 8, 8), gy)[:, :h, :w]
    tc = down(t[:, 1:])
    tc = np.stack([through(pad(tc[:, i], 8, 8), gc[i]) for i in range(2)], 1)
    tc = tc[..., : -(-h // vf), : -(-w // hf)]
    if vf == 2:
        tc = up1(tc, -2)
    if hf == 2:
        tc = up1(tc, -1)
    tycc = np.concatenate([ty[:, None], tc[..., :h, :w]], 1)
    out = np.einsum("ij,njhw->nihw", np.linalg.inv(m), tycc) / 255.0
    return out.reshape(n, n).T  # J[output, input]


@pytest.mark.parametrize(
    ("subsampling", "shape"), [("4:2:0", (16, 16)), ("4:2:2", (10, 14)), ("4:4:4", (16, 8)), ("4:2:0", (9, 13))]
)
@pytest.mark.parametrize("exact", [True, False])
def test_diff_jpeg_gradient_matches_independent_reference(subsampling, shape, exact):
    q, alpha = 60, 0.8
    x = rand(1, 3, *shape, seed=21) * 0.4 + 0.3  # mid-range: no clamping, so the output equals the chain
    xg = x.clone().requires_grad_(True)
    y = diff_jpeg(xg, q, subsampling=subsampling, alpha=alpha, exact=exact)
    assert 0 < float(y.detach().min()) and float(y.detach().max()) < 1
    jac = _ref_chain_jacobian(x[0].numpy(), q, subsampling, alpha)
    s = torch.sigmoid(2 * (y.detach() - 0.5))
    dclamp = (2 * s * (1 - s)).flatten().numpy()
    for seed in range(3):
        wv = rand(*y.shape, seed=100 + seed)
        (g,) = torch.autograd.grad(y, xg, wv, retain_graph=True)
        ref = jac.T @ (wv.flatten().numpy() * dclamp)
        assert np.allclose(g.flatten().numpy(), ref, atol=1e-9), np.abs(g.flatten().numpy() - ref).max()


def test_noise_surrogates_gradients():
    x = rand(1, 3, 16, 16, seed=4) * 1.4 - 0.2
    _, params = poisson_bernoulli_surrogate(x, 12.0, 0.3, generator=0)
    for fn in (
        lambda t: poisson_gaussian(t, None, params=params)[0],
        lambda t: poisson_gaussian(t, None, params=params, preclamp=False)[0],
        lambda t: poisson_bernoulli_surrogate(t, None, None, params=params)[0],
    ):
        surrogate_gradcheck(fn, x, sg, lambda: {"clamp_surrogate": _clamp_proxy()}, fast=True)


def test_poisson_gaussian_gradient_closed_form():
    x = (rand(1, 3, 16, 16, seed=5) * 1.4 - 0.2).requires_grad_(True)
    k = 24.0
    y, params = poisson_gaussian(x, k, generator=1)
    (g,) = torch.autograd.grad(y.sum(), x)
    n = torch.randn((3, 16, 16), generator=make_generator(params[0]["seed"]), dtype=torch.float32).double()[None]

    def ds(v):
        s = torch.sigmoid(2 * (v - 0.5))
        return 2 * s * (1 - s)

    xd = x.detach()
    c = xd.clamp(0, 1)
    pre = (c * k - 0.5 + (c * k + 1e-3).sqrt() * n) / k
    ref = ds(pre) * (1 + n / (2 * (c * k + 1e-3).sqrt())) * ds(xd)
    assert torch.allclose(y, pre.clamp(0, 1))
    assert torch.allclose(g, ref, atol=1e-12)


@pytest.mark.parametrize(
    "fn",
    [
        lambda t: avgpool_downsample(t, 4),
        lambda t: avgpool_downsample(t, 3),
        lambda t: known_mask(t, (rand(1, 1, 16, 16, seed=9) > 0.4).double()),
        lambda t: bernoulli_unknown_mask(t, 0.3, generator=2)[0],
    ],
)
def test_gradcheck_smooth_surrogates(fn):
    x = rand(1, 3, 16, 16, seed=6).requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-7)


# ---------------------------------------------------------------- avg-pool, masks, noise surrogates


def test_avgpool_matches_block_mean():
    x = rand(2, 3, 37, 50, seed=7)
    y = avgpool_downsample(x, 4)
    a = x.numpy()[:, :, :36, :48].reshape(2, 3, 9, 4, 12, 4).mean((3, 5))
    assert y.shape == (2, 3, 9, 12) and np.allclose(y.numpy(), a, atol=1e-12)
    assert avgpool_downsample(x, 1) is x
    for bad in (0, 2.5, 64):
        with pytest.raises(InputError):
            avgpool_downsample(x, bad)


def test_known_mask():
    x = rand(2, 3, 8, 8, seed=8)
    m = (rand(8, 8, seed=9) > 0.5).double()
    assert torch.equal(known_mask(x, m), x * m)
    assert torch.equal(known_mask(x, m[None, None].expand(2, 1, 8, 8)), x * m)
    with pytest.raises(InputError):
        known_mask(x, torch.ones(1, 1, 4, 4))


def test_poisson_gaussian_statistics():
    k = 48.0
    x = torch.full((1, 3, 128, 128), 0.5, dtype=torch.float64)
    y, _ = poisson_gaussian(x, k, generator=3)
    lam = 0.5 * k
    mean, std = (lam - 0.5) / k, math.sqrt(lam + 1e-3) / k
    n = y.numel()
    assert abs(float(y.mean()) - mean) < 5 * std / math.sqrt(n)
    assert float(y.std()) == pytest.approx(std, rel=5 * math.sqrt(2 / n))
    # Zero photons: identity (authors' convention).
    assert torch.equal(poisson_gaussian(x, 0.0, generator=3)[0], x)


@pytest.mark.parametrize("p", [0.04, 0.32, 0.64])
def test_bernoulli_unknown_mask_statistics(p):
    x = rand(1, 3, 128, 128, seed=10) * 0.9 + 0.05
    y, _ = bernoulli_unknown_mask(x, p, generator=4)
    dropped = (y == 0).all(1)
    assert not ((y == 0).any(1) & ~dropped).any()
    n = dropped.numel()
    assert abs(float(dropped.double().mean()) - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert torch.equal(y[:, :, ~dropped[0]], x[:, :, ~dropped[0]])


def test_bernoulli_unknown_mask_is_fresh_each_call_and_replayable():
    """Paper 002's f_hat draws a new mask every call, independent of the target's dead pixels."""
    p = 0.3
    x = torch.full((1, 3, 128, 128), 0.5, dtype=torch.float64)
    target, _ = dead_pixels(x, p, generator=11)
    g = torch.Generator().manual_seed(12)
    y1, p1 = bernoulli_unknown_mask(x, p, generator=g)
    y2, _ = bernoulli_unknown_mask(x, p, generator=g)
    m0, m1, m2 = (t[0, 0] == 0 for t in (target, y1, y2))
    assert not torch.equal(m1, m2)
    n = m0.numel()
    for a, b in ((m0, m1), (m1, m2)):
        both = float((a & b).double().mean())  # independent masks overlap with probability p^2
        assert abs(both - p * p) < 5 * math.sqrt(p * p * (1 - p * p) / n)
    assert torch.equal(bernoulli_unknown_mask(x, None, params=p1)[0], y1)


def test_poisson_bernoulli_surrogate_forward_formula():
    x = rand(2, 3, 32, 32, seed=13) * 1.2 - 0.1
    y, params = poisson_bernoulli_surrogate(x, [96.0, 6.0], [0.04, 0.64], generator=5)
    for i, p in enumerate(params):
        g = make_generator(p["seed"])
        n = torch.randn((3, 32, 32), generator=g, dtype=torch.float32).double()
        keep = (torch.rand((1, 32, 32), generator=g, dtype=torch.float64) >= p["p"]).double()
        lam = x[i].clamp(0, 1) * p["photons"]
        ref = ((lam - 0.5 + (lam + 1e-3).sqrt() * n) / p["photons"] * keep).clamp(0, 1)
        assert torch.allclose(y[i], ref, atol=1e-12)
    # One sample replays alone; poisson_gaussian shares the Gaussian field of the same seed.
    assert torch.equal(poisson_bernoulli_surrogate(x[1:], None, None, params=params[1:])[0], y[1:])
    pg, _ = poisson_gaussian(x, None, params=params)
    keep_mask = (y != 0) | (pg == 0)
    assert torch.equal(y[keep_mask], pg[keep_mask])


def test_noise_surrogates_keep_dtype_and_device():
    for dtype in (torch.float32, torch.float64):
        x = rand(2, 3, 16, 16, seed=14, dtype=dtype)
        for y in (
            poisson_gaussian(x, 12.0, generator=0)[0],
            bernoulli_unknown_mask(x, 0.1, generator=0)[0],
            poisson_bernoulli_surrogate(x, 12.0, 0.1, generator=0)[0],
            diff_jpeg(x, 50),
            avgpool_downsample(x, 2),
        ):
            assert y.dtype == dtype and y.device == x.device


# ------------------------------------------------------------------------------------- DiffJPEG


def test_block_dct_matches_scipy():
    x = rand(2, 3, 16, 24, seed=15) * 255
    c = block_dct(x)
    blocks = x.numpy().reshape(2, 3, 2, 8, 3, 8).transpose(0, 1, 2, 4, 3, 5)
    ref = scipy.fft.dctn(blocks, type=2, norm="ortho", axes=(-2, -1))
    assert np.allclose(c.numpy(), ref, atol=1e-9)
    assert torch.allclose(block_idct(c), x, atol=1e-9)


def test_ycbcr_matches_pil():
    a = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    ref = np.asarray(Image.fromarray(a).convert("YCbCr"), dtype=np.float64)
    x = torch.from_numpy(a.astype(np.float64)).permute(2, 0, 1)[None]
    ycc = rgb_to_ycbcr_jfif(x)
    assert np.abs(ycc[0].permute(1, 2, 0).numpy() - ref).max() <= 1.0
    assert torch.allclose(ycbcr_to_rgb_jfif(ycc), x, atol=1e-4)


def _vs_libjpeg(x: torch.Tensor, qualities, subsampling, **kw) -> tuple[list[float], bool]:
    """Per-quality mean absolute error of diff_jpeg against Pillow/libjpeg, and whether all 8-bit values agree."""
    d = diff_jpeg(x.expand(len(qualities), -1, -1, -1), qualities, subsampling=subsampling, **kw).double()
    r = torch.cat([jpeg(x, q, subsampling) for q in qualities]).double()
    same = torch.equal((d * 255).round(), (r * 255).round()) and bool((d - r).abs().max() < 1e-6)
    return (d - r).abs().mean((1, 2, 3)).tolist(), same


@pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
def test_diff_jpeg_matches_libjpeg_astronaut(astronaut_tensor, subsampling):
    x = astronaut_tensor.double()
    assert _vs_libjpeg(x, [12], subsampling)[1]  # whole photo: bit-exact emulation of libjpeg
    face = x[..., 160:352, 160:352]
    maes, same = _vs_libjpeg(face, QUALITIES, subsampling)
    assert same and max(maes) < 1e-6
    # The float forward (the authors' DiffJPEG style) is within the 2/255 bound on a photo.
    maes, _ = _vs_libjpeg(to8(face), QUALITIES, subsampling, exact=False)
    assert max(maes) < MAX_MAE, dict(zip(QUALITIES, maes))


@pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
def test_diff_jpeg_bit_exact_every_quality_and_odd_sizes(astronaut_tensor, subsampling):
    for h0, w0, h, w in ((201, 157, 101, 75), (0, 0, 9, 17), (300, 40, 33, 130)):
        x = astronaut_tensor[..., h0 : h0 + h, w0 : w0 + w].double() * 1.1 - 0.05  # out-of-range values too
        assert _vs_libjpeg(x, [*range(1, 101, 3), 100], subsampling)[1], (h, w)


@pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
def test_diff_jpeg_bit_exact_on_tiny_images(astronaut_tensor, subsampling):
    """Images up to 4 px wide: libjpeg replicates a chroma plane of at most 2 samples instead of its triangle
    filter (jdsample.c: fancy upsampling needs downsampled_width > 2); the float path does the same."""
    noise = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for h in range(1, 12, 2):
        for w in range(1, 12):
            # colour noise: neighbouring chroma samples differ, so the two upsamplings cannot round alike
            x = 0.5 * astronaut_tensor[..., 200 : 200 + h, 180 : 180 + w].double() + 0.5 * noise[..., :h, :w]
            assert _vs_libjpeg(x, [10, 50, 90], subsampling)[1], (h, w)
            # at q100 (all quantisers 1) what is left of the float path's error is the chroma upsampling
            maes, _ = _vs_libjpeg(to8(x), [100], subsampling, exact=False)
            assert max(maes) < MAX_MAE / 2, (h, w, maes)


@pytest.mark.data
@pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
def test_diff_jpeg_matches_libjpeg_ffhq(shared_data, subsampling):
    from facerestore.io import read_rgb, to_tensor

    names = sorted(p.name for p in (shared_data / "ffhq256").glob("*0.jpg"))[:2]  # validation files
    assert names
    for name in names:
        x = to_tensor(read_rgb(shared_data / "ffhq256" / name)).double()
        # q50 re-compresses these q75 files onto rounding ties: the hardest case for a float DCT.
        maes, same = _vs_libjpeg(x, [6, 12, 18, 50, 95], subsampling)
        assert same and max(maes) < 1e-6, (name, maes)


def test_kornia_comparison(astronaut_tensor):
    """kornia's differentiable codec (4:2:0 only) is further from libjpeg than ours: see diffjpeg's docstring."""
    from kornia.enhance import jpeg_codec_differentiable

    x8 = to8(astronaut_tensor[..., 128:384, 128:384]).float()
    for q in (10, 50, 90):
        real = jpeg(x8, q, "4:2:0")
        ours = (diff_jpeg(x8, q) - real).abs().mean().item()
        ours_float = (diff_jpeg(x8, q, exact=False) - real).abs().mean().item()
        theirs = (jpeg_codec_differentiable(x8, torch.tensor([float(q)])) - real).abs().mean().item()
        assert ours < 1e-6 and ours_float < theirs, (q, ours_float * 255, theirs * 255)


def test_tables_quality_and_file_agree():
    x = rand(2, 3, 24, 40, seed=16)
    x8 = to8(x)
    for sub in SUBSAMPLINGS:
        by_q = diff_jpeg(x8, 35, subsampling=sub)
        assert torch.equal(diff_jpeg(x8, tables=quality_to_tables(35), subsampling=sub), by_q)
        module = DiffJPEG.from_bytes(encode_jpeg(x8[0], 35, sub))
        assert module.subsampling == sub and torch.equal(module(x8), by_q)
        assert torch.equal(DiffJPEG(35, subsampling=sub)(x8), by_q)
    per = diff_jpeg(x8, [10, 90])
    assert torch.equal(per[:1], diff_jpeg(x8[:1], 10)) and torch.equal(per[1:], diff_jpeg(x8[1:], 90))


def test_diff_jpeg_alpha_changes_only_the_gradient():
    x = rand(1, 3, 16, 16, seed=17)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = diff_jpeg(xa, 20, alpha=0.2), diff_jpeg(xb, 20, alpha=0.8)
    assert torch.equal(ya, yb)
    (ga,) = torch.autograd.grad(ya.sum(), xa)
    (gb,) = torch.autograd.grad(yb.sum(), xb)
    assert not torch.allclose(ga, gb)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_diff_jpeg_dtypes(astronaut_tensor, dtype):
    x = to8(astronaut_tensor[..., 200:264, 200:264]).double()
    y = diff_jpeg(x.to(dtype), 50)
    assert y.dtype == dtype and y.shape == x.shape
    # float16 cannot hold every k/255 exactly; the 8-bit serialisation still recovers k.
    assert (y.double() - jpeg(x, 50)).abs().max() < 1e-3


def test_diff_jpeg_invalid_arguments():
    x = rand(1, 3, 16, 16)
    with pytest.raises(InputError):
        diff_jpeg(x)
    with pytest.raises(InputError):
        diff_jpeg(x, 50, tables=quality_to_tables(50))
    with pytest.raises(InputError):
        diff_jpeg(x, 50, subsampling="4:1:1")
    with pytest.raises(InputError):
        diff_jpeg(x, 0)
    with pytest.raises(InputError):
        diff_jpeg(x, tables=(torch.zeros(8, 8), torch.ones(8, 8)))
    with pytest.raises(InputError):
        diff_jpeg(rand(1, 1, 16, 16), 50)
    gray = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(gray, format="JPEG")
    with pytest.raises(InputError):
        DiffJPEG.from_bytes(gray.getvalue())


def test_diff_jpeg_equals_the_real_jpeg_on_float32_images():
    """The 8-bit rounding before the real JPEG multiplied float32 pixels by 255 in float32 (NumPy 2's rule for a
    float32 array times a Python float): levels near k + 0.5 rounded the other way and diff_jpeg, which rounds in
    float64, disagreed by up to 4/255 over whole blocks. Float32 is what the engine and the CLI pass."""
    from facerestore.degrade import diff_jpeg, jpeg

    g = torch.Generator().manual_seed(1)
    ramp = torch.linspace(0, 1, 256)
    imgs = (ramp[None, None, :, None] * ramp[None, None, None, :]).repeat(8, 3, 1, 1)
    imgs = (imgs + 0.05 * torch.randn(imgs.shape, generator=g)).clamp(0, 1).float()
    for q in (60, 90, 99):
        torch.testing.assert_close(diff_jpeg(imgs, q), jpeg(imgs, q), rtol=0, atol=1e-6)
