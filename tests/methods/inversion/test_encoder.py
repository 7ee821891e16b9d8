"""The W encoder that starts robust-inversion near the face: network, files, pairs, training, restorer, CLI.

Tiny random-init generators (32 px) keep every test on the CPU in seconds; pairs are the generator's own images,
so every W target is known.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_stylegan2
from facerestore.cli import main
from facerestore.errors import InputError, WeightsMissingError
from facerestore.methods.inversion import RobustInversionRestorer, robust_invert
from facerestore.methods.inversion import encoder_train as et
from facerestore.methods.inversion.encoder import (
    LatentEncoder,
    encoder_paths,
    find_encoder,
    load_encoder,
    save_encoder,
)
from facerestore.nn.stylegan2 import Generator, render_unit
from facerestore.nn.stylegan2_io import generator_sha256, save_safetensors_generator


@pytest.fixture(scope="module")
def tiny_g() -> Generator:
    return tiny_stylegan2(16, channel_base=64, channel_max=8, mapping_layers=1, n_avg=500)


@pytest.fixture(scope="module")
def tiny_msg():
    from conftest import tiny_mobilestylegan

    return tiny_mobilestylegan((16, 16, 8), with_w_avg=True).requires_grad_(False)


def _random_encoder(w_dim: int = 16, in_size: int = 32, seed: int = 0) -> LatentEncoder:
    from conftest import random_w_encoder

    return random_w_encoder(w_dim, in_size=in_size, seed=seed)


def test_untrained_encoder_starts_at_w_avg_and_resizes_its_input():
    w_avg, w_std = torch.randn(16), torch.rand(16) + 0.1
    enc = LatentEncoder(w_avg, w_std, in_size=32, width=4, max_channels=8)
    faces = torch.rand(3, 3, 50, 50, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(enc(faces), w_avg.expand(3, -1), rtol=0, atol=0)  # zero head: the paper's start
    enc = _random_encoder()
    out = enc(faces)
    assert out.shape == (3, 16) and out.dtype == torch.float32
    resized = F.interpolate(faces, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(out, enc(resized), rtol=0, atol=0)
    torch.testing.assert_close(out[1:2], enc(faces[1:2]), rtol=1e-5, atol=1e-6)  # per face, batch-independent
    torch.testing.assert_close(enc.whitened(faces), (out - enc.w_avg) / enc.w_std, rtol=1e-5, atol=1e-5)
    for bad in (12, 48, 2048):
        with pytest.raises(ValueError, match="in_size"):
            LatentEncoder(w_avg, w_std, in_size=bad)
    with pytest.raises(ValueError, match="B, 3"):
        enc(torch.rand(3, 32, 32))


def test_encoder_gradients_reach_every_parameter():
    enc = _random_encoder().train()
    et.whitened_error(enc, torch.rand(2, 3, 32, 32), torch.randn(2, 16)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())


def test_encoder_file_round_trip_and_generator_check(tmp_path, tiny_g):
    gen_file = tmp_path / "prior.safetensors"
    save_safetensors_generator(tiny_g, gen_file, half=False)
    enc = _random_encoder()
    faces = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    path = save_encoder(enc, encoder_paths(gen_file)[0], gen_file, steps=7)
    assert path.name == "prior.w-encoder.safetensors" and find_encoder(gen_file) == path
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["generator_sha256"] == generator_sha256(gen_file) and record["steps"] == 7
    loaded = load_encoder(path, generator_path=gen_file)
    torch.testing.assert_close(loaded(faces), enc(faces), rtol=0, atol=0)
    # fp16 storage rounds the weights, never the W statistics
    half = load_encoder(save_encoder(enc, tmp_path / "h.safetensors", gen_file, half=True))
    torch.testing.assert_close(half.w_avg, enc.w_avg, rtol=0, atol=0)
    torch.testing.assert_close(half.w_std, enc.w_std, rtol=0, atol=0)
    torch.testing.assert_close(half.head.weight, enc.head.weight.half().float(), rtol=0, atol=0)
    # another generator's encoder, or one without a record, is refused in one line
    other = tmp_path / "other.safetensors"
    torch.manual_seed(5)
    save_safetensors_generator(Generator(z_dim=16, w_dim=16, img_resolution=32, channel_base=64, channel_max=8,
                                         mapping_layers=1), other, half=False)
    with pytest.raises(InputError, match="train-encoder --generator") as err:
        load_encoder(path, generator_path=other)
    assert "\n" not in str(err.value)
    path.with_suffix(".json").unlink()
    with pytest.raises(InputError, match="no record"):
        load_encoder(path, generator_path=gen_file)
    with pytest.raises(WeightsMissingError, match="train-encoder"):
        find_encoder(other)


def test_hostile_encoder_files_are_refused_before_anything_is_built(tmp_path):
    from facerestore.io import atomic_write_safetensors

    enc = _random_encoder()
    state = {k: v.contiguous() for k, v in enc.state_dict().items()}
    cases = {
        "huge_width": ({**enc.config, "width": 10**6}, state, "width"),
        "unknown_key": ({**enc.config, "depth": 3}, state, "unknown"),
        "bad_size": ({**enc.config, "in_size": 48}, state, "in_size"),
        "shapes": ({**enc.config, "w_dim": 8}, state, "shape"),
    }
    for case, (config, tensors, word) in cases.items():
        path = tmp_path / f"{case}.safetensors"
        atomic_write_safetensors(path, tensors, {"format": "facerestore-w-encoder", "config": json.dumps(config)})
        with pytest.raises(InputError, match=word):
            load_encoder(path)
    path = tmp_path / "flow.safetensors"
    atomic_write_safetensors(path, state, {"format": "facerestore-maf", "config": "{}"})
    with pytest.raises(InputError, match="not a facerestore W encoder"):
        load_encoder(path)


def test_render_pairs_are_the_generators_images_and_resume_from_chunks(tmp_path, tiny_g, monkeypatch):
    monkeypatch.setattr(et, "CHUNK", 4)
    pairs = et.render_pairs(tiny_g, 10, seed=3, size=16, folder=tmp_path, progress=False)
    assert len(pairs) == 10 and pairs.images.shape == (10, 3, 16, 16) and pairs.images.dtype == torch.uint8
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"pairs-3-0000{i}.safetensors" for i in range(3)]
    # each image is the generator's box-averaged render of its W, quantised
    with torch.no_grad():
        ref = F.avg_pool2d(render_unit(tiny_g, pairs.ws), 2).clamp(0, 1)
    assert (pairs.images.float() - ref * 255).abs().max() <= 0.5 + 1e-3
    # every W lies on the segment from w_avg to a mapping sample, at a psi in the range
    for i in range(3):
        gen = torch.Generator().manual_seed(3 * 100003 + i)
        raw = tiny_g.sample_w(4, gen)
        psi = torch.empty(4, 1).uniform_(0.5, 1.0, generator=gen)
        chunk = pairs.ws[4 * i:4 * i + 4]
        torch.testing.assert_close(chunk, tiny_g.mapping.w_avg.lerp(raw, psi)[:len(chunk)])
    # a stopped run keeps its chunks: a missing one is rendered again, the others are read, the result is equal
    (tmp_path / "pairs-3-00001.safetensors").unlink()
    again = et.render_pairs(tiny_g, 10, seed=3, size=16, folder=tmp_path, progress=False)
    assert torch.equal(again.images, pairs.images) and torch.equal(again.ws, pairs.ws)
    # a folder of another generator's (or psi range's) pairs is not mistaken for these: they are rendered again
    other = et.render_pairs(tiny_g, 10, seed=3, size=16, folder=tmp_path, psi_range=(0.9, 1.0), progress=False)
    assert not torch.equal(other.ws, pairs.ws)
    with torch.no_grad():
        assert (other.images.float() - F.avg_pool2d(render_unit(tiny_g, other.ws), 2).clamp(0, 1) * 255).abs().max() \
            <= 0.5 + 1e-3
    train, held = pairs.split(3)
    assert len(train) == 7 and len(held) == 3 and torch.equal(held.ws, pairs.ws[7:])


def test_degraded_views_are_seeded_and_keep_clean_faces():
    faces = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    assert torch.equal(et.degrade_views(faces, torch.Generator().manual_seed(0), clean=1.0), faces)
    assert torch.equal(et.degrade_views(faces, torch.Generator().manual_seed(0), max_factor=1.0, max_noise=0.0),
                       faces)
    a = et.degrade_views(faces, torch.Generator().manual_seed(0))
    b = et.degrade_views(faces, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    changed = [(not torch.equal(a[k], faces[k])) for k in range(16)]
    assert 6 <= sum(changed) < 16  # about three quarters degraded
    # a reduced view has less high-frequency energy than its face (noise-free, so only the reduction acts)
    blurred = et.degrade_views(faces, torch.Generator().manual_seed(1), max_noise=0.0, clean=0.0)
    lap = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
    energy = lambda x: F.conv2d(x, lap, groups=3).pow(2).mean(dim=(1, 2, 3))  # noqa: E731
    assert (energy(blurred) < energy(faces)).float().mean() > 0.8


def test_training_lowers_the_error_and_resumes_bit_for_bit(tmp_path, tiny_g):
    pairs = et.render_pairs(tiny_g, 96, seed=1, size=32, progress=False)
    train, held = pairs.split(32)

    def fresh() -> LatentEncoder:
        torch.manual_seed(0)
        return et.new_encoder(tiny_g, n_stats=2000, in_size=32, width=4, max_channels=8)

    enc = fresh()

    @torch.no_grad()
    def errors() -> tuple[float, float]:
        return tuple(float(et.whitened_error(enc, p.images.float() / 255, p.ws).mean()) for p in (train, held))

    before = errors()
    losses = et.train_encoder(enc, train, steps=60, batch=16, lr=3e-3, seed=0)
    enc.eval()
    after = errors()
    assert len(losses) == 60 and after[0] < 0.8 * before[0] and after[1] < before[1]
    # interrupted at step 25 with checkpoints every 10 steps, then rerun: equal to an uninterrupted run
    straight = fresh()
    et.train_encoder(straight, train, steps=30, batch=16, lr=3e-3, seed=0)
    ckpt, saved, stopped_losses = tmp_path / "enc.ckpt", [], []

    def stop(step: int, loss: float) -> None:
        if step == 25:
            raise KeyboardInterrupt

    part = fresh()
    with pytest.raises(KeyboardInterrupt):
        et.train_encoder(part, train, steps=30, batch=16, lr=3e-3, seed=0, checkpoint=ckpt, save_every=10,
                         callback=stop, on_save=lambda e, s, ls, sec: saved.append(s))
    assert saved == [10, 20]
    resumed = fresh()
    hist = et.train_encoder(resumed, train, steps=30, batch=16, lr=3e-3, seed=0, checkpoint=ckpt, save_every=10)
    assert len(hist) == 30
    for (k, v), (_, u) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(v, u), k
    # the checkpoint continues only the run it belongs to: other settings, another encoder or fewer steps than
    # it holds are refused in one line
    from facerestore.errors import InputError

    # a stop asked for (a signal) ends the step, saves the checkpoint and the weights; a rerun continues
    stopped, saves = fresh(), []
    ckpt2 = tmp_path / "enc2.ckpt"
    et.train_encoder(stopped, train, steps=30, batch=16, lr=3e-3, seed=0, checkpoint=ckpt2, save_every=0,
                     should_stop=lambda: len(stopped_losses) >= 12, callback=lambda s, v: stopped_losses.append(v),
                     on_save=lambda e, s, ls, sec: saves.append((s, sec)))
    assert [s for s, _ in saves] == [12] and torch.load(ckpt2, weights_only=True)["step"] == 12
    et.train_encoder(stopped, train, steps=30, batch=16, lr=3e-3, seed=0, checkpoint=ckpt2, save_every=0,
                     on_save=lambda e, s, ls, sec: saves.append((s, sec)))
    assert [s for s, _ in saves] == [12, 30] and saves[1][1] > saves[0][1]  # seconds add up over the chunks
    for (k, v), (_, u) in zip(straight.state_dict().items(), stopped.state_dict().items()):
        assert torch.equal(v, u), k
    with pytest.raises(InputError, match=r"settings changed since its checkpoint \(lr: 0.003 -> 0.01\)"):
        et.train_encoder(fresh(), train, steps=30, batch=16, lr=1e-2, seed=0, checkpoint=ckpt)
    with pytest.raises(InputError, match="past the 20 steps asked"):
        et.train_encoder(fresh(), train, steps=20, batch=16, lr=3e-3, seed=0, checkpoint=ckpt)
    torch.manual_seed(0)
    wider = et.new_encoder(tiny_g, n_stats=2000, in_size=32, width=8, max_channels=8)
    with pytest.raises(InputError, match="holds another encoder"):
        et.train_encoder(wider, train, steps=30, batch=16, lr=3e-3, seed=0, checkpoint=ckpt)
    other_g = fresh()
    other_g.w_avg.add_(0.5)  # an encoder made for another generator (its mean latent differs)
    with pytest.raises(InputError, match="generator: "):
        et.train_encoder(other_g, train, steps=30, batch=16, lr=3e-3, seed=0, checkpoint=ckpt)


def test_restorer_starts_from_the_encoder_in_the_blind_mode(tiny_msg):
    from facerestore.methods.restorer import resize_crop

    enc = _random_encoder(w_dim=16, in_size=16)
    face = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    kw = dict(generator=tiny_msg, loss="substitute", steps=(3, 2, 2), min_side=4, progress=False,
              work_resolution=16)
    r = RobustInversionRestorer(init=enc, **kw)
    _, details = r.restore(face, return_details=True)
    assert details.work_resolution == 16
    target = resize_crop(face, (16, 16))
    ref = robust_invert(tiny_msg, target, lambda v: v, r.loss_fn, steps=(3, 2, 2), resolution=16,
                        w_init=enc(target))
    torch.testing.assert_close(details.image, ref.image, rtol=0, atol=0)
    paper = RobustInversionRestorer(init="mean", **kw)
    assert paper.encoder is None
    ref_mean = robust_invert(tiny_msg, target, lambda v: v, paper.loss_fn, steps=(3, 2, 2), resolution=16)
    torch.testing.assert_close(paper.restore(face, fidelity=0.0), ref_mean.image, rtol=0, atol=0)
    assert not torch.equal(ref.image, ref_mean.image)
    # the output records name the start (the spec's licence line is written into every photo's JSON)
    assert "W encoder" in r.spec.weights_licence and "W encoder" not in paper.spec.weights_licence
    # a generator object names no file: "auto" starts at w_avg, "encoder" asks for the encoder itself
    assert RobustInversionRestorer(init="auto", **kw).encoder is None
    with pytest.raises(InputError, match="pass the encoder"):
        RobustInversionRestorer(init="encoder", **kw)
    # the encoder stays float32 under --half (the latents are float32 whatever the generator's precision)
    assert RobustInversionRestorer(init=_random_encoder(), **kw).set_half().encoder.head.weight.dtype == torch.float32


def test_auto_finds_the_encoder_beside_the_generator_and_keeps_the_paper_start_for_tasks(tmp_path, tiny_g):
    gen_file = tmp_path / "prior.safetensors"
    save_safetensors_generator(tiny_g, gen_file, half=False)
    kw = dict(weights=gen_file, loss="substitute", steps=(2, 2, 2), min_side=4, progress=False)
    assert RobustInversionRestorer(**kw).encoder is None  # none stored: the paper's start
    with pytest.raises(WeightsMissingError, match="train-encoder"):
        RobustInversionRestorer(init="encoder", **kw)
    enc = _random_encoder()
    save_encoder(enc, encoder_paths(gen_file)[0], gen_file)
    r = RobustInversionRestorer(**kw)
    faces = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(r.start(faces, blind=True), enc(faces), rtol=0, atol=0)
    assert r.start(faces, blind=False) is None  # tasks with records: w_avg, as in the paper's tables
    forced = RobustInversionRestorer(init="encoder", **kw)
    torch.testing.assert_close(forced.start(faces, blind=False), enc(faces), rtol=0, atol=0)


def test_train_encoder_command_writes_usable_weights_and_resumes(tmp_path, tiny_g, capsys):
    gen_file = tmp_path / "prior.safetensors"
    save_safetensors_generator(tiny_g, gen_file, half=False)
    args = ["train-encoder", "--generator", str(gen_file), "--pairs", "24", "--held-out", "8", "--steps", "6",
            "--batch", "4", "--save-every", "3", "--in-size", "32", "--pairs-size", "32", "--width", "4",
            "--max-channels", "8", "--log-every", "0"]
    def held_out_errors(text: str) -> dict[int, float]:
        found = re.findall(r"step (\d+): held-out whitened W error ([0-9.]+)", text)
        return {int(step): float(err) for step, err in found}

    assert main(args) == 0
    errors = held_out_errors(capsys.readouterr().out)
    weights = encoder_paths(gen_file)[0]
    assert sorted(errors) == [3, 6] and weights.is_file()
    record = json.loads(weights.with_suffix(".json").read_text())
    # the weights are those of the lowest held-out error (early stopping), with the facts of that step
    assert record["held_out_whitened_mse"] == pytest.approx(min(errors.values()), abs=1e-4)
    assert errors[record["steps"]] == min(errors.values()) and record["scheduled_steps"] == 6
    assert record["pairs"] == 16 and record["held_out"] == 8
    assert record["generator_sha256"] == generator_sha256(gen_file)
    assert record["held_out_mean_start_mse"] > 0 and record["train_hours"] >= 0
    assert len(list(weights.with_suffix(".pairs").iterdir())) == 1  # the rendered pairs, reused by a rerun
    load_encoder(weights, generator_path=gen_file)
    # a rerun with more steps continues from the checkpoint and keeps the best of both runs
    with pytest.warns(UserWarning, match="planned for 6 steps, now 12"):  # the cosine schedule changes: said
        assert main([*args[:8], "12", *args[9:]]) == 0
    errors.update(held_out_errors(capsys.readouterr().out))
    assert sorted(errors) == [3, 6, 9, 12]
    record = json.loads(weights.with_suffix(".json").read_text())
    assert errors[record["steps"]] == min(errors.values())
    for opt, value in (("--held-out", "24"), ("--in-size", "48"), ("--pairs-size", "8"), ("--lr", "nan"),
                       ("--batch", "0")):
        capsys.readouterr()
        assert main([*args, opt, value]) == 2, opt  # the last occurrence of an option wins
        err = capsys.readouterr().err
        assert opt in err and err.count("\n") == 1, (opt, err)


def test_the_shipped_encoder_belongs_to_mobilestylegan_and_guesses_w_better_than_the_mean():
    """The built-in encoder with the real prior (skipped without it): found by the restorer, paired by sha256, and on
    fresh samples of the prior (seeds no training pair used) its W is closer than w_avg in the whitened error."""
    from facerestore import zoo

    name = "mobilestylegan-ffhq-1024"
    if not zoo.is_available(name):
        pytest.skip(f"MobileStyleGAN weights not found: run `facerestore models download {name}`")
    r = RobustInversionRestorer(name, loss="substitute", progress=False)
    assert r.encoder is not None and r.init == "auto"
    assert r.encoder.config == {"in_size": 64, "width": 32, "max_channels": 256, "head_channels": 64, "w_dim": 512}
    gen = torch.Generator().manual_seed(2026_12_05)  # not a seed of the training pairs (seed 1's chunk seeds)
    w = r.G.sample_w(4, gen)
    with torch.no_grad():
        faces = render_unit(r.G, w, resolution=128).float().clamp(0, 1)
        guess = et.whitened_error(r.encoder, faces, w)
    spread = ((w - r.encoder.w_avg) / r.encoder.w_std).pow(2).mean(1)  # the mean start's error
    assert float(guess.mean()) < 0.75 * float(spread.mean())


def test_a_diverging_encoder_training_stops_before_it_saves(tmp_path, tiny_g, monkeypatch):
    from facerestore.errors import TrainingError

    pairs = et.render_pairs(tiny_g, 32, seed=1, size=32, progress=False)
    torch.manual_seed(0)
    enc = et.new_encoder(tiny_g, n_stats=2000, in_size=32, width=4, max_channels=8)
    ckpt = tmp_path / "enc.ckpt"
    et.train_encoder(enc, pairs, steps=2, batch=8, lr=3e-3, seed=0, checkpoint=ckpt, save_every=1)
    before = ckpt.read_bytes()
    real = et.whitened_error
    monkeypatch.setattr(et, "whitened_error", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(TrainingError, match="non-finite loss at step 2"):
        et.train_encoder(enc, pairs, steps=4, batch=8, lr=3e-3, seed=0, checkpoint=ckpt, save_every=1)
    assert ckpt.read_bytes() == before
