"""facerestore.io across the formats users bring: TIFF alpha (straight, premultiplied, unspecified), CMYK TIFF,
JPEG quality and chroma subsampling carried into JPEG outputs, WebP kept as WebP with its metadata, and no native
library chatter on stderr.

Independent references: the known pixel values written into hand-built TIFFs (libtiff's own reader inside OpenCV
gets several of them wrong, which is what these tests pin down), Pillow's JPEG encoder (libjpeg) for quality
tables, Pillow's WebP decoder (libwebp) for the metadata written.
"""

from __future__ import annotations

import io as pyio
import struct
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from facerestore import io


def tiff_bytes(arr: np.ndarray, *, extra: int | None = None, photometric: int | None = None,
               orientation: int | None = None, deflate_predictor: bool = False) -> bytes:
    """A little-endian one-strip TIFF of (H, W) or (H, W, C) uint8/uint16 samples, exactly as given, with
    ExtraSamples = ``extra`` (None: no tag) for the samples past the colour ones and an Orientation tag;
    uncompressed, or with ``deflate_predictor`` Deflate-compressed after horizontal differencing (Predictor 2: each
    sample minus the same sample of the pixel to its left, modulo 2^bits), as Photoshop writes ZIP TIFFs."""
    h, w = arr.shape[:2]
    c = 1 if arr.ndim == 2 else arr.shape[2]
    bits = arr.dtype.itemsize * 8
    photometric = (2 if c >= 3 else 1) if photometric is None else photometric
    samples = np.ascontiguousarray(arr)
    if deflate_predictor:
        samples = np.diff(samples, axis=1, prepend=np.zeros_like(samples[:, :1]))  # wraps, as unsigned integers
    pixels = samples.astype(f"<u{arr.dtype.itemsize}").tobytes()
    if deflate_predictor:
        import zlib

        pixels = zlib.compress(pixels)
    bits_at = 8 + len(pixels)
    bits_values = struct.pack(f"<{c}H", *([bits] * c))
    ifd_at = bits_at + len(bits_values) + (bits_at + len(bits_values)) % 2
    entries = [(256, 4, 1, struct.pack("<I", w)), (257, 4, 1, struct.pack("<I", h)),
               (258, 3, c, bits_values.ljust(4, b"\0") if c <= 2 else struct.pack("<I", bits_at)),
               (259, 3, 1, struct.pack("<HH", 8 if deflate_predictor else 1, 0)),
               (262, 3, 1, struct.pack("<HH", photometric, 0)),
               (273, 4, 1, struct.pack("<I", 8)), (277, 3, 1, struct.pack("<HH", c, 0)),
               (278, 4, 1, struct.pack("<I", h)), (279, 4, 1, struct.pack("<I", len(pixels)))]
    if extra is not None:
        entries.append((338, 3, 1, struct.pack("<HH", extra, 0)))
    if orientation is not None:
        entries.append((274, 3, 1, struct.pack("<HH", orientation, 0)))
    if deflate_predictor:
        entries.append((317, 3, 1, struct.pack("<HH", 2, 0)))
    out = b"II*\0" + struct.pack("<I", ifd_at) + pixels + bits_values
    out = out.ljust(ifd_at, b"\0") + struct.pack("<H", len(entries))
    out += b"".join(struct.pack("<HHI", tag, typ, n) + value for tag, typ, n, value in sorted(entries))
    return out + struct.pack("<I", 0)


def _straight_rgba(dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H, W, 4) samples with colour (0.8, 0.4, 0.2) and alpha 1 / 0.5 / 0.25 / 0 by rows, and the straight
    colour and alpha a correct reader returns, as floats."""
    full = np.iinfo(dtype).max
    alpha = np.repeat(np.array([1.0, 0.5, 0.25, 0.0]), 2)[:, None] * np.ones((1, 6))
    colour = np.broadcast_to(np.array([0.8, 0.4, 0.2]), (8, 6, 3))
    samples = np.dstack([np.round(colour * full), np.round(alpha * full)]).astype(dtype)
    return samples, samples[..., :3] / full, samples[..., 3] / full


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("extra", [2, None])
def test_tiff_straight_alpha_keeps_its_colours(dtype, extra):
    """Unassociated alpha (ExtraSamples 2; and no tag, as OpenCV writes) is read as stored. OpenCV's 8-bit path
    (libtiff's RGBA interface) premultiplies it: a half-transparent pixel came out half as bright."""
    samples, colour, alpha = _straight_rgba(dtype)
    img = io.decode_image(tiff_bytes(samples, extra=extra))
    assert img.bit_depth == (8 if dtype == np.uint8 else 16) and not img.is_gray
    np.testing.assert_allclose(img.alpha, alpha, atol=1e-6)
    np.testing.assert_allclose(img.rgb, colour, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiff_premultiplied_alpha_is_divided_out(dtype):
    """Associated alpha (ExtraSamples 1) stores colour x alpha: the loaded colours are straight again (within the
    stored precision), like every other format's."""
    samples, colour, alpha = _straight_rgba(dtype)
    full = np.iinfo(dtype).max
    samples[..., :3] = np.round(colour * alpha[..., None] * full).astype(dtype)
    img = io.decode_image(tiff_bytes(samples, extra=1))
    np.testing.assert_allclose(img.alpha, alpha, atol=1e-6)
    seen = alpha > 0
    step = 1 / full / alpha[seen][:, None]  # one stored step, divided by alpha
    assert (np.abs(img.rgb[seen] - colour[seen]) <= step).all()


def test_tiff_extra_channel_that_is_not_alpha_is_dropped():
    """ExtraSamples 0 ("unspecified data", e.g. a depth or mask plane) is not transparency."""
    samples, colour, _ = _straight_rgba(np.uint8)
    img = io.decode_image(tiff_bytes(samples, extra=0))
    assert img.alpha is None
    np.testing.assert_allclose(img.rgb, colour, atol=1e-6)


@pytest.mark.parametrize("extra", [1, 2])
def test_tiff_gray_with_alpha_stays_gray_with_alpha(extra):
    """8-bit gray + alpha TIFFs: OpenCV drops the alpha; Pillow reads both kinds (dividing premultiplied out)."""
    alpha = np.array([[255, 128], [64, 0]], np.uint8)
    gray = np.full((2, 2), 200, np.uint8)
    stored = gray if extra == 2 else np.round(gray * (alpha / 255)).astype(np.uint8)
    img = io.decode_image(tiff_bytes(np.dstack([stored, alpha]), extra=extra))
    assert img.is_gray and img.alpha is not None
    np.testing.assert_allclose(img.alpha, alpha / 255, atol=1e-6)
    seen = alpha > 0
    assert np.abs(img.rgb[..., 0][seen] * 255 - 200).max() <= 255 / alpha[seen].min()


@pytest.mark.parametrize("deflate_predictor", [False, True])
@pytest.mark.parametrize("extra", [1, 2, 0])
def test_16_bit_tiff_gray_with_alpha_keeps_its_depth_and_alpha(extra, deflate_predictor):
    """16-bit gray + alpha TIFFs: OpenCV read them as 8-bit gray without alpha, Pillow cannot open them. Now read
    at 16 bits with their alpha (straight, or premultiplied divided out; an "unspecified" sample is not alpha),
    uncompressed or Deflate with horizontal differencing, and their orientation applied once."""
    rng = np.random.default_rng(extra)
    alpha = rng.integers(1, 65536, (30, 41)).astype(np.uint16)
    gray = rng.integers(0, 65536, (30, 41)).astype(np.uint16)
    stored = gray if extra != 1 else np.round(gray * (alpha / 65535)).astype(np.uint16)
    img = io.decode_image(tiff_bytes(np.dstack([stored, alpha]), extra=extra, deflate_predictor=deflate_predictor))
    assert img.is_gray and img.bit_depth == 16
    if extra == 0:
        assert img.alpha is None
        np.testing.assert_array_equal(io.quantize(img.rgb, 16)[..., 0], gray)
        return
    np.testing.assert_array_equal(io.quantize(img.alpha, 16), alpha)
    if extra == 2:
        np.testing.assert_array_equal(io.quantize(img.rgb, 16)[..., 0], gray)
    else:  # premultiplied: the straight value back within the rounding of the stored product
        assert np.abs(img.rgb[..., 0] * 65535 - gray).max() <= 0.5 * 65535 / alpha.min() + 1
    turned = io.decode_image(tiff_bytes(np.dstack([stored, alpha]), extra=extra, orientation=6,
                                        deflate_predictor=deflate_predictor))
    np.testing.assert_array_equal(turned.alpha, np.rot90(img.alpha, -1))  # 6: rotate 90 degrees clockwise


def test_cmyk_tiff_has_no_alpha():
    """OpenCV returns CMYK TIFFs as BGRA with an opaque alpha; the photo has none (and must not become a PNG with
    a useless alpha channel). Colours: the naive CMYK -> RGB conversion, 255 - ink."""
    ink = np.zeros((4, 4, 4), np.uint8)
    ink[..., 0] = 255  # full cyan
    img = io.decode_image(tiff_bytes(ink, photometric=5))
    assert img.alpha is None
    np.testing.assert_allclose(img.rgb[0, 0], [0.0, 1.0, 1.0])


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_rgba_tiff_outputs_declare_their_alpha(bit_depth):
    """OpenCV writes no ExtraSamples tag: libtiff readers then see an unspecified fourth channel, not
    transparency. Outputs declare it unassociated (2), and read back exactly."""
    rng = np.random.default_rng(0)
    rgb, alpha = rng.random((5, 7, 3)).astype(np.float32), rng.random((5, 7)).astype(np.float32)
    data = io.encode_image(rgb, ".tif", alpha=alpha, bit_depth=bit_depth)
    with Image.open(pyio.BytesIO(data)) as im:
        assert im.tag_v2[338] == (2,) and im.size == (7, 5)
    back = io.decode_image(data)
    step = 0.5 / (255 if bit_depth == 8 else 65535) + 1e-7
    assert np.abs(back.rgb - rgb).max() <= step and np.abs(back.alpha - alpha).max() <= step


def test_flawed_png_profiles_cause_no_libpng_warnings(capfd):
    """An RGB profile in a gray PNG (libpng: "RGB color space not permitted on grayscale PNG") decodes silently;
    the pixels are Pillow's and the mismatched profile is not carried (it does not describe gray pixels)."""
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    buf = pyio.BytesIO()
    Image.fromarray(gray).save(buf, format="PNG", icc_profile=srgb)
    capfd.readouterr()
    img = io.decode_image(buf.getvalue())
    err = capfd.readouterr().err
    assert "libpng" not in err, err
    assert img.is_gray and img.metadata.icc_profile is None
    np.testing.assert_array_equal(io.quantize(img.rgb[..., 0]), gray)


def _jpeg(quality: int, subsampling: int) -> bytes:
    arr = np.random.default_rng(quality).integers(0, 256, (32, 48, 3), np.uint8)
    buf = pyio.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality, subsampling=subsampling)
    return buf.getvalue()


def test_jpeg_quality_is_recovered_from_libjpeg_tables():
    """For every quality 1-100 libjpeg (through Pillow) writes, the estimate gives that quality back, or one with
    the very same table (qualities 98-100 share some entries; low ones clamp at 255)."""
    for q in range(1, 101):
        with Image.open(pyio.BytesIO(_jpeg(q, 2))) as im:
            got = io.jpeg_quality_estimate(im.quantization[0])
            assert got == q or io.ijg_luma_table(got) == tuple(im.quantization[0]), (q, got)
    assert io.ijg_luma_table(50) == io._JPEG_LUMA_BASE  # quality 50 is the standard's table itself


@pytest.mark.parametrize(("pillow", "name"), [(0, "4:4:4"), (1, "4:2:2"), (2, "4:2:0")])
def test_jpeg_subsampling_is_read_and_written_back(tmp_path, pillow, name):
    """A JPEG's chroma subsampling is read, and a JPEG output of it is written with the same layout."""
    loaded = io.decode_image(_jpeg(90, pillow))
    assert loaded.metadata.encoding == io.SourceEncoding("JPEG", 90, name)
    out = io.write_image(tmp_path / "out.jpg", loaded.rgb, metadata=loaded.metadata)
    with Image.open(out) as im:
        from PIL.JpegImagePlugin import get_sampling

        assert get_sampling(im) == pillow
        assert io.jpeg_quality_estimate(im.quantization[0]) == 95  # 90 < the default: never coarser than 95


def test_a_finer_source_jpeg_gives_a_finer_output(tmp_path):
    """A 4:4:4 quality-98 camera JPEG is written back at 98, 4:4:4 (before: 95, 4:2:0, which re-encoded the
    whole background coarser); an explicit quality wins; a source without encoding gets the default."""
    loaded = io.decode_image(_jpeg(98, 0))
    out = io.write_image(tmp_path / "a.jpg", loaded.rgb, metadata=loaded.metadata)
    with Image.open(out) as im:
        assert io.jpeg_quality_estimate(im.quantization[0]) == 98 and im.layer[0][1:3] == (1, 1)
    out = io.write_image(tmp_path / "b.jpg", loaded.rgb, metadata=loaded.metadata, jpeg_quality=70)
    with Image.open(out) as im:
        assert io.jpeg_quality_estimate(im.quantization[0]) == 70
    out = io.write_image(tmp_path / "c.jpg", loaded.rgb)
    with Image.open(out) as im:
        assert io.jpeg_quality_estimate(im.quantization[0]) == io.DEFAULT_JPEG_QUALITY
    # what the carried encoding buys: the re-encoded picture is closer to the source
    fine = io.read_image(tmp_path / "a.jpg").rgb
    coarse = io.decode_image(io.encode_image(loaded.rgb, ".jpg")).rgb
    assert np.abs(fine - loaded.rgb).mean() < 0.7 * np.abs(coarse - loaded.rgb).mean()


@pytest.mark.parametrize("lossless", [False, True])
@pytest.mark.parametrize("with_alpha", [False, True])
def test_webp_stays_webp_lossy_or_lossless_with_its_metadata(tmp_path, lossless, with_alpha):
    """A WebP photo is written back as WebP (a lossy one was a PNG 10-15x its size), lossless when it was, with
    its ICC profile, EXIF and XMP in the extended (VP8X) container, which libwebp (Pillow, OpenCV) reads."""
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (20, 30, 4 if with_alpha else 3), np.uint8)
    exif = Image.Exif()
    exif[0x010F] = "facerestore-test"
    buf = pyio.BytesIO()
    Image.fromarray(arr).save(buf, format="WEBP", lossless=lossless, quality=80, icc_profile=profile,
                              exif=exif.tobytes(), xmp=b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    loaded = io.decode_image(buf.getvalue())
    assert loaded.metadata.encoding == io.SourceEncoding("WEBP", lossless=lossless)
    assert io.output_extension("in.webp", with_alpha) == ".webp"
    out = io.write_image(tmp_path / "out.webp", loaded.rgb, alpha=loaded.alpha, metadata=loaded.metadata)
    data = out.read_bytes()
    assert io.webp_is_lossless(data) == lossless
    with Image.open(out) as im:
        assert im.size == (30, 20) and im.mode == ("RGBA" if with_alpha else "RGB")
        assert im.info["icc_profile"] == profile and im.getexif()[0x010F] == "facerestore-test"
        assert b"adobe:ns:meta" in im.info["xmp"]
    back = io.read_image(out)
    if lossless:
        assert back.rgb.tobytes() == loaded.rgb.tobytes()
    if with_alpha:  # libwebp keeps alpha exactly, lossy or not
        np.testing.assert_array_equal(back.alpha, loaded.alpha)


def test_command_line_help_loads_neither_torch_nor_opencv():
    """`facerestore --help` builds every sub-command's parser without the heavy libraries (2.3 s -> 0.3 s)."""
    code = ("import sys; from facerestore.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'cv2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_commands_silence_opencv_log_lines(monkeypatch, capfd):
    """A TIFF whose layout libtiff warns about (4 samples, no ExtraSamples: "Sum of Photometric type-related
    color channels ...") is read by a command without OpenCV's `[ WARN:0@...]` line on stderr (it would land in
    a progress bar); a user's own OPENCV_LOG_LEVEL is left alone."""
    import cv2

    from facerestore.cli.guards import quiet_opencv

    logging = cv2.utils.logging
    before = logging.getLogLevel()
    warns = tiff_bytes(_straight_rgba(np.uint8)[0], extra=None)
    try:
        logging.setLogLevel(logging.LOG_LEVEL_WARNING)
        monkeypatch.setenv("OPENCV_LOG_LEVEL", "WARNING")
        quiet_opencv()
        assert logging.getLogLevel() == logging.LOG_LEVEL_WARNING
        capfd.readouterr()
        io.decode_image(warns)
        assert "WARN" in capfd.readouterr().err  # the line this is about
        monkeypatch.delenv("OPENCV_LOG_LEVEL")
        quiet_opencv()
        io.decode_image(warns)
        assert logging.getLogLevel() == logging.LOG_LEVEL_SILENT and capfd.readouterr().err == ""
    finally:
        logging.setLogLevel(before)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_an_interrupted_download_is_called_truncated(fmt):
    """A photo cut short (its header intact, its end marker missing) is named as truncated in one line, not as
    an unknown format: the user knows to fetch it again."""
    from facerestore.errors import InputError

    arr = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    buf = pyio.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    cut = buf.getvalue()[: len(buf.getvalue()) * 3 // 5]
    with pytest.raises(InputError) as exc:
        io.decode_image(cut)
    expected = f"truncated {fmt}: the file ends inside its image data ({len(cut)} bytes)"
    assert str(exc.value) == f"cannot decode image ({expected})"


@pytest.mark.parametrize("ext", [".png", ".jpg", ".tif"])
def test_an_upscaled_scan_states_the_resolution_that_keeps_its_print_size(tmp_path, ext):
    """A 300 dpi scan written at twice its pixels states 600 dpi (PNG pHYs, JPEG JFIF and EXIF X/YResolution),
    so it prints at the size it had. Read back by Pillow."""
    exif = Image.Exif()
    exif[0x011A], exif[0x011B], exif[0x0128] = 300.0, 300.0, 2
    src = tmp_path / f"scan{ext}"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(src, dpi=(300, 300), exif=exif.tobytes())
    loaded = io.read_image(src)
    assert loaded.metadata.print_size == pytest.approx((0.2, 40 / 300))
    for out_ext in (".png", ".jpg", ".tif"):
        out = io.write_image(tmp_path / f"out{out_ext}", np.zeros((80, 120, 3), np.float32), metadata=loaded.metadata)
        with Image.open(out) as im:
            assert im.info["dpi"] == pytest.approx((600, 600), abs=0.01)
            if ext != ".tif" or out_ext == ".tif":  # a TIFF's resolution tags are not in the EXIF a JPEG/PNG gets
                assert (im.getexif()[0x011A], im.getexif()[0x011B]) == (600, 600)
    crop_meta = loaded.metadata.for_crops()  # a face crop is another picture: no print size
    out = io.write_image(tmp_path / "crop.png", np.zeros((8, 8, 3), np.float32), metadata=crop_meta)
    with Image.open(out) as im:
        assert "dpi" not in im.info


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_print_size_follows_the_upright_picture(fmt):
    """A sideways photo (orientation 6) stored 64 x 48 px at 300 x 150 dpi is 0.21 x 0.32 inches as stored and
    0.32 x 0.21 upright: the inches swap with the sides, the resolution stays with its axis. (Pillow reports a
    sideways TIFF's size upright already: it was swapped twice.)"""
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = pyio.BytesIO()
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(buf, format=fmt, dpi=(300, 150),
                                                          **({"exif": exif.tobytes()} if fmt == "JPEG" else {}))
    data = buf.getvalue() if fmt == "JPEG" else io._tiff_with_tags(buf.getvalue(), {274: 6})
    loaded = io.decode_image(data)
    assert loaded.rgb.shape[:2] == (64, 48)  # upright: 48 wide, 64 tall
    assert loaded.metadata.print_size == pytest.approx((48 / 150, 64 / 300))  # stored: 64/300 wide, 48/150 tall


def test_files_that_state_no_resolution_get_no_print_size(tmp_path):
    """Pillow reports 1 dpi for a TIFF without XResolution and 72 dpi for a JPEG whose EXIF has no resolution
    (JFIF units 0): neither file states one, so no print size is made up and the PNG written has no pHYs."""
    img = io.decode_image(tiff_bytes(np.zeros((6, 9, 3), np.uint8)))
    exif = Image.Exif()
    exif[0x010F] = "facerestore-test"  # EXIF without X/YResolution
    buf = pyio.BytesIO()
    Image.fromarray(np.zeros((6, 9, 3), np.uint8)).save(buf, format="JPEG", exif=exif.tobytes())
    with Image.open(pyio.BytesIO(buf.getvalue())) as im:
        assert im.info.get("dpi") == (72, 72) and im.info.get("jfif_unit") == 0  # what Pillow fills in
    jpeg = io.decode_image(buf.getvalue())
    for loaded in (img, jpeg):
        assert loaded.metadata.print_size is None
        out = io.write_image(tmp_path / "out.png", loaded.rgb, metadata=loaded.metadata)
        assert b"pHYs" not in out.read_bytes()


def test_an_absurd_resolution_is_clamped_not_a_crash(tmp_path):
    """pHYs holds 32-bit pixels per metre: a stated 4e9 ppm upscaled (as a damaged file may state) is clamped."""
    meta = io.ImageMetadata(print_size=(1e-9, 1e-9))
    out = io.write_image(tmp_path / "out.png", np.zeros((4, 4, 3), np.float32), metadata=meta)
    data = out.read_bytes()
    at = data.index(b"pHYs") + 4
    assert struct.unpack(">IIB", data[at: at + 9]) == (0xFFFFFFFF, 0xFFFFFFFF, 1)


def test_webp_outputs_over_the_format_limit_become_png():
    """WebP holds at most 16383 px a side: a larger restored photo (an 8200 px WebP at --upscale 2) is written
    as PNG instead of failing after the whole restoration."""
    assert io.output_extension("a.webp", False, size=(io.WEBP_MAX_SIDE, 10)) == ".webp"
    assert io.output_extension("a.webp", False, size=(16400, 10)) == ".png"
    assert io.output_extension("a.webp", True, size=(10, 20000)) == ".png"


def test_tiffs_pillow_cannot_open_keep_their_alpha_right(monkeypatch):
    """Over Pillow's decompression-bomb limit (FACERESTORE_MAX_PIXELS raised), a TIFF's header is read from its
    first IFD: straight 8-bit alpha (which OpenCV premultiplies) is divided back, within the 8-bit steps lost;
    CMYK gets no alpha."""
    from PIL import Image as PILImage

    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 4)  # anything over 8 pixels is a "bomb" to Pillow
    monkeypatch.setenv("FACERESTORE_MAX_PIXELS", "0")
    samples, colour, alpha = _straight_rgba(np.uint8)
    img = io.decode_image(tiff_bytes(samples, extra=2))
    np.testing.assert_allclose(img.alpha, alpha, atol=1e-6)
    seen = alpha > 0
    assert (np.abs(img.rgb[seen] - colour[seen]) <= 1 / 255 / alpha[seen][:, None] + 1e-6).all()
    ink = np.zeros((4, 4, 4), np.uint8)
    ink[..., 0] = 255
    assert io.decode_image(tiff_bytes(ink, photometric=5)).alpha is None


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_gray_with_alpha_png_comes_back_gray_with_alpha(tmp_path, bit_depth):
    """A 16-bit gray + alpha PNG (Pillow reports it as "RGBA") is read as gray with alpha and written back as
    one (it became 16-bit RGBA); 8-bit as before. Checked against the PNG header and libpng (OpenCV) reading."""
    import cv2

    rng = np.random.default_rng(bit_depth)
    full = 255 if bit_depth == 8 else 65535
    gray = rng.integers(0, full + 1, (7, 9)).astype(np.uint8 if bit_depth == 8 else np.uint16)
    alpha = rng.integers(0, full + 1, (7, 9)).astype(gray.dtype)
    data = io._png_gray_alpha(np.dstack([gray, alpha]))
    assert data[24] == bit_depth and data[25] == 4  # IHDR: depth, colour type gray + alpha
    ref = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)  # libpng: BGRA, equal colours
    np.testing.assert_array_equal(ref[..., 0], gray)
    np.testing.assert_array_equal(ref[..., 3], alpha)
    img = io.decode_image(data)
    assert img.is_gray and img.bit_depth == bit_depth
    np.testing.assert_array_equal(io.quantize(img.alpha, bit_depth), alpha)
    out = io.write_image(tmp_path / "out.png", img.rgb, alpha=img.alpha, bit_depth=bit_depth, gray=True)
    written = out.read_bytes()
    assert written[24] == bit_depth and written[25] == 4
    back = io.read_image(out)
    np.testing.assert_array_equal(io.quantize(back.rgb[..., 0], bit_depth), gray)
    np.testing.assert_array_equal(io.quantize(back.alpha, bit_depth), alpha)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize(("dtype", "channels"), [(np.uint8, 3), (np.uint16, 3), (np.uint8, 4)])
def test_tiff_orientation_is_applied_once(orientation, dtype, channels):
    """OpenCV's TIFF reader applies the Orientation tag itself for some layouts (and fails on the transposing
    ones) while ours is applied to every format: each TIFF comes out as Pillow's exif_transpose shows the 8-bit
    RGB one (before, every orientation but 1 came out wrong)."""
    from PIL import ImageOps

    rng = np.random.default_rng(orientation)
    base = rng.integers(0, 256, (5, 7, 3), np.uint8)
    ref_file = tiff_bytes(base, orientation=orientation)
    with Image.open(pyio.BytesIO(ref_file)) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    samples = base.astype(dtype) * (257 if dtype == np.uint16 else 1)
    if channels == 4:
        samples = np.dstack([samples, np.full(base.shape[:2], 255, dtype)])
    img = io.decode_image(tiff_bytes(samples, orientation=orientation, extra=2 if channels == 4 else None))
    np.testing.assert_array_equal(io.quantize(img.rgb), expected)


def test_a_multi_page_tiff_gives_its_first_page_at_its_own_depth(tmp_path, capsys):
    """Pillow calls a multi-page TIFF "animated": it was decoded by Pillow, and a 16-bit one came back 8-bit.
    OpenCV reads the first page at 16 bits; the page count is kept, and `restore` says the rest are not restored."""
    import cv2

    from facerestore.cli import main

    rng = np.random.default_rng(0)
    first = rng.integers(0, 65536, (20, 30, 3)).astype(np.uint16)
    ok, buf = cv2.imencodemulti(".tif", [first, first // 2])
    assert ok
    img = io.decode_image(buf.tobytes())
    assert img.bit_depth == 16 and img.pages == 2
    np.testing.assert_array_equal(io.quantize(img.rgb, 16), first[:, :, ::-1])  # BGR on disk
    src = tmp_path / "scans.tif"
    src.write_bytes(buf.tobytes())
    capsys.readouterr()
    assert main(["restore", "-i", str(src), "-o", str(tmp_path / "out"), "--detector", "hog", "-q"]) == 0
    assert "holds 2 pages: the first is restored" in capsys.readouterr().err


def _camera_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[271], exif[272], exif[306], exif[0x0112] = "Epson", "Perfection V600", "2021:05:04 10:11:12", 6
    exif.get_ifd(0x8769).update({0x9003: "1962:07:01 09:00:00", 0x829A: (1, 250), 0x927C: b"maker\0note"})
    return exif


@pytest.mark.parametrize("bit_depth", [8, 16])
@pytest.mark.parametrize("with_alpha", [False, True])
def test_tiff_outputs_keep_profile_resolution_xmp_and_camera_fields(tmp_path, bit_depth, with_alpha):
    """A TIFF output holds what a PNG or JPEG output holds: the ICC profile, the print size's resolution, the XMP
    packet and the EXIF's camera fields (first-IFD descriptive tags, the EXIF sub-IFD); its pixels are what OpenCV
    wrote (the strips are not moved) and its alpha stays declared. Read back by Pillow (libtiff) and OpenCV."""
    import cv2
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><dc:title>Grandma, 1962</dc:title></x:xmpmeta>'
    meta = io.ImageMetadata(exif=_camera_exif().tobytes(), icc_profile=icc, xmp=xmp, print_size=(0.2, 0.1))
    rng = np.random.default_rng(0)
    rgb = rng.random((30, 60, 3))
    alpha = rng.random((30, 60)) if with_alpha else None
    plain = io.encode_image(rgb, ".tif", alpha=alpha, bit_depth=bit_depth)
    out = io.write_image(tmp_path / "scan.tif", rgb, alpha=alpha, bit_depth=bit_depth, metadata=meta)
    np.testing.assert_array_equal(cv2.imread(str(out), cv2.IMREAD_UNCHANGED),
                                  cv2.imdecode(np.frombuffer(plain, np.uint8), cv2.IMREAD_UNCHANGED))
    with Image.open(out) as im:
        assert im.info["icc_profile"] == icc and im.tag_v2[700] == xmp
        assert im.info["dpi"] == pytest.approx((300, 300))
        exif = im.getexif()
        assert (exif[271], exif[272], exif[306]) == ("Epson", "Perfection V600", "2021:05:04 10:11:12")
        assert 0x0112 not in exif  # the pixels are upright: no orientation is claimed
        assert dict(exif.get_ifd(0x8769)) == {0x9003: "1962:07:01 09:00:00", 0x829A: (1, 250),
                                              0x927C: b"maker\0note"}
        assert im.tag_v2.get(338) == ((2,) if with_alpha else None)
    back = io.read_image(out)  # and our reader takes it all back, for the next output
    assert back.bit_depth == bit_depth and (back.alpha is not None) == with_alpha
    assert back.metadata.icc_profile == icc and back.metadata.xmp == xmp
    assert back.metadata.print_size == pytest.approx((0.2, 0.1))
    carried = Image.Exif()
    carried.load(back.metadata.exif)
    assert carried[272] == "Perfection V600" and carried.get_ifd(0x8769)[0x9003] == "1962:07:01 09:00:00"
    assert not {256, 257, 258, 259, 273, 279, 0x0112} & set(carried)  # the TIFF's own pixel layout is not carried


def test_an_exif_pillow_cannot_write_costs_the_camera_fields_not_the_output(tmp_path, monkeypatch):
    from PIL import TiffImagePlugin

    meta = io.ImageMetadata(exif=_camera_exif().tobytes(), xmp=b"<x/>")
    real = TiffImagePlugin.ImageFileDirectory_v2.tobytes

    def refuse_sub_ifds(self, offset=0):
        if 0x8769 in self._tags_v2:
            raise ValueError("a value this writer cannot encode")
        return real(self, offset)

    monkeypatch.setattr(TiffImagePlugin.ImageFileDirectory_v2, "tobytes", refuse_sub_ifds)
    out = io.write_image(tmp_path / "a.tif", np.zeros((8, 8, 3)), metadata=meta)
    with Image.open(out) as im:
        assert im.tag_v2[700] == b"<x/>" and 271 not in im.getexif() and im.size == (8, 8)


def test_jpeg_2000_and_netpbm_scans_are_listed_read_at_their_depth_and_restored_to_png(tmp_path):
    """Libraries and archives publish scans of old photographs as JPEG 2000: a folder of them was "no images"
    (a single file was read). 16-bit stays 16-bit, gray stays gray, alpha is kept; the restored photo is a PNG.
    Reference: the pixels written (losslessly, by Pillow's OpenJPEG encoder)."""
    from facerestore.cli import main

    rng = np.random.default_rng(0)
    deep = rng.integers(0, 65536, (64, 96)).astype(np.uint16)  # a 16-bit gray scan, written losslessly by Pillow
    Image.fromarray(deep).save(tmp_path / "deep.jp2")
    gray = rng.integers(0, 256, (64, 96)).astype(np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.j2k")
    rgba = rng.integers(0, 256, (64, 96, 4)).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.jp2")
    assert [p.name for p in io.list_images(tmp_path)] == ["cut.jp2", "deep.jp2", "gray.j2k"]
    img = io.read_image(tmp_path / "deep.jp2")
    assert img.bit_depth == 16 and img.is_gray
    np.testing.assert_array_equal(io.quantize(img.rgb, 16)[:, :, 0], deep)
    img = io.read_image(tmp_path / "gray.j2k")
    assert img.is_gray and img.alpha is None
    np.testing.assert_array_equal(io.quantize(img.rgb)[:, :, 0], gray)
    img = io.read_image(tmp_path / "cut.jp2")
    np.testing.assert_array_equal(io.quantize(img.rgb), rgba[:, :, :3])
    np.testing.assert_array_equal(io.quantize(img.alpha), rgba[:, :, 3])
    assert io.output_extension("deep.jp2", False) == ".png"
    for name in ("scan.pnm", "scan.PPM", "scan.pgm", "scan.pbm"):  # Linux scanning tools' Netpbm, also listed
        assert io.is_image_file(name) and io.output_extension(name, False) == ".png"
    cv2_deep = tmp_path / "netpbm"
    cv2_deep.mkdir()
    (cv2_deep / "scan.pgm").write_bytes(b"P5 96 64 65535\n" + deep.astype(">u2").tobytes())  # Netpbm, by hand
    np.testing.assert_array_equal(io.quantize(io.read_image(cv2_deep / "scan.pgm").rgb, 16)[:, :, 0], deep)

    out = tmp_path / "out"
    assert main(["restore", "-i", str(tmp_path), "-o", str(out), "--detector", "hog", "--upscale", "1", "-q"]) == 0
    back = io.read_image(out / "restored_imgs" / "deep.png")
    assert back.bit_depth == 16 and back.is_gray  # no face: the photo is only upscaled, at its depth
    np.testing.assert_array_equal(io.quantize(back.rgb, 16)[:, :, 0], deep)
    assert io.read_image(out / "restored_imgs" / "cut.png").alpha is not None


def test_a_float_tiff_pillow_cannot_open_is_turned_upright_once():
    """A 32-bit float RGB TIFF (Pillow cannot open it: the header is read from its IFD) with Orientation 6 comes
    back rotated 90 degrees clockwise, as the tag says; the tag is read from the IFD and applied by us alone."""
    import cv2

    rng = np.random.default_rng(0)
    ok, buf = cv2.imencode(".tif", rng.random((20, 30, 3)).astype(np.float32))
    assert ok
    upright = io.decode_image(buf.tobytes())
    turned = io.decode_image(io._tiff_with_tags(buf.tobytes(), {274: 6}))
    assert upright.rgb.shape == (20, 30, 3)
    np.testing.assert_array_equal(turned.rgb, np.rot90(upright.rgb, -1))


def test_a_camera_raw_preview_is_refused_not_restored(tmp_path, capsys):
    """Camera raw files (DNG, NEF, ARW) are TIFFs whose first image is a small preview (NewSubFileType 1): it was
    decoded and "restored" as if it were the photo. Now one line says what the file is; other TIFFs are unaffected."""
    from facerestore.cli import main

    preview = tiff_bytes(np.zeros((12, 16, 3), np.uint8))
    raw = io._tiff_with_tags(preview, {254: 1})
    with pytest.raises(io.InputError, match="reduced-resolution preview, as in camera raw files"):
        io.decode_image(raw)
    assert io.decode_image(io._tiff_with_tags(preview, {254: 0})).rgb.shape == (12, 16, 3)
    (tmp_path / "IMG_0001.DNG").write_bytes(raw)
    assert main(["restore", "-i", str(tmp_path / "IMG_0001.DNG"), "-o", str(tmp_path / "out"), "-q"]) == 2
    assert "develop the photo to TIFF or JPEG first: " in capsys.readouterr().err


def test_a_tiff_output_gets_a_gray_profile_only_when_its_pixels_are_gray(tmp_path):
    """Gray + alpha goes out as an RGBA TIFF (equal colours): a gray ICC profile would then describe RGB pixels,
    so it is left out, as it is from PNGs; a gray TIFF keeps it."""
    gray_profile = bytes(16) + b"GRAY" + bytes(108)  # an ICC header saying "gray colour space"
    meta = io.ImageMetadata(icc_profile=gray_profile)
    rgb = np.full((6, 8, 3), 0.5)
    with Image.open(io.write_image(tmp_path / "g.tif", rgb, gray=True, metadata=meta)) as im:
        assert im.mode == "L" and im.info.get("icc_profile") == gray_profile
    with Image.open(io.write_image(tmp_path / "ga.tif", rgb, gray=True, alpha=np.ones((6, 8)), metadata=meta)) as im:
        assert im.mode == "RGBA" and "icc_profile" not in im.info


def _iptc_record(**fields: bytes) -> bytes:
    """An IPTC-NAA record of application datasets (2:120 caption, 2:116 copyright ...)."""
    numbers = {"caption": 120, "copyright": 116, "keywords": 25}
    return b"".join(b"\x1c\x02" + bytes([numbers[k]]) + struct.pack(">H", len(v)) + v for k, v in fields.items())


def _resource(rid: int, data: bytes) -> bytes:
    return b"8BIM" + struct.pack(">HHI", rid, 0, len(data)) + data + b"\0" * (len(data) & 1)


def test_iptc_captions_travel_between_jpeg_and_tiff_without_the_inputs_resolution_or_thumbnail(tmp_path):
    """Captions and credits (IPTC) of archival scans: a TIFF's IPTC (Photoshop resources, tag 34377, or a bare
    IPTC-NAA record, tag 33723) was not read, and TIFF outputs had none; now TIFF -> TIFF/JPEG and JPEG -> TIFF keep
    it. Photoshop's own resolution and thumbnail resources describe the input's pixels (Photoshop reads that
    resolution before the EXIF's: a restored 2x scan printed twice as large there) and are left out. Read back
    by Pillow's IPTC reader."""
    from PIL import IptcImagePlugin

    record = _iptc_record(caption=b"Grandma, 1952", copyright=b"Family archive")
    payload = (b"Photoshop 3.0\0" + _resource(0x03ED, bytes(16)) + _resource(0x0404, record)
               + _resource(0x040C, b"thumbnail" * 8))
    rgb = np.random.default_rng(0).random((12, 16, 3))
    expected = {(2, 120): b"Grandma, 1952", (2, 116): b"Family archive"}

    src_jpg = io.write_image(tmp_path / "src.jpg", rgb, metadata=io.ImageMetadata(iptc=payload))
    kept = io.read_image(src_jpg).metadata.iptc
    assert [rid for rid, _ in io._photoshop_resources(kept[14:])] == [0x0404]  # no resolution, no thumbnail
    tif = io.write_image(tmp_path / "out.tif", rgb, metadata=io.read_image(src_jpg).metadata)
    with Image.open(tif) as im:
        assert IptcImagePlugin.getiptcinfo(im) == expected
        assert im.tag_v2[34377] == kept[14:]
    again = io.write_image(tmp_path / "again.jpg", rgb, metadata=io.read_image(tif).metadata)
    with Image.open(again) as im:
        assert IptcImagePlugin.getiptcinfo(im) == expected

    bare = io._tiff_with_tags(io.encode_image(rgb, ".tif"), {33723: record})  # IPTC-NAA alone, as older writers
    (tmp_path / "bare.tif").write_bytes(bare)
    carried = io.read_image(tmp_path / "bare.tif").metadata.iptc
    assert carried == b"Photoshop 3.0\0" + _resource(0x0404, record)
    assert io._photoshop_payload_for_output(b"Photoshop 3.0\0" + _resource(0x040C, b"x")) is None


def test_netpbm_samples_are_scaled_by_the_declared_maximum():
    """A 12-bit scan saved as PGM declares 4095 as its maximum: OpenCV keeps the stored values, which read as a
    picture 16 times too dark; they are scaled by the declared maximum (any 1..65535), as Pillow does."""
    deep = np.array([[0, 1000, 4095]], np.uint16)
    img = io.decode_image(b"P5\n# a 12-bit scan\n3 1\n4095\n" + deep.astype(">u2").tobytes())
    assert img.bit_depth == 16
    np.testing.assert_allclose(img.rgb[0, :, 0], deep[0] / 4095, atol=1e-6)
    img = io.decode_image(b"P5 3 1 15\n" + bytes([0, 7, 15]))
    np.testing.assert_allclose(img.rgb[0, :, 0], np.array([0, 7, 15]) / 15, atol=1e-6)
    img = io.decode_image(b"P6 1 1 255\n" + bytes([10, 20, 30]))
    np.testing.assert_allclose(img.rgb[0, 0], np.array([10, 20, 30]) / 255, atol=1e-6)


def test_tiffs_pillow_cannot_open_still_count_their_pages():
    """A multi-page 16-bit gray + alpha TIFF (Pillow cannot open it) says how many pages it holds, so `restore` can
    say that only the first is restored; the chain is followed to its end and a loop stops the count."""
    pair = tiff_bytes(np.zeros((4, 5, 2), np.uint16), extra=2)
    _, ifd, n = io._tiff_ifd0(pair)
    next_at = ifd + 2 + 12 * n
    looped = pair[:next_at] + struct.pack("<I", ifd) + pair[next_at + 4:]  # the first IFD names itself as next
    assert io._tiff_pages(pair) == 1 and io._tiff_pages(looped) == 1
    second = len(pair)  # a second IFD: a copy of the first, which it follows
    chained = pair[:next_at] + struct.pack("<I", second) + pair[next_at + 4:] + pair[ifd:next_at] + b"\0\0\0\0"
    assert io._tiff_pages(chained) == 2 and io.decode_image(chained).pages == 2


def test_gray_alpha_in_separate_planes_is_not_read_as_interleaved():
    """PlanarConfiguration 2 (the gray plane, then the alpha plane) is not the interleaved layout the double-width
    reading assumes: it is left to OpenCV rather than read as garbage."""
    planes = tiff_bytes(np.zeros((4, 5, 2), np.uint16), extra=2)
    assert io._decode_tiff_gray_alpha16(io._tiff_with_tags(planes, {284: 2})) is None
    assert io._decode_tiff_gray_alpha16(planes) is not None


def test_photoshop_resources_keep_the_story_and_refuse_a_short_block():
    """Only the photo's story travels (IPTC, its digest, the copyright flag, URLs); guides (0x0408, in input pixels)
    and alpha channel names (0x03EE) do not. A block whose data is one byte short ends the walk."""
    payload = (b"Photoshop 3.0\0" + _resource(0x0408, bytes(12)) + _resource(0x0404, _iptc_record(caption=b"x"))
               + _resource(0x040A, b"\x01") + _resource(0x03EE, b"\x05Alpha"))
    kept = io._photoshop_payload_for_output(payload)
    assert [rid for rid, _ in io._photoshop_resources(kept[14:])] == [0x0404, 0x040A]
    short = b"8BIM" + struct.pack(">HHI", 0x0404, 0, 6) + b"12345"  # says 6 bytes, holds 5
    assert list(io._photoshop_resources(short)) == []
    odd_last = b"8BIM" + struct.pack(">HHI", 0x0404, 0, 5) + b"12345"  # odd size, its padding byte missing: whole
    assert [rid for rid, _ in io._photoshop_resources(odd_last)] == [0x0404]


def test_a_12_bit_jpeg_2000_scan_is_scaled_by_its_bit_depth():
    """OpenCV decodes a 12-bit JPEG 2000 codestream into 16-bit samples without scaling them (0..4095: a picture 16
    times too dark); the bit depth in its SIZ marker scales them. The file is FFmpeg's JPEG 2000 encoder's."""
    av = pytest.importorskip("av", reason="PyAV (the video extra) writes the 12-bit JPEG 2000 file")
    from fractions import Fraction

    ctx = av.CodecContext.create("jpeg2000", "w")
    ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = 16, 8, "gray12le", Fraction(1, 25)
    ramp = (np.arange(128).reshape(8, 16) * 32).astype(np.uint16)  # 0 .. 4064 of 4095
    packets = ctx.encode(av.VideoFrame.from_ndarray(ramp, format="gray12le")) + ctx.encode(None)
    data = b"".join(bytes(p) for p in packets)
    assert io._jpeg2000_maxval(data) == 4095
    img = io.decode_image(data)
    assert img.bit_depth == 16 and img.is_gray
    np.testing.assert_allclose(img.rgb[..., 0] * 4095, ramp, atol=1.01)  # the encoder is near-lossless by default
    eight = pyio.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(eight, format="JPEG2000")
    assert io._jpeg2000_maxval(eight.getvalue()) is None  # 8 bits: the decoded range is the full one
