"""Image and file I/O at the edges of the library.

Inside the library images are float arrays/tensors in [0, 1], RGB. This module converts from and to
files: 8- and 16-bit, grayscale, alpha, EXIF orientation, names with spaces or upper-case extensions.
Every write is atomic (temporary file in the destination folder, then ``os.replace``), so an
interrupted run never leaves a half-written output and never touches the input.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facerestore.errors import InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_EXIF_ORIENTATION_TAG = 0x0112


@dataclass
class LoadedImage:
    """A decoded image file.

    Attributes:
        rgb: (H, W, 3) float32 in [0, 1], RGB, EXIF orientation applied (gray inputs are replicated).
        alpha: (H, W) float32 in [0, 1], or None when the file has no alpha channel.
        bit_depth: 8 or 16, the per-channel depth of the file.
        is_gray: True when the file had a single colour channel.
        path: where it was read from (None for in-memory images).
    """

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    bit_depth: int = 8
    is_gray: bool = False
    path: Path | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.rgb.shape[1], self.rgb.shape[0]


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(path: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files at ``path`` (a file or a folder), sorted by name.

    Raises InputError when the path does not exist, or is a folder without images.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"input not found: {p}")
    if p.is_file():
        return [p]
    pattern = "**/*" if recursive else "*"
    files = sorted(f for f in p.glob(pattern) if f.is_file() and is_image_file(f))
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder: {p}")
    return files


def _exif_orientation(data: bytes) -> int:
    try:
        import io as _io

        from PIL import Image

        with Image.open(_io.BytesIO(data)) as im:
            return int(im.getexif().get(_EXIF_ORIENTATION_TAG, 1))
    except Exception:  # not every format has EXIF; orientation then is the identity
        return 1


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
    """Decode encoded image bytes (PNG/JPEG/TIFF/...) into a LoadedImage."""
    import cv2

    buf = np.frombuffer(data, dtype=np.uint8)
    arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if arr is None:
        where = f": {path}" if path else ""
        raise InputError(f"cannot decode image (corrupt or unsupported format){where}")
    if arr.dtype == np.uint8:
        depth, scale = 8, 255.0
    elif arr.dtype == np.uint16:
        depth, scale = 16, 65535.0
    elif arr.dtype in (np.float32, np.float64):
        depth, scale = 16, 1.0
    else:
        raise InputError(f"unsupported pixel type {arr.dtype}{': ' + str(path) if path else ''}")
    arr = _apply_exif_orientation(arr, _exif_orientation(data))
    arr = np.ascontiguousarray(arr).astype(np.float32) / scale
    alpha = None
    if arr.ndim == 2:
        gray, rgb = True, np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 1:
        gray, rgb = True, np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 2:  # gray + alpha
        gray, rgb, alpha = True, np.repeat(arr[:, :, :1], 3, axis=2), arr[:, :, 1]
    else:
        gray = False
        rgb = arr[:, :, 2::-1]  # OpenCV decodes to BGR(A)
        if arr.shape[2] == 4:
            alpha = arr[:, :, 3]
    rgb = np.clip(np.ascontiguousarray(rgb), 0.0, 1.0)
    return LoadedImage(rgb=rgb, alpha=alpha, bit_depth=depth, is_gray=gray, path=path)


def read_image(path: str | os.PathLike) -> LoadedImage:
    """Read an image file; raises InputError with a one-line reason when it cannot."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"not a file: {p}")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {p}: {exc.strerror or exc}") from exc
    return decode_image(data, p)


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
) -> bytes:
    """Encode (H, W, 3) RGB in [0, 1] (or uint8) to file bytes of the format named by ``ext``."""
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
        # BT.601 luma, as PIL's "L" conversion
        chans = [rgb[:, :, 0] * 0.299 + rgb[:, :, 1] * 0.587 + rgb[:, :, 2] * 0.114]
    else:
        chans = [rgb[:, :, 2], rgb[:, :, 1], rgb[:, :, 0]]
    if alpha is not None:
        chans.append(alpha)
    arr = quantize(np.stack(chans, axis=2), bit_depth)
    if arr.shape[2] == 1:
        arr = arr[:, :, 0]
    params: list[int] = []
    if ext in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    ok, buf = cv2.imencode(ext, arr, params)
    if not ok:
        raise InputError(f"could not encode image as {ext}")
    return buf.tobytes()


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    """The process umask (read once: os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, then rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        # mkstemp creates 0600 files; give the output the permissions a plain open() would (0666 & ~umask)
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, p)
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
    return atomic_write_bytes(path, text.encode("utf-8"))


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
    jpeg_quality: int = 95,
    protect: Iterable[str | os.PathLike] = (),
) -> Path:
    """Atomically write (H, W, 3) RGB in [0, 1] to ``path``; the format follows the extension.

    ``protect`` lists input files that must never be overwritten (InputError if ``path`` is one).
    """
    p = Path(path)
    for q in protect:
        if Path(q).exists() and p.exists() and p.resolve() == Path(q).resolve():
            raise InputError(f"refusing to overwrite input file {q}")
    data = encode_image(rgb, p.suffix or ".png", alpha=alpha, bit_depth=bit_depth, gray=gray,
                        jpeg_quality=jpeg_quality)
    return atomic_write_bytes(p, data)
