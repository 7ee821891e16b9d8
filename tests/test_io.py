"""facerestore.io: decoding (8/16-bit, gray, alpha, EXIF), atomic writes, listing, bad input."""

from __future__ import annotations

import io as pyio

import numpy as np
import pytest
from PIL import Image

from facerestore.errors import InputError
from facerestore.io import (
    decode_image,
    from_tensor,
    list_images,
    quantize,
    read_image,
    to_tensor,
    write_image,
)


def _png_bytes(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = pyio.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def test_rgb8_roundtrip_is_lossless(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    write_image(tmp_path / "a b.PNG", arr.astype(np.float32) / 255)
    img = read_image(tmp_path / "a b.PNG")
    assert img.bit_depth == 8 and not img.is_gray and img.alpha is None
    np.testing.assert_array_equal(quantize(img.rgb), arr)


def test_16bit_png_keeps_precision(tmp_path):
    rng = np.random.default_rng(1)
    arr16 = rng.integers(0, 65536, (9, 11, 3), dtype=np.uint16)
    write_image(tmp_path / "x.png", arr16.astype(np.float32) / 65535, bit_depth=16)
    img = read_image(tmp_path / "x.png")
    assert img.bit_depth == 16
    np.testing.assert_array_equal(quantize(img.rgb, 16), arr16)


def test_gray_and_alpha_are_reported():
    g = np.arange(64, dtype=np.uint8).reshape(8, 8)
    img = decode_image(_png_bytes(g, "L"))
    assert img.is_gray and np.allclose(img.rgb[..., 0], img.rgb[..., 2])
    np.testing.assert_allclose(img.rgb[..., 1], g / 255.0, atol=1e-7)
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 77
    img = decode_image(_png_bytes(rgba, "RGBA"))
    np.testing.assert_allclose(img.alpha, 77 / 255.0, atol=1e-7)
    np.testing.assert_allclose(img.rgb[..., 0], 200 / 255.0, atol=1e-7)  # not BGR-swapped


def test_gray_with_alpha_comes_back_gray_with_alpha(tmp_path):
    """A gray + alpha PNG (Pillow's LA) is read as gray with alpha and written back as LA; 16-bit gray + alpha,
    which neither OpenCV nor Pillow writes as such, is written as RGBA of equal colours at 16 bits."""
    rng = np.random.default_rng(3)
    la = rng.integers(0, 256, (6, 7, 2), dtype=np.uint8)
    img = decode_image(_png_bytes(la, "LA"))
    assert img.is_gray and img.bit_depth == 8
    np.testing.assert_allclose(img.rgb[..., 1], la[..., 0] / 255.0, atol=1e-7)
    np.testing.assert_allclose(img.alpha, la[..., 1] / 255.0, atol=1e-7)
    write_image(tmp_path / "la.png", img.rgb, alpha=img.alpha, gray=True)
    assert Image.open(tmp_path / "la.png").mode == "LA"
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "la.png")), la)
    g16 = rng.integers(0, 65536, (6, 7), dtype=np.uint16).astype(np.float32) / 65535
    a16 = rng.integers(0, 65536, (6, 7), dtype=np.uint16).astype(np.float32) / 65535
    write_image(tmp_path / "la16.png", np.dstack([g16] * 3), alpha=a16, gray=True, bit_depth=16)
    back = read_image(tmp_path / "la16.png")
    assert back.bit_depth == 16
    np.testing.assert_allclose(back.rgb[..., 0], g16, atol=1e-5)
    np.testing.assert_allclose(back.alpha, a16, atol=1e-5)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pil_exif_transpose(orientation):
    from PIL import ImageOps

    arr = np.random.default_rng(orientation).integers(0, 256, (2, 3, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = pyio.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(pyio.BytesIO(buf.getvalue()))).convert("RGB"))
    np.testing.assert_array_equal(quantize(decode_image(buf.getvalue()).rgb), expected)


def test_corrupt_and_missing_inputs_raise_one_line(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot decode"):
        read_image(bad)
    with pytest.raises(InputError, match="not a file"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="input not found"):
        list_images(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no images"):
        list_images(empty)


def test_list_images_is_sorted_and_case_insensitive(tmp_path):
    for name in ["b.JPG", "a file.png", "c.txt", "d.Jpeg"]:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["a file.png", "b.JPG", "d.Jpeg"]


def test_write_refuses_to_overwrite_protected_input(tmp_path):
    src = tmp_path / "in.png"
    write_image(src, np.zeros((4, 4, 3), np.float32))
    before = src.read_bytes()
    with pytest.raises(InputError, match="overwrite"):
        write_image(src, np.ones((4, 4, 3), np.float32), protect=[src])
    assert src.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_tensor_conversions_roundtrip():
    rng = np.random.default_rng(2)
    arr = rng.random((5, 6, 3), dtype=np.float32)
    t = to_tensor(arr)
    assert t.shape == (1, 3, 5, 6)
    np.testing.assert_array_equal(from_tensor(t), arr)


def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path):
    import os

    from facerestore.io import atomic_write_bytes, write_image

    mask = os.umask(0o022)
    os.umask(mask)
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    expected = plain.stat().st_mode & 0o777
    assert (atomic_write_bytes(tmp_path / "a.bin", b"x").stat().st_mode & 0o777) == expected
    write_image(tmp_path / "img.png", np.zeros((4, 4, 3), np.float32))
    assert ((tmp_path / "img.png").stat().st_mode & 0o777) == expected
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_safetensors_outputs_are_atomic_round_trips_with_plain_permissions(tmp_path):
    import torch
    from safetensors import safe_open

    from facerestore.io import atomic_write_safetensors

    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    t = {"w": torch.arange(6, dtype=torch.float16).view(2, 3), "n": torch.tensor([3])}
    p = atomic_write_safetensors(tmp_path / "w.safetensors", t, {"config": "{}"})
    assert (p.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)  # safetensors' own writer makes 0600
    with safe_open(str(p), "pt") as f:
        assert f.metadata() == {"config": "{}"}
        assert all(torch.equal(f.get_tensor(k), v) for k, v in t.items())
    assert not [q for q in tmp_path.iterdir() if q.name.endswith(".tmp")]


def _quadrants(h: int = 64, w: int = 96) -> np.ndarray:
    """(h, w, 3) uint8 with four flat colour quadrants: orientation and channel order are unambiguous, and lossy
    codecs keep flat areas within a few levels."""
    arr = np.empty((h, w, 3), np.uint8)
    arr[: h // 2, : w // 2] = (220, 30, 30)
    arr[: h // 2, w // 2:] = (30, 200, 40)
    arr[h // 2:, : w // 2] = (40, 40, 210)
    arr[h // 2:, w // 2:] = (230, 220, 60)
    return arr


def _interiors_close(got: np.ndarray, expected: np.ndarray, tol: int = 12) -> None:
    """Each quadrant's interior (4 px away from the colour edges, where chroma subsampling blurs) within ``tol``."""
    h, w = expected.shape[:2]
    for ys in (slice(4, h // 2 - 4), slice(h // 2 + 4, h - 4)):
        for xs in (slice(4, w // 2 - 4), slice(w // 2 + 4, w - 4)):
            diff = np.abs(got[ys, xs].astype(int) - expected[ys, xs].astype(int)).max()
            assert diff <= tol, (ys, xs, diff)


def _phone_photo(fmt: str, orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "facerestore-test"  # Make: carried into the outputs as JPEG/PNG EXIF
    buf = pyio.BytesIO()
    Image.fromarray(_quadrants()).save(buf, format=fmt, quality=95, exif=exif.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["AVIF", "HEIF"])
def test_phone_formats_are_read_upright_in_rgb_with_their_exif(fmt):
    """AVIF (Pillow) and HEIC (pillow-heif) photos taken sideways (EXIF orientation 6) come out upright
    (np.rot90 of the stored pixels, clockwise), RGB not BGR, 8-bit, with the EXIF kept and its orientation reset."""
    from PIL import features

    if fmt == "AVIF" and not features.check("avif"):
        pytest.skip("this Pillow has no AVIF codec (Pillow >= 11.3 with libavif)")
    if fmt == "HEIF":
        pytest.importorskip("pillow_heif", reason="HEIC needs the heif extra (pillow-heif)")
        from facerestore.io import _register_heif

        _register_heif()  # the writer below needs the plugin too
    img = decode_image(_phone_photo(fmt))
    assert img.rgb.shape == (96, 64, 3) and img.bit_depth == 8 and not img.is_gray and img.alpha is None
    _interiors_close(quantize(img.rgb), np.rot90(_quadrants(), k=-1))
    exif = Image.Exif()
    exif.load(img.metadata.exif)
    assert exif.get(0x0112) == 1 and exif.get(0x010F) == "facerestore-test"


def test_heic_without_pillow_heif_is_one_line_naming_the_extra(monkeypatch):
    """A HEIC file (recognised by its file type box, whatever its name) without pillow-heif installed."""
    import sys

    from facerestore import io as fio

    heic = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # import fails as if not installed
    fio._register_heif.cache_clear()
    try:
        with pytest.raises(InputError) as exc:
            decode_image(heic)
        assert 'pip install "facerestore[heif]"' in str(exc.value) and "\n" not in str(exc.value)
    finally:
        fio._register_heif.cache_clear()


def test_phone_formats_are_listed_and_become_jpeg_outputs(tmp_path):
    from facerestore.io import output_extension

    for name in ("b.HEIC", "a.avif", "c.heif", "d.gif", "e.jxl"):
        (tmp_path / name).write_bytes(b"x")
    assert [f.name for f in list_images(tmp_path)] == ["a.avif", "b.HEIC", "c.heif", "d.gif"]  # not .jxl
    assert output_extension("d.gif", False) == ".png"  # a GIF's 256 colours would band a restored face
    assert output_extension("b.HEIC", False) == ".jpg" and output_extension("b.HEIC", True) == ".png"
    assert output_extension("a.JPG", False) == ".JPG" and output_extension("a.webp", False) == ".webp"
    assert output_extension("a.avif", False, "png") == ".png"


# --- edge cases found by review (2026-12-07) -------------------------------------------------------------------


def _tiff_with_a_second_width(h: int, w: int, fake: int) -> bytes:
    """A float RGB TIFF (which Pillow cannot open: only the header parser sizes it) whose first IFD states
    ImageWidth and ImageLength twice, the second copies ``fake``."""
    import struct

    import cv2

    ok, enc = cv2.imencode(".tif", np.zeros((h, w, 3), np.float32))
    assert ok
    data = bytearray(enc.tobytes())
    end = "<" if data[:2] == b"II" else ">"
    (off,) = struct.unpack_from(end + "I", data, 4)
    (n,) = struct.unpack_from(end + "H", data, off)
    entries = [bytes(data[off + 2 + 12 * i: off + 14 + 12 * i]) for i in range(n)]
    extra = [struct.pack(end + "HHI", tag, 4, 1) + struct.pack(end + "I", fake) for tag in (256, 257)]
    entries = sorted(entries + extra, key=lambda e: struct.unpack_from(end + "H", e)[0])
    (next_ifd,) = struct.unpack_from(end + "I", data, off + 2 + 12 * n)
    ifd = struct.pack(end + "H", len(entries)) + b"".join(entries) + struct.pack(end + "I", next_ifd)
    new_off = len(data)  # the new IFD at the end; the header points to it
    data += ifd
    struct.pack_into(end + "I", data, 4, new_off)
    return bytes(data)


def test_a_tiff_stating_its_size_twice_is_refused(monkeypatch):
    """Decoders keep one copy of a repeated width/height tag and a size check might read the other: the limit
    could be bypassed (a gigapixel float TIFF sized as 8x8). Such a file is not a valid TIFF: one line."""
    monkeypatch.setenv("FACERESTORE_MAX_PIXELS", "100")
    with pytest.raises(InputError, match="states its width or height twice"):
        decode_image(_tiff_with_a_second_width(64, 64, 8))


def test_a_png_over_the_limit_is_refused_without_decoding_it(monkeypatch):
    """Pillow's getexif() decodes a PNG without an early eXIf chunk: the header read must not (a 100 MP PNG of
    zeros is 300 KB)."""
    from PIL import PngImagePlugin

    buf = pyio.BytesIO()
    Image.new("L", (4000, 3000)).save(buf, "PNG")
    monkeypatch.setenv("FACERESTORE_MAX_PIXELS", str(10**6))
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda self: pytest.fail("pixels decoded"))
    with pytest.raises(InputError, match="megapixels"):
        decode_image(buf.getvalue())


def test_camera_jpegs_that_pillow_calls_mpo_keep_exif_and_quality(tmp_path):
    """A JPEG with an MPF preview opens as "MPO": its EXIF, quality and subsampling are a JPEG's."""
    ex = Image.Exif()
    ex[0x010F] = "NIKON"
    main, preview = Image.new("RGB", (64, 48), (200, 120, 90)), Image.new("RGB", (32, 24), (10, 20, 30))
    buf = pyio.BytesIO()
    main.save(buf, "MPO", save_all=True, append_images=[preview], exif=ex.tobytes(), quality=98, subsampling=0)
    assert Image.open(pyio.BytesIO(buf.getvalue())).format == "MPO"
    img = decode_image(buf.getvalue())
    assert img.metadata.exif is not None and img.metadata.encoding is not None
    assert img.metadata.encoding.format == "JPEG" and img.metadata.encoding.quality in (97, 98, 99)
    back = Image.Exif()
    back.load(img.metadata.exif)
    assert back.get(0x010F) == "NIKON"


def test_ascii_netpbm_with_a_small_maximum_is_in_range():
    """OpenCV already scales ASCII P2/P3 samples of maxval < 256 to 0-255 (binary ones it keeps as stored)."""
    img = decode_image(b"P2\n3 1\n15\n0 7 15\n")
    np.testing.assert_allclose(img.rgb[0, :, 0], [0, 7 / 15, 1], atol=1 / 255)
    img = decode_image(b"P2\n3 1\n1000\n0 500 1000\n")  # 16-bit samples: kept as stored, scaled here
    np.testing.assert_allclose(img.rgb[0, :, 0], [0, 0.5, 1], atol=1e-4)


def test_16_bit_gray_animations_and_gray_png_transparency():
    frames = [Image.fromarray(np.full((8, 8), v, np.uint16)) for v in (40000, 20000)]
    buf = pyio.BytesIO()
    frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:])
    img = decode_image(buf.getvalue())
    assert img.bit_depth == 16 and img.is_gray
    np.testing.assert_allclose(img.rgb[0, 0], 40000 / 65535, atol=1e-6)  # was clipped to white
    for dtype, trns in ((np.uint8, 100), (np.uint16, 40000)):
        buf = pyio.BytesIO()
        Image.fromarray(np.array([[0, trns, 200]], dtype)).save(buf, "PNG", transparency=trns)
        img = decode_image(buf.getvalue())
        assert img.alpha is not None and img.alpha.ravel().tolist() == [1.0, 0.0, 1.0]


@pytest.mark.parametrize("value", ["inf", "-5", "2.5", "abc"])
def test_a_bad_pixel_limit_setting_is_one_line(monkeypatch, value):
    from facerestore.io import max_pixels

    monkeypatch.setenv("FACERESTORE_MAX_PIXELS", value)
    with pytest.raises(InputError, match="whole number of pixels"):
        max_pixels()


def test_a_file_system_without_permissions_still_gets_the_file(tmp_path, monkeypatch):
    """fchmod failing (some FUSE mounts) no longer fails the write, nor leaks the descriptor."""
    import os

    from facerestore.io import atomic_write_bytes

    def refuse(fd, mode):
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(os, "fchmod", refuse)
    before = len(os.listdir("/proc/self/fd"))
    for i in range(5):
        atomic_write_bytes(tmp_path / f"f{i}.bin", b"x")
    assert len(os.listdir("/proc/self/fd")) == before
    assert all((tmp_path / f"f{i}.bin").read_bytes() == b"x" for i in range(5))


def test_png_orientation_from_imagemagick_raw_profile_text_is_applied():
    """Without an eXIf chunk the orientation may sit in ImageMagick's "Raw profile type exif" text chunk: still
    read (from the chunks before the pixels, nothing decoded)."""
    from PIL import PngImagePlugin

    ex = Image.Exif()
    ex[0x0112] = 6
    raw = ex.tobytes()
    hexdata = raw.hex()
    text = "\nexif\n" + f"{len(raw):8d}\n" + "\n".join(hexdata[i:i + 72] for i in range(0, len(hexdata), 72)) + "\n"
    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type exif", text)
    buf = pyio.BytesIO()
    yy, xx = np.mgrid[0:20, 0:40]
    stored = Image.fromarray(np.stack([xx * 6, yy * 12, (xx + yy) * 4], -1).astype(np.uint8))  # no symmetry
    stored.save(buf, "PNG", pnginfo=info)
    shown = np.asarray(stored.transpose(Image.Transpose.ROTATE_270), dtype=np.float32) / 255  # 6: 90 deg clockwise
    np.testing.assert_allclose(decode_image(buf.getvalue()).rgb, shown, atol=1e-6)
