"""HDR video seen by a restorer trained on SDR pictures, and the restoration put back into the HDR signal.

Phones record HDR by default (HLG, BT.2020, 10-bit) and streaming masters use PQ (HDR10). Their code values are
not an SDR picture: PQ maps 0-10,000 nits onto the code range (a face at 100 nits sits at 51 %, looking dark and
flat), HLG puts SDR's white at 75 %, and BT.2020 primaries make BT.709 colours look washed out. A restorer fed those
values as if they were SDR restores a grey, desaturated face and pastes it back in the wrong tones.

:class:`HdrView` turns an HDR frame into the SDR picture a viewer would see (BT.2100 transfer decoded, reference
white (203 nits) where BT.2408 places it, HLG shown through its 1000-nit reference display (BT.2100's OOTF,
system gamma 1.2), highlights rolled off smoothly to the mastering peak, BT.2020 primaries converted to BT.709,
BT.1886 gamma 2.4 encoded) and puts a restoration of that view back: only what the restorer changed is added to the
original signal (:meth:`HdrView.merge`), so pixels it left alone, out-of-gamut colours and highlights beyond the
roll-off included, come back exactly.

All images are float32 RGB in [0, 1], (H, W, 3). Pure numpy; constants from ITU-R BT.2100, BT.2087 and BT.2408.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["HDR_TRANSFERS", "HdrView", "bt2020_to_bt709", "hdr_view_for", "hlg_inverse_oetf", "hlg_oetf",
           "pq_eotf", "pq_inverse_eotf", "primaries_matrix"]

# transfer characteristics codes of ISO/IEC 23091-2 (what FFmpeg calls color_trc) that are HDR
HDR_TRANSFERS = {16: "pq", 18: "hlg"}
_BT2020_PRIMARIES = 9

# SMPTE ST 2084 (PQ)
_M1, _M2 = 2610 / 16384, 2523 / 4096 * 128
_C1, _C2, _C3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
PQ_PEAK_NITS = 10000.0
# ARIB STD-B67 (HLG)
_A = 0.17883277
_B = 1 - 4 * _A
_C = 0.5 - _A * np.log(4 * _A)

# BT.2408: diffuse ("graphics") white at 203 nits in PQ, at 75 % of the signal in HLG (203 nits on HLG's display)
REFERENCE_WHITE_NITS = 203.0
# HLG's reference display (BT.2100): 1000 nits peak, black at 0, system gamma 1.2
HLG_DISPLAY_NITS = 1000.0
HLG_SYSTEM_GAMMA = 1.2
_LUMA = {True: np.array([0.2627, 0.6780, 0.0593]), False: np.array([0.2126, 0.7152, 0.0722])}  # BT.2020, BT.709
# most HDR video is mastered for 1000-nit displays (phones' HLG included): the roll-off reaches SDR white there
MASTERING_PEAK_NITS = 1000.0
# view (linear, SDR white = 1) values up to this knee are kept as they are; above it highlights are compressed
TONE_KNEE = 0.75
# a restorer's change goes back into the signal at most this many times as large (in code values) as it was in the
# view: near SDR white the inverse roll-off is steep, and one 8-bit step there would otherwise jump hundreds of nits
MAX_SIGNAL_GAIN = 2.5


def pq_eotf(signal: np.ndarray) -> np.ndarray:
    """PQ code values in [0, 1] -> display luminance in nits (0-10,000), SMPTE ST 2084."""
    e = np.power(np.clip(signal, 0.0, 1.0), 1 / _M2)
    return PQ_PEAK_NITS * np.power(np.maximum(e - _C1, 0.0) / (_C2 - _C3 * e), 1 / _M1)


def pq_inverse_eotf(nits: np.ndarray) -> np.ndarray:
    """Display luminance in nits (clipped to 0-10,000) -> PQ code values in [0, 1]."""
    y = np.power(np.clip(nits / PQ_PEAK_NITS, 0.0, 1.0), _M1)
    return np.power((_C1 + _C2 * y) / (1 + _C3 * y), _M2)


def hlg_oetf(scene: np.ndarray) -> np.ndarray:
    """Scene-linear light in [0, 1] -> HLG code values in [0, 1] (BT.2100: square root below 1/12, log above)."""
    e = np.clip(scene, 0.0, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        log = _A * np.log(np.maximum(12 * e - _B, 1e-12)) + _C
    return np.where(e <= 1 / 12, np.sqrt(3 * e), log)


def hlg_inverse_oetf(signal: np.ndarray) -> np.ndarray:
    """HLG code values in [0, 1] -> scene-linear light in [0, 1]."""
    v = np.clip(signal, 0.0, 1.0)
    return np.where(v <= 0.5, v * v / 3, (np.exp((v - _C) / _A) + _B) / 12)


def primaries_matrix(primaries: tuple[tuple[float, float], ...], white: tuple[float, float]) -> np.ndarray:
    """Linear RGB -> CIE XYZ (3, 3) for red, green and blue chromaticities ``primaries`` ((x, y) each) and the white
    point ``white`` (x, y), scaled so that RGB (1, 1, 1) has Y = 1."""
    xyz = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in primaries]).T  # columns: the primaries at Y = 1
    wx, wy = white
    scale = np.linalg.solve(xyz, np.array([wx / wy, 1.0, (1 - wx - wy) / wy]))
    return xyz * scale


_D65 = (0.3127, 0.3290)
_BT709 = ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060))
_BT2020 = ((0.708, 0.292), (0.170, 0.797), (0.131, 0.046))


def bt2020_to_bt709() -> np.ndarray:
    """The (3, 3) matrix taking linear BT.2020 RGB to linear BT.709 RGB (BT.2087; both D65). Colours outside BT.709
    come out with negative components."""
    return np.linalg.solve(primaries_matrix(_BT709, _D65), primaries_matrix(_BT2020, _D65))


def _roll_off(x: np.ndarray, peak: float, knee: float = TONE_KNEE) -> np.ndarray:
    """Linear light (SDR white = 1) -> [0, 1]: unchanged up to ``knee``, then a rational curve that starts with
    slope 1 and reaches 1 at ``peak`` (values above it clip). Monotonic, C1, inverted by :func:`_roll_on`."""
    w, span = 1.0 - knee, peak - knee
    u = np.clip(x - knee, 0.0, span)
    return np.where(x <= knee, x, knee + u / (1 + u * (1 / w - 1 / span)))


def _roll_on(y: np.ndarray, peak: float, knee: float = TONE_KNEE) -> np.ndarray:
    """The inverse of :func:`_roll_off` on [0, 1] (values above 1 count as 1, giving ``peak``)."""
    w, span = 1.0 - knee, peak - knee
    u = np.clip(y - knee, 0.0, w)
    return np.where(y <= knee, y, knee + u / (1 - u * (1 / w - 1 / span)))


@dataclass(frozen=True)
class HdrView:
    """The SDR view of one HDR transfer (``"pq"`` or ``"hlg"``) and, with ``wide_gamut``, BT.2020 primaries."""

    transfer: str
    wide_gamut: bool = True
    peak_nits: float = MASTERING_PEAK_NITS

    def __post_init__(self) -> None:
        if self.transfer not in ("pq", "hlg"):
            raise ValueError(f"transfer must be 'pq' or 'hlg', got {self.transfer!r}")

    @property
    def _peak(self) -> float:
        """The roll-off's peak in view units (SDR white = 1): the mastering peak, HLG's display peak."""
        return (self.peak_nits if self.transfer == "pq" else HLG_DISPLAY_NITS) / REFERENCE_WHITE_NITS

    def _linear(self, signal: np.ndarray) -> np.ndarray:
        """HDR code values -> display light with reference white (203 nits) at 1. HLG: scene light through the
        OOTF, ``Fd = Lw Ys^(gamma - 1) Es`` (``Ys`` the scene luminance)."""
        s = signal.astype(np.float64)
        if self.transfer == "pq":
            return pq_eotf(s) / REFERENCE_WHITE_NITS
        scene = hlg_inverse_oetf(s)
        ys = scene @ _LUMA[self.wide_gamut]
        return scene * np.power(ys, HLG_SYSTEM_GAMMA - 1)[..., None] * (HLG_DISPLAY_NITS / REFERENCE_WHITE_NITS)

    def _signal(self, linear: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`_linear` (HLG: the inverse OOTF, ``Ys = (Yd / Lw)^(1 / gamma)``)."""
        if self.transfer == "pq":
            return pq_inverse_eotf(linear * REFERENCE_WHITE_NITS)
        display = np.maximum(linear, 0.0) * (REFERENCE_WHITE_NITS / HLG_DISPLAY_NITS)
        ys = np.power(display @ _LUMA[self.wide_gamut], 1 / HLG_SYSTEM_GAMMA)
        scene = display / np.maximum(np.power(ys, HLG_SYSTEM_GAMMA - 1), 1e-12)[..., None]
        return hlg_oetf(scene)

    def to_sdr(self, hdr: np.ndarray) -> np.ndarray:
        """HDR frame (H, W, 3) code values in [0, 1] -> its SDR view (H, W, 3) float32 in [0, 1], BT.709, gamma 2.4.

        Highlights are compressed on the largest of the three components (hue kept); colours outside BT.709 clip.
        """
        lin = self._linear(hdr)
        if self.wide_gamut:
            lin = lin @ bt2020_to_bt709().T
        lin = np.maximum(lin, 0.0)
        m = lin.max(-1, keepdims=True)
        scale = np.where(m > TONE_KNEE, _roll_off(m, self._peak) / np.maximum(m, 1e-12), 1.0)
        return np.power(np.clip(lin * scale, 0.0, 1.0), 1 / 2.4).astype(np.float32)

    def to_hdr(self, sdr: np.ndarray) -> np.ndarray:
        """An SDR view (H, W, 3) in [0, 1] -> HDR code values (H, W, 3) float32: the inverse of :meth:`to_sdr` for
        colours inside BT.709 and highlights under the peak."""
        lin = np.power(np.clip(sdr.astype(np.float64), 0.0, 1.0), 2.4)
        m = lin.max(-1, keepdims=True)
        lin = lin * np.where(m > TONE_KNEE, _roll_on(m, self._peak) / np.maximum(m, 1e-12), 1.0)
        if self.wide_gamut:
            lin = lin @ np.linalg.inv(bt2020_to_bt709()).T
        return np.clip(self._signal(lin), 0.0, 1.0).astype(np.float32)

    def merge(self, hdr: np.ndarray, view: np.ndarray, restored: np.ndarray) -> np.ndarray:
        """The HDR frame with what the restorer changed in its view: ``hdr + to_hdr(restored) - to_hdr(view)``,
        each change at most :data:`MAX_SIGNAL_GAIN` times its size in the view, clipped to [0, 1]. All three are
        (H, W, 3) of one size (for an upscaled output, resize ``hdr`` and ``view`` as the background was). Where
        ``restored`` equals the view the original signal comes back unchanged, out-of-gamut colours and highlights
        above the peak included."""
        if not hdr.shape == view.shape == restored.shape:
            raise ValueError(f"merge needs one size, got {hdr.shape}, {view.shape} and {restored.shape}")
        out = np.array(hdr, np.float32)
        changed = np.nonzero((restored != view).any(-1))
        if changed[0].size == 0:
            return out
        # the box around what changed (the faces): the rest of the frame is the original, and is not converted
        box = (slice(changed[0].min(), changed[0].max() + 1), slice(changed[1].min(), changed[1].max() + 1))
        r, v = restored[box].astype(np.float32), view[box].astype(np.float32)
        delta = self.to_hdr(r) - self.to_hdr(v)
        limit = MAX_SIGNAL_GAIN * np.abs(r - v)
        out[box] = np.clip(out[box] + np.clip(delta, -limit, limit), 0.0, 1.0)
        return out


def hdr_view_for(color_trc: int, color_primaries: int) -> HdrView | None:
    """The :class:`HdrView` for a stream's transfer and primaries codes (ISO/IEC 23091-2, as FFmpeg reports them),
    or None for SDR video."""
    transfer = HDR_TRANSFERS.get(int(color_trc))
    return None if transfer is None else HdrView(transfer, wide_gamut=int(color_primaries) == _BT2020_PRIMARIES)
