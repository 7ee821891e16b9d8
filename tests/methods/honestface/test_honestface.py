"""HonestFace (paper 003): values, not just shapes. Tiny configurations of the real classes; fast on 2 CPU cores."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from facerestore.errors import InputError
from facerestore.methods.honestface.backbone import T_FIXED, alphas_cumprod, x0_from_eps
from facerestore.methods.honestface.prompt import N1, N2, N3, select_r0

diffusers = pytest.importorskip("diffusers", reason="the [diffusion] extra (diffusers, peft) is not installed")
pytest.importorskip("peft", reason="the [diffusion] extra (diffusers, peft) is not installed")

from facerestore.methods.honestface.backbone import (  # noqa: E402
    SD21_BASE,
    BackboneConfig,
    OneStepBackbone,
    add_lora,
    build_unet,
    build_vae,
    ldm_to_diffusers,
)

TINY = BackboneConfig(
    "tiny",
    dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
         down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
         layers_per_block=1, cross_attention_dim=32, attention_head_dim=4, use_linear_projection=True,
         norm_num_groups=8),
    dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1, latent_channels=4,
         norm_num_groups=8, sample_size=32, scaling_factor=1.0),
    32,
)


@pytest.fixture(scope="module")
def dlib_net():
    from facerestore.errors import WeightsMissingError
    from facerestore.nn.backbones.dlib_resnet import load_dlib_face_resnet

    try:
        return load_dlib_face_resnet()
    except WeightsMissingError as exc:
        pytest.skip(str(exc))


# ------------------------------------------------------------------------------------------------ eq. 1-3


def test_schedule_and_x0_from_eps_match_an_independent_float64_computation():
    abar = alphas_cumprod()
    # independent: the scaled-linear betas one by one, the product accumulated in Python floats
    s0, s1 = math.sqrt(0.00085), math.sqrt(0.012)
    prod = 1.0
    for t in range(T_FIXED + 1):
        beta = (s0 + (s1 - s0) * t / 999) ** 2
        prod *= 1.0 - beta
    assert abar.dtype == np.float64 and abar.shape == (1000,)
    assert abar[T_FIXED] == pytest.approx(prod, rel=1e-12)
    # the schedule diffusers' DDPMScheduler uses for Stable Diffusion (float32 there)
    sched = diffusers.DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    np.testing.assert_allclose(sched.alphas_cumprod.double().numpy(), abar, rtol=2e-6)
    g = torch.Generator().manual_seed(0)
    z, eps = torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    out = x0_from_eps(z, eps, abar[T_FIXED])
    ref = (z.numpy().astype(np.float64) - math.sqrt(1 - prod) * eps.numpy().astype(np.float64)) / math.sqrt(prod)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-6)
    # float64 internally: a bf16 latent gets the float64 result rounded once
    zb = z.bfloat16()
    np.testing.assert_array_equal(x0_from_eps(zb, eps.bfloat16(), abar[T_FIXED]).float().numpy(),
                                  torch.from_numpy((zb.double().numpy() - math.sqrt(1 - prod) * eps.bfloat16().double()
                                                    .numpy()) / math.sqrt(prod)).bfloat16().float().numpy())


# ------------------------------------------------------------------------------------------------- LoRA


def test_lora_rank_alpha_scaling_and_zero_init_equivalence():
    torch.manual_seed(0)
    unet = build_unet(TINY.unet)
    z = torch.randn(1, 4, 8, 8)
    p = torch.randn(1, N3, 32)
    with torch.no_grad():
        base = unet(z, T_FIXED, encoder_hidden_states=p).sample
    add_lora(unet)
    loras = {n: m for n, m in unet.named_modules() if hasattr(m, "lora_A") and "default" in m.lora_A}
    assert loras and all(m.r["default"] == 16 and m.scaling["default"] == 1.0 for m in loras.values())
    assert any(n.endswith("attn2.to_k") for n in loras) and any(n.endswith("proj_in") for n in loras)
    with torch.no_grad():
        same = unet(z, T_FIXED, encoder_hidden_states=p).sample
    torch.testing.assert_close(same, base, rtol=0, atol=0)  # B = 0: exactly the base model
    # one adapted linear layer: W x + b + (alpha / r) B A x
    m = next(m for n, m in loras.items() if n.endswith("attn2.to_k"))
    with torch.no_grad():
        m.lora_B["default"].weight.normal_()
        x = torch.randn(3, m.in_features)
        w, a, b = m.base_layer.weight, m.lora_A["default"].weight, m.lora_B["default"].weight
        expected = x @ w.T + (16 / 16) * (x @ a.T @ b.T)
        torch.testing.assert_close(m(x), expected, rtol=1e-5, atol=1e-5)
        assert a.shape[0] == 16 and b.shape[1] == 16


# --------------------------------------------------------------------------------------------- the prompt


def test_token_counts_and_visual_codes(dlib_net):
    from facerestore.methods.honestface.prompt import PromptEmbedder

    torch.manual_seed(0)
    pe = PromptEmbedder(32, dlib_net).eval()
    lq = torch.rand(2, 3, 32, 32)
    assert (N1, N2, N3) == (4, 7, 77)
    idx, _ = pe.vre.select(pe.vre.features(lq))
    assert idx.shape == (2, 77) and all(len(set(r.tolist())) == 77 for r in idx)  # 77 distinct codes
    eyes = torch.rand(2, 2, 3, 32, 32)
    assert pe.ffe(eyes).shape == (2, N1, 32)
    emb, mask = torch.randn(2, 3, 128), torch.ones(2, 3, dtype=torch.bool)
    assert pe.fie(emb, mask).shape == (2, N2, 32)
    with torch.no_grad():
        p = pe(lq, eyes, emb, mask)
        p_none = pe(lq)
        # a sample whose mask row is empty gets exactly the no-reference prompt
        mask2 = mask.clone()
        mask2[1] = False
        p_mixed = pe(lq, eyes, emb, mask2)
    assert p.shape == p_none.shape == (2, 77, 32)
    torch.testing.assert_close(p_mixed[1], p_none[1])
    torch.testing.assert_close(p_mixed[0], p[0])


def test_attention_pooling_is_invariant_to_reference_order_and_padding():
    from facerestore.methods.honestface.prompt import FaceIdentityEncoder

    torch.manual_seed(1)
    fie = FaceIdentityEncoder(32).eval()
    emb = torch.randn(1, 4, 128)
    mask = torch.ones(1, 4, dtype=torch.bool)
    with torch.no_grad():
        a = fie(emb, mask)
        b = fie(emb[:, [2, 0, 3, 1]], mask)
        padded = torch.cat([emb, torch.randn(1, 2, 128)], 1)
        c = fie(padded, torch.tensor([[True] * 4 + [False] * 2]))
        d = fie(emb[:, :3], mask[:, :3])
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6)
    assert float((a - d).abs().max()) > 1e-4  # it does depend on which references are there


def test_r0_is_chosen_by_affine_landmark_distance():
    rng = np.random.default_rng(0)
    lq = rng.uniform(20, 100, (68, 2))
    # ref 0: the same geometry, but rotated, scaled and shifted (A-LD = 0, L2 large)
    ang = 0.3
    rot = 1.3 * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    ref0 = lq @ rot.T + np.array([15.0, -9.0])
    # ref 1: at the LQ face's place, but with different eyes (small L2, A-LD > 0)
    ref1 = lq.copy()
    ref1[36:48] += rng.normal(0, 2.0, (12, 2))
    refs = np.stack([ref1, ref0, ref1 + 0.5])
    assert select_r0(lq, refs) == 1
    l2 = np.linalg.norm(refs - lq, axis=-1).mean(-1)
    assert int(np.argmin(l2)) != 1  # a plain L2 distance would pick another one
    refs_nan = refs.copy()
    refs_nan[1] = np.nan
    assert select_r0(lq, refs_nan) == 0  # references without landmarks are never chosen


def test_eye_patches_centre_on_the_eyes():
    from facerestore.methods.honestface.prompt import eye_patches

    face = torch.zeros(1, 3, 64, 64)
    face[:, :, 20:24, 18:22] = 1.0  # a bright square on the left eye
    lm = torch.zeros(1, 68, 2)
    lm[0, 36:42] = torch.tensor([[17.0, 21.5], [18.5, 20.5], [20.5, 20.5], [22.0, 21.5], [20.5, 22.5], [18.5, 22.5]])
    lm[0, 42:48] = lm[0, 36:42] + torch.tensor([24.0, 0.0])
    p = eye_patches(face, lm, size=16)
    assert p.shape == (1, 2, 3, 16, 16)
    assert float(p[0, 0, :, 6:10, 6:10].mean()) > 0.9 and float(p[0, 1].max()) == 0.0


# -------------------------------------------------------------------------------- backbone, weights, restorer


def test_one_step_backbone_is_eq3_and_deterministic():
    torch.manual_seed(0)
    bb = OneStepBackbone(TINY).eval()
    x = torch.rand(2, 3, 32, 32)
    p = torch.randn(2, N3, 32)
    with torch.no_grad():
        y, z0 = bb(x, p, return_latent=True)
        z = bb.encode(x)
        eps = bb.unet(z, torch.full((2,), T_FIXED), encoder_hidden_states=p).sample
        a = alphas_cumprod()[T_FIXED]
        torch.testing.assert_close(z0, ((z.double() - math.sqrt(1 - a) * eps.double()) / math.sqrt(a)).float())
        torch.testing.assert_close(y, bb.decode(z0))
        torch.testing.assert_close(bb(x, p), y, rtol=0, atol=0)
    torch.manual_seed(0)
    bb2 = OneStepBackbone(TINY).eval()
    with torch.no_grad():
        torch.testing.assert_close(bb2(x, p), y, rtol=0, atol=0)  # seeded construction


def test_weights_round_trip_and_bad_files(tmp_path, dlib_net):
    from facerestore.methods.honestface.model import HonestFaceNet, load_honestface, save_honestface

    torch.manual_seed(0)
    net = HonestFaceNet(TINY, features=dlib_net).eval()
    with torch.no_grad():
        for n, prm in net.named_parameters():
            if "lora_B" in n:
                prm.normal_(0, 0.01)  # make LoRA matter
    path = save_honestface(net, tmp_path / "w.safetensors", {"steps": 3}, dtype=torch.float32)
    assert not any(k.startswith("prompt.ffe.net.") for k in __import__("safetensors.torch", fromlist=["x"])
                   .load_file(str(path)))  # dlib's weights are never written
    back = load_honestface(path, features=dlib_net).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(back(x), net(x), rtol=0, atol=0)
    half = load_honestface(save_honestface(net, tmp_path / "h.safetensors"), features=dlib_net).eval()
    with torch.no_grad():
        assert float((half(x) - net(x)).abs().max()) < 5e-2
    # a file missing a tensor, or without its description, is refused in one line
    from safetensors.torch import load_file, save_file

    sd = load_file(str(path))
    sd.pop(next(iter(sd)))
    save_file(sd, str(tmp_path / "bad.safetensors"))
    (tmp_path / "bad.json").write_text(path.with_suffix(".json").read_text())
    with pytest.raises(InputError, match="does not match"):
        load_honestface(tmp_path / "bad.safetensors", features=dlib_net)
    (tmp_path / "bad.json").unlink()
    with pytest.raises(InputError, match="description"):
        load_honestface(tmp_path / "bad.safetensors", features=dlib_net)


def test_wrong_reference_refusal_threshold():
    from facerestore.methods.honestface.restorer import REFS_MAX_DISTANCE, check_refs_identity

    assert check_refs_identity(torch.tensor([0.3, 0.5, 0.9])) == pytest.approx(0.5)
    with pytest.raises(InputError, match=r"different person.*--force-refs"):
        check_refs_identity(torch.tensor([0.8, 0.9, 0.2]))
    assert check_refs_identity(torch.tensor([0.9]), force=True) == pytest.approx(0.9)
    assert 0.6 < REFS_MAX_DISTANCE < 1.0
    # two references: the true median (torch.median is the lower one, which let one matching photo pass another
    # person's)
    with pytest.raises(InputError, match="different person"):
        check_refs_identity(torch.tensor([0.70, 1.2]))
    assert check_refs_identity(torch.tensor([0.4, 0.6])) == pytest.approx(0.5)


def test_restore_takes_no_refs_as_an_empty_list_and_refuses_unprepared_photos():
    from facerestore.methods import load_restorer

    r = load_restorer("rls")
    with pytest.raises(InputError, match="prepare_refs"):
        r.restore(torch.rand(1, 3, 64, 64), refs=["me.jpg"])
    with pytest.raises(InputError, match="prepare_refs"):
        r.restore(torch.rand(1, 3, 64, 64), refs=[torch.rand(3, 64, 64)])
    ispl = load_restorer("ispl")  # takes no references: an empty list is no references, not an error
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ispl.restore(x, refs=[]), ispl.restore(x))


PHOTOS = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "photos"


@pytest.mark.data
def test_restorer_refuses_another_persons_references_and_uses_the_right_ones():
    if not (PHOTOS / "img1.jpg").is_file():
        pytest.skip("../shared/data/photos is absent")
    from facerestore.methods import load_restorer
    from facerestore.pipeline import prepare_refs

    r = load_restorer("honestface")
    size = r.spec.size
    face = prepare_refs([PHOTOS / "img1.jpg"], size)  # person A
    same = prepare_refs([PHOTOS / "img2.jpg", PHOTOS / "img4.jpg"], size)  # person A
    other = prepare_refs([PHOTOS / "img13.jpg", PHOTOS / "img14.jpg"], size)  # person B
    y = r.restore(face, refs=same)
    assert y.shape == face.shape and r.last_refs_distance < 0.6 and r.last_r0 is not None
    assert r.refs_distances(face, same) == pytest.approx([r.last_refs_distance], abs=1e-6)  # the check alone
    with pytest.raises(InputError, match="different person"):
        r.restore(face, refs=other)
    y2 = r.restore(face, refs=other, force_refs=True)
    assert r.last_refs_distance > 0.75 and float((y2 - y).abs().mean()) > 0  # the references change the result
    torch.testing.assert_close(r.restore(face, refs=same), y, rtol=0, atol=0)  # deterministic


# ------------------------------------------------------------------------------- SD 2.1-base checkpoint layout


def test_sd21_base_checkpoint_layout_converts_onto_the_real_module_tree():
    """The original checkpoint's keys and shapes (written from the LDM architecture in ldm_layout.py), converted by
    the loader's route, equal the state dict of the real SD 2.1-base UNet and VAE built on the meta device."""
    sys.path.insert(0, str(Path(__file__).parent))
    import ldm_layout

    shapes = {**ldm_layout.sd21_base_unet(), **ldm_layout.sd21_base_vae()}
    shapes["cond_stage_model.model.positional_embedding"] = (77, 1024)  # other parts of the file are ignored
    sd = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    unet_sd, vae_sd = ldm_to_diffusers(sd)
    with torch.device("meta"):
        unet, vae = build_unet(SD21_BASE.unet), build_vae(SD21_BASE.vae)
    for module, conv in ((unet, unet_sd), (vae, vae_sd)):
        expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        assert expected == {k: tuple(v.shape) for k, v in conv.items()}
        module.load_state_dict(conv, strict=True, assign=True)
    assert sum(p.numel() for p in unet.parameters()) == 865_910_724  # SD 2.x UNet
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863  # SD's KL-f8 VAE
    assert len(ldm_layout.sd21_base_unet()) == 686 and SD21_BASE.prompt_dim == 1024


def test_sd21_base_zoo_entry_is_hash_pinned_and_never_downloaded_on_use(tmp_path, monkeypatch):
    from facerestore import zoo
    from facerestore.errors import WeightsMissingError
    from facerestore.methods.honestface.backbone import load_sd21_base

    e = zoo.get_entry("sd21-base")
    assert len(e.sha256) == 64 and e.url.endswith("/" + e.filename) and e.filename.endswith(".ckpt")
    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path))
    with pytest.raises(WeightsMissingError, match="models download sd21-base"):
        load_sd21_base()  # names the address and the command; loading never downloads
    bad = zoo.cached_path("sd21-base")
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a checkpoint")
    from facerestore.errors import WeightsHashError

    with pytest.raises(WeightsHashError):
        load_sd21_base()


@pytest.mark.data
def test_cli_refuses_wrong_references_unless_forced(tmp_path, capsys):
    if not (PHOTOS / "img1.jpg").is_file():
        pytest.skip("../shared/data/photos is absent")
    from facerestore import io
    from facerestore.cli import main
    from facerestore.pipeline import prepare_refs

    def crops(names, folder):
        folder.mkdir()
        for n, c in zip(names, prepare_refs([PHOTOS / n for n in names], 128)):
            io.write_image(folder / f"{Path(n).stem}.png", c.permute(1, 2, 0).numpy())
        return folder

    face = crops(["img1.jpg"], tmp_path / "face")
    other = crops(["img13.jpg", "img14.jpg"], tmp_path / "other")
    args = ["restore", "-i", str(face / "img1.png"), "--aligned", "--method", "honestface", "--refs", str(other),
            "--upscale", "1", "--device", "cpu", "-q"]
    assert main([*args, "-o", str(tmp_path / "o1")]) != 0
    assert "different person" in capsys.readouterr().err
    assert main([*args, "-o", str(tmp_path / "o2"), "--force-refs"]) == 0
    assert (tmp_path / "o2" / "restored_imgs" / "img1.png").is_file()


def test_training_phases_train_the_vae_alone_then_freeze_it(dlib_net):
    """Phase V trains only the VAE; with a V phase, A trains the UNet base and the prompt but never the VAE (SD's
    autoencoder is never trained to restore); B trains LoRA and the prompt; dlib's ResNet is never trained."""
    from facerestore.methods.honestface.model import HonestFaceNet
    from facerestore.methods.honestface.train import phase_at, set_phase

    assert [phase_at(s, 3, 2) for s in range(7)] == ["V", "V", "V", "A", "A", "B", "B"]
    assert [phase_at(s, 0, 2) for s in range(4)] == ["A", "A", "B", "B"]  # the first weights' recipe
    net = HonestFaceNet(TINY, features=dlib_net)
    names = {id(p): n for n, p in net.named_parameters()}

    def trained(phase: str, frozen_vae: bool) -> set[str]:
        params = set_phase(net, phase, frozen_vae)
        assert {names[id(p)] for p in params} == {n for n, p in net.named_parameters() if p.requires_grad}
        return {names[id(p)] for p in params}

    vae = {n for n in names.values() if n.startswith("backbone.vae.")}
    v = trained("V", True)
    assert v == vae
    a = trained("A", True)
    assert a and not a & vae and not any("lora_" in n or n.startswith("prompt.ffe.net.") for n in a)
    assert any(n.startswith("backbone.unet.") for n in a) and any(n.startswith("prompt.") for n in a)
    assert trained("A", False) == a | vae  # without phase V: end to end, as the first weights were trained
    b = trained("B", True)
    assert b and all("lora_" in n or n.startswith("prompt.") for n in b) and not b & vae
    assert not any(n.startswith("prompt.ffe.net.") for n in v | a | b)
    # phase A's gradient never reaches the frozen VAE
    set_phase(net, "A", True)
    x = torch.rand(1, 3, 32, 32)
    net(x).mean().backward()
    assert all(p.grad is None for n, p in net.named_parameters() if n in vae)
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for n, p in net.named_parameters() if n in a)


def test_a_bad_backbone_description_is_one_line(tmp_path, dlib_net):
    """diffusers checks UNet/VAE keys only when it builds them: that failure is the same one-line InputError."""
    from facerestore.methods.honestface.model import HonestFaceNet, load_honestface, save_honestface

    path = save_honestface(HonestFaceNet(TINY, features=dlib_net), tmp_path / "w.safetensors")
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["backbone"]["unet"]["no_such_option"] = 3
    meta["backbone"]["unet"]["block_out_channels"] = "wide"
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="bad backbone description") as info:
        load_honestface(path, features=dlib_net)
    assert "\n" not in str(info.value)


def test_init_weights_start_phases_v_and_a_without_their_lora(dlib_net):
    """--init then phases V/A: the init's trained LoRA is zeroed, so an export of those phases (adapters on when
    loaded) computes what was trained (adapters off), and phase B starts from zero LoRA as the paper's does."""
    from facerestore.methods.honestface.model import HonestFaceNet
    from facerestore.methods.honestface.train import reset_lora, set_phase

    net = HonestFaceNet(TINY, features=dlib_net).eval()
    with torch.no_grad():
        for n, p in net.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    set_phase(net, "A")
    with torch.no_grad():
        trained = net(x)  # what phases V/A compute: adapters off
    set_phase(net, "B")
    with torch.no_grad():
        assert float((net(x) - trained).abs().max()) > 1e-4  # stale LoRA on: another model
        reset_lora(net)
        torch.testing.assert_close(net(x), trained, rtol=0, atol=0)
    assert all(float(p.detach().abs().max()) == 0 for n, p in net.named_parameters() if "lora_B" in n)
    assert any(float(p.detach().abs().max()) > 0 for n, p in net.named_parameters() if "lora_A" in n)


def test_a_resumed_run_keeps_its_schedule_and_its_learning_rates_unless_given():
    from facerestore.methods.honestface.train import RUN_DEFAULTS, resolve_run_settings

    none = dict.fromkeys(RUN_DEFAULTS)
    first = resolve_run_settings({**none, "phase_v": 0, "lr": 3e-4}, {})
    assert first == {**RUN_DEFAULTS, "phase_v": 0, "lr": 3e-4}
    # the next chunk with only --out/--minutes: the run's own settings, not the defaults
    assert resolve_run_settings(none, first) == first
    # a new learning rate for the next chunks is taken; a new schedule or seed is another run
    assert resolve_run_settings({**none, "lr_b": 5e-5}, first)["lr_b"] == 5e-5
    with pytest.raises(SystemExit, match="--phase-v 700"):
        resolve_run_settings({**none, "phase_v": 700}, first)
    assert resolve_run_settings({**none, "phase_v": 0}, first) == first  # the same value: fine


def test_self_reference_views_move_their_landmarks_and_repeat_the_border():
    from facerestore.methods.honestface.train import _jitter

    x = torch.zeros(3, 20, 20)
    x[:, 5, 7] = 1.0  # one bright "landmark" pixel at (x=7, y=5)
    x[:, :, 0] = 0.5  # the left column: a shift to the right must repeat it, not wrap the right column in
    for seed in range(12):
        view, (dx, dy) = _jitter(x, torch.Generator().manual_seed(seed))
        grey = view.mean(0)
        peak = divmod(int(grey.argmax()), 20)
        assert peak == (5 + dy, 7 + dx), (seed, dx, dy)
        if dx > 0:
            # columns 0..dx all repeat the left edge (0.5 before the jitter), none the right side's 0
            assert float((grey[10, : dx + 1] - grey[10, 0]).abs().max()) < 1e-6 and float(grey[10, 0]) > 0.2


def test_training_edge_maps_are_ea_dists_edge_maps():
    from facerestore.methods.honestface.train import sobel
    from facerestore.metrics.dists import sobel_magnitude

    step = torch.zeros(1, 3, 16, 16)
    step[..., 8:] = 1.0
    torch.testing.assert_close(sobel(step), sobel_magnitude(step))
    assert abs(float(sobel(step)[0, 0, 8, 8]) - 0.5) < 1e-3  # a unit step: 0.5, inside dlib's [0, 1] input range


def test_training_without_data_is_one_line(tmp_path):
    from facerestore.methods.honestface.train import _prepare

    with pytest.raises(SystemExit, match="--data"):
        _prepare(tmp_path / "out", 1, None, data=tmp_path / "nowhere")
