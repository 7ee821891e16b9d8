"""Image and file I/O at the edges of the library.

Inside the library images are float arrays/tensors in [0, 1], RGB. This module converts from and to
files: 8- and 16-bit, grayscale, alpha, EXIF orientation, names with spaces or upper-case extensions.
Every write is atomic (temporary file in the destination folder, then ``os.replace``), so an
interrupted run never leaves a half-written output and never touches the input. Writes go only to
regular files: a device, FIFO, folder or symbolic link at the target path is refused (``OutputError``).

Reads are bounded: the pixel count is taken from the file's header before decoding and checked against
:func:`max_pixels` (default ``MAX_PIXELS``, Pillow's decompression-bomb threshold; environment variable
``FACERESTORE_MAX_PIXELS`` overrides it, 0 = no limit); float images with NaN/inf pixels are refused.
See docs/reliability.md.
"""

from __future__ import annotations

import functools
import json
import os
import re
import stat
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from facerestore.errors import InputError, OutputError, quiet_warnings

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DEFAULT_JPEG_QUALITY = 95  # JPEG outputs, unless the source JPEG was finer (write_image)
LOSSY_WEBP_QUALITY = 95  # WebP outputs of lossy WebP photos (lossless ones stay lossless)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")  # read and written
# read only, decoded by Pillow (OpenCV has no decoder for them): phone photos (lossy: restored ones are written as
# JPEG) and GIF (its first frame: an animated file is a clip, restored by facerestore.video.restore_animation).
# AVIF needs Pillow >= 11.3; HEIC/HEIF the optional pillow-heif package (`pip install "facerestore[heif]"`)
PHONE_EXTENSIONS = (".avif", ".heic", ".heif")
PILLOW_EXTENSIONS = (*PHONE_EXTENSIONS, ".gif")
# read only, decoded by OpenCV (16-bit stays 16-bit): scanners' and archives' formats, JPEG 2000 (in which libraries
# and archives publish their scans of old photographs) and Netpbm (what Linux scanning tools write by default);
# restored ones are written as PNG
SCAN_EXTENSIONS = (".jp2", ".j2k", ".j2c", ".jpf", ".jpx", ".pnm", ".ppm", ".pgm", ".pbm")
INPUT_EXTENSIONS = IMAGE_EXTENSIONS + PILLOW_EXTENSIONS + SCAN_EXTENSIONS
# video containers restored frame by frame (facerestore.video, PyAV): those written back in their own container
# (and their other names: .m4v/.f4v MP4, .qt QuickTime, .divx AVI), then older ones (MPEG program/transport streams
# of DVDs, TV and camcorders: AVCHD .mts/.m2ts, SD-card .mod/.tod, HDV tape .m2t; raw DV, MPEG-2 elementary streams,
# 3GP phones, Windows Media, Flash, RealMedia, Ogg, MXF) whose restored video is written to Matroska, which takes
# any of their audio by copy
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".f4v", ".qt", ".divx", ".mpg", ".mpeg",
                    ".vob", ".ts", ".mts", ".m2ts", ".mod", ".tod", ".m2t", ".m2v", ".dv", ".3gp", ".3g2", ".wmv",
                    ".asf", ".flv", ".rm", ".rmvb", ".ogv", ".mxf")
# image formats that may hold several frames (extension -> Pillow's format name): an animated file is restored as a
# clip into the same format (facerestore.video.restore_animation); read as a photo, its first frame is
ANIMATION_FORMATS = {".gif": "GIF", ".webp": "WEBP", ".png": "PNG"}
# ISO-BMFF brands (bytes 8-12 of the file) of HEVC-coded HEIF images (pillow-heif); AVIF's are avif / avis
HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1")

_EXIF_ORIENTATION_TAG = 0x0112

# Pillow's decompression-bomb threshold (PIL.Image.MAX_IMAGE_PIXELS): about 89.5 megapixels, e.g. 10000 x 8948.
# An 8000 x 6000 photo (48 MP) is well inside; a 20000 x 20000 PNG header (400 MP) is refused before decoding.
MAX_PIXELS = 89_478_485
NAME_MAX = 255  # bytes in one path component (Linux, macOS, Windows)


# Pillow names a JPEG whose MPF index lists several images (a camera's preview beside the photo) "MPO": the same
# baseline JPEG for everything read here (EXIF, quality, subsampling, resolution)
JPEG_FORMATS = ("JPEG", "MPO")


def max_pixels() -> int | None:
    """The pixel-count limit of every image read: ``$FACERESTORE_MAX_PIXELS`` if set (0 = no limit), else
    ``MAX_PIXELS``. None means no limit."""
    env = os.environ.get("FACERESTORE_MAX_PIXELS", "").strip()
    if env:
        try:
            value = float(env)
            n = int(value)
        except (ValueError, OverflowError):  # "abc", "inf"
            n, value = -1, -1.0
        if n < 0 or n != value:
            raise InputError(f"FACERESTORE_MAX_PIXELS must be a whole number of pixels (0: no limit), got {env!r}")
        return n if n > 0 else None
    return MAX_PIXELS if MAX_PIXELS and MAX_PIXELS > 0 else None


def check_pixels(width: int, height: int, what: str = "image") -> None:
    """InputError when a ``width`` x ``height`` image is over :func:`max_pixels` (before allocating it)."""
    limit = max_pixels()
    if limit is not None and int(width) * int(height) > limit:
        raise InputError(
            f"{what} is {int(width)}x{int(height)} ({int(width) * int(height) / 1e6:.1f} megapixels), over the "
            f"limit of {limit / 1e6:.1f} megapixels (set FACERESTORE_MAX_PIXELS to change it)"
        )


def display_path(path: str | os.PathLike) -> str:
    """A path as printable text: bytes that are not UTF-8 (surrogate escapes) become \\xNN escapes."""
    s = os.fspath(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
    if isinstance(s, bytes):
        s = os.fsdecode(s)
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def one_line(exc: BaseException) -> str:
    """The message of an error as one printable line (first line; MemoryError: "out of memory"): what the CLI
    prints after ``error:`` and ``facerestore serve`` shows in the page (re-exported by ``cli.guards``)."""
    if isinstance(exc, MemoryError):
        return "out of memory"
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return f"{exc.strerror}: {display_path(exc.filename)}"
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return display_path(lines[0]) if lines else type(exc).__name__


@dataclass(frozen=True)
class SourceEncoding:
    """How a JPEG or WebP source was compressed, so that an output in the same format is not coarser than its
    input (:func:`write_image`)."""

    format: str  # "JPEG" or "WEBP"
    quality: int | None = None  # JPEG: the IJG quality 1-100, estimated from the luminance quantisation table
    subsampling: str | None = None  # JPEG: "4:4:4", "4:2:2", "4:2:0", "4:4:0" or "4:1:1"; None for gray or others
    lossless: bool = False  # WebP: lossless (VP8L) rather than lossy (VP8) image data


@dataclass(frozen=True)
class ImageMetadata:
    """What a photo file says besides its pixels, carried into the restored photo's JPEG, PNG, WebP or TIFF (and,
    the colour profile only, into face crops: :meth:`for_crops`). Each part is None when the file has none."""

    exif: bytes | None = None  # EXIF (JPEG, PNG, WebP, AVIF, HEIF sources), its orientation reset to 1
    icc_profile: bytes | None = None  # RGB or gray ICC colour profile (Display P3 phones, Adobe RGB cameras, scanners)
    xmp: bytes | None = None  # XMP packet (captions, credits, keywords, ratings), its tiff:Orientation reset to 1
    # IPTC (captions, credits, keywords) as a JPEG's APP13 "Photoshop 3.0" payload, from a JPEG or a TIFF, without the
    # Photoshop resources that describe the input's pixels (resolution, thumbnails)
    iptc: bytes | None = None
    encoding: SourceEncoding | None = None  # how a JPEG or WebP source was compressed (write_image follows it)
    # the picture's physical size in inches (width, height; upright), from the resolution the file states (a scan's
    # 300 or 600 dpi): outputs state the resolution that keeps it, so an upscaled scan prints at the same size
    print_size: tuple[float, float] | None = None

    def icc_for(self, gray: bool) -> bytes | None:
        """The ICC profile when it describes pixels of this kind (a gray profile for gray pixels, an RGB one for
        colour), else None: a profile of the other kind would mislead colour-managed viewers."""
        p = self.icc_profile
        return p if p is not None and (p[16:20] == b"GRAY") == bool(gray) else None

    def for_crops(self) -> ImageMetadata:
        """What a crop of the photo keeps: its colour profile (the pixels' colour space) and JPEG encoding, not the
        photo's story."""
        return ImageMetadata(icc_profile=self.icc_profile, encoding=self.encoding)


@dataclass
class LoadedImage:
    """A decoded image file.

    Attributes:
        rgb: (H, W, 3) float32 in [0, 1], RGB, EXIF orientation applied (gray inputs are replicated).
        alpha: (H, W) float32 in [0, 1], or None when the file has no alpha channel.
        bit_depth: 8 or 16, the per-channel depth of the file.
        is_gray: True when the file had a single colour channel.
        path: where it was read from (None for in-memory images).
        metadata: the file's EXIF, ICC profile, XMP and IPTC (:class:`ImageMetadata`), for the outputs.
        pages: how many images the file holds (a multi-page TIFF: only the first is decoded).
    """

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    bit_depth: int = 8
    is_gray: bool = False
    path: Path | None = None
    metadata: ImageMetadata = field(default_factory=ImageMetadata)
    pages: int = 1

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.rgb.shape[1], self.rgb.shape[0]


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether the extension is one this module reads (``INPUT_EXTENSIONS``)."""
    return Path(path).suffix.lower() in INPUT_EXTENSIONS


def is_animation(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an image file with more than one frame (an animated GIF, WebP or PNG), from its header.
    Unreadable files are not (reading them says why)."""

    from PIL import Image

    p = Path(path)
    if p.suffix.lower() not in ANIMATION_FORMATS:
        return False
    try:
        with quiet_warnings():
            with Image.open(p) as im:
                return im.format in ANIMATION_FORMATS.values() and bool(getattr(im, "is_animated", False))
    except Exception:
        return False


def _entry_problem(f: Path, recursive: bool) -> str | None:
    """Why a folder entry is not read as an image (None: it is an image file; "" : ignore silently)."""
    if f.name.startswith("."):
        return ""  # hidden files, including our own temporary files
    try:
        st = f.stat()
    except FileNotFoundError:
        return "broken symbolic link" if f.is_symlink() else ""
    except OSError as exc:
        return f"cannot inspect ({exc.strerror or exc})"
    if stat.S_ISDIR(st.st_mode):
        return "" if recursive else "sub-folder (not read)"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (FIFO, device or socket)"
    if not is_image_file(f):
        return f"unsupported format {f.suffix or '(no extension)'}"
    return None


def list_images(path: str | os.PathLike, recursive: bool = False, *,
                on_skip: Callable[[Path, str], None] | None = None) -> list[Path]:
    """Image files at ``path`` (a file or a folder), sorted by name.

    Folder entries that are not read (other formats such as .txt or videos, broken links, FIFOs and devices,
    sub-folders without ``recursive``) are passed to ``on_skip(path, reason)`` when given; hidden files
    are ignored. Raises InputError when the path does not exist, is neither a regular file nor a folder,
    or is a folder without images.
    """
    p = Path(path)
    if not os.path.lexists(p):
        raise InputError(f"input not found: {display_path(p)}")
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError(f"input is a broken symbolic link: {display_path(p)}") from None
    except OSError as exc:
        raise InputError(f"cannot read input {display_path(p)}: {exc.strerror or exc}") from None
    if stat.S_ISREG(st.st_mode):
        return [p]
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"input is not a regular file or a folder (FIFO, device or socket): {display_path(p)}")
    pattern = "**/*" if recursive else "*"
    try:
        entries = sorted(p.glob(pattern))
    except OSError as exc:
        raise InputError(f"cannot list folder {display_path(p)}: {exc.strerror or exc}") from None
    files = []
    for f in entries:
        why = _entry_problem(f, recursive)
        if why is None:
            files.append(f)
        elif why and on_skip is not None:
            on_skip(f, why)
    if not files:
        raise InputError(f"no images ({', '.join(INPUT_EXTENSIONS)}) in folder: {display_path(p)}")
    return files


@dataclass
class _Header:
    width: int
    height: int
    orientation: int = 1
    metadata: ImageMetadata = field(default_factory=ImageMetadata)
    format: str | None = None  # Pillow's name of the format ("JPEG", "AVIF", "HEIF", ...)
    animated: bool = False  # several frames (GIF, WebP, APNG): the first is decoded
    mode: str | None = None  # Pillow's mode ("LA": gray + alpha, which OpenCV decodes as BGRA)
    # a TIFF's ExtraSamples (tag 338: 0 unspecified, 1 associated = premultiplied alpha, 2 unassociated alpha; None
    # without the tag) and its bits per sample: OpenCV's reader gets alpha TIFFs wrong in several ways (_tiff_fixes)
    tiff_extra: int | None = None
    tiff_bits: int = 8
    pillow: bool = False  # Pillow opened the header (and so can decode the pixels)
    pages: int = 1  # frames of an animation, pages of a TIFF
    # an 8- or 16-bit gray PNG's tRNS: the gray value that is transparent (OpenCV ignores it for gray images)
    png_gray_transparent: int | None = None


def _tiff_ifd0(data: bytes) -> tuple[str, int, int] | None:
    """(struct byte order, offset of the first IFD, its number of entries) of classic TIFF bytes, else None; the
    entries are 12 bytes each from offset + 2 (tag, type, count, value or offset to the values)."""
    end = {b"II*\0": "<", b"MM\0*": ">"}.get(data[:4])
    if end is None:
        return None
    try:
        (off,) = struct.unpack_from(end + "I", data, 4)
        (n,) = struct.unpack_from(end + "H", data, off)
    except struct.error:
        return None
    return end, off, min(n, 4096)


def _tiff_values(data: bytes, tags: Iterable[int]) -> dict[int, int] | None:
    """The first value of each of ``tags`` (SHORT or LONG) present in a classic TIFF's first IFD; None when the
    bytes are not a readable TIFF."""
    ifd = _tiff_ifd0(data)
    if ifd is None:
        return None
    wanted = set(tags)
    end, off, n = ifd
    found: dict[int, int] = {}
    try:
        for i in range(n):
            tag, typ, count, value = struct.unpack_from(end + "HHI4s", data, off + 2 + 12 * i)
            if tag in wanted and tag in found and tag in (256, 257):
                # decoders keep one of the copies and this check another: the size could not be trusted
                raise InputError("the TIFF states its width or height twice: not a valid TIFF")
            if tag in wanted and typ in (3, 4):
                size = 2 if typ == 3 else 4
                if count * size > 4:  # the values are elsewhere: the first one is enough here
                    (at,) = struct.unpack_from(end + "I", value)
                    value = data[at: at + size]
                found[tag] = struct.unpack_from(end + ("H" if typ == 3 else "I"), value)[0]
    except struct.error:
        return None
    return found


def _tiff_header(data: bytes) -> _Header | None:
    """Size, bits per sample, ExtraSamples, orientation and CMYK-ness from the first IFD of a classic TIFF, for
    files Pillow does not open (RGB float, 16-bit gray + alpha, or over its decompression-bomb limit when
    FACERESTORE_MAX_PIXELS is raised)."""
    found = _tiff_values(data, (256, 257, 258, 262, 274, 338))
    if not found or 256 not in found or 257 not in found:
        return None
    orientation = found.get(274, 1)
    return _Header(found[256], found[257], mode="CMYK" if found.get(262) == 5 else None, format="TIFF",
                   orientation=orientation if 1 <= orientation <= 8 else 1, tiff_extra=found.get(338),
                   tiff_bits=found.get(258, 8), pages=_tiff_pages(data))


def _tiff_pages(data: bytes, limit: int = 10_000) -> int:
    """How many images (IFDs) a classic TIFF's chain of first IFDs holds, counted up to ``limit`` and to the first
    offset that is out of the file or seen before (a loop)."""
    ifd = _tiff_ifd0(data)
    if ifd is None:
        return 1
    end, off, _ = ifd
    seen: set[int] = set()
    while off and off not in seen and len(seen) < limit:
        seen.add(off)
        try:
            (n,) = struct.unpack_from(end + "H", data, off)
            (off,) = struct.unpack_from(end + "I", data, off + 2 + 12 * n)
        except struct.error:
            break
    return max(1, len(seen))


def _decode_tiff_gray_alpha16(data: bytes) -> np.ndarray | None:
    """(H, W, 2) uint16 gray and alpha of a 16-bit gray + alpha TIFF (two samples per pixel), which OpenCV
    decodes as 8-bit gray without its alpha and Pillow cannot open; None for any other TIFF.

    libtiff is asked for what it does read at 16 bits: one gray sample per pixel. The first IFD is rewritten to
    declare the interleaved gray, alpha, gray, alpha ... samples as a gray image twice as wide (tiles twice as wide),
    with no predictor; the bytes of the strips are the same whatever the compression. Horizontal differencing
    (Predictor 2, per sample with a stride of two) is undone here, row by row; tiled files with it are left to
    OpenCV."""
    import cv2

    v = _tiff_values(data, (256, 257, 258, 262, 277, 284, 317, 322))
    if not v or v.get(277) != 2 or v.get(258) != 16 or v.get(262, 1) != 1 or 256 not in v or 257 not in v:
        return None
    predictor = v.get(317, 1)
    if predictor not in (1, 2) or (predictor == 2 and 322 in v) or v.get(284, 1) != 1:  # interleaved samples only
        return None
    w, h = v[256], v[257]
    tags = {256: 2 * w, 277: 1, 258: 16, **({317: 1} if 317 in v else {}), **({322: 2 * v[322]} if 322 in v else {})}
    flat = cv2.imdecode(np.frombuffer(_tiff_with_tags(_tiff_upright_tag(data), tags, drop=(338,)), np.uint8),
                        cv2.IMREAD_UNCHANGED)
    if flat is None or flat.dtype != np.uint16 or flat.shape != (h, 2 * w):
        return None
    arr = flat.reshape(h, w, 2)
    if predictor == 2:  # each sample was stored as its difference to the same sample of the pixel before
        arr = np.cumsum(arr, axis=1, dtype=np.uint16)  # modulo 2^16, as the differences were taken
    return arr


def _is_heif(data: bytes) -> bool:
    """HEVC-coded HEIF bytes (an iPhone's .heic), by the file type box, whatever the file's name."""
    return data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS


@functools.lru_cache(maxsize=1)
def _register_heif() -> None:
    """Let Pillow open HEIF images through the optional pillow-heif package (once); InputError without it.
    pillow-heif applies the container's rotation and mirroring and resets the EXIF orientation to 1."""
    try:
        import pillow_heif
    except ImportError:
        raise InputError('HEIC/HEIF images need the optional pillow-heif package: pip install "facerestore[heif]"'
                         ) from None
    pillow_heif.register_heif_opener()


def _read_header(data: bytes, where: str) -> _Header:
    """Size, EXIF orientation and EXIF of encoded image bytes, from the header only (nothing is decoded)."""
    import io as _io

    from PIL import Image

    if _is_heif(data):
        try:
            _register_heif()
        except InputError as exc:
            raise InputError(f"{exc}{where}") from None
    try:
        with quiet_warnings():
            with Image.open(_io.BytesIO(data)) as im:
                header = _Header(int(im.size[0]), int(im.size[1]), format=im.format,
                                 animated=bool(getattr(im, "is_animated", False)), mode=im.mode, pillow=True,
                                 pages=int(getattr(im, "n_frames", 1) or 1))
                trns = im.info.get("transparency")
                if im.format == "PNG" and data[25:26] == b"\x00" and data[24] in (8, 16) and isinstance(trns, int):
                    header.png_gray_transparent = int(trns)
                if im.format == "TIFF":
                    extra, bits = im.tag_v2.get(338), im.tag_v2.get(258)
                    header.tiff_extra = int(extra[0] if isinstance(extra, tuple) else extra) if extra else (
                        0 if extra is not None else None)
                    header.tiff_bits = int(max(bits) if isinstance(bits, tuple) else bits or 8)
                exif_bytes = None
                try:
                    # PNG: its eXIf chunk wherever it is, else what the base class reads from the chunks before the
                    # pixels (ImageMagick's raw-profile text, XMP); PngImageFile.getexif would decode the image
                    exif = (_png_exif(data) or Image.Image.getexif(im)) if im.format == "PNG" else im.getexif()
                    header.orientation = int(exif.get(_EXIF_ORIENTATION_TAG, 1) or 1)
                    if im.format in ("JPEG", "MPO", "PNG", "WEBP", "AVIF", "HEIF") and len(exif):
                        exif[_EXIF_ORIENTATION_TAG] = 1  # pixels are stored upright from now on
                        exif_bytes = exif.tobytes()
                    elif im.format == "TIFF":
                        exif_bytes = _tiff_camera_exif(exif)
                except Exception:  # malformed EXIF: no orientation, nothing carried over
                    pass
                header.metadata = pillow_metadata(im, exif_bytes)
                dpi = _stated_dpi(im)
                if dpi is not None:
                    stored = im.size
                    if im.format == "TIFF" and 256 in im.tag_v2 and 257 in im.tag_v2:
                        stored = (im.tag_v2[256], im.tag_v2[257])  # Pillow reports a sideways TIFF's size upright
                    inches = (stored[0] / dpi[0], stored[1] / dpi[1])  # the resolution is along the stored axes
                    if header.orientation in (5, 6, 7, 8):  # stored sideways: the upright picture's sides swap
                        inches = inches[::-1]
                    header.metadata = replace(header.metadata, print_size=inches)
                if im.format == "WEBP":
                    header.metadata = replace(header.metadata,
                                              encoding=SourceEncoding("WEBP", lossless=webp_is_lossless(data)))
                return header
    except Image.DecompressionBombError as exc:
        m = re.search(r"\((\d+) pixels\)", str(exc))
        n = int(m.group(1)) if m else 0
        limit = max_pixels()
        if limit is None or n <= limit:  # the limit was raised above Pillow's (or lifted): read the size elsewhere
            tiff = _tiff_header(data)
            if tiff:
                return tiff
            raise InputError(f"cannot read a {n / 1e6:.0f}-megapixel image: Pillow, which reads its header, stops "
                             f"at {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels (only TIFFs that large are "
                             f"read){where}") from None
        raise InputError(f"image is over the limit of {(limit or 0) / 1e6:.1f} megapixels"
                         f"{' (' + str(n) + ' pixels)' if n else ''} (set FACERESTORE_MAX_PIXELS to change it)"
                         f"{where}") from None
    except Exception:
        tiff = _tiff_header(data)
        if tiff:
            return tiff
        if data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis"):
            raise InputError(f"cannot decode AVIF image (corrupt, or Pillow older than 11.3){where}") from None
        raise InputError(f"cannot decode image (corrupt or unsupported format){where}") from None


def _tiff_camera_exif(tiff_ifd: Any) -> bytes | None:
    """An EXIF block of what a TIFF's first IFD (Pillow's ``getexif()``) says of the picture: its descriptive
    tags and its EXIF and GPS sub-IFDs, without the tags that describe the TIFF's own pixels (size, strips,
    compression, orientation), which would be false for any output. None when it says nothing of the kind."""
    from PIL import Image

    fields = _camera_fields(tiff_ifd)
    if not fields:
        return None
    out = Image.Exif()
    for tag, value in fields.items():
        if tag in _EXIF_SUB_IFDS:
            out.get_ifd(tag).update(value)
        else:
            out[tag] = value
    return out.tobytes()


def _camera_fields(ifd: Any) -> dict[int, Any]:
    """What an EXIF or a TIFF's first IFD (a Pillow ``Exif``) says of the picture: its descriptive text tags
    (:data:`_TIFF_DESCRIPTIVE_TAGS`) and its EXIF and GPS sub-IFDs (tag -> dict), without the interoperability
    pointer; never the tags of the file's own pixel layout."""
    fields: dict[int, Any] = {t: ifd[t] for t in _TIFF_DESCRIPTIVE_TAGS if isinstance(ifd.get(t), str)}
    for sub in _EXIF_SUB_IFDS:
        found = {k: v for k, v in ifd.get_ifd(sub).items() if k != _INTEROP_IFD}
        if found:
            fields[sub] = found
    return fields


def pillow_metadata(im: Any, exif: bytes | None = None) -> ImageMetadata:
    """The :class:`ImageMetadata` of an image opened with Pillow (``exif``: its EXIF as it should be written): a
    usable ICC profile (:func:`_usable_icc`), the XMP made fit for an output (:func:`_upright_xmp`) and a JPEG's
    IPTC block."""
    xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")  # JPEG/WebP, PNG's iTXt
    iptc = next((body for kind, body in getattr(im, "applist", [])  # JPEG
                 if kind == "APP13" and body.startswith(_IPTC_SIGNATURE)), None)
    if im.format == "TIFF":
        # the tags' bytes as stored (Photoshop types the IPTC record as 4-byte integers; Pillow's IPTC reader reads
        # the same raw bytes), else their decoded values
        stored = getattr(im.tag_v2, "_tagdata", {})
        iptc = _tiff_photoshop_payload(stored.get(_TIFF_PHOTOSHOP) or im.tag_v2.get(_TIFF_PHOTOSHOP),
                                       stored.get(_TIFF_IPTC) or im.tag_v2.get(_TIFF_IPTC))
    iptc = _photoshop_payload_for_output(iptc) if iptc else None
    encoding = None
    if im.format in JPEG_FORMATS:
        tables = getattr(im, "quantization", None) or {}
        encoding = SourceEncoding("JPEG", jpeg_quality_estimate(tables[0]) if len(tables.get(0, ())) == 64 else None,
                                  _jpeg_subsampling(getattr(im, "layer", [])))
    return ImageMetadata(exif=exif, icc_profile=_usable_icc(im.info.get("icc_profile")), xmp=_upright_xmp(xmp),
                         iptc=iptc, encoding=encoding)


def _riff_chunks(data: bytes, at: int = 12, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(kind, offset of the body, body size) of each chunk of a RIFF file (a WebP) from ``at`` (12: after the
    RIFF header) to ``end``; chunks are padded to an even size."""
    end = len(data) if end is None else min(end, len(data))
    while at + 8 <= end:
        kind, (size,) = data[at: at + 4], struct.unpack("<I", data[at + 4: at + 8])
        yield kind, at + 8, size
        at += 8 + size + (size & 1)


def webp_is_lossless(data: bytes) -> bool:
    """Whether WebP bytes hold lossless (VP8L) image data: the first image chunk of the RIFF (an animation's
    first frame)."""
    for kind, body, size in _riff_chunks(data):
        if kind == b"ANMF":  # an animation frame: its image chunks follow a 16-byte frame header
            return any(k == b"VP8L" for k, _, _ in _riff_chunks(data, body + 16, body + size)
                       if k in (b"VP8 ", b"VP8L"))
        if kind in (b"VP8 ", b"VP8L"):
            return kind == b"VP8L"
    return False


# the JPEG standard's example luminance table (ITU-T T.81 Annex K, natural order), which IJG libjpeg (and most
# encoders: OpenCV, Pillow, Photoshop's "save for web" aside) scales by the quality setting
_JPEG_LUMA_BASE = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
                   14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
                   18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
                   49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)
_JPEG_SUBSAMPLING = {(1, 1): "4:4:4", (2, 1): "4:2:2", (2, 2): "4:2:0", (1, 2): "4:4:0", (4, 1): "4:1:1"}


def ijg_luma_table(quality: int) -> tuple[int, ...]:
    """The luminance quantisation table IJG libjpeg writes at ``quality`` (1-100), natural order (64 values)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return tuple(min(max((b * scale + 50) // 100, 1), 255) for b in _JPEG_LUMA_BASE)


def jpeg_quality_estimate(luma_table: Sequence[int]) -> int:
    """The IJG quality (1-100) whose luminance table is nearest ``luma_table`` (64 values, natural order, as
    Pillow's ``im.quantization[0]``): exact for files from libjpeg-based encoders, the closest equivalent for a
    camera's own tables. Ties go to the higher quality."""
    table = tuple(int(v) for v in luma_table)
    return min(range(100, 0, -1), key=lambda q: sum(abs(a - b) for a, b in zip(table, ijg_luma_table(q))))


def _jpeg_subsampling(layers: Sequence[tuple[Any, ...]]) -> str | None:
    """"4:2:0" etc. from Pillow's ``im.layer`` ((id, h, v, table) per component) of a colour (YCbCr, RGB, CMYK)
    JPEG; None for gray or unusual layouts."""
    if len(layers) not in (3, 4) or any(tuple(c[1:3]) != (1, 1) for c in layers[1:]):
        return None
    return _JPEG_SUBSAMPLING.get((int(layers[0][1]), int(layers[0][2])))


def _usable_icc(profile: Any) -> bytes | None:
    """An embedded ICC profile worth carrying into the outputs: one whose data colour space (header bytes 16-19)
    is RGB or gray, the kinds of pixels we write. A CMYK JPEG's profile (its pixels are converted to RGB on reading)
    or a truncated profile is dropped: embedded in an RGB file it would mislead colour-managed viewers."""
    if not isinstance(profile, bytes) or len(profile) < 132 or profile[36:40] != b"acsp":
        return None
    return profile if profile[16:20] in (b"RGB ", b"GRAY") else None


_IPTC_SIGNATURE = b"Photoshop 3.0\0"
_TIFF_IPTC, _TIFF_PHOTOSHOP = 33723, 34377  # a TIFF's IPTC-NAA record and its Photoshop image resources
_PS_IPTC = 0x0404  # the image resource that holds the IPTC record
# the image resources an output keeps: what the photo's story is (the IPTC record and its digest, the copyright
# flag, URLs). The others are Photoshop's editing state, and many describe the input's pixels, so would be false
# for a restored output: the resolution (Photoshop reads it before the EXIF's), thumbnails (the unrestored
# picture), guides and slices (in input pixels), alpha channel names (channels the output lacks)
_PS_STORY_RESOURCES = (0x0404, 0x0425, 0x040A, 0x040B, 0x041E)


def _photoshop_resources(blocks: bytes) -> Iterator[tuple[int, bytes]]:
    """(resource id, the whole resource's bytes) of Photoshop image resource blocks ("8BIM", id, Pascal name
    padded to even, size, data padded to even), up to the first malformed one."""
    at = 0
    while at + 12 <= len(blocks) and blocks[at: at + 4] == b"8BIM":
        (rid,) = struct.unpack_from(">H", blocks, at + 4)
        data_at, size = _resource_data_span(blocks, at)
        end = data_at + size + (size & 1)
        if data_at > len(blocks) or end > len(blocks) + (size & 1):  # whole data; only the last padding may lack
            return
        yield rid, blocks[at: end]
        at = end


def _resource_data_span(blocks: bytes, at: int) -> tuple[int, int]:
    """(offset of the data, its size in bytes) of the image resource block at ``at`` (after "8BIM", the id and the
    Pascal name padded to even, the 4-byte size); the offset is past the end when the block is cut short."""
    name_len = blocks[at + 6]
    size_at = at + 6 + name_len + 1 + ((name_len + 1) & 1)
    if size_at + 4 > len(blocks):
        return len(blocks) + 1, 0
    (size,) = struct.unpack_from(">I", blocks, size_at)
    return size_at + 4, size


def _photoshop_payload_for_output(payload: bytes) -> bytes | None:
    """A "Photoshop 3.0" payload (a JPEG's APP13) with only the resources of the photo's story
    (:data:`_PS_STORY_RESOURCES`: IPTC captions and credits, copyright flag, URLs); None when it has none."""
    kept = [block for rid, block in _photoshop_resources(payload[len(_IPTC_SIGNATURE):])
            if rid in _PS_STORY_RESOURCES]
    return _IPTC_SIGNATURE + b"".join(kept) if kept else None


def _tiff_photoshop_payload(resources: Any, iptc: Any) -> bytes | None:
    """A TIFF's Photoshop image resources (tag 34377) or, without them, its bare IPTC-NAA record (tag 33723) as a
    "Photoshop 3.0" payload, the form JPEG outputs carry; each given as its stored bytes (or byte values)."""
    def raw(value: Any) -> bytes | None:
        if isinstance(value, bytes):
            return value
        if isinstance(value, tuple) and value and all(isinstance(v, int) and 0 <= v < 256 for v in value):
            return bytes(value)
        return None

    blocks = raw(resources)
    if blocks and blocks.startswith(b"8BIM"):
        return _IPTC_SIGNATURE + blocks
    record = raw(iptc)
    if record:
        return _IPTC_SIGNATURE + b"8BIM" + struct.pack(">HHI", _PS_IPTC, 0, len(record)) + record + b"\0" * (
            len(record) & 1)
    return None
_XMP_ORIENTATION = (re.compile(rb"(tiff:Orientation\s*=\s*[\"'])\s*\d\s*([\"'])"),
                    re.compile(rb"(<tiff:Orientation>)\s*\d\s*(</tiff:Orientation>)"))


# what describes data appended to the original file (a Motion Photo's video, an Ultra HDR gain map), which an output
# does not carry: Google's camera and container properties, the gain map's version, the container's item directory
_XMP_APPENDED = (re.compile(rb"\s(?:GCamera|hdrgm|Container|Item):\w+\s*=\s*(?:\"[^\"]*\"|'[^']*')"),
                 re.compile(rb"<(GCamera|hdrgm|Container):(\w+)\b[^>]*?(?:/>|>.*?</\1:\2\s*>)", re.S))


def _upright_xmp(xmp: Any) -> bytes | None:
    """An XMP packet (bytes or str) for the output: its tiff:Orientation set to 1, as the EXIF's is (the pixels are
    written upright, and a viewer that reads the XMP's orientation would turn them again), and without the
    properties that point at data appended to the original (a Pixel's Motion Photo video, an Ultra HDR gain map:
    photo apps would look for them past the end of the restored JPEG)."""
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    if not isinstance(xmp, bytes) or not xmp.strip():
        return None
    for pattern in _XMP_ORIENTATION:
        xmp = pattern.sub(rb"\g<1>1\g<2>", xmp)
    for pattern in _XMP_APPENDED:
        xmp = pattern.sub(b"", xmp)
    return xmp


def _apply_exif_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Rotate/flip (H, W, ...) so the image displays upright (EXIF orientation values 1-8)."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1, :]
    if orientation == 5:
        return np.swapaxes(arr, 0, 1)
    if orientation == 6:
        return np.rot90(arr, k=-1)
    if orientation == 7:  # transverse: mirror across the anti-diagonal
        return np.swapaxes(arr, 0, 1)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(arr, k=1)
    return arr


def decode_image(data: bytes, path: Path | None = None) -> LoadedImage:
    """Decode encoded image bytes (PNG/JPEG/TIFF/...) into a LoadedImage.

    The size is read from the header first and checked against :func:`max_pixels`; float images with NaN or
    infinite pixels are refused; running out of memory is an InputError for this image only.
    """
    import cv2

    where = f": {display_path(path)}" if path else ""
    if not data:
        raise InputError(f"cannot decode image (empty file){where}")
    header = _read_header(data, where)
    if header.format == "TIFF" and (_tiff_values(data, (254,)) or {}).get(254, 0) & 1:
        # NewSubFileType "reduced-resolution image" first: a camera raw file's preview (DNG, NEF, ARW, ...)
        raise InputError(f"the file's first image is a reduced-resolution preview, as in camera raw files (DNG, NEF, "
                         f"ARW...), which are not read: develop the photo to TIFF or JPEG first{where}")
    try:
        check_pixels(header.width, header.height)
    except InputError as exc:
        raise InputError(f"{exc}{where}") from None
    try:
        # (a multi-page TIFF is not an animation: OpenCV reads its first page at its own bit depth)
        by_pillow = (header.format in ("AVIF", "HEIF", "GIF") or (header.animated and header.format != "TIFF")
                     or _tiff_needs_pillow(header))
        gray_alpha16 = None if by_pillow or header.format != "TIFF" else _decode_tiff_gray_alpha16(data)
        if by_pillow:  # OpenCV cannot read these (all frames), or reads them wrong
            arr = _decode_with_pillow(_for_decoder(data, header))
        elif gray_alpha16 is not None:  # an "unspecified" second sample (ExtraSamples 0) is not alpha
            arr = gray_alpha16[:, :, 0] if header.tiff_extra == 0 else gray_alpha16
        else:
            arr = cv2.imdecode(np.frombuffer(_for_decoder(data, header), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except MemoryError:
        raise InputError(f"not enough memory to decode a {header.width}x{header.height} image{where}") from None
    except cv2.error as exc:
        raise InputError(f"cannot decode image ({str(exc).strip().splitlines()[-1]}){where}") from None
    if arr is None:
        raise InputError(f"cannot decode image ({_why_undecodable(data, header)}){where}")
    if (arr.shape[1], arr.shape[0]) != (header.width, header.height) and not (
            header.orientation in (5, 6, 7, 8) and (arr.shape[0], arr.shape[1]) == (header.width, header.height)):
        try:  # the decoder read another size than the header said: the limit applies to what was decoded
            check_pixels(arr.shape[1], arr.shape[0])
        except InputError as exc:
            raise InputError(f"{exc}{where}") from None
    if header.png_gray_transparent is not None and arr.ndim == 2:  # the gray value tRNS marks is transparent
        opaque = np.iinfo(arr.dtype).max if arr.dtype.kind == "u" else 1
        arr = np.dstack([arr, np.where(arr == header.png_gray_transparent, 0, opaque).astype(arr.dtype)])
    # a PNG's IHDR colour type 4 is gray + alpha (Pillow says "RGBA" for 16-bit ones)
    png_gray_alpha = data[:8] == _PNG_SIGNATURE and data[25:26] == b"\x04"
    if (header.mode == "LA" or png_gray_alpha) and arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, [0, 3]]  # gray + alpha stays gray (OpenCV expands it to BGRA with equal colours)
    premultiplied = gray_alpha16 is not None and header.tiff_extra == 1
    if (header.format == "TIFF" or not header.pillow) and not by_pillow and arr.ndim == 3 and arr.shape[2] == 4:
        if header.mode == "CMYK" or header.tiff_extra == 0:  # OpenCV adds an opaque alpha to CMYK; 0 is no alpha
            arr = arr[:, :, :3]
        # associated alpha is stored premultiplied; OpenCV premultiplies 8-bit unassociated alpha itself (read
        # here only when Pillow cannot open the file: the last bits of faint pixels are lost)
        premultiplied = header.tiff_extra == 1 or (header.tiff_extra == 2 and header.tiff_bits == 8)
    if arr.dtype == np.uint8:
        depth, scale = 8, 255.0
    elif arr.dtype == np.uint16:
        depth, scale = 16, 65535.0
    elif arr.dtype in (np.float32, np.float64):
        depth, scale = 16, 1.0
        if not np.isfinite(arr).all():
            raise InputError(f"image has NaN or infinite pixel values{where}")
    else:
        raise InputError(f"unsupported pixel type {arr.dtype}{where}")
    maxval = _netpbm_maxval(data) or _jpeg2000_maxval(data)
    ascii_8bit = data[1:2] in (b"2", b"3") and maxval is not None and maxval < 256  # OpenCV scaled them to 0..255
    if maxval is not None and arr.dtype in (np.uint8, np.uint16) and not ascii_8bit:
        scale = float(maxval)  # OpenCV keeps the samples as stored, 0..maxval
    try:
        return _to_loaded(arr, depth, scale, header, path, premultiplied=premultiplied)
    except MemoryError:
        raise InputError(f"not enough memory for a {header.width}x{header.height} image{where}") from None


def _netpbm_maxval(data: bytes) -> int | None:
    """The maximum sample value a Netpbm graymap or pixmap (P2, P3, P5, P6) declares when it is neither 255 nor 65535
    (a 12-bit scan says 4095), else None."""
    if data[:1] != b"P" or data[1:2] not in (b"2", b"3", b"5", b"6"):
        return None
    tokens: list[bytes] = []
    for line in data[2:512].split(b"\n"):
        tokens += line.split(b"#", 1)[0].split()
        if len(tokens) >= 3:
            break
    try:
        maxval = int(tokens[2])
    except (IndexError, ValueError):
        return None
    return maxval if 0 < maxval < 65536 and maxval not in (255, 65535) else None


def _jpeg2000_maxval(data: bytes) -> int | None:
    """2^bits - 1 for a JPEG 2000 codestream (.j2k, or inside a .jp2) of 9 to 15 bits per sample (a 12-bit
    scan), which OpenCV decodes into 16-bit samples without scaling them; else None. The bit depth is the largest
    component's in the SIZ marker segment (Ssiz: bits - 1, its top bit the sign)."""
    if data[:4] != b"\xff\x4f\xff\x51" and data[:12] != b"\0\0\0\x0cjP  \r\n\x87\n":
        return None
    at = data.find(b"\xff\x4f\xff\x51")  # SOC then SIZ: the codestream's start
    if at < 0 or at + 44 > len(data):
        return None
    (components,) = struct.unpack_from(">H", data, at + 40)
    depths = [(data[at + 42 + 3 * c] & 0x7F) + 1 for c in range(components) if at + 42 + 3 * c < len(data)]
    bits = max(depths, default=0)
    return (1 << bits) - 1 if 8 < bits < 16 else None


def _why_undecodable(data: bytes, header: _Header) -> str:
    """The likeliest reason a file whose header reads fine has no decodable pixels: a JPEG or PNG that stops
    before its end marker (an interrupted download or copy) is truncated, not corrupt."""
    tail = data[-64:].rstrip(b"\0")  # some writers pad the end
    if header.format in JPEG_FORMATS and not tail.endswith(b"\xff\xd9"):
        return f"truncated JPEG: the file ends inside its image data ({len(data)} bytes)"
    if header.format == "PNG" and b"IEND" not in tail:
        return f"truncated PNG: the file ends inside its image data ({len(data)} bytes)"
    if header.format == "TIFF" and header.mode == "CMYK":
        return "CMYK TIFF with more than 8 bits per sample is not supported"
    return "corrupt or unsupported format"


def _stated_dpi(im: Any) -> tuple[float, float] | None:
    """The resolution (x, y dots per inch) an image opened with Pillow states, or None when it states none:
    Pillow fills ``info["dpi"]`` in for files that say nothing (1 for a TIFF without XResolution, 72 for a
    JPEG with EXIF but no resolution in it), which would give every such photo a made-up print size."""
    dpi = im.info.get("dpi")
    try:
        if not (isinstance(dpi, tuple) and len(dpi) == 2 and all(1 <= float(d) <= 1e6 for d in dpi)):
            return None
        if im.format == "TIFF" and _X_RESOLUTION not in im.tag_v2:
            return None
        if im.format in JPEG_FORMATS and im.info.get("jfif_unit") not in (1, 2) and _X_RESOLUTION not in im.getexif():
            return None
    except Exception:  # malformed tags: no print size
        return None
    # PNG states whole pixels per metre: 300 dpi reads back as 299.9994
    return tuple(round(d) if abs(d - round(d)) < 0.01 else float(d) for d in dpi)  # type: ignore[return-value]


def _tiff_needs_pillow(header: _Header) -> bool:
    """Whether a TIFF is one OpenCV's reader gets wrong and Pillow reads right: 8-bit with unassociated alpha
    (OpenCV premultiplies the colours, darkening every semi-transparent pixel) and 8-bit gray + alpha (OpenCV drops
    the alpha). Pillow also divides associated (premultiplied) 8-bit alpha out on reading."""
    return header.pillow and header.format == "TIFF" and header.tiff_bits == 8 and (
        header.tiff_extra == 2 or header.mode in ("LA", "La"))


def _for_decoder(data: bytes, header: _Header) -> bytes:
    """The bytes OpenCV or Pillow decodes: a PNG without its iCCP chunk, a TIFF with its orientation tag set to 1
    (libtiff's RGBA reader, used by both, applies the tag itself, and OpenCV fails on the transposing ones; every
    format's orientation is applied once, by _apply_exif_orientation)."""
    if header.orientation != 1 and data[:4] in (b"II*\0", b"MM\0*"):
        return _tiff_upright_tag(data)
    return _without_png_iccp(data)


def _tiff_upright_tag(data: bytes) -> bytes:
    """A copy of TIFF bytes whose first IFD's Orientation (tag 274) says 1; other bytes unchanged."""
    ifd = _tiff_ifd0(data)
    if ifd is None:
        return data
    end, off, n = ifd
    try:
        for i in range(n):
            at = off + 2 + 12 * i
            tag, typ = struct.unpack_from(end + "HH", data, at)
            if tag == 274 and typ == 3:
                return data[:at + 8] + struct.pack(end + "HH", 1, 0) + data[at + 12:]
    except struct.error:
        pass
    return data


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(type, start, end) of each chunk body of PNG bytes, read from the length fields alone (nothing decoded)."""
    at = 8
    while at + 8 <= len(data):
        (length,), kind = struct.unpack(">I", data[at: at + 4]), data[at + 4: at + 8]
        if at + 12 + length > len(data):
            return
        yield kind, at + 8, at + 8 + length
        if kind == b"IEND":
            return
        at += 12 + length


def _png_exif(data: bytes) -> Any:
    """A PNG's eXIf chunk as a Pillow Exif, before or after the image data; None without one. Pillow's own
    ``getexif`` decodes the whole image to look past IDAT: the pixel limit must be checked before that."""
    from PIL import Image

    for kind, start, end in _png_chunks(data):
        if kind == b"eXIf":
            exif = Image.Exif()
            exif.load(data[start:end])
            return exif
    return None


def _without_png_iccp(data: bytes) -> bytes:
    """PNG bytes without their iCCP chunk (others unchanged): the profile is read through Pillow, and libpng,
    inside OpenCV, prints warnings about common flawed profiles ("known incorrect sRGB profile", an RGB profile in
    a gray PNG) straight onto stderr."""
    if data[:8] != _PNG_SIGNATURE or b"iCCP" not in data[:1 << 20]:
        return data
    for kind, start, end in _png_chunks(data):
        if kind == b"iCCP":  # the chunk is its 8-byte length and type, the body, and a 4-byte CRC
            return data[:start - 8] + data[end + 4:]
        if kind in (b"IDAT", b"IEND"):  # iCCP must come before the image data
            break
    return data


def _decode_with_pillow(data: bytes) -> np.ndarray | None:
    """Pixels of an image only Pillow decodes, laid out as OpenCV's ``imdecode`` gives them (gray (H, W), gray +
    alpha (H, W, 2), BGR (H, W, 3) or BGRA (H, W, 4); uint8), as stored: the EXIF orientation is applied later.
    None when the data cannot be decoded."""
    import io as _io

    from PIL import Image

    try:
        with Image.open(_io.BytesIO(data)) as im:
            if im.mode in ("I;16", "I;16B", "I;16L") and not im.has_transparency_data:
                return np.ascontiguousarray(np.asarray(im).astype(np.uint16))  # 16-bit gray, kept at 16 bits
            if im.mode == "La":  # premultiplied gray + alpha (a TIFF's associated alpha)
                im = im.convert("LA")
            elif im.mode not in ("L", "LA", "RGB", "RGBA"):
                im = im.convert("RGBA" if im.has_transparency_data else "RGB")
            arr = np.asarray(im)
    except MemoryError:
        raise
    except Exception:
        return None
    if arr.ndim == 3 and arr.shape[2] >= 3:
        arr = arr[:, :, [2, 1, 0, *range(3, arr.shape[2])]]  # RGB(A) -> BGR(A)
    return np.ascontiguousarray(arr)


def _to_loaded(arr: np.ndarray, depth: int, scale: float, header: _Header, path: Path | None, *,
               premultiplied: bool = False) -> LoadedImage:
    # memory matters here (a 48 MP photo is 576 MB per float copy): reorder channels on the decoded integers,
    # then make exactly one float32 array and scale it in place
    arr = _apply_exif_orientation(arr, header.orientation)
    alpha = None
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        gray, planes = True, arr[:, :, None][:, :, [0, 0, 0]]
    elif arr.shape[2] == 2:  # gray + alpha
        gray, planes, alpha = True, arr[:, :, [0, 0, 0]], arr[:, :, 1]
    else:
        gray = False
        planes = arr[:, :, 2::-1]  # OpenCV decodes to BGR(A)
        if arr.shape[2] == 4:
            alpha = arr[:, :, 3]
    rgb = np.empty(planes.shape, np.float32)
    np.divide(planes, np.float32(scale), out=rgb, casting="unsafe")
    if scale == 1.0:  # float input: clip in place (integers are in range by construction)
        np.clip(rgb, 0.0, 1.0, out=rgb)
    if alpha is not None:
        alpha = np.clip(alpha.astype(np.float32) / np.float32(scale), 0.0, 1.0)
        if premultiplied:  # stored as colour x alpha (a TIFF's associated alpha): straight colours, as PNG holds them
            np.divide(rgb, alpha[:, :, None], out=rgb, where=alpha[:, :, None] > 0)
            np.clip(rgb, 0.0, 1.0, out=rgb)
    meta = replace(header.metadata, icc_profile=header.metadata.icc_for(gray))
    return LoadedImage(rgb=rgb, alpha=alpha, bit_depth=depth, is_gray=gray, path=path, metadata=meta,
                       pages=header.pages if header.format == "TIFF" else 1)


def read_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of a regular file (never blocks on a FIFO or reads a device); InputError when it cannot."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise InputError(f"not a file: {display_path(p)} (not found)") from None
    except OSError as exc:
        raise InputError(f"cannot read {display_path(p)}: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(f"not a file: {display_path(p)} (not a regular file)")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    except OSError as exc:
        raise InputError(f"cannot read {display_path(p)}: {exc.strerror or exc}") from None
    except MemoryError:
        raise InputError(f"not enough memory to read {display_path(p)}") from None
    finally:
        os.close(fd)


def read_image(path: str | os.PathLike) -> LoadedImage:
    """Read an image file; raises InputError with a one-line reason when it cannot."""
    p = Path(path)
    return decode_image(read_bytes(p), p)


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 1] (alpha dropped, gray replicated, EXIF orientation applied)."""
    return read_image(path).rgb


def to_tensor(image: np.ndarray) -> Any:
    """(H, W, C) or a list of same-size arrays in [0, 1] -> float32 tensor (B, C, H, W)."""
    import torch

    arr = np.stack(image) if isinstance(image, (list, tuple)) else image[None]
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2))).float()


def from_tensor(t: Any) -> np.ndarray:
    """Tensor (C, H, W) or (1, C, H, W) in [0, 1] -> float32 (H, W, C) numpy array."""
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(f"from_tensor expects one image, got batch of {t.shape[0]}")
        t = t[0]
    return t.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def quantize(image: np.ndarray, bit_depth: int = 8) -> np.ndarray:
    """Float [0, 1] -> uint8 / uint16 with round-half-up, the convention of PIL and OpenCV."""
    if bit_depth == 8:
        return np.clip(np.floor(image * 255.0 + 0.5), 0, 255).astype(np.uint8)
    if bit_depth == 16:
        return np.clip(np.floor(image * 65535.0 + 0.5), 0, 65535).astype(np.uint16)
    raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")


def encode_image(
    rgb: np.ndarray,
    ext: str = ".png",
    *,
    alpha: np.ndarray | None = None,
    bit_depth: int = 8,
    gray: bool = False,
    jpeg_quality: int = 95,
    jpeg_subsampling: str | None = None,
    webp_lossless: bool = True,
) -> bytes:
    """Encode (H, W, 3) RGB in [0, 1] (or uint8) to file bytes of the format named by ``ext``.

    JPEG: ``jpeg_quality`` 1-100 and ``jpeg_subsampling`` ("4:4:4", "4:2:2", "4:2:0", "4:4:0", "4:1:1"; None:
    OpenCV's 4:2:0). WebP: lossless, or lossy at :data:`LOSSY_WEBP_QUALITY` when ``webp_lossless`` is False."""
    import cv2

    ext = ext.lower() if ext.startswith(".") else "." + ext.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise InputError(f"unsupported output format {ext!r}; use one of {', '.join(IMAGE_EXTENSIONS)}")
    if rgb.dtype == np.uint8:
        rgb = rgb.astype(np.float32) / 255.0
    if ext in (".jpg", ".jpeg", ".bmp", ".webp"):
        bit_depth = 8  # these formats store 8 bits per channel
        if ext in (".jpg", ".jpeg", ".bmp"):
            alpha = None
    if gray:
        chans = [luma(rgb)]
    else:
        chans = [rgb[:, :, 2], rgb[:, :, 1], rgb[:, :, 0]]
    if alpha is not None:
        chans.append(alpha)
    # quantised channel by channel into the integer array: no full-size float temporaries (large photos)
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    arr = np.empty((*rgb.shape[:2], len(chans)), dtype)
    for i, c in enumerate(chans):
        arr[:, :, i] = quantize(c, bit_depth)
    if arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 2:  # gray + alpha, which OpenCV's encoders do not take
        if ext == ".png" and dtype == np.uint8:  # PNG's own gray-alpha type (colour type 4), by Pillow
            import io as _io

            from PIL import Image

            out = _io.BytesIO()
            Image.fromarray(np.ascontiguousarray(arr), "LA").save(out, format="PNG")
            return out.getvalue()
        if ext == ".png":  # 16-bit: Pillow cannot write it
            return _png_gray_alpha(arr)
        arr = arr[:, :, [0, 0, 0, 1]]  # the other formats: BGRA, equal colours
    params: list[int] = []
    if ext in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
        if jpeg_subsampling is not None:
            h, v = next(k for k, name in _JPEG_SUBSAMPLING.items() if name == jpeg_subsampling)
            params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, (h << 20) | (v << 16) | 0x1111]  # luma h, v; chroma 1x1
    elif ext == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, 101 if webp_lossless else LOSSY_WEBP_QUALITY]  # over 100: lossless
    ok, buf = cv2.imencode(ext, arr, params)
    if not ok:
        raise InputError(f"could not encode image as {ext}")
    if ext in (".tif", ".tiff") and arr.ndim == 3 and arr.shape[2] == 4:
        return _tiff_with_alpha_declared(buf.tobytes())
    return buf.tobytes()


def _png_gray_alpha(arr: np.ndarray) -> bytes:
    """A PNG of (H, W, 2) uint16 (or uint8) gray + alpha (colour type 4), which neither OpenCV nor Pillow writes
    at 16 bits: IHDR, one zlib stream of unfiltered rows (big-endian samples), IEND."""
    h, w = arr.shape[:2]
    depth = arr.dtype.itemsize * 8
    rows = np.ascontiguousarray(arr, dtype=">u2" if depth == 16 else np.uint8).reshape(h, -1).view(np.uint8)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1)  # filter type 0 ("None") before each row
    ihdr = struct.pack(">IIBBBBB", w, h, depth, 4, 0, 0, 0)
    return (_PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
            + _png_chunk(b"IEND", b""))


def _tiff_with_alpha_declared(data: bytes) -> bytes:
    """A TIFF from OpenCV with 4 samples per pixel, its fourth declared as unassociated (straight) alpha
    (ExtraSamples = 2). OpenCV writes no ExtraSamples tag, so libtiff-based readers (Photoshop, GIMP, libvips) see
    an unspecified extra channel, not transparency."""
    found = _tiff_values(data, (338,))
    if found is None or 338 in found:
        return data
    return _tiff_with_tags(data, {338: 2})  # SHORT, "unassociated alpha"


def _tiff_with_tags(data: bytes, tags: dict[int, Any], drop: Iterable[int] = ()) -> bytes:
    """Classic TIFF bytes whose first IFD also holds ``tags`` (tag -> value as Pillow's TIFF writer takes it, typed
    by its tag table; a dict is a sub-IFD such as EXIF's), replacing tags of the same number, and lacks ``drop``.

    Pillow encodes the new entries and their values for where they land, the end of the file; the first IFD is
    copied after them with the entries merged (sorted, as TIFF requires) and the header points at the copy. The old
    IFD stays where it was, unreferenced, so every value stored elsewhere keeps its offset (strips included)."""
    found = _tiff_ifd0(data)
    if found is None or not tags:
        return data
    from PIL import TiffImagePlugin

    end, ifd, n = found
    start = len(data) + len(data) % 2  # IFDs and values start on a word boundary
    extra = TiffImagePlugin.ImageFileDirectory_v2(ifh=data[:4] + b"\0\0\0\0")
    for tag, value in tags.items():
        extra[tag] = value
    blob = extra.tobytes(start)  # an IFD of the new entries (never referenced), then their values
    blob += b"\0" * (len(blob) % 2)
    entries = {struct.unpack_from(end + "H", data, ifd + 2 + 12 * i)[0]: data[ifd + 2 + 12 * i: ifd + 14 + 12 * i]
               for i in range(n)}
    (m,) = struct.unpack_from(end + "H", blob)
    entries.update({struct.unpack_from(end + "H", blob, 2 + 12 * i)[0]: blob[2 + 12 * i: 14 + 12 * i]
                    for i in range(m)})
    for tag in drop:
        entries.pop(tag, None)
    next_ifd = data[ifd + 2 + 12 * n: ifd + 6 + 12 * n]
    new_ifd = struct.pack(end + "H", len(entries)) + b"".join(entries[t] for t in sorted(entries)) + next_ifd
    out = bytearray(data)  # the pixel data is copied here and once more into the bytes returned
    out += b"\0" * (start - len(data)) + blob + new_ifd
    out[4:8] = struct.pack(end + "I", start + len(blob))
    return bytes(out)


# what an EXIF's first IFD says of the picture that a TIFF keeps in its own first IFD: ImageDescription, Make,
# Model, DateTime, Artist, Copyright (the EXIF and GPS sub-IFDs go in whole)
_TIFF_DESCRIPTIVE_TAGS = (270, 271, 272, 306, 315, 33432)
_EXIF_SUB_IFDS = (0x8769, 0x8825)
_INTEROP_IFD = 0xA005  # a pointer inside the EXIF sub-IFD whose target is not carried


def _tiff_with_metadata(data: bytes, icc: bytes | None, exif: bytes | None, xmp: bytes | None,
                        dpi: tuple[float, float] | None, iptc: bytes | None = None) -> bytes:
    """TIFF bytes with the ICC profile (tag 34675), XMP (700), resolution in dots per inch (282, 283, 296), the
    Photoshop image resources of ``iptc`` (a "Photoshop 3.0" payload: tag 34377, and its IPTC record as IPTC-NAA,
    33723, where most readers look) and the EXIF's camera fields (its descriptive first-IFD tags and its EXIF and
    GPS sub-IFDs) in the first IFD. An EXIF Pillow cannot write again is left out rather than failing the output."""
    tags: dict[int, Any] = {}
    if icc:
        tags[34675] = icc
    if xmp:
        tags[700] = xmp
    if iptc and iptc.startswith(_IPTC_SIGNATURE):
        blocks = iptc[len(_IPTC_SIGNATURE):]
        if blocks:
            tags[_TIFF_PHOTOSHOP] = blocks
        record = next((block for rid, block in _photoshop_resources(blocks) if rid == _PS_IPTC), None)
        if record is not None:
            data_at, size = _resource_data_span(record, 0)
            tags[_TIFF_IPTC] = record[data_at: data_at + size]
    if dpi:
        tags.update({282: float(dpi[0]), 283: float(dpi[1]), 296: 2})
    camera: dict[int, Any] = {}
    if exif:
        try:
            from PIL import Image

            parsed = Image.Exif()
            parsed.load(exif)
            camera = _camera_fields(parsed)
        except Exception:
            camera = {}
    for attempt in ({**tags, **camera}, tags):
        try:
            return _tiff_with_tags(data, attempt)
        except Exception:  # an EXIF value Pillow cannot encode: the output goes without the camera fields
            continue
    return data


WEBP_MAX_SIDE = 16383  # the WebP format's limit on either side, in pixels


OUTPUT_FORMATS = ("auto", "png", "jpg", "tif")  # `restore --ext` and the web page's format choices


def output_extension(name: str | os.PathLike, has_alpha: bool, choice: str = "auto",
                     size: tuple[int, int] | None = None) -> str:
    """The extension of a restored photo (``restore --ext``, the web page's format): ``choice`` "png", "jpg" or
    "tif" as asked (JPEG drops an alpha channel); "auto": a WebP input's own extension (lossy stays lossy, lossless
    lossless: :func:`write_image`; WebP holds alpha too), a TIFF input's own (a scan stays a lossless TIFF at its
    bit depth, with its colour profile, resolution, XMP and camera fields), PNG for anything else with
    transparency, a JPEG or PNG input's own extension as spelt (``.JPG`` stays ``.JPG``), JPEG for the phone formats
    read through Pillow (HEIC/HEIF/AVIF: lossy photos, for which a PNG would be several times larger), PNG for the
    rest (BMP: lossless; GIF: its 256 colours would band a restored face). ``size`` (width, height) of the output:
    a WebP output over :data:`WEBP_MAX_SIDE` pixels on a side becomes a PNG (the format cannot hold it)."""
    if choice != "auto":
        return "." + choice
    suffix = Path(name).suffix
    if suffix.lower() == ".webp" and (size is None or max(size) <= WEBP_MAX_SIDE):
        return suffix
    if suffix.lower() in (".tif", ".tiff"):
        return suffix
    if has_alpha:
        return ".png"
    if suffix.lower() in (".jpg", ".jpeg", ".png"):
        return suffix
    return ".jpg" if suffix.lower() in PHONE_EXTENSIONS else ".png"


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    """The process umask (read once: os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The permission bits a plain ``open()`` gives a new file (0666 & ~umask), for files made with
    ``tempfile.mkstemp`` (which creates them 0600) and then renamed into place."""
    return 0o666 & ~_umask()


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_output_file(path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Refuse (``OutputError``) an output file path that would replace an input (symlinks and hard links
    included), or that is a symbolic link, folder, device or FIFO, or whose file name is too long.
    Nothing is created."""
    p = Path(path)
    if len(os.fsencode(p.name)) > NAME_MAX:
        raise OutputError(f"output file name is longer than {NAME_MAX} bytes: {display_path(p)}")
    for q in inputs:
        if same_file(p, q):
            raise OutputError(f"refusing to overwrite input file {display_path(q)}")
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return p
    except OSError as exc:
        raise OutputError(f"cannot write {display_path(p)}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"refusing to write {display_path(p)}: it is {_kind(st.st_mode)}, not a regular file")
    return p


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name the same existing file (after symlinks; hard links included)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        try:
            return Path(a).resolve() == Path(b).resolve()
        except (OSError, RuntimeError):
            return False


def check_output_dir(path: str | os.PathLike) -> Path:
    """Create folder ``path`` (and parents) and check that files can be created in it: ``OutputError`` with
    one line naming the folder otherwise. Call it before any work."""
    d = Path(path)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"output is not a folder: {display_path(d)}") from None
    except OSError as exc:
        raise OutputError(f"cannot create output folder {display_path(d)}: {exc.strerror or exc}") from None
    if not d.is_dir():
        raise OutputError(f"output is not a folder: {display_path(d)}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".facerestore-probe.", suffix=".tmp", dir=d)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write into output folder {display_path(d)}: {exc.strerror or exc}") from None
    return d


def _tmp_prefix(name: str) -> str:
    """``.NAME.`` shortened so that the temporary name (prefix + 8 random characters + ``.tmp``) fits in
    NAME_MAX bytes: outputs with names near the limit are written like any other."""
    raw = os.fsencode(name)[: NAME_MAX - 2 - 8 - 4 - 8]
    return "." + os.fsdecode(raw) + "."


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, then rename).

    Only regular files are written: a symbolic link, folder, device or FIFO at ``path`` is refused
    (``OutputError``), as is any OS error (one line naming the path). The temporary file never survives an
    error or an interrupt.
    """
    p = check_output_file(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(p.name), suffix=".tmp", dir=p.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {display_path(p)}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:  # owns the descriptor from here: closed whatever happens next
            try:  # mkstemp creates 0600 files; give the output the permissions a plain open() would (0666 & ~umask)
                os.fchmod(f.fileno(), new_file_mode())
            except OSError:
                pass  # file systems without permissions (some FUSE mounts): the write itself still works
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the data reaches the disk before the name does: a crash leaves old or new
        check_output_file(p)  # still a regular file (or nothing) just before the rename
        os.replace(tmp, p)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OutputError):
            raise
        raise OutputError(f"cannot write {display_path(p)}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def atomic_write_safetensors(path: str | os.PathLike, tensors: dict[str, Any],
                             metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` (name -> torch.Tensor) as a safetensors file, atomically and with the permissions
    of any other output (``safetensors.torch.save_file`` creates 0600 files)."""
    from safetensors.torch import save

    return atomic_write_bytes(path, save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """UTF-8; file names that are not UTF-8 (surrogate escapes) are written back as their original bytes."""
    return atomic_write_bytes(path, text.encode("utf-8", "surrogateescape"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # torch tensors
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_image(
    path: str | os.PathLike,
    rgb: np.ndarray,
    *,
    alpha: np.ndarray | None = None,
    bit_depth: int = 8,
    gray: bool = False,
    jpeg_quality: int | None = None,
    protect: Iterable[str | os.PathLike] = (),
    metadata: ImageMetadata | None = None,
) -> Path:
    """Atomically write (H, W, 3) RGB in [0, 1] to ``path``; the format follows the extension.

    ``protect`` lists input files that must never be overwritten (OutputError if ``path`` is one).
    ``metadata`` (``LoadedImage.metadata``) is stored in JPEG, PNG, WebP and TIFF outputs (:func:`with_metadata`).
    JPEG outputs: ``jpeg_quality`` (1-100) when given; else 95, or the source JPEG's own quality when higher, and
    the source's chroma subsampling (a 4:4:4 q98 camera JPEG is not re-encoded coarser around the restored faces).
    """
    p = check_output_file(path, protect)
    ext = (p.suffix or ".png").lower()
    source = (metadata.encoding if metadata else None) or SourceEncoding("")
    if jpeg_quality is None:
        jpeg_quality = max(DEFAULT_JPEG_QUALITY, source.quality or 0)
    data = encode_image(rgb, ext, alpha=alpha, bit_depth=bit_depth, gray=gray, jpeg_quality=jpeg_quality,
                        jpeg_subsampling=source.subsampling, webp_lossless=source.format != "WEBP" or source.lossless)
    if metadata is not None:
        dpi = None
        if metadata.print_size:
            dpi = (rgb.shape[1] / metadata.print_size[0], rgb.shape[0] / metadata.print_size[1])
        data = with_metadata(data, ext, _sized(metadata, rgb.shape[1], rgb.shape[0], dpi), gray=gray, dpi=dpi)
    return atomic_write_bytes(p, data)


_EXIF_IFD, _PIXEL_X, _PIXEL_Y = 0x8769, 0xA002, 0xA003
_X_RESOLUTION, _Y_RESOLUTION, _RESOLUTION_UNIT = 0x011A, 0x011B, 0x0128
_XMP_SIZES = {name: re.compile(rb"((?:exif|tiff):" + name + rb"\s*=\s*[\"'])\s*\d+\s*([\"'])|(<(?:exif|tiff):" + name
                               + rb">)\s*\d+\s*(</(?:exif|tiff):" + name + rb">)")
              for name in (b"PixelXDimension", b"PixelYDimension", b"ImageWidth", b"ImageLength")}


def _sized(metadata: ImageMetadata, width: int, height: int,
           dpi: tuple[float, float] | None = None) -> ImageMetadata:
    """``metadata`` with the image size its EXIF (PixelX/YDimension) and XMP (exif:PixelX/YDimension,
    tiff:ImageWidth/Length) state set to ``width`` x ``height``, the size written (an upscaled output), and the
    EXIF's resolution (X/YResolution, in inches) set to ``dpi`` when it states one."""
    exif, xmp = metadata.exif, metadata.xmp
    if exif:
        try:
            from PIL import Image

            parsed = Image.Exif()
            parsed.load(exif)
            ifd = parsed.get_ifd(_EXIF_IFD)
            changed = False
            if _PIXEL_X in ifd or _PIXEL_Y in ifd:
                ifd[_PIXEL_X], ifd[_PIXEL_Y] = int(width), int(height)
                changed = True
            if dpi and (_X_RESOLUTION in parsed or _Y_RESOLUTION in parsed):
                parsed[_X_RESOLUTION], parsed[_Y_RESOLUTION] = round(dpi[0], 4), round(dpi[1], 4)
                parsed[_RESOLUTION_UNIT] = 2  # inches
                changed = True
            if changed:
                exif = parsed.tobytes()
        except Exception:  # an EXIF Pillow cannot rewrite goes out as it came
            pass
    if xmp:
        for name, pattern in _XMP_SIZES.items():
            value = str(int(width if name in (b"PixelXDimension", b"ImageWidth") else height)).encode()
            xmp = pattern.sub(lambda m, v=value: (m.group(1) + v + m.group(2)) if m.group(1)
                              else (m.group(3) + v + m.group(4)), xmp)
    return replace(metadata, exif=exif, xmp=xmp)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _jpeg_segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


_JPEG_SEGMENT_MAX = 0xFFFF - 2  # a segment's bytes after its length field
_ICC_JPEG_CHUNK = _JPEG_SEGMENT_MAX - 14  # profile bytes per APP2 segment (after "ICC_PROFILE\0", number, count)
_XMP_SIGNATURE = b"http://ns.adobe.com/xap/1.0/\0"


def with_metadata(data: bytes, ext: str, metadata: ImageMetadata, *, gray: bool = False,
                  dpi: tuple[float, float] | None = None) -> bytes:
    """Encoded JPEG, PNG, WebP or TIFF bytes (other formats come back unchanged) with ``metadata`` added:

    - JPEG: EXIF (APP1), XMP (APP1, the standard packet of at most 64 KB), the ICC profile (APP2 "ICC_PROFILE",
      numbered segments for profiles over 64 KB) and IPTC (APP13), after the JFIF header;
    - PNG: iCCP (zlib), eXIf and the XMP as iTXt "XML:com.adobe.xmp", right after IHDR (OpenCV writes no sRGB or
      gAMA chunk that would contradict the profile). PNG has no IPTC chunk: IPTC goes into JPEG and TIFF outputs;
    - WebP: ICCP, EXIF and XMP chunks in an extended (VP8X) file (:func:`_webp_with_metadata`); no IPTC either;
    - TIFF: the ICC profile, XMP, resolution, IPTC (Photoshop resources and IPTC-NAA) and the EXIF's camera fields
      as tags (:func:`_tiff_with_metadata`).

    The ICC profile goes in only when it is a profile for the pixels written (gray for ``gray``, RGB otherwise; for
    PNG as its header says). EXIF over 64 KB (a JPEG segment's limit) is left out of JPEG outputs. ``dpi`` (x, y
    dots per inch) goes into a JPEG's JFIF header, a PNG's pHYs chunk and a TIFF's resolution tags (WebP has no place
    for it but the EXIF).
    """
    if ext == ".png" and data[:8] == _PNG_SIGNATURE:
        gray = data[25] in (0, 4)  # IHDR colour type: what was written (16-bit gray + alpha goes out as RGBA)
    elif ext == ".webp":
        gray = False  # WebP stores colour only
    elif ext in (".tif", ".tiff"):  # as written: gray + alpha goes out as RGBA
        gray = (_tiff_values(data, (262,)) or {}).get(262) in (0, 1)
    icc = metadata.icc_for(gray)
    exif = metadata.exif[6:] if metadata.exif and metadata.exif.startswith(b"Exif\0\0") else metadata.exif
    if ext in (".jpg", ".jpeg") and data[:2] == b"\xff\xd8":
        segs = []
        if exif and len(exif) + 6 <= _JPEG_SEGMENT_MAX:
            segs.append(_jpeg_segment(0xE1, b"Exif\0\0" + exif))
        if metadata.xmp and len(metadata.xmp) + len(_XMP_SIGNATURE) <= _JPEG_SEGMENT_MAX:
            segs.append(_jpeg_segment(0xE1, _XMP_SIGNATURE + metadata.xmp))
        if icc:
            parts = [icc[k: k + _ICC_JPEG_CHUNK] for k in range(0, len(icc), _ICC_JPEG_CHUNK)]
            if len(parts) <= 255:
                segs.extend(_jpeg_segment(0xE2, b"ICC_PROFILE\0" + bytes([k + 1, len(parts)]) + part)
                            for k, part in enumerate(parts))
        if metadata.iptc and len(metadata.iptc) <= _JPEG_SEGMENT_MAX:
            segs.append(_jpeg_segment(0xED, metadata.iptc))
        at = 2
        if data[2:4] == b"\xff\xe0":  # after OpenCV's JFIF APP0, which JFIF readers expect first
            at = 4 + struct.unpack(">H", data[4:6])[0]
            if dpi and data[6:11] == b"JFIF\0":  # units 1 (dots per inch), X and Y density (16 bits each)
                density = struct.pack(">BHH", 1, *(min(max(round(d), 1), 0xFFFF) for d in dpi))
                data = data[:13] + density + data[18:]
        return data[:at] + b"".join(segs) + data[at:]
    if ext == ".png" and data[:8] == _PNG_SIGNATURE:
        chunks = []
        if icc:
            chunks.append(_png_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc, 9)))
        if exif:
            chunks.append(_png_chunk(b"eXIf", exif))
        if metadata.xmp:
            chunks.append(_png_chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + metadata.xmp))
        if dpi:  # pixels per metre, unit 1 (metre)
            ppm = (min(max(round(d / 0.0254), 1), 0xFFFFFFFF) for d in dpi)
            chunks.append(_png_chunk(b"pHYs", struct.pack(">IIB", *ppm, 1)))
        ihdr_end = 8 + 8 + struct.unpack(">I", data[8:12])[0] + 4
        return data[:ihdr_end] + b"".join(chunks) + data[ihdr_end:]
    if ext == ".webp" and data[:4] == b"RIFF" and data[8:12] == b"WEBP" and (icc or exif or metadata.xmp):
        return _webp_with_metadata(data, icc, exif, metadata.xmp)
    if ext in (".tif", ".tiff"):
        return _tiff_with_metadata(data, icc, exif, metadata.xmp, dpi, metadata.iptc)
    return data


def _riff_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + b"\0" * (len(body) & 1)


def _webp_with_metadata(data: bytes, icc: bytes | None, exif: bytes | None, xmp: bytes | None) -> bytes:
    """A still WebP (simple VP8/VP8L, or extended with an ALPH chunk, as OpenCV writes them) made an extended one
    carrying an ICC profile (ICCP), EXIF and XMP, in the order the WebP container specification gives:
    VP8X, ICCP, image data, EXIF, XMP."""
    chunks = {kind: data[body: body + size] for kind, body, size in _riff_chunks(data)}
    if b"VP8X" in chunks:
        vp8x = chunks[b"VP8X"]
        flags = vp8x[0]
        width, height = int.from_bytes(vp8x[4:7], "little") + 1, int.from_bytes(vp8x[7:10], "little") + 1
        if flags & 0x02:  # animated: not written here
            return data
    elif b"VP8L" in chunks:
        bits = struct.unpack("<I", chunks[b"VP8L"][1:5])[0]
        width, height, flags = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, 0x10 * ((bits >> 28) & 1)
    elif b"VP8 " in chunks:
        frame = chunks[b"VP8 "]
        width, height, flags = (struct.unpack("<H", frame[6:8])[0] & 0x3FFF,
                                struct.unpack("<H", frame[8:10])[0] & 0x3FFF, 0)
    else:
        return data
    flags |= 0x10 * (b"ALPH" in chunks) | 0x20 * bool(icc) | 0x08 * bool(exif) | 0x04 * bool(xmp)
    header = bytes([flags, 0, 0, 0]) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = _riff_chunk(b"VP8X", header)
    if icc:
        body += _riff_chunk(b"ICCP", icc)
    body += b"".join(_riff_chunk(k, chunks[k]) for k in (b"ALPH", b"VP8 ", b"VP8L") if k in chunks)
    if exif:
        body += _riff_chunk(b"EXIF", exif)
    if xmp:
        body += _riff_chunk(b"XMP ", xmp)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def icc_description(profile: bytes | None) -> str | None:
    """The name an ICC profile gives itself ("Display P3", "Adobe RGB (1998)", ...), or None (no profile, or
    Pillow built without LittleCMS)."""
    if not profile:
        return None
    import io as _io

    try:
        from PIL import ImageCms

        return ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(_io.BytesIO(profile))).strip() or None
    except Exception:
        return None


def luma(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB in [0, 1] -> (H, W) BT.601 luma (PIL's "L" conversion), the gray that gray files store."""
    return rgb[:, :, 0] * 0.299 + rgb[:, :, 1] * 0.587 + rgb[:, :, 2] * 0.114


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB -> (H, W, 3) float32 with the BT.601 luma in all three channels, clipped to [0, 1]."""
    return np.repeat(np.clip(luma(rgb), 0.0, 1.0)[:, :, None], 3, axis=2).astype(np.float32)


def as_image(image: str | os.PathLike | np.ndarray | LoadedImage) -> LoadedImage:
    """Anything the library accepts as an image -> :class:`LoadedImage`.

    A path is read with :func:`read_image` (EXIF orientation, 16-bit, gray, alpha, pixel limit). An array is
    (H, W), (H, W, 1), (H, W, 2) (gray + alpha), (H, W, 3) RGB or (H, W, 4) RGBA: float in [0, 1] (clipped;
    NaN/inf refused), uint8 or uint16 (bit depth 8 / 16; float counts as 8).
    """
    if isinstance(image, LoadedImage):
        return image
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if not isinstance(image, np.ndarray):
        raise InputError(f"image must be a path, a numpy array or a LoadedImage, got {type(image).__name__}")
    arr = image
    if arr.dtype == np.uint8:
        depth, f = 8, arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        depth, f = 16, arr.astype(np.float32) / 65535.0
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise InputError("image has NaN or infinite pixel values")
        depth, f = 8, np.clip(arr.astype(np.float32), 0.0, 1.0)
    else:
        raise InputError(f"unsupported pixel type {arr.dtype} (use float in [0, 1], uint8 or uint16)")
    if f.ndim == 3 and f.shape[2] == 1:
        f = f[:, :, 0]
    if f.ndim == 2:
        return LoadedImage(rgb=np.repeat(f[:, :, None], 3, axis=2), bit_depth=depth, is_gray=True)
    if f.ndim != 3 or f.shape[2] not in (2, 3, 4) or min(f.shape[:2]) < 1:
        raise InputError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {arr.shape}")
    if f.shape[2] == 2:
        return LoadedImage(rgb=np.repeat(f[:, :, :1], 3, axis=2), alpha=np.ascontiguousarray(f[:, :, 1]),
                           bit_depth=depth, is_gray=True)
    alpha = np.ascontiguousarray(f[:, :, 3]) if f.shape[2] == 4 else None
    return LoadedImage(rgb=np.ascontiguousarray(f[:, :, :3]), alpha=alpha, bit_depth=depth, is_gray=False)
