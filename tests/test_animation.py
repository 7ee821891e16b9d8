"""Animated GIF, WebP and PNG inputs (facerestore.io.is_animation, facerestore.video.restore_animation and
`restore -i anim.gif`): animations written here with Pillow from the bundled example.

Independent checks: outputs are decoded again by Pillow (frame count, size, each frame's duration, looping,
transparency), an identity restorer must give back the input frames, the input's sha256 is unchanged.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facerestore import io, video
from facerestore.cli import main
from facerestore.errors import InputError
from facerestore.methods import MethodSpec, Restorer

DURATIONS = [40, 80, 120, 80, 40, 80, 120, 80, 40, 80]


class _Identity(Restorer):
    spec = MethodSpec("test-anim-id", "test", "identity", size=128)

    def __init__(self, weights=None) -> None:
        super().__init__()

    def _restore(self, x, *, fidelity, refs):
        return x.clone()


class _Darker(_Identity):
    spec = MethodSpec("test-anim-dark", "test", "darkens faces", size=128)

    def _restore(self, x, *, fidelity, refs):
        return x * 0.8


@pytest.fixture(autouse=True)
def test_methods(monkeypatch):
    from facerestore import pipeline
    from facerestore.methods import registry

    monkeypatch.setattr(registry, "REGISTRY", registry.REGISTRY.with_restorer(_Identity).with_restorer(_Darker))
    monkeypatch.setattr(pipeline, "_RESTORERS", {})


def face_frames(astronaut: np.ndarray, n: int = len(DURATIONS), size: int = 128) -> list[Image.Image]:
    """The example's face, its window moving 2 px right per frame, as RGB images."""
    img = Image.fromarray(io.quantize(astronaut, 8))
    return [img.crop((140 + 2 * t, 60, 300 + 2 * t, 220)).resize((size, size), Image.Resampling.BOX) for t in range(n)]


def write_animation(path: Path, frames: list[Image.Image], durations=DURATIONS, loop: int | None = 0,
                    **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {} if loop is None else {"loop": loop}
    if path.suffix == ".webp":
        extra["lossless"] = kw.pop("lossless", True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=list(durations[: len(frames)]), **extra,
                   **kw)
    return path


def decoded(path: Path) -> tuple[list[np.ndarray], list[int], int | None, str]:
    """Every frame (RGBA uint8), each frame's duration, the loop count and the format, read back by Pillow."""
    with Image.open(path) as im:
        frames, durations = [], []
        for k in range(im.n_frames):
            im.seek(k)
            frames.append(np.asarray(im.convert("RGBA")))
            durations.append(int(im.info.get("duration", 0)))
        return frames, durations, im.info.get("loop"), im.format


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------------- reading


def test_is_animation_reads_the_header_not_the_name(tmp_path, astronaut):
    frames = face_frames(astronaut, n=3)
    for ext in (".gif", ".webp", ".png"):
        assert io.is_animation(write_animation(tmp_path / f"anim{ext}", frames))
        still = tmp_path / f"still{ext}"
        frames[0].save(still)
        assert not io.is_animation(still)
    (tmp_path / "fake.gif").write_bytes(b"GIF89a but not really")
    assert not io.is_animation(tmp_path / "fake.gif")
    assert not io.is_animation(tmp_path / "missing.gif")
    (tmp_path / "anim.jpg").write_bytes((tmp_path / "anim.gif").read_bytes())
    assert not io.is_animation(tmp_path / "anim.jpg")  # only the formats that can hold frames are asked


def test_a_gif_reads_as_its_palette_colours_and_is_written_back_as_png(tmp_path, astronaut):
    p = tmp_path / "old.gif"
    Image.fromarray(io.quantize(astronaut, 8)).quantize(64).save(p)
    got = io.read_image(p)
    want = np.asarray(Image.open(p).convert("RGB"), np.float32) / 255
    assert got.alpha is None and got.bit_depth == 8 and not got.is_gray
    np.testing.assert_array_equal(got.rgb, want)
    assert io.is_image_file(p) and io.output_extension(p, False) == ".png"
    assert io.list_images(tmp_path) == [p]


def test_an_animated_file_read_as_a_photo_is_its_first_frame(tmp_path, astronaut):
    frames = face_frames(astronaut, n=3)
    for ext in (".webp", ".png", ".gif"):
        p = write_animation(tmp_path / f"a{ext}", frames)
        first = np.asarray(Image.open(p).convert("RGB"), np.float32) / 255
        np.testing.assert_array_equal(io.read_image(p).rgb, first)
    # lossless WebP and APNG keep the frame exactly
    np.testing.assert_array_equal(io.read_image(tmp_path / "a.png").rgb, np.asarray(frames[0], np.float32) / 255)


@pytest.mark.parametrize("ext", [".gif", ".webp", ".png"])
def test_probe_animation(tmp_path, astronaut, ext):
    frames = face_frames(astronaut, n=4)
    info = video.probe_animation(write_animation(tmp_path / f"a{ext}", frames, loop=3))
    assert (info.width, info.height, info.frames, info.loop, info.transparency) == (128, 128, 4, 3, False)
    assert info.durations_ms == DURATIONS[:4] and info.format == io.ANIMATION_FORMATS[ext]
    assert float(info.fps) == pytest.approx(4 / 0.32)


@pytest.mark.parametrize("ext", [".gif", ".webp", ".png"])
def test_probe_animation_checks_the_header_before_decoding_frames(tmp_path, astronaut, ext, monkeypatch):
    """A server's limits see the header's size and frame count before any frame is decoded (reading durations
    decodes every WebP frame: a many-frame, huge-frame file would hold a worker for minutes)."""
    from facerestore.errors import InputError

    p = write_animation(tmp_path / f"a{ext}", face_frames(astronaut, n=4))
    seen = []

    def refuse(w: int, h: int, n: int) -> None:
        seen.append((w, h, n))
        raise InputError("over the limit")

    monkeypatch.setattr(video, "_animation_info", lambda im: pytest.fail("frames were read"))
    with pytest.raises(InputError, match="over the limit"):
        video.probe_animation(p, check=refuse)
    assert seen == [(128, 128, 4)]


def test_probe_animation_tells_once_from_forever_and_sees_transparency(tmp_path, astronaut):
    frames = [f.convert("RGBA") for f in face_frames(astronaut, n=2)]
    for f in frames:
        f.putalpha(Image.fromarray(np.where(np.arange(128)[None, :] < 32, 0, 255).astype(np.uint8).repeat(128, 0)))
    once = video.probe_animation(write_animation(tmp_path / "once.gif", frames, loop=None))
    assert once.loop is None and once.transparency
    assert video.probe_animation(write_animation(tmp_path / "t.webp", frames)).transparency
    opaque = [f.convert("RGB").convert("RGBA") for f in frames]  # an alpha channel with nothing transparent
    assert not video.probe_animation(write_animation(tmp_path / "o.webp", opaque)).transparency
    with pytest.raises(InputError, match="cannot decode image"):
        (tmp_path / "bad.gif").write_bytes(b"GIF89a\0\0")
        video.probe_animation(tmp_path / "bad.gif")


# ---------------------------------------------------------------------------------------------------- restoring


def test_a_lossy_webp_animation_stays_lossy(tmp_path, astronaut):
    """A lossy animated WebP is written lossy (at webp_quality), a lossless one losslessly (above)."""
    src = write_animation(tmp_path / "in" / "face.webp", face_frames(astronaut, n=3), lossless=False, quality=80)
    assert not io.webp_is_lossless(src.read_bytes())
    dst = tmp_path / "out.webp"
    video.restore_animation(src, dst, _Identity(), upscale=1, detector="hog", mask="square", color_match=False)
    assert not io.webp_is_lossless(dst.read_bytes())


@pytest.mark.parametrize("ext", [".gif", ".webp", ".png"])
def test_restore_animation_keeps_frames_durations_and_looping(tmp_path, astronaut, ext):
    src = write_animation(tmp_path / "in" / f"face{ext}", face_frames(astronaut), loop=2)
    before = sha(src)
    dst = tmp_path / "out" / f"face{ext}"
    dst.parent.mkdir()
    res = video.restore_animation(src, dst, _Identity(), upscale=1, detector="hog", mask="square",
                                  color_match=False)
    frames, durations, loop, fmt = decoded(dst)
    assert (len(frames), durations, loop, fmt) == (len(DURATIONS), DURATIONS, 2, io.ANIMATION_FORMATS[ext])
    assert frames[0].shape == (128, 128, 4) and (frames[0][:, :, 3] == 255).all()
    assert res.frames == len(DURATIONS) and sum(res.faces_per_frame) >= 8 and res.tracks == 1
    assert res.codec == {".gif": "gif", ".webp": "webp", ".png": "apng"}[ext]
    assert (res.palettes == 1) if ext == ".gif" else res.palettes is None
    # an identity restorer gives the input back: exactly for APNG and the lossless WebP (lossless stays lossless),
    # within a GIF palette
    want, _, _, _ = decoded(src)
    err = max(np.abs(a[:, :, :3].astype(int) - b[:, :, :3].astype(int)).mean() for a, b in zip(frames, want))
    assert err <= {".png": 0.5, ".webp": 0.5, ".gif": 4.0}[ext], err
    if ext == ".webp":
        assert io.webp_is_lossless(dst.read_bytes())
    assert sha(src) == before and not [p for p in dst.parent.iterdir() if p.name.startswith(".")]


def test_the_restoration_reaches_the_frames(tmp_path, astronaut):
    src = write_animation(tmp_path / "face.png", face_frames(astronaut, n=4))
    dst = tmp_path / "out.png"
    res = video.restore_animation(src, dst, _Darker(), upscale=2, detector="hog", mask="square", gate=False,
                                  color_match=False)
    frames, _, _, _ = decoded(dst)
    want, _, _, _ = decoded(src)
    assert frames[0].shape == (256, 256, 4) and res.width == res.height == 256
    face_now = frames[2][96:160, 96:160, :3].mean()
    face_before = want[2][48:80, 48:80, :3].mean()
    assert face_now < 0.9 * face_before  # the darkened face was pasted into every frame


def test_gif_frames_share_a_palette_so_a_still_background_stays_still(tmp_path):
    """A colourful still background with a moving square: with one palette the background's pixels (dither
    included) are identical from frame to frame; a cut to another scene gets a new palette."""
    yy, xx = np.mgrid[0:96, 0:96] / 95.0
    bg = np.dstack([xx, yy, 0.5 + 0.5 * np.sin(6 * xx * yy)])
    scene = []
    for t in range(6):
        f = bg.copy()
        f[10 + 4 * t: 26 + 4 * t, 10:26] = (1.0, 0.2, 0.2)
        scene.append(Image.fromarray(io.quantize(f, 8)))
    other = [Image.fromarray(io.quantize(1 - bg[:, :, ::-1] * 0.5, 8))] * 2
    src = write_animation(tmp_path / "bg.png", scene + other, durations=[50] * 8)
    res = video.restore_animation(src, tmp_path / "bg_out.png", _Identity(), upscale=1, detector="hog")
    assert sum(res.faces_per_frame) == 0
    # the source GIF itself must be still where the scene is: one palette, no dither (Pillow's own GIF writer
    # quantizes each frame with Floyd-Steinberg, whose pattern moves with the square)
    palette = scene[0].quantize(255, dither=Image.Dither.NONE)
    stable = [f.quantize(palette=palette, dither=Image.Dither.NONE) for f in scene]
    gif_src = write_animation(tmp_path / "bg.gif", stable + [f.quantize(255) for f in other], durations=[50] * 8)
    res = video.restore_animation(gif_src, tmp_path / "bg_out.gif", _Identity(), upscale=1, detector="hog")
    frames, _, _, _ = decoded(tmp_path / "bg_out.gif")
    still = np.ones((96, 96), bool)
    still[:60, :40] = False  # where the square moves (and the dither it disturbs, to its right and below)
    for a, b in itertools.pairwise(frames[:6]):
        np.testing.assert_array_equal(a[still], b[still])
    assert res.palettes == 2  # the cut got its own
    # and the colours are close to the input's (255 colours with dithering)
    assert np.abs(frames[0][:, :, :3] / 255.0 - np.asarray(scene[0]) / 255.0).mean() < 0.02


def test_gif_transparency_is_kept(tmp_path, astronaut):
    frames = [f.convert("RGBA") for f in face_frames(astronaut, n=3)]
    alpha = np.full((128, 128), 255, np.uint8)
    alpha[:, :20] = 0
    for f in frames:
        f.putalpha(Image.fromarray(alpha))
    src = write_animation(tmp_path / "t.gif", frames, durations=[60] * 3, disposal=2)
    dst = tmp_path / "t_out.gif"
    video.restore_animation(src, dst, _Identity(), upscale=1, detector="hog")
    out, durations, _, _ = decoded(dst)
    assert durations == [60] * 3
    for f in out:
        assert (f[:, :20, 3] == 0).all() and (f[:, 24:, 3] == 255).all()


def test_restore_animation_refuses_with_one_line(tmp_path, astronaut, monkeypatch):
    src = write_animation(tmp_path / "a.gif", face_frames(astronaut, n=3))
    with pytest.raises(InputError, match=r"animated GIF: its output must end in \.gif, not \.webp"):
        video.restore_animation(src, tmp_path / "a.webp", _Identity())
    monkeypatch.setattr(video, "ANIMATION_MAX_BYTES", 100_000)
    with pytest.raises(InputError, match=r"3 frames of 256x256\) would hold 0\.0 GB in memory"):
        video.restore_animation(src, tmp_path / "b.gif", _Identity(), upscale=2)
    with pytest.raises(InputError, match="refusing to overwrite input"):
        video.restore_animation(src, src, _Identity())
    assert not (tmp_path / "a.webp").exists() and not (tmp_path / "b.gif").exists()


# ---------------------------------------------------------------------------------------------------- the CLI


def test_cli_restores_animations_beside_photos(tmp_path, astronaut, capsys):
    d = tmp_path / "in"
    anim = write_animation(d / "clip.gif", face_frames(astronaut, n=4))
    face_frames(astronaut, n=1)[0].quantize(128).save(d / "still.gif")
    before = sha(anim)
    out = tmp_path / "out"
    code = main(["restore", "-i", str(d), "-o", str(out), "--method", "test-anim-id", "--upscale", "1",
                 "--device", "cpu", "--detector", "hog", "-q"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert " of 2 files with test-anim-id" in err  # a photo and an animation: neither "images" nor "videos"
    frames, durations, loop, _ = decoded(out / "restored_videos" / "clip.gif")
    assert (len(frames), durations, loop) == (4, DURATIONS[:4], 0)
    record = (out / "restored_videos" / "clip.json").read_text()
    assert '"codec": "gif"' in record and '"gif_palettes": 1' in record
    assert (out / "restored_imgs" / "still.png").is_file() and sha(anim) == before
    code = main(["restore", "-i", str(anim), "-o", str(tmp_path / "o2"), "--method", "test-anim-id", "--aligned",
                 "-q"])
    assert code == 2 and "not to videos or animations" in capsys.readouterr().err
    assert main(["restore", "-i", str(anim), "-o", str(tmp_path / "o3"), "--method", "test-anim-id", "--upscale", "1",
                 "--detector", "hog", "-q"]) == 0
    assert " of 1 video with test-anim-id" in capsys.readouterr().err



@pytest.mark.parametrize("ext", [".webp", ".png"])
def test_an_animation_keeps_its_colour_profile(tmp_path, astronaut, ext):
    """Animated WebP and PNG carry an ICC profile (and WebP an XMP packet): the restored frames are in the input's
    colour space, so the output carries them too."""
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><dc:title xmlns:dc="http://purl.org/dc/elements/1.1/">'
           b"Wave</dc:title></x:xmpmeta>")
    kw = {"icc_profile": srgb, **({"xmp": xmp} if ext == ".webp" else {})}
    src = write_animation(tmp_path / "in" / f"wave{ext}", face_frames(astronaut, n=3), **kw)
    dst = tmp_path / f"out{ext}"
    video.restore_animation(src, dst, _Identity(), upscale=1, detector="hog")
    with Image.open(dst) as im:
        assert im.info.get("icc_profile") == srgb
        assert (im.info.get("xmp") == xmp) if ext == ".webp" else True


def test_gif_opaque_dark_pixels_never_take_the_transparent_index():
    """The palette is kept while frames stay close to it; a dark patch appearing later was quantized to the black
    padding entry 255 (the transparent index), a hole in an opaque area."""
    gif = video._GifPalette()
    bright = np.full((120, 160, 3), 200, np.uint8)
    bright[:, :80] = (230, 180, 90)
    alpha = np.full((120, 160), 255, np.uint8)
    alpha[:4, :4] = 0  # one transparent corner: transparency is in use
    gif.frame(bright, alpha)
    later = bright.copy()
    later[10:13, 5:25] = 3  # a dark outline that was not in the palette's frame
    idx = np.asarray(gif.frame(later, alpha))
    assert gif.palettes == 1  # the palette was kept (the error rise is small)
    assert ((idx == 255) & (alpha >= 128)).sum() == 0
    assert (idx[alpha < 128] == 255).all()
    # the dark patch took the nearest real palette colour (this palette has two), not a padding entry or a hole
    assert (idx[10:13, 5:25] < len(gif.colors)).all()
    nearest = ((gif.colors - 3.0) ** 2).sum(1).argmin()
    assert (idx[10:13, 5:25] == nearest).all()
