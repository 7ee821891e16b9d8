"""Shared layers: spectral-norm conv, SPADE, LIP, PAC, residual block (against independent references)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from facerestore.nn.blocks import ResBlock, SNConv2d, make_norm
from facerestore.nn.lip import SimplifiedLIP, lip2d
from facerestore.nn.pac import PacConv2d, pac_conv2d, pac_correlation_kernel
from facerestore.nn.spade import SPADE, ParamFreeNorm, SPADEResBlock, spade_modulate


def _seed(s: int = 0) -> torch.Generator:
    torch.manual_seed(s)
    return torch.Generator().manual_seed(s)


# --------------------------------------------------------------------------------------------------
# Spectral norm
# --------------------------------------------------------------------------------------------------


def _torch_sn_conv(cin, cout, k, stride=1, padding=0, bias=True):
    return torch.nn.utils.spectral_norm(nn.Conv2d(cin, cout, k, stride, padding, bias=bias))


@pytest.mark.parametrize("bias", [True, False])
def test_snconv_layout_and_eval_output_match_torch_spectral_norm(bias):
    _seed(1)
    ref = _torch_sn_conv(5, 7, 3, 2, 1, bias)
    ours = SNConv2d(5, 7, 3, stride=2, padding=1, bias=bias)
    ref_sd = ref.state_dict()
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {k: tuple(v.shape) for k, v in ref_sd.items()}
    ours.load_state_dict(ref_sd, strict=True)
    ref.eval(), ours.eval()
    x = torch.randn(3, 5, 9, 11)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-6)


def test_snconv_train_step_matches_torch_power_iteration():
    _seed(2)
    ref = _torch_sn_conv(4, 6, 3, 1, 1)
    ours = SNConv2d(4, 6, 3, padding=1)
    ours.load_state_dict(ref.state_dict())
    ref.train(), ours.train()
    x = torch.randn(2, 4, 8, 8)
    for _ in range(3):  # each forward does one power-iteration step in both implementations
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.weight_u, ref.weight_u)
    torch.testing.assert_close(ours.weight_v, ref.weight_v)


def test_snconv_sigma_converges_to_largest_singular_value_and_eval_is_frozen():
    _seed(3)
    conv = SNConv2d(6, 8, 3, padding=1).train()
    x = torch.randn(1, 6, 5, 5)
    for _ in range(200):
        conv(x)
    w = conv.weight_orig.detach().reshape(8, -1)
    sigma_true = torch.linalg.svdvals(w)[0]
    assert torch.linalg.svdvals(conv.weight.detach().reshape(8, -1))[0].item() == pytest.approx(1.0, abs=1e-4)
    assert (w / conv.weight.detach().reshape(8, -1)).mean().item() == pytest.approx(sigma_true.item(), rel=1e-4)
    conv.eval()
    u0 = conv.weight_u.clone()
    y1, y2 = conv(x), conv(x)
    assert torch.equal(y1, y2) and torch.equal(u0, conv.weight_u)


def test_snconv_backward_after_a_later_train_mode_call():
    # an eval-mode forward followed by a train-mode forward (which updates u, v in place) must still backprop
    import copy

    _seed(17)
    conv = SNConv2d(3, 4, 3, padding=1)
    x = torch.randn(1, 3, 5, 5)
    twin = copy.deepcopy(conv)
    y = conv.eval()(x)
    conv.train()(x)
    y.sum().backward()
    twin.eval()(x).sum().backward()  # the same eval forward without the train-mode call in between
    torch.testing.assert_close(conv.weight_orig.grad, twin.weight_orig.grad)


def test_snconv_gradient_matches_torch():
    _seed(4)
    ref = _torch_sn_conv(3, 4, 3, 1, 1)
    ours = SNConv2d(3, 4, 3, padding=1)
    ours.load_state_dict(ref.state_dict())
    ref.eval(), ours.eval()
    x = torch.randn(2, 3, 6, 6)
    ref(x).square().sum().backward()
    ours(x).square().sum().backward()
    torch.testing.assert_close(ours.weight_orig.grad, ref.weight_orig.grad, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# SPADE
# --------------------------------------------------------------------------------------------------


def _instance_norm_ref(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    xd = x.double()
    mu = xd.mean(dim=(2, 3), keepdim=True)
    var = ((xd - mu) ** 2).mean(dim=(2, 3), keepdim=True)  # biased variance
    return ((xd - mu) / torch.sqrt(var + eps)).float()


def _nearest_ref(s: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    # legacy "nearest": source index floor(dst * in / out)
    h, w = s.shape[-2:]
    iy = [int(np.floor(i * h / size[0])) for i in range(size[0])]
    ix = [int(np.floor(j * w / size[1])) for j in range(size[1])]
    return s[:, :, iy][:, :, :, ix]


@pytest.mark.parametrize("form", ["gamma", "one_plus_gamma"])
def test_spade_matches_formula(form):
    _seed(5)
    m = SPADE(6, 3, hidden=128, form=form, gamma_beta_bias=form == "one_plus_gamma")
    assert m.mlp_shared[0].out_channels == 6  # hidden = min(128, norm_nc)
    assert m.mlp_gamma.bias is None if form == "gamma" else m.mlp_gamma.bias is not None
    x = torch.randn(2, 6, 8, 10) * 3 + 1
    seg = torch.rand(2, 3, 32, 40)
    s = _nearest_ref(seg, (8, 10))
    actv = F.relu(F.conv2d(s, m.mlp_shared[0].weight, m.mlp_shared[0].bias, padding=1))
    gamma = F.conv2d(actv, m.mlp_gamma.weight, m.mlp_gamma.bias, padding=1)
    beta = F.conv2d(actv, m.mlp_beta.weight, m.mlp_beta.bias, padding=1)
    xn = _instance_norm_ref(x)
    expected = xn * gamma + beta if form == "gamma" else xn * (1 + gamma) + beta
    torch.testing.assert_close(m(x, seg), expected, rtol=1e-4, atol=1e-5)


def test_spade_hidden_capped_at_128():
    assert SPADE(256, 3).mlp_shared[0].out_channels == 128
    assert SPADE(96, 5).mlp_shared[0].out_channels == 96


def test_spade_modulate_rejects_unknown_form():
    with pytest.raises(ValueError):
        spade_modulate(torch.zeros(1), torch.zeros(1), torch.zeros(1), "affine")


def test_param_free_norm_batch_kind_uses_batch_then_running_stats():
    _seed(6)
    norm = ParamFreeNorm(4, "batch")
    x = torch.randn(5, 4, 6, 6) * 2 + 3
    y = norm.train()(x)
    mu = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    torch.testing.assert_close(y, (x - mu) / torch.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5)
    assert int(norm.num_batches_tracked) == 1
    # running stats moved 10% towards the batch statistics (unbiased variance, as BatchNorm)
    torch.testing.assert_close(norm.running_mean, 0.1 * mu.flatten())
    y_eval = norm.eval()(x)
    rm, rv = norm.running_mean.view(1, 4, 1, 1), norm.running_var.view(1, 4, 1, 1)
    torch.testing.assert_close(y_eval, (x - rm) / torch.sqrt(rv + 1e-5))


def test_param_free_norm_instance_with_buffers_is_batch_independent_in_both_modes():
    _seed(7)
    norm = ParamFreeNorm(3, "instance", running_stats_buffers=True)
    assert set(norm.state_dict()) == {"running_mean", "running_var", "num_batches_tracked"}
    a, b = torch.randn(1, 3, 5, 5), torch.randn(1, 3, 5, 5) * 4
    for mode in (True, False):
        norm.train(mode)
        torch.testing.assert_close(norm(torch.cat([a, b]))[:1], norm(a))
        torch.testing.assert_close(norm(a), _instance_norm_ref(a), rtol=1e-4, atol=1e-5)
    assert int(norm.num_batches_tracked) == 0  # buffers never touched


def test_spade_resblock_matches_explicit_composition_and_layout():
    _seed(8)
    blk = SPADEResBlock(8, 4, label_nc=3, spectral=True).eval()
    keys = set(blk.state_dict())
    assert {"conv_0.weight_orig", "conv_0.weight_u", "conv_0.weight_v", "conv_0.bias"} <= keys
    assert {"conv_s.weight_orig", "conv_s.weight_u", "conv_s.weight_v"} <= keys and "conv_s.bias" not in keys
    assert blk.conv_0.weight.shape == (4, 8, 3, 3) and blk.conv_1.weight.shape == (4, 4, 3, 3)
    x, seg = torch.randn(2, 8, 6, 6), torch.rand(2, 3, 12, 12)

    def sn(conv):
        w = conv.weight_orig.reshape(conv.weight_orig.shape[0], -1)
        sigma = conv.weight_u @ w @ conv.weight_v
        return conv.weight_orig / sigma

    lrelu = lambda t: torch.where(t > 0, t, 0.2 * t)  # noqa: E731
    x_s = F.conv2d(blk.norm_s(x, seg), sn(blk.conv_s))
    dx = F.conv2d(lrelu(blk.norm_0(x, seg)), sn(blk.conv_0), blk.conv_0.bias, padding=1)
    dx = F.conv2d(lrelu(blk.norm_1(dx, seg)), sn(blk.conv_1), blk.conv_1.bias, padding=1)
    torch.testing.assert_close(blk(x, seg), x_s + dx, rtol=1e-4, atol=1e-5)
    same = SPADEResBlock(4, 4, label_nc=3)
    assert not hasattr(same, "conv_s") and not hasattr(same, "norm_s")


# --------------------------------------------------------------------------------------------------
# LIP
# --------------------------------------------------------------------------------------------------


def _lip_naive(x: np.ndarray, logit: np.ndarray, k=3, s=2, p=1) -> np.ndarray:
    b, c, h, w = x.shape
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    out = np.zeros((b, c, ho, wo))
    for n, ch, i, j in itertools.product(range(b), range(c), range(ho), range(wo)):
        num = den = 0.0
        for di, dj in itertools.product(range(k), range(k)):
            y, xx = i * s - p + di, j * s - p + dj
            if 0 <= y < h and 0 <= xx < w:
                wgt = np.exp(logit[n, ch, y, xx])
                num += wgt * x[n, ch, y, xx]
                den += wgt
        out[n, ch, i, j] = num / den
    return out


@pytest.mark.parametrize("shape", [(2, 3, 6, 6), (1, 2, 7, 5)])
def test_lip2d_matches_weighted_window_average(shape):
    g = _seed(9)
    x = torch.randn(shape, generator=g)
    logit = torch.rand(shape, generator=g) * 12
    out = lip2d(x, logit)
    ref = _lip_naive(x.double().numpy(), logit.double().numpy())
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-6)


def test_simplified_lip_is_lip_of_gated_logits_and_a_convex_combination():
    g = _seed(10)
    m = SimplifiedLIP(4)
    assert set(m.state_dict()) == {"logit.0.weight", "logit.1.weight", "logit.1.bias"}
    x = torch.randn(2, 4, 8, 8, generator=g)
    logit = 12 * torch.sigmoid(m.logit[1](m.logit[0](x)))
    torch.testing.assert_close(m(x), lip2d(x, logit))
    out = m(x)
    win_max = F.max_pool2d(x, 3, 2, 1)
    win_min = -F.max_pool2d(-x, 3, 2, 1)
    assert bool((out <= win_max + 1e-5).all()) and bool((out >= win_min - 1e-5).all())


def test_lip_half_precision_does_not_overflow():
    g = _seed(11)
    x = torch.randn(1, 2, 8, 8, generator=g)
    logit = torch.full_like(x, 12.0)  # e^12 > float16 max
    out = lip2d(x.half(), logit.half())
    assert out.dtype == torch.float16 and bool(torch.isfinite(out).all())
    torch.testing.assert_close(out.float(), F.avg_pool2d(x, 3, 2, 1) / F.avg_pool2d(torch.ones_like(x), 3, 2, 1),
                               rtol=2e-3, atol=2e-3)  # fmt: skip


# --------------------------------------------------------------------------------------------------
# PAC
# --------------------------------------------------------------------------------------------------


def _pac_naive(x, e, weight, bias, stride, padding, dilation):
    """Literal eq. 8-9: E(p) = sum_q tanh(e_p . e_q) W[q-p] x_q, zero padding (e_q = x_q = 0 outside)."""
    x, e, weight = x.double().numpy(), e.double().numpy(), weight.double().numpy()
    b, _, h, w = x.shape
    o, _, k, _ = weight.shape
    ho = (h + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    wo = (w + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    out = np.zeros((b, o, ho, wo))
    for n, i, j in itertools.product(range(b), range(ho), range(wo)):
        cy, cx = i * stride - padding + dilation * (k // 2), j * stride - padding + dilation * (k // 2)
        ep = e[n, :, cy, cx] if (0 <= cy < h and 0 <= cx < w) else np.zeros(e.shape[1])
        acc = np.zeros(o)
        for di, dj in itertools.product(range(k), range(k)):
            y, xx = i * stride - padding + di * dilation, j * stride - padding + dj * dilation
            if not (0 <= y < h and 0 <= xx < w):
                continue
            phi = np.tanh(ep @ e[n, :, y, xx])
            acc += weight[:, :, di, dj] @ x[n, :, y, xx] * phi
        out[n, :, i, j] = acc + (0 if bias is None else bias.double().numpy())
    return out


@pytest.mark.parametrize(
    "stride,padding,dilation,k", [(1, 1, 1, 3), (2, 1, 1, 3), (1, 2, 2, 3), (2, 2, 1, 5), (1, 0, 1, 3)]
)
def test_pac_conv_matches_naive_loop(stride, padding, dilation, k):
    g = _seed(12)
    x = torch.randn(2, 3, 7, 6, generator=g)
    e = torch.randn(2, 4, 7, 6, generator=g) * 0.5
    weight = torch.randn(5, 3, k, k, generator=g)
    bias = torch.randn(5, generator=g)
    kern = pac_correlation_kernel(e, k, stride, padding, dilation)
    out = pac_conv2d(x, kern, weight, bias, stride, padding, dilation)
    ref = _pac_naive(x, e, weight, bias, stride, padding, dilation)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-5)


def test_pac_module_uses_its_mlp_embedding_and_is_batched():
    g = _seed(13)
    m = PacConv2d(3, 4, 3, stride=2, embed_dim=5)
    x = torch.randn(3, 3, 8, 8, generator=g)
    e = m.embed(x)
    ref = _pac_naive(x, e.detach(), m.weight.detach(), m.bias.detach(), 2, 1, 1)
    np.testing.assert_allclose(m(x).detach().numpy(), ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(m(x)[1:2], m(x[1:2]))  # per-sample: no cross-batch mixing


def test_pac_with_unit_kernel_is_plain_convolution():
    g = _seed(14)
    x = torch.randn(2, 3, 9, 8, generator=g)
    weight, bias = torch.randn(4, 3, 3, 3, generator=g), torch.randn(4, generator=g)
    kern = torch.ones(2, 9, 5, 4)
    torch.testing.assert_close(pac_conv2d(x, kern, weight, bias, 2, 1), F.conv2d(x, weight, bias, 2, 1),
                               rtol=1e-5, atol=1e-5)  # fmt: skip


def test_pac_gradcheck():
    g = _seed(15)
    x = torch.randn(1, 2, 5, 4, generator=g, dtype=torch.double, requires_grad=True)
    e = torch.randn(1, 3, 5, 4, generator=g, dtype=torch.double, requires_grad=True)
    w = torch.randn(2, 2, 3, 3, generator=g, dtype=torch.double, requires_grad=True)
    fn = lambda x, e, w: pac_conv2d(x, pac_correlation_kernel(e, 3, 1, 1), w, None, 1, 1)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, e, w))


def test_pac_rejects_even_kernels_and_bad_kernel_shapes():
    with pytest.raises(ValueError):
        PacConv2d(2, 2, 4)
    with pytest.raises(ValueError):
        pac_conv2d(torch.zeros(1, 2, 5, 5), torch.zeros(1, 9, 4, 4), torch.zeros(2, 2, 3, 3), None, 1, 1)


# --------------------------------------------------------------------------------------------------
# ResBlock / norm factory
# --------------------------------------------------------------------------------------------------


def test_resblock_identity_shortcut_and_learned_shortcut():
    _seed(16)
    blk = ResBlock(4, 4, norm="instance")
    for p in (blk.conv_1.weight, blk.conv_1.bias):
        nn.init.zeros_(p)
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(blk(x), x)  # residual branch switched off -> identity
    blk2 = ResBlock(4, 6, spectral=True)
    assert isinstance(blk2.conv_s, SNConv2d) and blk2(x).shape == (2, 6, 6, 6)
    assert isinstance(make_norm("none", 3), nn.Identity)
    with pytest.raises(ValueError):
        make_norm("group", 3)
