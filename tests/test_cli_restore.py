"""`facerestore restore` on temporary folders, with test restorers registered for the duration of a test.

Independent checks: files decoded by PIL (sizes, modes, pixels outside the faces equal to the input),
sha256 of the inputs (never modified), the JSON's own face count against the files written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facerestore.cli import main
from facerestore.methods import MethodSpec, Restorer


class _Identity(Restorer):
    spec = MethodSpec("test-id", "test", "identity without fidelity", size=256)

    def __init__(self, weights=None) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))  # a parameter, so device/dtype handling is exercised

    def _restore(self, x, *, fidelity, refs):
        return (x * self.scale.to(x.dtype)).clamp(0, 1)


class _IdentityFidelity(_Identity):
    spec = MethodSpec("test-id-fid", "test", "identity with a fidelity knob", size=512, supports_fidelity=True)


class _IdentityHalf(_Identity):
    spec = MethodSpec("test-id-half", "test", "identity, half precision", size=128,
                      precisions=("fp32", "fp16", "bf16"))


@pytest.fixture(autouse=True)
def test_methods(monkeypatch):
    from facerestore import pipeline
    from facerestore.methods import registry

    reg = registry.REGISTRY
    for cls in (_Identity, _IdentityFidelity, _IdentityHalf):
        reg = reg.with_restorer(cls)
    monkeypatch.setattr(registry, "REGISTRY", reg)
    monkeypatch.setattr(pipeline, "_RESTORERS", {})


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture()
def folder(tmp_path, astronaut_path):
    src = tmp_path / "in put"
    src.mkdir()
    shutil.copy(astronaut_path, src / "my face.PNG")
    (src / "broken.jpg").write_bytes(b"definitely not a jpeg")
    yy, xx = np.mgrid[0:48, 0:64]
    grad = np.stack([xx * 4, yy * 5, np.full_like(xx, 90)], 2).astype(np.uint8)
    Image.fromarray(grad).save(src / "wall photo.jpg", quality=95)
    return src


def test_restore_folder(folder, tmp_path, capsys, astronaut):
    out = tmp_path / "out dir"
    before = {p.name: sha(p) for p in folder.iterdir()}
    code = main(["restore", "-i", str(folder), "-o", str(out), "--method", "test-id-fid", "--upscale", "1",
                 "--device", "cpu", "-q"])
    err = capsys.readouterr().err
    assert code == 1, err  # the corrupt file fails, the others complete
    assert "broken.jpg" in err and "no face found" in err
    assert {p.name: sha(p) for p in folder.iterdir()} == before
    assert sorted(p.name for p in out.iterdir()) == ["cmp", "cropped_faces", "restored_faces", "restored_imgs"]

    imgs = sorted(p.name for p in (out / "restored_imgs").iterdir())
    # ext auto: the input's format and spelling (.PNG stays .PNG, jpg stays jpg)
    assert imgs == ["my face.PNG", "my face.json", "wall photo.jpg", "wall photo.json"]
    restored = Image.open(out / "restored_imgs" / "my face.PNG")
    assert restored.size == (512, 512) and restored.mode == "RGB"
    wall = Image.open(out / "restored_imgs" / "wall photo.jpg")
    assert wall.format == "JPEG" and wall.size == (64, 48)

    rec = json.loads((out / "restored_imgs" / "my face.json").read_text())
    from facerestore import __version__

    assert rec["method"] == "test-id-fid" and rec["version"] == __version__ and rec["upscale"] == 1.0
    assert rec["input"] == str(folder / "my face.PNG") and rec["output_size"] == [512, 512]
    assert rec["num_faces"] == len(rec["faces"]) >= 1
    assert set(rec["timings"]) >= {"detect", "align", "restore", "paste", "total"}
    names = sorted(p.name for p in (out / "cropped_faces").iterdir())
    assert names == [f"my face_{k:02d}.png" for k in range(rec["num_faces"])]
    for k, face in enumerate(rec["faces"]):
        assert len(face["box"]) == 4 and isinstance(face["score"], float)
        assert face["identity_similarity"] == pytest.approx(1.0, abs=1e-6)  # identity restorer
        assert face["cropped_face"] == f"cropped_faces/my face_{k:02d}.png"
        assert face["restored_face"] == f"restored_faces/my face_{k:02d}.png"
        assert face["cmp"] == f"cmp/my face_{k:02d}.png"
        crop = Image.open(out / "cropped_faces" / f"my face_{k:02d}.png")
        rest = Image.open(out / "restored_faces" / f"my face_{k:02d}.png")
        cmp = np.asarray(Image.open(out / "cmp" / f"my face_{k:02d}.png"))
        assert crop.size == rest.size == (512, 512) and cmp.shape == (512, 1024, 3)
        assert np.array_equal(cmp[:, :512], np.asarray(crop)) and np.array_equal(cmp[:, 512:], np.asarray(rest))
    wall_rec = json.loads((out / "restored_imgs" / "wall photo.json").read_text())
    assert wall_rec["num_faces"] == 0 and wall_rec["faces"] == []

    # the photo outside the face boxes' neighbourhood is the input, pixel for pixel (identity restorer,
    # upscale 1, lossless PNG)
    got = np.asarray(restored).astype(np.int16)
    ref = np.floor(astronaut * 255 + 0.5).astype(np.int16)
    far = np.ones((512, 512), bool)
    for face in rec["faces"]:
        x0, y0, x1, y1 = face["box"]
        m = max(x1 - x0, y1 - y0) * 1.6  # the aligned crop spans about 3 box widths around the face
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        far[max(0, int(cy - m)):int(cy + m), max(0, int(cx - m)):int(cx + m)] = False
    assert far.sum() > 10000
    assert np.array_equal(got[far], ref[far])
    assert np.abs(got - ref).max() <= 5


def test_recursive_mirrors_the_folder_tree(tmp_path, astronaut_path, capsys):
    """-r reads sub-folders and mirrors them under every output folder (names may repeat across folders); without
    -r a sub-folder is named as not read; an output folder inside a folder read recursively is refused."""
    src = tmp_path / "album"
    (src / "1970s" / "summer").mkdir(parents=True)
    small = Image.open(astronaut_path).resize((192, 192))
    small.save(src / "face.png")
    small.save(src / "1970s" / "face.png")
    small.save(src / "1970s" / "summer" / "beach.jpg", quality=95)
    before = {p: sha(p) for p in src.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    args = ["restore", "-i", str(src), "-o", str(out), "--method", "test-id", "--upscale", "1", "-q"]
    assert main([*args, "-r"]) == 0, capsys.readouterr().err
    got = sorted(p.relative_to(out / "restored_imgs").as_posix() for p in (out / "restored_imgs").rglob("*.*"))
    assert got == ["1970s/face.json", "1970s/face.png", "1970s/summer/beach.jpg", "1970s/summer/beach.json",
                   "face.json", "face.png"]
    rec = json.loads((out / "restored_imgs" / "1970s" / "summer" / "beach.json").read_text())
    assert rec["num_faces"] >= 1 and rec["faces"][0]["cropped_face"] == "cropped_faces/1970s/summer/beach_00.png"
    for sub in ("cropped_faces", "restored_faces", "cmp"):
        assert (out / sub / "1970s" / "summer" / "beach_00.png").is_file() and (out / sub / "face_00.png").is_file()
    assert {p: sha(p) for p in src.rglob("*") if p.is_file()} == before
    capsys.readouterr()
    assert main([*args[:4], str(tmp_path / "flat"), *args[5:]]) == 0
    assert "1970s: sub-folder (not read)" in capsys.readouterr().err.replace(str(src) + "/", "")
    assert sorted(p.name for p in (tmp_path / "flat" / "restored_imgs").iterdir()) == ["face.json", "face.png"]
    assert main(["restore", "-i", str(src), "-o", str(src / "restored"), "--method", "test-id", "-r", "-q"]) == 2
    assert "choose -o outside it" in capsys.readouterr().err
    assert main([*args, "-r", "--sequence"]) == 2
    assert "drop -r/--recursive" in capsys.readouterr().err


def test_upscale_alpha_gray_and_ext(tmp_path, astronaut):
    src = tmp_path / "src"
    src.mkdir()
    u8 = np.floor(astronaut * 255 + 0.5).astype(np.uint8)
    rgba = np.concatenate([u8, np.full((512, 512, 1), 128, np.uint8)], 2)
    Image.fromarray(rgba[100:300, 100:340], "RGBA").save(src / "cut out.png")
    Image.fromarray(u8[:100, :150]).convert("L").save(src / "gray.TIF")
    out = tmp_path / "out"
    code = main(["restore", "-i", str(src), "-o", str(out), "--method", "test-id", "--upscale", "1.5", "-q",
                 "--no-color-match"])
    assert code == 0
    a = Image.open(out / "restored_imgs" / "cut out.png")
    assert a.mode == "RGBA" and a.size == (round(1.5 * 240), round(1.5 * 200))
    assert np.abs(np.asarray(a)[:, :, 3].astype(int) - 128).max() <= 1
    g = Image.open(out / "restored_imgs" / "gray.TIF")  # a TIFF stays a TIFF under --ext auto
    assert g.format == "TIFF" and g.mode == "L" and g.size == (225, 150)
    rec = json.loads((out / "restored_imgs" / "cut out.json").read_text())
    assert rec["has_alpha"] and rec["color_match"] is False and rec["output_size"] == [360, 300]

    out2 = tmp_path / "out2"
    assert main(["restore", "-i", str(src / "gray.TIF"), "-o", str(out2), "--method", "test-id", "--ext", "jpg",
                 "--upscale", "2", "-q"]) == 0
    assert Image.open(out2 / "restored_imgs" / "gray.jpg").size == (300, 200)


def test_a_scan_keeps_its_print_size_and_a_fine_jpeg_its_quality(tmp_path, astronaut):
    """A 300 dpi, quality-98, 4:4:4 scan restored at twice its size: 600 dpi (prints as large as the scan), still
    98 and 4:4:4 (not re-encoded coarser)."""
    from PIL.JpegImagePlugin import get_sampling

    from facerestore.io import jpeg_quality_estimate

    src = tmp_path / "scan.jpg"
    Image.fromarray(np.floor(astronaut * 255 + 0.5).astype(np.uint8)).save(src, quality=98, subsampling=0,
                                                                           dpi=(300, 300))
    out = tmp_path / "out"
    assert main(["restore", "-i", str(src), "-o", str(out), "--method", "test-id", "--upscale", "2", "-q"]) == 0
    with Image.open(out / "restored_imgs" / "scan.jpg") as im:
        assert im.size == (1024, 1024) and im.info["dpi"] == (600, 600)
        assert jpeg_quality_estimate(im.quantization[0]) == 98 and get_sampling(im) == 0


def test_a_16_bit_tiff_scan_comes_back_a_16_bit_tiff_with_its_profile_and_resolution(tmp_path, astronaut):
    """An archivist's scan (16-bit TIFF, colour profile, 600 dpi, scanner make and model) restored at twice its
    size: a 16-bit TIFF again (--ext auto), with the profile, 1200 dpi and the scanner fields; --ext tif turns a JPEG
    into a TIFF with the JPEG's camera fields."""
    import cv2
    from PIL import ImageCms

    from facerestore import io

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "scan.tif"), (astronaut[:, :, ::-1] * 65535).round().astype(np.uint16))
    exif = Image.Exif()
    exif[271], exif[272] = "Epson", "Perfection V600"
    # the tags a scanner writes (Pillow cannot write 16-bit RGB TIFFs: the tags go in by our own IFD writer)
    data = io._tiff_with_tags((src / "scan.tif").read_bytes(), {34675: icc, 282: 600.0, 283: 600.0, 296: 2,
                                                                 271: "Epson", 272: "Perfection V600"})
    (src / "scan.tif").write_bytes(data)
    Image.fromarray(np.floor(astronaut * 255 + 0.5).astype(np.uint8)).save(src / "print.jpg", exif=exif)
    out = tmp_path / "out"
    assert main(["restore", "-i", str(src), "-o", str(out), "--method", "test-id", "--upscale", "2", "-q"]) == 0
    restored = out / "restored_imgs" / "scan.tif"
    assert cv2.imread(str(restored), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    with Image.open(restored) as im:
        assert im.size == (1024, 1024) and im.info["icc_profile"] == icc and im.info["dpi"] == (1200, 1200)
        assert (im.getexif()[271], im.getexif()[272]) == ("Epson", "Perfection V600")
    assert (out / "restored_imgs" / "print.jpg").exists()
    out2 = tmp_path / "out2"
    assert main(["restore", "-i", str(src / "print.jpg"), "-o", str(out2), "--method", "test-id", "--ext", "tif",
                 "-q"]) == 0
    with Image.open(out2 / "restored_imgs" / "print.tif") as im:
        assert im.format == "TIFF" and im.getexif()[272] == "Perfection V600"


def test_resume_skips_exactly_what_an_earlier_run_completed(tmp_path, astronaut_path, capsys):
    """--resume continues an interrupted batch: inputs whose record says they were completed with the same options
    are left alone (their files not rewritten); a changed input, a missing output, a damaged record or other
    options make them restored again."""
    import os

    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        shutil.copy(astronaut_path, src / name)
    out = tmp_path / "out"
    imgs = out / "restored_imgs"
    # one face per photo whatever detector the cache offers (dlib's HOG also takes the astronaut's badge for one)
    argv = ["restore", "-i", str(src), "-o", str(out), "--method", "test-id", "--upscale", "1", "-q", "--resume",
            "--only-center-face"]

    def run(*extra: str) -> tuple[str, dict[str, int]]:
        capsys.readouterr()
        assert main([*argv, *extra]) == 0
        return capsys.readouterr().err, {p.name: p.stat().st_mtime_ns for p in sorted(imgs.iterdir())}

    err, first = run()
    assert "restored 3 faces in 3 of 3 images" in err and "--resume" not in err  # nothing done before
    assert json.loads((imgs / "a.json").read_text())["resume"]["faces"] == 1
    err, again = run()
    assert "restored 0 faces in 0 of 3 images" in err and "3 done by an earlier run (--resume)" in err
    assert again == first  # not one file rewritten

    os.utime(src / "a.png", ns=(1, 1))  # the input changed (as far as its stamp tells)
    (imgs / "b.png").unlink()  # an output went missing
    (imgs / "c.json").write_text("{")  # the record was cut short
    err, third = run()
    assert "restored 3 faces in 3 of 3 images" in err
    assert all(third[n] != first[n] for n in ("a.png", "a.json", "c.png", "c.json")) and "b.png" in third

    err, _ = run()
    assert "3 done by an earlier run" in err
    (imgs / "a.png").write_bytes((imgs / "a.png").read_bytes()[:100])  # an output cut short (a crash, a full disk)
    err, _ = run()
    assert "restored 1 face in 1 of 3 images" in err and "2 done by an earlier run" in err
    relative = [os.path.relpath(src) if a == str(src) else a for a in argv]  # -i given relative this time
    capsys.readouterr()
    assert main(relative) == 0
    assert "3 done by an earlier run" in capsys.readouterr().err
    err, _ = run("--blend", "0.5")  # other options: other outputs
    assert "restored 3 faces in 3 of 3 images" in err and "--resume" not in err

    capsys.readouterr()
    fresh = tmp_path / "seq"  # refused before the method loads and before any output folder is made
    assert main([*argv[:argv.index("-o") + 1], str(fresh), *argv[argv.index("-o") + 2:], "--sequence"]) == 2
    err = capsys.readouterr().err
    assert "--resume cannot continue a --sequence" in err and len(err.splitlines()) == 1 and not fresh.exists()


def test_resume_never_trusts_a_record_next_to_outputs_of_an_interrupted_run(tmp_path, astronaut_path, capsys,
                                                                           monkeypatch):
    """Run 1 completes; run 2, with other options, is interrupted after writing the photo but before its record;
    a --resume with run 1's options must restore it again: run 2 removed run 1's record before replacing the
    outputs (it used to leave run 2's photo beside run 1's record, and --resume skipped it)."""
    from facerestore import pipeline

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(astronaut_path, src / "a.png")
    out = tmp_path / "out"
    argv = ["restore", "-i", str(src), "-o", str(out), "--method", "test-id", "--upscale", "1", "-q", "--no-gate",
            "--only-center-face"]  # one face whatever detector the cache offers
    assert main([*argv, "--resume"]) == 0
    first = sha(out / "restored_imgs" / "a.png")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(pipeline, "write_photo_json", interrupted)
        assert main([*argv, "--blend", "0.2"]) == 130
    assert sha(out / "restored_imgs" / "a.png") != first and not (out / "restored_imgs" / "a.json").exists()
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 0
    assert "restored 1 face in 1 of 1 image" in capsys.readouterr().err
    assert sha(out / "restored_imgs" / "a.png") == first


def test_resume_digest_follows_what_auto_and_the_cache_resolve_to(monkeypatch):
    """The detector "auto" stands for, and the defaults that depend on cached weights, are part of what --resume
    compares: downloading RetinaFace makes earlier dlib-HOG outputs stale."""
    import argparse

    from facerestore import zoo
    from facerestore.cli.restore import _options_digest, add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["-i", "x", "-o", "y"])
    monkeypatch.setattr(zoo, "is_available", lambda name: False)
    without = _options_digest(args, [])
    monkeypatch.setattr(zoo, "is_available", lambda name: name == "retinaface-mnet025")
    assert _options_digest(args, []) != without
    assert _options_digest(args, []) == _options_digest(p.parse_args(["-i", "x", "-o", "y", "--resume", "-q"]), [])
    with_retina = _options_digest(args, [])
    # a metric's feature network (LPIPS's AlexNet, FID's Inception) changes no restoration: outputs stay current
    monkeypatch.setattr(zoo, "is_available", lambda name: name in ("retinaface-mnet025", "alexnet-imagenet",
                                                                    "pt-inception-fid", "vgg19-imagenet"))
    assert _options_digest(args, []) == with_retina


def test_aligned_mode(tmp_path, astronaut):
    from facerestore.faces.align import align_face
    from facerestore.faces.detect import detect_faces

    crop = align_face(astronaut, detect_faces(astronaut)[0].landmarks5, size=256).crop
    src = tmp_path / "crops"
    src.mkdir()
    Image.fromarray(np.floor(crop * 255 + 0.5).astype(np.uint8)).save(src / "face 1.jpg", quality=98)
    out = tmp_path / "out"
    assert main(["restore", "-i", str(src), "-o", str(out), "--method", "test-id", "--aligned", "-q",
                 "--upscale", "2"]) == 0
    img = Image.open(out / "restored_imgs" / "face 1.jpg")
    assert img.size == (512, 512)
    rec = json.loads((out / "restored_imgs" / "face 1.json").read_text())
    assert rec["aligned"] and rec["num_faces"] == 1 and rec["detector"] is None
    assert Image.open(out / "cmp" / "face 1_00.png").size == (512, 256)
    # without --upscale an aligned crop comes back at the method's size, never smaller than the crop
    for method, side in (("test-id", 256), ("test-id-fid", 512)):
        dst = tmp_path / f"out-{method}"
        assert main(["restore", "-i", str(src), "-o", str(dst), "--method", method, "--aligned", "-q"]) == 0
        assert Image.open(dst / "restored_imgs" / "face 1.jpg").size == (side, side)


def test_half_precision(tmp_path, astronaut):
    from facerestore import pipeline

    src = tmp_path / "c"
    src.mkdir()
    crop = np.floor(astronaut[40:296, 90:346] * 255 + 0.5).astype(np.uint8)
    Image.fromarray(crop).save(src / "a.png")
    out = tmp_path / "out"
    assert main(["restore", "-i", str(src), "-o", str(out), "--method", "test-id-half", "--aligned", "--half",
                 "--upscale", "1", "--device", "cpu", "-q"]) == 0
    (r,) = pipeline._RESTORERS.values()
    assert r.scale.dtype == torch.bfloat16  # CPU half precision is bfloat16
    rec = json.loads((out / "restored_imgs" / "a.json").read_text())
    assert rec["half"] is True and rec["device"] == "cpu"
    got = np.asarray(Image.open(out / "restored_imgs" / "a.png")).astype(int)
    # bf16 has 8 significant bits plus the 256 -> 128 -> 256 resize round trip: close, not equal
    assert np.abs(got - crop).mean() < 6


def test_refuses_output_over_input(folder, capsys):
    before = {p.name: sha(p) for p in folder.iterdir()}
    code = main(["restore", "-i", str(folder), "-o", str(folder), "--method", "test-id", "-q"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "input folder" in err[0]
    assert {p.name: sha(p) for p in folder.iterdir()} == before


def test_refuses_inputs_inside_output_subfolder(tmp_path, astronaut_path):
    out = tmp_path / "out"
    (out / "restored_imgs").mkdir(parents=True)
    shutil.copy(astronaut_path, out / "restored_imgs" / "a.png")
    before = sha(out / "restored_imgs" / "a.png")
    assert main(["restore", "-i", str(out / "restored_imgs"), "-o", str(out), "--method", "test-id", "-q"]) == 2
    assert sha(out / "restored_imgs" / "a.png") == before


def test_fidelity_errors(folder, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["restore", "-i", str(folder), "-o", str(out), "--method", "test-id-fid", "--fidelity", "1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fidelity must be in [0, 1]" in err[0]
    assert main(["restore", "-i", str(folder), "-o", str(out), "--method", "test-id", "--fidelity", "0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no fidelity control" in err[0]
    assert not out.exists()  # nothing was written before the option was rejected


def test_fidelity_range_is_refused_before_the_method_loads(folder, tmp_path, capsys, monkeypatch):
    import facerestore.pipeline as pipeline

    def loads(*args, **kwargs):  # loading a StyleGAN method prints notes (missing loss weights) before any check
        raise AssertionError("the method was loaded before --fidelity was checked")

    monkeypatch.setattr(pipeline, "get_restorer", loads)
    assert main(["restore", "-i", str(folder), "-o", str(tmp_path / "o"), "--method", "robust-inversion",
                 "--fidelity", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["facerestore restore: error: fidelity must be in [0, 1], got 2.0"]


def test_refs_for_a_method_that_ignores_them_is_an_error(folder, tmp_path, capsys):
    """--refs never does nothing silently: a method without reference support refuses it in one line, naming the
    way to find the methods that take references, before anything is written."""
    out = tmp_path / "o"
    assert main(["restore", "-i", str(folder), "-o", str(out), "--method", "test-id", "--refs", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'test-id' does not use reference photos" in err[0], err
    assert "--list-methods" in err[0]
    assert not out.exists()
    # a --refs folder that does not exist: the line names the option (not "input")
    assert main(["restore", "-i", str(folder), "-o", str(out), "--method", "robust-inversion", "--weights",
                 "builtin:stylegan2-face-64.safetensors", "--refs", str(tmp_path / "missing"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "error: --refs: " in err[-1] and str(tmp_path / "missing") in err[-1], err
    assert not out.exists()


def test_usage_errors_and_list(folder, tmp_path, capsys):
    assert main(["restore", "--list-methods"]) == 0
    listing = capsys.readouterr().out
    assert "test-id-fid" in listing and "fidelity" in listing
    # a method with weights in order of preference lists them as words, not as a Python tuple
    assert "first available of builtin:ispl-compact-256-gpu.safetensors, builtin:ispl-compact-256" in listing
    assert "('" not in listing
    for argv, msg in (
        (["-o", str(tmp_path / "o")], "are required"),
        (["-i", str(tmp_path / "missing"), "-o", str(tmp_path / "o")], "input not found"),
        (["-i", str(folder), "-o", str(tmp_path / "o"), "--method", "nope"], "unknown method 'nope'"),
        (["-i", str(folder), "-o", str(tmp_path / "o"), "--method", "test-id", "--upscale", "0"], "--upscale"),
        (["-i", str(folder), "-o", str(tmp_path / "o"), "--method", "test-id", "--half"], "half precision"),
    ):
        assert main(["restore", *argv]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], (argv, err)
    assert not (tmp_path / "o").exists()


def test_unknown_options_are_reported_by_the_sub_command(tmp_path, capsys):
    """An option the sub-command lacks: argparse's exit 2, the sub-command's usage and name in the error line, and
    the closest known option when the word is a near miss (none for an unrelated word); nothing is written."""
    out = tmp_path / "o"
    for extra, hint in ((["--fidelty", "0.5"], " (did you mean --fidelity?)"), (["--blending=0.3"], " (did you mean "
                        "--blend?)"), (["--thread", "1"], ""), (["--zzz"], "")):
        with pytest.raises(SystemExit) as exc:
            main(["restore", "-i", str(tmp_path), "-o", str(out), *extra])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[0].startswith("usage: facerestore restore ")
        assert err[-1] == f"facerestore restore: error: unrecognized arguments: {' '.join(extra)}{hint}", err
    with pytest.raises(SystemExit) as exc:  # no sub-command: the top level reports it
        main(["--zzz"])
    assert exc.value.code == 2 and capsys.readouterr().err.strip().endswith("facerestore: error: unrecognized "
                                                                          "arguments: --zzz")
    assert not out.exists()


def test_every_command_keeps_freed_memory_for_reuse(monkeypatch, capsys):
    """The CLI tunes the CPU allocator once per run, before the command (nn.devices.tune_cpu_allocator)."""
    from facerestore.nn import devices

    calls = []
    monkeypatch.setattr(devices, "tune_cpu_allocator", lambda: calls.append(1) or True)
    assert main(["restore", "--list-methods"]) == 0 and calls == [1]
    capsys.readouterr()


def test_steps_budget_reaches_the_slow_methods_only(tmp_path, astronaut_path, capsys):
    from facerestore.pipeline import get_restorer

    prior64 = "builtin:stylegan2-face-64.safetensors"
    r = get_restorer("robust-inversion", weights=prior64, steps=7)
    assert r.steps == (3, 2, 2)
    rls = get_restorer("rls-plus", weights=prior64, steps=8)
    assert (rls.cfg.steps, rls.cfg.plus_steps) == (8, 2)
    assert main(["restore", "-i", str(astronaut_path), "-o", str(tmp_path / "o"), "--method", "test-id",
                 "--steps", "10", "--device", "cpu"]) == 2
    assert "--steps applies to optimisation methods" in capsys.readouterr().err


def test_slow_methods_suggest_half_where_the_cpu_has_bf16(tmp_path, astronaut, monkeypatch, capsys):
    """robust-inversion in fp32 on a CPU with native bf16: one note says --half is about 2x faster; not with --half,
    not for a fast method, not on a CPU without bf16; --half on a CPU without native bf16: one note says it is
    slower there."""
    from facerestore.nn import devices

    src = tmp_path / "c"
    src.mkdir()
    Image.fromarray(np.floor(astronaut[40:296, 90:346] * 255 + 0.5).astype(np.uint8)).save(src / "a.png")
    base = ["restore", "-i", str(src), "--aligned", "--device", "cpu", "-q"]
    slow = ["--method", "robust-inversion", "--weights", "builtin:stylegan2-face-64.safetensors", "--steps", "3"]
    hint, warning = "--half runs its generator in bf16", "no native bf16 instructions"
    for native, extra, expected, warned in ((True, slow, 1, 0), (True, [*slow, "--half"], 0, 0), (False, slow, 0, 0),
                                            (True, ["--method", "test-id"], 0, 0),
                                            (False, [*slow, "--half"], 0, 1)):
        monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda native=native: native)
        out = tmp_path / f"o{len(list(tmp_path.iterdir()))}"
        assert main([*base, "-o", str(out), *extra]) == 0
        err = capsys.readouterr().err
        assert err.count(hint) == expected and err.count(warning) == warned, (native, extra, err)


def test_options_that_do_nothing_for_the_inputs_are_named(tmp_path, astronaut_path, capsys):
    """Options given away from their defaults in a mode where they cannot act get one note line per reason; the
    same values at their defaults, or in the mode where they act, get none."""
    import argparse

    from facerestore.cli.restore import add_arguments, idle_options

    p = argparse.ArgumentParser()
    add_arguments(p)

    def lines(argv: list[str], has_video: bool = False, has_photo: bool = True) -> list[str]:
        return idle_options(p.parse_args(argv), has_video, has_photo)

    assert lines(["--aligned", "--detector", "scrfd", "--mask", "square", "--min-score", "0.5"]) == [
        "--detector, --min-score, --mask: no effect with --aligned (aligned crops are neither detected nor pasted "
        "back)"]
    assert lines(["--aligned", "--detector", "auto", "--mask", "mesh"]) == []  # the defaults, spelt out
    assert lines(["--detector", "scrfd", "--mask", "square"]) == []  # photos: detected and pasted back
    assert lines(["--crf", "20", "--codec", "libx264"]) == ["--crf, --codec: for video inputs only, and there are "
                                                            "none"]
    assert lines(["--crf", "20"], has_video=True) == []
    assert lines(["--deinterlace", "on"]) == ["--deinterlace: for video inputs only, and there are none"]
    assert lines(["--deinterlace", "off"], has_video=True) == [] == lines(["--deinterlace", "auto"])
    assert lines(["--fps", "30"]) == ["--fps: only with --sequence"]
    assert lines(["--fps", "30", "--sequence"]) == []
    assert lines(["--force-refs"]) == ["--force-refs: only with --refs"]
    assert lines(["--force-refs", "--refs", "r"]) == []
    assert lines(["--ext", "png"], has_video=True, has_photo=False) == [
        "--ext: for still photos only, and there are none (videos and animations keep their format)"]
    assert lines(["--ext", "png"], has_video=True) == []
    # through the command: the note, and the photo restored all the same
    out = tmp_path / "o"
    assert main(["restore", "-i", str(astronaut_path), "-o", str(out), "--method", "test-id", "--crf", "20", "-q"]) == 0
    assert "note: --crf: for video inputs only, and there are none" in capsys.readouterr().err
    assert (out / "restored_imgs").is_dir()


def test_aligned_refuses_clips_up_front_and_needs_no_background_upsampler(tmp_path, capsys, monkeypatch):
    """--aligned with only videos/animations is refused in one line before anything loads; --aligned with
    --bg-upsampler esrgan says the option does nothing and does not ask for ESRGAN's weights."""
    from PIL import Image

    frames = [Image.new("RGB", (64, 64), (c, 90, 40)) for c in (30, 200)]
    gif = tmp_path / "clip.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    out = tmp_path / "o"
    assert main(["restore", "-i", str(gif), "-o", str(out), "--method", "test-id", "--aligned", "-q"]) == 2
    err = capsys.readouterr().err
    assert "not to videos or animations" in err and len(err.splitlines()) == 1 and not out.exists()
    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path / "empty-cache"))  # no ESRGAN weights anywhere
    face = tmp_path / "face.png"
    frames[0].save(face)
    assert main(["restore", "-i", str(face), "-o", str(out), "--method", "test-id", "--aligned",
                 "--bg-upsampler", "esrgan", "-q"]) == 0
    assert "--bg-upsampler: no effect with --aligned" in capsys.readouterr().err
    assert (out / "restored_faces").is_dir()


def test_reference_photos_are_never_in_an_output_folder(tmp_path, astronaut_path, capsys):
    """--refs photos are inputs too: references taken from an earlier run's restored_imgs are refused before
    anything is written, and are left as they were."""
    out = tmp_path / "out"
    (out / "restored_imgs").mkdir(parents=True)
    ref = out / "restored_imgs" / "me.png"
    shutil.copy(astronaut_path, ref)
    before = sha(ref)
    assert main(["restore", "-i", str(astronaut_path), "-o", str(out), "--method", "robust-inversion", "--weights",
                 "builtin:stylegan2-face-64.safetensors", "--refs", str(out / "restored_imgs"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "error: --refs: " in err[-1] and "where outputs go" in err[-1], err
    assert not any("Traceback" in e for e in err)
    assert sha(ref) == before and sorted(p.name for p in (out / "restored_imgs").iterdir()) == ["me.png"]
    # beside the output folders (not in them) a reference photo is safe: accepted
    beside = out / "me.png"
    shutil.copy(astronaut_path, beside)
    assert main(["restore", "-i", str(astronaut_path), "-o", str(out), "--method", "robust-inversion", "--weights",
                 "builtin:stylegan2-face-64.safetensors", "--refs", str(beside), "--steps", "3", "-q"]) == 0
    assert sha(beside) == sha(astronaut_path)


def test_face_files_of_an_earlier_run_with_more_faces_are_removed(tmp_path, astronaut_path):
    out = tmp_path / "out"
    stale = [out / sub / f"astronaut_{k:02d}.png" for sub in ("cropped_faces", "restored_faces", "cmp") for k in (1, 2)]
    for f in stale:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"an earlier run's face")
    keep = out / "cropped_faces" / "astronaut_04.png"  # not in the run of indices: not this photo's
    keep.write_bytes(b"someone else's")
    assert main(["restore", "-i", str(astronaut_path), "-o", str(out), "--method", "test-id", "--upscale", "1",
                 "--detector", "hog", "--only-center-face", "-q"]) == 0
    record = json.loads((out / "restored_imgs" / "astronaut.json").read_text())
    assert record["num_faces"] == 1
    assert (out / "cropped_faces" / "astronaut_00.png").is_file()
    assert not [f for f in stale if f.exists()] and keep.is_file()


def test_the_summary_names_faces_that_could_not_be_aligned_instead_of_no_face(tmp_path, astronaut_path, capsys,
                                                                             monkeypatch):
    """A face found at the photo's edge that cannot be aligned was summed up as "no face found"."""
    from dataclasses import replace

    import facerestore.pipeline as pipeline
    from facerestore.faces.detect import detect_faces
    from facerestore.io import read_rgb

    det = detect_faces(read_rgb(astronaut_path), "hog")[0]
    bad = replace(det, landmarks5=np.full((5, 2), 50.0))  # degenerate: cannot be aligned
    monkeypatch.setattr(pipeline, "detect_and_select", lambda *a, **k: [bad])
    code = main(["restore", "-i", str(astronaut_path), "-o", str(tmp_path / "o"), "--method", "test-id-fid",
                 "--upscale", "1", "--device", "cpu", "-q"])
    err = capsys.readouterr().err
    assert code == 0 and "no face found" not in err
    assert "1 face(s) found at the photo's edge could not be restored" in err
    assert "1 face at a photo's edge left as it was" in err
