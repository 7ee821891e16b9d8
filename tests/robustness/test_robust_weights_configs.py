"""Malformed and hostile weight files, training configs and options: one line each, bounded time and memory."""

from __future__ import annotations

import hashlib

import pytest

from facerestore import zoo
from facerestore.errors import InputError

from .robust_corpus import BAD_CONFIGS, hostile_ispl_files, hostile_stylegan2_files


def one_line_errors(load, files: dict) -> dict[str, str]:
    """{case: message}: every hostile file fails ``load`` with a one-line InputError (huge settings are refused
    before anything is built: the messages name the bound; speed is not timed here)."""
    out = {}
    for case, path in files.items():
        with pytest.raises(InputError) as err:
            load(path)
        msg = str(err.value)
        assert "\n" not in msg and msg, case
        out[case] = msg
    return out


def test_hostile_ispl_weights_fail_in_one_line_quickly(tmp_path):
    from facerestore.methods.ispl.restorer import load_ispl

    for case, msg in one_line_errors(load_ispl, hostile_ispl_files(tmp_path)).items():
        if case == "huge_ngf":
            assert "ngf" in msg and "1..512" in msg
        if case in ("truncated", "header_only", "empty", "huge_header"):
            assert "safetensors" in msg, msg


def test_hostile_ispl_weights_through_restore(tmp_path, clean_images, run):
    files = hostile_ispl_files(tmp_path / "w")
    for case in ("truncated", "huge_ngf", "bad_json", "wrong_types"):
        res = run("restore", "-i", clean_images, "-o", tmp_path / "o", "--method", "ispl", "--weights", files[case],
                  "-q", "--device", "cpu")
        assert res.code == 2, (case, res.err)
    assert not (tmp_path / "o" / "restored_imgs").exists() or not any((tmp_path / "o" / "restored_imgs").iterdir())


def test_hostile_stylegan2_weights_fail_in_one_line_quickly(tmp_path):
    from facerestore.nn.stylegan2_io import load_stylegan2

    for case, msg in one_line_errors(load_stylegan2, hostile_stylegan2_files(tmp_path)).items():
        if case == "huge_w_dim":
            assert "w_dim" in msg and "1..4096" in msg
        if case == "pt_refused":
            assert "weights-only" in msg and len(msg) < 600


def test_train_flow_validates_its_arguments_and_generator(tmp_path, run):
    from facerestore.nn.stylegan2_io import builtin_prior_path

    gen = builtin_prior_path()
    for opt, value in (("--lr", "nan"), ("--lr", "0"), ("--blocks", "0"), ("--stats", "0"), ("--steps", "-1"),
                       ("--steps", "0"), ("--batch", "1"), ("--hidden", "0"),
                       ("--hidden", "16384"), ("--stats", "100000000")):  # flows load_flow would refuse; 200 GB
        res = run("train-flow", "--generator", gen, "--out", tmp_path / "f.safetensors", opt, value)
        assert res.code == 2 and opt in res.err, (opt, res.err)
    for case, path in hostile_stylegan2_files(tmp_path / "w").items():
        res = run("train-flow", "--generator", path, "--out", tmp_path / "f.safetensors", "--steps", 1)
        assert res.code == 2, (case, res.err)
    assert not (tmp_path / "f.safetensors").exists()


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_malformed_training_configs_fail_in_one_line(case, tmp_path, run, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default output_dir "runs" is relative: a config accepted by mistake writes here
    cfg = tmp_path / f"{case}.yaml"
    cfg.write_bytes(BAD_CONFIGS[case])
    res = run("train", cfg, "--quiet")
    assert res.code == 2, res.err
    assert not (tmp_path / "runs").exists()


def test_training_config_overrides_are_checked(tmp_path, run, monkeypatch):
    monkeypatch.chdir(tmp_path)  # never ./runs in the repository
    cfg = tmp_path / "ok.yaml"
    cfg.write_text("name: t\nsteps: 1\n")
    for override in ("optim.lr=nan", "data.batch_size=0", "steps=abc", "data=3", "steps=[1"):
        res = run("train", cfg, "--set", override, "--quiet")
        assert res.code == 2, (override, res.err)


def test_zoo_entries_without_sha256_are_unverified_never_ok(tmp_path, monkeypatch, run):
    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path / "home"))
    entry = zoo.get_entry("stylegan2-ffhq-1024")
    assert entry.sha256 == ""  # NVIDIA publishes no digest for ffhq.pkl
    p = zoo.cached_path(entry.name)
    p.parent.mkdir(parents=True)
    p.write_bytes(b"random bytes, or a crafted pickle")
    res = run("models", "verify", entry.name)
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    assert res.code == 0
    assert res.out.strip() == f"{entry.name}: unverified (no published sha256; {p} has sha256 {digest})"
    assert zoo.verify_status(entry.name) == "unverified"
    for e in zoo.list_entries():
        # every other entry carries a published hash (package entries: the archive's and every member's)
        assert e.sha256 or e.package is not None or e.name == "stylegan2-ffhq-1024", e.name


def test_hostile_flow_files_fail_in_one_line_before_building(tmp_path):
    """A flow whose metadata claims a huge architecture, or whose tensors do not fit it, is refused from the
    header alone (nothing large allocated); a valid small flow still loads."""
    import json

    import pytest
    import torch
    from safetensors.torch import save_file

    from facerestore.errors import InputError
    from facerestore.nn.flow import MAF, load_flow, save_flow

    good = tmp_path / "good.safetensors"
    save_flow(MAF(dim=4, num_blocks=1, hidden=8, generator=torch.Generator().manual_seed(0)), good)
    assert isinstance(load_flow(good), MAF)
    cases = {
        "huge": {"format": "facerestore-maf", "config": json.dumps({"dim": 4, "num_blocks": 1, "hidden": 200000})},
        "badjson": {"format": "facerestore-maf", "config": "{not json"},
        "wrongtype": {"format": "facerestore-maf", "config": json.dumps({"dim": "512"})},
        "mismatch": {"format": "facerestore-maf", "config": json.dumps({"dim": 4, "num_blocks": 1, "hidden": 16})},
        "other": {"format": "something-else"},
    }
    tensors = {"x": torch.zeros(1)}
    from facerestore.nn.safe_weights import load_safetensors

    small = load_safetensors(good)
    for name, meta in cases.items():
        p = tmp_path / f"{name}.safetensors"
        save_file(small if name == "mismatch" else tensors, str(p), metadata=meta)
        with pytest.raises(InputError) as info:
            load_flow(p)
        assert "\n" not in str(info.value), name
    (tmp_path / "trunc.safetensors").write_bytes(good.read_bytes()[:40])
    with pytest.raises(InputError):
        load_flow(tmp_path / "trunc.safetensors")
