"""StyleGAN2 network (nn/stylegan2.py): resampling ops vs scipy, modulated conv vs per-sample loops,
W / W+ / W++ equivalence and per-filter semantics, mapping, noise, fp16, discriminator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

from facerestore.nn.stylegan2 import (
    Discriminator,
    Generator,
    bias_act,
    conv2d_resample,
    downsample2d,
    fir_filter,
    minibatch_stddev,
    modulated_conv2d,
    normalize_2nd_moment,
    to_unit_range,
    upfirdn2d,
    upsample2d,
)


def _tiny_generator(seed: int = 0, res: int = 16, dtype=torch.float32, **kw) -> Generator:
    torch.manual_seed(seed)
    cfg = dict(z_dim=16, w_dim=16, img_resolution=res, mapping_layers=2, channel_base=128, channel_max=16)
    cfg.update(kw)
    G = Generator(**cfg)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():  # non-zero biases / noise strengths so that every term is exercised
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)
            elif name.endswith("bias") and "affine" not in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        G.mapping.w_avg.copy_(torch.randn(G.w_dim, generator=g))
    return G.to(dtype).eval()


# --------------------------------------------------------------------------------------------------
# Resampling ops against scipy
# --------------------------------------------------------------------------------------------------


def _ref_upfirdn_1d(x: np.ndarray, f: np.ndarray, up: int, down: int, p0: int, p1: int, axis: int) -> np.ndarray:
    """NVIDIA upfirdn semantics from scipy's full convolution: y[j] = full[j + K - 1 - p0], then [::down]."""
    k = len(f)
    n = x.shape[axis]
    full = np.apply_along_axis(lambda v: scipy.signal.upfirdn(f, v, up=up), axis, x)
    out_len = n * up + p0 + p1 - k + 1
    idx = np.arange(out_len) + k - 1 - p0
    valid = (idx >= 0) & (idx < full.shape[axis])
    y = np.zeros((*x.shape[:axis], out_len, *x.shape[axis + 1 :]))
    sl = [slice(None)] * x.ndim
    sl[axis] = np.nonzero(valid)[0]
    src = [slice(None)] * x.ndim
    src[axis] = idx[valid]
    y[tuple(sl)] = full[tuple(src)]
    sl[axis] = slice(None, None, down)
    return y[tuple(sl)]


@pytest.mark.parametrize(
    ("up", "down", "pad"),
    [(1, 1, (1, 2, 0, 3)), (2, 1, (2, 1, 2, 1)), (1, 2, (1, 1, 2, 1)), (2, 1, (-1, 3, 0, -2)), (4, 1, (3, 2, 1, 2))],
)
def test_upfirdn2d_matches_scipy(up, down, pad):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 9))
    f = fir_filter((1, 3, 3, 1), torch.float64)
    gain = up * up
    ours = upfirdn2d(torch.from_numpy(x), f, up=up, down=down, padding=pad, gain=gain).numpy()
    fs = f.numpy() * math.sqrt(gain)
    px0, px1, py0, py1 = pad
    ref = _ref_upfirdn_1d(x, fs, up, down, px0, px1, axis=3)
    ref = _ref_upfirdn_1d(ref, fs, up, down, py0, py1, axis=2)
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    # The 2-D (non-separable) filter path computes the same thing.
    f2 = torch.outer(f, f)
    ours2 = upfirdn2d(torch.from_numpy(x), f2, up=up, down=down, padding=pad, gain=gain).numpy()
    np.testing.assert_allclose(ours2, ref, atol=1e-12)


def test_fir_resampling_keeps_constant_level():
    x = torch.full((1, 2, 8, 8), 3.0, dtype=torch.float64)
    f = fir_filter(dtype=torch.float64)
    up = upsample2d(x, f)
    down = downsample2d(x, f)
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4)
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.full_like(up[..., 2:-2, 2:-2], 3.0))
    torch.testing.assert_close(down[..., 1:-1, 1:-1], torch.full_like(down[..., 1:-1, 1:-1], 3.0))


def test_conv2d_resample_up_matches_scipy_transposed_conv_and_blur():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 5, 6))
    w = rng.standard_normal((3, 2, 3, 3))
    f = fir_filter(dtype=torch.float64)
    ours = conv2d_resample(torch.from_numpy(x), torch.from_numpy(w), f, up=2, padding=1).numpy()
    f2 = np.outer(f.numpy(), f.numpy()) * 4
    ref = np.zeros((1, 3, 10, 12))
    for o in range(3):
        acc = 0
        for i in range(2):
            xu = np.zeros((9, 11))
            xu[::2, ::2] = x[0, i]  # zero insertion; transposed conv = full convolution with w
            acc = acc + scipy.signal.convolve2d(xu, w[o, i], mode="full")
        blurred = scipy.signal.convolve2d(acc, f2, mode="full")  # FIR, padding (1, 1): crop [2 : 2 + 2H]
        ref[0, o] = blurred[2 : 2 + 10, 2 : 2 + 12]
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_conv2d_resample_up_with_an_odd_filter_and_unequal_padding():
    """A 3-tap filter at padding 0: one side pads (0), the other crops (-1). Only the cropping side may lose pixels
    (NVIDIA's max(min(-p0, -p1), 0) inside the transposed convolution); cropping both sides and padding zeros back
    changed the border by up to 1."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 5, 6))
    w = rng.standard_normal((3, 2, 3, 3))
    taps = np.array([1.0, 2.0, 1.0]) / 4
    ours = conv2d_resample(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(taps), up=2, padding=0).numpy()
    f2 = np.outer(taps, taps) * 4
    h, wd = 5, 6
    # p0 = (3 + 1) // 2 - (3 - 1) = 0, p1 = (3 - 2) // 2 - (3 - 2) = -1: out = T + p0 + p1 - 3 + 1 = 2H - 2
    ref = np.zeros((1, 3, 2 * h - 2, 2 * wd - 2))
    for o in range(3):
        acc = 0
        for i in range(2):
            xu = np.zeros((2 * h - 1, 2 * wd - 1))
            xu[::2, ::2] = x[0, i]
            acc = acc + scipy.signal.convolve2d(xu, w[o, i], mode="full")
        blurred = scipy.signal.convolve2d(acc, f2, mode="full")
        ref[0, o] = blurred[2 : 2 + 2 * h - 2, 2 : 2 + 2 * wd - 2]
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_conv2d_resample_down_matches_scipy_blur_and_strided_correlation():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 2, 8, 8))
    w = rng.standard_normal((3, 2, 3, 3))
    f = fir_filter(dtype=torch.float64)
    ours = conv2d_resample(torch.from_numpy(x), torch.from_numpy(w), f, down=2, padding=1).numpy()
    f2 = np.outer(f.numpy(), f.numpy())
    ref = np.zeros((1, 3, 4, 4))
    for o in range(3):
        for i in range(2):
            blurred = scipy.signal.convolve2d(x[0, i], f2, mode="full")[1:10, 1:10]  # FIR with padding (2, 2)
            ref[0, o] += scipy.signal.correlate2d(blurred, w[o, i], mode="valid")[::2, ::2]
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    # 1x1 skip path: blur with padding (1, 1) then take every other pixel.
    w1 = rng.standard_normal((3, 2, 1, 1))
    ours1 = conv2d_resample(torch.from_numpy(x), torch.from_numpy(w1), f, down=2, padding=0).numpy()
    ref1 = np.zeros((1, 3, 4, 4))
    for o in range(3):
        for i in range(2):
            blurred = scipy.signal.convolve2d(x[0, i], f2, mode="full")[2:9, 2:9]
            ref1[0, o] += w1[o, i, 0, 0] * blurred[::2, ::2]
    np.testing.assert_allclose(ours1, ref1, atol=1e-12)


def test_bias_act_and_pixel_norm():
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64)
    y = bias_act(x, b, "lrelu", clamp=0.5)
    ref = (F.leaky_relu(x + b[None, :, None, None], 0.2) * math.sqrt(2)).clamp(-0.5, 0.5)
    torch.testing.assert_close(y, ref)
    z = torch.randn(5, 7, dtype=torch.float64)
    n = normalize_2nd_moment(z)
    torch.testing.assert_close(n.square().mean(1), torch.ones(5, dtype=torch.float64), atol=1e-7, rtol=0)
    torch.testing.assert_close(to_unit_range(torch.tensor([-1.0, 1.0])), torch.tensor([0.0, 1.0]))


# --------------------------------------------------------------------------------------------------
# Modulated convolution
# --------------------------------------------------------------------------------------------------


def _ref_modconv(x, weight, styles, demodulate, up):
    """Per-sample loop: explicitly modulated (and demodulated) weight, plain resampling conv."""
    f = fir_filter(dtype=x.dtype)
    outs = []
    for b in range(x.shape[0]):
        s = styles[b]
        wb = weight * (s[:, None, :, None, None] if s.ndim == 2 else s[None, :, None, None])
        if s.ndim == 2:
            wb = wb[torch.arange(weight.shape[0]), torch.arange(weight.shape[0])]  # (O, I, k, k)
        if demodulate:
            wb = wb / torch.sqrt(wb.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
        outs.append(conv2d_resample(x[b : b + 1], wb, f, up=up, padding=weight.shape[-1] // 2))
    return torch.cat(outs)


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_paths_match_per_sample_reference(up, demodulate):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 6, 6, generator=g, dtype=torch.float64)
    weight = torch.randn(5, 4, 3, 3, generator=g, dtype=torch.float64)
    styles = torch.randn(3, 4, generator=g, dtype=torch.float64)
    ref = _ref_modconv(x, weight, styles, demodulate, up)
    for fused in (True, False):
        out = modulated_conv2d(x, weight, styles, demodulate=demodulate, up=up,
                               resample_filter=fir_filter(dtype=torch.float64), fused=fused)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demodulate", [True, False])
def test_per_filter_styles_equal_loop_over_filters(up, demodulate):
    """W++ semantics: output filter o is the layer run with style s^(o), keeping channel o."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 5, 5, generator=g, dtype=torch.float64)
    weight = torch.randn(6, 4, 3, 3, generator=g, dtype=torch.float64)
    styles = torch.randn(2, 6, 4, generator=g, dtype=torch.float64)
    f = fir_filter(dtype=torch.float64)
    out = modulated_conv2d(x, weight, styles, demodulate=demodulate, up=up, resample_filter=f)
    loop = torch.stack(
        [modulated_conv2d(x, weight, styles[:, o], demodulate=demodulate, up=up, resample_filter=f)[:, o]
         for o in range(6)], dim=1)
    torch.testing.assert_close(out, loop, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out, _ref_modconv(x, weight, styles, demodulate, up), rtol=1e-10, atol=1e-10)
    # Identical per-filter styles reduce to the ordinary (B, I) modulation.
    same = modulated_conv2d(x, weight, styles[:, :1].expand(-1, 6, -1), demodulate=demodulate, up=up, resample_filter=f)
    torch.testing.assert_close(same, modulated_conv2d(x, weight, styles[:, 0], demodulate=demodulate, up=up,
                                                      resample_filter=f), rtol=1e-10, atol=1e-10)


def test_demodulation_normalises_output_scale():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 6, 6, generator=g, dtype=torch.float64)
    weight = torch.randn(3, 4, 3, 3, generator=g, dtype=torch.float64)
    s = torch.rand(2, 4, generator=g, dtype=torch.float64) + 0.5
    a = modulated_conv2d(x, weight, s)
    b = modulated_conv2d(x, weight * 7.0, s * 3.0)  # global scales cancel under demodulation
    torch.testing.assert_close(a, b)


# --------------------------------------------------------------------------------------------------
# Generator: latent spaces
# --------------------------------------------------------------------------------------------------


def test_layer_specs_and_num_ws_for_ffhq_1024():
    with torch.device("meta"):
        G = Generator()
    specs = G.synthesis.layer_specs
    assert G.num_ws == 18
    assert len(specs) == 26 and sum(s.kind == "conv" for s in specs) == 17
    assert [s.w_index for s in specs if s.kind == "conv"] == list(range(17))
    # toRGB of block r shares the w of the next block's first conv; the last one uses index 17.
    assert [s.w_index for s in specs if s.kind == "torgb"] == [1, 3, 5, 7, 9, 11, 13, 15, 17]
    assert all(s.out_channels == 3 for s in specs if s.kind == "torgb")
    chans = {s.resolution: s.out_channels for s in specs if s.kind == "conv"}
    assert chans == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64, 1024: 32}
    assert G.synthesis.noise_shapes()[:3] == [(4, 4), (8, 8), (8, 8)] and len(G.synthesis.noise_shapes()) == 17


@pytest.mark.parametrize("res", [8, 32])
def test_w_wplus_wpp_give_the_same_image(res):
    G = _tiny_generator(res=res, dtype=torch.float64)
    z = torch.randn(2, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        w = G.mapping(z)
        a = G.synthesis(w)
        b = G.synthesis(w[:, None].repeat(1, G.num_ws, 1))
        c = G.synthesis(G.synthesis.wpp_from_wplus(w))
        dense = w[:, None].repeat(1, G.num_ws * 16, 1)  # authors' layout: (B, num_ws * 16, w_dim)
        d = G.synthesis(G.synthesis.wpp_from_dense(dense))
    assert a.shape == (2, 3, res, res)
    for other in (b, c, d):
        torch.testing.assert_close(other, a, rtol=1e-10, atol=1e-10)
    # Same check in float32 at the tolerance of the task (1e-5 relative to the image scale).
    G32 = _tiny_generator(res=res)
    with torch.no_grad():
        w32 = G32.mapping(z.float())
        a32 = G32.synthesis(w32)
        scale = a32.abs().max()
        for other in (G32.synthesis(w32[:, None].repeat(1, G32.num_ws, 1)),
                      G32.synthesis(G32.synthesis.wpp_from_wplus(w32))):
            assert (other - a32).abs().max() <= 1e-5 * scale


def test_wplus_rows_and_wpp_filters_are_used():
    G = _tiny_generator(res=16, dtype=torch.float64)
    g = torch.Generator().manual_seed(4)
    ws = torch.randn(1, G.num_ws, 16, dtype=torch.float64, generator=g)
    wpp = G.synthesis.wpp_from_wplus(ws)
    with torch.no_grad():
        base = G.synthesis(ws)
        torch.testing.assert_close(G.synthesis(wpp), base, rtol=1e-10, atol=1e-10)
        for i in range(G.num_ws):  # every W+ row matters
            ws2 = ws.clone()
            ws2[:, i] += 1.0
            assert (G.synthesis(ws2) - base).abs().max() > 1e-6
    # Changing the latent of a single output filter changes the image; gradients reach every filter.
    wpp = [t.clone().requires_grad_(True) for t in wpp]
    out = G.synthesis(wpp)
    out.square().sum().backward()
    for spec, t in zip(G.synthesis.layer_specs, wpp):
        assert t.grad is not None and torch.all(t.grad.abs().sum(-1) > 0), spec.name
    with torch.no_grad():
        wpp2 = [t.detach().clone() for t in wpp]
        wpp2[3][:, 2] += 1.0  # layer b8.conv1, filter 2 only
        assert (G.synthesis(wpp2) - base).abs().max() > 1e-6


def test_dense_wpp_ties_torgb_to_next_conv_rows():
    G = _tiny_generator(res=16, dtype=torch.float64)
    dense = torch.randn(1, G.num_ws, 16, 16, dtype=torch.float64, requires_grad=True)
    layers = G.synthesis.wpp_from_dense(dense)
    specs = G.synthesis.layer_specs
    torgb = next(i for i, s in enumerate(specs) if s.name == "b4.torgb")
    conv0 = next(i for i, s in enumerate(specs) if s.name == "b8.conv0")
    assert specs[torgb].w_index == specs[conv0].w_index == 1
    torch.testing.assert_close(layers[torgb], layers[conv0][:, :3])
    G.synthesis(layers).sum().backward()
    # Rows past a layer's width get no gradient; shared rows get the sum from both layers.
    last = G.synthesis.layer_specs[-2]  # b16.conv1: 8 filters
    assert last.out_channels == 8
    assert torch.all(dense.grad[:, last.w_index, 8:] == 0)
    assert torch.all(dense.grad[:, last.w_index, :8].abs().sum(-1) > 0)


def test_latent_shape_errors():
    G = _tiny_generator(res=8)
    with pytest.raises(ValueError, match="W\\+\\+ needs"):
        G.synthesis([torch.zeros(1, 16, 16)])
    with pytest.raises(ValueError, match="latents must be"):
        G.synthesis(torch.zeros(1, 5, 16))
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(torch.zeros(1, 16), noise_mode="bogus")


# --------------------------------------------------------------------------------------------------
# Mapping, truncation, noise
# --------------------------------------------------------------------------------------------------


def test_mapping_w_avg_tracking_and_truncation():
    G = _tiny_generator(res=8)
    z = torch.randn(8, 16, generator=torch.Generator().manual_seed(5))
    G.mapping.w_avg.zero_()
    G.mapping.train()
    w = G.mapping(z)
    torch.testing.assert_close(G.mapping.w_avg, (1 - 0.995) * w.detach().mean(0))
    before = G.mapping.w_avg.clone()
    G.mapping.eval()
    G.mapping(z)
    torch.testing.assert_close(G.mapping.w_avg, before)  # eval does not update
    with torch.no_grad():
        w0 = G.mapping(z, truncation_psi=0.0)
        torch.testing.assert_close(w0, before.expand(8, -1))
        wt = G.truncate(w[:, None].repeat(1, G.num_ws, 1), psi=0.5, cutoff=2)
        torch.testing.assert_close(wt[:, :2], (0.5 * (w + before))[:, None].expand(-1, 2, -1))
        torch.testing.assert_close(wt[:, 2:], w[:, None].expand(-1, G.num_ws - 2, -1))
    # The mapping is scale invariant in z thanks to the pixel norm.
    torch.testing.assert_close(G.mapping(3.0 * z), G.mapping(z), rtol=1e-5, atol=1e-5)


def test_noise_modes():
    G = _tiny_generator(res=16)
    w = torch.randn(2, 16, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        const = G.synthesis(w, noise_mode="const")
        torch.testing.assert_close(G.synthesis(w, noise_mode="const"), const, rtol=0, atol=0)
        none = G.synthesis(w, noise_mode="none")
        assert (const - none).abs().max() > 1e-4
        r1 = G.synthesis(w, noise_mode="random", generator=torch.Generator().manual_seed(1))
        r1b = G.synthesis(w, noise_mode="random", generator=torch.Generator().manual_seed(1))
        r2 = G.synthesis(w, noise_mode="random", generator=torch.Generator().manual_seed(2))
        torch.testing.assert_close(r1, r1b, rtol=0, atol=0)
        assert (r1 - r2).abs().max() > 1e-4
        # Explicit maps: the stored constants reproduce 'const'; zero maps reproduce 'none'.
        torch.testing.assert_close(G.synthesis(w, noises=G.synthesis.const_noises()), const)
        zeros = [torch.zeros(1, 1, h, w_) for h, w_ in G.synthesis.noise_shapes()]
        torch.testing.assert_close(G.synthesis(w, noises=zeros), none)
    with pytest.raises(ValueError, match=r"torch\.Generator"):
        G.synthesis(w, noise_mode="random")


def test_sample_w_is_seeded_and_estimate_w_avg():
    G = _tiny_generator(res=8)
    a = G.sample_w(50, torch.Generator().manual_seed(0), batch_size=16)
    b = G.sample_w(50, torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    avg = G.estimate_w_avg(50, torch.Generator().manual_seed(0))
    torch.testing.assert_close(avg, a.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(G.mapping.w_avg, avg)


def test_conv_clamp_bounds_features():
    G = _tiny_generator(res=8, conv_clamp=0.05)
    w = torch.randn(1, 16, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        img = G.synthesis(w)
    # Each toRGB output is clamped to +-0.05 and the image is the sum of two upsampled toRGB outputs.
    assert img.abs().max() <= 0.1 + 1e-6


def test_fp16_forward_close_to_fp32():
    G = _tiny_generator(res=16)
    Gh = _tiny_generator(res=16).half()
    w = torch.randn(2, 16, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        ref = G.synthesis(w)
        for lat in (w.half(), Gh.synthesis.wpp_from_wplus(w.half())):
            out = Gh.synthesis(lat)
            assert out.dtype == torch.float16
            assert torch.isfinite(out).all()
            assert (out.float() - ref).abs().max() <= 2e-2 * ref.abs().max()


def test_generator_backward_and_forward_from_z():
    G = _tiny_generator(res=8)
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(9))
    img = G(z, truncation_psi=0.7)
    assert img.shape == (2, 3, 8, 8)
    img.mean().backward()
    assert G.synthesis.b8.conv0.weight.grad is not None and G.mapping.fc0.weight.grad is not None
    assert G.from_config(G.config).state_dict().keys() == G.state_dict().keys()


# --------------------------------------------------------------------------------------------------
# Discriminator
# --------------------------------------------------------------------------------------------------


def test_minibatch_stddev_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 6, 3, 3))
    out = minibatch_stddev(torch.from_numpy(x), group_size=4, num_channels=2).numpy()
    assert out.shape == (8, 8, 3, 3)
    np.testing.assert_array_equal(out[:, :6], x)
    n_groups = 8 // 4
    for j in range(8):
        members = [k for k in range(8) if k % n_groups == j % n_groups]
        for c in range(2):
            feats = x[members][:, 3 * c : 3 * c + 3]
            ref = np.sqrt(feats.var(axis=0) + 1e-8).mean()
            np.testing.assert_allclose(out[j, 6 + c], ref, rtol=1e-10)
    # Batch of 6 with group size 4: falls back to groups of 3.
    assert minibatch_stddev(torch.from_numpy(x[:6]), 4).shape == (6, 7, 3, 3)


def test_discriminator_shapes_and_gradients():
    torch.manual_seed(0)
    D = Discriminator(img_resolution=16, channel_base=128, channel_max=16)
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    logits = D(x)
    assert logits.shape == (4, 1) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    names = set(D.state_dict())
    assert {"b16.fromrgb.weight", "b16.conv1.weight", "b16.skip.weight", "b4.conv.weight", "b4.fc.weight",
            "b4.out.bias"} <= names
    assert "b16.skip.bias" not in names and not any("resample_filter" in k for k in names)
    with torch.no_grad():  # the minibatch-std feature couples samples: changing one changes the others
        x2 = x.detach().clone()
        x2[0] += 1.0
        assert (D(x2)[1:] - logits[1:].detach()).abs().max() > 0
