"""robust-inversion with reference photos: the dlib identity term toward the references' mean embedding.

The built-in 64 px face prior keeps each test at a few seconds on one CPU thread; its samples serve as faces
with a known identity (refs = one sample, the face to restore = another). Distances are checked with dlib's own
network on dlib's chip (``train.losses.IdentityLoss``), independently of the term's code path.
"""

from __future__ import annotations

import pytest
import torch

from conftest import needs_dlib
from facerestore import degrade
from facerestore.errors import InputError
from facerestore.methods.inversion import RobustInversionRestorer, load_generator, ngd_update, robust_invert
from facerestore.methods.inversion.refs import ReferenceIdentity
from facerestore.methods.restorer import resize_crop
from facerestore.nn.stylegan2 import to_unit_range

PRIOR = "builtin:stylegan2-face-64.safetensors"
STEPS = (8, 8, 8)


@pytest.fixture(scope="module")
def G():
    return load_generator(weights=PRIOR).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def embedder():
    from facerestore.train.losses import IdentityLoss

    return IdentityLoss()


def _faces(G, seeds, psi: float = 0.7) -> torch.Tensor:
    """Prior samples (B, 3, 64, 64) in [0, 1]: one person per seed."""
    w = torch.cat([G.sample_w(1, torch.Generator().manual_seed(s)) for s in seeds])
    w = G.mapping.w_avg + psi * (w - G.mapping.w_avg)
    with torch.no_grad():
        return to_unit_range(G.synthesis(w.unsqueeze(1).expand(-1, G.num_ws, -1), noise_mode="const")).clamp(0, 1)


def _restorer(G, **kw) -> RobustInversionRestorer:
    return RobustInversionRestorer(generator=G, loss="substitute", steps=STEPS, progress=False, **kw)


def _dist(embedder, images: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
    """Independent reference: dlib distance of each image to the mean of the references' embeddings."""
    with torch.no_grad():
        return (embedder.embed(images) - embedder.embed(refs).mean(0)).norm(dim=1)


class _ZeroLoss:
    """An image loss that is 0 everywhere: only the identity term moves the latents."""

    kind = "zero"

    def __call__(self, pred, target, mask=None, generator=None):
        return pred.sum(dim=(1, 2, 3)) * 0


def test_reference_distance_is_the_distance_to_the_references_mean():
    from facerestore.nn.identity import embedding_distance, reference_distance

    g = torch.Generator().manual_seed(0)
    pred, refs = torch.randn(4, 128, generator=g, dtype=torch.float64), torch.randn(3, 128, generator=g,
                                                                                   dtype=torch.float64)
    centre = refs.sum(0) / 3
    expected = torch.tensor([float(((p - centre) ** 2).sum().sqrt()) for p in pred], dtype=torch.float64)
    torch.testing.assert_close(reference_distance(pred, refs), expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(embedding_distance(pred, pred.flip(0)), (pred - pred.flip(0)).norm(dim=1))
    with pytest.raises(ValueError, match="R >= 1"):
        reference_distance(pred, refs[:0])
    with pytest.raises(ValueError, match="embeddings"):
        embedding_distance(pred, refs[:, :64])


@needs_dlib
def test_identity_gradient_reaches_the_latents(G, embedder):
    refs = _faces(G, [3])
    ref_id = ReferenceIdentity(refs, embedder)
    w = G.mapping.w_avg.clone()[None].requires_grad_(True)
    img = to_unit_range(G.synthesis(w.unsqueeze(1).expand(-1, G.num_ws, -1), noise_mode="const"))
    term = ref_id.term(2.0)(img)
    d0 = float(_dist(embedder, img.clamp(0, 1).detach(), refs))  # the mean face's distance to the reference
    assert term.shape == (1,) and float(term.detach()) == pytest.approx(2 * d0, rel=1e-5)
    (grad,) = torch.autograd.grad(term.sum(), w)
    assert torch.isfinite(grad).all() and float(grad.norm()) > 0
    with torch.no_grad():  # one NGD step down that gradient brings the face closer to the reference
        w1 = ngd_update(w.detach().clone(), grad, 0.5)
        img1 = to_unit_range(G.synthesis(w1.unsqueeze(1).expand(-1, G.num_ws, -1), noise_mode="const"))
    assert float(_dist(embedder, img1.clamp(0, 1), refs)) < d0
    # through the 3-phase inversion with a zero image loss, the identity term alone moves the latents
    target = _faces(G, [1])
    res = robust_invert(G, target, lambda x: x, _ZeroLoss(), steps=(6, 6, 0), identity=ref_id.term(1.0))
    assert not torch.equal(res.w, G.mapping.w_avg.expand_as(res.w))
    assert not torch.equal(res.w_plus, res.w.unsqueeze(1).expand_as(res.w_plus))
    assert res.phase_losses["W"][0] == pytest.approx(d0, rel=1e-5)  # the loss is the identity term alone
    assert float(_dist(embedder, res.image, refs)) < d0 - 0.05


@needs_dlib
def test_refs_pull_the_restored_identity_toward_the_references(G, embedder):
    target, refs = _faces(G, [1]), _faces(G, [3])
    plain = _restorer(G)
    guided = _restorer(G, ref_weight=5.0, force_refs=True)
    # fidelity 0: the inversion's own output (the projection onto the observation would pull it back)
    out0, det0 = plain.restore(target, fidelity=0.0, return_details=True)
    out1, det1 = guided.restore(target, refs=refs, fidelity=0.0, return_details=True)
    d0, d1 = float(_dist(embedder, out0, refs)), float(_dist(embedder, out1, refs))
    assert d1 < d0 - 0.15, (d0, d1)
    assert det0.ref_distance is None and plain.last_refs_distance is None
    assert float(det1.ref_distance) == pytest.approx(d1, abs=1e-4)
    # the check measured the face against the references before the pull (one reference: its distance)
    assert guided.last_refs_distance == pytest.approx(float(_dist(embedder, target, refs)), abs=1e-4)
    # the check alone, without restoring, per face (what the photo pipeline decides with)
    two = _faces(G, [1, 3])
    d = guided.refs_distances(two, refs)
    assert d == pytest.approx([float(v) for v in _dist(embedder, two, refs)], abs=1e-4) and d[1] < 1e-4
    assert _restorer(G, ref_weight=0).refs_distances(two, refs) is None  # ignores references: nothing to check
    # the pull costs fidelity to the face: the image loss of the guided result is higher
    assert float(det1.final_loss) > float(det0.final_loss)
    # task mode (a degraded target through f_hat) takes the term too
    y, p = degrade.apply(target, "robust-upsample", level="S", generator=0)
    t0 = plain.restore(y, params=p, fidelity=0.0)
    t1 = guided.restore(y, params=p, refs=refs, fidelity=0.0)
    assert float(_dist(embedder, t1, refs)) < float(_dist(embedder, t0, refs)) - 0.1


def test_without_refs_the_output_is_the_papers_and_deterministic(G):
    target = _faces(G, [1])
    r = _restorer(G)
    out = r.restore(target, fidelity=0.0)  # the inversion's own output, before the projection
    # the paper's inversion called directly (no identity term) gives the same bits
    ref = robust_invert(G, resize_crop(target, (64, 64)), lambda x: x, r.loss_fn, steps=STEPS, lrs=r.lrs)
    assert torch.equal(out, ref.image)
    assert torch.equal(out, _restorer(G).restore(target, fidelity=0.0))
    # ref_weight = 0 ignores references entirely (no dlib, no check, same bits)
    r0 = _restorer(G, ref_weight=0)
    assert torch.equal(r0.restore(target, refs=_faces(G, [3, 4]), fidelity=0.0), out)
    assert r0.last_refs_distance is None
    y, p = degrade.apply(target, "robust-upsample", level="S", generator=0)
    task_ref = robust_invert(G, y, degrade.surrogate("robust-upsample", p), r.loss_fn, steps=STEPS, lrs=r.lrs)
    assert torch.equal(r.restore(y, params=p, fidelity=0.0), task_ref.image)


@needs_dlib
def test_refs_change_the_output_deterministically(G):
    target, refs = _faces(G, [1]), _faces(G, [3, 4])
    r = _restorer(G, ref_weight=1.0)
    a = r.restore(target, refs=refs)
    assert torch.equal(a, _restorer(G, ref_weight=1.0).restore(target, refs=refs))
    assert not torch.equal(a, r.restore(target))


def test_bad_refs_give_one_clear_error(G):
    r = _restorer(G)
    x = _faces(G, [1])
    bad = [torch.rand(3, 64, 64), torch.rand(2, 1, 64, 64), torch.rand(0, 3, 64, 64), torch.rand(2, 3, 64, 48),
           torch.rand(1, 3, 8, 8), torch.rand(1, 4, 64, 64), (torch.rand(1, 3, 64, 64) * 255).round(),
           torch.randint(0, 2, (1, 3, 64, 64)), torch.full((1, 3, 64, 64), float("nan"))]
    for refs in bad:
        with pytest.raises(InputError) as exc:
            r.restore(x, refs=refs)
        msg = str(exc.value)
        assert "\n" not in msg and "robust-inversion takes refs as a (R, 3, S, S)" in msg, msg
    for w in (-1, float("nan"), "x"):
        with pytest.raises(InputError, match="ref_weight"):
            _restorer(G, ref_weight=w)


def test_spec_declares_reference_support(G):
    spec = RobustInversionRestorer.spec
    assert spec.uses_refs and not spec.needs_refs and "refs" in spec.flags()
    assert RobustInversionRestorer.checks_refs
    # listings name the default prior's size; a loaded restorer its own generator's
    assert spec.flags()[0] == "1024px prior (64px offline)"
    assert _restorer(G).spec.flags()[0] == f"{G.img_resolution}px" == "64px"


# ------------------------------------------------------------------ real photos: the check, the pipeline, the CLI


@pytest.fixture(scope="module")
def photos(shared_data):
    p = shared_data / "photos"
    if not (p / "img1.jpg").is_file():
        pytest.skip("../shared/data/photos is absent")
    return p


@needs_dlib
@pytest.mark.data
def test_another_persons_refs_are_refused_unless_forced(G, photos):
    from facerestore.pipeline import prepare_refs

    face = prepare_refs([photos / "img1.jpg"], 64)
    other = prepare_refs([photos / "img13.jpg", photos / "img14.jpg"], 64)  # another person (master.csv)
    same = prepare_refs([photos / "img2.jpg", photos / "img4.jpg"], 64)  # img1's person
    r = RobustInversionRestorer(generator=G, loss="substitute", steps=(1, 1, 1), progress=False)
    with pytest.raises(InputError, match=r"different person.*--force-refs"):
        r.restore(face, refs=other)
    assert r.restore(face, refs=other, force_refs=True).shape == (1, 3, 64, 64)
    assert r.last_refs_distance > 0.75
    r.restore(face, refs=same)
    assert r.last_refs_distance < 0.6


@needs_dlib
@pytest.mark.data
def test_a_group_photo_uses_the_refs_for_their_person_only(G, photos):
    """Two faces of different people and references of the first: the first is restored with them, the second
    without (the same pixels as a restoration without references), and the distances are the method's check."""
    from facerestore.pipeline import prepare_refs, restore_crops_with_refs

    faces = prepare_refs([photos / "img1.jpg", photos / "img13.jpg"], 64)
    same = prepare_refs([photos / "img2.jpg", photos / "img4.jpg"], 64)  # img1's person
    r = RobustInversionRestorer(generator=G, loss="substitute", steps=(2, 1, 1), progress=False)
    crops = [f.permute(1, 2, 0).numpy() for f in faces]
    out, uses = restore_crops_with_refs(r, crops, refs=same)
    assert [u.used for u in uses] == [True, False]
    assert uses[0].distance < 0.6 < 0.75 < uses[1].distance
    assert [u.distance for u in uses] == pytest.approx(r.refs_distances(faces, same), abs=1e-6)
    plain = r.restore(faces[1:], size=(64, 64))[0].permute(1, 2, 0).numpy()
    assert abs(out[1] - plain).max() < 1e-6  # deterministic: the second face never saw the references
    guided = r.restore(faces[:1], refs=same, size=(64, 64))[0].permute(1, 2, 0).numpy()
    assert abs(out[0] - guided).max() < 1e-6


@needs_dlib
@pytest.mark.data
def test_cli_restore_with_refs(tmp_path, photos, capsys):
    import json

    from facerestore import io
    from facerestore.cli import main
    from facerestore.pipeline import prepare_refs

    def crops(names, folder):
        folder.mkdir()
        for n, c in zip(names, prepare_refs([photos / n for n in names], 64)):
            io.write_image(folder / f"{n.split('.')[0]}.png", c.permute(1, 2, 0).numpy())
        return folder

    face = crops(["img1.jpg"], tmp_path / "face") / "img1.png"
    same = crops(["img2.jpg", "img4.jpg"], tmp_path / "same")
    other = crops(["img13.jpg", "img14.jpg"], tmp_path / "other")
    args = ["restore", "-i", str(face), "--aligned", "--method", "robust-inversion", "--weights", PRIOR,
            "--steps", "3", "--upscale", "1", "--device", "cpu", "-q"]
    assert main([*args, "--refs", str(same), "-o", str(tmp_path / "o1")]) == 0
    rec = json.loads((tmp_path / "o1" / "restored_imgs" / "img1.json").read_text())
    assert rec["method"] == "robust-inversion" and rec["num_faces"] == 1
    assert rec["refs_count"] == 2 and rec["faces_with_refs"] == 1
    face_rec = rec["faces"][0]
    assert face_rec["refs_used"] is True and face_rec["refs_forced"] is False and face_rec["refs_distance"] < 0.6
    capsys.readouterr()
    assert main([*args, "--refs", str(other), "-o", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "img1.png: the reference photos look like a different person" in err and "--force-refs" in err, err
    assert not (tmp_path / "o2" / "restored_imgs" / "img1.png").exists()
    assert main([*args, "--refs", str(other), "-o", str(tmp_path / "o3"), "--force-refs"]) == 0
    assert (tmp_path / "o3" / "restored_imgs" / "img1.png").is_file()
    face_rec = json.loads((tmp_path / "o3" / "restored_imgs" / "img1.json").read_text())["faces"][0]
    assert face_rec["refs_used"] is True and face_rec["refs_forced"] is True and face_rec["refs_distance"] > 0.75
