"""Paper 004: RLS loss terms, one-cycle schedule, L1-ball projection, RLS / RLS+ searches, flow CLI."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from conftest import deliver_signal, tiny_stylegan2
from facerestore import degrade
from facerestore.errors import InputError, WeightsMissingError
from facerestore.methods.inversion.encoder import encoder_paths, save_encoder
from facerestore.methods.rls import (
    LR_SPREAD,
    PRESETS,
    RLSRestorer,
    config,
    cross_term,
    fidelity_term,
    find_flow,
    flow_paths,
    load_generator_flow,
    logp_term,
    one_cycle_factor,
    pn_term,
    project_l1_ball,
    rls_loss,
    rls_plus,
    rls_search,
    search_lr,
    w_spread,
)
from facerestore.nn.flow import MAF
from facerestore.nn.stylegan2 import Generator, to_unit_range
from facerestore.nn.stylegan2_io import save_safetensors_generator


@pytest.fixture(scope="module")
def tiny_g() -> Generator:
    return tiny_stylegan2(32, channel_base=256, channel_max=16, mapping_layers=2, n_avg=1000)


@pytest.fixture(scope="module")
def tiny_flow(tiny_g) -> MAF:
    flow = MAF(32, num_blocks=2, hidden=32, generator=torch.Generator().manual_seed(0))
    w = tiny_g.sample_w(512, torch.Generator().manual_seed(1))
    flow.fit_standardization(w)
    flow.calibrate(w)
    return flow.eval().requires_grad_(False)


def _down(x: torch.Tensor) -> torch.Tensor:
    return degrade.downsample_pulse_bicubic(x, 4)


# ------------------------------------------------------------------------------------- L1-ball projection


def _l1_projection_scipy(v: np.ndarray, r: float, c: np.ndarray) -> np.ndarray:
    """argmin ||x - v||^2 s.t. ||x - c||_1 <= r, as a smooth QP in x - c = p - q, p, q >= 0."""
    d = v.size

    def obj(z):
        x = c + z[:d] - z[d:]
        return float(((x - v) ** 2).sum())

    def grad(z):
        g = 2 * (c + z[:d] - z[d:] - v)
        return np.concatenate([g, -g])

    cons = [{"type": "ineq", "fun": lambda z: r - z.sum(), "jac": lambda z: -np.ones(2 * d)}]
    res = minimize(obj, np.zeros(2 * d), jac=grad, bounds=[(0, None)] * (2 * d), constraints=cons,
                   method="SLSQP", options={"ftol": 1e-14, "maxiter": 1000})
    return c + res.x[:d] - res.x[d:]


def test_l1_ball_projection_is_exact():
    rng = np.random.default_rng(0)
    for d in (1, 2, 3, 5, 8):
        for _ in range(4):
            v = rng.normal(size=d) * 3
            c = rng.normal(size=d)
            r = float(rng.uniform(0.2, 2.0))
            got = project_l1_ball(torch.from_numpy(v), r, torch.from_numpy(c)).numpy()
            ref = _l1_projection_scipy(v, r, c)
            np.testing.assert_allclose(got, ref, atol=1e-6)
            if np.abs(v - c).sum() > r:
                assert np.abs(got - c).sum() == pytest.approx(r, abs=1e-12)  # on the boundary
    # points inside are returned unchanged (bit for bit), batched rows are independent
    v = torch.randn(4, 18, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    anchor = v + 0.01 * torch.randn(v.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(project_l1_ball(v, 4.0, anchor), v, rtol=0, atol=0)
    far = project_l1_ball(v * 10, 4.0, anchor)
    torch.testing.assert_close((far - anchor).abs().sum(-1), torch.full((4, 18), 4.0, dtype=torch.float64))
    # ties and zero radius
    torch.testing.assert_close(project_l1_ball(torch.tensor([1.0, 1.0]), 1.0), torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(project_l1_ball(torch.tensor([1.0, -2.0]), 0.0), torch.zeros(2))


# ---------------------------------------------------------------------------------------- loss terms


def test_loss_terms_match_direct_formulas(tiny_flow):
    g = torch.Generator().manual_seed(3)
    ws = torch.randn(2, 6, 32, generator=g)
    # cross: mean Euclidean distance over pairs i < j (code), sum of squared distances (eq. 5)
    for b in range(2):
        pairs = [float((ws[b, i] - ws[b, j]).norm()) for i, j in itertools.combinations(range(6), 2)]
        assert cross_term(ws)[b].item() == pytest.approx(np.mean(pairs), rel=1e-5)
        assert cross_term(ws, "sum_squared")[b].item() == pytest.approx(np.sum(np.square(pairs)), rel=1e-5)
    # flow terms from the flow's own transform (base density N(0, I) + log-determinant)
    u, logdet = tiny_flow(ws)
    logp = -0.5 * (u**2).sum(-1) - 16 * math.log(2 * math.pi) + logdet
    torch.testing.assert_close(logp_term(tiny_flow, ws), -logp.mean(-1))
    torch.testing.assert_close(pn_term(tiny_flow, ws), ((u.norm(dim=-1) - math.sqrt(32)) ** 2).mean(-1))
    pred, tgt = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
    torch.testing.assert_close(fidelity_term(pred, tgt), (pred - tgt).abs().sum(dim=(1, 2, 3)))  # eq. 6
    torch.testing.assert_close(fidelity_term(pred, tgt, 10, "mean"), 10 * (pred - tgt).abs().mean(dim=(1, 2, 3)))
    # each preset from one source: the paper's weights with eq. 5-6's shapes, the code's with the code's
    l1_paper, l1_code = (pred - tgt).abs().sum(dim=(1, 2, 3)), 10 * (pred - tgt).abs().mean(dim=(1, 2, 3))
    for name, (a, b_, c, l1, cross) in {
        "paper": (0.0002, 0.0004, 0.05, l1_paper, cross_term(ws, "sum_squared")),
        "code": (0.002, 0.004, 0.5, l1_code, cross_term(ws, "mean_distance")),
    }.items():
        cfg = PRESETS[name]
        assert (cfg.l_logp, cfg.l_pn, cfg.l_cross) == (a, b_, c)
        total, terms = rls_loss(pred, tgt, ws, tiny_flow, cfg)
        torch.testing.assert_close(terms["l1"], l1)
        torch.testing.assert_close(terms["cross"], cross)
        torch.testing.assert_close(total, terms["l1"] + a * terms["logp"] + b_ * terms["pn"] + c * terms["cross"])
    assert PRESETS["paper"].plus_lr_latent == 1e-4 and PRESETS["default"].plus_lr_latent is None  # geometric
    assert (PRESETS["paper"].steps, PRESETS["paper"].plus_steps) == (200, 50)
    assert (PRESETS["code"].steps, PRESETS["code"].plus_steps) == (500, 200)
    with pytest.raises(InputError):
        config("nope")


def test_one_cycle_schedule():
    assert one_cycle_factor(0, 200) == pytest.approx(0.1)
    assert one_cycle_factor(90, 200) == pytest.approx(1.0)  # peak at 45 %
    assert one_cycle_factor(180, 200) == pytest.approx(0.1)
    assert one_cycle_factor(200, 200) == pytest.approx(0.001)
    assert one_cycle_factor(50, 100, "linear1cycle") == pytest.approx(1.0)
    vals = [one_cycle_factor(s, 200) for s in range(200)]
    assert max(vals) == pytest.approx(1.0) and min(vals) > 0


# ---------------------------------------------------------------------------------------- RLS / RLS+


def _target(G: Generator, seed: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    w = G.sample_w(1, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        x = to_unit_range(G.synthesis(w)).clamp(0, 1)
    return x, _down(x)


def test_rls_keeps_the_best_step(tiny_g, tiny_flow):
    _, y = _target(tiny_g)
    cfg = config("paper", steps=25, lr=0.3, schedule="fixed", n_mean=2000)  # a non-monotone loss
    res = rls_search(tiny_g, y, tiny_flow, _down, cfg)
    hist = np.array(res.history["total"])
    assert len(hist) == 25 and np.any(np.diff(hist) > 0)
    assert res.best_loss.item() == pytest.approx(hist.min(), rel=1e-6)
    assert res.best_step.item() == int(hist.argmin())
    with torch.no_grad():  # the kept latent reproduces the kept loss and image
        img = to_unit_range(tiny_g.synthesis(res.latents))
        total, _ = rls_loss(_down(img), y, res.latents, tiny_flow, cfg)
    assert total.item() == pytest.approx(res.best_loss.item(), rel=1e-5)
    torch.testing.assert_close(res.image, img.clamp(0, 1))
    assert hist.min() < hist[0] and hist[-1] > hist.min()  # the last step is not the kept one


def test_default_search_rate_is_a_fraction_of_w_spread(tiny_g, tiny_flow):
    """The default preset's peak RLS rate is LR_SPREAD x W's mean per-dimension std (the paper's 0.5 outran W's whole
    spread on MobileStyleGAN), and the search really steps with it: Adam's first step moves each coordinate by lr."""
    w = tiny_g.sample_w(8192, torch.Generator().manual_seed(0)).double().numpy()
    spread = float(np.std(w, axis=0, ddof=1).mean())  # independent of the torch reduction
    assert w_spread(tiny_g) == pytest.approx(spread, rel=1e-9)
    assert search_lr(tiny_g, config("default")) == pytest.approx(LR_SPREAD * spread, rel=1e-9)
    assert search_lr(tiny_g, config("paper")) == 0.5 and search_lr(tiny_g, config("code")) == 0.5
    assert search_lr(tiny_g, config("default", lr=0.07)) == 0.07
    _, y = _target(tiny_g)
    start = tiny_g.mapping.w_avg.clone()
    res = rls_search(tiny_g, y, tiny_flow, _down, config("default", steps=2, schedule="fixed"), w_init=start)
    assert res.best_step.item() == 1  # one step from the mean improves the fit, so the kept latent is that step's
    step = (res.latents[0] - start).abs()
    assert float(step.max()) == pytest.approx(LR_SPREAD * spread, rel=1e-3)  # Adam's first step: lr x sign(grad)


def test_search_stops_once_every_face_diverged(tiny_g, tiny_flow):
    """A loss that turns NaN ends the search (the released code's stop); the kept step is the best finite one."""
    _, y = _target(tiny_g)
    calls = []

    def identity(img: torch.Tensor) -> torch.Tensor:  # finite for 3 steps, then NaN
        calls.append(1)
        return img.new_zeros(img.shape[0]) + (float("nan") if len(calls) > 3 else 0.0)

    res = rls_search(tiny_g, y, tiny_flow, _down, config("default", steps=20, n_mean=500), identity=identity)
    assert len(res.history["total"]) == 4 and math.isnan(res.history["total"][-1])
    assert res.best_step.item() < 3 and torch.isfinite(res.best_loss).all()
    assert res.best_loss.item() == pytest.approx(min(res.history["total"][:3]), rel=1e-6)


def test_rls_plus_stays_in_ball_and_tunes_weights(tiny_g, tiny_flow):
    _, y = _target(tiny_g)
    before = {k: v.clone() for k, v in tiny_g.state_dict().items()}
    cfg = config("paper", steps=10, n_mean=2000, plus_steps=6, plus_lr_latent=0.2, plus_lr_weights=1e-2,
                 plus_lr_noise=1e-2, radius=0.5, patience=100)
    res = rls_search(tiny_g, y, tiny_flow, _down, cfg)
    plus = rls_plus(tiny_g, y, res.latents, _down, cfg, keep_states=True)
    l1 = (plus.latents - res.latents).abs().sum(-1)
    assert torch.all(l1 <= 0.5 + 1e-5) and l1.max() > 0.4  # moved, up to the ball's surface
    assert plus.best_step[0] > 0 and min(plus.history[0]) < plus.history[0][0]
    tuned = plus.synthesis_states[0]
    assert any(not torch.equal(tuned[k], tiny_g.synthesis.state_dict()[k]) for k in tuned)
    for k, v in tiny_g.state_dict().items():  # the caller's generator is untouched
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    trained = plus.noises[0][: cfg.noise_layers]
    for n in trained:  # renormalised after each step
        assert abs(n.mean().item()) < 1e-5 and n.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    # the image returned is the kept step's render
    assert plus.image.shape == (1, 3, 32, 32)


def test_rls_plus_early_stopping(tiny_g):
    _, y = _target(tiny_g)
    anchor = tiny_g.mapping.w_avg.reshape(1, 1, -1).expand(1, tiny_g.num_ws, -1).clone()
    cfg = config("paper", plus_steps=50, plus_lr_latent=50.0, plus_lr_weights=10.0, patience=2)  # diverges
    plus = rls_plus(tiny_g, y, anchor, _down, cfg)
    assert len(plus.history[0]) < 51
    assert plus.history[0][plus.best_step[0]] == min(plus.history[0])


def test_rls_plus_l1_ball_binds_with_the_default_preset(tiny_g):
    """With the default preset the latent rows reach the L1 ball around the anchor and are held on it; with the
    paper's single 1e-4 they cannot leave a small fraction of it (why the default exists)."""
    _, y = _target(tiny_g)
    anchor = tiny_g.mapping.w_avg.reshape(1, 1, -1).expand(1, tiny_g.num_ws, -1).clone()
    radius = math.sqrt(tiny_g.w_dim)
    moved = {}
    for name in ("default", "paper"):
        plus = rls_plus(tiny_g, y, anchor, _down, config(name, plus_steps=40, patience=1000))
        dist = (plus.latents - anchor).abs().sum(-1)  # (1, L) L1 distance of each row to its anchor row
        assert float(dist.max()) <= radius * (1 + 1e-5)
        moved[name] = dist
    assert float((moved["default"] >= radius * (1 - 1e-4)).float().mean()) > 0.5  # on the surface: it binds
    assert float(moved["paper"].max()) < 0.25 * radius  # 40 steps x 1e-4 x d stay deep inside


def test_restorer_is_deterministic_and_improves_fidelity(tiny_g, tiny_flow):
    x, y = _target(tiny_g)
    r = RLSRestorer(generator=tiny_g, flow=tiny_flow, steps=15, n_mean=2000, seed=3)
    out1, det = r.restore(y, return_details=True)
    out2 = RLSRestorer(generator=tiny_g, flow=tiny_flow, steps=15, n_mean=2000, seed=3).restore(y)
    torch.testing.assert_close(out1, out2, rtol=0, atol=0)
    assert out1.shape == (1, 3, 32, 32)
    start = det["rls"].history["l1"][0]
    assert fidelity_term(_down(out1), y).item() < start
    rp = RLSRestorer(generator=tiny_g, flow=tiny_flow, plus=True, steps=5, plus_steps=3, n_mean=500)
    assert rp.spec.name == "rls-plus" and rp.restore(y).shape == (1, 3, 32, 32)
    # a task's records select its surrogate (identity for the corruption unknown to RLS)
    yt, p = degrade.apply(x, "rls-x16-gaussian-noise", generator=0)
    assert r.restore(yt, params=p).shape == (1, 3, 32, 32)
    with pytest.raises(InputError):
        r.restore(torch.rand(1, 3, 5, 5))  # 32 is not a multiple of 5
    with pytest.raises(WeightsMissingError):
        RLSRestorer(generator=tiny_g)
    with pytest.warns(UserWarning, match="without its flow prior"):
        RLSRestorer(generator=tiny_g, flow=False, steps=2, n_mean=10)


def test_fidelity_projects_the_output_onto_the_observation(tiny_g, tiny_flow):
    x, y = _target(tiny_g)
    r = RLSRestorer(generator=tiny_g, flow=tiny_flow, steps=6, n_mean=200, seed=3, progress=False)
    assert r.spec.supports_fidelity
    # the default preset projects low-resolution inputs fully, and leaves whole-photo crops (blind mode) alone
    assert r.fidelity_used(None, blind=False) == 1.0 and r.fidelity_used(None) == 0.0 and r.fidelity_used(0.3) == 0.3
    out, det = r.restore(y, return_details=True)
    raw = det["rls"].image.float()
    # the generator's image, moved onto the observation by the public projection (PULSE x4 here)
    torch.testing.assert_close(out, degrade.project_pulse_bicubic(raw, y, 4).clamp(0, 1), rtol=0, atol=0)
    torch.testing.assert_close(r.restore(y, fidelity=0.0), raw.clamp(0, 1), rtol=0, atol=0)
    # the mismatch with the observation falls monotonically with fidelity, to nothing at 1 (but for the clamp)
    gaps = [(_down(r.restore(y, fidelity=f)) - y).abs().mean().item() for f in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert all(a > b for a, b in itertools.pairwise(gaps)) and gaps[-1] < 0.1 * gaps[0]
    # the paper's presets keep the paper's output; a task's records cannot be projected onto
    paper = RLSRestorer(generator=tiny_g, flow=tiny_flow, preset="paper", steps=6, n_mean=200, seed=3, progress=False)
    assert paper.fidelity_used(None) == 0.0
    out_p, det_p = paper.restore(y, return_details=True)
    torch.testing.assert_close(out_p, det_p["rls"].image, rtol=0, atol=0)
    yt, p = degrade.apply(x, "rls-x16-gaussian-noise", generator=0)
    with pytest.raises(InputError, match="drop fidelity"):
        r.restore(yt, params=p, fidelity=0.5)
    out_t, det_t = r.restore(yt, params=p, return_details=True)  # the default fidelity leaves task records alone
    torch.testing.assert_close(out_t, det_t["rls"].image, rtol=0, atol=0)
    # whole-photo crops (blind mode): the generator's image by default; with fidelity, a crop fitted at the
    # generator's full side (work_resolution 32) is projected onto its 2x reduction
    full = RLSRestorer(generator=tiny_g, flow=tiny_flow, steps=3, n_mean=200, progress=False, work_resolution=32)
    out_0, det_0 = full.restore(x, return_details=True)
    assert det_0["fidelity"] == 0.0
    torch.testing.assert_close(out_0, det_0["rls"].image.clamp(0, 1), rtol=0, atol=0)
    out_f, det_f = full.restore(x, fidelity=1.0, return_details=True)
    assert det_f["observed_side"] == 32 and det_f["fidelity"] == 1.0
    torch.testing.assert_close(out_f, degrade.project_pulse_bicubic(
        det_f["rls"].image.float(), degrade.downsample_pulse_bicubic(x, 2), 2).clamp(0, 1), rtol=0, atol=0)


def test_bf16_generator_keeps_float32_latents_flow_and_image(tiny_g, tiny_flow):
    import copy

    _, y = _target(tiny_g)
    r32 = RLSRestorer(generator=copy.deepcopy(tiny_g), flow=copy.deepcopy(tiny_flow), steps=15, n_mean=2000, seed=3)
    r16 = RLSRestorer(generator=copy.deepcopy(tiny_g), flow=copy.deepcopy(tiny_flow), steps=15, n_mean=2000,
                      seed=3).set_half(True)
    assert r16.G.synthesis.b4.const.dtype == torch.bfloat16
    # the flow prior and the mapping (w_avg: the search's start) stay float32, bit for bit: never round-tripped
    for a, b in zip(r16.flow.state_dict().values(), tiny_flow.state_dict().values()):
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert torch.equal(r16.G.mapping.w_avg, tiny_g.mapping.w_avg)
    out32 = r32.restore(y)
    out16, d16 = r16.restore(y, return_details=True)
    assert d16["rls"].latents.dtype == torch.float32 and d16["rls"].image.dtype == torch.float32
    # bf16 rounding changes the path a little, not the result: the fit to the input stays as good
    f32, f16 = fidelity_term(_down(out32), y).item(), fidelity_term(_down(out16), y).item()
    assert f16 < d16["rls"].history["l1"][0] and abs(f16 - f32) < 0.15 * f32
    # RLS+ tunes the generator's weights: no reduced precision for it
    rp = RLSRestorer(generator=copy.deepcopy(tiny_g), flow=tiny_flow, plus=True, steps=2, plus_steps=1, n_mean=10)
    with pytest.raises(InputError, match=r"rls-plus.*half precision"):
        rp.set_half(True)


def test_blind_crop_at_the_full_side_is_its_own_observation(tiny_g, tiny_flow):
    """Factor 1: the observation operator is the identity (PULSE's bicubic at factor 1 shifts by half a pixel
    and sharpens, which the fit would then undo)."""
    r = RLSRestorer(generator=tiny_g, flow=tiny_flow, steps=1, n_mean=10)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(r._degrade_fn(x, None, None)(x), x)
    y = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(r._degrade_fn(y, None, None)(x), degrade.downsample_pulse_bicubic(x, 2))


def test_bad_settings_fail_at_construction_and_a_search_without_a_finite_loss_says_so(tiny_g, tiny_flow,
                                                                                     monkeypatch):
    from facerestore.errors import FaceRestoreError
    from facerestore.methods.rls import rls as rls_mod

    for bad, match in (({"steps": 0}, "steps >= 1"), ({"n_mean": 0}, "n_mean >= 1"), ({"stepz": 3}, "unknown RLS")):
        with pytest.raises(InputError, match=match):
            RLSRestorer(generator=tiny_g, flow=tiny_flow, **bad)
    y = torch.full((1, 3, 16, 16), float("nan"))
    with pytest.raises(InputError, match="NaN or infinite"):  # refused before any search
        RLSRestorer(generator=tiny_g, flow=tiny_flow, steps=2, n_mean=10).restore(y)
    real = rls_mod.rls_loss

    def diverged(*a, **k):  # a learning rate that diverges at once
        total, terms = real(*a, **k)
        return total * float("inf"), terms

    monkeypatch.setattr(rls_mod, "rls_loss", diverged)
    with pytest.raises(FaceRestoreError, match="no finite loss"):
        RLSRestorer(generator=tiny_g, flow=tiny_flow, steps=2, n_mean=10).restore(torch.rand(1, 3, 16, 16))


# ------------------------------------------------------------------------------------------ flow CLI


def test_train_flow_cli_stores_next_to_generator(tmp_path, monkeypatch, tiny_g):
    import json

    import facerestore.nn.stylegan2_io as io
    from facerestore.cli import main

    gpath = tmp_path / "gen.pt"
    gpath.write_bytes(b"stand-in generator file")
    monkeypatch.setattr(io, "load_stylegan2", lambda path, format=None: tiny_g)
    with pytest.raises(WeightsMissingError, match="train-flow"):
        find_flow(gpath)
    rc = main(["train-flow", "--generator", str(gpath), "--steps", "3", "--batch", "16", "--blocks", "1",
               "--hidden", "16", "--stats", "64", "--device", "cpu", "--log-every", "0"])
    assert rc == 0
    weights, record = flow_paths(gpath)
    assert weights == tmp_path / "gen.rls-flow.safetensors" and weights.is_file() and record.is_file()
    info = json.loads(record.read_text())
    assert info["generator"] == "gen.pt" and info["steps"] == 3 and info["config"]["hidden"] == 16
    flow = load_generator_flow(weights)
    assert flow.config["num_blocks"] == 1 and torch.isfinite(flow.log_prob(tiny_g.sample_w(4, torch.Generator()))).all()
    r = RLSRestorer(weights=gpath, steps=2, n_mean=10)  # finds the flow next to the generator
    assert r.flow is not None and r.flow.config == flow.config
    assert info["finished"] is True and info["train_hours"] >= 0 and weights.with_suffix(".ckpt").is_file()


def test_train_flow_cli_saves_on_a_signal_and_resumes_with_hours_added_up(tmp_path, monkeypatch, tiny_g, capsys):
    import json
    import math
    import signal

    import facerestore.nn.stylegan2_io as io
    from facerestore.cli import main

    gpath = tmp_path / "gen.pt"
    gpath.write_bytes(b"stand-in generator file")
    monkeypatch.setattr(io, "load_stylegan2", lambda path, format=None: tiny_g)
    calls = {"n": 0}
    sample_w = tiny_g.sample_w

    def sample_and_signal(n, g):  # SIGINT while drawing the third training batch (after the statistics' draw)
        calls["n"] += 1
        if calls["n"] == 4:
            deliver_signal(signal.SIGINT)
        return sample_w(n, g)

    monkeypatch.setattr(tiny_g, "sample_w", sample_and_signal)
    args = ["train-flow", "--generator", str(gpath), "--steps", "6", "--batch", "16", "--blocks", "1",
            "--hidden", "16", "--stats", "64", "--device", "cpu", "--log-every", "0", "--save-every", "0"]
    assert main(args) == 130  # Ctrl-C: the step ends, the checkpoint and usable weights are saved
    weights, record = flow_paths(gpath)
    info = json.loads(record.read_text())
    assert info["steps"] == 3 and info["finished"] is False and info["scheduled_steps"] == 6
    with pytest.warns(UserWarning, match="stopped training \\(step 3 of 6\\)"):  # RLS uses it, and says so
        load_generator_flow(weights, generator_path=gpath)
    first_seconds = torch.load(weights.with_suffix(".ckpt"), weights_only=True)["seconds"]
    assert torch.load(weights.with_suffix(".ckpt"), weights_only=True)["step"] == 3
    monkeypatch.setattr(tiny_g, "sample_w", sample_w)
    assert main(args) == 0
    info = json.loads(record.read_text())
    assert info["steps"] == 6 and info["finished"] is True and math.isfinite(info["final_nll"])
    seconds = torch.load(weights.with_suffix(".ckpt"), weights_only=True)["seconds"]
    assert seconds > first_seconds and info["train_hours"] == round(seconds / 3600, 6)  # both chunks' time
    assert main(args) == 0  # run again when finished: nothing trained, the record keeps its facts
    again = json.loads(record.read_text())
    assert again["steps"] == 6 and again["finished"] is True and again["final_nll"] == info["final_nll"]
    assert "resuming from" in capsys.readouterr().out


def test_default_prior_and_flow_are_the_builtin_ones():
    from facerestore.nn.stylegan2_io import builtin_prior_path

    weights, record = flow_paths(builtin_prior_path())
    assert weights.is_file() and record.is_file()
    # the built-in 64 px prior (the default when MobileStyleGAN is not cached) and the flow stored next to it
    r = RLSRestorer(weights="builtin:stylegan2-face-64.safetensors", steps=3, n_mean=100)
    assert r.G.img_resolution == 64 and r.flow is not None and r.flow.config["dim"] == 512
    w = r.G.sample_w(256, torch.Generator().manual_seed(0))
    noise = torch.randn(256, 512, generator=torch.Generator().manual_seed(1)) * w.std(0) + w.mean(0)
    with torch.no_grad():  # the trained flow prefers real W samples to a Gaussian with the same moments
        assert float(r.flow.log_prob(w).mean()) > float(r.flow.log_prob(noise).mean())
    assert r.restore(torch.rand(1, 3, 8, 8)).shape == (1, 3, 64, 64)


def test_flow_is_checked_against_its_generator(tmp_path, monkeypatch, tiny_g, tiny_flow):
    """A flow is used only with the generator whose sha256 its record names."""
    import facerestore.nn.stylegan2_io as sio
    from facerestore.methods.rls.flow_prior import check_flow_generator, save_generator_flow

    monkeypatch.setattr(sio, "load_stylegan2", lambda path, format=None: tiny_g)
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"generator a")
    b.write_bytes(b"generator b")
    flow_a = save_generator_flow(tiny_flow, a)
    check_flow_generator(flow_a, a)  # its own generator: fine
    assert RLSRestorer(weights=a, steps=1, n_mean=10).flow is not None
    with pytest.raises(InputError, match="fitted to a generator"):
        check_flow_generator(flow_a, b)
    with pytest.raises(InputError, match="fitted to a generator"):
        RLSRestorer(weights=b, flow=flow_a, steps=1, n_mean=10)
    flow_a.with_suffix(".json").unlink()
    with pytest.raises(InputError, match="no record"):
        RLSRestorer(weights=a, steps=1, n_mean=10)


def test_slow_methods_show_phase_and_step_progress(tiny_g, tiny_flow, monkeypatch):
    from facerestore.methods.inversion import RobustInversionRestorer
    from facerestore.methods.restorer import StepProgress

    seen: list[tuple[str, str, bool]] = []
    init, update = StepProgress.__init__, StepProgress.update

    def spy_init(self, total, desc, enabled=True):
        init(self, total, desc, enabled)
        self.desc, self.enabled = desc, enabled

    def spy_update(self, phase, step, loss):
        seen.append((self.desc, phase, self.enabled))
        update(self, phase, step, loss)

    monkeypatch.setattr(StepProgress, "__init__", spy_init)
    monkeypatch.setattr(StepProgress, "update", spy_update)
    _, y = _target(tiny_g)
    RLSRestorer(generator=tiny_g, flow=tiny_flow, plus=True, steps=3, plus_steps=2, n_mean=10).restore(y)
    assert [p for _, p, _ in seen[:3]] == ["RLS"] * 3 and ("rls-plus", "RLS+ face 1", True) in seen
    seen.clear()
    RobustInversionRestorer(generator=tiny_g, loss="substitute", steps=(1, 1, 2), min_side=4).restore(y)
    assert [p for _, p, _ in seen] == ["W", "W+", "W++", "W++"] and seen[0][0] == "robust-inversion"
    seen.clear()
    RLSRestorer(generator=tiny_g, flow=tiny_flow, steps=2, n_mean=10, progress=False).restore(y)
    assert seen and not any(enabled for _, _, enabled in seen)  # -q: the bar is disabled


def test_default_prior_prefers_the_real_one_and_announces_the_fallback(monkeypatch):
    from facerestore import zoo

    monkeypatch.setattr(zoo, "is_available", lambda name: True)
    assert RLSRestorer.default_weights() == "mobilestylegan-ffhq-1024"
    monkeypatch.setattr(zoo, "is_available", lambda name: False)
    with pytest.warns(UserWarning, match="mobilestylegan-ffhq-1024.*not in the cache"):
        fallback = RLSRestorer.default_weights()
    assert fallback.name == "stylegan2-face-64.safetensors" and fallback.is_file()


def test_shipped_flow_of_mobilestylegan_models_its_w_space():
    """The built-in flow for MobileStyleGAN is found for the cached generator, matches its sha256 and prefers
    real W samples to a Gaussian with the same moments (skips without the generator's weights)."""
    from facerestore import zoo
    from facerestore.methods.rls.flow_prior import find_flow
    from facerestore.nn.stylegan2_io import prior_file, resolve_generator

    if not zoo.is_available("mobilestylegan-ffhq-1024"):
        pytest.skip("MobileStyleGAN weights are not cached: `facerestore models download mobilestylegan-ffhq-1024`")
    gen = prior_file("mobilestylegan-ffhq-1024")  # cached: a hash mismatch fails
    path = find_flow(gen)
    assert path.parent == zoo.BUILTIN_DIR
    flow = load_generator_flow(path, generator_path=gen)
    G = resolve_generator("mobilestylegan-ffhq-1024")
    w = G.sample_w(256, torch.Generator().manual_seed(11))
    gauss = torch.randn(256, 512, generator=torch.Generator().manual_seed(12)) * w.std(0) + w.mean(0)
    with torch.no_grad():
        assert float(flow.log_prob(w).mean()) > float(flow.log_prob(gauss).mean()) + 1000


def test_blind_mode_super_resolves_a_crop_from_its_detail_side(tiny_g, tiny_flow):
    from facerestore.methods.restorer import detail_side, resize_crop

    x, _ = _target(tiny_g)  # a 32 px face of the prior
    crop = resize_crop(resize_crop(x, (4, 4)), (32, 32))  # a small face enlarged to the generator's size
    r = RLSRestorer(generator=tiny_g, flow=tiny_flow, steps=4, n_mean=100, progress=False)
    side = detail_side(crop, min_side=16)[0]
    assert r.blind_side(crop) == side == 16  # floor: the paper's largest factor (x64 of 1024 px)
    out, details = r.restore(crop, return_details=True)
    assert details["observed_side"] == 16 and out.shape == (1, 3, 32, 32)
    # the same as RLS given that observation (PULSE bicubic of the crop) as its low-resolution input (at the blind
    # mode's default fidelity 0 both ways; with 1, both are projected onto that observation)
    low = degrade.downsample_pulse_bicubic(crop, 2).clamp(0, 1)
    ref = RLSRestorer(generator=tiny_g, flow=tiny_flow, steps=4, n_mean=100, progress=False)
    torch.testing.assert_close(out, ref.restore(low, fidelity=0.0), rtol=0, atol=0)
    torch.testing.assert_close(r.restore(crop, fidelity=1.0), ref.restore(low), rtol=0, atol=0)
    # a fixed side, and a sharp face, keep the crop as the observation (factor 1)
    fixed = RLSRestorer(generator=tiny_g, flow=tiny_flow, steps=1, n_mean=10, progress=False, work_resolution=32)
    assert fixed.blind_side(crop) == 32
    assert r.blind_side(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))) == 32
    # an observation smaller than the generator (a true low-resolution input) is never reduced further
    _, d_low = r.restore(low, return_details=True)
    assert d_low["observed_side"] == 16
    for bad in (0, 12, 64):
        with pytest.raises(InputError, match="work_resolution"):
            RLSRestorer(generator=tiny_g, flow=tiny_flow, steps=1, n_mean=10, work_resolution=bad)


def test_search_starts_from_one_latent_per_face(tiny_g, tiny_flow):
    _, y1 = _target(tiny_g, 5)
    _, y2 = _target(tiny_g, 6)
    cfg = config("default", steps=3, n_mean=10)
    starts = tiny_g.sample_w(2, torch.Generator().manual_seed(9))
    both = rls_search(tiny_g, torch.cat([y1, y2]), tiny_flow, _down, cfg, w_init=starts)
    # each face's search is the one it would have alone from its own start (per-face latents, no mixing)
    for i, y in enumerate((y1, y2)):
        alone = rls_search(tiny_g, y, tiny_flow, _down, cfg, w_init=starts[i])
        torch.testing.assert_close(both.latents[i:i + 1], alone.latents, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="3 latents for 2 faces"):
        rls_search(tiny_g, torch.cat([y1, y2]), tiny_flow, _down, cfg, w_init=torch.zeros(3, 32))


def test_restorer_init_encoder_starts_each_face_from_its_guess(tmp_path, tiny_g, tiny_flow):
    x, y = _target(tiny_g)
    from conftest import random_w_encoder

    enc = random_w_encoder(32, in_size=16)
    kw = dict(generator=tiny_g, flow=tiny_flow, steps=3, n_mean=50, progress=False)
    r = RLSRestorer(init=enc, **kw)
    out, details = r.restore(y, return_details=True)
    ref = rls_search(tiny_g, y, tiny_flow, _down, r.cfg, w_init=enc(y))
    torch.testing.assert_close(details["rls"].image, ref.image, rtol=0, atol=0)
    torch.testing.assert_close(details["rls"].latents, ref.latents, rtol=0, atol=0)
    paper = RLSRestorer(**kw, init="mean")  # the paper's start, the mean of W samples
    assert paper.starter.encoder is None
    torch.testing.assert_close(paper.restore(y, fidelity=0.0), rls_search(
        tiny_g, y, tiny_flow, _down, paper.cfg, w_init=paper.w_init()).image, rtol=0, atol=0)
    assert not torch.equal(out, paper.restore(y))
    assert "W encoder" in r.spec.weights_licence and "W encoder" not in paper.spec.weights_licence
    # "auto" starts only the blind mode (whole-photo crops) from the encoder found beside the generator's file
    assert RLSRestorer(**kw, init="auto").starter.encoder is None  # a generator object names no file
    gen_file = tmp_path / "prior.safetensors"
    save_safetensors_generator(tiny_g, gen_file, half=False)
    save_encoder(enc, encoder_paths(gen_file)[0], gen_file)
    assert RLSRestorer(weights=gen_file, flow=tiny_flow, steps=1, n_mean=10, init="mean").starter.encoder is None
    auto = RLSRestorer(weights=gen_file, flow=tiny_flow, steps=3, n_mean=50, progress=False)  # default: "auto"
    assert auto.starter.init == "auto" and auto.starter.encoder is not None
    torch.testing.assert_close(auto.w_init(y, blind=False), paper.w_init())  # a task: the paper's start
    torch.testing.assert_close(auto.w_init(x, blind=True), enc(x), rtol=0, atol=0)
    assert "W encoder" in auto.spec.weights_licence
    with pytest.raises(InputError, match="pass the encoder"):
        RLSRestorer(**kw, init="encoder")


def test_records_say_which_preset_and_steps_rls_used(tiny_g, tiny_flow):
    from facerestore.methods.rls.restorer import RLSPlusRestorer

    r = RLSPlusRestorer(generator=tiny_g, flow=tiny_flow, preset="code", steps=3, plus_steps=2, n_mean=10)
    d = r.describe()
    assert d["preset"] == "code" and d["steps"] == 3 and d["plus_steps"] == 2 and d["start"] == "mean"
