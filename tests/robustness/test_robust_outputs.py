"""Outputs never replace inputs, devices, FIFOs or symlink targets; output folders never mix with inputs;
unwritable locations fail in one line before any work; output names are unique and reported."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat

import pytest
from PIL import Image

from facerestore import io as fio
from facerestore.cli.faces import _output_stems as faces_stems
from facerestore.errors import OutputError

from .robust_corpus import leftovers, snapshot, write_collisions

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def test_evaluate_reports_never_replace_an_input(clean_images, tmp_path, run):
    gt = tmp_path / "gt"
    shutil.copytree(clean_images, gt)
    before = snapshot(tmp_path)
    link = tmp_path / "link.png"
    os.symlink(clean_images / "img0.png", link)
    hard = tmp_path / "hard.png"
    os.link(gt / "img1.png", hard)
    for flag, target in (("--out", clean_images / "img0.png"), ("--csv", gt / "img1.png"),
                         ("--csv", link), ("--out", hard), ("--out", clean_images)):
        res = run("evaluate", "--pred", clean_images, "--gt", gt, "--metrics", "psnr", "--quiet", flag, target)
        assert res.code == 2 and flag in res.err, (flag, target, res.err)
        assert "image(s) scored" not in res.out  # refused before any scoring
    res = run("evaluate", "--pred", clean_images, "--gt", gt, "--quiet", "--out", tmp_path / "r", "--csv",
              tmp_path / "r")
    assert res.code == 2 and "same file" in res.err
    after = snapshot(tmp_path)
    after.pop(os.fsencode("link.png").hex())
    after.pop(os.fsencode("hard.png").hex())
    assert after == before and leftovers(tmp_path) == []


def test_writes_refuse_fifos_devices_and_symlinks(clean_images, tmp_path, run):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    target = tmp_path / "kept.csv"
    target.write_text("keep me\n")
    link = tmp_path / "link.csv"
    os.symlink(target, link)
    cases = [("--out", fifo, "FIFO"), ("--csv", link, "symbolic link")]
    if IS_ROOT:  # a character device like /dev/null, made here (never the real one)
        dev = tmp_path / "null"
        os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        cases.append(("--out", dev, "device"))
    for flag, path, kind in cases:
        res = run("evaluate", "--pred", clean_images, "--metrics", "niqe", "--quiet", flag, path)
        assert res.code == 2 and kind in res.err, res.err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert os.path.islink(link) and target.read_text() == "keep me\n"
    if IS_ROOT:
        assert stat.S_ISCHR(os.lstat(tmp_path / "null").st_mode)
    with pytest.raises(OutputError, match="FIFO"):
        fio.atomic_write_text(fifo, "x")
    assert leftovers(tmp_path) == []


def test_output_folders_never_mix_with_inputs(clean_images, tmp_path, run):
    before = snapshot(clean_images)
    (clean_images / "sub").mkdir()
    for args in (["faces", "-i", clean_images, "-o", clean_images, "-q"],
                 ["faces", "-i", clean_images, "-o", clean_images / "sub" / "crops", "-q", "-r"],
                 ["degrade", "-i", clean_images, "-o", clean_images, "--task", "sr4x"],
                 ["restore", "-i", clean_images, "-o", clean_images, "-q"],
                 ["faces", "-i", clean_images / "img0.png", "-o", clean_images, "-q"]):
        res = run(*args)
        assert res.code == 2, (args, res.err)
        assert "input folder" in res.err or "holds input files" in res.err
    (clean_images / "sub").rmdir()
    assert snapshot(clean_images) == before


def test_restore_into_a_subfolder_twice_never_reads_its_outputs(clean_images, tmp_path, run):
    out = clean_images / "out"
    for k in range(2):
        res = run("restore", "-i", clean_images, "-o", out, "-q", "--upscale", 1, "--device", "cpu")
        assert res.code == 0
        assert "0 faces in 0 of 3 images" in res.err  # the same 3 inputs, not its own outputs
        if k:
            assert f"ignored {out}: sub-folder (not read)" in res.err  # out/ itself is reported, not read
    assert sorted(p.name for p in (out / "restored_imgs").glob("*.png")) == ["img0.png", "img1.png", "img2.png"]


def test_unwritable_output_locations_fail_before_any_work(clean_images, tmp_path, run, monkeypatch):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    gen = tmp_path / "g.safetensors"
    from facerestore.nn.stylegan2_io import builtin_prior_path

    shutil.copy(builtin_prior_path(), gen)
    for args in (["degrade", "-i", clean_images, "-o", blocker / "o", "--task", "sr4x"],
                 ["faces", "-i", clean_images, "-o", blocker / "o", "-q"],
                 ["restore", "-i", clean_images, "-o", blocker / "o", "-q"],
                 ["evaluate", "--pred", clean_images, "--metrics", "niqe", "--out", blocker / "r.json"],
                 ["train-flow", "--generator", gen, "--out", blocker / "f.safetensors", "--steps", 1]):
        res = run(*args)
        assert res.code == 2, (args, res.err)
    assert not [ln for ln in res.out.splitlines() if ln.startswith("step")]  # train-flow never started
    monkeypatch.setenv("FACERESTORE_HOME", str(blocker))
    res = run("models", "download", "alexnet-imagenet")
    assert res.code == 2 and "a file" in res.err  # the cache cannot be created: nothing is downloaded


@pytest.mark.skipif(IS_ROOT, reason="permissions do not apply to root")
def test_read_only_output_folders(clean_images, tmp_path, run, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        for args in (["degrade", "-i", clean_images, "-o", ro / "o", "--task", "sr4x"],
                     ["faces", "-i", clean_images, "-o", ro, "-q"],
                     ["evaluate", "--pred", clean_images, "--metrics", "niqe", "--csv", ro / "s.csv"]):
            res = run(*args)
            assert res.code == 2 and "ro" in res.err, (args, res.err)
        monkeypatch.setenv("FACERESTORE_HOME", str(ro / "home"))
        assert run("models", "download", "alexnet-imagenet").code == 2
    finally:
        ro.chmod(0o755)


def test_train_flow_never_overwrites_its_generator(tmp_path, run):
    from facerestore.nn.stylegan2_io import builtin_prior_path

    gen = tmp_path / "g.safetensors"
    shutil.copy(builtin_prior_path(), gen)
    digest = hashlib.sha256(gen.read_bytes()).hexdigest()
    link = tmp_path / "alias.safetensors"
    os.symlink(gen, link)
    for out in (gen, link, tmp_path / "g.json"):
        res = run("train-flow", "--generator", gen, "--out", out, "--steps", 1)
        assert res.code == 2, (out, res.err)
    assert hashlib.sha256(gen.read_bytes()).hexdigest() == digest and os.path.islink(link)


def test_colliding_names_are_unique_and_reported(tmp_path, run):
    d = tmp_path / "in"
    write_collisions(d)
    res = run("restore", "-i", d, "-o", tmp_path / "r", "-q", "--upscale", 1, "--ext", "png", "--device", "cpu")
    assert res.code == 0
    imgs = sorted(p.name for p in (tmp_path / "r" / "restored_imgs").glob("*.png"))
    assert len(imgs) == 3 and len(set(imgs)) == 3  # three inputs, three outputs
    assert "0 of 3 images" in res.err and res.err.count("note: outputs of") >= 2
    for src in ("a.jpg", "a.png", "a_png.jpg"):
        assert sum(f'"{d / src}"' in p.read_text() for p in (tmp_path / "r" / "restored_imgs").glob("*.json")) == 1
    files = sorted(d.iterdir())
    stems = faces_stems(files, d)
    assert len({str(s).lower() for s in stems.values()}) == 3
    res = run("degrade", "-i", d, "-o", tmp_path / "g", "--task", "sr4x", "--size", 16)
    assert res.code == 0 and len(list((tmp_path / "g").glob("*.png"))) == 3


def test_long_stems_are_shortened_uniquely(tmp_path):
    from facerestore.cli.guards import unique_stems

    a, b = tmp_path / ("é" * 124 + "1.png"), tmp_path / ("é" * 124 + "2.png")  # 253 bytes each
    for p in (a, b):
        Image.new("RGB", (4, 4)).save(p)
    got = unique_stems([a, b], {a: a.with_suffix("").relative_to(tmp_path), b: b.with_suffix("").relative_to(tmp_path)},
                       reserve=len("_000.json"), report=False)
    names = [s.name for s in got.values()]
    assert names[0] != names[1]
    for n in names:
        assert len(os.fsencode(n)) + len("_000.json") <= 255
        n.encode("utf-8")  # still valid UTF-8: no character cut in half
