"""HDR transfers and the SDR view a restorer sees (facerestore.hdr): published reference values, round trips,
monotonicity and the merge that leaves untouched pixels exactly as they were."""

from __future__ import annotations

import numpy as np
import pytest

from facerestore import hdr


def test_pq_matches_the_published_code_values():
    """BT.2408 / ST 2084 tables: 100 nits at 50.8 %, 203 nits (reference white) at 58 %, 1000 nits at 75.2 %,
    10,000 nits at 100 %; the EOTF inverts the inverse EOTF."""
    nits = np.array([0.0, 100.0, 203.0, 1000.0, 10000.0])
    code = hdr.pq_inverse_eotf(nits)
    np.testing.assert_allclose(code[1:], [0.5081, 0.5807, 0.7518, 1.0], atol=1e-4)
    assert code[0] == pytest.approx(7.3e-7, abs=1e-6)  # PQ's black is c1^m2, not exactly 0
    np.testing.assert_allclose(hdr.pq_eotf(code), nits, rtol=1e-9, atol=1e-6)


def test_hlg_matches_bt2100():
    """The square-root segment ends at 1/12 -> 0.5, scene light 1 gives the full signal, BT.2408's reference white
    (75 %) is 26.5 % scene light, and the two halves meet continuously."""
    np.testing.assert_allclose(hdr.hlg_oetf(np.array([0.0, 1 / 12, 1.0])), [0.0, 0.5, 1.0], atol=1e-7)
    assert float(hdr.hlg_inverse_oetf(np.float64(0.75))) == pytest.approx(0.26496, abs=1e-5)
    e = np.linspace(0, 1, 10001)
    np.testing.assert_allclose(hdr.hlg_inverse_oetf(hdr.hlg_oetf(e)), e, atol=1e-12)
    left, right = hdr.hlg_oetf(np.array([1 / 12 - 1e-9, 1 / 12 + 1e-9]))
    assert abs(right - left) < 1e-7


def test_bt2020_to_bt709_matrix_is_bt2087s():
    """Derived from the primaries, the matrix equals BT.2087's published one to its 4 decimals and keeps white."""
    m = hdr.bt2020_to_bt709()
    published = [[1.6605, -0.5876, -0.0728], [-0.1246, 1.1329, -0.0083], [-0.0182, -0.1006, 1.1187]]
    np.testing.assert_allclose(m, published, atol=6e-5)
    np.testing.assert_allclose(m @ np.ones(3), np.ones(3), atol=1e-12)
    # BT.709's primaries are inside BT.2020's: any BT.709 colour is a positive BT.2020 mix
    assert (np.linalg.inv(m) > 0).all()


@pytest.mark.parametrize("transfer", ["pq", "hlg"])
def test_sdr_views_round_trip(transfer):
    """Every SDR colour has an HDR signal whose view is that colour (to 1e-3 of the range, float32); a grey ramp
    comes back to 1e-6; the view of an HDR ramp is monotonic and reaches SDR white at the peak."""
    view = hdr.HdrView(transfer)
    rng = np.random.default_rng(0)
    sdr = rng.random((64, 64, 3)).astype(np.float32)
    signal = view.to_hdr(sdr)
    assert signal.dtype == np.float32 and 0 <= signal.min() and signal.max() <= 1
    np.testing.assert_allclose(view.to_sdr(signal), sdr, atol=1e-3)
    grey = np.linspace(0, 1, 501, dtype=np.float32)[:, None, None] * np.ones((1, 1, 3), np.float32)
    np.testing.assert_allclose(view.to_sdr(view.to_hdr(grey)), grey, atol=1e-6)
    ramp = view.to_sdr(grey)[:, 0, 0]
    assert (np.diff(ramp) >= 0).all() and ramp[-1] == pytest.approx(1.0, abs=1e-6)


def test_reference_white_and_skin_land_where_sdr_puts_them():
    """Everything up to the knee (75 % of BT.2408's diffuse white: faces, an 18 % grey card) keeps its SDR light;
    diffuse white itself (203 nits PQ, 75 % HLG) is just compressed: 0.25 above the knee, on a curve that reaches
    SDR white at the peak (1000 nits PQ, HLG's full signal), it lands at 0.879 (PQ) / 0.880 (HLG) linear."""
    def rolled(peak: float) -> float:  # the curve written out at x = 1: knee + u / (1 + u (1/w - 1/span))
        return 0.75 + 0.25 / (1 + 0.25 * (1 / 0.25 - 1 / (peak - 0.75)))

    hlg_white = float(hdr.hlg_inverse_oetf(np.float64(0.75)))
    cases = (("pq", hdr.pq_inverse_eotf(np.float64(203.0)), hdr.pq_inverse_eotf(np.float64(0.18 * 203.0)), 1000 / 203),
             ("hlg", 0.75, hdr.hlg_oetf(np.float64(0.18 * hlg_white)), 1 / hlg_white))
    for transfer, white, grey, peak in cases:
        view = hdr.HdrView(transfer, wide_gamut=False)
        got = view.to_sdr(np.array([[[white] * 3, [grey] * 3]], np.float32))[0, :, 0]
        np.testing.assert_allclose(got, [rolled(peak) ** (1 / 2.4), 0.18 ** (1 / 2.4)], atol=2e-4)
        assert 0.87 < rolled(peak) < 0.885


def test_highlights_roll_off_continuously_and_keep_their_hue():
    """Above the knee the curve is continuous with slope 1 at the knee, strictly increasing, and scales the three
    components alike (a saturated highlight keeps its component ratios)."""
    knee, peak = hdr.TONE_KNEE, 4.0
    x = np.linspace(0, peak, 40001)
    y = hdr._roll_off(x, peak)
    assert (np.diff(y) > 0).all() and y[-1] == pytest.approx(1.0)
    h = 1e-7
    assert (hdr._roll_off(np.float64(knee + h), peak) - knee) / h == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(hdr._roll_on(y, peak), x, atol=1e-9)
    view = hdr.HdrView("pq", wide_gamut=False)
    bright = hdr.pq_inverse_eotf(np.array([[[800.0, 400.0, 200.0]]]))
    lin = view.to_sdr(bright.astype(np.float32))[0, 0].astype(np.float64) ** 2.4
    np.testing.assert_allclose(lin / lin[0], [1.0, 0.5, 0.25], rtol=2e-3)


@pytest.mark.parametrize("transfer", ["pq", "hlg"])
def test_merge_changes_only_what_the_restorer_changed(transfer):
    """Untouched pixels come back bit for bit, even colours outside BT.709 and highlights above the peak that the
    view clips; a changed region comes back as the HDR signal of the restored view (in-gamut colours)."""
    view = hdr.HdrView(transfer)
    rng = np.random.default_rng(1)
    frame = view.to_hdr(rng.random((32, 48, 3)).astype(np.float32))  # colours a BT.709 view can show
    frame[0, 0] = (0.9, 0.1, 0.1)  # saturated BT.2020 red: outside BT.709
    frame[0, 1] = 1.0  # at the top of the signal: above the roll-off's peak for PQ
    sdr = view.to_sdr(frame)
    np.testing.assert_array_equal(view.merge(frame, sdr, sdr), frame)
    restored = sdr.copy()
    restored[10:20, 10:30] = rng.random((10, 20, 3)).astype(np.float32)
    out = view.merge(frame, sdr, restored)
    np.testing.assert_array_equal(out[:10], frame[:10])
    np.testing.assert_allclose(view.to_sdr(out[10:20, 10:30]), restored[10:20, 10:30], atol=2e-3)


def test_merge_upscaled_output():
    """An output larger than the frame: the frame and its view are resized (bicubic) to it, so an unchanged
    restoration gives the resized frame."""
    import cv2

    view = hdr.HdrView("hlg")
    frame = np.random.default_rng(2).random((20, 30, 3)).astype(np.float32)
    sdr = view.to_sdr(frame)
    up = cv2.resize(sdr, (60, 40), interpolation=cv2.INTER_CUBIC)
    expect = np.clip(cv2.resize(frame, (60, 40), interpolation=cv2.INTER_CUBIC), 0, 1)
    np.testing.assert_allclose(view.merge(frame, sdr, np.clip(up, 0, 1)), expect, atol=1e-5)


def test_hdr_view_for_stream_codes():
    """Transfer 16 is PQ, 18 HLG, anything else SDR; primaries 9 (BT.2020) turn the gamut conversion on."""
    assert hdr.hdr_view_for(16, 9) == hdr.HdrView("pq", wide_gamut=True)
    assert hdr.hdr_view_for(18, 1) == hdr.HdrView("hlg", wide_gamut=False)
    assert hdr.hdr_view_for(1, 1) is None and hdr.hdr_view_for(14, 9) is None and hdr.hdr_view_for(2, 2) is None
    with pytest.raises(ValueError, match="transfer"):
        hdr.HdrView("sdr")
