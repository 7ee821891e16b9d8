"""What one request of ``facerestore serve`` does, without Gradio (so that it is tested without a browser).

- :class:`Limits`: upload size, pixel count (input and output), number of files; :func:`read_upload` applies
  them before decoding (the size from the file header), then decodes with :func:`facerestore.io.decode_image`,
  which applies the library's own pixel limit and hostile-file checks, as for the CLI.
- :class:`Sessions` / :class:`Workspace`: one temporary folder per browser session, made by the server
  (``tempfile``), never named after anything a browser sends; :meth:`Sessions.close` removes it (and the uploads
  its jobs used that no other open session uses: :class:`UploadOwners`) when the page is closed.
- :func:`run_job`: the files of one press of "Restore": each photo through
  :func:`facerestore.pipeline.restore_photo` and :func:`facerestore.pipeline.write_photo_json`, each video through
  :func:`facerestore.video.restore_video` (the CLI's functions, options and output layout: ``restored_imgs/``,
  ``cropped_faces/``, ``restored_faces/``, ``cmp/``, ``restored_videos/``), plus ``results.zip``. A file that
  fails is reported as ``NAME: reason``, the reason being the CLI's one-line error (:func:`facerestore.io.one_line`;
  an unexpected error: "internal error", its traceback in the server's log), and the others go on.
- :func:`method_choices` / :func:`weight_choices` / :func:`method_info`: the methods of the registry that ship
  weights, the weight references their spec lists, and the licence of each; :func:`detector_choices`,
  :func:`mask_choices`, :func:`bg_upsampler_choices`: the CLI's ``--detector``, ``--mask`` and ``--bg-upsampler``
  values, each with whether its weights are here.

No path from a browser reaches the file system: uploads are read only from Gradio's upload folder
(:func:`read_upload` refuses anything else), output names are made from a sanitized stem, and weights are
chosen among the references of the method's spec, never given as a path.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facerestore import io
from facerestore.errors import FaceRestoreError, InputError, WeightsHashError, WeightsMissingError, quiet_warnings

__all__ = [
    "BG_UPSAMPLERS",
    "DEFAULT_WEIGHTS",
    "EXT_CHOICES",
    "MASK_CHOICES",
    "SESSIONS_DIRNAME",
    "VIDEO_EXTENSIONS",
    "JobOptions",
    "JobResult",
    "Limits",
    "PhotoOutput",
    "Sessions",
    "UploadOwners",
    "VideoOutput",
    "Workspace",
    "animation_preview",
    "bg_upsampler_choices",
    "browser_preview",
    "check_pixels",
    "check_upload",
    "default_fidelity",
    "detector_choices",
    "detector_names",
    "error_line",
    "esrgan_cached",
    "is_clip",
    "is_video",
    "mask_choices",
    "method_choices",
    "method_info",
    "min_steps",
    "read_upload",
    "report_rows",
    "resolve_weights_choice",
    "run_job",
    "safe_stem",
    "weight_choices",
    "zip_results",
]

MB = 1 << 20
DEFAULT_MAX_PIXELS = 24_000_000  # input and output: a 24 MP photo at upscale 1, or 6 MP at upscale 2
MAX_UPSCALE = 8.0
DEFAULT_WEIGHTS = "default"
PHOTO_FOLDERS = ("restored_imgs", "cropped_faces", "restored_faces", "cmp")
VIDEO_FOLDER = "restored_videos"  # as `facerestore restore` names it
RESULT_FOLDERS = (*PHOTO_FOLDERS, VIDEO_FOLDER)
PREVIEW_FOLDER = "previews"  # the input upscaled like the output, for the before/after slider (not in the zip)
DEFAULT_MAX_VIDEO_FRAMES = 900  # 30 s at 30 frames/s; a CPU restores a few frames per second
# the CLI's choices (`facerestore restore --mask / --bg-upsampler / --ext`)
MASK_CHOICES = ("mesh", "landmarks", "square")
BG_UPSAMPLERS = ("lanczos", "esrgan")
EXT_CHOICES = io.OUTPUT_FORMATS
VIDEO_EXTENSIONS = io.VIDEO_EXTENSIONS  # facerestore.video's (io: PyAV and torch stay unloaded until a video comes)
ZIP_NAME = "results.zip"


# --------------------------------------------------------------------------------------------------
# limits and uploads


@dataclass(frozen=True)
class Limits:
    """What one request may ask for: ``max_upload_mb`` per file, ``max_pixels`` per image or video frame read or
    written (input and output, so the upscale counts), ``max_files`` files and ``max_refs`` reference photos per
    job, ``max_videos`` videos per job and ``max_video_frames`` frames per video (so that one job cannot hold a
    worker for hours)."""

    max_upload_mb: float = 25.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_files: int = 16
    max_refs: int = 8
    max_video_frames: int = DEFAULT_MAX_VIDEO_FRAMES
    max_videos: int = 1
    max_faces: int = 32  # per photo or frame: a detector threshold set very low finds hundreds of "faces"

    def __post_init__(self) -> None:
        if not (np.isfinite(self.max_upload_mb) and self.max_upload_mb > 0):
            raise InputError(f"--max-upload-mb must be a positive number, got {self.max_upload_mb:g}")
        if int(self.max_pixels) != self.max_pixels or self.max_pixels < 1:
            raise InputError(f"--max-pixels must be a positive whole number, got {self.max_pixels}")
        library = io.max_pixels()
        if library is not None and self.max_pixels > library:
            raise InputError(f"--max-pixels {self.max_pixels} is over the library's limit of {library} pixels "
                             "(set FACERESTORE_MAX_PIXELS to raise that one)")
        if int(self.max_faces) != self.max_faces or self.max_faces < 1:
            raise InputError(f"max_faces must be a positive whole number, got {self.max_faces}")
        if self.max_files < 1 or self.max_refs < 1 or self.max_videos < 1:
            raise InputError("the number of files per job must be at least 1")
        if int(self.max_video_frames) != self.max_video_frames or self.max_video_frames < 1:
            raise InputError(f"--max-video-frames must be a positive whole number, got {self.max_video_frames}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)


def check_pixels(width: int, height: int, limit: int, what: str = "image") -> None:
    """InputError when ``width`` x ``height`` is over the server's ``limit`` (the wording of
    :func:`facerestore.io.check_pixels`, which applies the library's limit)."""
    if int(width) * int(height) > limit:
        raise InputError(f"{what} is {int(width)}x{int(height)} ({int(width) * int(height) / 1e6:.1f} megapixels), "
                         f"over this server's limit of {limit / 1e6:.1f} megapixels")


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an encoded image's header (nothing decoded); None when Pillow cannot tell (the
    decoder then says why in one line)."""
    import io as _io

    from PIL import Image

    if io._is_heif(data):
        try:  # Pillow opens HEIC only once pillow-heif's opener is registered (the decoder does it otherwise)
            io._register_heif()
        except InputError:
            return None  # the decoder says in one line what is missing
    try:
        with quiet_warnings():
            with Image.open(_io.BytesIO(data)) as im:
                return int(im.size[0]), int(im.size[1])
    except Exception:
        return None


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


SESSIONS_DIRNAME = "sessions"  # the sessions' folder inside the upload folder (serve puts both under one root)


def _is_upload(path: Path, uploads_root: Path) -> bool:
    """Inside the upload folder and not in the sessions' folder there: a client naming another session's results
    as its "upload" must not read them (nor have them removed when its own session ends)."""
    root = uploads_root.resolve()
    return _inside(path, root) and not _inside(path, root / SESSIONS_DIRNAME)


def upload_name(path: str | os.PathLike) -> str:
    """The name a browser gave an upload (Gradio keeps it, sanitized, as the file name): for messages only."""
    return io.display_path(Path(path).name)


def is_video(name: str | os.PathLike) -> bool:
    """A video upload, by its extension (as ``facerestore restore`` tells them)."""
    return Path(name).suffix.lower() in VIDEO_EXTENSIONS


def is_clip(path: str | os.PathLike) -> bool:
    """An upload restored frame by frame as one shot: a video (by its name's extension) or an animated GIF, WebP or
    PNG (by its header)."""
    return is_video(upload_name(path)) or io.is_animation(path)


def check_upload(path: str | os.PathLike, limits: Limits, *, uploads_root: str | os.PathLike | None = None
                 ) -> Path:
    """``path`` after checking that it is an upload (inside ``uploads_root``, Gradio's upload folder; anything
    else is refused) of at most ``limits.max_upload_mb``. One-line InputErrors that do not name the server's
    folders."""
    p = Path(path)
    if uploads_root is not None and not _is_upload(p.resolve(), Path(uploads_root)):
        raise InputError("not an uploaded file")
    try:
        size = p.stat().st_size
    except OSError:
        raise InputError("the uploaded file is gone (the session ended?); upload it again") from None
    if size > limits.max_upload_bytes:
        raise InputError(f"file is {size / MB:.1f} MB, over this server's upload limit of {limits.max_upload_mb:g} MB")
    return p


def read_upload(path: str | os.PathLike, limits: Limits, *, uploads_root: str | os.PathLike | None = None
                ) -> io.LoadedImage:
    """Decode one uploaded image after checking it (:func:`check_upload`, then at most ``limits.max_pixels`` by
    its header). Errors are one-line InputErrors that do not name the server's folders."""
    p = check_upload(path, limits, uploads_root=uploads_root)
    name = upload_name(p)
    try:
        data = io.read_bytes(p)
    except InputError:
        raise InputError("cannot read the uploaded file; upload it again") from None
    wh = image_size(data)
    if wh is None:  # a TIFF Pillow cannot open (float32 RGB): the library's own header reader knows its size
        try:
            header = io._read_header(data, "")
            wh = (header.width, header.height)
        except InputError:
            wh = None  # not an image the library reads either: the decoder says why, in one line
    if wh is not None:
        check_pixels(*wh, limits.max_pixels)
    loaded = io.decode_image(data)  # the library's checks; errors name no path
    loaded.path = Path(name)
    return loaded


_UNSAFE = re.compile(r"[^\w.-]+")  # \w: letters and digits of any script, and "_"


def safe_stem(name: str, max_len: int = 64) -> str:
    """A file stem made from an upload's name: letters and digits of any script (NFC), ``. _ -``, nothing else
    (no separator, space, control or format character), no leading dot, at most ``max_len`` characters; "photo"
    when nothing is left. Never a path. ``Мама.jpg`` stays ``Мама``: downloads keep names their owners read."""
    import unicodedata

    stem = Path(unicodedata.normalize("NFC", str(name)).replace("\\", "/")).stem
    stem = _UNSAFE.sub("_", stem).strip("._-")[:max_len]
    # at most 160 bytes in UTF-8 (file systems count bytes: 64 four-byte letters and ".png" exceed 255), cut on a
    # character boundary
    stem = stem.encode("utf-8")[:160].decode("utf-8", "ignore").rstrip("._-")
    return stem or "photo"


def _unique(stem: str, taken: set[str]) -> str:
    """``stem``, or ``stem-2``, ``stem-3`` ... : unique in the job, and never the name of another file's face files
    (``holiday_00.mov`` beside ``holiday.jpg``, whose faces are ``holiday_00.png``...): a failed file's outputs are
    removed by stem, which must match no other file's. The suffix is "-k", not "_k": ``photo_10`` is the name of
    ``photo``'s eleventh face file (with "_k" the tenth same-named upload found no free name)."""

    def clashes(s: str) -> bool:
        faces_of = r"_\d{2,}"  # the suffix of a stem's face files (STEM_00.png ...)
        return s in taken or any(re.fullmatch(re.escape(t) + faces_of, s) or re.fullmatch(re.escape(s) + faces_of, t)
                                 for t in taken)

    out, k = stem, 2
    while clashes(out.lower()):
        out, k = f"{stem}-{k}", k + 1
    taken.add(out.lower())
    return out


# --------------------------------------------------------------------------------------------------
# sessions


class UploadOwners:
    """Which open sessions use each upload. The upload folder names a file by its content's hash and its name, so
    two tabs dropping the same photo share one file: it is removed when the last session using it closes."""

    def __init__(self) -> None:
        self._count: dict[Path, int] = {}
        self._lock = threading.Lock()

    def take(self, path: Path) -> None:
        with self._lock:
            self._count[path] = self._count.get(path, 0) + 1

    def release(self, path: Path) -> bool:
        """Drop one session's use; True when none is left (the caller removes the file)."""
        with self._lock:
            n = self._count.get(path, 1) - 1
            if n > 0:
                self._count[path] = n
                return False
            self._count.pop(path, None)
            return True


class Workspace:
    """The temporary folder of one browser session: one sub-folder per job (only the latest is kept)."""

    def __init__(self, root: Path, uploads_root: Path | None = None, owners: UploadOwners | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="session-", dir=root))
        self.uploads_root = uploads_root
        self.owners = owners if owners is not None else UploadOwners()
        self.uploads: set[Path] = set()
        self.closed = False
        self.running = False  # a job of this session is running (one at a time: a new one removes the old folders)
        self._jobs = 0
        self._lock = threading.Lock()

    def new_job_dir(self) -> Path:
        """A fresh folder for a job; the folders of earlier jobs of this session are removed. One job at a time
        per session (an API client sending two at once would have the second remove the first's folder):
        InputError while one runs; :meth:`job_done` ends it."""
        with self._lock:
            if self.closed:
                raise InputError("this browser session has ended; reload the page")
            if self.running:
                raise InputError("a job of this page is still running; wait for it to finish")
            for old in self.dir.glob("job-*"):
                shutil.rmtree(old, ignore_errors=True)
            self._jobs += 1
            path = self.dir / f"job-{self._jobs}"
            path.mkdir(parents=True)  # the session folder may have been swept by a temporary-file cleaner
            self.running = True  # only once the job has its folder: a failure above leaves the page usable
            return path

    def job_done(self) -> None:
        """The session's running job ended (finished, failed or cancelled)."""
        with self._lock:
            self.running = False

    def note_uploads(self, paths: Sequence[str | os.PathLike]) -> None:
        """Remember uploads this session used (removed by :meth:`close`); only files inside the upload folder."""
        with self._lock:
            if self.closed:
                return
            for p in paths:
                q = Path(p).resolve()
                if self.uploads_root is not None and _is_upload(q, self.uploads_root) and q not in self.uploads:
                    self.uploads.add(q)
                    self.owners.take(q)

    def close(self) -> None:
        """Remove the session's folder and its uploads that no other open session uses (and their now-empty
        upload sub-folders)."""
        with self._lock:
            self.closed = True
            shutil.rmtree(self.dir, ignore_errors=True)
            for p in self.uploads:
                if not self.owners.release(p):
                    continue  # another tab uses the same file
                try:
                    p.unlink(missing_ok=True)
                    if self.uploads_root is not None and p.parent != self.uploads_root.resolve():
                        p.parent.rmdir()  # fails (and is left) when another file is still there
                except OSError:
                    pass
            self.uploads.clear()


class Sessions:
    """Browser session id -> :class:`Workspace`, created on first use under ``root``. Session ids come from the
    browser: they are dictionary keys only, never part of a path."""

    def __init__(self, root: str | os.PathLike, uploads_root: str | os.PathLike | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.uploads_root = None if uploads_root is None else Path(uploads_root)
        self._spaces: dict[str, Workspace] = {}
        self._owners = UploadOwners()
        self._lock = threading.Lock()

    def get(self, session_id: str | None) -> Workspace:
        key = str(session_id or "")
        with self._lock:
            ws = self._spaces.get(key)
            if ws is None or ws.closed:
                ws = self._spaces[key] = Workspace(self.root, self.uploads_root, self._owners)
            return ws

    def close(self, session_id: str | None) -> None:
        with self._lock:
            ws = self._spaces.pop(str(session_id or ""), None)
        if ws is not None:
            ws.close()

    def close_all(self) -> None:
        with self._lock:
            spaces, self._spaces = list(self._spaces.values()), {}
        for ws in spaces:
            ws.close()

    def __len__(self) -> int:
        return len(self._spaces)


# --------------------------------------------------------------------------------------------------
# methods, weights, detectors


def _spec(method: str) -> Any:
    from facerestore.methods import registry

    return registry.get_spec(method)


def _refs(spec: Any) -> tuple[str, ...]:
    w = spec.weights
    return () if w is None else ((w,) if isinstance(w, str) else tuple(w))


def method_choices() -> list[tuple[str, str]]:
    """(label, name) of every registered method that ships weights (a method that needs a weight file of the
    user's cannot be offered: no path from a browser reaches the file system)."""
    from facerestore.methods import registry

    out = []
    for s in registry.list_restorers():
        if _refs(s):
            out.append((f"{s.name} ({s.origin}{', slow' if s.unsupervised else ''})", s.name))
    return out


def _weight_status(ref: str) -> tuple[str, str]:
    """(licence, availability) of one weight reference of a spec."""
    from facerestore import zoo
    from facerestore.zoo.refs import BUILTIN_PREFIX

    if ref.startswith(BUILTIN_PREFIX):
        return "", "built in"
    if zoo.has_entry(ref):
        entry = zoo.get_entry(ref)
        return entry.licence, ("cached" if zoo.is_available(ref) else f"not downloaded: `facerestore models "
                                                                       f"download {ref}`")
    return "", "unknown"


def weight_choices(method: str) -> list[tuple[str, str]]:
    """(label, value) of the weights of ``method``: "default" (the spec's first available) and each reference
    the spec lists (a built-in file or a zoo entry), with whether it is here."""
    out = [("default (the first available below)", DEFAULT_WEIGHTS)]
    for ref in _refs(_spec(method)):
        out.append((f"{ref} ({_weight_status(ref)[1]})", ref))
    return out


def resolve_weights_choice(method: str, choice: str | None) -> str | None:
    """The ``weights=`` argument of :func:`facerestore.pipeline.get_restorer` for a weights choice: None for
    the default, else the spec's own reference (``builtin:FILE`` or a zoo entry's name, which the methods resolve;
    records then name it, never a path of this server); InputError for anything the spec does not list."""
    if choice in (None, "", DEFAULT_WEIGHTS):
        return None
    if choice not in _refs(_spec(method)):
        raise InputError(f"weights {choice!r} are not among those of method {method!r}")
    return choice


def method_info(method: str, weights: str | None = DEFAULT_WEIGHTS) -> str:
    """Markdown: what the method is, its options and the licence of its weights (the spec's, and the zoo
    entry's for a zoo reference)."""
    s = _spec(method)
    lines = [f"**{s.name}** ({s.origin}, {s.size_label or f'{s.size} px faces'}): {s.description}",
             "", f"- weights licence: {s.weights_licence}"]
    if weights not in (None, "", DEFAULT_WEIGHTS):
        licence, status = _weight_status(str(weights))
        lines.append(f"- `{weights}`: {status}" + (f"; licence: {licence}" if licence else ""))
    if s.trained_on:
        lines.append(f"- trained on: {', '.join(s.trained_on)}")
    knobs = ["fidelity" if s.supports_fidelity else "no fidelity knob"]
    if s.unsupervised:
        knobs.append("optimises each face: slow on a CPU, the steps bound it")
    lines.append(f"- options: {', '.join(knobs)}")
    if s.note:
        lines.append(f"- note: {s.note}")
    return "\n".join(lines)


def min_steps(method: str) -> int:
    """The smallest optimisation budget per face ``method`` accepts (the steps slider's minimum)."""
    from facerestore.methods import registry

    return int(getattr(registry.REGISTRY.restorer_class(method), "min_steps", 1))


def half_applies(opts: JobOptions) -> bool:
    """Whether a job runs its method in reduced precision: the server's ``--half`` and a method whose spec lists the
    device's half precision (bf16 on a CPU, fp16 on a GPU); a method without it runs fp32, not refused."""
    return bool(opts.half) and _spec(opts.method).supports_half(opts.device)


def default_fidelity(method: str, weights: str | None = DEFAULT_WEIGHTS, device: str = "cpu",
                     half: bool = False) -> float | None:
    """The fidelity ``method`` runs at when none is given (None: the method has no knob). A method class that
    states it answers without loading anything; one whose weights hold it (ISPL) is loaded with the key a job of
    this server uses (``half``: the server's --half), so the page's answer costs no extra model in memory."""
    spec = _spec(method)
    if not spec.supports_fidelity:
        return None
    from facerestore.methods import registry

    stated = getattr(registry.REGISTRY.restorer_class(method), "default_fidelity", None)
    if stated is not None:
        return float(stated)
    from facerestore.pipeline import get_restorer

    r = get_restorer(method, weights=resolve_weights_choice(method, weights), device=device,
                     half=bool(half) and spec.supports_half(device))
    return r.fidelity_used(None)


def detector_names() -> tuple[str, ...]:
    """"auto", then every detector of the registry (``faces.detect.DETECTORS``)."""
    from facerestore.faces.detect import DETECTORS

    return ("auto", *(d.name for d in DETECTORS))


def detector_choices() -> list[tuple[str, str]]:
    """(label, name) of the face detectors, with their licence and whether their weights are here."""
    from facerestore import zoo
    from facerestore.faces.detect import DETECTORS

    out = [("auto (RetinaFace when its weights are cached, else dlib HOG)", "auto")]
    for d in DETECTORS:
        missing = [w for w in d.weights if w != "dlib" and zoo.has_entry(w) and not zoo.is_available(w)]
        status = f"; not downloaded: `facerestore models download {missing[0]}`" if missing else ""
        out.append((f"{d.name} ({d.licence}{status})", d.name))
    return out


MESH_ENTRY = "facemesh-468"  # the zoo entry of ``--mask mesh`` (facerestore.faces.mesh)


def mask_choices() -> list[tuple[str, str]]:
    """(label, value) of the paste-back masks (``restore --mask``), mesh saying when its weights are missing
    (it then falls back to landmarks, as in the CLI)."""
    from facerestore import zoo

    mesh = "mesh (Face Mesh face oval: the face only, no hair or neck"
    if zoo.has_entry(MESH_ENTRY) and not zoo.is_available(MESH_ENTRY):
        mesh += f"; not downloaded, landmarks used instead: `facerestore models download {MESH_ENTRY}`"
    return [(mesh + ")", "mesh"), ("landmarks (the 68-point hull)", "landmarks"), ("square (the whole crop)", "square")]


def esrgan_cached() -> bool:
    from facerestore import zoo
    from facerestore.faces.background import ESRGAN_ENTRY

    return zoo.is_available(ESRGAN_ENTRY)


def bg_upsampler_choices() -> tuple[list[tuple[str, str]], str]:
    """((label, value) of the background upsamplers offered, a line about ESRGAN): ``lanczos`` always, ``esrgan``
    only when its weights are cached (the line then gives its CPU cost; else the command that fetches them)."""
    from facerestore.faces.background import ESRGAN_ENTRY

    out = [("lanczos (instant)", "lanczos")]
    if esrgan_cached():
        out.append(("esrgan (ESRGAN-thick super-resolution: slow on a CPU, minutes per megapixel)", "esrgan"))
        return out, "ESRGAN upscales the photo around the faces; on a CPU it takes minutes per megapixel"
    return out, f"ESRGAN is offered once its weights are cached: `facerestore models download {ESRGAN_ENTRY}`"


# --------------------------------------------------------------------------------------------------
# jobs


@dataclass
class JobOptions:
    """The page's settings for one job (checked by :meth:`validate`)."""

    method: str = "ispl"
    weights: str | None = DEFAULT_WEIGHTS
    fidelity: float | None = None
    blend: float = 1.0
    gate: bool = True
    upscale: float = 2.0
    detector: str = "auto"
    steps: int | None = None
    device: str = "cpu"
    # the server's --half: reduced precision (bf16 on a CPU, fp16 on a GPU) for the methods whose spec lists it;
    # the others run fp32 (the record's restorer.precision says which applied)
    half: bool = False
    # the CLI's --only-center-face, --min-score, --mask, --bg-upsampler and --ext, with the same meaning
    only_center_face: bool = False
    min_score: float | None = None
    mask: str = "mesh"
    bg_upsampler: str = "lanczos"
    ext: str = "auto"

    def validate(self, max_steps: int = 1000) -> None:
        """One-line InputError for a setting out of range (the page's widgets bound them; the API does not)."""
        spec = _spec(self.method)
        if not _refs(spec):
            raise InputError(f"method {self.method!r} needs a weight file of yours: use `facerestore restore "
                             "--weights`")
        if self.detector not in detector_names():
            raise InputError(f"unknown face detector {self.detector!r}; available: {', '.join(detector_names())}")
        for name, value, choices in (("mask", self.mask, MASK_CHOICES), ("background upsampler", self.bg_upsampler,
                                                                          BG_UPSAMPLERS), ("format", self.ext,
                                                                                           EXT_CHOICES)):
            if value not in choices:
                raise InputError(f"unknown {name} {value!r}; available: {', '.join(choices)}")
        if self.min_score is not None and not np.isfinite(float(self.min_score)):
            raise InputError(f"min-score must be a finite number, got {self.min_score}")
        for name, value, lo, hi in (("upscale", self.upscale, 0.0, MAX_UPSCALE), ("blend", self.blend, 0.0, 1.0),
                                    ("fidelity", self.fidelity, 0.0, 1.0)):
            if value is None:
                continue
            v = float(value)
            if not (np.isfinite(v) and lo <= v <= hi) or (name == "upscale" and v <= 0):
                raise InputError(f"{name} must be in {'(0' if name == 'upscale' else '[' + f'{lo:g}'}, {hi:g}], "
                                 f"got {value}")
        if self.steps is not None:
            if not spec.unsupervised:
                self.steps = None  # the steps apply to the optimisation methods only
            elif int(self.steps) != self.steps or not 1 <= self.steps <= max_steps:
                raise InputError(f"steps must be a whole number in [1, {max_steps}], got {self.steps}")
            elif self.steps < min_steps(self.method):
                raise InputError(f"{self.method} needs at least {min_steps(self.method)} optimisation steps per face "
                                 f"(one per phase), got {int(self.steps)}")


@dataclass
class FaceOutput:
    index: int
    before: Path  # cropped_faces/STEM_NN.png: the aligned input face
    after: Path  # restored_faces/STEM_NN.png: its restoration
    cmp: Path  # cmp/STEM_NN.png: both side by side
    record: dict[str, Any]  # FaceResult.to_json() plus the files


@dataclass
class PhotoOutput:
    name: str  # the upload's name (for people)
    stem: str
    image: Path  # restored_imgs/STEM.EXT
    record: Path  # restored_imgs/STEM.json
    before: Path  # previews/STEM.png: the input upscaled as the output is, for the before/after slider
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    faces: list[FaceOutput] = field(default_factory=list)
    pages: int = 1  # pages of a multi-page TIFF: only the first is restored
    shown: Path | None = None  # the slider's "after" when browsers cannot show the image (a TIFF's PNG copy)
    not_aligned: int = 0  # faces found but not restorable (almost entirely outside the photo): left as they were

    @property
    def after(self) -> Path:
        """The restored photo as the page shows it: the image itself, or its PNG copy when it is a TIFF."""
        return self.shown or self.image


@dataclass
class VideoOutput:
    name: str  # the upload's name (for people)
    stem: str
    video: Path  # restored_videos/STEM.EXT: the container of the upload, audio copied
    record: Path  # restored_videos/STEM.json: facerestore.video.VideoResult.to_json(), as the CLI writes it
    preview: Path  # what the page plays: the video itself, or previews/STEM.mp4 (H.264) when a browser cannot
    frames: int
    faces: int  # over all frames
    tracks: int
    size: tuple[int, int]
    faces_with_refs: int | None = None  # faces the reference photos guided (None: none given)


@dataclass
class JobResult:
    dir: Path
    photos: list[PhotoOutput] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # "NAME: one-line reason"
    zip: Path | None = None
    seconds: float = 0.0
    method: str = ""
    videos: list[VideoOutput] = field(default_factory=list)

    def files(self) -> list[Path]:
        """The downloads: each restored photo and its JSON record, each video and its record, then the zip."""
        out = [p for ph in self.photos for p in (ph.image, ph.record)]
        out += [p for v in self.videos for p in (v.video, v.record)]
        return out + ([self.zip] if self.zip is not None else [])

    def summary(self) -> str:
        text = self._photo_summary() if self.photos else ""
        for v in self.videos:
            text += "; " if text else ""
            text += (f"restored {v.name}: {v.frames} frame{'s' * (v.frames != 1)} ({v.size[0]}x{v.size[1]}), "
                     f"{v.faces} face{'s' * (v.faces != 1)} in {v.tracks} track{'s' * (v.tracks != 1)}")
            if v.faces_with_refs is not None and v.faces_with_refs < v.faces:
                text += f" (the reference photos used for {v.faces_with_refs} of them: the others did not match)"
        if self.videos:
            text += f" with {self.method} in {self.seconds:.1f} s"
        return text

    def _photo_summary(self) -> str:
        n_faces = sum(len(p.faces) for p in self.photos)
        from facerestore.pipeline import NON_FINITE

        reasons = [(f.record.get("gate") or {}) for p in self.photos for f in p.faces]
        failed = sum(1 for g in reasons if g.get("reason") == NON_FINITE)
        kept = sum(1 for g in reasons if g.get("weight") == 0.0 and g.get("reason") != NON_FINITE)
        text = (f"restored {n_faces} face{'s' * (n_faces != 1)} in {len(self.photos)} photo"
                f"{'s' * (len(self.photos) != 1)}")
        if not self.videos:
            text += f" with {self.method} in {self.seconds:.1f} s"
        if kept:
            text += f"; {kept} face{'s' * (kept != 1)} kept as they were (the quality gate found the restoration worse)"
        if failed:
            text += (f"; {failed} face{'s' * (failed != 1)} not restored: the method returned NaN or infinite values "
                     "(kept as they were)")
        not_aligned = sum(p.not_aligned for p in self.photos)
        if not_aligned:
            text += (f"; {not_aligned} face{'s' * (not_aligned != 1)} found but not restorable (at the photo's edge), "
                     "left as they were")
        checked = [f.record for p in self.photos for f in p.faces if f.record.get("refs_distance") is not None]
        unused = sum(1 for r in checked if not r.get("refs_used"))
        if unused:
            text += (f"; the reference photos were used for {len(checked) - unused} of {len(checked)} faces "
                     "(the others look like other people)")
        if any(r.get("refs_narrow") for r in checked):
            text += ("; the references passed the identity check only narrowly: make sure they show this person (on a "
                     "degraded face the check often cannot tell people apart)")
        no_face = [p.name for p in self.photos if not p.faces and not p.not_aligned]
        if no_face:
            text += f"; no face found in {', '.join(no_face)} (upscaled only)"
        for p in self.photos:
            if p.pages > 1:  # as `restore` says: never silently one page of many
                text += f"; {p.name} holds {p.pages} pages: the first was restored, the others are not in the output"
        return text


def _out_of_memory(exc: BaseException) -> bool:
    msg = str(exc).lower()
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and
                                            ("out of memory" in msg or "can't allocate memory" in msg))


def public_reason(exc: BaseException) -> str:
    """The CLI's one-line error as the page shows it: out of memory named; missing weights without the server's
    cache path (which the CLI's line gives, to say where to put them: the server's log has it)."""
    if _out_of_memory(exc):
        return "out of memory (this file is too large for the available memory)"
    import logging

    log = logging.getLogger("facerestore.web")
    if isinstance(exc, WeightsMissingError):
        log.warning("%s", io.one_line(exc))
        return "weights this needs are not installed on this server (its log says which)"
    if isinstance(exc, WeightsHashError):
        log.warning("%s", io.one_line(exc))
        return "weights on this server do not match their published checksum (its log says which)"
    if isinstance(exc, OSError) and not isinstance(exc, InputError) and getattr(exc, "filename", None):
        log.warning("%s", io.one_line(exc))  # the server's path stays in its log
        return f"the server could not read or write a file ({exc.strerror or type(exc).__name__})"
    return io.one_line(exc)


def error_line(name: str, exc: BaseException) -> str:
    """``NAME: reason`` (:func:`public_reason`)."""
    return f"{name}: {public_reason(exc)}"


EXPECTED_ERRORS = (FaceRestoreError, OSError, ValueError, MemoryError)


def _internal_error(name: str, exc: BaseException) -> str:
    """The page's line for an unexpected error on one file (no traceback or server path reaches the browser);
    the traceback goes to the server's log."""
    import logging

    logging.getLogger("facerestore.web").error("%s: unexpected error", name, exc_info=exc)
    return f"{name}: internal error ({type(exc).__name__}); the server's log has the details"


def _cancellable(restorer: Any, cancelled: Callable[[], bool] | None) -> Any:
    """``restorer`` for one job, checking ``cancelled()`` before each batch of faces: a closed tab stops a photo
    between batches (an optimisation method's face takes minutes) rather than after the whole photo. The
    wrapper is what records say of the method (:class:`facerestore.video._Wrapper`)."""
    if cancelled is None:
        return restorer
    from facerestore.video import _Wrapper

    wrapper = _Wrapper(restorer)
    inner_restore = restorer.restore

    def restore(lq: Any, **kwargs: Any) -> Any:
        if cancelled():
            raise _Cancelled
        return inner_restore(lq, **kwargs)

    wrapper.restore = restore  # type: ignore[method-assign]
    return wrapper


class _Cancelled(Exception):
    """The browser session ended while a video was being restored."""


def run_job(images: Sequence[str | os.PathLike], opts: JobOptions, job_dir: Path, limits: Limits, *,
            refs: Sequence[str | os.PathLike] = (), uploads_root: str | os.PathLike | None = None,
            on_progress: Callable[[int, int, str], None] | None = None,
            cancelled: Callable[[], bool] | None = None, max_steps: int = 1000,
            on_frame: Callable[[str, int, int | None], None] | None = None) -> JobResult:
    """Restore uploaded photos and videos into ``job_dir`` (the layout of ``facerestore restore -o job_dir``) and
    zip them.

    Photos go through :func:`facerestore.pipeline.restore_photo`, videos (by extension, :data:`VIDEO_EXTENSIONS`)
    through :func:`facerestore.video.restore_video` as ``restore`` does it (faces tracked and stabilised). Errors
    of the whole job (options, weights, references) raise a one-line InputError; a file that fails is listed in
    ``JobResult.errors`` and the others go on. ``on_progress(i, n, name)`` before each file, ``on_frame(name,
    done, total)`` after each frame of a video (``total`` None when the container does not say); ``cancelled()``
    is asked between photos and frames; ``max_steps`` bounds the optimisation steps a job may ask of the slow
    methods (``serve --max-steps``).
    """
    from facerestore.nn.devices import release_cpu_memory

    try:
        return _run_job(images, opts, job_dir, limits, refs=refs, uploads_root=uploads_root, on_progress=on_progress,
                        cancelled=cancelled, max_steps=max_steps, on_frame=on_frame)
    finally:  # the server lives on between jobs: the memory this one freed goes back to the system
        release_cpu_memory()


def _run_job(images: Sequence[str | os.PathLike], opts: JobOptions, job_dir: Path, limits: Limits, *,
             refs: Sequence[str | os.PathLike], uploads_root: str | os.PathLike | None,
             on_progress: Callable[[int, int, str], None] | None, cancelled: Callable[[], bool] | None,
             max_steps: int, on_frame: Callable[[str, int, int | None], None] | None) -> JobResult:
    from facerestore.faces.detect import create_detector
    from facerestore.faces.paste import upscale_image, upscaled_shape
    from facerestore.pipeline import get_restorer, prepare_refs, restore_photo, write_photo_json

    t0 = time.perf_counter()
    if not images:
        raise InputError("upload one or more photos or a video first")
    if len(images) > limits.max_files:
        raise InputError(f"{len(images)} files: this server restores at most {limits.max_files} per job")
    n_videos = sum(1 for p in images if is_clip(p))
    if n_videos > limits.max_videos:
        raise InputError(f"{n_videos} videos or animations: this server restores at most {limits.max_videos} per job")
    if len(refs) > limits.max_refs:
        raise InputError(f"{len(refs)} reference photos: this server takes at most {limits.max_refs}")
    opts.validate(max_steps)
    restorer = get_restorer(opts.method, weights=resolve_weights_choice(opts.method, opts.weights),
                            device=opts.device, steps=opts.steps, half=half_applies(opts))
    restorer.progress = False
    restorer.check_options(fidelity=opts.fidelity, refs=list(refs) or None)  # before any reference is read
    # as `restore`: the detector applies its calibrated threshold unless min_score replaces it
    plain = create_detector(opts.detector, **({} if opts.min_score is None else {"threshold": opts.min_score}))
    # the photos' and frames' detector keeps at most max_faces (only_center_face keeps one anyway, chosen among all);
    # the references' is the plain one (a group photo's person is chosen by identity among all its faces)
    detector = plain if opts.only_center_face else _AtMostFaces(plain, limits.max_faces)
    background: Any = "lanczos"
    if opts.bg_upsampler == "esrgan":
        from facerestore.faces.background import esrgan_background

        background = esrgan_background(opts.device)  # WeightsMissingError now when they are not cached
    refs_t = None
    if refs:
        loaded_refs = []
        for r in refs:
            try:
                loaded_refs.append(read_upload(r, limits, uploads_root=uploads_root))
            except EXPECTED_ERRORS as exc:
                raise InputError(f"reference {error_line(upload_name(r), exc)}") from None
        refs_t = prepare_refs(loaded_refs, int(restorer.spec.size), detector=plain, device=restorer.device)
    restorer.check_options(fidelity=opts.fidelity, refs=refs_t)

    result = JobResult(dir=job_dir, method=opts.method)
    taken: set[str] = set()
    for sub in (*PHOTO_FOLDERS, PREVIEW_FOLDER):
        (job_dir / sub).mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(images):
        name = upload_name(path)
        if cancelled is not None and cancelled():
            break
        if on_progress is not None:
            on_progress(i, len(images), name)
        stem = None
        try:
            if is_clip(path):
                stem = _unique(safe_stem(name), taken)
                video = _run_video(path, name, stem, opts, job_dir, limits, restorer,
                                   detector, background, refs_t, uploads_root=uploads_root, on_frame=on_frame,
                                   cancelled=cancelled)
                result.videos.append(video)
                continue
            loaded = read_upload(path, limits, uploads_root=uploads_root)
            h, w = loaded.rgb.shape[:2]
            oh, ow = upscaled_shape(h, w, float(opts.upscale))
            check_pixels(ow, oh, limits.max_pixels, f"the output (upscale {float(opts.upscale):g})")
            res = restore_photo(loaded, _cancellable(restorer, cancelled), upscale=float(opts.upscale),
                                fidelity=opts.fidelity,
                                only_center_face=bool(opts.only_center_face), detector=detector, device=opts.device,
                                refs=refs_t, min_score=opts.min_score, background=background, mask=opts.mask,
                                blend=float(opts.blend), gate=bool(opts.gate))
            stem = _unique(safe_stem(name), taken)
            photo = _write_photo(job_dir, name, stem, loaded, res, opts, write_photo_json, upscale_image,
                                 min_score=opts.min_score if opts.min_score is not None
                                 else getattr(detector, "threshold", None))
        except _Cancelled:
            _remove_outputs(job_dir, stem)
            break
        except Exception as exc:  # this file fails (its partial outputs leave the job), the others still run
            _remove_outputs(job_dir, stem)
            if isinstance(exc, EXPECTED_ERRORS) or _out_of_memory(exc):
                result.errors.append(_scrub(error_line(name, exc), path, name, job_dir))
            else:  # a bug of ours
                result.errors.append(_internal_error(name, exc))
            continue
        result.photos.append(photo)
    if on_progress is not None:
        on_progress(len(images), len(images), "")
    if result.photos or result.videos:
        try:  # the files are restored and listed on their own: a zip that cannot be written loses none of them
            result.zip = zip_results(job_dir, job_dir / ZIP_NAME)
        except OSError as exc:
            import logging

            logging.getLogger("facerestore.web").warning("results.zip: %s", io.one_line(exc))
            result.errors.append(f"{ZIP_NAME}: could not be written ({exc.strerror or type(exc).__name__}); the "
                                 "files above can be downloaded one by one")
    if getattr(detector, "dropped", 0):
        result.errors.append(f"{detector.dropped} detected face(s) over this server's limit of {limits.max_faces} per "
                             "photo or frame were left as they were (the least confident ones)")
    result.seconds = time.perf_counter() - t0
    return result


class _AtMostFaces:
    """The job's detector, keeping the ``limit`` most confident faces of each photo or frame (a threshold typed very
    low makes hundreds of "faces", each restored: one request would hold the worker for hours); the others are
    left as they were. Everything else is the wrapped detector's (its name and threshold reach the records)."""

    def __init__(self, inner: Any, limit: int) -> None:
        self.inner, self.limit, self.dropped = inner, int(limit), 0

    def __getattr__(self, key: str) -> Any:
        return getattr(self.inner, key)

    def detect(self, image: np.ndarray) -> list[Any]:
        from facerestore.faces.detect import sort_detections

        dets = sort_detections(self.inner.detect(image))  # by score, best first
        self.dropped += max(0, len(dets) - self.limit)
        return dets[: self.limit]


def _remove_outputs(job_dir: Path, stem: str | None) -> None:
    """Remove what a failed file wrote (its image, record, face files, preview or video): the zip and the page
    then hold only the files that succeeded. Stems are unique in a job, so no other file's outputs match."""
    if stem is None:
        return
    for sub in (*PHOTO_FOLDERS, PREVIEW_FOLDER, VIDEO_FOLDER):
        folder = job_dir / sub
        if folder.is_dir():
            faces = sub in PHOTO_FOLDERS[1:]  # STEM_NN.png face files live only there
            for f in folder.iterdir():
                base = f.name.rsplit(".", 1)[0]
                if f.is_file() and (base == stem or (faces and re.fullmatch(re.escape(stem) + r"_\d{2,}", base))):
                    f.unlink(missing_ok=True)


def _scrub(line: str, path: str | os.PathLike, name: str, job_dir: str | os.PathLike | None = None) -> str:
    """``line`` with the server's path of an upload replaced by its name (the video reader names the file), and the
    job folder's path (an output that could not be written) by "the job's folder"."""
    for form in {os.fspath(path), io.display_path(path), str(Path(path).resolve())}:
        line = line.replace(str(form), name)
    if job_dir is not None:
        for form in sorted({os.fspath(job_dir), io.display_path(job_dir), str(Path(job_dir).resolve())}, key=len,
                           reverse=True):
            line = line.replace(str(form), "the job's folder")
    return line


def _run_video(path: str | os.PathLike, name: str, stem: str, opts: JobOptions, job_dir: Path, limits: Limits,
               restorer: Any, detector: Any, background: Any, refs: Any, *,
               uploads_root: str | os.PathLike | None = None,
               on_frame: Callable[[str, int, int | None], None] | None = None,
               cancelled: Callable[[], bool] | None = None) -> VideoOutput:
    """One video or animated image upload -> ``restored_videos/STEM.EXT`` and its record, as ``restore``'s
    ``_restore_video`` does it (the same call and defaults: stabilisation on, the quality gate made temporal by
    ``restore_video`` / ``restore_animation``, the page's gate box as ``--no-gate``), within the server's limits:
    bytes, pixels of the input and output frames, frames (from the header before any work, and counted while
    running for containers that do not say)."""
    from facerestore.faces.paste import upscaled_shape
    from facerestore.video import probe_animation, probe_video, restore_animation, restore_video, video_output_extension

    src = check_upload(path, limits, uploads_root=uploads_root)
    animation = not is_video(name)
    upscale = float(opts.upscale)
    most = int(limits.max_video_frames)

    def too_long(n: int | str, fps: float | None) -> InputError:
        kind = "animation" if animation else "video"
        at = "" if fps is None else f" ({most / float(fps):.1f} s at {float(fps):g} frames/s)"
        return InputError(f"the {kind} has {n} frames, over this server's limit of {most}{at}")

    def check(width: int, height: int, frames: int | None, fps: float | None = None) -> None:
        check_pixels(width, height, limits.max_pixels, "a frame")
        oh, ow = upscaled_shape(height, width, upscale)
        check_pixels(ow, oh, limits.max_pixels, f"the output frames (upscale {upscale:g})")
        if frames is not None and frames > most:
            raise too_long(frames, fps)

    # an animation's limits are checked from its header, before its frames are decoded for their durations
    info = probe_animation(src, check=check) if animation else probe_video(src, check=check)
    check(info.width, info.height, info.frames, info.fps)

    def tick(done: int, total: int | None) -> None:
        if done > most:  # a container that did not say how many frames it holds
            raise too_long(f"more than {most}", info.fps)
        if cancelled is not None and cancelled():
            raise _Cancelled
        if on_frame is not None:
            on_frame(name, done, total)

    (job_dir / VIDEO_FOLDER).mkdir(parents=True, exist_ok=True)
    ext = Path(name).suffix.lower() if animation else video_output_extension(name)
    target = job_dir / VIDEO_FOLDER / f"{stem}{ext}"
    restore = restore_animation if animation else restore_video
    res = restore(src, target, restorer, upscale=upscale, detector=detector, on_frame=tick,
                  fidelity=opts.fidelity, only_center_face=bool(opts.only_center_face),
                  min_score=opts.min_score, refs=refs, color_match=True, mask=opts.mask,
                  background=background, blend=float(opts.blend), gate=bool(opts.gate), force_refs=False)
    rec = {"input": name, "method": opts.method, "upscale": upscale, **res.to_json(),
           "output": f"{VIDEO_FOLDER}/{target.name}", "web": True}
    record = io.atomic_write_json(target.with_suffix(".json"), rec)
    preview = target
    if animation or res.hdr or not _browser_playable(target.suffix, res.codec, probe_video(target).pix_fmt):
        make = animation_preview if animation else browser_preview
        preview = make(target, job_dir / PREVIEW_FOLDER / f"{stem}.mp4") or target
    return VideoOutput(name=name, stem=stem, video=target, record=record, preview=preview, frames=res.frames,
                       faces=int(sum(res.faces_per_frame)), tracks=int(res.tracks), size=(res.width, res.height),
                       faces_with_refs=res.faces_with_refs)


# (container, encoder) pairs a browser plays (Gradio's own table, by encoder name)
_PLAYABLE = {".mp4": ("libx264", "h264", "libopenh264", "libsvtav1", "libaom-av1", "av1"),
             ".webm": ("libvpx", "libvpx-vp9", "vp8", "vp9", "libsvtav1", "libaom-av1", "av1")}


def _browser_playable(ext: str, codec: str, pix_fmt: str) -> bool:
    """Whether browsers play the file as it is: a codec of their table in its container, 8-bit 4:2:0 (they refuse
    H.264's 10-bit and 4:4:4 profiles, which a camera's input keeps)."""
    return codec in _PLAYABLE.get(ext.lower(), ()) and pix_fmt in ("yuv420p", "yuvj420p", "nv12")


def browser_preview(src: Path, target: Path, *, crf: int = 23) -> Path | None:
    """A copy of the video ``src`` that a browser plays (H.264 in MP4, even size, yuv420p; the first audio stream
    copied when MP4 takes it), for the page only (the download is ``src``). An HDR video (PQ, HLG) is shown as its
    SDR view (:class:`facerestore.hdr.HdrView`, flagged BT.709): browsers play 8-bit H.264 as SDR, where HDR code
    values look grey and flat. None when this FFmpeg cannot make one (the page then offers the file to download)."""
    import av

    from facerestore.hdr import hdr_view_for
    from facerestore.video import main_video_stream

    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with av.open(str(src), "r") as inp:
            vin = main_video_stream(inp)
            rate = vin.average_rate or vin.guessed_rate or 25
            w, h = int(vin.codec_context.width), int(vin.codec_context.height)
            ew, eh = w + (w & 1), h + (h & 1)
            with av.open(str(tmp), "w", format="mp4") as out:
                vout = out.add_stream("libx264", rate=rate)
                vout.width, vout.height, vout.pix_fmt = ew, eh, "yuv420p"
                vout.options = {"crf": str(int(crf)), "preset": "veryfast"}
                ctx = vin.codec_context
                view = hdr_view_for(ctx.color_trc or 2, ctx.color_primaries or 2)
                if view is not None:
                    vout.codec_context.colorspace = vout.codec_context.color_primaries = 1  # BT.709
                    vout.codec_context.color_trc = 1
                aout = ain = None
                if inp.streams.audio:
                    ain = inp.streams.audio[0]
                    try:
                        aout = out.add_stream_from_template(ain)
                    except (av.error.FFmpegError, ValueError):
                        ain = None
                n = 0
                for packet in inp.demux([s for s in (vin, ain) if s is not None]):
                    if packet.stream.type == "audio":
                        if packet.dts is not None:
                            packet.stream = aout
                            out.mux(packet)
                        continue
                    for frame in packet.decode():
                        if view is not None:
                            sdr = view.to_sdr(frame.to_ndarray(format="rgb48le").astype(np.float32) / 65535)
                            frame = av.VideoFrame.from_ndarray(io.quantize(sdr, 8), format="rgb24")
                        f = frame.reformat(width=ew, height=eh, format="yuv420p",
                                           **({} if view is None else {"dst_colorspace": "ITU709"}))
                        f.pts, f.time_base = n, 1 / rate
                        n += 1
                        for pkt in vout.encode(f):
                            out.mux(pkt)
                for pkt in vout.encode(None):
                    out.mux(pkt)
        os.replace(tmp, target)
        return target
    except (av.error.FFmpegError, OSError, ValueError):
        tmp.unlink(missing_ok=True)
        return None


def animation_preview(src: Path, target: Path, *, crf: int = 23) -> Path | None:
    """An H.264 MP4 of the animated GIF, WebP or PNG ``src`` for the page's player (frames read with Pillow, each
    shown for its own duration), or None when PyAV is missing or cannot write it (the page then offers the file
    to download)."""
    from fractions import Fraction

    from PIL import Image

    try:
        import av
    except ImportError:
        return None
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with Image.open(src) as im, av.open(str(tmp), "w", format="mp4") as out:
            w, h = im.size
            vout = out.add_stream("libx264", rate=1000)
            vout.width, vout.height, vout.pix_fmt = w + (w & 1), h + (h & 1), "yuv420p"
            vout.time_base = Fraction(1, 1000)  # pts in milliseconds: every frame keeps its duration
            vout.options = {"crf": str(int(crf)), "preset": "veryfast"}
            t = 0
            for k in range(int(getattr(im, "n_frames", 1))):
                im.seek(k)
                rgb = np.asarray(im.convert("RGB"))
                if rgb.shape[:2] != (vout.height, vout.width):
                    rgb = np.pad(rgb, ((0, vout.height - h), (0, vout.width - w), (0, 0)), mode="edge")
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p")
                frame.pts, frame.time_base = t, Fraction(1, 1000)
                t += int(im.info.get("duration") or 100)
                for pkt in vout.encode(frame):
                    out.mux(pkt)
            for pkt in vout.encode(None):
                out.mux(pkt)
        os.replace(tmp, target)
        return target
    except (av.error.FFmpegError, OSError, ValueError, EOFError):
        tmp.unlink(missing_ok=True)
        return None


def _write_photo(job_dir: Path, name: str, stem: str, loaded: io.LoadedImage, res: Any, opts: JobOptions,
                 write_photo_json: Callable[..., Path], upscale_image: Callable[..., np.ndarray], *,
                 min_score: float | None = None) -> PhotoOutput:
    """The files of one restored photo, as ``facerestore restore`` writes them, plus the slider's preview."""
    ext = io.output_extension(name, res.alpha is not None, opts.ext, size=(res.image.shape[1], res.image.shape[0]))
    img_path = res.save(job_dir / "restored_imgs" / f"{stem}{ext}")
    shown = None
    if img_path.suffix.lower() in (".tif", ".tiff"):  # browsers do not show TIFF: the slider gets a PNG copy
        shown = io.write_image(job_dir / PREVIEW_FOLDER / "after" / f"{stem}.png", res.image, alpha=res.alpha,
                               bit_depth=res.bit_depth, gray=res.is_gray, metadata=res.metadata.for_crops())
    # the slider's "before" in the input's colour profile, as the "after" is: a browser shows both alike
    before = io.write_image(job_dir / PREVIEW_FOLDER / f"{stem}.png", upscale_image(loaded.rgb, float(opts.upscale)),
                            gray=loaded.is_gray, metadata=loaded.metadata.for_crops())
    faces, extra = [], []
    for k, f in enumerate(res.faces):
        fname = f"{stem}_{k:02d}.png"
        kw: dict[str, Any] = dict(bit_depth=res.bit_depth, gray=res.is_gray, metadata=res.metadata.for_crops())
        before_face = io.write_image(job_dir / "cropped_faces" / fname, f.input_crop, **kw)
        after_face = io.write_image(job_dir / "restored_faces" / fname, f.restored_crop, **kw)
        cmp = io.write_image(job_dir / "cmp" / fname, np.concatenate([f.input_crop, f.restored_crop], axis=1), **kw)
        files = {"cropped_face": f"cropped_faces/{fname}", "restored_face": f"restored_faces/{fname}",
                 "cmp": f"cmp/{fname}"}
        extra.append(files)
        faces.append(FaceOutput(index=k, before=before_face, after=after_face, cmp=cmp,
                                record={**f.to_json(), **files}))
    record = write_photo_json(job_dir / "restored_imgs" / f"{stem}.json", res, input=name,
                              output=f"restored_imgs/{img_path.name}", device=str(opts.device), half=half_applies(opts),
                              color_match=True, min_score=min_score, bg_upsampler=opts.bg_upsampler,
                              mask=opts.mask, only_center_face=bool(opts.only_center_face), faces=extra, web=True)
    h, w = loaded.rgb.shape[:2]
    return PhotoOutput(name=name, stem=stem, image=img_path, record=record, before=before, input_size=(w, h),
                       output_size=(int(res.image.shape[1]), int(res.image.shape[0])), faces=faces,
                       pages=loaded.pages, shown=shown, not_aligned=int(res.faces_not_aligned))


def zip_results(job_dir: Path, target: Path) -> Path:
    """Zip the result folders of ``job_dir`` (``restored_imgs/`` ... ``cmp/``, not the previews) into ``target``
    (written under a temporary name, then renamed)."""
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for sub in RESULT_FOLDERS:
                folder = job_dir / sub
                if not folder.is_dir():
                    continue
                for f in sorted(folder.iterdir()):
                    if f.is_file() and not f.is_symlink():
                        zf.write(f, f"{sub}/{f.name}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)  # a zip cut short (a full disk) is not left behind
    return target


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if np.isfinite(v) else "-"
    return str(v)


# the columns of the page's identity report (FaceResult.to_json() names: identity_similarity, identity_distance,
# identity_changed, identity_distance_mobileface; gate.reason; paste_weight; refs_used, refs_narrow, refs_distance)
REPORT_HEADERS = ["photo", "face", "box", "score", "similarity", "distance", "changed", "MobileFace distance",
                  "gate", "pasted", "references"]


def _refs_cell(record: dict[str, Any]) -> str:
    """How a face used the reference photos: '-' (none given or not checked), 'used (0.49)', 'used, narrowly
    (0.71)', 'forced (0.92)' or 'not this person (0.92)', with the check's dlib distance."""
    d = record.get("refs_distance")
    if record.get("refs_used") is None or d is None:
        return "-"
    if record.get("refs_forced"):
        return f"forced ({d:.2f})"
    if not record.get("refs_used"):
        return f"not this person ({d:.2f})"
    return f"used, narrowly ({d:.2f})" if record.get("refs_narrow") else f"used ({d:.2f})"


def report_rows(result: JobResult) -> list[list[str]]:
    """One row per face: the identity report of :class:`facerestore.pipeline.FaceResult` (dlib similarity and
    distance, the changed flag, MobileFace's distance), the quality gate's decision and how the face used the
    reference photos."""
    rows = []
    for p in result.photos:
        for f in p.faces:
            r = f.record
            gate = r.get("gate") or {}
            rows.append([p.name, str(f.index + 1), ", ".join(f"{v:.0f}" for v in r.get("box", [])),
                         _fmt(r.get("score"), 2), _fmt(r.get("identity_similarity")),
                         _fmt(r.get("identity_distance")), _fmt(r.get("identity_changed")),
                         _fmt(r.get("identity_distance_mobileface"), 3), str(gate.get("reason", "off")),
                         _fmt(r.get("paste_weight"), 2), _refs_cell(r)])
    return rows
