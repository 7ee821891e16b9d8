"""Real JPEG compression through libjpeg (Pillow), and JPEG header helpers.

:func:`jpeg` serialises each image to 8 bits (round half up, as ``floor(255 x + 0.5)``), encodes it with
Pillow's libjpeg(-turbo) at the requested quality (1..100, IJG scaling of the Annex K tables, baseline) and
chroma subsampling, decodes it, and returns floats in ``[0, 1]``. :func:`quality_to_tables` gives the
tables libjpeg uses for a quality; :func:`read_quant_tables` / :func:`read_subsampling` read them back
from the bytes of any baseline or progressive JPEG (paper 002 builds its DiffJPEG surrogate from the
tables in the file header).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from facerestore.errors import InputError

__all__ = [
    "STD_CHROMA_TABLE",
    "STD_LUMA_TABLE",
    "SUBSAMPLING",
    "ZIGZAG",
    "decode_jpeg",
    "encode_jpeg",
    "jpeg",
    "quality_to_tables",
    "read_quant_tables",
    "read_subsampling",
]

# Pillow's `subsampling=` codes and the (horizontal, vertical) chroma decimation of each scheme.
SUBSAMPLING: dict[str, tuple[int, tuple[int, int]]] = {
    "4:4:4": (0, (1, 1)),
    "4:2:2": (1, (2, 1)),
    "4:2:0": (2, (2, 2)),
}

# ITU-T T.81 Annex K tables K.1 / K.2 in natural (row-major, row = vertical frequency) order.
STD_LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
STD_CHROMA_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    *((99,) * 8 for _ in range(4)),
)


def _zigzag() -> tuple[int, ...]:
    """Natural-order index of the k-th coefficient in zigzag (file) order."""
    # Anti-diagonals s = r + c, walked up-right (c ascending) when s is even, down-left when odd.
    cells = [(r, c) for r in range(8) for c in range(8)]
    order = sorted(cells, key=lambda rc: (rc[0] + rc[1], rc[0] if (rc[0] + rc[1]) % 2 else rc[1]))
    return tuple(r * 8 + c for r, c in order)


ZIGZAG = _zigzag()


def _check_quality(quality: int) -> int:
    q = int(quality)
    if q != quality or not 1 <= q <= 100:
        raise InputError(f"JPEG quality must be an integer in 1..100, got {quality}")
    return q


def _check_subsampling(subsampling: str) -> int:
    if subsampling not in SUBSAMPLING:
        raise InputError(f"JPEG subsampling must be one of {', '.join(SUBSAMPLING)}, got {subsampling!r}")
    return SUBSAMPLING[subsampling][0]


def quality_to_tables(quality: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (luma, chroma) quantisation tables libjpeg uses at ``quality`` (1..100): (8, 8) int64, natural order.

    IJG ``jpeg_set_quality`` with ``force_baseline``: scale = 5000/q (q < 50) or 200 - 2q, entry =
    clamp((std * scale + 50) // 100, 1, 255).
    """
    q = _check_quality(quality)
    scale = 5000 // q if q < 50 else 200 - 2 * q
    out = []
    for table in (STD_LUMA_TABLE, STD_CHROMA_TABLE):
        t = (torch.tensor(table, dtype=torch.int64) * scale + 50) // 100
        out.append(t.clamp(1, 255))
    return out[0], out[1]


def _to_uint8(img: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8 with round half up."""
    src = img.detach().to("cpu")
    if src.dtype not in (torch.float32, torch.float64):
        src = src.to(torch.float32)
    # float64 keeps 255 x + 0.5 exact for float32 inputs (float32 arithmetic could move a rounding boundary);
    # written channel-last in place, without temporaries
    a = np.empty((src.shape[1], src.shape[2], src.shape[0]), dtype=np.float64)
    # dtype: NumPy 2 would multiply a float32 array by a Python float in float32 and only then store the product
    np.multiply(src.numpy().transpose(1, 2, 0), 255.0, out=a, dtype=np.float64)
    np.add(a, 0.5, out=a)
    np.floor(a, out=a)
    np.clip(a, 0.0, 255.0, out=a)
    return a.astype(np.uint8)


def encode_jpeg(img: torch.Tensor | np.ndarray, quality: int, subsampling: str = "4:2:0") -> bytes:
    """Encode one image ((3, H, W) float in [0, 1], or (H, W, 3) uint8) to baseline JPEG bytes with libjpeg."""
    q = _check_quality(quality)
    code = _check_subsampling(subsampling)
    a = _to_uint8(img) if isinstance(img, torch.Tensor) else np.ascontiguousarray(img, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a, mode="RGB").save(buf, format="JPEG", quality=q, subsampling=code)
    return buf.getvalue()


def decode_jpeg(data: bytes) -> torch.Tensor:
    """Decode JPEG bytes with libjpeg to a (3, H, W) float32 tensor in [0, 1] (RGB)."""
    with Image.open(io.BytesIO(data)) as im:
        a = np.array(im if im.mode == "RGB" else im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(a).permute(2, 0, 1).to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)


def jpeg(
    x: torch.Tensor,
    quality: int | Sequence[int] | torch.Tensor,
    subsampling: str = "4:2:0",
) -> torch.Tensor:
    """Real libjpeg round trip of a (B, 3, H, W) batch in [0, 1]; ``quality`` 1..100, one or one per sample.

    ``subsampling``: "4:4:4" (none), "4:2:2" (chroma halved horizontally), "4:2:0" (halved both ways).
    Returns the decoded 8-bit images as x.dtype on x.device.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
        raise InputError(f"expected a (B, 3, H, W) tensor, got {getattr(x, 'shape', type(x))}")
    _check_subsampling(subsampling)
    qs = torch.as_tensor(quality).reshape(-1).tolist()
    if len(qs) == 1:
        qs = qs * x.shape[0]
    if len(qs) != x.shape[0]:
        raise InputError(f"expected 1 or {x.shape[0]} qualities, got {len(qs)}")
    out = [decode_jpeg(encode_jpeg(img, q, subsampling)) for img, q in zip(x, qs)]
    return torch.stack(out).to(device=x.device, dtype=x.dtype)


def _segments(data: bytes):
    """Yield (marker, payload) for the header segments of a JPEG stream, up to the first SOS."""
    if data[:2] != b"\xff\xd8":
        raise InputError("not a JPEG stream (no SOI marker)")
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise InputError(f"corrupt JPEG header at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # stand-alone markers
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        yield marker, data[pos + 4 : pos + 2 + length]
        if marker == 0xDA:  # SOS: entropy-coded data follows
            return
        pos += 2 + length


def _frame(data: bytes) -> tuple[dict[int, bytes], list[tuple[int, int, int, int]]]:
    """DQT payloads by table id and the SOF components (id, h, v, table id)."""
    tables: dict[int, tuple[int, ...]] = {}
    components: list[tuple[int, int, int, int]] = []
    for marker, payload in _segments(data):
        if marker == 0xDB:
            pos = 0
            while pos < len(payload):
                precision, tid = payload[pos] >> 4, payload[pos] & 15
                n = 128 if precision else 64
                raw = payload[pos + 1 : pos + 1 + n]
                vals = struct.unpack(">64H", raw) if precision else tuple(raw)
                natural = [0] * 64
                for k, idx in enumerate(ZIGZAG):
                    natural[idx] = vals[k]
                tables[tid] = tuple(natural)
                pos += 1 + n
        elif marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            count = payload[5]
            for i in range(count):
                cid, hv, tq = payload[6 + 3 * i : 9 + 3 * i]
                components.append((cid, hv >> 4, hv & 15, tq))
    if not components:
        raise InputError("JPEG stream has no frame header (SOF)")
    return tables, components


def read_quant_tables(data: bytes) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (luma, chroma) quantisation tables of a JPEG file: (8, 8) int64 in natural order.

    Tables are those the SOF assigns to the first and second components; chroma is None for a
    grayscale file.
    """
    tables, components = _frame(data)

    def table(tq: int) -> torch.Tensor:
        if tq not in tables:
            raise InputError(f"JPEG stream lacks quantisation table {tq}")
        return torch.tensor(tables[tq], dtype=torch.int64).reshape(8, 8)

    luma = table(components[0][3])
    chroma = table(components[1][3]) if len(components) > 1 else None
    return luma, chroma


def read_subsampling(data: bytes) -> str:
    """Chroma subsampling of a 3-component JPEG from its SOF sampling factors: "4:4:4", "4:2:2", "4:2:0".

    Other layouts are returned as "HxV,HxV,HxV" (e.g. "1x2,1x1,1x1" for 4:4:0); grayscale gives "gray".
    """
    _, components = _frame(data)
    if len(components) == 1:
        return "gray"
    factors = [(h, v) for _, h, v, _ in components]
    for name, (_, (dh, dv)) in SUBSAMPLING.items():
        if len(factors) == 3 and factors[1] == factors[2] == (1, 1) and factors[0] == (dh, dv):
            return name
    return ",".join(f"{h}x{v}" for h, v in factors)
