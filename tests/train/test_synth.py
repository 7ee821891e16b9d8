"""`facerestore synth`: seeded, subset-reproducible generator samples with their latents (built-in 64 px prior;
the same code runs MobileStyleGAN when it is cached)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facerestore import io
from facerestore.cli import main
from facerestore.errors import InputError
from facerestore.nn.stylegan2 import to_unit_range
from facerestore.nn.stylegan2_io import resolve_generator
from facerestore.train.synth import latents_of, sample_faces, sample_seed, write_synth

BUILTIN = "builtin:stylegan2-face-64.safetensors"


@pytest.fixture(scope="module")
def G():
    return resolve_generator(BUILTIN).eval()


def test_samples_are_pure_functions_of_seed_and_index(G):
    a, wa = sample_faces(G, [0, 1, 2, 3], seed=5)
    b, wb = sample_faces(G, [2], seed=5)  # a subset regenerates (to float rounding of batched kernels)
    torch.testing.assert_close(a[2:3], b, rtol=0, atol=1e-5)
    torch.testing.assert_close(wa[2:3], wb, rtol=0, atol=1e-5)
    c, _ = sample_faces(G, [2], seed=6)
    assert not torch.equal(b, c) and sample_seed(5, 2) != sample_seed(6, 2)
    assert a.shape == (4, 3, 64, 64) and float(a.min()) >= 0 and float(a.max()) <= 1
    # the latent renders the image (targets for supervised latent regression)
    with torch.no_grad():
        again = to_unit_range(G.synthesis(wa.unsqueeze(1).repeat(1, G.num_ws, 1), noise_mode="const")).clamp(0, 1)
    torch.testing.assert_close(again, a, rtol=0, atol=1e-5)


def test_truncation_pulls_towards_the_average(G):
    _, w1 = sample_faces(G, [0, 1, 2], seed=0, truncation=1.0)
    _, w0 = sample_faces(G, [0, 1, 2], seed=0, truncation=0.0)
    _, wh = sample_faces(G, [0, 1, 2], seed=0, truncation=0.5)
    avg = G.mapping.w_avg.float()
    torch.testing.assert_close(w0, avg.expand_as(w0))
    torch.testing.assert_close(wh - avg, 0.5 * (w1 - avg), rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError):
        sample_faces(G, [0], seed=0, truncation=float("nan"))
    with pytest.raises(InputError):
        sample_faces(G, [0], seed=0, size=128)  # larger than the generator


def test_write_synth_folder_and_cli(tmp_path, G):
    manifest = json.loads(write_synth(tmp_path / "a", 5, size=32, seed=3, weights=BUILTIN, batch=2).read_text())
    assert manifest["count"] == 5 and manifest["size"] == 32 and manifest["resolution"] == 64
    assert "FFHQ" in manifest["licence"] and [f["index"] for f in manifest["files"]] == list(range(5))
    files = sorted(p.name for p in (tmp_path / "a").glob("synth_*.png"))
    assert files == [f"synth_{i:06d}.png" for i in range(5)]
    w = latents_of(tmp_path / "a")
    assert w.shape == (5, G.w_dim)
    imgs, w_ref = sample_faces(G, [4], seed=3, size=32)
    np.testing.assert_allclose(w[4], w_ref[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(io.read_rgb(tmp_path / "a" / files[4]), imgs[0].permute(1, 2, 0).numpy(), atol=0.5 / 255)
    assert main(["synth", "-n", "2", "-o", str(tmp_path / "b"), "--size", "32", "--seed", "3", "--weights", BUILTIN,
                 "-q"]) == 0
    assert (tmp_path / "b" / "synth_000001.png").read_bytes() == (tmp_path / "a" / "synth_000001.png").read_bytes()
    for bad in (["-n", "0"], ["-n", "1", "--size", "8"], ["-n", "1", "--truncation", "nan"]):
        assert main(["synth", "-o", str(tmp_path / "c"), "--weights", BUILTIN, "-q", *bad]) == 2
    assert main(["synth", "-n", "1", "-o", str(tmp_path / "d"), "--weights", BUILTIN, "-q", "--truncation", "5"]) == 2
    assert not (tmp_path / "d").exists()  # refused before the generator loads or the folder is made


def test_training_config_synth_source_adds_generator_faces_to_training_only(tmp_path):
    """data.synth writes the faces once into the run folder, adds them to the training list (never validation),
    reuses them on resume, and is validated like every key."""
    from conftest import make_face_dataset
    from facerestore.train import config_from_dict, train
    from facerestore.train.data import split_files

    make_face_dataset(tmp_path / "hq", n=4, size=32)
    raw = {"name": "syn", "method": "unet-l1", "model": {"ch": 4, "depth": 2, "max_ch": 8},
           "data": {"roots": [str(tmp_path / "hq")], "size": 32, "task": "sr4x", "batch_size": 2, "val_count": 2,
                    "val_rule": "every-2", "synth": {"count": 3, "weights": BUILTIN, "seed": 1}},
           "steps": 2, "output_dir": str(tmp_path / "runs"), "device": "cpu", "val_every": 0, "ckpt_every": 0}
    res = train(config_from_dict(raw), progress=False)
    folder = tmp_path / "runs" / "syn" / "synth"
    assert res["finished"] and sorted(p.name for p in folder.glob("synth_*.png")) == [
        f"synth_{i:06d}.png" for i in range(3)]
    stamp = (folder / "synth_000000.png").stat().st_mtime_ns
    cfg = config_from_dict(raw)
    train_files, val_files = split_files(cfg.data, sorted(folder.glob("synth_*.png")))
    assert sum(f.parent == folder for f in train_files) == 3 and not any(f.parent == folder for f in val_files)
    train(config_from_dict({**raw, "steps": 3}), progress=False)  # resumed: the faces are reused, not rewritten
    assert (folder / "synth_000000.png").stat().st_mtime_ns == stamp
    for bad in ({"count": 0}, {"count": 2, "truncation": 5}, {"count": 2, "colour": 1}):
        with pytest.raises(InputError, match=r"data\.synth"):
            config_from_dict({**raw, "data": {**raw["data"], "synth": bad}})


def test_memory_store_renders_the_faces_write_synth_would_write(tmp_path):
    """store: memory gives the same uint8 faces as the PNG files of write_synth (same spec, same device), trains
    with no data.roots at all, writes no synth folder, and refuses a folder it would never write."""
    from facerestore.train import config_from_dict, train
    from facerestore.train.data import load_images
    from facerestore.train.synth import render_synth

    spec = {"count": 3, "weights": BUILTIN, "seed": 4, "truncation": 0.7}
    mem = render_synth({**spec, "store": "memory"}, 32, batch=2)
    write_synth(tmp_path / "files", 3, size=32, seed=4, truncation=0.7, weights=BUILTIN)
    files = load_images(sorted((tmp_path / "files").glob("synth_*.png")), 32)
    assert mem.dtype == torch.uint8 and mem.shape == (3, 3, 32, 32)
    assert torch.equal(mem, files)

    raw = {"name": "mem", "method": "unet-l1", "model": {"ch": 4, "depth": 2, "max_ch": 8},
           "data": {"size": 32, "task": "sr4x", "batch_size": 2, "val_count": 0, "val_rule": "none",
                    "synth": {**spec, "store": "memory"}},
           "steps": 2, "output_dir": str(tmp_path / "runs"), "device": "cpu", "val_every": 0, "ckpt_every": 0}
    res = train(config_from_dict(raw), progress=False)
    assert res["finished"] and not (tmp_path / "runs" / "mem" / "synth").exists()
    for bad in ({**spec, "store": "disk"}, {**spec, "store": "memory", "folder": str(tmp_path / "x")}):
        with pytest.raises(InputError, match=r"data\.synth\.(store|folder)"):
            config_from_dict({**raw, "data": {**raw["data"], "synth": bad}})


def test_identity_views_keep_the_sample_and_move_only_the_first_rows(G):
    """View 0 is the sample itself; views move the first `layers` W+ rows by `strength` toward another face's w
    and keep the rest; the images are those W+ rendered; strength 0 repeats the sample; subsets regenerate."""
    from facerestore.train.synth import identity_views, view_others, view_wplus

    imgs, ws = identity_views(G, [0, 1], seed=2, views=3, layers=2, strength=0.5, truncation=0.8)
    assert imgs.shape == (2, 4, 3, 64, 64) and ws.shape == (2, 4, G.num_ws, G.w_dim)
    alone, w = sample_faces(G, [0, 1], seed=2, truncation=0.8)
    torch.testing.assert_close(imgs[:, 0], alone, rtol=0, atol=1e-5)
    others = view_others(G, [0, 1], seed=2, views=3, truncation=0.8)
    for v in range(1, 4):
        torch.testing.assert_close(ws[:, v, 2:], w[:, None].expand(-1, G.num_ws - 2, -1))
        torch.testing.assert_close(ws[:, v, :2], (w + 0.5 * (others[:, v - 1] - w))[:, None].expand(-1, 2, -1))
    torch.testing.assert_close(view_wplus(w, others, G.num_ws, 2, 0.5), ws[:, 1:])
    with torch.no_grad():
        again = to_unit_range(G.synthesis(ws[1], noise_mode="const")).clamp(0, 1)
    torch.testing.assert_close(again, imgs[1], rtol=0, atol=1e-5)
    assert float((imgs[:, 1:] - imgs[:, :1]).abs().mean()) > 0.01  # the views differ from the sample
    same, _ = identity_views(G, [0], seed=2, views=2, strength=0.0, truncation=0.8)
    torch.testing.assert_close(same[:, 1:], same[:, :1].expand(-1, 2, -1, -1, -1), rtol=0, atol=1e-5)
    sub, _ = identity_views(G, [1], seed=2, views=3, layers=2, strength=0.5, truncation=0.8)
    torch.testing.assert_close(sub[0], imgs[1], rtol=0, atol=1e-5)
    for bad in ({"views": -1}, {"views": 1, "strength": 1.5}, {"views": 1, "layers": 0}):
        with pytest.raises(InputError):
            identity_views(G, [0], seed=2, **bad)


def test_write_synth_views_files_latents_and_cli(tmp_path, G):
    from facerestore.nn.safe_weights import load_safetensors
    from facerestore.train.synth import VIEW_LAYERS, VIEW_STRENGTH, identity_views, view_wplus

    m = json.loads(write_synth(tmp_path / "v", 3, size=32, seed=1, weights=BUILTIN, batch=2, views=2).read_text())
    assert m["views"]["count"] == 2 and [f["file"] for f in m["files"]] == [f"synth_{i:06d}.png" for i in range(3)]
    names = sorted(p.name for p in (tmp_path / "v").glob("*.png"))
    assert names == sorted(
        [f"synth_{i:06d}.png" for i in range(3)] + [f"view_{i:06d}_{v}.png" for i in range(3) for v in (1, 2)]
    )
    imgs, ws = identity_views(G, [2], seed=1, views=2, size=32)
    np.testing.assert_allclose(
        io.read_rgb(tmp_path / "v" / "view_000002_2.png"), imgs[0, 2].permute(1, 2, 0).numpy(), atol=0.5 / 255
    )
    # the stored latents rebuild the views' W+
    other = load_safetensors(tmp_path / "v" / "view_latents.safetensors", "views")["w_other"]
    w = torch.from_numpy(latents_of(tmp_path / "v"))
    torch.testing.assert_close(view_wplus(w, other, G.num_ws, VIEW_LAYERS, VIEW_STRENGTH)[2], ws[0, 1:])
    # without views nothing changes: same anchors, no view files
    write_synth(tmp_path / "p", 3, size=32, seed=1, weights=BUILTIN, batch=3)
    assert (tmp_path / "p" / "synth_000001.png").read_bytes() == (tmp_path / "v" / "synth_000001.png").read_bytes()
    assert not list((tmp_path / "p").glob("view_*")) and not (tmp_path / "p" / "view_latents.safetensors").exists()
    assert (
        main(
            [
                "synth",
                "-n",
                "1",
                "-o",
                str(tmp_path / "c"),
                "--size",
                "32",
                "--seed",
                "1",
                "--weights",
                BUILTIN,
                "--views",
                "2",
                "-q",
            ]
        )
        == 0
    )
    assert (tmp_path / "c" / "view_000000_2.png").read_bytes() == (tmp_path / "v" / "view_000000_2.png").read_bytes()
    assert main(["synth", "-n", "1", "-o", str(tmp_path / "d"), "--weights", BUILTIN, "--views", "-1", "-q"]) == 2


def test_a_rewrite_stopped_half_way_is_never_reused(tmp_path, monkeypatch):
    """write_synth overwrites images batch by batch: the old manifest goes first, so a rewrite stopped half-way
    (the folder now mixes two runs' faces) is written again rather than reused by prepare_synth."""
    from facerestore.train import synth

    folder = tmp_path / "s"
    write_synth(folder, 4, size=32, seed=0, weights=BUILTIN, batch=2)
    spec = {"folder": str(folder), "count": 4, "seed": 0, "truncation": 1.0, "weights": BUILTIN}
    assert synth.prepare_synth(spec, 32, tmp_path / "unused") == folder  # complete: reused as it is
    first = (folder / "synth_000000.png").read_bytes()

    real = synth._batches
    def stopped(*a, **k):  # the seed-1 rewrite is interrupted after its first batch
        gen = real(*a, **k)
        yield next(gen)
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "_batches", stopped)
    with pytest.raises(KeyboardInterrupt):
        write_synth(folder, 4, size=32, seed=1, weights=BUILTIN, batch=2)
    assert not (folder / "manifest.json").exists() and (folder / "synth_000000.png").read_bytes() != first
    monkeypatch.setattr(synth, "_batches", real)
    synth.prepare_synth(spec, 32, tmp_path / "unused")  # seed 0 again: written again, not reused
    assert (folder / "synth_000000.png").read_bytes() == first
    # a folder made by other weights, named without weights in the config: accepted as it is, never rewritten
    synth.prepare_synth({k: v for k, v in spec.items() if k != "weights"}, 32, tmp_path / "unused")
    assert (folder / "synth_000000.png").read_bytes() == first
    (folder / "manifest.json").write_text("{not json")
    synth.prepare_synth(spec, 32, tmp_path / "unused")  # an unreadable manifest: written again, no traceback
    assert json.loads((folder / "manifest.json").read_text())["seed"] == 0


def test_views_of_run_0_sample_0_are_not_other_samples_of_the_run(G):
    """sample_seed(0, 0) is 0, so sample 0's view seeds were sample_seed(0, v) = v: samples 1..V of the same run
    came back as "views" of person 0. Every other sample keeps its views' seeds."""
    from facerestore.train.synth import _view_base

    assert _view_base(0, 0) != 0 and _view_base(0, 3) == sample_seed(0, 3) and _view_base(7, 0) == sample_seed(7, 0)
    view_seeds = {sample_seed(_view_base(0, 0), v) for v in range(1, 9)}
    assert not view_seeds & {sample_seed(0, i) for i in range(100)}


def test_a_named_folder_of_other_faces_is_refused_not_rewritten(tmp_path):
    from facerestore.errors import InputError
    from facerestore.train import synth

    folder = tmp_path / "mine"
    write_synth(folder, 4, size=32, seed=0, truncation=0.8, weights=BUILTIN, batch=2)
    stamp = {f.name: f.stat().st_mtime_ns for f in folder.iterdir()}
    spec = {"folder": str(folder), "count": 4, "seed": 0, "truncation": 1.0, "weights": BUILTIN}
    with pytest.raises(InputError, match="does not hold 4 faces of seed 0, truncation 1"):
        synth.prepare_synth(spec, 32, tmp_path / "unused")
    assert {f.name: f.stat().st_mtime_ns for f in folder.iterdir()} == stamp
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"not ours")
    with pytest.raises(InputError, match=r"data\.synth\.folder"):
        synth.prepare_synth({**spec, "folder": str(other)}, 32, tmp_path / "unused")
    assert (other / "holiday.jpg").read_bytes() == b"not ours" and not (other / "manifest.json").exists()


def test_training_draws_do_not_depend_on_whether_the_synth_folder_existed(tmp_path):
    """Building the face generator draws from the global RNG: the first run (which writes the folder) and a fresh
    rerun (which reuses it) must train the same weights from the same config and seed."""
    from safetensors.torch import load_file as load_safetensors_file

    from conftest import make_face_dataset
    from facerestore.train import config_from_dict, train

    make_face_dataset(tmp_path / "hq", n=4, size=16)
    model = {"generator": {"z_dim": 16, "w_dim": 16, "mapping_layers": 2, "channel_base": 128, "channel_max": 16},
             "r1_interval": 2, "r1_gamma": 1.0, "style_mixing": 0.5}  # configs/tiny-stylegan2.yaml's
    raw = {"name": "syn", "method": "stylegan2", "model": model,
           "data": {"roots": [str(tmp_path / "hq")], "size": 16, "task": "none", "batch_size": 4, "val_count": 0,
                    "synth": {"count": 2, "weights": BUILTIN, "seed": 1}},
           "optim": {"lr": 2e-3, "lr_d": 2e-3, "betas": [0.0, 0.99]}, "steps": 2, "seed": 0,
           "output_dir": str(tmp_path / "runs"), "device": "cpu", "val_every": 0, "ckpt_every": 0, "val_metrics": []}
    first = train(config_from_dict(raw), progress=False)
    a = load_safetensors_file(first["weights"])
    again = train(config_from_dict(raw), resume=False, progress=False)  # the synth folder is there now
    b = load_safetensors_file(again["weights"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_rewrite_leaves_only_its_own_faces_and_never_takes_another_tools_folder(tmp_path):
    out = tmp_path / "faces"
    write_synth(out, 3, size=16, seed=2, weights=BUILTIN, views=2)
    assert len(list(out.glob("view_*.png"))) == 6
    manifest = write_synth(out, 2, size=16, seed=2, weights=BUILTIN)  # smaller, no views
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["synth_000000.png", "synth_000001.png"]  # what the manifest lists and nothing else
    data = json.loads(manifest.read_text())
    assert data["format"] == "facerestore-synth" and [f["file"] for f in data["files"]] == names
    other = tmp_path / "dataset"
    other.mkdir()
    (other / "manifest.json").write_text('{"images": 10}')
    with pytest.raises(InputError, match="did not write"):
        write_synth(other, 1, size=16, weights=BUILTIN)
    assert (other / "manifest.json").read_text() == '{"images": 10}'
