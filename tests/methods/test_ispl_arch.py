"""ISPL / HiFaceGAN architecture: shapes, fusion and fidelity semantics, upstream checkpoint layout,
parameter counts, eval-mode correctness, gradients, losses and a few optimisation steps."""

from __future__ import annotations

import itertools
import logging
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from facerestore.errors import InputError, WeightsMissingError
from facerestore.methods.ispl import (
    CONFIGS,
    FUSIONS,
    HiFaceGAN,
    ISPLConfig,
    ISPLGenerator,
    MultiscaleDiscriminator,
    build_generator,
    count_parameters,
    get_config,
    load_hifacegan_state_dict,
)
from facerestore.methods.ispl import losses as L
from facerestore.methods.ispl.generator import availability

TINY = dict(size=32, ngf=4, max_channels=16, n_subspaces=3, guide_channels=8, spade_hidden=8, pac_embed_dim=4)


def tiny(**kw) -> ISPLGenerator:
    torch.manual_seed(0)
    return ISPLGenerator(**{**TINY, **kw})


def smooth_images(b: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(b, 3, max(2, size // 8), max(2, size // 8), generator=g)
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)


# --------------------------------------------------------------------------------------------------
# Upstream HiFaceGAN layout, written out from Face-Renovation's module definitions
# (SPADEGenerator / LIPSPADEGenerator / HiFaceGANGenerator, SPADEResnetBlock, SPADE with a
# synchronised BatchNorm, classic torch spectral_norm, LIPEncoder / ContentAdaptiveSuppresor).
# --------------------------------------------------------------------------------------------------

BUFFER_SUFFIXES = ("weight_u", "weight_v", "running_mean", "running_var", "num_batches_tracked")


def upstream_hifacegan_table(ngf: int, variant: str) -> dict[str, tuple[int, ...]]:
    t: dict[str, tuple[int, ...]] = {}

    def conv(name, cin, cout, k, bias=True, sn=False):
        if sn:
            t[f"{name}.weight_orig"] = (cout, cin, k, k)
            t[f"{name}.weight_u"] = (cout,)
            t[f"{name}.weight_v"] = (cin * k * k,)
        else:
            t[f"{name}.weight"] = (cout, cin, k, k)
        if bias:
            t[f"{name}.bias"] = (cout,)

    def spade(name, norm_nc, label_nc):
        nhidden = 128 if norm_nc > 128 else norm_nc
        t[f"{name}.param_free_norm.running_mean"] = (norm_nc,)
        t[f"{name}.param_free_norm.running_var"] = (norm_nc,)
        t[f"{name}.param_free_norm.num_batches_tracked"] = ()
        conv(f"{name}.mlp_shared.0", label_nc, nhidden, 3)
        conv(f"{name}.mlp_gamma", nhidden, norm_nc, 3, bias=False)
        conv(f"{name}.mlp_beta", nhidden, norm_nc, 3, bias=False)

    def resblock(name, fin, fout, label_nc):
        fmid = min(fin, fout)
        conv(f"{name}.conv_0", fin, fmid, 3, sn=True)
        conv(f"{name}.conv_1", fmid, fout, 3, sn=True)
        if fin != fout:
            conv(f"{name}.conv_s", fin, fout, 1, bias=False, sn=True)
        spade(f"{name}.norm_0", fin, label_nc)
        spade(f"{name}.norm_1", fmid, label_nc)
        if fin != fout:
            spade(f"{name}.norm_s", fin, label_nc)

    nf = ngf
    enc = [ngf * min(2**i, 16) for i in range(6)]  # LIP encoder widths, full resolution .. 1/32
    # HiFaceGANGenerator conditions head_0 on xs[0] (1/32), G_middle_* on xs[1], ups[i] on xs[i+2]
    labels = [enc[5], enc[4], enc[4], enc[3], enc[2], enc[1], enc[0]] if variant == "features" else [3] * 7
    conv("fc", 3, 16 * nf, 3)
    resblock("head_0", 16 * nf, 16 * nf, labels[0])
    resblock("G_middle_0", 16 * nf, 16 * nf, labels[1])
    resblock("G_middle_1", 16 * nf, 16 * nf, labels[2])
    for i, (a, b) in enumerate([(16, 8), (8, 4), (4, 2), (2, 1)]):
        resblock(f"ups.{i}", a * nf, b * nf, labels[3 + i])
    for i, m in enumerate((8, 4, 2, 1)):
        conv(f"to_rgbs.{i}", m * nf, 3, 3)

    def lip(name, c):
        t[f"{name}.logit.0.weight"] = (c, c, 3, 3)
        t[f"{name}.logit.1.weight"] = (c,)
        t[f"{name}.logit.1.bias"] = (c,)

    if variant == "lipspade":  # nn.Sequential: conv, IN, ReLU, then [LIP, conv, IN, (ReLU)] x 5
        conv("lip_encoder.model.0", 3, ngf, 3, bias=False)
        idx = 3
        for i in range(5):
            lip(f"lip_encoder.model.{idx}", enc[i])
            conv(f"lip_encoder.model.{idx + 1}", enc[i], enc[i + 1], 3)
            idx += 3 + (1 if i < 4 else 0)
    else:
        conv("encoder.head.0", 3, ngf, 3, bias=False)
        for i in range(5):
            lip(f"encoder.encoder_{i}.0", enc[i])
            conv(f"encoder.encoder_{i}.1", enc[i], enc[i + 1], 3)
    return t


def table_params(table: dict[str, tuple[int, ...]]) -> int:
    return sum(math.prod(s) for k, s in table.items() if not k.endswith(BUFFER_SUFFIXES))


def synthetic_state(table: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, s in table.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(1000, dtype=torch.long)
        elif k.endswith(("running_var",)):
            out[k] = torch.rand(s, generator=g) + 0.5
        else:
            out[k] = torch.randn(s, generator=g) * 0.05
    return out


@pytest.mark.parametrize(
    "ngf,variant,millions",
    [(48, "lipspade", 72.2), (64, "lipspade", 120.3), (48, "features", 79.9), (64, "features", 130.6)],
)
def test_hifacegan_layout_and_parameter_count_match_upstream(ngf, variant, millions):
    # 79.9M / 130.6M (features) and 120.3M (lipspade, ngf 64) are the counts the upstream code prints;
    # 72.2M is the released ngf-48 lipspade checkpoint.
    table = upstream_hifacegan_table(ngf, variant)
    with torch.device("meta"):
        model = HiFaceGAN(ngf, variant)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == table
    assert round(table_params(table) / 1e6, 1) == millions
    assert round(count_parameters(model) / 1e6, 1) == millions


def test_released_layout_loads_strictly_at_ngf48():
    table = upstream_hifacegan_table(48, "lipspade")
    state = {k: torch.zeros(s, dtype=torch.long if k.endswith("tracked") else torch.float32) for k, s in table.items()}
    model = HiFaceGAN(48, "lipspade")
    load_hifacegan_state_dict(model, state)
    assert model.state_dict()["fc.weight"].shape == (768, 3, 3, 3)


def test_hifacegan_loader_handles_upstream_spellings_and_rejects_mismatches(tmp_path):
    table = upstream_hifacegan_table(4, "lipspade")
    state = synthetic_state(table)
    ref = load_hifacegan_state_dict(HiFaceGAN(4, "lipspade"), state).eval()
    x = smooth_images(1, 64)
    y_ref = ref(x)
    assert y_ref.shape == (1, 3, 64, 64) and bool(torch.isfinite(y_ref).all())

    # DataParallel prefix + BasicSR naming without SPADE running statistics
    basicsr = {("module." + k).replace("module.G_middle_", "module.g_middle_"): v for k, v in state.items()}
    basicsr = {k: v for k, v in basicsr.items() if "param_free_norm" not in k}
    m2 = load_hifacegan_state_dict(HiFaceGAN(4, "lipspade"), {"params": basicsr}).eval()
    torch.testing.assert_close(m2(x), y_ref)

    # torch.nn.utils.parametrizations spelling of spectral norm
    par = {}
    for k, v in state.items():
        for old, new in (
            (".weight_orig", ".parametrizations.weight.original"),
            (".weight_u", ".parametrizations.weight.0._u"),
            (".weight_v", ".parametrizations.weight.0._v"),
        ):
            if k.endswith(old):
                k = k[: -len(old)] + new
        par[k] = v
    m3 = load_hifacegan_state_dict(HiFaceGAN(4, "lipspade"), par).eval()
    torch.testing.assert_close(m3(x), y_ref)

    # from a file (weights_only) and safetensors
    torch.save(state, tmp_path / "latest_net_G.pth")
    m4 = load_hifacegan_state_dict(HiFaceGAN(4, "lipspade"), tmp_path / "latest_net_G.pth").eval()
    torch.testing.assert_close(m4(x), y_ref)
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "g.safetensors"))
    m5 = load_hifacegan_state_dict(HiFaceGAN(4, "lipspade"), tmp_path / "g.safetensors").eval()
    torch.testing.assert_close(m5(x), y_ref)

    with pytest.raises(InputError, match=r"fc\.weight has shape"):
        load_hifacegan_state_dict(HiFaceGAN(8, "lipspade"), {**synthetic_state(upstream_hifacegan_table(8, "lipspade")),
                                                            "fc.weight": torch.zeros(1, 3, 3, 3)})  # fmt: skip
    with pytest.raises(InputError, match="missing") as exc:
        load_hifacegan_state_dict(HiFaceGAN(4, "features"), state)
    assert "\n" not in str(exc.value)
    with pytest.raises(WeightsMissingError):
        load_hifacegan_state_dict(HiFaceGAN(4, "lipspade"), tmp_path / "absent.pth")


def _sn_eval_weight(conv_state: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    w = conv_state[prefix + ".weight_orig"]
    sigma = conv_state[prefix + ".weight_u"] @ w.reshape(w.shape[0], -1) @ conv_state[prefix + ".weight_v"]
    return w / sigma


def test_hifacegan_lipspade_forward_matches_an_independent_functional_recomputation():
    """Recompute the upstream LIPSPADEGenerator forward with plain functional ops from the state dict."""
    torch.manual_seed(3)
    model = HiFaceGAN(2, "lipspade").eval()
    s = {k: v.detach() for k, v in model.state_dict().items()}
    x = smooth_images(2, 64, seed=3)

    def inorm(t):
        mu = t.mean(dim=(2, 3), keepdim=True)
        return (t - mu) / torch.sqrt(t.var(dim=(2, 3), unbiased=False, keepdim=True) + 1e-5)

    def spade(p, t, seg):
        seg = F.interpolate(seg, size=t.shape[-2:], mode="nearest")
        a = F.relu(F.conv2d(seg, s[p + ".mlp_shared.0.weight"], s[p + ".mlp_shared.0.bias"], padding=1))
        return inorm(t) * F.conv2d(a, s[p + ".mlp_gamma.weight"], padding=1) + F.conv2d(
            a, s[p + ".mlp_beta.weight"], padding=1
        )

    def block(p, t, seg):
        lr = lambda z: F.leaky_relu(z, 0.2)  # noqa: E731
        if p + ".conv_s.weight_orig" in s:
            t_s = F.conv2d(spade(p + ".norm_s", t, seg), _sn_eval_weight(s, p + ".conv_s"))
        else:
            t_s = t
        d = F.conv2d(
            lr(spade(p + ".norm_0", t, seg)), _sn_eval_weight(s, p + ".conv_0"), s[p + ".conv_0.bias"], padding=1
        )
        d = F.conv2d(
            lr(spade(p + ".norm_1", d, seg)), _sn_eval_weight(s, p + ".conv_1"), s[p + ".conv_1.bias"], padding=1
        )
        return t_s + d

    h = F.relu(inorm(F.conv2d(x, s["lip_encoder.model.0.weight"], padding=1)))
    idx = 3
    for i in range(5):
        p = f"lip_encoder.model.{idx}"
        c = F.conv2d(h, s[p + ".logit.0.weight"], padding=1)
        logit = 12 * torch.sigmoid(
            inorm(c) * s[p + ".logit.1.weight"].view(1, -1, 1, 1) + s[p + ".logit.1.bias"].view(1, -1, 1, 1)
        )
        w = logit.exp()
        h = F.avg_pool2d(h * w, 3, 2, 1) / F.avg_pool2d(w, 3, 2, 1)
        h = inorm(
            F.conv2d(h, s[f"lip_encoder.model.{idx + 1}.weight"], s[f"lip_encoder.model.{idx + 1}.bias"], padding=1)
        )
        if i < 4:
            h = F.relu(h)
        idx += 3 + (1 if i < 4 else 0)
    up = lambda z: F.interpolate(z, scale_factor=2, mode="nearest")  # noqa: E731
    h = up(block("head_0", h, x))
    h = block("G_middle_1", block("G_middle_0", h, x), x)
    for i in range(4):
        h = block(f"ups.{i}", up(h), x)
    out = torch.tanh(F.conv2d(F.leaky_relu(h, 0.2), s["to_rgbs.3.weight"], s["to_rgbs.3.bias"], padding=1))
    torch.testing.assert_close(model.forward_raw(x), out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model(x), out.clamp(0, 1), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# ISPL generator: shapes, fusion variants, fidelity
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("pac", [True, False])
def test_ispl_shapes_for_every_fusion(fusion, pac):
    m = tiny(fusion=fusion, pac=pac)
    x = smooth_images(2, 32)
    y = m(x)
    assert y.shape == x.shape and bool(((y >= 0) & (y <= 1)).all())
    ys = m.encode(x)
    assert [tuple(t.shape[-2:]) for t in ys] == [(4, 4), (8, 8), (16, 16)]
    guides = m.fuse(ys)
    expect_c = 8 * 3 if fusion == "concat" else 8
    assert [tuple(g.shape[1:]) for g in guides] == [(expect_c, 4, 4), (expect_c, 8, 8), (expect_c, 16, 16)]
    rect = smooth_images(1, 64)[:, :, :32, :]
    assert m(rect).shape == (1, 3, 32, 64)


@pytest.mark.parametrize("size", [128, 256, 512])
def test_ispl_output_sizes(size):
    torch.manual_seed(0)
    m = ISPLGenerator(
        size=size, ngf=2, max_channels=8, n_subspaces=5, guide_channels=4, spade_hidden=4, pac_embed_dim=2
    )
    ys = m.encode(torch.rand(1, 3, size, size))
    assert ys[0].shape[-1] == size // 32  # innermost subspace: 16x16 at 512 as in the paper
    with torch.no_grad():
        assert m(torch.rand(1, 3, size, size), fidelity=0.5).shape == (1, 3, size, size)


def test_input_guide_appends_the_box_averaged_input_to_every_guidance_map(monkeypatch):
    m = tiny(input_guide=True).eval()
    assert count_parameters(m) > count_parameters(tiny())  # the SPADE label convs read 3 more channels
    x = smooth_images(2, 32)
    seen = {}
    orig = ISPLGenerator.decode

    def spy(self, y0, guides):
        seen["guides"] = guides
        return orig(self, y0, guides)

    monkeypatch.setattr(ISPLGenerator, "decode", spy)
    with torch.no_grad():
        y = m(x, fidelity=0.3)
    assert y.shape == x.shape
    # independent reference: 8x8 block means of the input in [-1, 1] (y_0 is 4x4 at 32 px), then bilinear
    anchor = (x * 2 - 1).reshape(2, 3, 4, 8, 4, 8).mean(dim=(3, 5))
    for g in seen["guides"]:
        assert g.shape[1] == 8 + 3
        ref = anchor if g.shape[-1] == 4 else F.interpolate(anchor, size=g.shape[-2:], mode="bilinear",
                                                            align_corners=False)
        torch.testing.assert_close(g[:, -3:], ref, atol=1e-6, rtol=0)
    # off (the paper's setting): guidance is the fusion output alone
    assert tiny().fuse(tiny().encode(x))[0].shape[1] == 8


def test_ispl_input_validation():
    m = tiny()
    with pytest.raises(InputError):
        m(torch.rand(1, 3, 30, 32))
    with pytest.raises(InputError):
        m(torch.rand(1, 1, 32, 32))
    with pytest.raises(InputError):
        m(torch.rand(1, 3, 32, 32), fidelity=1.5)
    with pytest.raises(InputError):
        m(torch.rand(2, 3, 32, 32), fidelity=torch.tensor([0.5, 0.5, 0.5]))
    with pytest.raises(ValueError):
        ISPLGenerator(**{**TINY, "fusion": "sum"})


def test_fidelity_none_is_the_default_and_zero_differs_from_one():
    x = smooth_images(2, 32)
    m = tiny().eval()
    with torch.no_grad():
        assert torch.equal(m(x), m(x, fidelity=1.0))
        assert (m(x, fidelity=0.0) - m(x, fidelity=1.0)).abs().max() > 1e-4
    m2 = tiny(default_fidelity=0.3).eval()
    with torch.no_grad():
        assert torch.equal(m2(x), m2(x, fidelity=0.3))


def test_fidelity_per_sample_tensor_equals_separate_calls_and_is_continuous():
    x = smooth_images(2, 32, seed=1)
    m = tiny().eval()
    with torch.no_grad():
        both = m(x, fidelity=torch.tensor([0.2, 0.9]))
        torch.testing.assert_close(both[:1], m(x[:1], fidelity=0.2), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(both[1:], m(x[1:], fidelity=0.9), rtol=1e-4, atol=1e-4)
        d_small = (m(x, fidelity=0.6) - m(x, fidelity=0.6005)).abs().max()
        d_big = (m(x, fidelity=0.6) - m(x, fidelity=0.0)).abs().max()
        assert d_small < 0.02 * d_big


def test_availability_schedule_is_monotone_and_hits_isp_k_n():
    t = torch.linspace(0, 1, 101)
    a = torch.stack(availability(t, 5))  # (5, 101)
    assert bool((a[0] == 1).all()) and bool((a.diff(dim=1) >= 0).all())
    for k in range(5):  # fidelity k/(n-1) -> exactly subspaces 0..k available (ISP(k, n))
        col = torch.stack(availability(torch.tensor([k / 4]), 5)).flatten()
        assert col.tolist() == [1.0] * (k + 1) + [0.0] * (4 - k)


@pytest.mark.parametrize("fusion", ["unet", "concat", "matrix"])
def test_subspaces_used_grow_with_fidelity(fusion):
    """Subspace j changes the guidance iff fidelity * (n - 1) > j - 1 (it is available)."""
    m = tiny(fusion=fusion).eval()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        ys = m.encode(smooth_images(1, 32, seed=2))
        for t in (0.0, 0.25, 0.5, 0.75, 1.0):
            base = m.fuse(ys, t)
            for j in range(3):
                pert = list(ys)
                pert[j] = ys[j] + torch.randn(ys[j].shape, generator=g)
                diff = max((a - b).abs().max().item() for a, b in zip(m.fuse(pert, t), base))
                assert (diff > 1e-6) == (t * 2 > j - 1), (t, j, diff)


def test_unet_guidance_at_integer_level_is_isp_k_n():
    m = tiny().eval()
    with torch.no_grad():
        ys = m.encode(smooth_images(1, 32, seed=4))
        a = [m.align[j](ys[j]) for j in range(3)]
        up = lambda z: F.interpolate(z, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
        expect = {1.0: [a[0], a[1], a[2]], 0.5: [a[0], a[1], up(a[1])], 0.0: [a[0], up(a[0]), up(up(a[0]))]}
        for t, exp in expect.items():
            for got, e in zip(m.fuse(ys, t), exp):
                torch.testing.assert_close(got, e)
        # halfway between ISP(1, 3) and ISP(2, 3): linear blend of the two
        mid = m.fuse(ys, 0.75)[2]
        torch.testing.assert_close(mid, 0.5 * a[2] + 0.5 * up(a[1]))


def test_y0_fusion_ignores_fidelity_and_matrix_identity_equals_unet():
    x = smooth_images(1, 32)
    m = tiny(fusion="y0").eval()
    assert not m.supports_fidelity
    with torch.no_grad():
        assert torch.equal(m(x, fidelity=0.0), m(x, fidelity=1.0))
        ys = m.encode(x)
        a0 = m.align[0](ys[0])
        for got, size in zip(m.fuse(ys), (4, 8, 16)):
            torch.testing.assert_close(got, F.interpolate(a0, size=(size, size), mode="bilinear", align_corners=False))
    mu, mm = tiny(fusion="unet").eval(), tiny(fusion="matrix").eval()
    mm.load_state_dict({**mu.state_dict(), "fusion_matrix": torch.eye(3)})
    with torch.no_grad():
        torch.testing.assert_close(mm(x, fidelity=0.4), mu(x, fidelity=0.4))
        w = torch.tensor([[0.5, 0.2, 0.3], [0.0, 1.0, -1.0], [0.1, 0.1, 0.8]])
        mm.fusion_matrix.copy_(w)
        ys = mm.encode(x)
        a = [mm.align[j](ys[j]) for j in range(3)]
        f1 = mm.fuse(ys)[1]  # level 1 (8x8): y0 upsampled, y1, y2 area-downsampled
        ref = (w[1, 0] * F.interpolate(a[0], size=(8, 8), mode="bilinear", align_corners=False) + w[1, 1] * a[1]
               + w[1, 2] * F.avg_pool2d(a[2], 2))  # fmt: skip
        torch.testing.assert_close(f1, ref)


# --------------------------------------------------------------------------------------------------
# eval() correctness, gradients, optimisation
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: tiny(), lambda: HiFaceGAN(2, "lipspade"), lambda: HiFaceGAN(2, "features")])
def test_eval_is_deterministic_and_independent_of_batch_composition(make):
    torch.manual_seed(0)
    m = make()
    m.train()
    size = 32 if isinstance(m, ISPLGenerator) else 64
    x = smooth_images(3, size, seed=7)
    with torch.no_grad():
        m(x)  # a training-mode pass moves the power-iteration vectors; eval must not
        m.eval()
        bufs = {k: v.clone() for k, v in m.state_dict().items()}
        y_all = m(x)
        y_one = m(x[1:2])
        y_again = m(x)
    torch.testing.assert_close(y_all[1:2], y_one, rtol=1e-4, atol=1e-4)
    assert torch.equal(y_all, y_again)
    assert all(torch.equal(bufs[k], v) for k, v in m.state_dict().items())


def test_eval_matches_converged_train_mode_at_batch_one():
    """The authors ran inference in train() mode at batch 1 (batch statistics, a power-iteration step
    per call); once the power iteration has converged our eval() output is the same."""
    torch.manual_seed(1)
    m = HiFaceGAN(2, "lipspade")
    x = smooth_images(1, 64, seed=8)
    with torch.no_grad():
        y_eval_fresh = m.eval()(x)
        y_train_fresh = m.train()(x)
        assert (y_eval_fresh - y_train_fresh).abs().max() > 1e-2  # u, v not converged yet: they differ
        for _ in range(40):
            m(x)
        y_eval = m.eval()(x)
        y_train = m.train()(x)  # one more power-iteration step and train-mode normalisation
    torch.testing.assert_close(y_eval, y_train, rtol=1e-4, atol=1e-5)


def test_gradients_reach_every_parameter_of_g_and_d():
    m = tiny(fusion="matrix")
    d = MultiscaleDiscriminator(ndf=8)
    x = smooth_images(2, 32)
    y = m(x, fidelity=torch.tensor([0.7, 1.0]))
    preds = d(y, x)
    L.lsgan_loss(preds, True).backward()
    for name, p in list(m.named_parameters()) + list(d.named_parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    h = HiFaceGAN(2, "features")
    h(x.repeat(1, 1, 2, 2)).mean().backward()
    unused = {
        "to_rgbs.0.weight",
        "to_rgbs.0.bias",
        "to_rgbs.1.weight",
        "to_rgbs.1.bias",
        "to_rgbs.2.weight",
        "to_rgbs.2.bias",
    }
    for name, p in h.named_parameters():
        assert (p.grad is not None) == (name not in unused), name


def test_a_few_optimisation_steps_reduce_the_losses():
    torch.manual_seed(0)
    m = tiny()
    x, target = smooth_images(2, 32, seed=1), smooth_images(2, 32, seed=2)
    opt = torch.optim.Adam(m.parameters(), lr=5e-3)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = L.pixel_loss(m(x), target, "l1")
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]

    d = MultiscaleDiscriminator(ndf=8)
    opt_d = torch.optim.Adam(d.parameters(), lr=1e-3, betas=(0.0, 0.9))
    fake = m(x).detach()
    d_losses = []
    for _ in range(6):
        opt_d.zero_grad()
        terms = L.discriminator_losses(d(fake, x), d(target, x))
        terms["total"].backward()
        opt_d.step()
        d_losses.append(terms["total"].item())
    assert d_losses[-1] < d_losses[0]


@pytest.mark.slow
def test_trained_with_random_fidelity_distortion_falls_as_fidelity_rises():
    """After joint training of all ISP(k, n) sub-models (random fidelity), L1 error is monotone in the knob."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)

    def batch(b):
        return F.interpolate(torch.rand(b, 3, 8, 8, generator=g), size=(32, 32), mode="bilinear", align_corners=False)

    m = tiny()
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)
    for _ in range(60):
        x = batch(8)
        loss = F.l1_loss(m(x, fidelity=ISPLGenerator.sample_fidelity(8, generator=g)), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    x = batch(8)
    with torch.no_grad():
        err = [F.l1_loss(m(x, fidelity=f), x).item() for f in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert all(b <= a + 2e-3 for a, b in itertools.pairwise(err)), err
    assert err[0] > 1.1 * err[-1], err


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_forward_on_cpu(dtype):
    x = smooth_images(1, 32)
    for m, inp in ((tiny().eval(), x), (HiFaceGAN(2, "lipspade").eval(), smooth_images(1, 64))):
        with torch.no_grad():
            ref = m(inp)
            out = m.to(dtype)(inp.to(dtype))
        assert out.dtype == dtype and bool(torch.isfinite(out).all())
        assert (out.float() - ref).abs().mean() < 0.03


# --------------------------------------------------------------------------------------------------
# Discriminator
# --------------------------------------------------------------------------------------------------


def test_discriminator_layout_params_and_second_scale_input():
    d = MultiscaleDiscriminator()
    # upstream definition: 6->64 (bias), 64->128, 128->256, 256->512 (spectral, no bias: IN follows), 512->1 (bias)
    per_scale = (6 * 64 * 16 + 64) + 64 * 128 * 16 + 128 * 256 * 16 + 256 * 512 * 16 + (512 * 16 + 1)
    assert count_parameters(d) == 2 * per_scale == 5_533_826
    assert "discriminator_1.model3.0.0.weight_orig" in d.state_dict()
    x, c = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    out = d(x, c)
    assert len(out) == 2 and all(len(o) == 5 for o in out)
    assert [o.shape[1] for o in out[0]] == [64, 128, 256, 512, 1]
    # second scale sees the 3x3/s2/p1 average over valid pixels only
    inp = torch.cat([c, x], 1)
    ones = torch.ones_like(inp[:, :1])
    pooled = F.avg_pool2d(inp, 3, 2, 1) / F.avg_pool2d(ones, 3, 2, 1)
    d.eval()
    torch.testing.assert_close(d(x, c)[1][-1], d.discriminator_1(pooled)[-1], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------


def test_lsgan_and_feature_matching_match_formulas():
    g = torch.Generator().manual_seed(0)
    fake = [[torch.randn(2, 4, 5, 5, generator=g), torch.randn(2, 1, 3, 3, generator=g)] for _ in range(2)]
    real = [[torch.randn(2, 4, 5, 5, generator=g), torch.randn(2, 1, 3, 3, generator=g)] for _ in range(2)]
    exp_real = sum(((s[-1] - 1) ** 2).mean() for s in fake) / 2
    exp_fake = sum((s[-1] ** 2).mean() for s in fake) / 2
    torch.testing.assert_close(L.lsgan_loss(fake, True), exp_real)
    torch.testing.assert_close(L.lsgan_loss(fake, False), exp_fake)
    exp_fm = sum((f[0] - r[0]).abs().mean() for f, r in zip(fake, real)) * 10 / 2
    torch.testing.assert_close(L.feature_matching_loss(fake, real), exp_fm)
    # paper 000 eq. 12: 1/(HWC) ||.||_2^2, the mean square ("l2", the adapter's default)
    exp_fm2 = sum(((f[0] - r[0]) ** 2).mean() for f, r in zip(fake, real)) * 10 / 2
    torch.testing.assert_close(L.feature_matching_loss(fake, real, norm="l2"), exp_fm2)
    feats_x, feats_y = [fake[0][0], fake[1][0]], [real[0][0], real[1][0]]
    want = 0.5 * ((feats_x[0] - feats_y[0]) ** 2).mean() + 2 * ((feats_x[1] - feats_y[1]) ** 2).mean()
    torch.testing.assert_close(L.perceptual_distance(feats_x, feats_y, (0.5, 2.0), "l2"), want)
    with pytest.raises(ValueError, match="feature norm"):
        L.feature_matching_loss(fake, real, norm="l3")
    fake[0][0].requires_grad_(True)
    real[0][0].requires_grad_(True)
    L.feature_matching_loss(fake, real).backward()
    assert fake[0][0].grad is not None and real[0][0].grad is None  # the real branch is a fixed target
    torch.testing.assert_close(
        L.pixel_loss(fake[0][0], real[0][0].detach(), "l2"), ((fake[0][0] - real[0][0]) ** 2).mean()
    )


class _TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 2, 3, stride=2, padding=1)

    def forward(self, x):
        h = F.relu(self.a(x))
        return [h, F.relu(self.b(h))]


def test_perceptual_loss_with_an_explicit_custom_backbone(caplog):
    torch.manual_seed(0)
    net = _TwoLayer()
    with caplog.at_level(logging.INFO, logger="facerestore.methods.ispl.losses"):
        loss = L.PerceptualLoss(net, layer_weights=(0.25, 1.0), weight=10.0)
    assert "_TwoLayer" in caplog.text
    assert all(not p.requires_grad for p in net.parameters())
    x, y = torch.rand(2, 3, 8, 8, requires_grad=True), torch.rand(2, 3, 8, 8)
    fx, fy = net(x), net(y)
    expected = 10 * (0.25 * (fx[0] - fy[0]).abs().mean() + (fx[1] - fy[1]).abs().mean())
    out = loss(x, y)
    torch.testing.assert_close(out, expected)
    out.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_perceptual_none_is_explicit_and_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="facerestore.methods.ispl.losses"):
        loss = L.PerceptualLoss("none")
    assert "disabled" in caplog.text
    assert loss(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)).item() == 0.0
    with pytest.raises(ValueError):
        L.PerceptualLoss("lpips-free")


def test_perceptual_vgg19_absent_raises_one_line_weights_missing(tmp_path, monkeypatch):
    pytest.importorskip("facerestore.nn.backbones.weights")
    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path))
    with pytest.raises(WeightsMissingError) as exc:
        L.PerceptualLoss("vgg19")
    assert "vgg19-imagenet" in str(exc.value) and "\n" not in str(exc.value)


def test_perceptual_vgg19_uses_unnormalised_inputs_and_paper_weights(tmp_path):
    pytest.importorskip("facerestore.nn.backbones.weights")
    from facerestore.nn.backbones.vgg import VGG

    torch.manual_seed(0)
    vgg = VGG(19)
    path = tmp_path / "vgg19.pth"
    torch.save(vgg.state_dict(), path)
    loss = L.PerceptualLoss("vgg19", weights_path=path)
    x, y = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    names = list(L.VGG_LAYERS)
    fx, fy = vgg(x, names), vgg(y, names)  # raw [0, 1] inputs, no ImageNet normalisation
    expected = 10 * sum(w * (a - b).abs().mean() for w, a, b in zip((1 / 32, 1 / 16, 1 / 8, 1 / 4, 1), fx, fy))
    torch.testing.assert_close(loss(x, y), expected, rtol=1e-4, atol=1e-6)


def test_generator_losses_combine_terms():
    m, d = tiny(), MultiscaleDiscriminator(ndf=8)
    x, real = smooth_images(1, 32), smooth_images(1, 32, seed=3)
    fake = m(x)
    pf, pr = d(fake, x), d(real, x)
    terms = L.generator_losses(pf, pr, fake, real, perceptual=L.PerceptualLoss("none"), pixel=L.PixelLoss("l1", 2.0))
    torch.testing.assert_close(terms["total"], terms["gan"] + terms["fm"] + terms["perceptual"] + terms["pixel"])
    torch.testing.assert_close(terms["pixel"], 2 * (fake - real).abs().mean())
    terms["total"].backward()


# --------------------------------------------------------------------------------------------------
# Named configurations
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_named_configs_build_with_documented_parameter_counts(name):
    cfg = get_config(name)
    with torch.device("meta"):
        model = build_generator(name)
    assert count_parameters(model) == cfg.num_parameters
    assert cfg.supports_fidelity == (isinstance(model, ISPLGenerator) and model.supports_fidelity)
    assert cfg.supports_half


def test_paper_config_channels_and_unknown_name():
    with torch.device("meta"):
        m = build_generator("ispl-512")
    assert m.channels == [64, 128, 256, 512, 1024, 1024] and m.config.n_subspaces == 5
    with pytest.raises(InputError):
        build_generator("ispl-9000")
    assert isinstance(build_generator(ISPLConfig(**TINY)), ISPLGenerator)
