"""Algorithm 1 on a tiny configuration: disentanglement batches, alternating updates, exact resume, outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import deliver_signal
from facerestore.errors import InputError
from facerestore.methods.mfpsnet.genotype import genotype_search_record, load_genotype, save_genotype
from facerestore.methods.mfpsnet.search import (
    SINGLE_TASKS,
    _build,
    config_from_dict,
    disentangled_batch,
    load_search_config,
    run_search,
)
from facerestore.train.checkpoint import load_checkpoint

TINY_MODEL = {"nf": 8, "growth": 4, "blocks": 1, "sr_filters": 2, "layers": 3}


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    for i in range(9):  # 00000..00008: 00000 is held out (ends with 0), 8 remain: D_A 4, D_B 4
        base = rng.uniform(0, 255, (8, 8, 3)).astype(np.uint8)
        Image.fromarray(base).resize((64, 64), Image.BICUBIC).save(root / f"{i:05d}.png")
    return root


def _cfg(faces, out, **kw):
    raw = {"name": "tiny", "output_dir": str(out), "roots": [str(faces)], "size": 64, "batch_size": 2, "epochs": 1,
           "arch_start_epoch": 0, "model": TINY_MODEL, "perceptual": "none", "singles": "one", "ckpt_every": 1,
           "progress": False, "arch_lr": 0.05}
    raw.update(kw)
    return config_from_dict(raw)


def test_disentangled_batch_joins_full_and_single_degradations():
    hq = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    lq, target = disentangled_batch(hq, torch.Generator().manual_seed(1), singles="all")
    assert lq.shape == (2 * (1 + len(SINGLE_TASKS)), 3, 64, 64) and torch.equal(target, hq.repeat(5, 1, 1, 1))
    assert float(lq.min()) >= 0 and float(lq.max()) <= 1
    # the first block is eq. 10 replayed exactly from the same seed
    from facerestore import degrade

    full, _ = degrade.apply(hq, "mfpsnet-full", generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(lq[:2], full.clamp(0, 1))
    lq1, t1 = disentangled_batch(hq, torch.Generator().manual_seed(1), singles="one")
    assert lq1.shape[0] == 4 and t1.shape[0] == 4
    lq0, _ = disentangled_batch(hq, torch.Generator().manual_seed(1), disentangle=False)
    assert lq0.shape[0] == 2


def test_two_step_search_changes_alphas_and_resumes_exactly(faces, tmp_path):
    cfg = _cfg(faces, tmp_path / "a")
    init = _build(cfg)
    summary = run_search(cfg)
    assert summary["finished"] and summary["step"] == 2 and summary["images"] == 8
    final = load_checkpoint(cfg.run_dir / "checkpoints" / "last.pt")["net"]
    assert not torch.equal(final["sr.alphas"], init.sr.alphas.detach())  # the architecture step moved alpha
    assert not torch.equal(final["sr.betas"], init.sr.betas.detach())
    assert all(torch.isfinite(v).all() for v in final.values() if v.is_floating_point())
    g = load_genotype(cfg.run_dir / "genotype.json")
    assert len(g["sr"].path) == 3 and len(g["sr"].cell) == 6
    hist = json.loads((cfg.run_dir / "arch_history.json").read_text())
    assert len(hist) == 1 and np.allclose(np.sum(hist[0]["weights"]["sr"]["alphas"], -1), 1)
    png = Image.open(cfg.run_dir / "arch_sr.png")
    assert png.size == (8 * (36 + 1 + 3 * 12), 8)

    # stop after one step, resume: the same state as the run that never stopped
    cfg_b = _cfg(faces, tmp_path / "b")
    first = run_search(cfg_b, max_steps=1)
    assert first["step"] == 1 and not first["finished"]
    # the genotype of a stopped search says so (a benchmark must not take it for the searched one)
    stopped = genotype_search_record(cfg_b.run_dir / "genotype.json")
    assert stopped["finished"] is False and stopped["step"] == 1 and stopped["total_steps"] == 2
    second = run_search(cfg_b)
    assert second["step"] == 2 and second["finished"]
    done = genotype_search_record(cfg_b.run_dir / "genotype.json")
    assert done["finished"] is True and done["train_hours"] >= stopped["train_hours"]
    assert second["seconds"] > first["seconds"]  # every chunk's time, added up
    hand = save_genotype(g, tmp_path / "hand.json")
    assert genotype_search_record(hand) is None  # a genotype written without a search has no record
    resumed = load_checkpoint(cfg_b.run_dir / "checkpoints" / "last.pt")["net"]
    assert resumed.keys() == final.keys()
    for k in final:
        assert torch.equal(resumed[k], final[k]), k
    assert load_genotype(cfg_b.run_dir / "genotype.json") == g
    assert second["architecture_steps"] == 2


def test_a_search_that_cannot_update_its_architecture_or_changed_its_model_is_refused(faces, tmp_path):
    with pytest.raises(InputError, match="never be updated"):
        run_search(_cfg(faces, tmp_path / "a", epochs=2, arch_start_epoch=2))
    cfg = _cfg(faces, tmp_path / "b")
    run_search(cfg, max_steps=1)
    with pytest.raises(InputError, match=r"other settings .*seed"):
        run_search(_cfg(faces, tmp_path / "b", seed=5))
    settings = (tmp_path / "b" / "tiny" / "search.json").read_text()
    with pytest.raises(InputError, match=r"other settings \(epochs, max_images\)"):  # any setting, not only five
        run_search(_cfg(faces, tmp_path / "b", epochs=3, max_images=5))
    assert (tmp_path / "b" / "tiny" / "search.json").read_text() == settings  # the run's own record is kept
    run_search(_cfg(faces, tmp_path / "b", ckpt_every=7, rule="code"), max_steps=2)  # how it runs may change
    # --fresh sets the old search aside at once: an interrupted fresh start is never resumed as the old one
    run_search(_cfg(faces, tmp_path / "b", epochs=3), resume=False, max_steps=1)
    assert (tmp_path / "b" / "tiny" / "checkpoints" / "last-before-fresh.pt").is_file()


def test_search_refuses_settings_that_would_run_uphill_or_crash_later():
    for bad, match in (({"grad_clip": -5}, "grad_clip"), ({"grad_clip": 0}, "grad_clip"),
                       ({"w_momentum": -0.1}, "w_momentum"), ({"w_weight_decay": -1}, "w_weight_decay"),
                       ({"time_limit_s": -1}, "time_limit_s"), ({"w_lr_min": 1.0, "w_lr": 0.1}, "w_lr_min")):
        with pytest.raises(InputError, match=match):
            config_from_dict(bad)


def test_a_diverging_search_stops_in_one_line(faces, tmp_path, monkeypatch):
    from facerestore.errors import TrainingError
    from facerestore.methods.mfpsnet import losses

    real = losses.RestorationLoss.forward
    monkeypatch.setattr(losses.RestorationLoss, "forward", lambda self, *a, **k: real(self, *a, **k) * float("nan"))
    with pytest.raises(TrainingError, match="non-finite weight loss at step 0"):
        run_search(_cfg(faces, tmp_path / "nan"), max_steps=2)
    assert not (tmp_path / "nan" / "tiny" / "genotype.json").exists()


@pytest.mark.parametrize("priors", ["extractor", "zeros"])
def test_mfpsnet_search_step_runs_on_the_configured_priors(faces, tmp_path, monkeypatch, priors):
    from facerestore.methods.mfpsnet import priors as priors_module

    if priors == "extractor":
        pytest.importorskip("dlib", reason="the priors need dlib's 68-point landmarks")
    calls = []
    real = priors_module.PriorExtractor.__call__

    def spy(self, images):  # the real extractor, recording what it is given
        out = real(self, images)
        calls.append((tuple(images.shape), images.requires_grad, sorted(out)))
        return out

    monkeypatch.setattr(priors_module.PriorExtractor, "__call__", spy)
    model = dict(TINY_MODEL, prior_filters=2, fusion_filters=2, prior_layers=2, fusion_layers=2, layers=2)
    cfg = _cfg(faces, tmp_path, network="mfpsnet", model=model, disentangle=False, batch_size=1, epochs=1,
               priors=priors)
    summary = run_search(cfg, max_steps=1)
    assert summary["step"] == 1
    g = load_genotype(cfg.run_dir / "genotype.json")
    assert g.has_priors and len(g["fusion"].path) == 2
    # one weight step and one architecture step (arch_start_epoch 0), each on its first iteration's output
    expected = [((1, 3, 64, 64), False, ["heat", "parse"])] * 2 if priors == "extractor" else []
    assert calls == expected


def test_search_config_errors_are_one_line(tmp_path):
    with pytest.raises(InputError, match="unknown keys"):
        config_from_dict({"epoch": 3})
    with pytest.raises(InputError, match="multiple of 64"):
        config_from_dict({"size": 100})
    with pytest.raises(InputError, match="wrong type"):
        config_from_dict({"epochs": "ten"})
    for bad in ("fast", "nan", "inf"):  # YAML hands nan/inf over as strings, which float() would take
        with pytest.raises(InputError, match="wrong type"):
            config_from_dict({"arch_lr": bad})
    p = tmp_path / "c.yaml"
    p.write_text("network: frsnet\nsize: 64\narch_lr: 1e-4\n")  # YAML 1.1 reads 1e-4 as a string
    assert load_search_config(p).size == 64 and load_search_config(p).arch_lr == 1e-4
    assert load_search_config(p, {"arch_lr": "2e-3"}).arch_lr == 2e-3  # as --set arch_lr=2e-3 passes it


def test_cli_search_runs_and_reports(faces, tmp_path, capsys):
    import yaml

    from facerestore.cli import main

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({"name": "cli", "output_dir": str(tmp_path / "runs"), "roots": [str(faces)],
                                   "size": 64, "batch_size": 4, "epochs": 1, "arch_start_epoch": 0,
                                   "model": TINY_MODEL, "perceptual": "none", "disentangle": False}))
    assert main(["search", str(cfg), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "step 1/1 finished" in out and (tmp_path / "runs" / "cli" / "genotype.json").is_file()
    assert main(["search", str(cfg), "--set", "epochs=ten"]) == 2  # one-line error
    assert "wrong type" in capsys.readouterr().err
    assert main(["search", str(cfg), "--set", "epochs=[1"]) == 2  # not YAML: one line, no traceback
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a YAML value" in err[0], err


@pytest.mark.parametrize("path", sorted((__import__("pathlib").Path(__file__).resolve().parents[3] / "configs"
                                         / "search").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_search_configs_parse(path):
    from facerestore.methods.mfpsnet.search import load_search_config

    cfg = load_search_config(path)
    assert cfg.epochs > 0 and cfg.size > 0 and cfg.batch_size > 0


def test_a_signal_ends_the_search_step_saves_and_resumes(faces, tmp_path, monkeypatch):
    import signal

    import facerestore.methods.mfpsnet.search as search_mod
    from facerestore.errors import Interrupted

    cfg = _cfg(faces, tmp_path / "sig")
    real = search_mod.disentangled_batch
    calls = {"n": 0}

    def batch_then_signal(*a, **k):  # SIGINT while the first step draws its architecture batch
        calls["n"] += 1
        if calls["n"] == 1:
            deliver_signal(signal.SIGINT)
        return real(*a, **k)

    monkeypatch.setattr(search_mod, "disentangled_batch", batch_then_signal)
    with pytest.raises(Interrupted):
        run_search(cfg)
    assert load_checkpoint(cfg.run_dir / "checkpoints" / "last.pt")["step"] == 1  # the step ended, then it saved
    assert genotype_search_record(cfg.run_dir / "genotype.json")["finished"] is False
    assert run_search(cfg)["finished"]
