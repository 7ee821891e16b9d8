"""`facerestore faces`: crops + landmark JSON from a folder, on temporary folders.

Checks against independent facts: the FFHQ template (crop landmarks must land on it), the JSON's own
affine (source points map to crop points), file hashes (inputs untouched), PIL-decoded sizes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facerestore.cli import main

FFHQ_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                     [201.26117, 371.41043], [313.08905, 371.15118]])


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture()
def folder(tmp_path, astronaut_path):
    src = tmp_path / "in put"
    src.mkdir()
    shutil.copy(astronaut_path, src / "my face.PNG")
    (src / "broken.jpg").write_bytes(b"not an image")
    Image.new("RGB", (96, 80), (120, 120, 120)).save(src / "empty wall.jpg")
    return src


def test_folder_to_dataset(folder, tmp_path, capsys):
    out = tmp_path / "out"
    before = {p.name: sha(p) for p in folder.iterdir()}
    code = main(["faces", "-i", str(folder), "-o", str(out), "--size", "256", "--detector", "hog", "--upsample", "0",
                 "-q"])
    err = capsys.readouterr().err
    assert code == 1  # the unreadable file is reported and counted as failed
    assert "broken.jpg" in err and "no face found" in err and "empty wall.jpg" in err
    assert {p.name: sha(p) for p in folder.iterdir()} == before  # inputs untouched
    assert sorted(p.name for p in out.iterdir()) == ["my face_00.json", "my face_00.png"]
    crop = Image.open(out / "my face_00.png")
    assert crop.size == (256, 256) and crop.mode == "RGB"
    rec = json.loads((out / "my face_00.json").read_text())
    assert rec["crop"] == "my face_00.png" and rec["size"] == 256 and rec["detector"] == "dlib-hog"
    assert rec["source_size"] == [512, 512] and len(rec["box"]) == 4 and rec["score"] > 0
    a = np.array(rec["affine"])
    for key, n in (("landmarks5", 5), ("landmarks68", 68)):
        src, dst = np.array(rec[key]["source"]), np.array(rec[key]["crop"])
        assert src.shape == dst.shape == (n, 2)
        assert np.allclose(src @ a[:, :2].T + a[:, 2], dst, atol=1e-6)
    # the 5 points sit on the FFHQ template, up to the residual of a similarity fit (the astronaut's wide
    # smile puts her mouth corners ~6 px of 256 off the template's)
    err = np.linalg.norm(np.array(rec["landmarks5"]["crop"]) - FFHQ_512 / 2, axis=1)
    assert err[:3].max() < 4 and err.max() < 9
    # inverse maps crop back to source
    inv = np.array(rec["inverse"])
    assert np.allclose(np.array(rec["landmarks5"]["crop"]) @ inv[:, :2].T + inv[:, 2],
                       np.array(rec["landmarks5"]["source"]), atol=1e-6)


def test_selection_and_single_file(tmp_path, astronaut_path):
    out = tmp_path / "o"
    # at upsample 1 dlib also fires on the suit's mission patch: --all keeps both, --largest the face
    hog = ["--detector", "hog", "-q", "--size", "128"]
    assert main(["faces", "-i", str(astronaut_path), "-o", str(out / "all"), *hog]) == 0
    assert len(list((out / "all").glob("*.png"))) == 2
    assert main(["faces", "-i", str(astronaut_path), "-o", str(out / "big"), "--largest", *hog]) == 0
    assert [p.name for p in (out / "big").glob("*.png")] == ["astronaut_00.png"]
    rec = json.loads((out / "big" / "astronaut_00.json").read_text())
    assert rec["box"][1] < 200  # the face, not the patch (y ~ 335)
    assert main(["faces", "-i", str(astronaut_path), "-o", str(out / "min"), "-q", "--min-size", "200"]) == 0
    assert not (out / "min").exists() or not list((out / "min").iterdir())


def test_default_detector_is_the_one_restore_uses(tmp_path, astronaut_path):
    """`faces` detects with `auto` like `restore` (it used dlib's HOG, which crops the suit's round mission patch
    as a second face): retinaface when its weights are cached, which finds the face only."""
    from facerestore.faces.detect import default_detector

    out = tmp_path / "o"
    assert main(["faces", "-i", str(astronaut_path), "-o", str(out), "-q", "--size", "128"]) == 0
    expected = default_detector()[0]
    assert json.loads((out / "astronaut_00.json").read_text())["detector"] == expected
    if expected == "retinaface":
        assert [p.name for p in out.glob("*.png")] == ["astronaut_00.png"]


def test_dlib_only_options_are_not_silently_ignored(tmp_path, astronaut_path, capsys):
    """--upsample and --max-side tune dlib's detectors; with another detector they get a note, not silence."""
    out = tmp_path / "o"
    assert main(["faces", "-i", str(astronaut_path), "-o", str(out), "-q", "--size", "64", "--detector",
                 "retinaface", "--upsample", "2", "--max-side", "400"]) in (0, 2)  # 2: RetinaFace not cached
    err = capsys.readouterr().err
    assert "note: --upsample and --max-side act on the dlib detectors only" in err
    assert main(["faces", "-i", str(astronaut_path), "-o", str(out), "-q", "--size", "64", "--detector", "hog",
                 "--upsample", "0"]) == 0
    assert "note:" not in capsys.readouterr().err
    assert main(["faces", "-i", str(astronaut_path), "-o", str(out), "-q", "--detector", "hog", "--max-side",
                 "20"]) == 2
    assert "--max-side must be at least 32 pixels" in capsys.readouterr().err


def test_never_overwrites_inputs_in_same_folder(tmp_path, astronaut_path, capsys):
    d = tmp_path / "same"
    d.mkdir()
    shutil.copy(astronaut_path, d / "a.png")
    shutil.copy(astronaut_path, d / "a_00.png")  # would be the crop name of a.png
    before = {p.name: sha(p) for p in d.iterdir()}
    code = main(["faces", "-i", str(d), "-o", str(d), "-q", "--largest", "--size", "64", "--upsample", "0"])
    assert code == 2  # the input folder as output is refused before any work (a re-run would read the crops)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is the input folder" in err[0]
    assert {p.name: sha(p) for p in d.iterdir()} == before
    # a single input file: its own folder is refused as the output folder too
    out = main(["faces", "-i", str(d / "a.png"), "-o", str(d), "-q", "--largest", "--size", "64", "--upsample", "0"])
    assert out == 2 and "holds input files" in capsys.readouterr().err
    assert {p.name: sha(p) for p in d.iterdir() if p.name in before} == before


def test_same_stem_different_extension(tmp_path, astronaut_path):
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(astronaut_path, d / "x.png")
    Image.open(astronaut_path).convert("RGB").save(d / "x.jpg", quality=95)
    out = tmp_path / "out"
    assert main(["faces", "-i", str(d), "-o", str(out), "-q", "--largest", "--size", "64", "--upsample", "0"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["x_jpg_00.png", "x_png_00.png"]


def test_bad_options(tmp_path, astronaut_path, capsys):
    assert main(["faces", "-i", str(tmp_path / "missing"), "-o", str(tmp_path / "o")]) == 2
    assert main(["faces", "-i", str(astronaut_path), "-o", str(tmp_path / "o"), "--size", "4"]) == 2
    assert main(["faces", "-i", str(astronaut_path), "-o", str(tmp_path / "o"), "--ext", ".gif"]) == 2
    with pytest.raises(SystemExit):
        main(["faces", "-i", str(astronaut_path), "-o", str(tmp_path / "o"), "--largest", "--center"])
    capsys.readouterr()


def test_recursive_mirrors_folders_and_keeps_16_bit(tmp_path, astronaut):
    import cv2

    src = tmp_path / "in"
    (src / "sub dir").mkdir(parents=True)
    bgr16 = (astronaut[:, :, ::-1] * 65535 + 0.5).astype(np.uint16)
    cv2.imwrite(str(src / "sub dir" / "deep.png"), bgr16)
    out = tmp_path / "out"
    args = ["faces", "-i", str(src), "-o", str(out), "-q", "--largest", "--size", "64", "--upsample", "0"]
    assert main(args) == 2  # no images directly in the folder without -r
    assert main([*args, "-r"]) == 0
    crop = cv2.imread(str(out / "sub dir" / "deep_00.png"), cv2.IMREAD_UNCHANGED)
    assert crop.dtype == np.uint16 and crop.shape == (64, 64, 3)
    assert json.loads((out / "sub dir" / "deep_00.json").read_text())["source"].endswith("deep.png")
