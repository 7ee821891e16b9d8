"""The page and the server of ``facerestore serve`` (Gradio; the ``web`` extra). What a job does is in
:mod:`facerestore.web.jobs`; this module only lays out the page and wires it.

Safe by default: the server binds to loopback; each upload is limited in bytes (Gradio refuses larger ones,
:func:`jobs.check_upload` checks again) and in pixels (before decoding, and the output after the upscale; for a
video, its frames), a video also in frames (``--max-video-frames``);
jobs go through a bounded queue (``queue_size`` waiting, ``concurrency`` running, one job per worker: past
that, the page says the server is busy); a failing photo shows the CLI's one-line error; every file lives in one
temporary folder (Gradio's upload folder too, ``GRADIO_TEMP_DIR``), each session's part removed when its page
is closed and the whole folder when the server stops; browsers send no paths that reach the file system.
"""

# no `from __future__ import annotations`: Gradio reads the handlers' annotations (gr.Request, gr.Progress)
import ipaddress
import logging
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facerestore import io
from facerestore.errors import InputError
from facerestore.web import jobs

__all__ = ["ServeConfig", "build_app", "is_loopback", "serve"]

IMAGE_TYPES = list(io.INPUT_EXTENSIONS)
VIDEO_TYPES = list(jobs.VIDEO_EXTENSIONS)
ELEMENT_IDS = ("photos", "method", "weights", "method-info", "fidelity", "blend", "upscale", "detector", "gate",
               "steps", "center-face", "min-score", "mask", "bg-upsampler", "ext", "refs", "restore", "status",
               "video", "pick", "compare", "face-pick", "face-compare", "face-info", "report", "downloads")

REPORT_WIDTHS = ["17%", "5%", "13%", "6%", "8%", "8%", "7%", "9%", "10%", "6%", "11%"]  # one per REPORT_HEADERS
CSS = """
#status { min-height: 2.5em; }
#method-info { font-size: 0.9em; }
"""


@dataclass
class ServeConfig:
    """Options of ``facerestore serve`` (see its ``--help``)."""

    host: str = "127.0.0.1"
    port: int = 7860
    limits: jobs.Limits = field(default_factory=jobs.Limits)
    concurrency: int = 1
    queue_size: int = 4
    device: str = "cpu"
    half: bool = False  # reduced precision for the methods whose spec lists it (jobs.half_applies)
    max_steps: int = 500
    default_method: str = "ispl"

    def validate(self) -> None:
        if not 1 <= int(self.port) <= 65535:
            raise InputError(f"--port must be in [1, 65535], got {self.port}")
        if self.concurrency < 1:
            raise InputError(f"--concurrency must be at least 1, got {self.concurrency}")
        if self.queue_size < 1:  # Gradio's queue refuses every job at a size of 0
            raise InputError(f"--queue-size must be at least 1, got {self.queue_size}")
        # the steps slider runs from a method's minimum (robust-inversion: one per phase, 3) to --max-steps, and a
        # slider needs its maximum above its minimum
        least = 1 + max(jobs.min_steps(v) for _, v in jobs.method_choices())
        if self.max_steps < least:
            raise InputError(f"--max-steps must be at least {least}, got {self.max_steps}")
        if self.default_method not in [v for _, v in jobs.method_choices()]:
            raise InputError(f"--method {self.default_method!r} is not a method with shipped weights; available: "
                             f"{', '.join(v for _, v in jobs.method_choices())}")


def is_loopback(host: str) -> bool:
    """True for "localhost" and addresses in 127.0.0.0/8 or ::1."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _md_escape(text: str) -> str:
    """Text shown inside Markdown as it is (file names may hold ``* _ [ ] < >`` and the like)."""
    out = []
    for ch in text:
        out.append("\\" + ch if ch in "\\`*_{}[]()<>#+-.!|~" else ch)
    return "".join(out)


def status_markdown(result: jobs.JobResult | None, error: str | None = None) -> str:
    """The line(s) above the results: the job's summary, then each photo that failed as ``NAME: reason``."""
    if error is not None:
        return f"**Error:** {_md_escape(error)}"
    if result is None:
        return ""
    done = bool(result.photos or result.videos)
    lines = [_md_escape(result.summary()) if done else "**Nothing restored.**"]
    if result.errors:
        lines.append("")
        lines.append("Not restored:" if done else "")
        lines += [f"- {_md_escape(e)}" for e in result.errors]
    return "\n".join(ln for ln in lines if ln is not None)


def face_caption(photo: jobs.PhotoOutput, face: jobs.FaceOutput) -> str:
    """The line under a face's before/after: identity similarity and distance, and the gate's decision."""
    r = face.record
    text = f"{photo.name}, face {face.index + 1} of {len(photo.faces)}"
    if r.get("identity_distance") is not None:
        same = "another person?" if r.get("identity_changed") else "the same person"
        text += (f": identity similarity {r['identity_similarity']:.3f}, distance {r['identity_distance']:.3f} "
                 f"({same})")
    gate = r.get("gate") or {}
    from facerestore.pipeline import NON_FINITE

    if gate.get("reason") == NON_FINITE:  # not the gate's verdict: the method failed on this face
        text += "; not restored: the method returned NaN or infinite values (the face is kept as it was)"
    elif gate:
        text += f"; quality gate: {gate.get('reason')}, {r.get('paste_weight', 1.0):.2f} of the restoration pasted"
    return _md_escape(text)


def parse_score(text: Any) -> float | None:
    """The detector score threshold typed in the page: None when empty (the detector's own, as without
    ``--min-score``), else a finite number (one-line InputError otherwise)."""
    if text is None or not str(text).strip():
        return None
    try:
        value = float(str(text).strip())
    except ValueError:
        raise InputError(f"the detector score threshold must be a number, got {str(text).strip()[:32]!r}") from None
    if not math.isfinite(value):
        raise InputError(f"the detector score threshold must be a finite number, got {value}")
    return value


def _photo(result: jobs.JobResult | None, index: Any) -> jobs.PhotoOutput | None:
    if result is None or not result.photos:
        return None
    try:
        i = int(index or 0)
    except (TypeError, ValueError):
        i = 0
    return result.photos[max(0, min(i, len(result.photos) - 1))]


def face_view(result: jobs.JobResult | None, photo_index: Any, face_index: Any) -> tuple[Any, str]:
    """(before/after pair of one face, its caption)."""
    p = _photo(result, photo_index)
    if p is None:
        return None, ""
    if not p.faces:
        if p.not_aligned:
            return None, _md_escape(f"{p.not_aligned} face{'s' * (p.not_aligned != 1)} found in {p.name} but not "
                                    "restorable (at the photo's edge): the photo is only upscaled")
        return None, _md_escape(f"no face found in {p.name}: the photo is only upscaled")
    try:
        k = int(face_index or 0)
    except (TypeError, ValueError):
        k = 0
    f = p.faces[max(0, min(k, len(p.faces) - 1))]
    return (str(f.before), str(f.after)), face_caption(p, f)


def face_choices(result: jobs.JobResult | None, photo_index: Any) -> list[tuple[str, str]]:
    p = _photo(result, photo_index)
    return [] if p is None else [(f"face {f.index + 1}", str(f.index)) for f in p.faces]


def photo_view(result: jobs.JobResult | None, index: Any) -> tuple[Any, list[tuple[str, str]], Any, str]:
    """(before/after pair of the whole photo, face choices, first face's before/after, its caption)."""
    p = _photo(result, index)
    if p is None:
        return None, [], None, ""
    pair, caption = face_view(result, index, 0)
    return (str(p.before), str(p.after)), face_choices(result, index), pair, caption


def build_app(cfg: ServeConfig, sessions: jobs.Sessions, *, uploads_root: str | os.PathLike | None = None) -> Any:
    """The Gradio Blocks of the page (not launched). ``uploads_root``: Gradio's upload folder; uploads are read
    only from there."""
    import gradio as gr

    method_values = [v for _, v in jobs.method_choices()]
    method0 = cfg.default_method if cfg.default_method in method_values else method_values[0]
    spec0 = _spec(method0)
    fid0 = jobs.default_fidelity(method0, device=cfg.device, half=cfg.half)
    lim = cfg.limits

    with gr.Blocks(title="facerestore", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown("# facerestore\nRestore the faces of photos and videos: the same pipeline as `facerestore "
                    f"restore`. Up to {lim.max_files} files per job ({lim.max_videos} video of at most "
                    f"{lim.max_video_frames} frames), {lim.max_upload_mb:g} MB and {lim.max_pixels / 1e6:.1f} "
                    "megapixels each (the output too).")
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                photos = gr.File(label=f"Photos or a video ({', '.join(VIDEO_TYPES)})", file_count="multiple",
                                 file_types=IMAGE_TYPES + VIDEO_TYPES, type="filepath", elem_id="photos", height=140)
                method = gr.Dropdown(choices=jobs.method_choices(), value=method0, label="Method", elem_id="method")
                weights = gr.Dropdown(choices=jobs.weight_choices(method0), value=jobs.DEFAULT_WEIGHTS,
                                      label="Weights", elem_id="weights")
                info = gr.Markdown(jobs.method_info(method0), elem_id="method-info")
                fidelity = gr.Slider(0.0, 1.0, value=fid0 if fid0 is not None else 1.0, step=0.05,
                                     label="Fidelity (1 = closest to the input)", visible=fid0 is not None,
                                     elem_id="fidelity")
                blend = gr.Slider(0.0, 1.0, value=1.0, step=0.05, elem_id="blend",
                                  label="Blend: share of each restored face pasted over the photo")
                upscale = gr.Slider(1.0, 4.0, value=2.0, step=0.5, label="Upscale", elem_id="upscale")
                detector = gr.Dropdown(choices=jobs.detector_choices(), value="auto", label="Face detector",
                                       elem_id="detector")
                gate = gr.Checkbox(value=True, elem_id="gate",
                                   label="Quality gate: keep the photo's own face where the restoration is worse")
                steps = gr.Slider(min(jobs.min_steps(method0), cfg.max_steps), cfg.max_steps,
                                  value=min(50, cfg.max_steps), step=1,
                                  elem_id="steps",
                                  label="Optimisation steps per face", visible=bool(spec0.unsupervised))
                bg_choices, bg_note = jobs.bg_upsampler_choices()
                with gr.Accordion("More options (those of facerestore restore)", open=False, elem_id="more"):
                    center = gr.Checkbox(value=False, label="Only the face nearest the centre", elem_id="center-face")
                    min_score = gr.Textbox(value="", placeholder="the detector's own", max_lines=1, max_length=32,
                                           elem_id="min-score", label="Detector score threshold (empty: the "
                                           "detector's calibrated one; retinaface and scrfd: face probability, "
                                           "dlib: SVM margin)")
                    mask = gr.Dropdown(choices=jobs.mask_choices(), value="mesh", label="Paste-back mask",
                                       elem_id="mask")
                    bg = gr.Dropdown(choices=bg_choices, value="lanczos", elem_id="bg-upsampler", info=bg_note,
                                     label="Background upsampler (the photo around the faces)")
                    ext = gr.Radio(choices=[("auto (JPEG, PNG, WebP and TIFF keep their format; the rest PNG)",
                                             "auto"), ("png", "png"), ("jpg", "jpg"), ("tif", "tif")], value="auto",
                                   label="Format of restored photos", elem_id="ext")
                ref_methods = ", ".join(v for v in method_values if _spec(v).uses_refs or _spec(v).needs_refs)
                with gr.Accordion(f"Reference photos of the same person (optional; for {ref_methods})", open=False):
                    refs = gr.File(label="References", file_count="multiple", file_types=IMAGE_TYPES,
                                   type="filepath", elem_id="refs", height=100)
                run = gr.Button("Restore", variant="primary", elem_id="restore")
            with gr.Column(scale=3, min_width=400):
                status = gr.Markdown("", elem_id="status")
                video = gr.Video(label="Restored video", interactive=False, visible=False, elem_id="video",
                                 height=420)
                pick = gr.Dropdown(choices=[], value=None, label="Photo", visible=False, elem_id="pick")
                compare = gr.ImageSlider(label="Whole photo: before | after (drag the handle)", type="filepath",
                                         elem_id="compare", interactive=False, max_height=520)
                face_pick = gr.Dropdown(choices=[], value=None, label="Face", elem_id="face-pick")
                face_compare = gr.ImageSlider(label="Face: before | after (aligned crops)", type="filepath",
                                              elem_id="face-compare", interactive=False, max_height=420)
                face_info = gr.Markdown("", elem_id="face-info")
                report = gr.Dataframe(
                    headers=jobs.REPORT_HEADERS, value=[], elem_id="report", interactive=False, wrap=True,
                    column_widths=REPORT_WIDTHS, label="Identity report per face: dlib similarity and distance (under "
                    "0.6: the same person), MobileFace's distance (under 0.71: the same person), the quality "
                    "gate's decision and the share of the restoration pasted")
                downloads = gr.File(label="Downloads (each photo, its JSON record, all as results.zip)",
                                    file_count="multiple", interactive=False, elem_id="downloads")

        def on_method(name: str) -> tuple[Any, ...]:
            spec = _spec(name)
            fid = jobs.default_fidelity(name, device=cfg.device, half=cfg.half)
            return (gr.update(choices=jobs.weight_choices(name), value=jobs.DEFAULT_WEIGHTS),
                    jobs.method_info(name),
                    gr.update(visible=fid is not None, value=fid if fid is not None else 1.0),
                    gr.update(visible=bool(spec.unsupervised), minimum=min(jobs.min_steps(name), cfg.max_steps)))

        def on_weights(name: str, w: str) -> str:
            return jobs.method_info(name, w)

        def on_restore(files: list[str] | None, name: str, w: str, fid: float, bl: float, up: float, det: str,
                       use_gate: bool, n_steps: float, only_center: bool, score: str | None, mask_name: str,
                       bg_name: str, ext_name: str, ref_files: list[str] | None, request: gr.Request,
                       progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008 (Gradio's idiom)
            ws = sessions.get(getattr(request, "session_hash", None))
            paths, ref_paths = list(files or []), list(ref_files or [])
            ws.note_uploads(paths + ref_paths)

            def tick(done: int, total: int, photo: str) -> None:
                progress((done, total), desc=f"restoring {photo}" if photo else "writing the zip", unit="files")

            def frame_tick(video_name: str, done: int, total: int | None) -> None:
                progress((done, total), desc=f"restoring {video_name}", unit="frames")

            try:
                spec = _spec(name)
                opts = jobs.JobOptions(method=name, weights=w, fidelity=float(fid) if spec.supports_fidelity else None,
                                       blend=float(bl), gate=bool(use_gate), upscale=float(up), detector=det,
                                       steps=int(n_steps) if spec.unsupervised else None, device=cfg.device,
                                       half=cfg.half, only_center_face=bool(only_center), min_score=parse_score(score),
                                       mask=mask_name, bg_upsampler=bg_name, ext=ext_name)
                job_dir = ws.new_job_dir()
                try:
                    result = jobs.run_job(paths, opts, job_dir, lim, refs=ref_paths, uploads_root=uploads_root,
                                          on_progress=tick, cancelled=lambda: ws.closed, max_steps=cfg.max_steps,
                                          on_frame=frame_tick)
                finally:
                    ws.job_done()
            except Exception as exc:  # the whole job failed: one line, the views cleared (never a generic toast)
                if isinstance(exc, jobs.EXPECTED_ERRORS):
                    line = jobs.public_reason(exc)
                else:  # out of memory named; anything else is a bug: its type here, the details in the log
                    logging.getLogger("facerestore.web").exception("job failed")
                    line = jobs.error_line("the job", exc) if jobs._out_of_memory(exc) else \
                        f"internal error ({type(exc).__name__}); the server's log has the details"
                shown = gr.update(value=None, visible=True)
                return (status_markdown(None, line), gr.update(value=None, visible=False),
                        gr.update(choices=[], value=None, visible=False), shown,
                        gr.update(choices=[], value=None, visible=True), shown, gr.update(value="", visible=True),
                        gr.update(value=[], visible=True), None, None)
            if ws.closed:  # the page was closed while the job ran: nothing to show, nothing to keep (the job's last
                # write may have made the session's folder again after the close removed it)
                shutil.rmtree(result.dir, ignore_errors=True)
                shutil.rmtree(ws.dir, ignore_errors=True)
                return ("", gr.update(), gr.update(), None, gr.update(), None, "", [], None, None)
            pair, fchoices, fpair, fcaption = photo_view(result, 0)
            choices = [(p.name, str(i)) for i, p in enumerate(result.photos)]
            played = str(result.videos[0].preview) if result.videos else None
            show = bool(result.photos) or played is None  # a video alone: no photo views
            return (status_markdown(result), gr.update(value=played, visible=played is not None),
                    gr.update(choices=choices, value="0" if choices else None, visible=len(choices) > 1),
                    gr.update(value=pair, visible=show),
                    gr.update(choices=fchoices, value="0" if fchoices else None, visible=show),
                    gr.update(value=fpair, visible=show), gr.update(value=fcaption, visible=show),
                    gr.update(value=jobs.report_rows(result), visible=show),
                    [str(f) for f in result.files()] or None, result)

        def on_pick(index: str | None, result: jobs.JobResult | None) -> tuple[Any, ...]:
            pair, fchoices, fpair, fcaption = photo_view(result, index)
            return pair, gr.update(choices=fchoices, value="0" if fchoices else None), fpair, fcaption

        def on_face(index: str | None, photo_index: str | None, result: jobs.JobResult | None) -> tuple[Any, str]:
            return face_view(result, photo_index, index)

        def on_unload(request: gr.Request) -> None:
            sessions.close(getattr(request, "session_hash", None))

        method.change(on_method, inputs=method, outputs=[weights, info, fidelity, steps], queue=False,
                      api_visibility="private")
        weights.change(on_weights, inputs=[method, weights], outputs=info, queue=False, api_visibility="private")
        run.click(on_restore, inputs=[photos, method, weights, fidelity, blend, upscale, detector, gate, steps, center,
                                      min_score, mask, bg, ext, refs],
                  outputs=[status, video, pick, compare, face_pick, face_compare, face_info, report, downloads, state],
                  concurrency_limit=cfg.concurrency, concurrency_id="restore", api_visibility="private")
        pick.input(on_pick, inputs=[pick, state], outputs=[compare, face_pick, face_compare, face_info], queue=False,
                   api_visibility="private")
        face_pick.input(on_face, inputs=[face_pick, pick, state], outputs=[face_compare, face_info], queue=False,
                        api_visibility="private")
        demo.unload(on_unload)
    demo.queue(max_size=cfg.queue_size, default_concurrency_limit=cfg.concurrency)
    return demo


def _spec(name: str) -> Any:
    from facerestore.methods import registry

    return registry.get_spec(name)


def serve(cfg: ServeConfig, *, on_ready: Callable[[str, Path], None] | None = None,
          stop: threading.Event | None = None) -> int:
    """Run the server until SIGINT / SIGTERM (or ``stop`` is set); every temporary file is removed on the way out.
    ``on_ready(url, temporary folder)`` is called once it answers. Returns 0."""
    cfg.validate()
    root = Path(tempfile.mkdtemp(prefix="facerestore-serve-"))
    saved = {k: os.environ.get(k) for k in ("GRADIO_TEMP_DIR", "GRADIO_ANALYTICS_ENABLED")}
    # Gradio's upload folder is ours: uploads, results and previews all live under one folder
    os.environ["GRADIO_TEMP_DIR"] = str(root)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # no version check or telemetry: nothing leaves the machine
    sessions = jobs.Sessions(root / jobs.SESSIONS_DIRNAME, uploads_root=root)
    demo = None
    try:
        demo = build_app(cfg, sessions, uploads_root=root)
        _, url, _ = demo.launch(
            server_name=cfg.host, server_port=int(cfg.port), max_file_size=cfg.limits.max_upload_bytes,
            prevent_thread_lock=True, quiet=True, show_error=False, share=False, inbrowser=False, ssr_mode=False,
            mcp_server=False, pwa=False, enable_monitoring=False, footer_links=[], css=CSS,
        )
        if not is_loopback(cfg.host):
            print(f"warning: listening on {cfg.host}: anyone who can reach this machine can use the page "
                  "(no login)", file=sys.stderr)
        print(f"facerestore serve: {url} (Ctrl-C stops; temporary files in {root}, removed on exit)", flush=True)
        if on_ready is not None:
            on_ready(url, root)
        while not (stop is not None and stop.is_set()):
            time.sleep(0.2)
    except KeyboardInterrupt:
        print("facerestore serve: stopped", file=sys.stderr)
    finally:
        if demo is not None:
            demo.close()
        sessions.close_all()
        shutil.rmtree(root, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return 0
