"""A photo's metadata carried into its outputs: embedded ICC colour profiles (Adobe RGB cameras, Display P3 phones,
scanners), so a colour-managed viewer shows the restored photo in the input's colours; XMP and IPTC (captions,
credits, copyright, keywords), so a photo library still knows what the picture is.

Independent checks: the profiles are built here byte by byte from the ICC specification (a matrix/TRC profile) and
opened by LittleCMS (Pillow's ImageCms); outputs are read back by Pillow; colours are compared as LittleCMS shows
them in sRGB.
"""

from __future__ import annotations

import io as pyio
import json
import struct

import numpy as np
import pytest
from PIL import Image

from facerestore import io
from facerestore.cli import main
from facerestore.methods import MethodSpec, Restorer

ImageCms = pytest.importorskip("PIL.ImageCms", reason="Pillow without LittleCMS")

# Adobe RGB (1998): primaries adapted to the ICC's D50 and a 2.2 gamma (563/256), from its specification
ADOBE_RGB = {"r": (0.6097, 0.3111, 0.0195), "g": (0.2053, 0.6257, 0.0609), "b": (0.1492, 0.0632, 0.7446)}


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def matrix_profile(name: str, primaries: dict[str, tuple[float, float, float]], gamma: float = 563 / 256,
                   space: bytes = b"RGB ") -> bytes:
    """An ICC v2 display profile: description, D50 white, the three primaries' XYZ and one gamma per channel."""
    desc = b"desc" + b"\0" * 4 + struct.pack(">I", len(name) + 1) + name.encode() + b"\0" + b"\0" * 12 + b"\0" * 67
    xyz = {k: b"XYZ " + b"\0" * 4 + b"".join(_s15(c) for c in v) for k, v in primaries.items()}
    curv = b"curv" + b"\0" * 4 + struct.pack(">I", 1) + struct.pack(">H", round(gamma * 256)) + b"\0\0"
    tags = [(b"desc", desc), (b"wtpt", b"XYZ " + b"\0" * 4 + _s15(0.9642) + _s15(1.0) + _s15(0.8249)),
            (b"rXYZ", xyz["r"]), (b"gXYZ", xyz["g"]), (b"bXYZ", xyz["b"]),
            (b"rTRC", curv), (b"gTRC", curv), (b"bTRC", curv), (b"cprt", b"text" + b"\0" * 4 + b"test\0\0\0\0")]
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for sig, data in tags:
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data + b"\0" * (-len(data) % 4)
    size = offset + len(body)
    header = (struct.pack(">I", size) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"mntr" + space + b"XYZ "
              + b"\0" * 12 + b"acsp" + b"\0" * 4 + b"\0" * 4 + b"\0" * 8 + b"\0" * 8 + b"\0" * 4
              + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + b"\0" * 4 + b"\0" * 16 + b"\0" * 28)
    assert len(header) == 128
    return header + table + body


@pytest.fixture(scope="module")
def adobe() -> bytes:
    return matrix_profile("Adobe RGB (1998) test", ADOBE_RGB)


def _as_srgb(img: Image.Image, profile: bytes | None) -> np.ndarray:
    """What a colour-managed viewer shows: the pixels through ``profile`` (sRGB when None) into sRGB."""
    if profile is None:
        return np.asarray(img.convert("RGB")).astype(float)
    src = ImageCms.ImageCmsProfile(pyio.BytesIO(profile))
    return np.asarray(ImageCms.profileToProfile(img.convert("RGB"), src, ImageCms.createProfile("sRGB"))).astype(float)


def test_the_hand_built_profile_is_one_littlecms_uses(adobe):
    """Sanity of the test's own profile: LittleCMS names it and maps Adobe RGB's pure green outside sRGB (clipped
    to a green with red 0), and its grey to the same grey (both D50-adapted, gamma 2.2 vs sRGB's curve: close)."""
    assert io.icc_description(adobe) == "Adobe RGB (1998) test"
    px = Image.fromarray(np.array([[[0, 255, 0], [128, 128, 128]]], np.uint8))
    shown = _as_srgb(px, adobe)
    assert shown[0, 0, 0] < 10 and shown[0, 0, 1] > 250
    assert np.abs(shown[0, 1] - 128).max() <= 3


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_profiles_are_read_and_written_back_byte_for_byte(tmp_path, adobe, fmt):
    """JPEG (APP2) and PNG (iCCP) inputs give the profile; JPEG and PNG outputs carry it, next to the EXIF."""
    arr = np.random.default_rng(0).integers(0, 256, (24, 32, 3), np.uint8)
    exif = Image.Exif()
    exif[0x010F] = "facerestore-test"
    src = tmp_path / f"in.{fmt.lower()}"
    Image.fromarray(arr).save(src, format=fmt, icc_profile=adobe, exif=exif.tobytes())
    loaded = io.read_image(src)
    assert loaded.metadata.icc_profile == adobe
    for ext in (".jpg", ".png"):
        out = io.write_image(tmp_path / f"out{ext}", loaded.rgb, metadata=loaded.metadata)
        with Image.open(out) as im:
            assert im.info.get("icc_profile") == adobe and im.getexif().get(0x010F) == "facerestore-test"
    assert io.read_image(tmp_path / "out.png").rgb.tobytes() == loaded.rgb.tobytes()  # pixels untouched


def test_a_profile_over_64k_spans_several_jpeg_segments(tmp_path, adobe):
    """JPEG segments hold at most 65,519 profile bytes: a larger profile (printer and scanner profiles with
    lookup tables) is split into numbered APP2 segments, which Pillow joins back."""
    big = adobe + bytes(range(256)) * 600  # 153,600 bytes of private data after the tags
    big = struct.pack(">I", len(big)) + big[4:]
    out = io.write_image(tmp_path / "big.jpg", np.full((8, 8, 3), 0.5, np.float32),
                         metadata=io.ImageMetadata(icc_profile=big))
    data = out.read_bytes()
    assert data.count(b"ICC_PROFILE\0") == 3
    with Image.open(out) as im:
        assert im.info["icc_profile"] == big


def test_cmyk_and_mismatched_profiles_are_not_carried(tmp_path, adobe):
    """A CMYK JPEG's profile describes ink, not the RGB pixels it is read as; a gray profile does not describe
    colour pixels: neither goes into an output (it would mislead viewers)."""
    cmyk_profile = adobe[:16] + b"CMYK" + adobe[20:]
    src = tmp_path / "print.jpg"
    Image.new("CMYK", (16, 16), (0, 80, 120, 10)).save(src, icc_profile=cmyk_profile)
    assert io.read_image(src).metadata.icc_profile is None
    gray_profile = adobe[:16] + b"GRAY" + adobe[20:]
    Image.new("RGB", (16, 16), (10, 200, 30)).save(tmp_path / "odd.png", icc_profile=gray_profile)
    assert io.read_image(tmp_path / "odd.png").metadata.icc_profile is None
    out = io.write_image(tmp_path / "o.png", np.zeros((4, 4, 3), np.float32),
                         metadata=io.ImageMetadata(icc_profile=gray_profile))
    assert "icc_profile" not in Image.open(out).info
    Image.new("L", (16, 16), 90).save(tmp_path / "gray.png", icc_profile=gray_profile)
    gray = io.read_image(tmp_path / "gray.png")
    assert gray.is_gray and gray.metadata.icc_profile == gray_profile
    out = io.write_image(tmp_path / "g.png", gray.rgb, gray=True, metadata=gray.metadata)
    assert Image.open(out).info["icc_profile"] == gray_profile
    assert io._usable_icc(adobe[:100]) is None and io._usable_icc(b"x" * 200) is None
    # 16-bit gray + alpha is written as gray + alpha (colour type 4): the gray profile goes with it, as the
    # PNG's header says what was written
    out = io.write_image(tmp_path / "la16.png", np.full((4, 4, 3), 0.5, np.float32), alpha=np.ones((4, 4), np.float32),
                         bit_depth=16, gray=True, metadata=io.ImageMetadata(icc_profile=gray_profile))
    assert out.read_bytes()[25] == 4 and Image.open(out).info["icc_profile"] == gray_profile
    rgba = io.write_image(tmp_path / "rgba16.png", np.full((4, 4, 3), 0.5, np.float32),
                          alpha=np.ones((4, 4), np.float32), bit_depth=16,
                          metadata=io.ImageMetadata(icc_profile=gray_profile))
    assert rgba.read_bytes()[25] == 6 and b"iCCP" not in rgba.read_bytes()  # colour pixels: no gray profile


class _Identity(Restorer):
    spec = MethodSpec("test-icc-id", "test", "identity", size=256)

    def __init__(self, weights=None) -> None:
        super().__init__()

    def _restore(self, x, *, fidelity, refs):
        return x.clone()


@pytest.fixture()
def identity_method(monkeypatch):
    from facerestore import pipeline
    from facerestore.methods import registry

    monkeypatch.setattr(registry, "REGISTRY", registry.REGISTRY.with_restorer(_Identity))
    monkeypatch.setattr(pipeline, "_RESTORERS", {})


def test_restore_keeps_an_adobe_rgb_photo_in_its_colours(tmp_path, adobe, astronaut_path, identity_method):
    """A camera's Adobe RGB JPEG through `facerestore restore`: the restored photo and the face crops carry its
    profile and the JSON names it, so a colour-managed viewer shows what it showed for the input (before, the
    output had no profile and its colours were shown as sRGB: greens and reds visibly duller)."""
    src = tmp_path / "in"
    src.mkdir()
    Image.open(astronaut_path).convert("RGB").save(src / "camera.jpg", quality=95, icc_profile=adobe)
    out = tmp_path / "out"
    assert main(["restore", "-i", str(src / "camera.jpg"), "-o", str(out), "--method", "test-icc-id",
                 "--upscale", "1", "--detector", "hog", "-q"]) == 0
    restored = out / "restored_imgs" / "camera.jpg"
    record = json.loads((out / "restored_imgs" / "camera.json").read_text())
    assert record["color_profile"] == "Adobe RGB (1998) test" and record["num_faces"] >= 1
    with Image.open(restored) as im:
        assert im.info["icc_profile"] == adobe
        shown = _as_srgb(im, im.info.get("icc_profile"))
        unmanaged = _as_srgb(im, None)  # what the output looked like without its profile
    with Image.open(src / "camera.jpg") as im:
        before = _as_srgb(im, adobe)
    assert np.abs(shown - before).mean() < 3  # JPEG re-encoding and the identity restorer's paste
    assert np.abs(unmanaged - before).mean() > 2 * np.abs(shown - before).mean()
    for crop in ("cropped_faces", "restored_faces", "cmp"):
        with Image.open(out / crop / "camera_00.png") as im:
            assert im.info["icc_profile"] == adobe


def test_photos_without_a_profile_get_none(tmp_path, identity_method):
    """No profile in, none out (sRGB, as every viewer assumes), and the JSON says null."""
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(tmp_path / "plain.png")
    assert io.read_image(tmp_path / "plain.png").metadata == io.ImageMetadata()
    out = tmp_path / "o"
    assert main(["restore", "-i", str(tmp_path / "plain.png"), "-o", str(out), "--method", "test-icc-id",
                 "--upscale", "1", "--detector", "hog", "-q"]) == 0
    assert json.loads((out / "restored_imgs" / "plain.json").read_text())["color_profile"] is None
    assert "icc_profile" not in Image.open(out / "restored_imgs" / "plain.png").info


def test_face_crops_of_the_dataset_command_carry_the_profile(tmp_path, adobe, astronaut_path):
    """`facerestore faces` cuts aligned crops out of the photo's pixels: they are in its colour space too."""
    Image.open(astronaut_path).convert("RGB").save(tmp_path / "camera.png", icc_profile=adobe)
    out = tmp_path / "crops"
    assert main(["faces", "-i", str(tmp_path / "camera.png"), "-o", str(out), "--detector", "hog", "-q"]) == 0
    crops = sorted(out.glob("camera_*.png"))
    assert crops and all(Image.open(c).info["icc_profile"] == adobe for c in crops)


XMP = (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
       b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
       b'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/" '
       b'tiff:Orientation="6"><dc:description><rdf:Alt><rdf:li xml:lang="x-default">Grandma, summer 1952'
       b'</rdf:li></rdf:Alt></dc:description><dc:rights><rdf:Alt><rdf:li xml:lang="x-default">(c) the family'
       b'</rdf:li></rdf:Alt></dc:rights></rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>')


def iptc_block(caption: bytes, credit: bytes) -> bytes:
    """An APP13 payload as Photoshop and photo managers write it: one 8BIM IPTC-NAA resource (0x0404) holding
    records 2:120 (caption) and 2:110 (credit)."""
    records = b"".join(b"\x1c\x02" + bytes([tag]) + struct.pack(">H", len(v)) + v
                       for tag, v in ((120, caption), (110, credit)))
    records += b"\0" * (len(records) & 1)
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\0\0" + struct.pack(">I", len(records)) + records
    return b"Photoshop 3.0\0" + resource


def sideways_jpeg_with_story(path, astronaut_path) -> None:
    """The example stored rotated with EXIF and XMP orientation 6 (displayed upright), a caption in XMP and IPTC."""
    upright = Image.open(astronaut_path).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = pyio.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buf, format="JPEG", quality=95, exif=exif.tobytes(), xmp=XMP)
    data = buf.getvalue()
    seg = iptc_block(b"Grandma, summer 1952", b"the family")
    path.write_bytes(data[:2] + b"\xff\xed" + struct.pack(">H", len(seg) + 2) + seg + data[2:])


def test_captions_credits_and_keywords_survive_restoration(tmp_path, astronaut_path, identity_method):
    """XMP and IPTC (what Lightroom, digiKam and photo libraries keep captions, credits and copyright in) go into the
    restored JPEG unchanged, except XMP's orientation, reset to 1 as the EXIF's (the pixels are written upright: a
    viewer reading the XMP's 6 would turn them a second time); a PNG output gets the XMP (PNG has no IPTC); face
    crops get neither (they are not the photo)."""
    from PIL import IptcImagePlugin

    src = tmp_path / "in"
    src.mkdir()
    sideways_jpeg_with_story(src / "scan.jpg", astronaut_path)
    loaded = io.read_image(src / "scan.jpg")
    assert loaded.rgb.shape == (512, 512, 3)
    assert b'tiff:Orientation="1"' in loaded.metadata.xmp and b"Grandma, summer 1952" in loaded.metadata.xmp
    assert loaded.metadata.iptc.startswith(b"Photoshop 3.0\0")
    for ext in ("jpg", "png"):
        out = tmp_path / ext
        assert main(["restore", "-i", str(src), "-o", str(out), "--method", "test-icc-id", "--upscale", "1",
                     "--detector", "hog", "--ext", ext, "-q"]) == 0
        with Image.open(out / "restored_imgs" / f"scan.{ext}") as im:
            assert im.size == (512, 512) and im.getexif().get(0x0112) == 1
            xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
            xmp = xmp.encode() if isinstance(xmp, str) else xmp
            assert xmp == loaded.metadata.xmp and b'tiff:Orientation="6"' not in xmp
            iptc = IptcImagePlugin.getiptcinfo(im)
            if ext == "jpg":
                assert iptc[(2, 120)] == b"Grandma, summer 1952" and iptc[(2, 110)] == b"the family"
            else:
                assert iptc is None
        with Image.open(out / "cropped_faces" / "scan_00.png") as crop:
            assert "xmp" not in crop.info and "XML:com.adobe.xmp" not in crop.info and "exif" not in crop.info


def test_xmp_orientation_is_reset_in_both_spellings():
    """XMP writes the orientation as an attribute or as an element; both become 1, nothing else changes."""
    attr = b'<rdf:Description tiff:Orientation = "8" tiff:Make="x"/>'
    elem = b"<tiff:Orientation> 3 </tiff:Orientation><dc:title>3</dc:title>"
    assert io._upright_xmp(attr) == b'<rdf:Description tiff:Orientation = "1" tiff:Make="x"/>'
    assert io._upright_xmp(elem.decode()) == b"<tiff:Orientation>1</tiff:Orientation><dc:title>3</dc:title>"
    assert io._upright_xmp(b"  ") is None and io._upright_xmp(None) is None


def test_stated_sizes_follow_the_written_image(tmp_path):
    """An upscaled output states its own size: EXIF PixelX/YDimension and XMP's exif:/tiff: size fields (attribute
    or element) are rewritten, everything else is left as it was."""
    exif = Image.Exif()
    exif[0x010F] = "camera"
    exif.get_ifd(0x8769)[0xA002], exif.get_ifd(0x8769)[0xA003] = 40, 30
    xmp = (b'<rdf:Description exif:PixelXDimension="40" exif:PixelYDimension = "30" tiff:Make="c">'
           b"<tiff:ImageWidth>40</tiff:ImageWidth><tiff:ImageLength>30</tiff:ImageLength></rdf:Description>")
    meta = io.ImageMetadata(exif=exif.tobytes(), xmp=xmp)
    out = io.write_image(tmp_path / "up.jpg", np.zeros((60, 80, 3), np.float32), metadata=meta)
    with Image.open(out) as im:
        got = im.getexif()
        assert got.get_ifd(0x8769)[0xA002] == 80 and got.get_ifd(0x8769)[0xA003] == 60 and got[0x010F] == "camera"
        assert im.info["xmp"] == (b'<rdf:Description exif:PixelXDimension="80" exif:PixelYDimension = "60" '
                                  b'tiff:Make="c"><tiff:ImageWidth>80</tiff:ImageWidth>'
                                  b"<tiff:ImageLength>60</tiff:ImageLength></rdf:Description>")


def test_motion_photo_and_gain_map_pointers_are_not_carried():
    """A Pixel's Motion Photo (a video appended after the JPEG) and Ultra HDR photo (a gain map appended) describe
    those parts in the XMP; the restored JPEG has neither, so those properties and the item directory go, while
    the caption and the namespace declarations stay (a valid packet)."""
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description rdf:about="" xmlns:GCamera="http://ns.google.com/photos/1.0/camera/" '
           b'xmlns:hdrgm="http://ns.adobe.com/hdr-gain-map/1.0/" '
           b'xmlns:Container="http://ns.google.com/photos/1.0/container/" '
           b'xmlns:Item="http://ns.google.com/photos/1.0/container/item/" xmlns:dc="http://purl.org/dc/elements/1.1/" '
           b'GCamera:MotionPhoto="1" GCamera:MotionPhotoVersion="1" GCamera:MotionPhotoPresentationTimestampUs="0" '
           b"hdrgm:Version='1.0'><dc:title>Party</dc:title>"
           b'<Container:Directory><rdf:Seq><rdf:li rdf:parseType="Resource"><Container:Item Item:Mime="image/jpeg" '
           b'Item:Semantic="Primary" Item:Length="0"/></rdf:li><rdf:li rdf:parseType="Resource"><Container:Item '
           b'Item:Mime="video/mp4" Item:Semantic="MotionPhoto" Item:Length="2834911"/></rdf:li></rdf:Seq>'
           b"</Container:Directory></rdf:Description></rdf:RDF></x:xmpmeta>")
    out = io._upright_xmp(xmp)
    assert b"MotionPhoto" not in out and b"hdrgm:Version" not in out and b"Directory" not in out
    assert b"Item:" not in out and b"<dc:title>Party</dc:title>" in out
    import xml.etree.ElementTree as ET

    root = ET.fromstring(out)  # still well-formed XML
    desc = root.find(".//{http://www.w3.org/1999/02/22-rdf-syntax-ns#}Description")
    assert list(desc.attrib) == ["{http://www.w3.org/1999/02/22-rdf-syntax-ns#}about"]
