"""Generators of the hostile corpus (issue 12): bad and unusual inputs, written into a test's tmp_path.

Everything is made here from a few bytes (nothing is downloaded, nothing large is allocated): the huge PNG
claims 20000 x 20000 pixels in a valid IHDR but its IDAT holds a few compressed zero rows.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

NON_UTF8_NAME = os.fsdecode(b"caf\xe9 \xff.png")  # Latin-1 bytes: not UTF-8
LONG_STEM = "L" * 246  # "L...L.png" is 250 bytes: outputs such as STEM_00.json must still fit in 255


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(root: Path) -> dict[str, str]:
    """sha256 (or link target / kind) of everything under ``root``, to prove nothing was modified."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = os.fsencode(p.relative_to(root)).hex()
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_file():
                out[rel] = sha256(p)
            elif not p.is_dir():
                out[rel] = "special"
    return out


def leftovers(root: Path) -> list[str]:
    """Temporary or partial files anywhere under ``root``."""
    bad = []
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            if name.endswith((".tmp", ".part")) or name.startswith(".facerestore-probe"):
                bad.append(os.path.join(dirpath, name))
    return bad


def rgb(h: int = 20, w: int = 24, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_header_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid PNG header claiming ``width`` x ``height`` RGB pixels; a few hundred bytes on disk."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * (1 + 3 * width) * 4, 9)  # 4 zero rows; the rest is missing
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")


def jpeg_with_exif(orientation: int = 6) -> bytes:
    img = Image.fromarray(rgb(16, 24, seed=3))
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "RobustCam"  # Make
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def write_images(d: Path) -> dict[str, str]:
    """Good, bad and odd image files in folder ``d``; returns {file name: expected outcome}.

    Outcomes: "ok" (decodes), "fail" (one-line error, the batch goes on).
    """
    import cv2

    d.mkdir(parents=True, exist_ok=True)
    expect: dict[str, str] = {}

    def put(name: str, data: bytes, outcome: str) -> None:
        (d / name).write_bytes(data)
        expect[name] = outcome

    good = png_bytes(Image.fromarray(rgb()))
    put("good.png", good, "ok")
    put("exif_rotated.jpg", jpeg_with_exif(6), "ok")
    put("UPPER.JPG", jpeg_with_exif(1), "ok")
    put("bad_bytes.png", np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8).tobytes(), "fail")
    put("truncated.png", good[: len(good) // 2], "fail")
    put("truncated.jpg", jpeg_with_exif(1)[:120], "fail")
    put("empty.png", b"", "fail")
    put("text.png", b"this is a text file, not a picture\n", "fail")
    put("mode_1bit.png", png_bytes(Image.fromarray(rgb()[:, :, 0] > 128)), "ok")
    put("palette.png", png_bytes(Image.fromarray(rgb()).convert("P")), "ok")
    buf = io.BytesIO()
    Image.fromarray(rgb()).convert("CMYK").save(buf, format="JPEG")
    put("cmyk.jpg", buf.getvalue(), "ok")
    put("la.png", png_bytes(Image.fromarray(rgb()).convert("LA")), "ok")
    _, enc16 = cv2.imencode(".png", (rgb().astype(np.uint16) * 257))
    put("rgb16.png", enc16.tobytes(), "ok")
    f = (rgb(12, 12) / 255.0).astype(np.float32)
    f[3, 4, 1] = np.nan
    _, enc = cv2.imencode(".tif", f)
    put("float_nan.tif", enc.tobytes(), "fail")
    g = (rgb(12, 12)[:, :, 0] / 255.0).astype(np.float32)
    g[0, 0] = np.inf
    _, enc = cv2.imencode(".tif", g)
    put("float_inf.tiff", enc.tobytes(), "fail")
    put("huge_header.png", huge_header_png(), "fail")
    buf = io.BytesIO()
    Image.fromarray(rgb()).save(buf, format="GIF")
    put("still.gif", buf.getvalue(), "ok")  # a one-frame GIF is a photo (several frames: a clip, for restore)
    put("truncated.gif", buf.getvalue()[:40], "fail")
    put(LONG_STEM + ".png", good, "ok")
    put(NON_UTF8_NAME, good, "ok")
    return expect


def write_collisions(d: Path) -> None:
    """a.jpg, a.png and a_png.jpg: three inputs whose obvious output names collide."""
    d.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(rgb(seed=5))
    img.save(d / "a.jpg", quality=95)
    img.save(d / "a.png")
    img.save(d / "a_png.jpg", quality=95)


def write_unreadable_entries(d: Path) -> dict[str, str]:
    """Folder entries that are not images and must be reported as ignored: {name: reason fragment}."""
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    (d / "scan.jxl").write_bytes(b"\xff\x0a JPEG XL is not read")
    out["scan.jxl"] = "unsupported format .jxl"
    (d / "sub").mkdir()
    (d / "sub" / "inside.png").write_bytes(png_bytes(Image.fromarray(rgb())))
    out["sub"] = "sub-folder"
    os.symlink(d / "does-not-exist.png", d / "dangling.png")
    out["dangling.png"] = "broken symbolic link"
    if hasattr(os, "mkfifo"):
        os.mkfifo(d / "pipe.png")
        out["pipe.png"] = "not a regular file"
    return out


# ---------------------------------------------------------------------------------------------------------
# weights


def _safetensors_bytes(tensors: dict, metadata: dict | None = None) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata)


def hostile_ispl_files(d: Path) -> dict[str, Path]:
    """Malformed / hostile ISPL weight files (each a .safetensors with or without its .json); {case: path}."""
    import torch

    from facerestore.methods.ispl.restorer import builtin_weights

    d.mkdir(parents=True, exist_ok=True)
    real = builtin_weights()
    real_bytes = real.read_bytes()
    real_json = json.loads(real.with_suffix(".json").read_text())
    cases: dict[str, tuple[bytes, str | None]] = {
        "truncated": (real_bytes[: len(real_bytes) // 3], json.dumps(real_json)),
        "header_only": (real_bytes[: 8 + struct.unpack("<Q", real_bytes[:8])[0]], json.dumps(real_json)),
        "empty": (b"", json.dumps(real_json)),
        "huge_header": (struct.pack("<Q", 1 << 40) + b"{}", json.dumps(real_json)),
        "wrong_types": (real_bytes, json.dumps({**real_json, "generator": {**real_json["generator"], "ngf": "x"}})),
        "bad_json": (real_bytes, "{not json"),
        "list_json": (real_bytes, "[1, 2, 3]"),
        "generator_list": (real_bytes, json.dumps({**real_json, "generator": [1, 2]})),
        "huge_ngf": (real_bytes, json.dumps({**real_json, "generator": {**real_json["generator"], "ngf": 2e5}})),
        "shape_mismatch": (_safetensors_bytes({"x": torch.zeros(2)}), json.dumps(real_json)),
        "no_sidecar": (real_bytes, None),
    }
    out = {}
    for name, (data, side) in cases.items():
        p = d / f"ispl_{name}.safetensors"
        p.write_bytes(data)
        if side is not None:
            p.with_suffix(".json").write_text(side)
        out[name] = p
    return out


class _Evil:
    """An arbitrary class in a .pt file: torch's weights_only unpickler must refuse it (and run nothing)."""


def hostile_stylegan2_files(d: Path) -> dict[str, Path]:
    """Malformed / hostile StyleGAN2 generator files for ``load_stylegan2``; {case: path}."""
    import torch

    from facerestore.nn.stylegan2_io import CONFIG_KEY, builtin_prior_path

    d.mkdir(parents=True, exist_ok=True)
    from safetensors import safe_open

    with safe_open(builtin_prior_path(), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    cfg = json.loads(meta[CONFIG_KEY])
    out: dict[str, Path] = {}

    def st(name: str, metadata: dict | None, side: str | None = None, data: bytes | None = None) -> None:
        p = d / f"sg2_{name}.safetensors"
        p.write_bytes(data if data is not None else _safetensors_bytes(tensors, metadata))
        if side is not None:
            p.with_suffix(".json").write_text(side)
        out[name] = p

    st("huge_w_dim", {CONFIG_KEY: json.dumps({**cfg, "w_dim": 2e6})})
    st("huge_resolution", {CONFIG_KEY: json.dumps({**cfg, "img_resolution": 2 ** 20})})
    st("bad_json_metadata", {CONFIG_KEY: "{not json"})
    st("wrong_type", {CONFIG_KEY: json.dumps({**cfg, "z_dim": "512"})})
    st("unknown_key", {CONFIG_KEY: json.dumps({**cfg, "evil": 1})})
    st("bad_json_sidecar", None, side="{nope")
    st("list_sidecar", None, side="[]")
    st("truncated", None, data=_safetensors_bytes(tensors, {CONFIG_KEY: json.dumps(cfg)})[:5000])
    st("empty", None, data=b"")
    st("huge_header", None, data=struct.pack("<Q", 1 << 40) + b"{}")
    st("shape_mismatch", {CONFIG_KEY: json.dumps({**cfg, "channel_max": cfg["channel_max"] * 2})})

    p = d / "refused.pt"
    torch.save({"g_ema": _Evil()}, p)
    out["pt_refused"] = p
    (d / "garbage.pkl").write_bytes(b"\x80\x04not a pickle at all")
    out["pkl_garbage"] = d / "garbage.pkl"
    return out


# ---------------------------------------------------------------------------------------------------------
# training configs

BAD_CONFIGS: dict[str, bytes] = {
    "wrong_type_data": b"data: 5\n",
    "wrong_type_roots": b"data: {roots: 5}\n",
    "steps_abc": b"steps: abc\n",
    "steps_inf": b"steps: .inf\n",
    "batch_zero": b"data: {batch_size: 0}\n",
    "resize_zero": b"data: {size: 0}\n",
    "nan_lr": b"optim: {lr: .nan}\n",
    "betas_scalar": b"optim: {betas: 5}\n",
    "top_level_list": b"- 1\n- 2\n",
    "yaml_syntax": b"a: [1, 2\n",
    "non_utf8": b"name: caf\xe9\n",
    "bool_type": b"data: {hflip: 3}\n",
    "bad_val_rule": b"data: {val_rule: every-0}\n",
    "losses_text": b"losses: {pixel: lots}\n",
}
