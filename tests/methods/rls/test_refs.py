"""rls / rls-plus with reference photos: the dlib identity term in the latent search and in RLS+'s fine-tuning.

The built-in 64 px face prior and its flow keep each test at a few seconds on one CPU thread; its samples serve
as faces with a known identity (refs = one sample, the low-resolution face = another, downsampled x4).
Distances are checked with dlib's own network on dlib's chip (``train.losses.IdentityLoss``).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import needs_dlib
from facerestore import degrade
from facerestore.errors import InputError
from facerestore.methods.inversion.refs import ReferenceIdentity
from facerestore.methods.restorer import resize_crop
from facerestore.methods.rls import RLSPlusRestorer, RLSRestorer, config, rls_plus, rls_search
from facerestore.nn.stylegan2 import to_unit_range

PRIOR = "builtin:stylegan2-face-64.safetensors"
OPTS = {"steps": 40, "plus_steps": 4, "n_mean": 2000, "progress": False}


@pytest.fixture(scope="module")
def base() -> RLSRestorer:
    """The built-in prior and its flow, loaded once (the other restorers share them)."""
    return RLSRestorer(weights=PRIOR, **OPTS)


@pytest.fixture(scope="module")
def embedder():
    from facerestore.train.losses import IdentityLoss

    return IdentityLoss()


def _make(base, plus: bool = False, **kw) -> RLSRestorer:
    return (RLSPlusRestorer if plus else RLSRestorer)(generator=base.G, flow=base.flow, **{**OPTS, **kw})


def _faces(G, seeds, psi: float = 0.7) -> torch.Tensor:
    w = torch.cat([G.sample_w(1, torch.Generator().manual_seed(s)) for s in seeds])
    w = G.mapping.w_avg + psi * (w - G.mapping.w_avg)
    with torch.no_grad():
        return to_unit_range(G.synthesis(w.unsqueeze(1).expand(-1, G.num_ws, -1), noise_mode="const")).clamp(0, 1)


def _down(x: torch.Tensor) -> torch.Tensor:
    return degrade.downsample_pulse_bicubic(x, 4)


def _dist(embedder, images: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return (embedder.embed(images) - embedder.embed(refs).mean(0)).norm(dim=1)


@needs_dlib
def test_identity_gradient_reaches_the_latents_and_the_generator(base, embedder):
    G, refs = base.G, _faces(base.G, [3])
    ref_id = ReferenceIdentity(refs, embedder)
    ws = base.w_init().reshape(1, 1, -1).expand(1, G.num_ws, -1).clone().requires_grad_(True)
    term = ref_id.term(1.0)(to_unit_range(G.synthesis(ws, noise_mode="const")))
    (grad,) = torch.autograd.grad(term.sum(), ws)
    assert torch.isfinite(grad).all() and bool((grad.norm(dim=-1) > 0).all())  # every W+ row gets a gradient
    # the search with the paper's terms switched off: the identity term alone moves the latents toward the refs
    d0 = float(_dist(embedder, to_unit_range(G.synthesis(ws.detach(), noise_mode="const")).clamp(0, 1), refs))
    cfg = config("default", steps=15, lr=0.02, schedule="fixed", l1_weight=0.0, l_logp=0.0, l_pn=0.0, l_cross=0.0)
    lr = _down(_faces(G, [1]))
    res = rls_search(G, lr, None, _down, cfg, w_init=base.w_init(), identity=ref_id.term(1.0))
    hist = res.history["identity"]
    assert hist[0] == pytest.approx(d0, rel=1e-4) and res.history["total"] == hist
    assert min(hist) < hist[0] - 0.1  # descends
    assert float(_dist(embedder, res.image, refs)) == pytest.approx(min(hist), abs=1e-4)  # the best step is kept
    # RLS+ from the mean latent with the fidelity switched off: its latents and weights follow the identity alone
    cfg_plus = dataclasses.replace(cfg, plus_steps=4, patience=10, plus_lr_latent=0.01)
    plus = rls_plus(G, lr, ws.detach(), _down, cfg_plus, identity=ref_id.term(1.0), keep_states=True)
    hist = plus.history[0]
    assert hist[0] == pytest.approx(d0, rel=1e-4) and min(hist) < d0 - 0.05 and plus.best_step[0] > 0
    assert float((plus.latents - ws.detach()).abs().sum(-1).max()) > 1.0  # the latents moved (inside the L1 ball)
    state, tuned = G.synthesis.state_dict(), plus.synthesis_states[0]
    assert any(not torch.equal(tuned[k], state[k]) for k in state if k.endswith("weight"))  # and the weights


@needs_dlib
@pytest.mark.parametrize("plus", [False, True], ids=["rls", "rls-plus"])
def test_refs_pull_the_restored_identity_toward_the_references(base, embedder, plus):
    target, refs = _faces(base.G, [1]), _faces(base.G, [3])
    lr = _down(target)
    # fidelity 0: the search's own output (the projection onto the observation would pull it back toward lr)
    out0, det0 = _make(base, plus).restore(lr, fidelity=0.0, return_details=True)
    guided = _make(base, plus, ref_weight=0.5, force_refs=True)
    out1, det1 = guided.restore(lr, refs=refs, fidelity=0.0, return_details=True)
    d0, d1 = float(_dist(embedder, out0, refs)), float(_dist(embedder, out1, refs))
    assert d1 < d0 - 0.15, (d0, d1)
    assert "ref_distance" not in det0 and float(det1["ref_distance"]) == pytest.approx(d1, abs=1e-4)
    # the check measured the low-resolution face, enlarged to the prior's 64 px, against the reference
    up = resize_crop(lr, (64, 64))
    assert guided.last_refs_distance == pytest.approx(float(_dist(embedder, up, refs)), abs=1e-4)
    assert guided.refs_distances(lr, refs) == pytest.approx([guided.last_refs_distance], abs=1e-4)  # check alone
    assert "identity" in det1["rls"].history and "identity" not in det0["rls"].history


def test_without_refs_the_output_is_the_papers_and_deterministic(base):
    G = base.G
    lr = _down(_faces(G, [1]))
    for plus in (False, True):
        r = _make(base, plus, steps=15)
        out = r.restore(lr, fidelity=0.0)  # the searches' own output, before the projection onto lr
        assert torch.equal(out, _make(base, plus, steps=15).restore(lr, fidelity=0.0))
        # the paper's searches called directly (no identity term) give the same bits
        res = rls_search(G, lr, base.flow, _down, r.cfg, w_init=r.w_init())
        ref = rls_plus(G, lr, res.latents, _down, r.cfg).image if plus else res.image
        assert torch.equal(out, ref)
        # ref_weight = 0 ignores references entirely (no dlib, no check, same bits)
        r0 = _make(base, plus, steps=15, ref_weight=0)
        assert torch.equal(r0.restore(lr, refs=_faces(G, [3, 4]), fidelity=0.0), out)
        assert r0.last_refs_distance is None


def test_bad_refs_give_one_clear_error(base):
    lr = _down(_faces(base.G, [1]))
    bad = [torch.rand(3, 64, 64), torch.rand(2, 1, 64, 64), torch.rand(0, 3, 64, 64), torch.rand(2, 3, 64, 48),
           torch.rand(1, 3, 8, 8), (torch.rand(1, 3, 64, 64) * 255).round(), torch.randint(0, 2, (1, 3, 64, 64))]
    for plus in (False, True):
        r = _make(base, plus)
        for refs in bad:
            with pytest.raises(InputError) as exc:
                r.restore(lr, refs=refs)
            msg = str(exc.value)
            assert "\n" not in msg and f"{r.spec.name} takes refs as a (R, 3, S, S)" in msg, msg
    for w in (-0.1, float("inf")):
        with pytest.raises(InputError, match="ref_weight"):
            _make(base, ref_weight=w)


def test_specs_declare_reference_support():
    for cls in (RLSRestorer, RLSPlusRestorer):
        assert cls.spec.uses_refs and not cls.spec.needs_refs and "refs" in cls.spec.flags()
        assert cls.checks_refs
