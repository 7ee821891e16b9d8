"""Background upscaling of whole photos with ESRGAN-thick (zoo entry ``esrgan-thick``, MIT), in tiles.

:func:`esrgan_upscale` runs the RRDN of the nearest trained factor at or above the request (x2, x3, x4, x8;
x8 for larger requests) on overlapping tiles, then resizes to exactly ``round(upscale * H) x round(upscale * W)``
with Lanczos when the trained factor differs from the request. Memory is bounded: the network sees one tile
(``tile`` input pixels square plus ``pad`` pixels of context on each side) at a time, and the output is written
straight into one float32 array of the output size; the context is cropped away, so tiles meet without
blending (the context makes the seams invisible: see tests/faces/test_background.py). A tqdm bar counts tiles.

Requests of at most 1x need no super-resolution: they are a plain Lanczos resize. The weights are never
downloaded here: :func:`esrgan_available` tells whether they are cached, and a missing cache raises
WeightsMissingError naming ``facerestore models download esrgan-thick``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from facerestore.errors import InputError

__all__ = ["ESRGAN_ENTRY", "esrgan_available", "esrgan_background", "esrgan_scale_for", "esrgan_upscale"]

ESRGAN_ENTRY = "esrgan-thick"
_NETS: dict[tuple[int, str, bool], Any] = {}
_LOCK = threading.Lock()


def esrgan_available() -> bool:
    """The ESRGAN weights are in the cache (nothing is downloaded)."""
    from facerestore import zoo

    return zoo.is_available(ESRGAN_ENTRY)


def esrgan_scale_for(upscale: float) -> int:
    """The trained factor used for ``upscale``: the smallest of 2, 3, 4, 8 at or above it (8 beyond)."""
    from facerestore.nn.esrgan import ESRGAN_SCALES

    for s in ESRGAN_SCALES:
        if upscale <= s + 1e-9:
            return s
    return ESRGAN_SCALES[-1]


def _net(scale: int, device: str, half: bool = False) -> Any:
    """The cached network for (scale, device, precision): one copy per precision, so a float16 caller never
    converts the float32 network that later callers share (``Module.half`` works in place)."""
    from facerestore import zoo
    from facerestore.nn.esrgan import load_esrgan

    with _LOCK:
        key = (scale, device, bool(half))
        if key not in _NETS:
            net = load_esrgan(zoo.weights_path(ESRGAN_ENTRY), scale, device)
            _NETS[key] = net.half() if half else net
        return _NETS[key]


def esrgan_upscale(image: np.ndarray, upscale: float, *, device: str = "cpu", tile: int = 192, pad: int = 16,
                   progress: bool = False, half: bool = False) -> np.ndarray:
    """(H, W, 3) RGB (float in [0, 1] or uint8) -> (round(upscale * H), round(upscale * W), 3) float32 in [0, 1].

    Args:
        upscale: output factor (> 0); ESRGAN runs at :func:`esrgan_scale_for` and Lanczos covers the rest.
        device: torch device of the network.
        tile: side of the input tiles in pixels (memory per tile grows with tile^2: ~60 MB at 192 on CPU).
        pad: context pixels read around each tile and cropped from its output.
        progress: show a tqdm bar over the tiles (stderr).
        half: float16 on CUDA (ignored elsewhere).
    """
    import torch

    from facerestore.faces.align import _as_float_image, _resize_float
    from facerestore.faces.paste import upscale_image, upscaled_shape

    img = _as_float_image(image)
    h, w = img.shape[:2]
    oh, ow = upscaled_shape(h, w, upscale)
    if int(tile) < 16 or int(pad) < 0:
        raise InputError(f"tile must be >= 16 and pad >= 0, got {tile} and {pad}")
    if upscale <= 1.0 + 1e-9:
        return upscale_image(img, upscale)
    s = esrgan_scale_for(upscale)
    # the network's whole output is held before it is resized to the asked size (x8 for upscale 4.1): its pixels,
    # not only the output's, must be within the limit
    from facerestore.io import check_pixels

    check_pixels(w * s, h * s, what=f"the ESRGAN x{s} background (before resizing to {ow}x{oh})")
    dtype = torch.float16 if half and str(device).startswith("cuda") else torch.float32
    net = _net(s, str(device), half=dtype == torch.float16)
    out = np.empty((h * s, w * s, 3), np.float32)
    tile, pad = int(tile), int(pad)
    ys = range(0, h, tile)
    xs = range(0, w, tile)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(ys) * len(xs), desc=f"background ESRGAN x{s}", unit="tile", leave=False)
    try:
        with torch.inference_mode():
            for y0 in ys:
                for x0 in xs:
                    y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
                    cy0, cx0 = max(y0 - pad, 0), max(x0 - pad, 0)
                    cy1, cx1 = min(y1 + pad, h), min(x1 + pad, w)
                    t = torch.from_numpy(np.ascontiguousarray(img[cy0:cy1, cx0:cx1].transpose(2, 0, 1)))
                    y = net(t[None].to(device=device, dtype=dtype))[0]
                    y = y[:, (y0 - cy0) * s:(y1 - cy0) * s, (x0 - cx0) * s:(x1 - cx0) * s]
                    out[y0 * s:y1 * s, x0 * s:x1 * s] = y.clamp_(0, 1).float().permute(1, 2, 0).cpu().numpy()
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if (h * s, w * s) != (oh, ow):
        out = np.clip(_resize_float(out, ow, oh, "lanczos"), 0.0, 1.0).astype(np.float32, copy=False)
    return out


def esrgan_background(device: str = "cpu", *, progress: bool = False, tile: int = 192,
                      half: bool = False) -> Callable[[np.ndarray, float], np.ndarray]:
    """A ``(image, upscale) -> array`` background upsampler for :func:`facerestore.faces.paste.paste_faces`.

    Checks now that the weights are cached (WeightsMissingError otherwise), so a run fails before any work."""
    from facerestore import zoo

    zoo.weights_path(ESRGAN_ENTRY)

    def upsample(image: np.ndarray, upscale: float) -> np.ndarray:
        return esrgan_upscale(image, upscale, device=device, tile=tile, progress=progress, half=half)

    upsample.__name__ = "esrgan"
    return upsample


def tiles_for(height: int, width: int, tile: int = 192) -> int:
    """Number of tiles :func:`esrgan_upscale` runs for an image of this size."""
    return math.ceil(height / tile) * math.ceil(width / tile)
