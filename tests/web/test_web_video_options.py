"""facerestore serve's video uploads and the CLI options the page offers (only-center-face, min-score, paste mask,
background upsampler, output format), without a browser: each reaches ``restore_photo`` / ``restore_video`` as
``facerestore restore`` passes it. Clips are written here with PyAV: a few 64 x 64 frames of the bundled example."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import EXAMPLES
from facerestore import io
from facerestore.errors import FaceRestoreError, InputError
from facerestore.web import jobs

LQ = EXAMPLES / "astronaut_lq.png"  # 192 x 192, one face


def _frames(n: int, size: int = 64) -> list[np.ndarray]:
    """The example's face, its window moving 2 px per frame, as ``size`` x ``size`` uint8 frames."""
    from PIL import Image

    img = np.asarray(Image.open(EXAMPLES / "astronaut.png").convert("RGB"))
    out = []
    for t in range(n):
        crop = Image.fromarray(img[60 + t: 220 + t, 140 + 2 * t: 300 + 2 * t])
        out.append(np.asarray(crop.resize((size, size), Image.Resampling.BOX)))
    return out


def write_clip(path: Path, n: int = 4, codec: str = "libx264", fps: int = 12, size: int = 64) -> Path:
    """A short clip of the example (:func:`_frames`) written with PyAV."""
    av = pytest.importorskip("av", reason="video uploads need PyAV (the web extra)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = size, size, "yuv420p"
        for i, img in enumerate(_frames(n, size)):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            vf.pts = i
            for p in vs.encode(vf):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
    return path


@pytest.fixture
def uploads(tmp_path) -> Path:
    """A stand-in for Gradio's upload folder (one sub-folder per upload): the example photo and a short clip."""
    root = tmp_path / "uploads"
    (root / "a1").mkdir(parents=True)
    shutil.copy(LQ, root / "a1" / "astronaut_lq.png")
    write_clip(root / "v1" / "clip.mp4")
    return root


@pytest.fixture
def spy(monkeypatch):
    """The keyword arguments of every restore_photo / restore_video call (the real functions still run)."""
    import facerestore.pipeline as pipeline
    import facerestore.video as video

    calls: dict[str, list[dict]] = {"photo": [], "video": []}
    real_photo, real_video = pipeline.restore_photo, video.restore_video

    def photo(*a, **k):
        calls["photo"].append(k)
        return real_photo(*a, **k)

    def vid(*a, **k):
        calls["video"].append(k)
        return real_video(*a, **k)

    monkeypatch.setattr(pipeline, "restore_photo", photo)
    monkeypatch.setattr(video, "restore_video", vid)
    return calls


def _job(tmp_path: Path, name: str = "job") -> Path:
    job = tmp_path / name
    job.mkdir()
    return job


# ---------------------------------------------------------------------------------------------------- options


@pytest.mark.parametrize("kw, msg", [({"mask": "oval"}, "unknown mask"), ({"bg_upsampler": "bicubic"},
                                                                          "unknown background upsampler"),
                                     ({"ext": "gif"}, "unknown format"), ({"min_score": float("nan")}, "min-score")])
def test_new_options_are_validated(kw, msg):
    with pytest.raises(InputError, match=msg):
        jobs.JobOptions(**kw).validate()


def test_options_reach_restore_photo_as_the_clis(tmp_path, uploads, spy):
    """only-center-face, min-score, mask and format: the values restore_photo gets, the detector's threshold,
    the file written and the record."""
    job = _job(tmp_path)
    opts = jobs.JobOptions(detector="dlib-hog", only_center_face=True, min_score=-0.25, mask="square", ext="jpg",
                           upscale=1)
    res = jobs.run_job([uploads / "a1" / "astronaut_lq.png"], opts, job, jobs.Limits(), uploads_root=uploads)
    assert res.errors == []
    (kw,) = spy["photo"]
    assert kw["only_center_face"] is True and kw["min_score"] == -0.25 and kw["mask"] == "square"
    assert kw["background"] == "lanczos" and kw["detector"].threshold == -0.25  # as `restore --min-score`
    (photo,) = res.photos
    assert photo.image == job / "restored_imgs" / "astronaut_lq.jpg" and len(photo.faces) == 1
    record = json.loads(photo.record.read_text())
    assert (record["mask"], record["min_score"], record["bg_upsampler"], record["only_center_face"]) == \
        ("square", -0.25, "lanczos", True)


def test_default_min_score_is_the_detectors_own(tmp_path, uploads, spy):
    from facerestore.faces.detect import DEFAULT_SCORE_THRESHOLDS

    res = jobs.run_job([uploads / "a1" / "astronaut_lq.png"], jobs.JobOptions(detector="dlib-hog", upscale=1),
                       _job(tmp_path), jobs.Limits(), uploads_root=uploads)
    (kw,) = spy["photo"]
    assert kw["min_score"] is None and kw["mask"] == "mesh" and kw["only_center_face"] is False
    assert json.loads(res.photos[0].record.read_text())["min_score"] == DEFAULT_SCORE_THRESHOLDS["hog"]
    assert res.photos[0].image.suffix == ".png"  # auto: a PNG stays PNG


@pytest.mark.parametrize("name, alpha, choice, ext", [
    ("a.jpeg", False, "auto", ".jpeg"), ("a.png", False, "auto", ".png"), ("a.jpg", True, "auto", ".png"),
    ("a.jpg", False, "png", ".png"), ("a.png", True, "jpg", ".jpg"), ("a.webp", False, "auto", ".webp"),
    ("a.webp", True, "auto", ".webp"),
    ("a.HEIC", False, "auto", ".jpg"), ("a.avif", True, "auto", ".png"), ("scan.TIF", True, "auto", ".TIF"),
    ("a.tiff", False, "auto", ".tiff"), ("a.jpg", False, "tif", ".tif"), ("a.bmp", False, "auto", ".png")])
def test_output_format(name, alpha, choice, ext):
    """The web page names its outputs as `restore --ext` does (one function: io.output_extension)."""
    from facerestore.cli.restore import EXT_CHOICES

    assert io.output_extension(name, alpha, choice) == ext
    assert jobs.EXT_CHOICES == EXT_CHOICES == io.OUTPUT_FORMATS


def test_esrgan_is_offered_only_when_cached(monkeypatch):
    monkeypatch.setattr(jobs, "esrgan_cached", lambda: False)
    choices, note = jobs.bg_upsampler_choices()
    assert [v for _, v in choices] == ["lanczos"] and "`facerestore models download esrgan-thick`" in note
    monkeypatch.setattr(jobs, "esrgan_cached", lambda: True)
    choices, note = jobs.bg_upsampler_choices()
    assert [v for _, v in choices] == ["lanczos", "esrgan"] and "minutes per megapixel" in note


def test_esrgan_reaches_restore_photo(tmp_path, uploads, spy, monkeypatch):
    import facerestore.faces.background as background
    from facerestore.faces.paste import upscale_image

    made = []

    def fake_esrgan(device="cpu", **kw):  # the weights are not needed to check the wiring
        def upsample(image, upscale):
            return upscale_image(image, upscale)

        made.append((device, upsample))
        return upsample

    monkeypatch.setattr(background, "esrgan_background", fake_esrgan)
    res = jobs.run_job([uploads / "a1" / "astronaut_lq.png"], jobs.JobOptions(bg_upsampler="esrgan", upscale=1,
                                                                              detector="dlib-hog"),
                       _job(tmp_path), jobs.Limits(), uploads_root=uploads)
    assert res.errors == [] and made and made[0][0] == "cpu"
    assert spy["photo"][0]["background"] is made[0][1]
    assert json.loads(res.photos[0].record.read_text())["bg_upsampler"] == "esrgan"


def test_esrgan_without_its_weights_is_a_one_line_job_error(tmp_path, uploads, monkeypatch):
    from facerestore import zoo

    real = zoo.weights_path

    def missing_esrgan(name, *a, **k):  # only ESRGAN's: the detector loads its own (in any test order)
        if name == "esrgan-thick":
            raise zoo.WeightsMissingError(f"weights {name} are not downloaded: facerestore models download {name}")
        return real(name, *a, **k)

    monkeypatch.setattr(zoo, "weights_path", missing_esrgan)
    with pytest.raises(FaceRestoreError) as e:
        jobs.run_job([uploads / "a1" / "astronaut_lq.png"], jobs.JobOptions(bg_upsampler="esrgan"), _job(tmp_path),
                     jobs.Limits(), uploads_root=uploads)
    assert "\n" not in io.one_line(e.value) and "esrgan-thick" in io.one_line(e.value)


def test_mask_choices_are_the_clis():
    assert [v for _, v in jobs.mask_choices()] == list(jobs.MASK_CHOICES) == ["mesh", "landmarks", "square"]


# ---------------------------------------------------------------------------------------------------- video


def test_video_is_restored_as_the_cli_restores_it(tmp_path, uploads, spy, monkeypatch):
    """The same restore_video call as `facerestore restore -i clip.mp4` (options and defaults: stabilisation on,
    the gate as restore_video applies it to videos), the CLI's layout (restored_videos/), a record naming the
    upload, the frames' progress and the zip."""
    from facerestore.cli import main

    clip = uploads / "v1" / "clip.mp4"
    cli_out = tmp_path / "cli"
    assert main(["restore", "-i", str(clip), "-o", str(cli_out), "-q", "--detector", "dlib-hog", "--upscale", "2",
                 "--fidelity", "0.5", "--blend", "0.8", "--mask", "landmarks", "--min-score", "-0.5",
                 "--only-center-face", "--no-gate"]) == 0
    job = _job(tmp_path)
    seen = []
    opts = jobs.JobOptions(detector="dlib-hog", upscale=2, fidelity=0.5, blend=0.8, mask="landmarks", min_score=-0.5,
                           only_center_face=True, gate=False)
    res = jobs.run_job([clip], opts, job, jobs.Limits(), uploads_root=uploads,
                       on_frame=lambda name, done, total: seen.append((name, done, total)))
    assert res.errors == [] and res.photos == []
    cli_kw, web_kw = spy["video"]
    skip = {"on_frame", "protect", "detector", "crf", "codec", "deinterlace"}  # callbacks, the CLI's guard, encoder
    assert cli_kw["deinterlace"] == "auto" and "deinterlace" not in web_kw  # and decoder options (their defaults)
    assert {k: v for k, v in web_kw.items() if k not in skip} == {k: v for k, v in cli_kw.items() if k not in skip}
    assert web_kw["detector"].threshold == cli_kw["detector"].threshold == -0.5
    assert "stabilize" not in web_kw  # restore_video's default, as the CLI's
    assert seen == [("clip.mp4", k, 4) for k in range(1, 5)]

    (v,) = res.videos
    assert v.video == job / "restored_videos" / "clip.mp4" and v.preview == v.video  # H.264 in MP4 plays as is
    assert (v.frames, v.size) == (4, (128, 128))
    assert v.video.read_bytes() != b"" and (cli_out / "restored_videos" / "clip.mp4").is_file()
    record = json.loads(v.record.read_text())
    cli_record = json.loads((cli_out / "restored_videos" / "clip.json").read_text())
    assert record["input"] == "clip.mp4" and record["output"] == "restored_videos/clip.mp4" and record["web"]
    assert str(tmp_path) not in v.record.read_text()
    same = ("method", "upscale", "frames", "size", "fps", "codec", "faces", "frames_with_faces", "tracks")
    assert {k: record[k] for k in same} == {k: cli_record[k] for k in same}
    with zipfile.ZipFile(res.zip) as zf:
        assert {"restored_videos/clip.mp4", "restored_videos/clip.json"} <= set(zf.namelist())
    assert res.files() == [v.video, v.record, res.zip]
    assert res.summary().startswith("restored clip.mp4: 4 frames (128x128)")
    from facerestore.video import probe_video

    assert probe_video(v.video).frames == 4


def test_a_video_a_browser_cannot_play_gets_an_h264_preview(tmp_path, uploads):
    clip = write_clip(uploads / "v2" / "old.avi", n=3, codec="mpeg4")
    res = jobs.run_job([clip], jobs.JobOptions(detector="dlib-hog", upscale=1), _job(tmp_path), jobs.Limits(),
                       uploads_root=uploads)
    (v,) = res.videos
    assert v.video.name == "old.avi" and v.preview == tmp_path / "job" / jobs.PREVIEW_FOLDER / "old.mp4"
    from facerestore.video import probe_video

    info = probe_video(v.preview)
    assert (info.codec, info.frames, info.width) == ("h264", 3, 64)


def test_an_hdr_video_gets_an_sdr_preview(tmp_path, uploads):
    """A phone's HLG clip (BT.2020, 10-bit H.264 in MP4) is restored as HDR, but browsers neither play 10-bit H.264
    nor show HLG code values as a viewer would: the page plays an 8-bit BT.709 preview of its SDR view, whose
    frames are the example's (HLG straight into 8 bits would be grey and washed out)."""
    av = pytest.importorskip("av", reason="video uploads need PyAV (the web extra)")
    from facerestore.hdr import HdrView
    from facerestore.video import probe_video

    view = HdrView("hlg")
    frames = _frames(3)
    clip = uploads / "v3" / "phone.mp4"
    clip.parent.mkdir(parents=True)
    with av.open(str(clip), "w") as out:
        vs = out.add_stream("libx264", rate=12)
        vs.width, vs.height, vs.pix_fmt, vs.options = 64, 64, "yuv420p10le", {"crf": "4"}
        ctx = vs.codec_context
        ctx.colorspace, ctx.color_primaries, ctx.color_trc = 9, 9, 18
        for i, img in enumerate(frames):
            signal = io.quantize(view.to_hdr(img.astype(np.float32) / 255), 16)
            vf = av.VideoFrame.from_ndarray(signal, format="rgb48le").reformat(
                format="yuv420p10le", dst_colorspace="BT2020", dst_color_range="MPEG")
            vf.colorspace, vf.color_range, vf.pts = 9, 1, i
            for pkt in vs.encode(vf):
                out.mux(pkt)
        for pkt in vs.encode(None):
            out.mux(pkt)
    res = jobs.run_job([clip], jobs.JobOptions(detector="dlib-hog", upscale=1), _job(tmp_path), jobs.Limits(),
                       uploads_root=uploads)
    (v,) = res.videos
    assert json.loads(v.record.read_text())["hdr"] == "hlg" and probe_video(v.video).pix_fmt == "yuv420p10le"
    assert v.preview == tmp_path / "job" / jobs.PREVIEW_FOLDER / "phone.mp4"
    info = probe_video(v.preview)
    assert (info.pix_fmt, info.colorspace, info.color_primaries, info.color_trc) == ("yuv420p", 1, 1, 1)
    with av.open(str(v.preview)) as c:
        shown = [f.reformat(format="rgb24", src_colorspace="ITU709").to_ndarray() for f in c.decode(video=0)]
    from facerestore.video import iter_frames

    restored = [view.to_sdr(f) * 255 for f in iter_frames(v.video)]  # the HDR output's SDR view, decoded here
    assert len(shown) == len(restored) == 3
    for got, want, original in zip(shown, restored, frames):
        # the preview's own error (crf 23, 4:2:0 on 64 px frames), without a shift in tone
        assert np.abs(got - want).mean() < 6 and np.abs((got - want).mean((0, 1))).max() < 2
        assert np.abs(got.astype(float) - original).mean() < 8  # the example (restored, so not identical)
        naive = io.quantize(view.to_hdr(original.astype(np.float32) / 255), 8)  # HLG values shown as SDR
        assert np.abs(naive.astype(float) - original).mean() > 15


def test_an_animated_gif_is_restored_as_a_clip_with_a_playable_preview(tmp_path, uploads):
    """An animated GIF upload goes through restore_animation (as `restore -i anim.gif` does): a GIF back with its
    frame times, an H.264 preview for the player that keeps them, the server's frame limit; a still GIF is a
    photo."""
    from PIL import Image

    pytest.importorskip("av", reason="the preview needs PyAV (the web extra)")
    gif = uploads / "g1" / "wave.gif"
    gif.parent.mkdir()
    frames = [Image.fromarray(f) for f in _frames(3)]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=[100, 200, 300], loop=0)
    still = uploads / "g2" / "still.gif"
    still.parent.mkdir()
    frames[0].save(still)
    assert jobs.is_clip(gif) and not jobs.is_clip(still)
    res = jobs.run_job([gif, still], jobs.JobOptions(detector="dlib-hog", upscale=1), _job(tmp_path), jobs.Limits(),
                       uploads_root=uploads)
    assert res.errors == []
    (v,) = res.videos
    assert v.video.name == "wave.gif" and v.frames == 3 and v.preview.suffix == ".mp4"
    with Image.open(v.video) as im:
        assert (im.n_frames, im.size) == (3, (64, 64))
    from facerestore.video import probe_video

    info = probe_video(v.preview)
    assert (info.codec, info.frames, info.width) == ("h264", 3, 64)
    assert json.loads(v.record.read_text())["codec"] == "gif"
    (photo,) = res.photos
    assert photo.name == "still.gif"
    res = jobs.run_job([gif], jobs.JobOptions(upscale=1), _job(tmp_path, "j2"), jobs.Limits(max_video_frames=2),
                       uploads_root=uploads)
    # refused from the header, before its frames are decoded for their durations (so no duration in the line)
    assert res.errors == ["wave.gif: the animation has 3 frames, over this server's limit of 2"]


def test_video_limits(tmp_path, uploads):
    clip = uploads / "v1" / "clip.mp4"
    lim = jobs.Limits(max_video_frames=2)
    res = jobs.run_job([clip], jobs.JobOptions(upscale=1), _job(tmp_path), lim, uploads_root=uploads)
    assert res.errors == ["clip.mp4: the video has 4 frames, over this server's limit of 2 (0.2 s at 12 frames/s)"]
    # a container that does not say how many frames it holds: counted while running, stopped past the limit
    mkv = write_clip(uploads / "v3" / "clip.mkv", n=4)
    from facerestore.video import probe_video

    assert probe_video(mkv).frames is None
    res = jobs.run_job([mkv], jobs.JobOptions(upscale=1), _job(tmp_path, "j2"), lim, uploads_root=uploads)
    assert res.errors == ["clip.mkv: the video has more than 2 frames, over this server's limit of 2 (0.2 s at 12 "
                          "frames/s)"]
    assert res.videos == [] and res.zip is None and not any((tmp_path / "j2" / "restored_videos").iterdir())
    # pixels: the output frames after the upscale
    res = jobs.run_job([clip], jobs.JobOptions(upscale=2), _job(tmp_path, "j3"), jobs.Limits(max_pixels=10_000),
                       uploads_root=uploads)
    assert res.errors == ["clip.mp4: the output frames (upscale 2) is 128x128 (0.0 megapixels), over this server's "
                          "limit of 0.0 megapixels"]
    # bytes, one video per job, only uploads
    with pytest.raises(InputError, match="at most 1 per job"):
        jobs.run_job([clip, mkv], jobs.JobOptions(), _job(tmp_path, "j4"), jobs.Limits(), uploads_root=uploads)
    res = jobs.run_job([clip], jobs.JobOptions(), _job(tmp_path, "j5"), jobs.Limits(max_upload_mb=0.001),
                       uploads_root=uploads)
    assert res.errors[0].startswith("clip.mp4: file is 0.0 MB, over this server's upload limit of 0.001 MB")
    outside = write_clip(tmp_path / "elsewhere" / "x.mp4", n=1)
    res = jobs.run_job([outside], jobs.JobOptions(), _job(tmp_path, "j6"), jobs.Limits(), uploads_root=uploads)
    assert res.errors == ["x.mp4: not an uploaded file"]


def test_a_bad_video_gets_the_one_line_error_without_server_paths(tmp_path, uploads):
    bad = uploads / "b2" / "notes.mp4"
    bad.parent.mkdir()
    bad.write_text("these are notes, not a video\n")
    res = jobs.run_job([bad, uploads / "a1" / "astronaut_lq.png"], jobs.JobOptions(detector="dlib-hog", upscale=1),
                       _job(tmp_path), jobs.Limits(), uploads_root=uploads)
    (line,) = res.errors
    assert line.startswith("notes.mp4: cannot read video notes.mp4: ") and "\n" not in line
    assert str(tmp_path) not in line and len(res.photos) == 1  # the photo goes on


def test_closing_the_page_stops_a_video(tmp_path, uploads):
    job = _job(tmp_path)
    frames = []
    res = jobs.run_job([uploads / "v1" / "clip.mp4"], jobs.JobOptions(upscale=1), job, jobs.Limits(),
                       uploads_root=uploads, cancelled=lambda: len(frames) >= 2,
                       on_frame=lambda name, done, total: frames.append(done))
    assert frames == [1, 2] and res.videos == [] and res.errors == []
    assert not any((job / "restored_videos").iterdir())  # the half-written video is removed


# ---------------------------------------------------------------------------------------------------- the page


def _gradio() -> None:
    import importlib.util

    spec = importlib.util.find_spec("gradio")
    if spec is None or spec.origin is None:
        pytest.skip("needs the web extra (pip install -e '.[web]')")


def test_page_passes_each_option_to_the_job(tmp_path, monkeypatch):
    """The page's handler turns its widgets into the JobOptions the job gets (no browser: the handler is called)."""
    _gradio()
    from facerestore.web.app import ServeConfig, build_app

    got = {}

    def fake_run_job(paths, opts, job_dir, limits, **kw):
        got.update(opts=opts, limits=limits, kw=kw)
        return jobs.JobResult(dir=job_dir)

    monkeypatch.setattr(jobs, "run_job", fake_run_job)
    cfg = ServeConfig(device="cpu", limits=jobs.Limits(max_video_frames=30))
    demo = build_app(cfg, jobs.Sessions(tmp_path / "s"))
    fn = {f.name: f for f in demo.fns.values()}["on_restore"].fn

    class Request:
        session_hash = "abc"

    out = fn([], "ispl", jobs.DEFAULT_WEIGHTS, 0.7, 0.9, 1.5, "dlib-hog", False, 50, True, " 0.25 ", "landmarks",
             "lanczos", "png", [], Request(), progress=lambda *a, **k: None)
    o = got["opts"]
    assert (o.only_center_face, o.min_score, o.mask, o.bg_upsampler, o.ext) == (True, 0.25, "landmarks", "lanczos",
                                                                                "png")
    assert (o.fidelity, o.blend, o.upscale, o.detector, o.gate, o.device) == (0.7, 0.9, 1.5, "dlib-hog", False, "cpu")
    assert got["limits"].max_video_frames == 30 and callable(got["kw"]["on_frame"])
    assert out[0] == "**Nothing restored.**" and out[1]["visible"] is False  # no video: the player stays hidden
    fn([], "ispl", jobs.DEFAULT_WEIGHTS, 0.7, 0.9, 1.5, "dlib-hog", False, 50, False, "", "mesh", "lanczos", "auto",
       [], Request(), progress=lambda *a, **k: None)
    assert got["opts"].min_score is None  # an empty box: the detector's own threshold
    got.clear()
    out = fn([], "ispl", jobs.DEFAULT_WEIGHTS, 0.7, 0.9, 1.5, "dlib-hog", False, 50, False, "high", "mesh",
             "lanczos", "auto", [], Request(), progress=lambda *a, **k: None)
    assert not got and out[0] == "**Error:** the detector score threshold must be a number, got 'high'"


def test_page_plays_a_restored_video(tmp_path, monkeypatch):
    _gradio()
    from facerestore.web.app import ServeConfig, build_app

    v = jobs.VideoOutput(name="clip.mp4", stem="clip", video=tmp_path / "clip.mp4", record=tmp_path / "clip.json",
                         preview=tmp_path / "clip.mp4", frames=4, faces=4, tracks=1, size=(128, 128))
    monkeypatch.setattr(jobs, "run_job", lambda paths, opts, job_dir, limits, **kw: jobs.JobResult(
        dir=job_dir, videos=[v], method="ispl", zip=tmp_path / "results.zip"))
    demo = build_app(ServeConfig(), jobs.Sessions(tmp_path / "s"))
    fn = {f.name: f for f in demo.fns.values()}["on_restore"].fn

    class Request:
        session_hash = "abc"

    out = fn([], "ispl", jobs.DEFAULT_WEIGHTS, 1.0, 1.0, 2, "auto", True, 50, False, "", "mesh", "lanczos", "auto",
             [], Request(), progress=lambda *a, **k: None)
    assert out[0].startswith("restored clip\\.mp4: 4 frames") and out[1]["visible"] is True
    assert out[1]["value"] == str(tmp_path / "clip.mp4")
    assert all(u["visible"] is False for u in out[3:8])  # a video alone: the photo views are hidden
    assert out[-2] == [str(tmp_path / "clip.mp4"), str(tmp_path / "clip.json"), str(tmp_path / "results.zip")]


def test_serve_max_video_frames_is_checked(capsys):
    _gradio()
    from facerestore.cli import main

    assert main(["serve", "--max-video-frames", "0"]) == 2
    assert capsys.readouterr().err.strip() == ("facerestore serve: error: --max-video-frames must be a positive whole "
                                               "number, got 0")
