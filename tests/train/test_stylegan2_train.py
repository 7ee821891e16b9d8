"""StyleGAN2 prior training (train/stylegan2.py) and our safetensors generator format (nn/stylegan2_io.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_resume_is_exact, make_face_dataset
from facerestore.errors import InputError, WeightsMissingError
from facerestore.nn import stylegan2_io
from facerestore.nn.stylegan2 import Generator
from facerestore.train import load_config
from facerestore.train.stylegan2 import mixed_latents, r1_penalty

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny-stylegan2.yaml"


def _tiny(tmp_path: Path, *extra: str):
    return load_config(TINY, [f"data.roots=[{tmp_path / 'hq'}]", f"output_dir={tmp_path / 'runs'}", *extra])


def test_tiny_stylegan2_trains_resumes_exactly_and_exports(tmp_path):
    make_face_dataset(tmp_path / "hq", n=8, size=16)
    a = assert_resume_is_exact(lambda *extra: _tiny(tmp_path, *extra), tmp_path / "runs", steps=4)
    logs = [json.loads(x) for x in (tmp_path / "runs/full/metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in logs] == [1, 2, 3, 4]
    assert all(np.isfinite(x["loss/g"]) and np.isfinite(x["loss/d"]) for x in logs)
    assert {x["step"] for x in logs if "loss/r1" in x} == {1, 3}  # lazy R1 at steps 0 and 2 (interval 2)

    # the export (EMA generator + JSON settings) loads through the generic StyleGAN2 loader
    G = stylegan2_io.load_stylegan2(tmp_path / "runs/full/final.safetensors")
    assert G.img_resolution == 16 and G.w_dim == 16
    for k, v in a["ema"]["shadow"].items():
        torch.testing.assert_close(G.state_dict()[k], v, rtol=0, atol=0)


def test_safetensors_generator_round_trip_in_half_precision(tmp_path):
    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, img_resolution=16, mapping_layers=2, channel_base=128, channel_max=16).eval()
    p = stylegan2_io.save_safetensors_generator(G, tmp_path / "g.safetensors", half=True)
    H = stylegan2_io.load_stylegan2(p)  # settings come from the file's metadata (no JSON next to it)
    assert H.config == G.config
    # frozen like the .pkl / .pt loaders: a truncated sample must not move w_avg (train mode updates it)
    assert not H.training and not any(q.requires_grad for q in H.parameters())
    before = H.mapping.w_avg.clone()
    H(torch.randn(2, 16), truncation_psi=0.5)
    assert torch.equal(H.mapping.w_avg, before)
    for k, v in G.state_dict().items():
        torch.testing.assert_close(H.state_dict()[k], v.half().float(), rtol=0, atol=0)
    w = G.mapping.w_avg.expand(2, -1)
    torch.testing.assert_close(H.synthesis(w), G.synthesis(w), rtol=0, atol=2e-2)
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InputError):
        stylegan2_io.load_stylegan2(tmp_path / "bad.safetensors")


def test_resolve_generator_default_zoo_name_and_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path / "home"))
    G = stylegan2_io.resolve_generator(None)  # the built-in prior ships with the package
    assert G.img_resolution == 64 and G.w_dim == 512
    with pytest.raises(WeightsMissingError, match="stylegan2-ffhq-1024"):
        stylegan2_io.resolve_generator("stylegan2-ffhq-1024")  # zoo name, not cached: never downloaded
    with pytest.raises(InputError, match="not found"):
        stylegan2_io.resolve_generator(tmp_path / "nope.pkl")


def test_r1_penalty_equals_the_analytic_gradient_norm():
    torch.manual_seed(0)
    a = torch.randn(3, 2, 4, 4)
    x = torch.randn(3, 2, 4, 4, requires_grad=True)
    logits = (a * x).sum(dim=(1, 2, 3)) + (x**2).sum(dim=(1, 2, 3))  # dD/dx = a + 2x
    expected = (a + 2 * x.detach()).square().sum(dim=(1, 2, 3))
    torch.testing.assert_close(r1_penalty(logits, x), expected)


def test_style_mixing_takes_rows_from_the_second_latent_after_the_cutoff():
    torch.manual_seed(0)
    G = Generator(z_dim=8, w_dim=8, img_resolution=16, mapping_layers=2, channel_base=64, channel_max=8).eval()
    z, z2 = torch.randn(3, 8), torch.randn(3, 8)
    ws = mixed_latents(G, z, z2, torch.tensor([True, False, True]), torch.tensor([2, 1, 5]))
    w, w2 = G.mapping(z), G.mapping(z2)
    assert ws.shape == (3, G.num_ws, 8)
    torch.testing.assert_close(ws[0, :2], w[0].expand(2, -1))
    torch.testing.assert_close(ws[0, 2:], w2[0].expand(G.num_ws - 2, -1))
    torch.testing.assert_close(ws[1], w[1].expand(G.num_ws, -1))  # not mixed
    torch.testing.assert_close(ws[2, 5:], w2[2].expand(G.num_ws - 5, -1))


def test_task_none_gives_the_clean_image_and_bad_settings_are_input_errors(tmp_path):
    from facerestore.methods import create_adapter
    from facerestore.train.data import make_pair

    cfg = _tiny(tmp_path)
    hq8 = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    lq, hq = make_pair(hq8, cfg.data, torch.Generator().manual_seed(0), "cpu", hflip=False)
    assert torch.equal(lq, hq) and torch.equal(hq, hq8.float() / 255)
    with pytest.raises(InputError, match="unknown stylegan2 model key"):
        create_adapter(_tiny(tmp_path, "model.gamma=1"), torch.device("cpu"))
    with pytest.raises(InputError, match="img_resolution"):
        create_adapter(_tiny(tmp_path, "model.generator.img_resolution=32"), torch.device("cpu"))
    with pytest.raises(InputError, match="val_every"):
        create_adapter(cfg, torch.device("cpu")).infer(None, hq)


def test_noise_none_holds_the_noise_strengths_at_zero(tmp_path):
    from facerestore.methods import create_adapter

    ad = create_adapter(_tiny(tmp_path, "model.noise=none"), torch.device("cpu"))
    g_net = ad.nets["generator"]
    with torch.no_grad():
        for name, p in g_net.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)
    opts = ad.build_optimizers()
    real = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    for step in range(2):
        ad.step = step
        ad.train_step(real, real, opts, lambda: torch.autocast("cpu", enabled=False), None)
    strengths = [p for n, p in g_net.named_parameters() if n.endswith("noise_strength")]
    assert strengths and all(float(p.detach()) == 0.0 for p in strengths)
    w = g_net.mapping.w_avg.expand(2, -1)
    with torch.no_grad():
        a = g_net.synthesis(w, noise_mode="const")
        b = g_net.synthesis(w, noise_mode="random", generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(InputError, match="noise"):
        create_adapter(_tiny(tmp_path, "model.noise=const"), torch.device("cpu"))
