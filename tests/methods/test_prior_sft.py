"""The generative-prior restorer (methods/prior_sft): encoder + SFT steering of a frozen MobileStyleGAN.

Everywhere: the network on a tiny random MobileStyleGAN (what zero-initialised heads give, what alpha does, what is
trained and stored, gradients), the adapter (config errors, seeded alphas, exact resume, export -> restorer) with the
tiny prior standing in for the cached one. With the real prior and the built-in encoder: the restorer itself.
"""

from __future__ import annotations

import json
from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_resume_is_exact, make_face_dataset, needs_dlib, tiny_mobilestylegan
from facerestore import zoo
from facerestore.errors import InputError
from facerestore.methods import load_restorer
from facerestore.methods.inversion.losses import MultiResolutionLoss
from facerestore.methods.prior_sft import refine
from facerestore.methods.prior_sft import train as prior_train
from facerestore.methods.prior_sft.network import PriorSFTNet, block_groups
from facerestore.nn import mobilestylegan as msg
from facerestore.nn import stylegan2_io
from facerestore.train.config import config_from_dict

ENC = {"in_size": 32, "width": 4, "max_channels": 8, "sft_resolutions": (8, 16, 32), "colour_resolution": 8}


def _tiny_generator() -> msg.Generator:  # blocks 8..32 px, image 64 px
    return tiny_mobilestylegan((16, 16, 16, 8), with_w_avg=True).requires_grad_(False)


@pytest.fixture(scope="module")
def tiny() -> msg.Generator:
    return _tiny_generator()


def _net(G, **kw) -> PriorSFTNet:
    return PriorSFTNet(G.synthesis, G.mapping.w_avg, out_size=kw.pop("out_size", 32),
                       low_transfer=kw.pop("low_transfer", 0), **{**ENC, **kw})


def _randomise_heads(net: PriorSFTNet, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.encoder.parameters():
            if p.abs().sum() == 0:  # the zero-initialised heads
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def test_untrained_encoder_gives_the_priors_mean_face(tiny):
    net = _net(tiny)
    x = torch.rand(2, 3, 48, 48)
    w = tiny.mapping.w_avg.expand(2, tiny.num_ws, -1)
    expected = (tiny.synthesis(w, resolution=32) + 1) / 2
    torch.testing.assert_close(net(x), expected, rtol=0, atol=1e-6)


def test_alpha_zero_ignores_the_spatial_features_and_alpha_is_per_sample(tiny):
    net = _net(tiny)
    _randomise_heads(net)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ws, maps = net.encoder(x)
        assert ws.shape == (2, tiny.num_ws, 16)
        assert {r: tuple(s.shape) for r, (s, _) in maps.items()} == {8: (2, 8, 8, 8), 16: (2, 8, 16, 16),
                                                                      32: (2, 4, 32, 32), 0: (2, 3, 8, 8)}
        plain = (tiny.synthesis(ws, resolution=32) + 1) / 2
        torch.testing.assert_close(net(x, 0.0), plain, rtol=0, atol=1e-6)
        full = net(x, 1.0)
        assert (full - plain).abs().max() > 1e-3
        mixed = net(x, torch.tensor([0.0, 1.0]))
        torch.testing.assert_close(mixed, torch.cat([plain[:1], full[1:]]), rtol=0, atol=1e-6)


def test_colour_maps_act_on_the_low_band_only(tiny):
    net = _net(tiny)
    with torch.no_grad():  # only the colour head: a constant shift t of the image (in [0, 1] units: t / 2)
        net.encoder.colour[2].bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.2, -0.1, 0.0]))
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        shifted, plain = net(x, 1.0), net(x, 0.0)
        half = net(x, 0.5)
    torch.testing.assert_close(shifted - plain, torch.tensor([0.1, -0.05, 0.0]).view(1, 3, 1, 1).expand_as(plain),
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(half - plain, (shifted - plain) / 2, rtol=0, atol=1e-5)
    full = _net(tiny, out_size=64)
    full.load_state_dict(net.state_dict())
    with torch.no_grad():  # at the full resolution the shift reaches every pixel of the 2x2 blocks alike
        torch.testing.assert_close(F.avg_pool2d(full(x, 1.0), 2), shifted, rtol=0, atol=1e-5)


def test_low_transfer_gives_the_inputs_coarse_content(tiny):
    net = _net(tiny, low_transfer=8)  # untrained: the prior's mean face, its 8 px content replaced by the input's
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out, plain = net(x, 1.0), net(x, 0.0)
        half = net(x, 0.5)

    def coarse(img):
        return F.interpolate(F.interpolate(img, size=(8, 8), mode="area"), size=(32, 32), mode="bilinear",
                             align_corners=False)

    torch.testing.assert_close(out - plain, coarse(F.avg_pool2d(x, 2)) - coarse(plain),
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(half - plain, (out - plain) / 2, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="low_transfer"):
        _net(tiny, low_transfer=12)


def test_modulate_hook_sees_every_block_and_identity_changes_nothing(tiny):
    w = tiny.mapping(torch.randn(2, 16, generator=torch.Generator().manual_seed(3)))
    seen = []

    def hook(r, x):
        seen.append((r, x.shape[1]))
        return x

    assert torch.equal(tiny.synthesis(w, modulate=hook), tiny.synthesis(w))
    assert seen == [(8, 16), (16, 16), (32, 8)]


def test_only_the_encoder_is_trained_and_stored(tiny):
    net = _net(tiny)
    _randomise_heads(net)
    assert all(k.startswith("encoder.") for k in net.state_dict())
    decoder_ids = {id(p) for p in tiny.synthesis.parameters()}
    assert not decoder_ids & {id(p) for p in net.parameters()}
    out = net(torch.rand(1, 3, 32, 32), 1.0)
    out.mean().backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["encoder.sft.32.2.weight"].abs().sum() > 0 and grads["encoder.latent_heads.0.weight"].abs().sum() > 0
    assert all(p.grad is None for p in tiny.synthesis.parameters())


def test_to_moves_the_held_decoder_and_reduced_precision_runs(tiny):
    net = _net(_tiny_generator())
    net.to(torch.float64)
    assert net.decoder.const.dtype == torch.float64 and net.encoder.stem.weight.dtype == torch.float64
    net.to(torch.float32)
    bf = _net(tiny, decoder_dtype=torch.bfloat16)
    _randomise_heads(bf)
    ref = _net(tiny)
    ref.load_state_dict(bf.state_dict())
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert (bf(x) - ref(x)).abs().max() < 0.05


def test_block_groups_of_the_ffhq_layout():
    groups = block_groups(msg.SynthesisNetwork())
    assert groups == [0] + [g for g in range(1, 8) for _ in range(3)] + [7]


@pytest.mark.parametrize("kw, match", [({"in_size": 48}, "power of two"), ({"sft_resolutions": (64,)}, "<= in_size"),
                                       ({"sft_resolutions": (12,)}, "decoder resolutions")])
def test_bad_encoder_options(tiny, kw, match):
    with pytest.raises(ValueError, match=match):
        _net(tiny, **kw)


# -- refinement (paper 002's NGD from the encoder's latents) ----------------------------------------------


def test_render_of_the_encoders_outputs_is_forward(tiny):
    net = _net(tiny, low_transfer=8)
    _randomise_heads(net)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ws, maps = net.encoder(x)
        torch.testing.assert_close(net.render(x, ws, maps, 0.7), net(x, 0.7), rtol=0, atol=0)
        assert refine.refine(net, x, 0.7, steps=0, loss=MultiResolutionLoss()).image.equal(net(x, 0.7).clamp(0, 1))


def test_refine_lowers_the_coarse_loss_moving_each_row_by_lr(tiny):
    net = _net(tiny)
    _randomise_heads(net)
    before = [p.clone() for p in net.parameters()]
    with torch.no_grad():  # a face the prior can produce, seen through a blur the comparison scale removes
        w = tiny.mapping(torch.randn(1, 16, generator=torch.Generator().manual_seed(4)))
        hq = (tiny.synthesis(w, resolution=32) + 1).div(2).clamp(0, 1)
    lq = F.avg_pool2d(hq, 2).repeat_interleave(2, -1).repeat_interleave(2, -2)
    loss = MultiResolutionLoss(min_side=4)
    one = refine.refine(net, lq, 1.0, steps=1, loss=loss, lr=0.01, side=16)
    moved = (one.ws - one.start_ws).norm(dim=-1)
    torch.testing.assert_close(moved, torch.full_like(moved, 0.01), rtol=1e-4, atol=1e-6)  # NGD: exactly lr a row
    res = refine.refine(net, lq, 1.0, steps=30, loss=loss, lr=0.2, side=16)
    assert len(res.losses) == 30 and res.final_loss.item() < 0.8 * res.losses[0], res.losses[::5]
    assert ((res.ws - res.start_ws).norm(dim=-1) <= 30 * 0.2 + 1e-4).all()
    torch.testing.assert_close(res.image, net.render(lq, res.ws, net.encoder(lq)[1], 1.0).clamp(0, 1).detach())
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))  # the network is not modified
    assert all(p.grad is None for p in net.parameters())


def test_refine_adds_the_identity_term_per_sample(tiny):
    net = _net(tiny)
    _randomise_heads(net)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))

    class Zero(MultiResolutionLoss):  # no image term: only the identity term moves the latents
        def forward(self, pred, target, mask=None, generator=None):
            return (pred * 0).sum(dim=(1, 2, 3))

    def darker_first(img):  # per sample: pulls the first image's brightness down, ignores the second
        return img.mean(dim=(1, 2, 3)) * torch.tensor([1.0, 0.0])

    res = refine.refine(net, x, 1.0, steps=10, loss=Zero(), lr=0.05, identity=darker_first)
    with torch.no_grad():
        start = net(x, 1.0).clamp(0, 1)
    assert res.image[0].mean() < start[0].mean() - 1e-3
    torch.testing.assert_close(res.ws[1], res.start_ws[1])  # zero gradient: NGD leaves the row where it was


def test_refine_rejects_bad_settings(tiny):
    for kw in ({"steps": -1}, {"lr": 0.0}, {"side": 2}):
        with pytest.raises(ValueError, match="steps must be"):
            refine.refine(_net(tiny), torch.rand(1, 3, 32, 32), 1.0, **{"steps": 1, "loss": MultiResolutionLoss(),
                                                                       **kw})


# -- training -----------------------------------------------------------------------------------------


def _cfg(tmp_path, *overrides, model=None, losses=None, steps=3):
    raw = {
        "name": "ps", "method": "prior-sft",
        "model": {"prior": "tiny", "out_size": 64, "decoder_dtype": "fp32", "alpha_random": 0.5, "low_transfer": 8,
                  **{k: list(v) if isinstance(v, tuple) else v for k, v in ENC.items()}, **(model or {})},
        "losses": losses if losses is not None else {"l1": 1.0, "pyramid": 1.0, "latent": 0.1},
        "data": {"roots": [str(tmp_path / "hq")], "size": 32, "task": "realworld-gfpgan", "batch_size": 2,
                 "val_count": 2},
        "optim": {"lr": 1e-3, "betas": [0.9, 0.99]}, "steps": steps, "seed": 5,
        "output_dir": str(tmp_path / "runs"), "device": "cpu", "log_every": 1, "val_every": 0, "ckpt_every": 1,
        "ema_decay": 0.5,
    }
    return config_from_dict(raw, list(overrides))


@pytest.fixture
def tiny_prior(monkeypatch):
    """``prior: tiny`` in a config resolves to the tiny random MobileStyleGAN (the real one: 1.4 s per step)."""
    real = stylegan2_io.resolve_generator

    def resolve(weights=None):
        return _tiny_generator() if weights == "tiny" else real(weights)

    monkeypatch.setattr(stylegan2_io, "resolve_generator", resolve)


def test_training_resumes_exactly_and_the_export_restores(tmp_path, tiny_prior):
    make_face_dataset(tmp_path / "hq", n=12, size=32)
    assert_resume_is_exact(lambda *ov: _cfg(tmp_path, *ov), tmp_path / "runs", steps=3, nets=("generator",))
    final = tmp_path / "runs/full/final.safetensors"
    meta = json.loads(final.with_suffix(".json").read_text())
    assert meta["method"] == "prior-sft" and meta["size"] == 64 and meta["model"]["in_size"] == 32
    r = load_restorer("prior-sft", weights=final)
    # the export's own output size and task reach the records (the class says 512 px, realworld-gfpgan)
    assert r.spec.size == 64 and r.spec.supports_fidelity and r.describe()["trained_on"] == ["realworld-gfpgan"]
    meta["trained_on"] = ["sr4x"]
    final.with_suffix(".json").write_text(json.dumps(meta))
    assert load_restorer("prior-sft", weights=final).describe()["trained_on"] == ["sr4x"]
    # the refinement budget reaches the records (--steps N is refine_steps=N)
    assert load_restorer("prior-sft", weights=final, refine_steps=7).describe()["refine_steps"] == 7
    assert r.describe()["refine_steps"] is None  # none without references
    adapter = prior_train.PriorSFTAdapter(_cfg(tmp_path), torch.device("cpu"))
    from facerestore.nn.safe_weights import load_safetensors

    adapter.generator.load_state_dict(load_safetensors(final, "test"))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = F.interpolate(adapter.generator.eval()(x).clamp(0, 1), size=(32, 32), mode="bilinear",
                             align_corners=False, antialias=True)
    got = r.restore(x)
    assert got.shape == (2, 3, 32, 32)
    assert (got - expected).abs().max() < 0.05  # the restorer resizes 32 -> 64 -> network -> 32 px


def test_train_steps_fit_a_batch(tmp_path, tiny_prior):
    make_face_dataset(tmp_path / "hq", n=4, size=32)
    ad = prior_train.PriorSFTAdapter(_cfg(tmp_path, model={"alpha_random": 0.0}, losses={"l1": 1.0}),
                                     torch.device("cpu"))
    opts = ad.build_optimizers()
    G = _tiny_generator()  # targets the prior can produce: two of its own faces, 32 px
    with torch.no_grad():
        hq = (G.synthesis(G.mapping(torch.randn(2, 16, generator=torch.Generator().manual_seed(2))), resolution=32)
              + 1).div(2).clamp(0, 1)
    lq = F.avg_pool2d(hq, 2).repeat_interleave(2, -1).repeat_interleave(2, -2)
    logs = []
    for step in range(100):
        ad.step = step
        logs.append(ad.train_step(lq, hq, opts, nullcontext, None))  # the trainer's autocast off
    assert logs[-1]["l1"] < 0.6 * logs[0]["l1"], [round(d["l1"], 4) for d in logs[::10]]


GAN = {"discriminator": {"channel_base": 256, "channel_max": 32}, "r1_interval": 2}


def test_adversarial_run_resumes_exactly_and_exports_the_restorer_alone(tmp_path, tiny_prior):
    make_face_dataset(tmp_path / "hq", n=12, size=32)
    losses = {"l1": 1.0, "adversarial": 0.1}
    last = assert_resume_is_exact(lambda *ov: _cfg(tmp_path, *ov, model=GAN, losses=losses), tmp_path / "runs",
                                  steps=3, nets=("generator", "discriminator"))
    assert any(k.startswith("b4.") for k in last["nets"]["discriminator"])  # a StyleGAN2 discriminator was trained
    meta = json.loads((tmp_path / "runs/full/final.json").read_text())
    assert not set(meta["model"]) & {"discriminator", "r1_gamma", "r1_interval"}  # training-only options dropped
    r = load_restorer("prior-sft", weights=tmp_path / "runs/full/final.safetensors")
    assert r.restore(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_adversarial_steps_train_both_players(tmp_path, tiny_prior):
    make_face_dataset(tmp_path / "hq", n=4, size=32)
    ad = prior_train.PriorSFTAdapter(_cfg(tmp_path, model={**GAN, "alpha_random": 0.0},
                                          losses={"l1": 0.0, "pyramid": 0.0, "adversarial": 1.0}), torch.device("cpu"))
    opts = ad.build_optimizers()
    assert set(opts) == {"generator", "discriminator"}
    g = torch.Generator().manual_seed(3)
    hq = torch.rand(2, 3, 32, 32, generator=g)
    lq = F.avg_pool2d(hq, 4).repeat_interleave(4, -1).repeat_interleave(4, -2)

    def run(steps: int, frozen: str) -> list[dict[str, float]]:
        lr = opts[frozen].param_groups[0]["lr"]
        opts[frozen].param_groups[0]["lr"] = 0.0  # one player learns, the other is held
        out = []
        for step in range(steps):
            ad.step = step
            out.append(ad.train_step(lq, hq, opts, nullcontext, None))
        opts[frozen].param_groups[0]["lr"] = lr
        return out

    d0 = {k: v.clone() for k, v in ad.nets["discriminator"].state_dict().items()}
    logs = run(20, frozen="generator")  # D learns to tell the ground truth from the (soft) outputs
    assert "loss/r1" in logs[0] and "loss/r1" not in logs[1]  # lazy R1 on every r1_interval-th step
    assert any(not torch.equal(v, d0[k]) for k, v in ad.nets["discriminator"].state_dict().items())
    margin = [d["d/real"] - d["d/fake"] for d in logs]
    assert margin[-1] > margin[0] + 0.1, [round(m, 3) for m in margin[::4]]
    enc0 = {k: v.clone() for k, v in ad.generator.state_dict().items()}
    logs = run(20, frozen="discriminator")  # with only the adversarial term the encoder fools the held D
    assert any(not torch.equal(v, enc0[k]) for k, v in ad.generator.state_dict().items())
    assert logs[-1]["adversarial"] < logs[0]["adversarial"], [round(d["adversarial"], 3) for d in logs[::4]]


def test_alphas_are_seeded_by_the_step(tmp_path, tiny_prior):
    make_face_dataset(tmp_path / "hq", n=4, size=32)
    ad = prior_train.PriorSFTAdapter(_cfg(tmp_path, model={"alpha_random": 0.5}), torch.device("cpu"))
    ad.step = 7
    a, b = ad._alphas(4000), ad._alphas(4000)
    assert torch.equal(a, b) and ((a >= 0) & (a <= 1)).all()
    assert abs((a < 1).float().mean().item() - 0.5) < 0.05  # half the samples drawn in [0, 1)
    ad.step = 8
    assert not torch.equal(ad._alphas(4000), a)
    ad.step, ad.rank = 7, 1  # another torchrun rank draws its own strengths
    assert not torch.equal(ad._alphas(4000), a)
    ad.alpha_random = 0.0
    assert torch.equal(ad._alphas(16), torch.ones(16))


@pytest.mark.parametrize("model, losses, match", [
    ({"colour": 1}, None, "unknown prior-sft model option"),
    ({"decoder_dtype": "int8"}, None, "decoder_dtype"),
    ({"in_size": 64}, None, "must equal data.size"),
    ({"alpha_random": 2}, None, "alpha_random"),
    ({}, {"vgg": 1.0}, "unknown prior-sft loss"),
    ({"discriminator": {"channels": 3}}, {"l1": 1.0, "adversarial": 0.1}, "model.discriminator"),
    ({"r1_interval": 0}, {"l1": 1.0, "adversarial": 0.1}, "r1_interval"),
    ({"r1_gamma": 1.0}, {"l1": 1.0}, "only apply with losses.adversarial"),
    ({"latent_gain": "abc"}, None, "prior-sft model options"),
    ({"sft_resolutions": 16}, None, "prior-sft model options"),
    ({"colour_resolution": 4}, None, "colour_resolution"),  # the bottleneck: the head would never run
])
def test_config_errors_are_one_line(tmp_path, tiny_prior, model, losses, match):
    with pytest.raises(InputError, match=match):
        prior_train.PriorSFTAdapter(_cfg(tmp_path, model=model, losses=losses), torch.device("cpu"))


def test_restorer_refuses_weights_that_do_not_fit(tmp_path, tiny_prior):
    make_face_dataset(tmp_path / "hq", n=4, size=32)
    from safetensors.torch import save_file

    net = prior_train.build_prior_sft(dict(_cfg(tmp_path).model))
    state = net.state_dict()
    del state["encoder.stem.weight"]
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    path.with_suffix(".json").write_text(json.dumps({"model": dict(_cfg(tmp_path).model)}))
    with pytest.raises(Exception, match="stem"):
        load_restorer("prior-sft", weights=path)
    path.with_suffix(".json").unlink()
    with pytest.raises(InputError, match="needs its description"):
        load_restorer("prior-sft", weights=path)


def _tiny_export(tmp_path) -> str:
    """A prior-sft export on the tiny prior (heads randomised: an encoder that steers), as ``facerestore train``
    writes it: encoder weights + the JSON description."""
    from safetensors.torch import save_file

    make_face_dataset(tmp_path / "hq", n=4, size=32)
    model = dict(_cfg(tmp_path).model)
    net = prior_train.build_prior_sft(model)
    _randomise_heads(net)
    path = tmp_path / "enc.safetensors"
    save_file(net.state_dict(), str(path))
    path.with_suffix(".json").write_text(json.dumps({"model": model}))
    return str(path)


def test_restorer_refines_with_a_step_budget(tmp_path, tiny_prior):
    from facerestore.methods.prior_sft.restorer import PriorSFTRestorer

    path = _tiny_export(tmp_path)
    assert PriorSFTRestorer.budget_options(12) == {"refine_steps": 12}
    with pytest.raises(InputError, match="--steps must be >= 0"):
        PriorSFTRestorer.budget_options(-1)
    plain = load_restorer("prior-sft", weights=path)
    refined = load_restorer("prior-sft", weights=path, refine_steps=4, refine_lr=0.2, refine_side=8, progress=False)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    y0, d0 = plain.restore(x, return_details=True)
    y1, d1 = refined.restore(x, return_details=True)
    assert d0.losses == [] and torch.equal(d0.ws, d0.start_ws)
    assert len(d1.losses) == 4 and torch.equal(d1.start_ws, d0.ws) and not torch.equal(d1.ws, d0.ws)
    assert y1.shape == y0.shape == (1, 3, 32, 32) and (y1 - y0).abs().max() > 1e-4
    torch.testing.assert_close(refined.restore(x), y1, rtol=0, atol=0)  # seeded: the same call, the same face
    for bad, match in [({"refine_steps": -2}, "refine_steps"), ({"refine_lr": 0}, "refine_lr"),
                       ({"refine_side": 1024}, "refine_side"), ({"ref_weight": -1}, "ref_weight")]:
        with pytest.raises(InputError, match=match):
            load_restorer("prior-sft", weights=path, **bad)


@needs_dlib
def test_refs_start_a_refinement_pulled_toward_their_identity(tmp_path, tiny_prior):
    from facerestore.methods.inversion.refs import ReferenceIdentity
    from facerestore.methods.prior_sft.restorer import REFS_STEPS
    from facerestore.train.losses import IdentityLoss

    path = _tiny_export(tmp_path)
    r = load_restorer("prior-sft", weights=path, ref_weight=4.0, force_refs=True, progress=False)
    assert r.spec.uses_refs and r.checks_refs
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    refs = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    _, d = r.restore(x, refs=refs, return_details=True)
    assert len(d.losses) == REFS_STEPS and r.last_refs_distance is not None
    assert r.refs_distances(x, refs) == pytest.approx([r.last_refs_distance], abs=1e-4)  # the check alone
    ident = ReferenceIdentity(F.interpolate(refs, size=(512, 512), mode="bilinear", align_corners=False),
                              IdentityLoss())
    with torch.no_grad():  # dlib's distance of the output to the references' mean, before and after the pull
        before = ident.distance(r.net(F.interpolate(x, size=(512, 512), mode="bilinear"), 1.0).clamp(0, 1))
        after = ident.distance(d.image)
    assert after.item() < before.item()
    no_budget = load_restorer("prior-sft", weights=path, refine_steps=0, ref_weight=4.0, force_refs=True)
    _, d0 = no_budget.restore(x, refs=refs, return_details=True)  # --steps 0: the single pass, refs unused
    assert d0.losses == [] and no_budget.refs_distances(x, refs) is None and no_budget.last_refs_distance is None
    assert "--steps 0" in no_budget.unused_refs_reason() and r.unused_refs_reason() is None
    unweighted = load_restorer("prior-sft", weights=path, ref_weight=0.0)
    torch.testing.assert_close(unweighted.restore(x, refs=refs), unweighted.restore(x), rtol=0, atol=0)
    with pytest.raises(InputError, match=r"\(R, 3, S, S\)"):
        r.restore(x, refs=torch.rand(3, 32, 32))


# -- the built-in encoder on the real prior ------------------------------------------------------------


def _real_restorer():
    if not zoo.is_available("mobilestylegan-ffhq-1024"):
        pytest.skip("MobileStyleGAN not cached: `facerestore models download mobilestylegan-ffhq-1024`")
    return load_restorer("prior-sft")  # its built-in encoder ships in the tree: any failure here is a failure


def test_builtin_restorer_gives_512px_faces_and_fidelity_steers(astronaut_tensor):
    r = _real_restorer()
    from facerestore import degrade

    face = F.interpolate(astronaut_tensor[:, :, 20:276, 130:386], size=(256, 256), mode="area")
    lq = degrade.resize(degrade.resize(face, size=32, method="bicubic", antialias=True), size=256, method="bicubic")
    out = {a: r.restore(lq.clamp(0, 1), fidelity=a, size=(512, 512)) for a in (0.0, 0.5, 1.0)}
    assert out[1.0].shape == (1, 3, 512, 512) and 0 <= out[1.0].min() and out[1.0].max() <= 1
    up = F.interpolate(face, size=(512, 512), mode="bilinear", align_corners=False)
    err = {a: (o - up).abs().mean().item() for a, o in out.items()}
    assert err[1.0] < err[0.0]  # steering brings the output toward the input's face
    torch.testing.assert_close(r.restore(lq, fidelity=1.0, size=(512, 512)), out[1.0], rtol=0, atol=0)


def test_crafted_or_wrong_files_are_refused_before_anything_is_built(tmp_path):
    from safetensors.torch import save_file

    from facerestore.errors import WeightsMissingError

    path = tmp_path / "w.safetensors"
    save_file({"x": torch.zeros(1)}, str(path))
    for model, match in [({"width": 10**9}, "width"), ({"sft_resolutions": "all"}, "sft_resolutions"),
                         ({"prior": 3}, "prior"), ({"depth": 2}, "unknown"), ("big", "mapping")]:
        path.with_suffix(".json").write_text(json.dumps({"model": model}))
        with pytest.raises(InputError, match=match):
            load_restorer("prior-sft", weights=path)
    other = tmp_path / "w.pt"
    other.write_bytes(b"x")
    with pytest.raises(InputError, match=r"\.safetensors file"):
        load_restorer("prior-sft", weights=other)
    with pytest.raises(WeightsMissingError, match="not found"):
        load_restorer("prior-sft", weights=tmp_path / "absent.safetensors")
