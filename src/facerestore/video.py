"""Video restoration: decode a clip frame by frame, restore every frame with the photo pipeline, encode it back.

Plain functions at the pipeline layer (the CLI's ``restore -i clip.mp4`` calls :func:`restore_video`):

- :func:`probe_video` / :func:`iter_frames`: read a clip with PyAV (the optional ``video`` extra; its wheels
  bundle FFmpeg). Frames are decoded lazily, one at a time: memory holds a few frames, never the whole clip.
  Frames are returned as displayed: a phone video's display rotation is applied (:func:`frame_rotation`).
- :class:`OneEuroFilter` / :class:`FaceTracker`: temporal stability of the alignment. Faces are matched to the
  previous frame's tracks by box IoU (greedy, best first); each track's 5 landmarks go through a One-Euro
  filter (Casiez et al., CHI 2012: a low-pass whose cutoff rises with speed, so a still face is held steady
  and a moving one follows without lag). The alignment (and so the crop and the paste-back) uses the smoothed
  points: frame-to-frame detector jitter no longer shakes the crop.
- :class:`TemporalBlender`: a :class:`~facerestore.methods.Restorer` wrapper that blends each restored crop
  with the previous frame's restored crop of the same track: ``out = (1 - w) * restored + w * previous_out``
  with ``w = max_weight * max(0, 1 - motion / motion_limit)``, where ``motion`` is the mean absolute
  difference of the two *input* crops (aligned, low-passed to 1/16 of their side so noise does not count).
  ``w`` is bounded by ``max_weight`` (default 0.5) and is 0 when the face moved or changed (no ghosting);
  it only removes the restorer's own frame-to-frame variation where the input hardly changed.
- :func:`restore_video`: the loop; the video stream is re-encoded (same codec and frame rate by default,
  ``crf`` / ``codec`` to change them), audio packets are copied unchanged (remuxed), the output is written
  to a temporary file next to the target and renamed at the end; the input is only read.
- :func:`restore_animation`: the same for animated GIF, WebP and PNG files (read and written with Pillow, no PyAV):
  every frame's display time, the looping and the transparency are kept; GIF frames share a palette until the
  colours change, so a still background does not shimmer.
"""

from __future__ import annotations

import math
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facerestore import io
from facerestore.errors import InputError, OutputError, quiet_warnings
from facerestore.faces.detect import FaceDetection, sort_detections
from facerestore.faces.identity import detection_embedding
from facerestore.hdr import hdr_view_for
from facerestore.methods import Restorer, resize_crop

__all__ = [
    "DEINTERLACE_MODES",
    "VIDEO_EXTENSIONS",
    "AnimationInfo",
    "Deinterlacer",
    "FaceTracker",
    "OneEuroFilter",
    "TemporalBlender",
    "VideoInfo",
    "VideoResult",
    "check_encoder_options",
    "frame_rotation",
    "is_video_file",
    "iter_frames",
    "list_inputs",
    "probe_animation",
    "probe_video",
    "restore_animation",
    "restore_video",
    "sniff_video_extension",
    "video_output_extension",
]

VIDEO_EXTENSIONS = io.VIDEO_EXTENSIONS
# output container per extension (FFmpeg muxer names): an input in one of these is written back in it
_MUXERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi", ".webm": "webm"}
_CONTAINER_ALIASES = {".m4v": ".mp4", ".f4v": ".mp4", ".qt": ".mov", ".divx": ".avi"}  # other names, same container
# AVColorSpace -> the matrix name of PyAV's reformatter (the rest, unspecified included: swscale's default, BT.601)
_MATRICES = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "SMPTE170M", 7: "SMPTE240M", 9: "BT2020", 10: "BT2020"}
# encoders taking a constant rate factor (quality) option, with FFmpeg's default and the value we use
_CRF_ENCODERS = {"libx264": 18, "libx265": 20, "libvpx-vp9": 30, "libvpx": 10, "libsvtav1": 30}
# encoders that take any time base, so frames keep their source timestamps exactly (MPEG-2/4 and others want 1/fps)
_ANY_TIME_BASE = ("libx264", "libx265", "libvpx", "libvpx-vp9", "libsvtav1", "libaom-av1")


def _av() -> Any:
    try:
        import av
    except ImportError:  # pragma: no cover - depends on the environment
        raise InputError("video input needs PyAV: pip install 'facerestore[video]'") from None
    return av


def is_video_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


# ISO-BMFF brands of still images (not videos, though MP4's box structure): HEIC, AVIF, AVC-coded HEIF, Canon's
# CR3 camera raw
_IMAGE_BRANDS = (*io.HEIF_BRANDS, b"avif", b"avis", b"avci", b"crx ")


def sniff_video_extension(path: str | os.PathLike) -> str | None:
    """The extension of the video container that a file's first bytes show (MP4/QuickTime/3GP, Matroska/WebM, AVI,
    MPEG program and transport streams, Windows Media, Flash, Ogg, RealMedia), for a file named without a video
    extension (a download or a message attachment); None when they show none, or the file cannot be read.
    HEIC/AVIF images, which share MP4's box structure, are not videos."""
    try:
        with open(path, "rb") as f:
            head = f.read(400)
    except OSError:
        return None
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _IMAGE_BRANDS:
            return None
        return ".mov" if brand == b"qt  " else ".3gp" if brand[:3] in (b"3gp", b"3g2") else ".mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return ".webm" if b"webm" in head[:64] else ".mkv"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return ".avi"
    if head[:4] == b"\x00\x00\x01\xba":
        return ".mpg"
    if len(head) > 376 and head[0] == head[188] == head[376] == 0x47:
        return ".ts"
    if len(head) > 388 and head[4] == head[196] == head[388] == 0x47:  # 192-byte packets: AVCHD, Blu-ray
        return ".m2ts"
    if head[:8] == b"\x30\x26\xb2\x75\x8e\x66\xcf\x11":
        return ".wmv"
    if head[:3] == b"FLV":
        return ".flv"
    if head[:4] == b"OggS":
        return ".ogv"
    if head[:4] == b".RMF":
        return ".rm"
    return None


def video_output_extension(path: str | os.PathLike) -> str:
    """The extension (so the container) of a restored video: the input's for MP4, MOV, Matroska, AVI and WebM
    (under their usual name: .m4v and .f4v are MP4, .qt is MOV, .divx is AVI); .mkv for the older containers
    (MPEG-PS/TS, DV, 3GP, WMV/ASF, FLV, RealMedia, Ogg, MXF), whose own muxers take only their own old codecs, while
    Matroska takes H.264 and any of their audio by copy."""
    ext = Path(path).suffix.lower()
    ext = _CONTAINER_ALIASES.get(ext, ext)
    return ext if ext in _MUXERS else ".mkv"


def list_inputs(path: str | os.PathLike, *, recursive: bool = False,
                on_skip: Callable[[Path, str], None] | None = None) -> list[Path]:
    """:func:`facerestore.io.list_images` plus the video files of a folder (sorted by name; with ``recursive``,
    of its sub-folders too); a file named on the command line is returned as is (whatever its extension)."""
    videos: list[Path] = []

    def skip(f: Path, why: str) -> None:
        if is_video_file(f) and why.startswith("unsupported format"):
            videos.append(f)
        elif on_skip is not None:
            on_skip(f, why)

    try:
        files = io.list_images(path, recursive=recursive, on_skip=skip)
    except InputError:
        if not videos:
            raise
        files = []
    return sorted(files + videos)


# --------------------------------------------------------------------------------------------------
# reading


@dataclass
class VideoInfo:
    """What :func:`probe_video` found: size as displayed, in square pixels (phone videos are often stored sideways
    with a rotation to apply: ``rotation``; DV and DVD video store 720 pixels per line whatever the picture's
    shape, with a sample aspect ratio to apply: ``sample_aspect``), frame rate, codec, frame count (None: unknown),
    audio."""

    width: int
    height: int
    fps: Fraction
    codec: str
    frames: int | None
    pix_fmt: str | None
    has_audio: bool
    bit_rate: int | None = None
    rotation: int = 0  # degrees counterclockwise (0, 90, 180, 270) that turn the stored frames upright
    sample_aspect: Fraction = Fraction(1)  # width of a stored pixel over its height (1: square pixels)
    # FFmpeg's colour description of the stream (AVColorSpace / AVColorPrimaries / AVColorTransferCharacteristic;
    # 2: unspecified): the YUV matrix frames are decoded with, and what the output is encoded with and says
    colorspace: int = 2
    color_primaries: int = 2
    color_trc: int = 2

    @property
    def square_size(self) -> tuple[int, int] | None:
        """(width, height) to which a stored (unrotated) frame is resampled for square pixels; None when they
        already are."""
        if self.sample_aspect == 1:
            return None
        w, h = (self.height, self.width) if self.rotation in (90, 270) else (self.width, self.height)
        return w, h


def frame_rotation(frame: Any) -> int:
    """The quarter turn (0, 90, 180 or 270 degrees counterclockwise) that displays a decoded frame upright, from its
    display matrix (what players apply: a phone held upright stores its frames sideways with a rotation of 90 or
    270). Mirroring and angles other than quarter turns are not applied (they are rare; rounded to a quarter
    turn)."""
    angle = float(getattr(frame, "rotation", 0) or 0)  # PyAV: counterclockwise degrees in [-180, 180]
    return round(angle / 90.0) % 4 * 90


def main_video_stream(container: Any) -> Any:
    """The clip's video: its first video stream that is not a cover picture (``attached_pic``: the thumbnail that
    downloaders and music videos embed, which FFmpeg lists as a one-frame video stream, sometimes first)."""
    av = _av()
    streams = list(container.streams.video)
    return next((s for s in streams if not s.disposition & av.stream.Disposition.attached_pic), streams[0])


def _first_rotation(path: Path) -> int:
    """:func:`frame_rotation` of the first frame of ``path`` (0 when none decodes: the reading itself says why)."""
    av = _av()
    try:
        with av.open(str(path), "r") as c:
            for frame in c.decode(main_video_stream(c)):
                return frame_rotation(frame)
    except (av.error.FFmpegError, OSError, ValueError, IndexError):
        pass
    return 0


def _open(path: Path) -> Any:
    av = _av()
    try:
        st = path.stat()
    except OSError as exc:
        raise InputError(f"cannot read video {io.display_path(path)}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"not a regular file: {io.display_path(path)}")
    try:
        container = av.open(str(path), "r")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise InputError(f"cannot read video {io.display_path(path)}: {_reason(exc)}") from None
    covers_only = bool(container.streams.video) and all(s.disposition & av.stream.Disposition.attached_pic
                                                        for s in container.streams.video)
    if not container.streams.video or covers_only:
        container.close()
        raise InputError(f"no video stream in {io.display_path(path)}" + (" (only a cover picture)" if covers_only
                                                                          else ""))
    return container


def _reason(exc: BaseException) -> str:
    msg = getattr(exc, "strerror", None) or str(exc)
    return msg.splitlines()[0] if msg else type(exc).__name__


def _sample_aspect(stream: Any) -> Fraction:
    """The stream's sample aspect ratio (pixel width over height), 1 when unset or implausible."""
    sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    sar = Fraction(sar) if sar else Fraction(1)
    return sar if Fraction(1, 4) <= sar <= 4 else Fraction(1)


def _info(container: Any, rotation: int = 0) -> VideoInfo:
    vs = main_video_stream(container)
    ctx = vs.codec_context
    rate = vs.average_rate or vs.guessed_rate or Fraction(25)
    if not ctx.width or not ctx.height:
        raise InputError("the video stream has no frame size")
    sar = _sample_aspect(vs)
    sw, sh = max(1, round(int(ctx.width) * sar)), int(ctx.height)  # square pixels: the width is resampled
    w, h = (sh, sw) if rotation in (90, 270) else (sw, sh)
    bit_rate = ctx.bit_rate or vs.bit_rate
    if not bit_rate and container.bit_rate:  # AVI and others state only the file's: less the sound's
        sound = sum(int(a.bit_rate or a.codec_context.bit_rate or 0) for a in container.streams.audio)
        bit_rate = max(0, int(container.bit_rate) - sound) or None
    # the codec, not its decoder's name (AV1 is decoded by "libdav1d"; "av1" finds the AV1 encoder)
    codec = str(getattr(ctx.codec, "canonical_name", None) or ctx.name)
    return VideoInfo(width=w, height=h, fps=Fraction(rate), codec=codec,
                     frames=int(vs.frames) if vs.frames else None, pix_fmt=ctx.pix_fmt,
                     has_audio=bool(container.streams.audio), bit_rate=int(bit_rate) if bit_rate else None,
                     rotation=rotation, sample_aspect=sar, colorspace=int(ctx.colorspace or 2),
                     color_primaries=int(ctx.color_primaries or 2), color_trc=int(ctx.color_trc or 2))


def probe_video(path: str | os.PathLike, check: Callable[[int, int, int | None, float], None] | None = None
                ) -> VideoInfo:
    """Size as displayed, rotation, frame rate, codec and audio of a clip (InputError, one line, when it cannot be
    read). Decodes the first frame (the rotation is frame side data); ``check(width, height, frames, fps)``, when
    given, runs on the header's numbers first, so a server's limits refuse a huge frame before it is decoded."""
    p = Path(path)
    container = _open(p)
    try:
        if check is not None:
            head = _info(container)
            check(head.width, head.height, head.frames, float(head.fps))
        return _info(container, _first_rotation(p))
    finally:
        container.close()


DEINTERLACE_MODES = ("auto", "on", "off")


class Deinterlacer:
    """Interlaced frames (old tapes digitised as DV or MPEG-2, broadcast captures: two fields taken 1/50 or 1/60 s
    apart, woven into one frame, so anything that moves is combed) made progressive by FFmpeg's ``bwdif`` filter
    (Bob Weaver deinterlacing: each missing line interpolated from its own field and, where nothing moves, the
    other), one output frame per input frame (``mode=send_frame``), field order from the stream.

    ``mode``: "auto" deinterlaces the frames the decoder marks interlaced (from the first one on; progressive frames
    pass through ``bwdif`` unchanged), "on" every frame (content that is combed but stored as progressive), "off"
    none. ``frames = dein(frame)`` returns the frames ready so far (``bwdif`` looks one frame ahead), in order;
    ``dein.flush()`` the rest at the end. ``count``: how many frames went through the filter."""

    def __init__(self, time_base: Any, mode: str = "auto") -> None:
        if mode not in DEINTERLACE_MODES:
            raise InputError(f"deinterlace must be one of {', '.join(DEINTERLACE_MODES)}, got {mode!r}")
        self.mode, self.time_base = mode, time_base
        self.graph: Any = None
        self.count = 0

    def _build(self, frame: Any) -> None:
        _av()  # one line when PyAV is missing
        import av.filter  # the sub-module is not imported by ``import av``

        g = av.filter.Graph()
        src = g.add_buffer(width=frame.width, height=frame.height, format=frame.format.name,
                           time_base=self.time_base)
        deint = "all" if self.mode == "on" else "interlaced"
        bw = g.add("bwdif", f"mode=send_frame:parity=auto:deint={deint}")
        sink = g.add("buffersink")
        src.link_to(bw)
        bw.link_to(sink)
        g.configure()
        self.graph = g

    def _drain(self) -> list[Any]:
        av = _av()
        out = []
        while True:
            try:
                out.append(self.graph.vpull())
            except (av.error.BlockingIOError, av.error.EOFError):
                return out

    def __call__(self, frame: Any) -> list[Any]:
        if self.graph is None:
            if self.mode == "off" or (self.mode == "auto" and not frame.interlaced_frame):
                return [frame]
            self._build(frame)
        self.count += 1
        self.graph.vpush(frame)
        return self._drain()

    def flush(self) -> list[Any]:
        if self.graph is None:
            return []
        self.graph.vpush(None)
        return self._drain()


def _deep(pix_fmt: str) -> bool:
    """More than 8 bits per component (10-bit camera and HDR video): converted through 16-bit RGB, not 8-bit."""
    return _av().VideoFormat(pix_fmt).components[0].bits > 8


def _rgb(frame: Any, rotation: int | None = None, square: tuple[int, int] | None = None) -> np.ndarray:
    """A decoded frame as displayed: resampled to ``square`` (width, height) when its pixels are not square
    (:attr:`VideoInfo.square_size`; Lanczos), then turned by its rotation (``rotation`` degrees counterclockwise;
    None: the frame's own, :func:`frame_rotation`): (H, W, 3) float32 RGB in [0, 1], at the frame's precision
    (through 16-bit RGB for frames of more than 8 bits)."""
    fmt, scale = ("rgb48le", 65535.0) if _deep(frame.format.name) else ("rgb24", 255.0)
    if square is not None and (frame.width, frame.height) != square:
        arr = frame.reformat(width=square[0], height=square[1], format=fmt, interpolation="LANCZOS").to_ndarray()
    else:
        arr = frame.to_ndarray(format=fmt)
    k = (frame_rotation(frame) if rotation is None else rotation) // 90
    if k:
        arr = np.rot90(arr, k)  # numpy's positive quarter turns are counterclockwise, as the display matrix's
    return arr.astype(np.float32) / np.float32(scale)


def iter_frames(path: str | os.PathLike, deinterlace: str = "auto") -> Iterator[np.ndarray]:
    """The frames of a clip's first video stream, decoded one at a time: (H, W, 3) float32 RGB in [0, 1], upright
    (the display rotation applied, as a player shows them) and deinterlaced as ``deinterlace`` says
    (:class:`Deinterlacer`).

    A generator: nothing is decoded before the first ``next``, and only the frame being returned is held. HDR
    frames come as their code values: ``hdr_view_for(info.color_trc, info.color_primaries).to_sdr(frame)`` shows
    them as :func:`restore_video` does (:func:`probe_video`, :mod:`facerestore.hdr`).
    """
    p = Path(path)
    container = _open(p)
    av = _av()
    try:
        stream = main_video_stream(container)
        stream.thread_type = "AUTO"
        dein = Deinterlacer(stream.time_base, deinterlace)
        rotation: int | None = None
        sar = _sample_aspect(stream)
        square = None
        try:
            for frame in container.decode(stream):
                if rotation is None:  # from the first frame (filters may drop side data)
                    rotation = frame_rotation(frame)
                    square = None if sar == 1 else (max(1, round(frame.width * sar)), frame.height)
                for f in dein(frame):
                    yield _rgb(f, rotation, square)
            for f in dein.flush():
                yield _rgb(f, rotation, square)
        except av.error.FFmpegError as exc:
            raise InputError(f"cannot decode video {io.display_path(p)}: {_reason(exc)}") from None
    finally:
        container.close()


# --------------------------------------------------------------------------------------------------
# temporal stability


class OneEuroFilter:
    """One-Euro filter (Casiez, Roussel, Vogel, CHI 2012) of a vector signal sampled at ``freq`` Hz.

    ``cutoff = min_cutoff + beta * speed`` (Hz) with ``speed`` the low-passed mean absolute derivative divided
    by ``scale`` (here the face size, so the parameters do not depend on the resolution): a slow signal is
    smoothed hard (``min_cutoff``), a fast one follows with little lag. One cutoff for the whole vector, so the
    5 points of a face move together.
    """

    def __init__(self, freq: float, *, min_cutoff: float = 1.0, beta: float = 2.0, d_cutoff: float = 1.0) -> None:
        if not (freq > 0 and min_cutoff > 0 and beta >= 0 and d_cutoff > 0):
            raise InputError("OneEuroFilter needs freq > 0, min_cutoff > 0, beta >= 0, d_cutoff > 0")
        self.freq, self.min_cutoff, self.beta, self.d_cutoff = float(freq), float(min_cutoff), float(beta), d_cutoff
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None

    def _alpha(self, cutoff: float) -> float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau * self.freq)

    def __call__(self, x: np.ndarray, scale: float = 1.0) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self.x is None or self.x.shape != x.shape:
            self.x, self.dx = x.copy(), np.zeros_like(x)
            return x.copy()
        a_d = self._alpha(self.d_cutoff)
        self.dx = a_d * (x - self.x) * self.freq + (1 - a_d) * self.dx
        speed = float(np.mean(np.abs(self.dx))) / max(float(scale), 1e-6)
        a = self._alpha(self.min_cutoff + self.beta * speed)
        self.x = a * x + (1 - a) * self.x
        return self.x.copy()


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class _Track:
    id: int
    box: np.ndarray
    filter: OneEuroFilter
    missed: int = 0


@dataclass
class FaceTracker:
    """Matches each frame's detections to the previous frames' faces and smooths their landmarks.

    ``update(dets)`` returns ``[(track_id, detection)]`` in the order of ``dets``; with ``smooth`` the
    detection's ``landmarks5`` are the track's One-Euro-filtered points and its box and ``landmarks68`` are
    moved by the same mean offset. A detection matches the unmatched track whose last box overlaps it most
    (IoU >= ``iou_threshold``), or whose landmarks lie within ``max_landmark_shift`` face sizes; a track not
    seen for more than ``max_missed`` frames ends. With ``embed`` (``embed(frame, detection) -> vector or
    None``, e.g. dlib's 128-d identity) and the frame given to ``update``, a face that matches no live track is
    compared with the tracks that ended in the last ``relink_seconds``: within ``max_identity_distance`` of the
    nearest, it takes that track's id back (the same person after an occlusion or a cut keeps its gate decision);
    embeddings are computed only for new faces.

    A cut to another shot (the frame's thumbnail and colours both change: ``cut_threshold``,
    ``cut_colour_threshold``; not a pan, a zoom, a flash or noise) ends every track first: faces are linked by
    overlap, and after a cut to another person framed in the same place the track would hold someone else (whose
    face would then be blended with, gated as and guided by the references of the person before). The same person
    comes back by identity. ``cuts`` counts them.
    """

    fps: float
    smooth: bool = True
    iou_threshold: float = 0.3
    max_landmark_shift: float = 0.25
    max_missed: int = 2
    # chosen on the first 40 frames of the carphone clip (benchmarks/video_flicker.py): 1 Hz / beta 2 lagged
    # enough to cost 0.15 dB of face PSNR; 2 Hz / beta 8 keeps PSNR within 0.02 dB of per-frame restoration
    min_cutoff: float = 2.0
    beta: float = 8.0
    embed: Callable[[np.ndarray, FaceDetection], np.ndarray | None] | None = None
    relink_seconds: float = 2.0
    max_identity_distance: float = 0.5  # dlib's 128-d distance; stricter than its 0.6 same-person threshold
    tracks: list[_Track] = field(default_factory=list)
    _next_id: int = 0
    _frame: int = 0
    _embedding: dict[int, np.ndarray] = field(default_factory=dict)  # track -> identity embedding
    _ended: dict[int, int] = field(default_factory=dict)  # ended track -> frame it ended
    _last_lm: dict[int, np.ndarray] = field(default_factory=dict)
    # a cut: the 16 x 16 thumbnail, divided by its mean (a flash or a fade in brightness is no cut), changes by more
    # than ``cut_threshold`` (mean absolute difference) and the rg-chromaticity histogram by more than
    # ``cut_colour_threshold`` (half L1: a pan moves content, it does not change its colours). Measured on pairs of
    # different FFHQ faces (the hardest cut: same framing) 0.32-0.95 / 0.07-0.83; pans of 2% / 4% of the width per
    # frame up to 0.14 / 0.28 and 0.03 / 0.05, a 10% zoom up to 0.24, a x1.3 flash up to 0.11, noise 0.02
    # (benchmarks/video_cuts.py: 30 face pairs, 19 photo pairs, 40 pans / zooms / flashes). A false cut only
    # restarts the tracks, whose ids the identity relink gives back.
    cut_threshold: float = 0.3
    cut_colour_threshold: float = 0.05
    cuts: int = 0
    _thumb: tuple[np.ndarray, np.ndarray] | None = None

    @staticmethod
    def _signature(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean-normalised 16 x 16 thumbnail, 8 x 8 rg-chromaticity histogram) of a frame, from a strided
        subsample (a few thousand pixels, whatever the frame's size)."""
        import cv2

        img = np.asarray(frame)
        step = max(1, min(img.shape[:2]) // 64)
        small = np.asarray(img[::step, ::step, :3], np.float32)
        thumb = cv2.resize(small, (16, 16), interpolation=cv2.INTER_AREA)
        thumb /= max(float(thumb.mean()), 1e-6)
        px = small.reshape(-1, 3) + 1e-3 * max(float(small.max()), 1e-6)
        chroma = px[:, :2] / px.sum(1, keepdims=True)
        hist, _, _ = np.histogram2d(chroma[:, 0], chroma[:, 1], bins=8, range=[[0, 1], [0, 1]])
        return thumb, hist / max(hist.sum(), 1.0)

    def _is_cut(self, frame: np.ndarray | None) -> bool:
        if frame is None:
            return False
        sig = self._signature(frame)
        prev, self._thumb = self._thumb, sig
        if prev is None:
            return False
        moved = float(np.abs(sig[0] - prev[0]).mean())
        recoloured = 0.5 * float(np.abs(sig[1] - prev[1]).sum())
        return moved > self.cut_threshold and recoloured > self.cut_colour_threshold

    def end_all(self) -> None:
        """End every live track now (a cut): the next faces get new ids, or an ended track's by identity."""
        for t in self.tracks:
            self._last_lm.pop(t.id, None)
            self._ended[t.id] = self._frame
        self.tracks = []

    def _match(self, dets: Sequence[FaceDetection]) -> list[_Track | None]:
        pairs = []
        for i, d in enumerate(dets):
            size = math.sqrt(max(d.width * d.height, 1.0))
            for j, t in enumerate(self.tracks):
                iou = box_iou(np.asarray(d.box, float), t.box)
                lm = self._last_lm.get(t.id)
                shift = (float(np.mean(np.linalg.norm(np.asarray(d.landmarks5) - lm, axis=1))) / size
                         if lm is not None else math.inf)
                if iou >= self.iou_threshold or shift <= self.max_landmark_shift:
                    pairs.append((iou - shift, i, j))
        out: list[_Track | None] = [None] * len(dets)
        used: set[int] = set()
        for _, i, j in sorted(pairs, reverse=True):
            if out[i] is None and j not in used:
                out[i] = self.tracks[j]
                used.add(j)
        return out

    def _new_id(self, frame: np.ndarray | None, d: FaceDetection) -> int:
        """A new face's track id: an ended track of the same person (identity) or a fresh one."""
        emb = None if self.embed is None or frame is None else self.embed(frame, d)
        window = self.relink_seconds * self.fps
        self._ended = {k: f for k, f in self._ended.items() if self._frame - f <= window}
        tid = None
        if emb is not None:
            dists = {k: float(np.linalg.norm(emb - self._embedding[k])) for k in self._ended if k in self._embedding}
            if dists:
                best = min(dists, key=dists.get)
                if dists[best] <= self.max_identity_distance:
                    tid = best
                    del self._ended[best]
        if tid is None:
            tid = self._next_id
            self._next_id += 1
        if emb is not None:
            self._embedding[tid] = emb
        return tid

    def update(self, dets: Sequence[FaceDetection], frame: np.ndarray | None = None) -> list[tuple[int, FaceDetection]]:
        self._frame += 1
        if self._is_cut(frame):
            self.cuts += 1
            self.end_all()
        matched = self._match(dets)
        seen: set[int] = set()
        result = []
        for d, t in zip(dets, matched):
            if t is None:
                t = _Track(self._new_id(frame, d), np.asarray(d.box, float),
                           OneEuroFilter(self.fps, min_cutoff=self.min_cutoff, beta=self.beta))
                self.tracks.append(t)
            raw = np.asarray(d.landmarks5, np.float64)
            t.box, t.missed = np.asarray(d.box, float), 0
            self._last_lm[t.id] = raw
            seen.add(t.id)
            if self.smooth:
                sm = t.filter(raw, scale=math.sqrt(max(d.width * d.height, 1.0)))
                off = (sm - raw).mean(axis=0)
                d = replace(d, landmarks5=sm, box=np.asarray(d.box, np.float64) + np.tile(off, 2),
                            landmarks68=None if d.landmarks68 is None else np.asarray(d.landmarks68) + off)
            result.append((t.id, d))
        for t in self.tracks:
            if t.id not in seen:
                t.missed += 1
        ended = {t.id for t in self.tracks if t.missed > self.max_missed}
        self.tracks = [t for t in self.tracks if t.id not in ended]
        for k in ended:
            self._last_lm.pop(k, None)
            self._ended[k] = self._frame
        return result


class _Wrapper(Restorer):
    """A restorer around another (``inner``): its spec, precision and everything records say of it (default
    fidelity, weights, licence, batch key) are the wrapped method's."""

    def __init__(self, inner: Restorer) -> None:
        super().__init__()
        self.inner = inner
        self.spec = inner.spec

    @property
    def dtype(self) -> torch.dtype:
        return self.inner.dtype

    # what records say of the restorer is the wrapped method's: its default fidelity, weights and licence
    def fidelity_used(self, fidelity: float | None) -> float | None:
        return self.inner.fidelity_used(fidelity)

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def unused_refs_reason(self) -> str | None:
        return self.inner.unused_refs_reason()

    def batch_key(self, crop: torch.Tensor) -> Any:
        return self.inner.batch_key(crop)

    @property
    def checks_refs(self) -> bool:  # type: ignore[override]  # the wrapped method's (force_refs reaches it)
        return bool(getattr(self.inner, "checks_refs", False))

    def refs_distances(self, lq: torch.Tensor, refs: torch.Tensor) -> list[float] | None:
        return self.inner.refs_distances(lq, refs)


class TemporalBlender(_Wrapper):
    """Wraps a restorer: blends each restored crop with the previous frame's output crop of the same track.

    Call :meth:`begin_frame` with the track ids of the frame's faces, in the order the pipeline restores them
    (detection order), before each frame. The weight of the previous output is
    ``max_weight * max(0, 1 - motion / motion_limit)`` (``motion``: mean absolute difference of the current and
    previous input crops low-passed to 1/16 of their side, in [0, 1] units), so it never exceeds
    ``max_weight`` and is 0 when the face moved or changed; it is also 0 for a new track. A face that cannot be
    aligned gets no crop: the pipeline says which were kept (:meth:`keep_faces`), so each crop still meets its
    own track.
    """

    needs_crop_order = True  # crops are matched to tracks by position: the pipeline restores them in order

    def __init__(self, inner: Restorer, *, max_weight: float = 0.5, motion_limit: float = 0.03) -> None:
        if not 0 <= max_weight < 1:
            raise InputError(f"max_weight must be in [0, 1), got {max_weight}")
        if not motion_limit > 0:
            raise InputError(f"motion_limit must be > 0, got {motion_limit}")
        super().__init__(inner)
        self.max_weight, self.motion_limit = float(max_weight), float(motion_limit)
        self._ids: list[int] = []
        self._pos = 0
        self._state: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._frame = 0
        self._seen: dict[int, int] = {}  # track -> the last frame it had a face
        self.weights: list[float] = []  # the weights used, for reports

    KEEP_FRAMES = 3  # a track's last output is kept this many frames without its face (a missed detection)

    def begin_frame(self, ids: Sequence[int]) -> None:
        self._ids, self._pos = list(ids), 0
        self._frame += 1
        for k in self._ids:
            self._seen[k] = self._frame
        self._seen = {k: f for k, f in self._seen.items() if self._frame - f < self.KEEP_FRAMES}
        self._state = {k: v for k, v in self._state.items() if k in self._seen}

    def keep_faces(self, kept: Sequence[int]) -> None:
        """The frame's faces that alignment kept (indexes into :meth:`begin_frame`'s ids, in order): a face that
        cannot be aligned gets no crop, so the crops that follow are matched to these tracks, not by position."""
        self._ids = [self._ids[i] for i in kept if 0 <= i < len(self._ids)]

    @staticmethod
    def _low(x: torch.Tensor) -> torch.Tensor:
        k = max(1, x.shape[-1] // 16)
        return torch.nn.functional.avg_pool2d(x.float(), k)

    def restore(self, lq: torch.Tensor, *, refs: torch.Tensor | None = None, fidelity: float | None = None,
                size: tuple[int, int] | None = None, **options: Any) -> Any:
        y = self.inner.restore(lq, refs=refs, fidelity=fidelity, size=size, **options)
        if isinstance(y, tuple):
            return y
        y = y.clone()
        low = self._low(lq)
        for b in range(y.shape[0]):
            tid = self._ids[self._pos] if self._pos < len(self._ids) else None
            self._pos += 1
            if tid is None:
                continue
            w = 0.0
            prev = self._state.get(tid)
            if prev is not None:
                # a face whose crop side changed by a few pixels (its footprint varies from frame to frame) is
                # compared and blended at the current side
                prev = tuple(resize_crop(t[None], tuple(ref.shape[-2:]))[0]
                             for t, ref in ((prev[0], low[b]), (prev[1], y[b])))
                motion = float((low[b] - prev[0]).abs().mean())
                w = self.max_weight * max(0.0, 1.0 - motion / self.motion_limit)
                if w > 0:
                    y[b] = ((1 - w) * y[b].float() + w * prev[1].float()).to(y.dtype)
            self.weights.append(w)
            self._state[tid] = (low[b].clone(), y[b].clone())
        return y


# --------------------------------------------------------------------------------------------------
# writing


# codecs that take only a few frame sizes (DV: 720 x 480 / 576; H.261/H.263: CIF and its multiples), which restored
# frames (square pixels, upscaled) do not keep: written as the container's usual codec instead
_FIXED_SIZE_CODECS = ("dvvideo", "h261", "h263")


def _encoder(codec: str | None, info: VideoInfo, ext: str, keep_codec: bool = True) -> Any:
    """The encoder: ``codec`` when given, else the input's (``keep_codec``: a video written back in its own
    container, unless its codec takes only fixed frame sizes), else the container's usual one (H.264; VP9 for
    WebM)."""
    av = _av()
    usual = "libvpx-vp9" if ext == ".webm" else "libx264"  # WebM takes no H.264
    name = codec or (info.codec if keep_codec and info.codec not in _FIXED_SIZE_CODECS else usual)
    try:
        return av.codec.Codec(name, "w")
    except (av.error.FFmpegError, ValueError) as exc:
        if codec is not None:
            raise InputError(f"--codec {codec}: no such encoder in this FFmpeg ({_reason(exc)})") from None
    # the input's codec has no encoder here (a decoder-only format): the container's usual one
    return av.codec.Codec(usual, "w")


def check_encoder_options(codec: str | None, crf: int | None) -> None:
    """InputError (one line) for an encoder this FFmpeg lacks, or a crf outside [0, 63]: checked before any work."""
    if crf is not None and not 0 <= int(crf) <= 63:
        raise InputError(f"--crf must be in [0, 63], got {crf}")
    if codec is not None:
        av = _av()
        try:
            enc = av.codec.Codec(codec, "w")
        except (av.error.FFmpegError, ValueError) as exc:
            raise InputError(f"--codec {codec}: no such encoder in this FFmpeg ({_reason(exc)})") from None
        if enc.type != "video":
            raise InputError(f"--codec {codec} is not a video encoder")
        if crf is not None and enc.name not in _CRF_ENCODERS:
            raise InputError(f"--crf applies to {', '.join(_CRF_ENCODERS)}; --codec {codec} is {enc.name}")


# audio encoders for a stream the output container cannot take by copy (e.g. Windows Media audio into Matroska),
# in order of preference; containers not named: AAC
_AUDIO_FALLBACK = {".webm": ("libopus", "libvorbis"), ".avi": ("libmp3lame", "ac3")}


class _PacketSplice:
    """A copied stream's packet timestamps made to continue across a splice, as :class:`_FrameClock` does for the
    frames: where a stream's clock goes back by more than a second (segments joined byte by byte, an MPEG-TS
    recording restarted), the packets after it are shifted to follow the last one, keeping their spacing (muxers
    refuse timestamps that go back). Times in the stream's own time base."""

    def __init__(self, time_base: Any) -> None:
        self.splice = max(1, round(1 / Fraction(time_base))) if time_base else None
        self.offset = 0
        self.last: int | None = None
        self.last_duration = 0

    def shift(self, packet: Any) -> None:
        """Shift ``packet``'s pts and dts in place."""
        t = packet.dts if packet.dts is not None else packet.pts
        if t is None or self.splice is None:
            return
        if self.last is not None and self.last - (t + self.offset) > self.splice:
            self.offset = self.last + max(int(self.last_duration or 0), 1) - t
        if self.offset:
            if packet.dts is not None:
                packet.dts += self.offset
            if packet.pts is not None:
                packet.pts += self.offset
        self.last, self.last_duration = t + self.offset, packet.duration


class _AudioOut:
    """One input audio stream in the output: its packets copied unchanged when the container takes the codec
    (the usual case), else decoded and re-encoded (AAC; Opus or Vorbis in WebM; MP3 or AC-3 in AVI); timestamps
    continue across splices (:class:`_PacketSplice`)."""

    def __init__(self, out: Any, stream: Any, ext: str) -> None:
        av = _av()
        self.splice = _PacketSplice(stream.time_base)
        self.copy = True
        try:
            self.dst = out.add_stream_from_template(stream)
            return
        except (av.error.FFmpegError, ValueError):
            self.copy = False
        name = next((c for c in _AUDIO_FALLBACK.get(ext, ("aac",)) if c in av.codecs_available), "aac")
        ctx = stream.codec_context
        # by channel count (a layout may be named "2 channels", without an order, which encoders refuse); more
        # than two are mixed down to stereo, which every fallback encoder takes
        layout = "mono" if ctx.layout.nb_channels == 1 else "stereo"
        self.dst = out.add_stream(name, rate=ctx.sample_rate or 48000, layout=layout)
        self.dst.bit_rate = 192000

    def mux(self, out: Any, packet: Any) -> int:
        """Write one input packet (copied or re-encoded); returns the packets written."""
        self.splice.shift(packet)
        if self.copy:
            packet.stream = self.dst
            out.mux(packet)
            return 1
        n = 0
        for frame in packet.decode():
            for p in self.dst.encode(frame):
                out.mux(p)
                n += 1
        return n

    def flush(self, out: Any) -> int:
        if self.copy:
            return 0
        n = 0
        for p in self.dst.encode(None):
            out.mux(p)
            n += 1
        return n


# container tags that describe the old file rather than the recording: the muxer writes its own
_FILE_TAGS = {"major_brand", "minor_version", "compatible_brands", "encoder", "duration", "rotate"}
_STREAM_TAGS = ("language", "title")  # a stream's spoken language and name ("Commentary")
_APPLE_LOCATION = "com.apple.quicktime.location.ISO6709"


def _copy_tags(inp: Any, out: Any, streams: Sequence[tuple[Any, Any]], ext: str) -> None:
    """The recording's description into the output: the container's tags (creation date, which photo libraries
    sort by; title; place; device), its chapters, and each stream's language and title, ``streams`` as (input,
    output) pairs. An iPhone's place (a QuickTime metadata key the MP4 muxer does not write) also goes in as
    ``location``, the place tag phones' MP4s use."""
    tags = {k: v for k, v in inp.metadata.items() if k.lower() not in _FILE_TAGS}
    if ext in (".mp4", ".mov") and "location" not in tags and _APPLE_LOCATION in tags:
        tags["location"] = tags[_APPLE_LOCATION]
    for k, v in tags.items():
        out.metadata[k] = v
    for src, dst in streams:
        for key in _STREAM_TAGS:
            if src.metadata.get(key):
                dst.metadata[key] = src.metadata[key]
    chapters = inp.chapters() if hasattr(inp, "chapters") else []  # PyAV 14 and later
    if chapters:
        out.set_chapters(chapters)


class _FrameClock:
    """Output timestamps (in ``time_base`` units) from the source times of the frames (seconds, None when a frame
    has none): each frame at its own time, rounded to the time base, and always after the previous one. A frame
    without a time comes one nominal frame after the last; one that lands on or just before its predecessor's tick
    (rounding, a burst of frames) one tick later; a clock that goes back by more than a second (segments spliced
    together, a capture restarted) continues one nominal frame after the last, and the frames after it keep their
    spacing from there."""

    def __init__(self, time_base: Fraction, fps: Fraction) -> None:
        self.time_base, self.step = time_base, max(1, round(1 / (fps * time_base)))
        self.splice = max(1, round(1 / time_base))  # one second
        self.offset = 0
        self.last: int | None = None

    def pts(self, seconds: Fraction | None) -> int:
        if seconds is None:
            pts = 0 if self.last is None else self.last + self.step
        else:
            pts = round(seconds / self.time_base) + self.offset
        if self.last is not None and pts <= self.last:
            if self.last - pts > self.splice:
                self.offset += self.last + self.step - pts
                pts = self.last + self.step
            else:
                pts = self.last + 1
        self.last = pts
        return pts


def _temp_path(target: Path) -> Path:
    prefix = "." + os.fsdecode(os.fsencode(target.name)[: io.NAME_MAX - 22]) + "."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=target.parent)
    os.close(fd)
    mask = os.umask(0o022)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    return Path(tmp)


class TrackRefs:
    """The reference decision made temporal (:class:`facerestore.pipeline.RefsTracks`): a track's face uses the
    reference photos from the first frame its check passes, and keeps using them while the track lasts (the person
    turning away or blurring for a few frames would otherwise switch between a guided and an unguided restoration:
    flicker); a track whose face never passed is restored without them. ``matched`` holds the tracks that passed.
    (A cut to another scene starts new tracks: :class:`SequenceRestorer`.)"""

    def __init__(self) -> None:
        self._ids: list[int] = []
        self.matched: set[int] = set()

    def begin_frame(self, ids: Sequence[int]) -> None:
        self._ids = list(ids)

    def decide(self, index: int, check: Any) -> bool:
        if index >= len(self._ids):  # ids that do not fit the faces: the check alone decides
            return bool(check.used)
        track = self._ids[index]
        if check.used:
            self.matched.add(track)
        return track in self.matched


class TrackGate:
    """The photo quality gate made temporal (:class:`facerestore.pipeline.PasteShares`): the gate runs for a track
    on its first frame and then every ``every`` frames (NIQE costs ~0.1 s a candidate), and the share pasted
    moves toward each new decision by ``rate`` per frame (an exponential approach, so a face near the gate's
    threshold fades between restored and original instead of switching: no flicker). A new track starts at its
    first decision. ``shares`` keeps every share used (for the record)."""

    def __init__(self, every: int = 12, rate: float = 0.2, keep: int = 50) -> None:
        if int(every) < 1 or not 0.0 < float(rate) <= 1.0:
            raise InputError(f"TrackGate needs every >= 1 and rate in (0, 1], got {every}, {rate}")
        self.every, self.rate, self.keep = int(every), float(rate), int(keep)
        self._ids: list[int] = []
        self._frame = 0
        self._state: dict[int, dict[str, float]] = {}  # track -> share, target, frame of the last decision
        self.shares: list[float] = []
        self.decisions = 0

    def begin_frame(self, ids: Sequence[int]) -> None:
        self._frame += 1
        self._ids = list(ids)
        for k in self._ids:
            if k in self._state:
                self._state[k]["seen"] = float(self._frame)
        # a track that comes back (the tracker relinks a person by identity) finds its share again
        self._state = {k: v for k, v in self._state.items() if self._frame - v.get("seen", self._frame) <= self.keep}

    def needs_gate(self, index: int) -> bool:
        st = self._state.get(self._ids[index])
        return st is None or self._frame - st["decided"] >= self.every

    def share(self, index: int, decision: Any) -> float:
        track = self._ids[index]
        st = self._state.get(track)
        if decision is not None:
            self.decisions += 1
            if st is None:
                st = self._state[track] = {"share": float(decision.weight), "target": float(decision.weight),
                                           "seen": float(self._frame)}
            st["target"], st["decided"] = float(decision.weight), float(self._frame)
        if st is None:  # no decision yet (the gate was not asked to run): paste nothing rather than guess
            return 0.0
        st["share"] += self.rate * (st["target"] - st["share"])
        self.shares.append(st["share"])
        return st["share"]


@dataclass
class VideoResult:
    """What :func:`restore_video` or :func:`restore_animation` did."""

    path: Path
    frames: int
    width: int
    height: int
    fps: Fraction
    codec: str
    audio_packets: int
    faces_per_frame: list[int]
    tracks: int
    blend_weights: list[float]
    seconds: float
    gate_shares: list[float] | None = None
    gate_decisions: int = 0
    faces_with_refs: int | None = None  # faces the reference photos guided (None: no references given)
    refs_closest_distance: float | None = None  # the smallest reference-check distance over the clip's faces
    palettes: int | None = None  # a GIF output: how many 255-colour palettes its frames use (restore_animation)
    rotation: int = 0  # the input's display rotation (degrees counterclockwise), applied: the output is upright
    deinterlaced: int = 0  # input frames that went through the deinterlacer (restore_video's ``deinterlace``)
    audio_reencoded: list[str] = field(default_factory=list)  # encoders of audio streams the container could not copy
    hdr: str | None = None  # "pq" or "hlg": an HDR input, restored through its SDR view (:mod:`facerestore.hdr`)
    subtitles: int = 0  # subtitle streams copied
    subtitles_dropped: list[str] = field(default_factory=list)  # codecs of subtitle streams the container cannot hold
    # what restored the faces, as photo records say it (several weights are non-commercial: records name the licences)
    restorer: dict[str, Any] | None = None  # Restorer.describe() of the method
    detector: str | None = None  # the face detector's registry name
    fidelity: float | None = None  # the fidelity the method ran at (its default when none was given)
    scene_cuts: int = 0  # cuts to another shot, where every face track ended (FaceTracker)
    options: dict[str, Any] = field(default_factory=dict)  # upscale, blend, mask, min_score, ... as asked

    def to_json(self) -> dict[str, Any]:
        from facerestore import __version__
        from facerestore.pipeline import detector_licence

        w = self.blend_weights
        return {"output": str(self.path), "restorer": self.restorer, "fidelity": self.fidelity,
                "detector": self.detector, "detector_licence": detector_licence(self.detector),
                "version": __version__, "frames": self.frames, "size": [self.width, self.height],
                "fps": float(self.fps), "codec": self.codec, "audio_packets": self.audio_packets,
                "faces": int(sum(self.faces_per_frame)), "frames_with_faces": sum(1 for n in self.faces_per_frame if n),
                "tracks": self.tracks, "scene_cuts": self.scene_cuts, "options": self.options,
                "mean_blend_weight": float(np.mean(w)) if w else 0.0,
                "quality_gate": self.gate_shares is not None, "gate_decisions": self.gate_decisions,
                "mean_gate_share": float(np.mean(self.gate_shares)) if self.gate_shares else None,
                "faces_with_refs": self.faces_with_refs,
                "refs_closest_distance": None if self.refs_closest_distance is None
                else round(float(self.refs_closest_distance), 4),
                **({} if self.palettes is None else {"gif_palettes": self.palettes}),
                **({"input_rotation": self.rotation} if self.rotation else {}),
                **({"deinterlaced_frames": self.deinterlaced} if self.deinterlaced else {}),
                **({"audio_reencoded": self.audio_reencoded} if self.audio_reencoded else {}),
                **({"hdr": self.hdr} if self.hdr else {}),
                **({"subtitles": self.subtitles} if self.subtitles else {}),
                **({"subtitles_dropped": self.subtitles_dropped} if self.subtitles_dropped else {}),
                "seconds": round(self.seconds, 3),
                "frames_per_second": round(self.frames / self.seconds, 3) if self.seconds > 0 else None}


class _Prefetched(_Wrapper):
    """Restorations computed ahead, the faces of several frames in one batch (``prime``): ``restore`` returns the
    stored output of a crop equal, bit for bit, to the one asked (same size, same fidelity), and computes anything
    else itself, so the results are those of frame-by-frame restoration (up to the float rounding of batching)."""

    def __init__(self, inner: Restorer) -> None:
        super().__init__(inner)
        self._store: list[tuple[np.ndarray, np.ndarray]] = []
        self._fidelity: float | None = None
        self.calls = 0  # restorer calls made (batches), for reports and tests

    def prime(self, crops: Sequence[np.ndarray], *, fidelity: float | None = None, batch_size: int = 16) -> None:
        from facerestore.pipeline import restore_crops

        outs = restore_crops(self.inner, list(crops), fidelity=fidelity, batch_size=batch_size)
        self.calls += -(-len(crops) // batch_size) if crops else 0
        self._store, self._fidelity = list(zip(crops, outs)), fidelity

    def clear(self) -> None:
        self._store = []

    def restore(self, lq: torch.Tensor, *, refs: torch.Tensor | None = None, fidelity: float | None = None,
                size: tuple[int, int] | None = None, **options: Any) -> Any:
        if refs is not None or options or not self._store or fidelity != self._fidelity:
            self.calls += 1
            return self.inner.restore(lq, refs=refs, fidelity=fidelity, size=size, **options)
        outs = []
        for b in range(lq.shape[0]):
            x = lq[b].permute(1, 2, 0).cpu().numpy()
            hit = next((k for k, (c, o) in enumerate(self._store) if c.shape == x.shape
                        and (size is None or o.shape[:2] == tuple(size)) and np.array_equal(c, x)), None)
            if hit is None:
                self.calls += 1
                outs.append(self.inner.restore(lq[b : b + 1], fidelity=fidelity, size=size)[0])
            else:
                y = self._store.pop(hit)[1]
                outs.append(torch.from_numpy(np.ascontiguousarray(y.transpose(2, 0, 1))).to(lq.device, lq.dtype))
        return torch.stack(outs)


class SequenceRestorer:
    """Restores the frames of one shot in order, keeping what makes them consistent over time: faces tracked and
    their landmarks smoothed (:class:`FaceTracker`), restored crops blended with the previous frame's
    (:class:`TemporalBlender`), the quality gate decided per track and faded (:class:`TrackGate`, unless
    ``gate=False``). ``seq(frame) -> PhotoResult`` for each frame; used by :func:`restore_video` and by
    ``facerestore restore --sequence`` (a folder of frames); ``seq.restore_many(frames)`` restores the faces of
    several frames in one restorer batch (throughput), with the same results. ``photo_options`` go to
    :func:`facerestore.pipeline.restore_photo` (identity off unless asked)."""

    def __init__(self, restorer: Restorer, fps: float, *, upscale: float = 2.0, detector: Any = "auto",
                 stabilize: bool = True, max_weight: float = 0.5, motion_limit: float = 0.03,
                 only_center_face: bool = False, min_score: float | None = None, **photo_options: Any) -> None:
        from facerestore.faces.detect import create_detector

        # a detector made here takes min_score as its threshold (as the CLI and the web page build theirs)
        threshold = {} if min_score is None else {"threshold": float(min_score)}
        self.detector = create_detector(detector, **threshold) if isinstance(detector, str) else detector
        self.tracker = FaceTracker(float(fps), smooth=stabilize, embed=detection_embedding)
        self.stabilize = bool(stabilize)
        # a frame where the references match no face (the person turned away, motion blur) is restored without them
        # rather than stopping the clip; each face's record says whether they were used
        self.photo_options = {"identity": False, "refs_required": False, **photo_options}
        # reference-guided restorations depend on the references: those are restored frame by frame
        plain = self.photo_options.get("refs") is None and not self.photo_options.get("force_refs")
        self.prefetch = _Prefetched(restorer) if plain else None
        self.blender = TemporalBlender(self.prefetch or restorer, max_weight=max_weight if stabilize else 0.0,
                                       motion_limit=motion_limit)
        self.gate = TrackGate() if self.photo_options.get("gate", True) else None
        self.refs_tracks = None if plain else TrackRefs()
        self.upscale, self.only_center_face, self.min_score = upscale, only_center_face, min_score

    def __call__(self, image: Any) -> Any:
        """One frame (an RGB array, a path or a :class:`facerestore.io.LoadedImage`) -> its PhotoResult."""
        return self.restore_many([image])[0]

    def restore_many(self, frames: Sequence[Any], batch_size: int = 16) -> list[Any]:
        """Consecutive frames -> their PhotoResults, in order. Faces are detected and tracked frame by frame, then
        the faces of all these frames are restored in batches of ``batch_size`` before each frame is blended,
        gated and pasted in order."""
        from facerestore.pipeline import align_detections, detect_and_select, restore_photo

        loaded = [io.as_image(f) for f in frames]
        plans = []
        for frame in loaded:
            dets = detect_and_select(frame.rgb, self.detector, min_score=self.min_score,
                                     only_center_face=self.only_center_face)
            tracked = self.tracker.update(dets, frame.rgb)
            ordered = sort_detections([d for _, d in tracked])
            plans.append((ordered, [next(i for i, d in tracked if d is o) for o in ordered]))
        if self.prefetch is not None and len(loaded) > 1:
            face_size = int(self.photo_options.get("face_size", 512))
            crops = [a.crop for frame, (ordered, _) in zip(loaded, plans)
                     for _, a in align_detections(frame.rgb, ordered, self.upscale, face_size=face_size,
                                                  model_size=int(self.blender.spec.size))]
            self.prefetch.prime(crops, fidelity=self.photo_options.get("fidelity"), batch_size=batch_size)
        out = []
        try:
            for frame, (ordered, ids) in zip(loaded, plans):
                self.blender.begin_frame(ids)
                if self.gate is not None:
                    self.gate.begin_frame(ids)
                if self.refs_tracks is not None:
                    self.refs_tracks.begin_frame(ids)
                # the tracked detections are in the frame's pixels: given as they are (a detector object would see
                # the downscaled copy that restore_photo detects on for frames over 4 MP)
                out.append(restore_photo(frame, self.blender, upscale=self.upscale, detector=self.detector,
                                         detections=ordered, shares=self.gate, refs_tracks=self.refs_tracks,
                                         **self.photo_options))
        finally:
            if self.prefetch is not None:
                self.prefetch.clear()
        return out


class _ClipRun:
    """What restore_video and restore_animation do alike for each restored frame: restore a batch of frames with
    the clip's :class:`SequenceRestorer`, count the faces and the references' uses, call the caller's
    ``frame_hook(index, image, faces)`` and ``on_frame(done, total)``; then the :class:`VideoResult` fields these
    give (:meth:`stats`)."""

    def __init__(self, seq: SequenceRestorer, total: int | None, frame_hook: Callable[..., None] | None,
                 on_frame: Callable[[int, int | None], None] | None) -> None:
        self.seq, self.total, self.frame_hook, self.on_frame = seq, total, frame_hook, on_frame
        self.frames = 0  # restored so far: the index of the frame being written while a result is handed out
        self.faces_per_frame: list[int] = []
        self.refs_uses: list[Any] = []  # each face's RefsUse (with references)

    def restored(self, pending: list[Any]) -> Iterator[Any]:
        """The PhotoResults of ``pending`` frames, in order (``pending`` is emptied at the end)."""
        for res in self.seq.restore_many(pending):
            self.faces_per_frame.append(len(res.faces))
            self.refs_uses.extend(f.refs for f in res.faces if f.refs is not None)
            if self.frame_hook is not None:
                self.frame_hook(self.frames, res.image, res.faces)
            yield res
            self.frames += 1
            if self.on_frame is not None:
                self.on_frame(self.frames, self.total)
        pending.clear()

    def stats(self, refs_given: bool) -> dict[str, Any]:
        seq, uses = self.seq, self.refs_uses
        det = seq.detector
        fidelity = seq.blender.fidelity_used(seq.photo_options.get("fidelity"))
        # the settings that decided the output, as a photo's record names them (the values a record can hold)
        options = {"upscale": seq.upscale, "stabilize": seq.stabilize, "max_weight": seq.blender.max_weight,
                   "motion_limit": seq.blender.motion_limit, "only_center_face": seq.only_center_face,
                   "min_score": seq.min_score if seq.min_score is not None else getattr(det, "threshold", None),
                   **{k: v for k, v in seq.photo_options.items()
                      if k not in ("refs", "identity", "refs_required") and (v is None or isinstance(v, (bool, int,
                                                                                                        float, str)))}}
        return {"restorer": seq.blender.describe(), "fidelity": fidelity, "scene_cuts": seq.tracker.cuts,
                "options": options,
                "detector": det if isinstance(det, str) else getattr(det, "name", type(det).__name__),
                "faces_per_frame": self.faces_per_frame, "tracks": seq.tracker._next_id,
                "blend_weights": seq.blender.weights,
                "gate_shares": None if seq.gate is None else seq.gate.shares,
                "gate_decisions": 0 if seq.gate is None else seq.gate.decisions,
                "faces_with_refs": sum(u.used for u in uses) if refs_given else None,
                "refs_closest_distance": min((u.distance for u in uses if u.distance is not None), default=None)}


def restore_video(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    restorer: Restorer,
    *,
    upscale: float = 2.0,  # as the CLI and the web page (and restore_photo's photos)
    detector: Any = "auto",
    stabilize: bool = True,
    max_weight: float = 0.5,
    motion_limit: float = 0.03,
    only_center_face: bool = False,
    min_score: float | None = None,
    crf: int | None = None,
    codec: str | None = None,
    deinterlace: str = "auto",
    protect: Sequence[str | os.PathLike] = (),
    on_frame: Callable[[int, int | None], None] | None = None,
    frame_hook: Callable[[int, np.ndarray, list[Any]], None] | None = None,
    batch_frames: int = 4,
    **photo_options: Any,
) -> VideoResult:
    """Restore the faces of every frame of ``src`` into ``dst`` (a video file; its extension picks the container).

    Each frame goes through :func:`facerestore.pipeline.restore_photo` (``photo_options``: fidelity, mask,
    color_match, face_size, background, refs, batch_size, ...; identity is off unless asked). With
    ``stabilize`` the landmarks are tracked and smoothed (:class:`FaceTracker`) and restored crops are blended
    over time (:class:`TemporalBlender`, ``max_weight`` / ``motion_limit``); without it every frame is restored
    on its own, as the photo pipeline does. Frames stored sideways with a display rotation (phone videos) are
    turned upright before restoration (faces are detected upright) and written upright, without a rotation: the
    output shows as the input did, in any player. Interlaced frames (old tapes, broadcast captures) are made
    progressive first, as ``deinterlace`` says (:class:`Deinterlacer`: "auto" the frames marked interlaced, "on"
    all, "off" none), at the same frame rate. Encoding: the input's codec (libx264 when it has no encoder here)
    or ``codec``, the input's average frame rate, ``crf`` for encoders that take one (x264 18 by default);
    audio streams are copied packet by packet (re-encoded, as AAC in most containers, only when the output
    container cannot hold their codec: ``audio_reencoded``), subtitle streams too where the container holds their
    codec (``subtitles``; the others: ``subtitles_dropped``), with the recording's tags (:func:`_copy_tags`). HDR
    video (PQ or HLG transfer, as phones record it) is restored through the SDR picture a viewer sees, and only
    what the restorer changed goes back into the HDR signal, which keeps its transfer, primaries and bit depth
    (:class:`facerestore.hdr.HdrView`; ``hdr`` in the result). ``on_frame(done, total)`` is called after each
    frame; ``frame_hook(index, output_rgb, faces)`` sees each restored frame (benchmarks; the SDR view of an HDR
    clip). The faces of ``batch_frames`` consecutive frames are restored in one batch
    (:meth:`SequenceRestorer.restore_many`; memory holds that many decoded frames). Written atomically.
    """
    from facerestore.faces.paste import UPSCALE_METHODS, upscale_image, upscaled_shape

    av = _av()
    src, dst = Path(src), Path(dst)
    if dst.suffix.lower() not in _MUXERS:
        raise InputError(f"video output must end in one of {', '.join(_MUXERS)}: {io.display_path(dst)}")
    io.check_output_file(dst, [src, *protect])
    check_encoder_options(codec, crf)
    if int(batch_frames) != batch_frames or batch_frames < 1:
        raise InputError(f"batch_frames must be a positive integer, got {batch_frames}")
    t0 = time.perf_counter()
    inp = _open(src)
    tmp: Path | None = None
    out = None
    try:
        info = _info(inp, _first_rotation(src))
        oh, ow = upscaled_shape(info.height, info.width, upscale)
        io.check_pixels(ow, oh, what="the output frames")
        # an old container's video (MPEG-2, DV, WMV...) is re-encoded as H.264 into Matroska, not in its old codec;
        # a kept container (under any of its names, or recognised by its first bytes) keeps the codec
        container = src.suffix.lower() if is_video_file(src) else (sniff_video_extension(src) or "")
        enc = _encoder(codec, info, dst.suffix.lower(),
                       keep_codec=_CONTAINER_ALIASES.get(container, container) in _MUXERS)
        if crf is not None and enc.name not in _CRF_ENCODERS:
            raise InputError(f"--crf applies to {', '.join(_CRF_ENCODERS)}; the encoder is {enc.name}")
        formats = [f.name for f in (enc.video_formats or [])]
        in_fmt = info.pix_fmt or ""  # None when the stream does not say
        if enc.name == "mjpeg":  # Motion JPEG (old digital cameras' AVI and MOV clips) is full-range YUV
            pix_fmt = in_fmt if in_fmt.startswith("yuvj") and in_fmt in formats else "yuvj420p"
        else:  # the others take limited range: a full-range input (yuvj) is converted
            pix_fmt = in_fmt if in_fmt in formats and not in_fmt.startswith("yuvj") else (
                "yuv420p" if "yuv420p" in formats or not formats else formats[0])
        full_range = pix_fmt.startswith("yuvj")
        # sizes a whole number of chroma samples (4:2:0 even, 4:1:1 a multiple of 4 wide; H.264, HEVC, MPEG-4 and
        # AV1 want even sizes whatever the format): the last column / row is repeated to get there
        fmt = av.VideoFormat(pix_fmt)
        step_w, step_h = 64 // max(1, fmt.chroma_width(64)), 64 // max(1, fmt.chroma_height(64))
        if enc.name in ("libx264", "libx265", "mpeg4", "libsvtav1"):
            step_w, step_h = max(step_w, 2), max(step_h, 2)
        ew, eh = -(-ow // step_w) * step_w, -(-oh // step_h) * step_h

        tmp = _temp_path(dst)
        out = av.open(str(tmp), "w", format=_MUXERS[dst.suffix.lower()])
        vin = main_video_stream(inp)
        vout = out.add_stream(enc.name, rate=info.fps)
        vout.width, vout.height, vout.pix_fmt = ew, eh, pix_fmt
        opts: dict[str, str] = {}
        if enc.name in _CRF_ENCODERS:
            opts["crf"] = str(int(crf if crf is not None else _CRF_ENCODERS[enc.name]))
            if enc.name.startswith("libvpx"):
                vout.bit_rate = 0  # constant quality mode
        elif info.bit_rate:
            vout.bit_rate = int(info.bit_rate * (ew * eh) / (info.width * info.height))
        if enc.name == "libx265":
            opts["x265-params"] = "log-level=error"  # x265 prints its settings and statistics otherwise
            if dst.suffix.lower() in (".mp4", ".mov"):
                vout.codec_tag = "hvc1"  # Apple's players and Photos play HEVC tagged hvc1, not FFmpeg's default hev1
        vout.options = opts
        # frames are stamped with their source times (not their index at the average rate): the audio, copied with
        # its own timestamps, stays in sync when the video does not start at 0 (camcorder MPEG-TS, edit lists) and
        # through a phone's variable frame rate
        # (AVI indexes frames by tick: it needs 1/fps, or it fills every gap between ticks with empty frames)
        exact = enc.name in _ANY_TIME_BASE and vin.time_base and dst.suffix.lower() != ".avi"
        tb = Fraction(vin.time_base) if exact else 1 / Fraction(info.fps)
        vout.codec_context.time_base = tb
        clock = _FrameClock(tb, Fraction(info.fps))
        # the input's colour description, and frames converted to YUV with its matrix: decoded with it, restored, and
        # encoded with it, the output shows the input's colours (players assume BT.709 for unflagged HD video: an
        # output converted with swscale's default BT.601 and left unflagged shifts reds and greens)
        yuv = vout.pix_fmt.startswith(("yuv", "nv"))
        # an input without a YUV matrix (unspecified, or coded as RGB: libx264rgb, lossless captures) is written with
        # BT.709 and says so: left unflagged after swscale's default BT.601, an HD player (which assumes BT.709)
        # shifts its reds and greens
        matrix = info.colorspace if info.colorspace in _MATRICES else 1
        if yuv:
            ctx = vout.codec_context
            ctx.colorspace, ctx.color_primaries, ctx.color_trc = matrix, info.color_primaries, info.color_trc
            ctx.color_range = 2 if full_range else 1  # full ("JPEG") or limited ("MPEG"): what the conversion writes
        audio = {}
        for a in inp.streams.audio:
            try:
                audio[a.index] = _AudioOut(out, a, dst.suffix.lower())
            except (av.error.FFmpegError, ValueError) as exc:
                raise InputError(f"cannot write the audio of {io.display_path(src)} into "
                                 f"{dst.suffix}: {_reason(exc)}") from None
        # subtitles are copied packet by packet where the container takes their codec (text and DVD/DVB subtitles in
        # Matroska, mov_text in MP4/MOV); the others are left out and named in the result
        subtitles: dict[int, Any] = {}
        subtitles_dropped: list[str] = []
        subtitle_splices: dict[int, _PacketSplice] = {}
        for t in inp.streams.subtitles:
            try:
                subtitles[t.index] = out.add_stream_from_template(t)
                subtitle_splices[t.index] = _PacketSplice(t.time_base)
            except (av.error.FFmpegError, ValueError):
                subtitles_dropped.append(t.codec_context.name)
        _copy_tags(inp, out, [(vin, vout), *((a, audio[a.index].dst) for a in inp.streams.audio),
                              *((t, subtitles[t.index]) for t in inp.streams.subtitles if t.index in subtitles)],
                   dst.suffix.lower())

        seq = SequenceRestorer(restorer, float(info.fps), upscale=upscale, detector=detector, stabilize=stabilize,
                               max_weight=max_weight, motion_limit=motion_limit, only_center_face=only_center_face,
                               min_score=min_score, **photo_options)
        run = _ClipRun(seq, info.frames, frame_hook, on_frame)
        n_audio = 0

        deep = _deep(vout.pix_fmt)  # a 10-bit output is fed 16-bit RGB: the input's precision is kept
        # HDR (PQ, HLG): the restorer sees the SDR picture a viewer would, and what it changed goes back into the signal
        view = hdr_view_for(info.color_trc, info.color_primaries)
        originals: list[np.ndarray] = []  # the HDR frames of ``pending`` (their SDR views are restored)
        views: list[np.ndarray] = []  # those views, kept while ``pending`` is emptied

        def encode(rgb: np.ndarray, stamp: Fraction | None) -> None:
            img = io.quantize(rgb, 16 if deep else 8)
            if (eh, ew) != img.shape[:2]:
                img = np.pad(img, ((0, eh - img.shape[0]), (0, ew - img.shape[1]), (0, 0)), mode="edge")
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb48le" if deep else "rgb24")
            if yuv:
                frame = frame.reformat(format=vout.pix_fmt, dst_colorspace=_MATRICES.get(matrix, "DEFAULT"),
                                       dst_color_range="JPEG" if full_range else "MPEG")
                frame.colorspace, frame.color_range = matrix, 2 if full_range else 1
            frame.pts = clock.pts(stamp)
            frame.time_base = tb
            try:
                packets = vout.encode(frame)
            except av.error.FFmpegError as exc:  # not a decoding problem: say which encoder refused
                raise InputError(f"cannot encode the restored video of {io.display_path(src)} with {enc.name} "
                                 f"({vout.pix_fmt}): {_reason(exc)}") from None
            for pkt in packets:
                mux(pkt)

        def mux(pkt: Any, what: str = "video") -> int:
            """Write a packet; a muxer refusal is named as such (not as a decoding error)."""
            try:
                out.mux(pkt)
            except av.error.FFmpegError as exc:
                raise InputError(f"cannot write the {what} of {io.display_path(src)} into {dst.suffix or 'the'} "
                                 f"container: {_reason(exc)}") from None
            return 1

        pending: list[np.ndarray] = []  # decoded frames whose faces are restored in one batch
        dein = Deinterlacer(vin.time_base, deinterlace)

        stamps: list[Fraction | None] = []  # the source times (seconds) of ``pending``

        # the stored size the header declares: the one the pixel limit checked and the encoder is sized for
        stored = (int(vin.codec_context.width), int(vin.codec_context.height))

        def same_size(frame: Any) -> Any:
            """A frame whose size differs from the header's (a broadcast switching between SD and HD, a WebRTC
            recording, a crafted file whose frames are far larger than it says) resized to it, as players and
            FFmpeg's own scaler do: one output size for the clip, never more pixels than were checked."""
            w, h = stored
            if (frame.width, frame.height) == (w, h):
                return frame
            return frame.reformat(width=w, height=h, interpolation="LANCZOS")

        def add(frame: Any) -> None:
            stamps.append(None if frame.pts is None else frame.pts * Fraction(frame.time_base or vin.time_base))
            rgb = _rgb(frame, info.rotation, info.square_size)
            if view is not None:
                originals.append(rgb)
                rgb = view.to_sdr(rgb)
            pending.append(rgb)

        # an upscaled HDR frame and its view are resized as the restored view's background was (the method named by
        # ``background``; Lanczos for ESRGAN or a callable, whose extra sharpness then counts as a change)
        bg = photo_options.get("background", "lanczos")
        resize = bg if isinstance(bg, str) and bg in UPSCALE_METHODS else "lanczos"

        def to_signal(k: int, restored: np.ndarray) -> np.ndarray:
            hdr_frame, sdr = originals[k], views[k]
            if restored.shape != hdr_frame.shape:
                hdr_frame, sdr = upscale_image(hdr_frame, upscale, resize), upscale_image(sdr, upscale, resize)
            return view.merge(hdr_frame, sdr, restored)

        def flush() -> None:
            views[:] = pending if view is not None else []
            for k, res in enumerate(run.restored(pending)):
                encode(res.image if view is None else to_signal(k, res.image), stamps[k])
            originals.clear()
            stamps.clear()

        try:  # the encoders open here: a refusal is named as what it is, not as a decoding error
            out.start_encoding()
        except av.error.FFmpegError as exc:
            raise InputError(f"cannot write {io.display_path(dst)} with {enc.name} ({vout.pix_fmt}, {ew}x{eh}): "
                             f"{_reason(exc)}") from None
        streams = [vin, *(inp.streams.audio[k] for k in range(len(inp.streams.audio))),
                   *(t for t in inp.streams.subtitles if t.index in subtitles)]
        try:
            for packet in inp.demux(streams):
                if packet.stream.type == "subtitle":
                    if packet.dts is not None:
                        subtitle_splices[packet.stream.index].shift(packet)
                        packet.stream = subtitles[packet.stream.index]
                        mux(packet, "subtitles")
                    continue
                if packet.stream.type == "audio":
                    track = audio[packet.stream.index]
                    if packet.dts is None and track.copy:  # a flush packet: nothing to copy
                        continue
                    try:
                        n_audio += track.mux(out, packet)
                    except av.error.FFmpegError as exc:
                        raise InputError(f"cannot write the audio of {io.display_path(src)}: {_reason(exc)}") from None
                    continue
                for frame in packet.decode():
                    for f in dein(same_size(frame)):
                        add(f)
                        if len(pending) >= batch_frames:
                            flush()
            for f in dein.flush():
                add(f)
            flush()
        except av.error.FFmpegError as exc:
            raise InputError(f"cannot decode video {io.display_path(src)}: {_reason(exc)}") from None
        if run.frames == 0:
            raise InputError(f"no frames could be decoded from {io.display_path(src)}")
        try:  # the encoders' last packets and the container's index
            for pkt in vout.encode(None):
                mux(pkt)
            for track in audio.values():
                n_audio += track.flush(out)
            out.close()
        except av.error.FFmpegError as exc:
            raise InputError(f"cannot finish writing {io.display_path(dst)}: {_reason(exc)}") from None
        out = None
        inp.close()
        io.check_output_file(dst, [src, *protect])
        os.replace(tmp, dst)
        tmp = None
    except OSError as exc:
        if isinstance(exc, InputError):
            raise
        raise OutputError(f"cannot write {io.display_path(dst)}: {_reason(exc)}") from None
    finally:
        if out is not None:
            try:
                out.close()
            except Exception:
                pass
        inp.close()
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return VideoResult(path=dst, frames=run.frames, width=ew, height=eh, fps=info.fps, codec=enc.name,
                       audio_packets=n_audio, seconds=time.perf_counter() - t0,
                       rotation=info.rotation, deinterlaced=dein.count, hdr=None if view is None else view.transfer,
                       audio_reencoded=[t.dst.codec_context.name for t in audio.values() if not t.copy],
                       subtitles=len(subtitles), subtitles_dropped=subtitles_dropped,
                       **run.stats(photo_options.get("refs") is not None))


# --------------------------------------------------------------------------------------------------
# animated images: GIF, WebP and APNG, read and written with Pillow and restored as a clip

# Pillow's writers of animated images hold every output frame until the file is written: the frames may take this much
ANIMATION_MAX_BYTES = 2 * 1024**3
_DEFAULT_FRAME_MS = 100  # a frame without a duration is shown this long (what browsers do)


@dataclass
class AnimationInfo:
    """What :func:`probe_animation` found: size, frames, each frame's display time, looping, transparency."""

    width: int
    height: int
    frames: int
    durations_ms: list[int]
    loop: int | None  # None: played once (a GIF without a loop block); 0: forever; n: n more times
    format: str  # Pillow's name: GIF, WEBP or PNG
    transparency: bool

    @property
    def fps(self) -> Fraction:
        """The mean frame rate (10 when the file gives no durations)."""
        total = sum(self.durations_ms)
        return Fraction(1000 * self.frames, total) if total > 0 else Fraction(1000, _DEFAULT_FRAME_MS)


def _open_animation(path: Path) -> Any:

    from PIL import Image

    try:
        with quiet_warnings():
            im = Image.open(path)
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno is not None:  # missing, unreadable (not: undecodable)
            raise InputError(f"cannot read {io.display_path(path)}: {_reason(exc)}") from None
        raise InputError(f"cannot decode image (corrupt or unsupported format): {io.display_path(path)}") from None
    if im.format not in io.ANIMATION_FORMATS.values():
        im.close()
        raise InputError(f"not an animated GIF, WebP or PNG: {io.display_path(path)}")
    return im


def _animation_info(im: Any) -> AnimationInfo:
    n = int(getattr(im, "n_frames", 1))
    durations = []
    for k in range(n):
        im.seek(k)
        if im.format == "WEBP":
            im.load()  # Pillow reads a WebP frame's duration when it decodes the frame
        d = im.info.get("duration")
        durations.append(round(d) if d else _DEFAULT_FRAME_MS)
    im.seek(0)
    # WebP and APNG frames decode as RGBA whether or not anything is transparent: the first frame's alpha decides
    transparency = "transparency" in im.info or (
        im.mode in ("RGBA", "LA", "PA") and im.getchannel("A").getextrema()[0] < 255)
    return AnimationInfo(width=int(im.size[0]), height=int(im.size[1]), frames=n, durations_ms=durations,
                         loop=im.info.get("loop"), format=str(im.format), transparency=bool(transparency))


def probe_animation(path: str | os.PathLike, check: Callable[[int, int, int], None] | None = None
                    ) -> AnimationInfo:
    """Size, frame count, durations, looping and transparency of an animated GIF, WebP or PNG (InputError, one
    line, when it cannot be read). ``check(width, height, frames)``, when given, runs on the header's numbers
    before any frame is decoded (reading the durations decodes every WebP frame): a server's limits refuse an
    oversized file without that work."""
    p = Path(path)
    with _open_animation(p) as im:
        try:
            if check is not None:
                check(int(im.size[0]), int(im.size[1]), int(getattr(im, "n_frames", 1)))
            return _animation_info(im)
        except (OSError, EOFError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"cannot decode {io.display_path(p)}: {_reason(exc)}") from None


def _bayer(n: int) -> np.ndarray:
    """The (n, n) ordered-dither threshold matrix (n a power of 2), values (k + 0.5) / n^2 - 0.5 in (-0.5, 0.5)."""
    m = np.zeros((1, 1))
    while m.shape[0] < n:
        m = np.block([[4 * m, 4 * m + 2], [4 * m + 3, 4 * m + 1]])
    return (m + 0.5) / m.size - 0.5


class _GifPalette:
    """The 255-colour palettes of a GIF's frames (index 255: transparent), and ordered dithering.

    A palette is kept from frame to frame until a frame's colours leave it (the mean distance of its pixels to their
    nearest palette colour, in 0-255 units, exceeds that of the frame the palette was made for by ``max_error``: a
    cut to another scene); a palette per frame would
    make a still background shimmer, its pixels mapping to slightly different colours in every frame. The dither
    is ordered (an 8 x 8 Bayer matrix of ``dither`` levels peak to peak, added before the nearest-colour mapping)
    for the same reason: an error-diffusion dither (Floyd-Steinberg) carries every change of a moving face to the
    pixels after it, so the background below a talking face would crawl; an ordered one depends on the pixel
    alone, so what stays still in the frames stays identical in the GIF."""

    def __init__(self, max_error: float = 6.0, dither: float = 12.0) -> None:
        self.max_error = float(max_error)
        self.dither = float(dither)
        self.palette: Any = None
        self.colors: np.ndarray | None = None
        self.base_error = 0.0  # the palette's error on the frame it was made for
        self.palettes = 0  # how many were made

    def _error(self, rgb: np.ndarray) -> float:
        assert self.colors is not None
        h, w = rgb.shape[:2]
        sample = rgb[:: max(1, h // 64), :: max(1, w // 64)].reshape(-1, 1, 3).astype(np.float32)
        d2 = ((sample - self.colors[None]) ** 2).sum(-1).min(1)
        return float(np.sqrt(d2).mean())

    def frame(self, rgb: np.ndarray, alpha: np.ndarray | None) -> Any:
        """(H, W, 3) uint8 RGB and (H, W) uint8 alpha or None -> the frame as a P-mode image."""
        from PIL import Image

        img = Image.fromarray(rgb, "RGB")
        if self.palette is None or self._error(rgb) > self.base_error + self.max_error:
            q = img.quantize(colors=255, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
            values = q.getpalette()[: 255 * 3]
            self.palette = Image.new("P", (1, 1))
            self.palette.putpalette(values + [0] * (768 - len(values)))
            self.colors = np.asarray(values, np.float32).reshape(-1, 3)
            self.base_error = self._error(rgb)
            self.palettes += 1
        h, w = rgb.shape[:2]
        offset = np.tile(_bayer(8), (h // 8 + 1, w // 8 + 1))[:h, :w, None] * self.dither
        dithered = np.clip(np.rint(rgb + offset), 0, 255).astype(np.uint8)
        out = Image.fromarray(dithered, "RGB").quantize(palette=self.palette, dither=Image.Dither.NONE)
        idx = np.asarray(out).copy()
        # the padding entries (black) include 255, the transparent index: a dark pixel the quantizer sent there
        # would be a hole; it gets its nearest real colour
        stray = np.flatnonzero(idx.ravel() >= len(self.colors))
        flat_idx, flat_rgb = idx.reshape(-1), dithered.reshape(-1, 3)
        for k in range(0, len(stray), 65536):  # in chunks: (pixels x 255 colours) distances stay small
            chunk = stray[k : k + 65536]
            d2 = ((flat_rgb[chunk][:, None, :].astype(np.float32) - self.colors[None]) ** 2).sum(-1)
            flat_idx[chunk] = d2.argmin(1).astype(np.uint8)
        if alpha is not None:  # GIF transparency is one bit: under half is transparent
            idx[alpha < 128] = 255
        out = Image.fromarray(idx, "P")
        out.putpalette(self.palette.getpalette())
        return out


def restore_animation(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    restorer: Restorer,
    *,
    upscale: float = 2.0,  # as the CLI and the web page (and restore_photo's photos)
    detector: Any = "auto",
    stabilize: bool = True,
    max_weight: float = 0.5,
    motion_limit: float = 0.03,
    only_center_face: bool = False,
    min_score: float | None = None,
    protect: Sequence[str | os.PathLike] = (),
    on_frame: Callable[[int, int | None], None] | None = None,
    frame_hook: Callable[[int, np.ndarray, list[Any]], None] | None = None,
    batch_frames: int = 4,
    webp_quality: int = 92,
    **photo_options: Any,
) -> VideoResult:
    """Restore the faces of every frame of an animated GIF, WebP or PNG ``src`` into ``dst`` (the same format:
    ``dst``'s extension must be the format's, .gif / .webp / .png).

    The frames are restored as a clip, exactly as :func:`restore_video` restores a video's (tracked, smoothed and
    blended faces, the quality gate per track; the same options), at the mean frame rate of the file. The output
    keeps every frame's display time, the looping and the transparency (GIF: one bit, alpha under one half is
    transparent). GIF frames are reduced to 255 colours with an ordered dither on a palette kept across frames
    until the colours change (:class:`_GifPalette`: what stays still stays identical); WebP frames are encoded
    lossy at ``webp_quality`` (0-100), or losslessly when the input's are; APNG frames losslessly. Pillow's
    writers hold every output frame until the file is written, so an animation whose restored frames would take
    more than :data:`ANIMATION_MAX_BYTES` is refused with one line. Needs Pillow only (not the ``video`` extra).
    Written atomically; the input is only read."""
    from PIL import Image

    from facerestore.faces.paste import upscaled_shape

    src, dst = Path(src), Path(dst)
    io.check_output_file(dst, [src, *protect])
    if int(batch_frames) != batch_frames or batch_frames < 1:
        raise InputError(f"batch_frames must be a positive integer, got {batch_frames}")
    if not 0 <= webp_quality <= 100:
        raise InputError(f"webp_quality must be in [0, 100], got {webp_quality}")
    t0 = time.perf_counter()
    im = _open_animation(src)
    tmp: Path | None = None
    try:
        fmt = io.ANIMATION_FORMATS.get(dst.suffix.lower())
        if fmt != im.format:
            want = next(e for e, f in io.ANIMATION_FORMATS.items() if f == im.format)
            raise InputError(f"{io.display_path(src)} is an animated {im.format}: its output must end in {want}, "
                             f"not {dst.suffix or 'nothing'}")
        try:
            info = _animation_info(im)
        except (OSError, EOFError, ValueError) as exc:
            raise InputError(f"cannot decode {io.display_path(src)}: {_reason(exc)}") from None
        oh, ow = upscaled_shape(info.height, info.width, upscale)
        io.check_pixels(ow, oh, what="the output frames")
        per_pixel = 1 if fmt == "GIF" else (4 if info.transparency else 3)
        need = info.frames * ow * oh * per_pixel
        if need > ANIMATION_MAX_BYTES:
            raise InputError(f"the restored animation ({info.frames} frames of {ow}x{oh}) would hold "
                             f"{need / 1024**3:.1f} GB in memory until it is written (limit "
                             f"{ANIMATION_MAX_BYTES / 1024**3:.0f} GB): use a smaller --upscale, or convert "
                             f"{io.display_path(src)} to a video")
        seq = SequenceRestorer(restorer, float(info.fps), upscale=upscale, detector=detector, stabilize=stabilize,
                               max_weight=max_weight, motion_limit=motion_limit, only_center_face=only_center_face,
                               min_score=min_score, **photo_options)
        gif = _GifPalette() if fmt == "GIF" else None
        frames_out: list[Any] = []
        run = _ClipRun(seq, info.frames, frame_hook, on_frame)
        pending: list[io.LoadedImage] = []

        def flush() -> None:
            for res in run.restored(pending):
                rgb = io.quantize(res.image, 8)
                alpha = None if res.alpha is None else io.quantize(res.alpha, 8)
                if gif is not None:
                    frames_out.append(gif.frame(rgb, alpha))
                elif alpha is not None:
                    frames_out.append(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"))
                else:
                    frames_out.append(Image.fromarray(rgb, "RGB"))

        try:
            for k in range(info.frames):
                im.seek(k)
                frame = np.asarray(im.convert("RGBA" if info.transparency else "RGB"), np.float32) / np.float32(255)
                pending.append(io.LoadedImage(rgb=np.ascontiguousarray(frame[:, :, :3]),
                                              alpha=frame[:, :, 3].copy() if info.transparency else None,
                                              path=src))
                if len(pending) >= batch_frames:
                    flush()
            flush()
        except (OSError, EOFError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"cannot decode {io.display_path(src)}: {_reason(exc)}") from None
        save: dict[str, Any] = {"format": fmt, "save_all": True, "append_images": frames_out[1:],
                                "duration": info.durations_ms}
        if info.loop is not None:
            save["loop"] = int(info.loop)
        if fmt == "GIF" and info.transparency:
            save.update(transparency=255, disposal=2)  # each frame replaces the last, transparent pixels included
        elif fmt == "WEBP":
            with open(src, "rb") as f:  # a lossless animation (stickers, screen captures) stays lossless
                lossless = io.webp_is_lossless(f.read(1 << 20))
            save.update(lossless=True, quality=100, method=4) if lossless else save.update(
                quality=int(webp_quality), method=4)
        # the colour profile of an animated WebP or PNG, and a WebP's XMP (Pillow writes no XMP into APNG; GIF
        # has neither): the frames are in the input's colour space
        meta = io.pillow_metadata(im)
        if fmt in ("WEBP", "PNG") and meta.icc_for(gray=False) is not None:
            save["icc_profile"] = meta.icc_for(gray=False)
        if fmt == "WEBP" and meta.xmp:
            save["xmp"] = meta.xmp
        tmp = _temp_path(dst)
        frames_out[0].save(tmp, **save)
        io.check_output_file(dst, [src, *protect])
        os.replace(tmp, dst)
        tmp = None
    except OSError as exc:
        if isinstance(exc, InputError):
            raise
        raise OutputError(f"cannot write {io.display_path(dst)}: {_reason(exc)}") from None
    finally:
        im.close()
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return VideoResult(path=dst, frames=len(frames_out), width=ow, height=oh, fps=info.fps,
                       codec={"GIF": "gif", "WEBP": "webp", "PNG": "apng"}[fmt], audio_packets=0,
                       seconds=time.perf_counter() - t0,
                       palettes=None if gif is None else gif.palettes,
                       **run.stats(photo_options.get("refs") is not None))
