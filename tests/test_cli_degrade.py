"""`facerestore degrade`: folders with odd names and a corrupt file, determinism, manifest replay."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facerestore import degrade
from facerestore.cli import main
from facerestore.cli.degrade import image_seed
from facerestore.io import read_rgb, to_tensor


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture()
def inputs(tmp_path, astronaut) -> Path:
    """A folder with a PNG, a name with spaces and an upper-case extension, a JPEG and a corrupt file."""
    d = tmp_path / "in"
    d.mkdir()
    img = Image.fromarray((astronaut * 255 + 0.5).astype(np.uint8)).resize((96, 80))
    img.save(d / "face.png")
    img.transpose(Image.FLIP_LEFT_RIGHT).save(d / "my face 2.PNG")
    img.rotate(90, expand=True).save(d / "third.jpg", quality=92)
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return d


def _run(args) -> int:
    return main(["degrade", *map(str, args)])


def test_list(capsys):
    assert _run(["--list"]) == 0
    out = capsys.readouterr().out
    for t in degrade.list_tasks():
        assert t.name in out
    assert "002 robust" in out and "XS/S/M/L/XL" in out


def test_folder_run_skips_corrupt_and_writes_manifest(inputs, tmp_path, capsys):
    before = {p.name: _sha(p) for p in inputs.iterdir()}
    out = tmp_path / "out"
    code = _run(["-i", inputs, "-o", out, "--task", "realworld-gfpgan", "--size", 64, "--seed", 3])
    assert code == 1  # one input failed, the rest completed
    assert "broken.png" in capsys.readouterr().err
    assert {p.name: _sha(p) for p in inputs.iterdir()} == before  # inputs untouched
    assert sorted(p.name for p in out.iterdir()) == ["face.png", "manifest.json", "my face 2.png", "third.png"]
    for name in ("face.png", "my face 2.png", "third.png"):
        assert Image.open(out / name).size == (64, 64)
    man = json.loads((out / "manifest.json").read_text())
    assert man["task"] == "realworld-gfpgan" and man["seed"] == 3 and man["size"] == 64
    assert man["facerestore_version"] and [f["input"] for f in man["failed"]] == ["broken.png"]
    by_input = {e["input"]: e for e in man["images"]}
    assert set(by_input) == {"face.png", "my face 2.PNG", "third.jpg"}
    for name, e in by_input.items():
        assert e["input_sha256"] == before[name]
        assert e["seed"] == image_seed(3, name)
        assert e["params"]["task"] == "realworld-gfpgan" and e["params"]["input_size"] == [64, 64]


def test_manifest_replays_outputs(inputs, tmp_path):
    out = tmp_path / "out"
    _run(["-i", inputs / "my face 2.PNG", "-o", out, "--task", "full-code", "--size", 48])
    entry = json.loads((out / "manifest.json").read_text())["images"][0]
    x = degrade.resize(to_tensor(read_rgb(inputs / "my face 2.PNG")), size=(48, 48), method="bicubic")
    y, _ = degrade.apply(x, "full-code", params=[entry["params"]])
    written = torch.from_numpy(read_rgb(out / "my face 2.png")).permute(2, 0, 1)
    assert torch.allclose(written, y[0], atol=0.5 / 255 + 1e-6)
    # and the per-image seed reproduces the record
    _, again = degrade.apply(x, "full-code", generator=entry["seed"])
    assert again[0] == entry["params"]


def test_byte_identical_and_independent_of_other_files(inputs, tmp_path):
    args = ["--task", "robust-denoise+inpaint", "--size", 48, "--seed", 1]
    _run(["-i", inputs, "-o", tmp_path / "a", *args])
    _run(["-i", inputs, "-o", tmp_path / "b", *args])
    for p in (tmp_path / "a").iterdir():
        assert p.read_bytes() == (tmp_path / "b" / p.name).read_bytes(), p.name
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(inputs / "face.png", alone / "face.png")
    _run(["-i", alone, "-o", tmp_path / "c", *args])
    assert (tmp_path / "c" / "face.png").read_bytes() == (tmp_path / "a" / "face.png").read_bytes()
    _run(["-i", inputs, "-o", tmp_path / "d", "--task", "robust-denoise+inpaint", "--size", 48, "--seed", 2])
    assert (tmp_path / "d" / "face.png").read_bytes() != (tmp_path / "a" / "face.png").read_bytes()


def test_levels_and_native_size(inputs, tmp_path):
    out = tmp_path / "lr"
    assert _run(["-i", inputs / "face.png", "-o", out, "--task", "robust-upsample", "--level", "xs",
                 "--size", 0]) == 0
    assert Image.open(out / "face.png").size == (48, 40)  # 96 x 80 input, factor 2
    assert json.loads((out / "manifest.json").read_text())["level"] == "XS"


def test_refuses_bad_usage(inputs, tmp_path, capsys):
    assert _run(["-i", inputs, "-o", inputs, "--task", "sr4x"]) == 2  # the input folder
    assert _run(["-i", inputs / "face.png", "-o", inputs, "--task", "sr4x"]) == 2
    assert _run(["-i", inputs, "-o", tmp_path / "x", "--task", "nope"]) == 2
    assert _run(["-i", inputs, "-o", tmp_path / "x", "--task", "sr4x", "--level", "M"]) == 2
    assert _run(["-i", inputs, "-o", tmp_path / "x"]) == 2  # no task
    assert _run(["-i", tmp_path / "missing", "-o", tmp_path / "x", "--task", "sr4x"]) == 2
    err = capsys.readouterr().err
    assert "input folder" in err and "unknown degradation task" in err
    assert not (tmp_path / "x").exists()
    assert sorted(p.name for p in inputs.iterdir()) == ["broken.png", "face.png", "my face 2.PNG", "third.jpg"]


def test_stem_collision_gets_unique_reported_names(tmp_path, astronaut, capsys):
    d = tmp_path / "in"
    d.mkdir()
    img = Image.fromarray((astronaut * 255 + 0.5).astype(np.uint8)).resize((32, 32))
    img.save(d / "a.jpg")
    img.save(d / "a.png")
    img.save(d / "a_png.jpg")  # the name a.png's output would take
    assert _run(["-i", d, "-o", tmp_path / "o", "--task", "mosaic16x", "--size", 32]) == 0
    err = capsys.readouterr().err
    assert "are named a_jpg" in err and "are named a_png_2" in err
    images = json.loads((tmp_path / "o" / "manifest.json").read_text())["images"]
    assert {e["input"]: e["output"] for e in images} == {"a.jpg": "a_jpg.png", "a.png": "a_png_2.png",
                                                         "a_png.jpg": "a_png.png"}
    assert sorted(p.name for p in (tmp_path / "o").glob("*.png")) == ["a_jpg.png", "a_png.png", "a_png_2.png"]
