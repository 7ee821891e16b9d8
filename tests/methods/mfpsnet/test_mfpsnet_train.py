"""Retraining FRSNet / MFPSNet with `facerestore train` (methods/mfpsnet/train.py): exact resume, export that the
restorer loads, disentangled batches, priors in training and inference, option errors."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import assert_resume_is_exact, make_face_dataset
from facerestore import zoo
from facerestore.errors import InputError
from facerestore.methods import load_restorer, training_adapter
from facerestore.methods.mfpsnet.genotype import load_genotype
from facerestore.methods.mfpsnet.network import MFPSNet, count_parameters, prior_stems
from facerestore.methods.mfpsnet.search import SINGLE_TASKS
from facerestore.methods.mfpsnet.train import MFPSNetAdapter
from facerestore.train import train
from facerestore.train.config import config_from_dict

FRS = {"network": "frsnet", "genotype": "keep-upsampling", "nf": 8, "growth": 4, "blocks": 1, "sr_filters": 2}
MFPS = {"network": "mfpsnet", "genotype": "released", "nf": 8, "growth": 4, "blocks": 1, "sr_filters": 2,
        "prior_filters": 2, "fusion_filters": 2, "dict_stem": 4, "perceptual": "none"}


def _cfg(tmp_path, model, *overrides, steps=3):
    raw = {
        "name": "mf", "method": "mfpsnet", "model": dict(model), "losses": {"perceptual": 0.0},
        "data": {"roots": [str(tmp_path / "hq")], "size": 64, "task": "mfpsnet-full", "batch_size": 2,
                 "val_count": 2},
        "optim": {"lr": 1e-3, "betas": [0.9, 0.99]}, "steps": steps, "seed": 5,
        "output_dir": str(tmp_path / "runs"), "device": "cpu", "log_every": 1, "val_every": 0, "ckpt_every": 1,
        "ema_decay": 0.5,
    }
    return config_from_dict(raw, list(overrides))


@pytest.fixture
def faces(tmp_path):
    return make_face_dataset(tmp_path / "hq", n=12, size=64)


def test_frsnet_training_resumes_exactly_and_exports_what_the_restorer_loads(tmp_path, faces):
    assert_resume_is_exact(lambda *ov: _cfg(tmp_path, FRS, *ov), tmp_path / "runs", steps=3, nets=("generator",))
    final = tmp_path / "runs/full/final.safetensors"
    meta = json.loads(final.with_suffix(".json").read_text())
    assert meta["network"] == "frsnet" and meta["size"] == 64 and meta["disabled_priors"] == []
    assert meta["genotype"] == load_genotype("keep-upsampling").to_dict()
    r = load_restorer("mfpsnet", weights=final)
    adapter = MFPSNetAdapter(_cfg(tmp_path, FRS), torch.device("cpu"))
    from facerestore.nn.safe_weights import load_safetensors

    adapter.generator.load_state_dict(load_safetensors(final, "test"))
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(r.restore(x), adapter.infer(adapter.generator.eval(), x), atol=1e-6, rtol=0)


def test_disentangled_batch_appends_singly_degraded_copies_seeded_by_the_step(tmp_path, faces):
    ad = MFPSNetAdapter(_cfg(tmp_path, {**FRS, "singles": "all"}), torch.device("cpu"))
    lq, hq = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    ad.step = 4
    x, y = ad.joint_batch(lq, hq)
    assert x.shape == (2 * (1 + len(SINGLE_TASKS)), 3, 64, 64) and torch.equal(x[:2], lq)
    assert torch.equal(y, hq.repeat(1 + len(SINGLE_TASKS), 1, 1, 1))
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert torch.equal(ad.joint_batch(lq, hq)[0], x)  # same step, same copies: a resumed run sees this batch
    ad.step = 5
    assert not torch.equal(ad.joint_batch(lq, hq)[0], x)
    off = MFPSNetAdapter(_cfg(tmp_path, {**FRS, "disentangle": False}), torch.device("cpu"))
    assert off.joint_batch(lq, hq)[0] is lq


def test_mfpsnet_trains_with_real_priors_and_keeps_a_disabled_prior_off_at_inference(tmp_path, faces):
    pytest.importorskip("dlib", reason="the priors need dlib's 68-point landmarks")
    model = {**MFPS, "disabled_priors": ["dict"]}
    res = train(_cfg(tmp_path, model, steps=2), adapter=training_adapter("mfpsnet"), progress=False)
    meta = json.loads((tmp_path / "runs/mf/final.json").read_text())
    assert meta["disabled_priors"] == ["dict"] and "dictionary" not in meta
    r = load_restorer("mfpsnet", weights=res["weights"])
    seen = []

    def priors(images):  # what the network gets: a "dict" map that must be ignored
        seen.append(images.shape)
        return {"parse": torch.rand(len(images), 19, 64, 64), "heat": torch.rand(len(images), 71, 64, 64),
                "dict": torch.full((len(images), 256, 64, 64), 5.0)}

    r.prior_fn = priors
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    y = r.restore(x)
    torch.manual_seed(0)
    p = priors(x)
    p.pop("dict")
    with torch.no_grad():
        ref = r.net(x, priors=p)[-1].clamp(0, 1)
    torch.testing.assert_close(y, ref, atol=1e-6, rtol=0)
    assert len(seen) == 2


@pytest.mark.skipif(not zoo.is_available("mobilefacenet"), reason="mobilefacenet weights not cached "
                    "(`facerestore models download mobilefacenet`): the dictionary's feature network")
def test_dictionary_is_built_from_training_faces_and_travels_with_the_export(tmp_path, faces):
    pytest.importorskip("dlib", reason="the priors need dlib's 68-point landmarks")
    res = train(_cfg(tmp_path, {**MFPS, "dictionary": {"images": 6, "k": 2}}, steps=1),
                adapter=training_adapter("mfpsnet"), progress=False)
    meta = json.loads((tmp_path / "runs/mf/final.json").read_text())
    assert meta["dictionary"] == "dictionary.safetensors"
    r = load_restorer("mfpsnet", weights=res["weights"])
    out = r.prior_fn(torch.rand(1, 3, 64, 64))
    assert out["dict"].shape == (1, 256, 64, 64) and float(out["dict"].abs().sum()) > 0


def test_bad_options_are_one_line_errors(tmp_path, faces):
    cpu = torch.device("cpu")
    for model, match in (({**FRS, "width": 3}, "unknown mfpsnet model option"),
                         ({**FRS, "dictionary": {"images": 4}}, "FRSNet has no priors"),
                         ({**MFPS, "disabled_priors": ["hair"]}, "disabled_priors"),
                         ({**MFPS, "singles": "some"}, "singles"),
                         ({**MFPS, "network": "unet"}, "network")):
        with pytest.raises(InputError, match=match):
            MFPSNetAdapter(_cfg(tmp_path, model), cpu)
    with pytest.raises(InputError, match="unknown mfpsnet loss"):
        MFPSNetAdapter(_cfg(tmp_path, FRS, "losses.gan=1.0"), cpu)


def test_dict_stem_sets_the_dictionary_stem_widths_keeping_the_released_ratio():
    default = prior_stems(8)[2]
    assert [m.out_channels for m in default if isinstance(m, torch.nn.Conv2d)] == [174, 90, 8]
    small = prior_stems(8, 16)[2]
    assert [m.out_channels for m in small if isinstance(m, torch.nn.Conv2d)] == [16, 8, 8]
    g = load_genotype("released")
    a, b = MFPSNet(g, prior_filters=2, fusion_filters=2), MFPSNet(g, prior_filters=2, fusion_filters=2, dict_stem=16)
    conv = (256 * 174 + 174 * 90 + 90 * 2) * 9 + 174 + 90 + 2
    assert count_parameters(a) - count_parameters(b) == conv - ((256 * 16 + 16 * 8 + 8 * 2) * 9 + 16 + 8 + 2)


def test_input_skip_starts_at_the_identity_and_learns_a_correction():
    g = load_genotype("released")
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    net = MFPSNet(g, nf=8, growth=4, blocks=1, sr_filters=2, prior_filters=2, fusion_filters=2, dict_stem=4,
                  input_skip=True)
    out1, out2 = net(x, priors={})
    assert torch.equal(out1, x) and torch.equal(out2, x)
    (out2 - x.flip(-1)).abs().mean().backward()
    assert net.reconstruction.conv_last.weight.grad.abs().sum() > 0  # the zero-initialised layer still learns
    plain = MFPSNet(g, nf=8, growth=4, blocks=1, sr_filters=2, prior_filters=2, fusion_filters=2, dict_stem=4)
    assert count_parameters(plain) == count_parameters(net)  # an option, not extra parameters
