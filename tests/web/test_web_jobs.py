"""facerestore.web.jobs without a browser or Gradio: limits, uploads, names, sessions, zip, one job."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import EXAMPLES
from facerestore import io
from facerestore.errors import InputError
from facerestore.web import jobs

LQ = EXAMPLES / "astronaut_lq.png"  # 192 x 192, one face


@pytest.fixture
def uploads(tmp_path) -> Path:
    """A stand-in for Gradio's upload folder: one sub-folder per upload, as Gradio makes them."""
    root = tmp_path / "uploads"
    (root / "a1").mkdir(parents=True)
    shutil.copy(LQ, root / "a1" / "astronaut_lq.png")
    (root / "b2").mkdir()
    (root / "b2" / "notes.png").write_text("these are notes, not an image\n")
    return root


def _png(path: Path, w: int, h: int) -> Path:
    io.write_image(path, np.full((h, w, 3), 0.5, np.float32))
    return path


# ---------------------------------------------------------------------------------------------------- limits


def test_limits_are_checked():
    assert jobs.Limits().max_upload_bytes == 25 * 2**20
    for kw in ({"max_upload_mb": 0}, {"max_upload_mb": float("nan")}, {"max_pixels": 0}, {"max_files": 0}):
        with pytest.raises(InputError):
            jobs.Limits(**kw)
    with pytest.raises(InputError, match="over the library's limit"):
        jobs.Limits(max_pixels=io.MAX_PIXELS + 1)


def test_upload_over_the_byte_limit_is_refused(uploads):
    big = uploads / "c3" / "big.png"
    big.parent.mkdir()
    big.write_bytes(b"\0" * (2 * 2**20))
    with pytest.raises(InputError, match=r"^file is 2\.0 MB, over this server's upload limit of 1 MB$"):
        jobs.read_upload(big, jobs.Limits(max_upload_mb=1), uploads_root=uploads)


def test_upload_over_the_pixel_limit_is_refused_before_decoding(uploads, monkeypatch):
    p = _png(uploads / "a1" / "wide.png", 300, 200)

    def no_decode(*a, **k):
        raise AssertionError("decoded an image over the limit")

    monkeypatch.setattr(io, "decode_image", no_decode)
    with pytest.raises(InputError, match=r"image is 300x200 \(0\.1 megapixels\), over this server's limit of 0\.1"):
        jobs.read_upload(p, jobs.Limits(max_pixels=50_000), uploads_root=uploads)


def test_a_float_tiff_pillow_cannot_open_is_still_refused_before_decoding(uploads, monkeypatch):
    """Pillow cannot read a float32 RGB TIFF's header; the page skipped its pixel limit and decoded it whole."""
    import cv2

    p = uploads / "a1" / "float.tiff"
    ok, buf = cv2.imencode(".tiff", np.random.default_rng(0).random((300, 400, 3)).astype(np.float32))
    assert ok
    p.write_bytes(buf.tobytes())
    assert jobs.image_size(p.read_bytes()) is None  # what made the check skip

    def no_decode(*a, **k):
        raise AssertionError("decoded an image over the limit")

    monkeypatch.setattr(io, "decode_image", no_decode)
    with pytest.raises(InputError, match=r"image is 400x300 .* over this server's limit"):
        jobs.read_upload(p, jobs.Limits(max_pixels=100_000), uploads_root=uploads)


def test_text_file_named_png_gets_the_cli_one_line_error(uploads):
    with pytest.raises(InputError) as e:
        jobs.read_upload(uploads / "b2" / "notes.png", jobs.Limits(), uploads_root=uploads)
    assert jobs.error_line("notes.png", e.value) == "notes.png: cannot decode image (corrupt or unsupported format)"


def test_only_files_in_the_upload_folder_are_read(uploads, tmp_path):
    outside = shutil.copy(LQ, tmp_path / "outside.png")
    for p in (outside, uploads / ".." / "outside.png", "/etc/passwd"):
        with pytest.raises(InputError, match=r"^not an uploaded file$"):
            jobs.read_upload(p, jobs.Limits(), uploads_root=uploads)
    with pytest.raises(InputError, match="upload it again"):
        jobs.read_upload(uploads / "a1" / "gone.png", jobs.Limits(), uploads_root=uploads)
    img = jobs.read_upload(uploads / "a1" / "astronaut_lq.png", jobs.Limits(), uploads_root=uploads)
    assert img.rgb.shape == (192, 192, 3) and img.path == Path("astronaut_lq.png")  # its name, not a server path


def test_error_lines_are_one_line():
    assert jobs.error_line("a.png", InputError("first line\nsecond line")) == "a.png: first line"
    assert jobs.error_line("a.png", MemoryError()).startswith("a.png: out of memory")
    assert jobs.error_line("a.png", RuntimeError("CUDA out of memory. Tried")).startswith("a.png: out of memory")


@pytest.mark.parametrize("name, stem", [
    ("photo.png", "photo"), ("../../etc/passwd", "passwd"), ("..\\..\\x.jpg", "x"), ("a b*c?.png", "a_b_c"),
    (".hidden.png", "hidden"), ("", "photo"), ("...", "photo"), ("é—ü.jpg", "é_ü"), ("x" * 300 + ".png", "x" * 64),
    ("Мама.jpg", "Мама"), ("e\u0301te\u0301.png", "\u00e9t\u00e9"), ("a\u202eb\x00c.png", "a_b_c"), ("—.png", "photo"),
    ("\U00020000" * 64 + ".png", "\U00020000" * 40),  # 160 bytes in UTF-8 (file systems count bytes), not 256
])
def test_safe_stem(name, stem):
    assert jobs.safe_stem(name) == stem


def test_check_pixels_wording():
    jobs.check_pixels(100, 100, 10_000)
    with pytest.raises(InputError, match=r"^the output \(upscale 2\) is 200x101 "):
        jobs.check_pixels(200, 101, 20_000, "the output (upscale 2)")


# ---------------------------------------------------------------------------------------------------- sessions


def test_sessions_never_use_the_browser_id_as_a_path(tmp_path, uploads):
    s = jobs.Sessions(tmp_path / "sessions", uploads_root=uploads)
    ws = s.get("../../../escape")
    assert ws.dir.parent == tmp_path / "sessions" and ".." not in ws.dir.name
    assert s.get("../../../escape") is ws and s.get("other") is not ws and len(s) == 2


def test_session_close_removes_its_files_and_uploads(tmp_path, uploads):
    s = jobs.Sessions(tmp_path / "sessions", uploads_root=uploads)
    ws = s.get("abc")
    first = ws.new_job_dir()
    (first / "x.png").write_bytes(b"x")
    with pytest.raises(InputError, match="still running"):  # a second job at once would remove the first's folder
        ws.new_job_dir()
    assert first.is_dir()
    ws.job_done()
    second = ws.new_job_dir()
    ws.job_done()
    assert not first.exists() and second.is_dir()  # only the latest job is kept
    up = uploads / "a1" / "astronaut_lq.png"
    ws.note_uploads([up, "/etc/passwd"])  # only files inside the upload folder are ever removed
    assert ws.uploads == {up.resolve()}
    s.close("abc")
    assert not ws.dir.exists() and not up.exists() and not up.parent.exists()
    assert Path("/etc/passwd").exists() and (uploads / "b2" / "notes.png").exists()
    with pytest.raises(InputError, match="session has ended"):
        ws.new_job_dir()
    assert s.get("abc") is not ws  # a reload gets a fresh workspace
    s.close_all()
    assert not any((tmp_path / "sessions").iterdir())


def test_zip_holds_the_results_only(tmp_path):
    job = tmp_path / "job"
    for sub in (*jobs.RESULT_FOLDERS, jobs.PREVIEW_FOLDER):
        (job / sub).mkdir(parents=True)
        (job / sub / f"{sub}.txt").write_text(sub)
    z = jobs.zip_results(job, job / "results.zip")
    with zipfile.ZipFile(z) as zf:
        names = sorted(zf.namelist())
    assert names == sorted(f"{s}/{s}.txt" for s in jobs.RESULT_FOLDERS)
    assert not list(job.glob(".results.zip*"))


# ---------------------------------------------------------------------------------------------------- options


def test_methods_offered_are_those_with_weights_and_their_licences_are_shown():
    from facerestore.methods import registry

    offered = [v for _, v in jobs.method_choices()]
    assert "ispl" in offered and "hifacegan" not in offered  # hifacegan needs a file of the user's
    for spec in registry.list_restorers():
        if spec.name in offered:
            assert spec.weights_licence in jobs.method_info(spec.name)
    assert "(ours, 512 px faces)" in jobs.method_info("prior-sft")
    assert "(paper 002, 1024px prior (64px offline))" in jobs.method_info("robust-inversion")  # not the fallback's 64
    refs = [v for _, v in jobs.weight_choices("ispl")]
    assert refs[0] == jobs.DEFAULT_WEIGHTS and refs[1].startswith("builtin:")


def test_weights_are_chosen_from_the_spec_never_a_path():
    assert jobs.resolve_weights_choice("ispl", jobs.DEFAULT_WEIGHTS) is None
    builtin = [v for _, v in jobs.weight_choices("ispl")][1]
    assert jobs.resolve_weights_choice("ispl", builtin) == builtin  # a reference, never a path of the server
    for bad in ("/etc/passwd", "../x.safetensors", "stylegan2-ffhq-1024"):
        with pytest.raises(InputError, match="not among those of method"):
            jobs.resolve_weights_choice("ispl", bad)


@pytest.mark.parametrize("kw, msg", [
    ({"upscale": 0}, "upscale"), ({"upscale": 100}, "upscale"), ({"blend": 1.5}, "blend"),
    ({"fidelity": -0.1}, "fidelity"), ({"detector": "../x"}, "unknown face detector"),
    ({"method": "hifacegan"}, "weight file of yours"), ({"method": "nope"}, "unknown method"),
    ({"method": "rls", "steps": 0}, "steps"),
    # robust-inversion's three phases need a step each: said in the page's words, not as a CLI flag
    ({"method": "robust-inversion", "steps": 2}, r"robust-inversion needs at least 3 optimisation steps per face"),
])
def test_job_options_are_validated(kw, msg):
    with pytest.raises(InputError, match=msg) as info:
        jobs.JobOptions(**kw).validate()
    if "steps" in kw:  # the page has a slider, no --steps
        assert "--" not in str(info.value)


def test_the_steps_minimum_is_each_methods_own():
    assert jobs.min_steps("robust-inversion") == 3 and jobs.min_steps("rls") == 1 and jobs.min_steps("ispl") == 1
    jobs.JobOptions(method="robust-inversion", steps=3).validate()


def test_detectors_offered_are_the_registrys_with_their_licences():
    from facerestore.faces.detect import DETECTORS

    labels = dict((v, k) for k, v in jobs.detector_choices())
    assert list(labels) == ["auto", *(d.name for d in DETECTORS)] == list(jobs.detector_names())
    for d in DETECTORS:
        assert d.licence in labels[d.name]


def test_default_fidelity_is_the_methods_own():
    assert jobs.default_fidelity("ispl") == 1.0
    assert jobs.default_fidelity("mfpsnet") is None  # no knob: nothing is loaded
    # the StyleGAN methods' projection onto the observation: off for whole photos (what the web UI restores);
    # stated by their classes: answering loads no model
    from facerestore import pipeline

    before = dict(pipeline._RESTORERS)
    assert jobs.default_fidelity("rls") == 0.0 and jobs.default_fidelity("robust-inversion") == 0.0
    assert jobs.default_fidelity("prior-sft") == 1.0
    assert pipeline._RESTORERS == before


# ---------------------------------------------------------------------------------------------------- jobs


def test_job_restores_good_photos_and_reports_bad_ones_in_one_line(tmp_path, uploads):
    """One job through the CLI's pipeline functions: the layout of `facerestore restore`, a JSON record that names
    the upload (never a server path) and the options, a zip, and the text file reported as the CLI reports it."""
    job = tmp_path / "job"
    job.mkdir()
    seen = []
    opts = jobs.JobOptions(method="ispl", fidelity=0.5, blend=0.8, upscale=2, detector="dlib-hog")
    res = jobs.run_job([uploads / "b2" / "notes.png", uploads / "a1" / "astronaut_lq.png"], opts, job, jobs.Limits(),
                       uploads_root=uploads, on_progress=lambda i, n, name: seen.append((i, n, name)))
    assert res.errors == ["notes.png: cannot decode image (corrupt or unsupported format)"]
    assert seen == [(0, 2, "notes.png"), (1, 2, "astronaut_lq.png"), (2, 2, "")]
    (photo,) = res.photos
    assert photo.output_size == (384, 384) and len(photo.faces) == 1
    assert photo.image == job / "restored_imgs" / "astronaut_lq.png"
    out = io.read_image(photo.image).rgb
    before = io.read_image(photo.before).rgb
    assert out.shape == before.shape == (384, 384, 3)
    x0, y0, x1, y1 = (2 * np.asarray(photo.faces[0].record["box"])).round().astype(int)  # the face, in the output
    assert photo.faces[0].record["paste_weight"] > 0 and np.abs(out - before)[y0:y1, x0:x1].mean() > 0.01
    record = json.loads(photo.record.read_text())
    assert record["input"] == "astronaut_lq.png" and str(tmp_path) not in photo.record.read_text()
    assert record["fidelity"] == 0.5 and record["blend"] == 0.8 and record["method"] == "ispl"
    assert record["faces"][0]["cmp"] == "cmp/astronaut_lq_00.png"
    for key in ("identity_similarity", "identity_distance", "identity_changed"):
        assert key in record["faces"][0]
    with zipfile.ZipFile(res.zip) as zf:
        names = set(zf.namelist())
    assert {"restored_imgs/astronaut_lq.png", "restored_imgs/astronaut_lq.json", "cropped_faces/astronaut_lq_00.png",
            "restored_faces/astronaut_lq_00.png", "cmp/astronaut_lq_00.png"} == names
    assert res.files() == [photo.image, photo.record, res.zip]
    rows = jobs.report_rows(res)
    assert len(rows) == 1 and rows[0][:2] == ["astronaut_lq.png", "1"] and len(rows[0]) == len(jobs.REPORT_HEADERS)
    assert "restored 1 face in 1 photo with ispl" in res.summary()


def test_job_says_when_a_tiff_holds_more_pages_than_it_restored(tmp_path, uploads):
    """As `restore` does: a multi-page TIFF's first page is restored, and the job's summary says so."""
    import cv2

    first = io.quantize(io.read_image(uploads / "a1" / "astronaut_lq.png").rgb)[:, :, ::-1]
    ok, buf = cv2.imencodemulti(".tif", [first, 255 - first, first // 2])
    assert ok
    (uploads / "c3").mkdir()
    (uploads / "c3" / "scans.tif").write_bytes(buf.tobytes())
    job = tmp_path / "job"
    job.mkdir()
    opts = jobs.JobOptions(method="ispl", upscale=1, detector="dlib-hog")
    res = jobs.run_job([uploads / "c3" / "scans.tif", uploads / "a1" / "astronaut_lq.png"], opts, job, jobs.Limits(),
                       uploads_root=uploads)
    assert [p.pages for p in res.photos] == [3, 1] and not res.errors
    assert "; scans.tif holds 3 pages: the first was restored" in res.summary()
    assert "astronaut_lq.png holds" not in res.summary()
    # a TIFF stays a TIFF, which browsers do not show: the slider's "after" is a PNG copy of the same pixels
    tiff, png = res.photos
    assert tiff.image.suffix == ".tif" and tiff.after.suffix == ".png" and tiff.after.parent.parent == job / "previews"
    np.testing.assert_array_equal(io.read_image(tiff.after).rgb, io.read_image(tiff.image).rgb)
    assert png.after == png.image and png.shown is None
    with zipfile.ZipFile(res.zip) as zf:
        assert "restored_imgs/scans.tif" in zf.namelist() and not any("previews" in n for n in zf.namelist())


def test_job_refuses_an_output_over_the_pixel_limit_before_restoring(tmp_path, uploads, monkeypatch):
    import facerestore.pipeline as pipeline

    def no_restore(*a, **k):
        raise AssertionError("restored a photo whose output is over the limit")

    monkeypatch.setattr(pipeline, "restore_photo", no_restore)
    res = jobs.run_job([uploads / "a1" / "astronaut_lq.png"], jobs.JobOptions(upscale=2), tmp_path,
                       jobs.Limits(max_pixels=100_000), uploads_root=uploads)
    assert res.errors == ["astronaut_lq.png: the output (upscale 2) is 384x384 (0.1 megapixels), over this "
                          "server's limit of 0.1 megapixels"]
    assert res.photos == [] and res.zip is None


def test_job_level_errors_are_one_line(tmp_path, uploads):
    with pytest.raises(InputError, match="upload one or more photos"):
        jobs.run_job([], jobs.JobOptions(), tmp_path, jobs.Limits())
    with pytest.raises(InputError, match=r"steps must be a whole number in \[1, 10\]"):
        jobs.run_job([uploads / "a1" / "astronaut_lq.png"], jobs.JobOptions(method="rls", steps=11), tmp_path,
                     jobs.Limits(), max_steps=10)
    with pytest.raises(InputError, match="at most 1 per job"):
        jobs.run_job([uploads / "a1" / "astronaut_lq.png"] * 2, jobs.JobOptions(), tmp_path, jobs.Limits(max_files=1))
    with pytest.raises(InputError, match=r"'ispl' does not use reference photos"):  # refused before reading them
        jobs.run_job([uploads / "a1" / "astronaut_lq.png"], jobs.JobOptions(), tmp_path, jobs.Limits(),
                     refs=[uploads / "b2" / "notes.png"], uploads_root=uploads)
    prior64 = jobs.JobOptions(method="robust-inversion", weights="builtin:stylegan2-face-64.safetensors", steps=3)
    with pytest.raises(InputError, match=r"^reference notes\.png: cannot decode image"):
        jobs.run_job([uploads / "a1" / "astronaut_lq.png"], prior64, tmp_path, jobs.Limits(),
                     refs=[uploads / "b2" / "notes.png"], uploads_root=uploads)


def test_every_job_hands_its_freed_memory_back(tmp_path, uploads, monkeypatch):
    """The server outlives its jobs: after each one, finished or refused, the allocator returns what it kept."""
    from facerestore.nn import devices

    calls = []
    monkeypatch.setattr(devices, "release_cpu_memory", lambda: calls.append(1) or True)
    res = jobs.run_job([uploads / "b2" / "notes.png"], jobs.JobOptions(), tmp_path, jobs.Limits(), uploads_root=uploads)
    assert res.errors and calls == [1]
    with pytest.raises(InputError, match="upload one or more photos"):
        jobs.run_job([], jobs.JobOptions(), tmp_path, jobs.Limits())
    assert calls == [1, 1]


def test_report_and_summary_say_how_each_face_used_the_references(tmp_path):
    """The page's report has a references column from the per-face JSON fields; the summary says when faces of
    other people did not use them and when a pass was narrow (records as restore_photo writes them)."""
    from facerestore.pipeline import RefsUse

    def face(i: int, use: RefsUse | None) -> jobs.FaceOutput:
        record = (use or RefsUse(None, False)).to_json(given=use is not None)
        return jobs.FaceOutput(i, tmp_path / "b.png", tmp_path / "a.png", tmp_path / "c.png", record)

    uses = [RefsUse(0.49, True, threshold=0.65), RefsUse(0.92, False, threshold=0.65),
            RefsUse(0.71, True, threshold=0.75), RefsUse(0.92, True, forced=True, threshold=0.65), None]
    photo = jobs.PhotoOutput("group.jpg", "group", tmp_path / "g.png", tmp_path / "g.json", tmp_path / "p.png",
                             (64, 64), (64, 64), faces=[face(i, u) for i, u in enumerate(uses)])
    res = jobs.JobResult(tmp_path, photos=[photo], method="honestface")
    cells = [row[jobs.REPORT_HEADERS.index("references")] for row in jobs.report_rows(res)]
    assert cells == ["used (0.49)", "not this person (0.92)", "used, narrowly (0.71)", "forced (0.92)", "-"]
    text = res.summary()
    assert "reference photos were used for 3 of 4 faces" in text and "only narrowly" in text
    clip = jobs.VideoOutput("clip.mp4", "clip", tmp_path / "v.mp4", tmp_path / "v.json", tmp_path / "v.mp4", 12, 10, 1,
                            (64, 64), faces_with_refs=4)
    assert "(the reference photos used for 4 of them" in jobs.JobResult(tmp_path, videos=[clip]).summary()
    plain = jobs.JobResult(tmp_path, photos=[jobs.PhotoOutput("a.jpg", "a", tmp_path / "g.png", tmp_path / "g.json",
                                                              tmp_path / "p.png", (64, 64), (64, 64),
                                                              faces=[face(0, None)])])
    assert "reference" not in plain.summary()


def test_server_half_applies_to_the_methods_that_support_it(tmp_path, uploads):
    """`facerestore serve --half`: a method whose spec lists bf16 runs in bf16 on the CPU and its record says so; one
    without it runs fp32 rather than refusing the job."""
    assert jobs.half_applies(jobs.JobOptions(method="robust-inversion", half=True))
    assert not jobs.half_applies(jobs.JobOptions(method="robust-inversion"))
    assert not jobs.half_applies(jobs.JobOptions(method="rls-plus", half=True))  # fp32 only: runs fp32
    from facerestore import zoo

    cases = [("robust-inversion", "builtin:stylegan2-face-64.safetensors", 3, "bf16")]
    if zoo.is_available("facemesh-468"):  # the built-in mfpsnet was trained on Face Mesh parsing maps
        cases.append(("mfpsnet", None, None, "fp32"))
    for method, weights, steps, precision in cases:
        job = tmp_path / method
        job.mkdir()
        opts = jobs.JobOptions(method=method, weights=weights or jobs.DEFAULT_WEIGHTS, steps=steps, half=True,
                               upscale=1, detector="dlib-hog")
        res = jobs.run_job([uploads / "a1" / "astronaut_lq.png"], opts, job, jobs.Limits(), uploads_root=uploads)
        assert res.errors == [] and len(res.photos) == 1
        record = json.loads(res.photos[0].record.read_text())
        assert record["restorer"]["precision"] == precision and record["half"] is (precision == "bf16")


def test_a_photo_keeps_its_colour_profile_and_captions_on_both_sides_of_the_slider(tmp_path, uploads):
    """A camera JPEG with a colour profile and an IPTC/XMP caption: the restored JPEG keeps them (as the CLI's does),
    and the slider's "before" image carries the profile too, so the browser shows both sides in the same colours."""
    from PIL import Image, ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><dc:title xmlns:dc="http://purl.org/dc/elements/1.1/">Us'
           b"</dc:title></x:xmpmeta>")
    (uploads / "c3").mkdir()
    Image.open(LQ).convert("RGB").save(uploads / "c3" / "camera.jpg", quality=95, icc_profile=profile, xmp=xmp)
    job = tmp_path / "job"
    job.mkdir()
    res = jobs.run_job([uploads / "c3" / "camera.jpg"], jobs.JobOptions(detector="dlib-hog", upscale=1), job,
                       jobs.Limits(), uploads_root=uploads)
    (photo,) = res.photos
    with Image.open(photo.image) as im:
        assert photo.image.suffix == ".jpg" and im.info["icc_profile"] == profile and im.info["xmp"] == xmp
    with Image.open(photo.before) as im:
        assert im.info["icc_profile"] == profile
    assert json.loads(photo.record.read_text())["color_profile"] == "sRGB built-in"


def test_two_sessions_share_an_upload_until_the_last_one_closes(tmp_path, uploads):
    """The upload folder names a file by its content and name: two tabs dropping the same photo get one path.
    Closing one tab must not delete it under the other."""
    s = jobs.Sessions(uploads / jobs.SESSIONS_DIRNAME, uploads_root=uploads)
    up = uploads / "a1" / "astronaut_lq.png"
    a, b = s.get("tab-a"), s.get("tab-b")
    a.note_uploads([up])
    a.note_uploads([up])  # the same session twice: one use
    b.note_uploads([up])
    s.close("tab-a")
    assert up.is_file() and jobs.check_upload(up, jobs.Limits(), uploads_root=uploads) == up
    s.close("tab-b")
    assert not up.exists()


def test_another_sessions_results_are_not_an_upload(tmp_path, uploads):
    """serve keeps the sessions' folders inside the upload folder: a client naming another session's result as
    its upload is refused, and that file is never removed with the client's session."""
    s = jobs.Sessions(uploads / jobs.SESSIONS_DIRNAME, uploads_root=uploads)
    victim = s.get("victim").new_job_dir() / "restored.png"
    victim.write_bytes(b"someone's photo")
    with pytest.raises(InputError, match="not an uploaded file"):
        jobs.check_upload(victim, jobs.Limits(), uploads_root=uploads)
    attacker = s.get("attacker")
    attacker.note_uploads([victim])
    assert attacker.uploads == set()
    s.close("attacker")
    assert victim.is_file()


def test_a_heic_upload_is_sized_from_its_header_in_a_fresh_process(tmp_path):
    """Pillow reads HEIC only once pillow-heif's opener is registered, which decoding did: the first HEIC a server
    saw skipped the before-decode pixel check. A fresh process proves the size is read without that."""
    import subprocess
    import sys

    pytest.importorskip("pillow_heif", reason="HEIC needs the heif extra (pillow-heif)")
    from PIL import Image

    from facerestore.io import _register_heif

    _register_heif()  # this process writes the file
    path = tmp_path / "p.heic"
    Image.new("RGB", (64, 48), (200, 120, 90)).save(path, format="HEIF", quality=90)
    code = ("import sys; from pathlib import Path; from facerestore.web.jobs import image_size; "
            "print(image_size(Path(sys.argv[1]).read_bytes()))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.strip() == "(64, 48)"


def test_an_unexpected_error_on_one_file_does_not_stop_the_job(tmp_path, uploads, monkeypatch, caplog):
    """A bug of ours on one photo: that photo gets one line without a traceback or a server path, the server's
    log gets the traceback, and the other photos of the job are still restored."""
    from facerestore import pipeline

    real = pipeline.restore_photo
    calls = []

    def flaky(img, *a, **k):
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("a bug")
        return real(img, *a, **k)

    monkeypatch.setattr(pipeline, "restore_photo", flaky)
    first = uploads / "c3" / "first.png"
    first.parent.mkdir()
    shutil.copy(LQ, first)
    job = tmp_path / "job"
    job.mkdir()
    opts = jobs.JobOptions(method="ispl", upscale=1, detector="dlib-hog")
    with caplog.at_level("ERROR", logger="facerestore.web"):
        res = jobs.run_job([first, uploads / "a1" / "astronaut_lq.png"], opts, job, jobs.Limits(),
                           uploads_root=uploads)
    assert res.errors == ["first.png: internal error (KeyError); the server's log has the details"]
    assert [p.name for p in res.photos] == ["astronaut_lq.png"]
    assert "a bug" in caplog.text and "Traceback" in caplog.text


def test_the_summary_tells_failed_and_unrestorable_faces_from_the_gates_verdict(tmp_path):
    from facerestore.pipeline import NON_FINITE

    def face(k, gate):
        return jobs.FaceOutput(k, tmp_path / "b.png", tmp_path / "a.png", tmp_path / "c.png", {"gate": gate})

    photo = jobs.PhotoOutput("p.jpg", "p", tmp_path / "p.jpg", tmp_path / "p.json", tmp_path / "b.png", (8, 8),
                             (8, 8), faces=[face(0, {"weight": 0.0, "reason": NON_FINITE}),
                                            face(1, {"weight": 0.0, "reason": "kept: quality"})])
    edge = jobs.PhotoOutput("e.jpg", "e", tmp_path / "e.jpg", tmp_path / "e.json", tmp_path / "b.png", (8, 8),
                            (8, 8), not_aligned=2)
    text = jobs.JobResult(dir=tmp_path, photos=[photo, edge], method="ispl").summary()
    assert "1 face kept as they were (the quality gate found the restoration worse)" in text
    assert "1 face not restored: the method returned NaN" in text
    assert "2 faces found but not restorable (at the photo's edge)" in text and "no face found" not in text


def test_error_lines_carry_no_server_paths(tmp_path):
    from facerestore.errors import OutputError, WeightsMissingError

    missing = WeightsMissingError(f"weights 'yunet-2023mar' are not in the cache: save it as {Path.home()}/.cache/x")
    assert jobs.error_line("a.jpg", missing) == "a.jpg: weights this needs are not installed on this server (its " \
                                                "log says which)"
    job = tmp_path / "sessions" / "s1" / "job"
    line = jobs._scrub(jobs.error_line("a.jpg", OutputError(f"cannot write {job}/restored_imgs/a.png: disk full")),
                       tmp_path / "up" / "a.jpg", "a.jpg", job)
    assert str(tmp_path) not in line and "the job's folder/restored_imgs/a.png" in line


def test_the_page_offers_only_detectors_the_command_line_takes():
    from facerestore.cli.restore import DETECTOR_CHOICES

    assert set(jobs.detector_names()) <= set(DETECTOR_CHOICES)


def test_a_file_that_fails_late_leaves_none_of_its_outputs_in_the_job(tmp_path, uploads, monkeypatch):
    """The record fails after the image and the face files were written: that photo is listed as failed and its
    partial outputs are removed (they were zipped as if it had succeeded); the other photo is whole."""
    import zipfile

    from facerestore import pipeline
    from facerestore.errors import OutputError

    shutil.copy(LQ, uploads / "a1" / "second.png")
    real = pipeline.write_photo_json

    def fails_first(path, res, **kw):
        if Path(path).stem == "astronaut_lq":
            raise OutputError(f"cannot write {path}: disk full")
        return real(path, res, **kw)

    monkeypatch.setattr(pipeline, "write_photo_json", fails_first)
    job = tmp_path / "job"
    job.mkdir()
    res = jobs.run_job([uploads / "a1" / "astronaut_lq.png", uploads / "a1" / "second.png"],
                       jobs.JobOptions(method="ispl", upscale=1, detector="dlib-hog"), job, jobs.Limits(),
                       uploads_root=uploads)
    assert len(res.errors) == 1 and res.errors[0].startswith("astronaut_lq.png: cannot write the job's folder/")
    assert [p.stem for p in res.photos] == ["second"]
    left = [f.name for sub in jobs.PHOTO_FOLDERS for f in (job / sub).iterdir()]
    assert left and all(n.startswith("second") for n in left)
    with zipfile.ZipFile(res.zip) as z:
        assert not [n for n in z.namelist() if "astronaut_lq" in n]


def test_stems_never_name_another_files_face_outputs():
    """holiday_00.mov beside holiday.jpg took the stem holiday_00, the name of holiday's first face file: when the
    video failed, removing its outputs by stem removed holiday's faces too."""
    taken: set[str] = set()
    assert [jobs._unique(s, taken) for s in ("holiday", "holiday_00", "holiday", "image_10", "image")] == [
        "holiday", "holiday_00-2", "holiday-2", "image_10", "image-2"]
    many: set[str] = set()  # sixteen pastes named image.png: "_10" would be image's 11th face file (it looped)
    assert [jobs._unique("image", many) for _ in range(16)] == ["image", *(f"image-{k}" for k in range(2, 17))]


def test_job_level_errors_name_no_server_path(tmp_path):
    from facerestore.errors import WeightsHashError

    secret = "/home/srv/.cache/facerestore/weights/x.pth"
    for exc in (WeightsHashError(f"weights 'x': {secret} does not match sha256 ab"),
                OSError(28, "No space left on device", f"{secret}.tmp")):
        line = jobs.public_reason(exc)
        assert secret not in line and "/home" not in line and line, line


def test_a_zip_that_cannot_be_written_keeps_the_restored_files(tmp_path, monkeypatch):
    job = tmp_path / "job"
    (job / "restored_imgs").mkdir(parents=True)
    (job / "restored_imgs" / "a.png").write_bytes(b"x")

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(jobs.zipfile.ZipFile, "write", full_disk)
    with pytest.raises(OSError):
        jobs.zip_results(job, job / jobs.ZIP_NAME)
    assert not list(job.glob(".*.tmp")) and not (job / jobs.ZIP_NAME).exists()  # nothing half-written left


def test_a_job_restores_at_most_max_faces_per_photo(astronaut_path):
    """A detector score typed very low (-2 with dlib's HOG: 145 "faces" on the 512 px example) made one request
    restore hundreds of faces; the page keeps the most confident max_faces and says how many it left."""
    from facerestore.faces.detect import create_detector
    from facerestore.io import read_rgb

    img = read_rgb(astronaut_path)
    loose = create_detector("hog", threshold=-2.0)
    n = len(loose.detect(img))
    capped = jobs._AtMostFaces(loose, 4)
    kept = capped.detect(img)
    assert n > 4 and len(kept) == 4 and capped.dropped == n - 4
    assert [d.score for d in kept] == sorted((d.score for d in loose.detect(img)), reverse=True)[:4]
    assert capped.name == loose.name and capped.threshold == -2.0  # the records see the detector itself
    with pytest.raises(InputError, match="max_faces"):
        jobs.Limits(max_faces=0)


def test_a_closed_page_stops_a_photo_between_batches_of_faces():
    """Closing the tab was checked between files only: an optimisation method's photo ran to its end. The job's
    restorer now checks before each batch; it is the method itself to the records."""
    import torch

    from facerestore.methods.registry import load_restorer

    r = load_restorer("ispl")
    closed = {"now": False}
    wrapped = jobs._cancellable(r, lambda: closed["now"])
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(wrapped.restore(x), r.restore(x))
    assert wrapped.describe() == r.describe() and wrapped.spec is r.spec
    closed["now"] = True
    with pytest.raises(jobs._Cancelled):
        wrapped.restore(x)
    assert jobs._cancellable(r, None) is r
