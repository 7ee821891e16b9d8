"""Every command over the hostile image corpus: no traceback, inputs unchanged, one line per bad file, the
rest of the batch completed, ignored entries reported, nothing partial left behind."""

from __future__ import annotations

import csv
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from facerestore import io as fio
from facerestore.cli.common import run_batch
from facerestore.errors import InputError

from .robust_corpus import LONG_STEM, NON_UTF8_NAME, leftovers, snapshot


def _skipped(res, name: str) -> bool:
    shown = fio.display_path(name)
    return any(ln.startswith("skipped ") and shown in ln for ln in res.err_lines)


def _check_batch(res, folder, expect, ignored) -> None:
    assert res.code == 1  # some files failed, the others completed
    for name, outcome in expect.items():
        assert _skipped(res, name) == (outcome == "fail"), (name, res.err)
    for name, reason in ignored.items():
        assert any(ln.startswith("ignored ") and name in ln and reason in ln for ln in res.err_lines), (name, res.err)
    n_fail = sum(v == "fail" for v in expect.values())
    assert f"{n_fail} of {len(expect)} inputs failed" in res.err


@pytest.mark.parametrize("command", ["degrade", "faces", "evaluate", "restore"])
def test_every_command_over_the_hostile_corpus(command, hostile, tmp_path, run):
    folder, expect, ignored = hostile
    before = snapshot(folder)
    out = tmp_path / "out"
    args = {
        "degrade": ["degrade", "-i", folder, "-o", out, "--task", "sr4x", "--size", 32],
        "faces": ["faces", "-i", folder, "-o", out, "-q", "--upsample", 0, "--size", 32],
        "evaluate": ["evaluate", "--pred", folder, "--metrics", "psnr", "--gt", folder, "--quiet",
                     "--out", out / "r.json", "--csv", out / "r.csv"],
        "restore": ["restore", "-i", folder, "-o", out, "-q", "--upscale", 1, "--device", "cpu"],
    }[command]
    res = run(*args)
    assert snapshot(folder) == before  # no input modified, added or removed
    assert leftovers(tmp_path) == []
    if command == "evaluate":
        # a bad file is skipped (reported once per side), the good ones are scored; reports written
        assert res.code == 1 and "huge_header" in res.err and "float_nan" in res.err
        report = json.loads((out / "r.json").read_text())
        n_ok = sum(v == "ok" for v in expect.values())
        assert report["n_scored"] == n_ok
        assert all(r["scores"]["psnr"] is None or float(r["scores"]["psnr"]) > 90 for r in report["per_image"])  # self
        rows = list(csv.reader(io.StringIO((out / "r.csv").read_bytes().decode("utf-8", "surrogateescape"))))
        assert len(rows) == n_ok + 1
        assert any(r[0] == NON_UTF8_NAME[:-4] for r in rows)  # the non-UTF-8 name is kept, byte for byte
        return
    _check_batch(res, folder, expect, ignored)
    if command == "degrade":
        names = {p.name for p in out.glob("*.png")}
        assert names == {os.path.splitext(n)[0] + ".png" for n, v in expect.items() if v == "ok"}
        for p in out.glob("*.png"):
            assert Image.open(p).size == (32, 32)  # --size 32 (sr4x gives back the input size)
        man = json.loads((out / "manifest.json").read_text())
        assert len(man["images"]) == sum(v == "ok" for v in expect.values())
    if command == "restore":
        imgs = out / "restored_imgs"
        assert (imgs / "UPPER.JPG").is_file()  # the extension keeps its case
        assert (imgs / f"{LONG_STEM}.png").is_file() and (imgs / f"{LONG_STEM}.json").is_file()
        assert (imgs / NON_UTF8_NAME).is_file()
        rotated = Image.open(imgs / "exif_rotated.jpg")
        assert rotated.size == (16, 24)  # pixels upright (orientation 6 applied) ...
        exif = rotated.getexif()
        assert exif.get(0x0112) == 1 and exif.get(0x010F) == "RobustCam"  # ... EXIF kept, orientation normalised
        n_ok = sum(v == "ok" for v in expect.values())
        # random-noise images have no faces: none of them is counted as restored
        assert f"restored 0 faces in 0 of {len(expect)} images" in res.err
        assert f"{n_ok} without faces" in res.err


def test_single_bad_input_file_exits_2(hostile, tmp_path, run):
    folder, _, _ = hostile
    for name in ("empty.png", "huge_header.png", "float_nan.tif", "text.png"):
        for args in (["degrade", "-i", folder / name, "-o", tmp_path / "d", "--task", "sr4x"],
                     ["faces", "-i", folder / name, "-o", tmp_path / "f", "-q"],
                     ["restore", "-i", folder / name, "-o", tmp_path / "r", "-q", "--device", "cpu"]):
            res = run(*args)
            assert res.code == 2, (args, res.err)
            assert any(ln.startswith("skipped ") for ln in res.err_lines)
    for args in (["degrade", "-i", folder / "pipe.png", "-o", tmp_path / "d", "--task", "sr4x"],
                 ["degrade", "-i", folder / "dangling.png", "-o", tmp_path / "d", "--task", "sr4x"]):
        res = run(*args)  # a FIFO is never opened (no hang); a broken link is named as such
        assert res.code == 2 and ("FIFO" in res.err or "broken symbolic link" in res.err)


def test_pixel_limit_is_read_from_the_header_and_configurable(hostile, monkeypatch):
    folder, _, _ = hostile
    data = (folder / "huge_header.png").read_bytes()
    assert len(data) < 2000  # 20000 x 20000 claimed; nothing that large is ever allocated
    with pytest.raises(InputError, match=r"over the limit of 89\.5 megapixels"):
        fio.read_image(folder / "huge_header.png")
    assert fio.read_image(folder / "good.png").size == (24, 20)
    monkeypatch.setenv("FACERESTORE_MAX_PIXELS", "400")
    with pytest.raises(InputError, match=r"24x20 .* over the limit"):
        fio.read_image(folder / "good.png")
    monkeypatch.setenv("FACERESTORE_MAX_PIXELS", "0")  # no limit
    assert fio.max_pixels() is None and fio.read_image(folder / "good.png").size == (24, 20)


def test_float_images_with_nan_or_inf_are_refused_in_one_line(hostile):
    folder, _, _ = hostile
    for name in ("float_nan.tif", "float_inf.tiff"):
        with pytest.raises(InputError) as err:
            fio.read_image(folder / name)
        assert "NaN or infinite" in str(err.value) and "\n" not in str(err.value)


def test_odd_modes_decode_to_rgb(hostile):
    folder, _, _ = hostile
    for name, depth, gray, alpha in (("mode_1bit.png", 8, True, False), ("palette.png", 8, False, False),
                                     ("cmyk.jpg", 8, False, False), ("la.png", 8, None, True),
                                     ("rgb16.png", 16, False, False)):
        img = fio.read_image(folder / name)
        assert img.rgb.shape == (20, 24, 3) and img.rgb.dtype == np.float32, name
        assert (img.bit_depth, img.alpha is not None) == (depth, alpha), name
        if gray is not None:  # (OpenCV decodes gray + alpha as BGRA: the channels are equal, not flagged)
            assert img.is_gray == gray, name
        if gray is not False:
            assert np.array_equal(img.rgb[..., 0], img.rgb[..., 2]), name
        assert np.isfinite(img.rgb).all() and 0 <= img.rgb.min() and img.rgb.max() <= 1


def test_out_of_memory_fails_one_file_not_the_batch(capsys):
    def fn(i):
        if i == 1:
            raise MemoryError
        if i == 2:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
        return i

    report = run_batch([0, 1, 2, 3], fn, progress=False)
    assert report.done == [0, 3] and [i for i, _ in report.failed] == [1, 2]
    assert all("out of memory" in msg for _, msg in report.failed)
    capsys.readouterr()


def test_an_unexpected_error_fails_one_file_not_the_batch(capsys):
    """A bug met on one file (a library's own exception type, a TypeError) is one line and the batch goes on."""
    def fn(i):
        if i == 1:
            raise RuntimeError("a real bug\nwith a second line")
        if i == 2:
            raise TypeError
        return i

    report = run_batch([0, 1, 2, 3], fn, progress=False)
    assert report.done == [0, 3]
    assert report.failed == [(1, "internal error (RuntimeError: a real bug); please report it"),
                              (2, "internal error (TypeError); please report it")]
    err = capsys.readouterr().err
    assert "skipped 1: internal error (RuntimeError: a real bug)" in err and "Traceback" not in err


def test_error_lines_are_not_glued_onto_the_progress_bar(capsys):
    def fn(i):
        if i == 1:
            raise InputError("bad file")
        return i

    run_batch(list(range(4)), fn, desc="bar", progress=True)
    err = capsys.readouterr().err
    segments = [s for s in err.replace("\r", "\n").split("\n") if "skipped" in s]
    assert segments == ["skipped 1: bad file"]


def test_upscale_and_size_beyond_the_pixel_limit_fail_in_one_line(hostile, tmp_path, run):
    folder, _, _ = hostile
    res = run("restore", "-i", folder / "good.png", "-o", tmp_path / "r", "-q", "--upscale", 1000, "--device", "cpu")
    assert res.code == 2 and "over the limit" in res.err  # the output would be 24000 x 20000
    res = run("degrade", "-i", folder / "good.png", "-o", tmp_path / "d", "--task", "sr4x", "--size", 100000)
    assert res.code == 2 and "--size 100000 is 100000x100000" in res.err
    assert not (tmp_path / "d").exists()


def test_restore_rejects_nan_options(clean_images, tmp_path, run):
    for opt in (["--min-score", "nan"], ["--upscale", "nan"], ["--fidelity", "inf"]):
        res = run("restore", "-i", clean_images, "-o", tmp_path / "r", "-q", *opt)
        assert res.code == 2 and opt[0] in res.err
    assert not (tmp_path / "r").exists()


def test_long_file_names_near_the_limit(tmp_path):
    name = "x" * 251 + ".png"  # 255 bytes: the temporary name must not be longer than the limit
    p = fio.write_image(tmp_path / name, np.zeros((4, 4, 3), np.float32))
    assert p.is_file() and Image.open(p).size == (4, 4)
    assert [q.name for q in tmp_path.iterdir()] == [name]
    with pytest.raises(InputError, match="longer than 255 bytes"):
        fio.atomic_write_bytes(tmp_path / ("y" * 256), b"x")


def test_non_utf8_names_in_degrade_and_evaluate(tmp_path, run):
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(np.full((20, 24, 3), 100, np.uint8)).save(d / NON_UTF8_NAME)
    res = run("degrade", "-i", d, "-o", tmp_path / "o", "--task", "sr4x", "--size", 32)
    assert res.code == 0 and (tmp_path / "o" / NON_UTF8_NAME).is_file()
    man = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert man["images"][0]["input"] == NON_UTF8_NAME
    res = run("evaluate", "--pred", d, "--gt", d, "--metrics", "psnr", "--csv", tmp_path / "s.csv", "--quiet")
    assert res.code == 0
    raw = (tmp_path / "s.csv").read_bytes()
    assert os.fsencode(NON_UTF8_NAME)[:-4] in raw  # the original bytes of the name
