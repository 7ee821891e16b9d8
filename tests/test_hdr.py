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
    # HLG cannot carry bright colours of low luminance (a vivid blue near white: its scene light would exceed 1 on
    # the 1000-nit display's inverse OOTF); those clip, every other colour comes back
    carried = signal.max(-1) < 0.999
    assert carried.mean() > (0.99 if transfer == "hlg" else 0.999)
    np.testing.assert_allclose(view.to_sdr(signal)[carried], sdr[carried], atol=1e-3)
    grey = np.linspace(0, 1, 501, dtype=np.float32)[:, None, None] * np.ones((1, 1, 3), np.float32)
    np.testing.assert_allclose(view.to_sdr(view.to_hdr(grey)), grey, atol=1e-6)
    ramp = view.to_sdr(grey)[:, 0, 0]
    assert (np.diff(ramp) >= 0).all() and ramp[-1] == pytest.approx(1.0, abs=1e-6)


def test_bt2408_reference_levels_land_alike_in_pq_and_hlg():
    """BT.2408's reference levels, published for both transfers, give the same view: diffuse white (203 nits PQ =
    58 %, HLG 75 %) and the 18 % grey card (26 nits PQ = 38 %, HLG 38 %). HLG goes through its 1000-nit display
    (system gamma 1.2), which is what puts its 75 % at 203 nits. The grey card is below the knee, so it is exactly
    its display light over 203 nits; white is 0.25 above the knee, on the curve that reaches SDR white at 1000 nits."""
    pq = hdr.HdrView("pq", wide_gamut=False)
    hlg = hdr.HdrView("hlg", wide_gamut=False)
    white_pq, grey_pq = hdr.pq_inverse_eotf(np.array([203.0, 26.0]))
    assert (round(float(white_pq), 2), round(float(grey_pq), 2)) == (0.58, 0.38)

    def shown(view, signal):
        return float(view.to_sdr(np.full((1, 1, 3), signal, np.float32))[0, 0, 0])

    knee, peak = 0.75, 1000 / 203
    white = (knee + 0.25 / (1 + 0.25 * (1 / 0.25 - 1 / (peak - knee)))) ** (1 / 2.4)  # the curve written out
    assert shown(pq, white_pq) == pytest.approx(white, abs=2e-4)
    assert shown(hlg, 0.75) == pytest.approx(white, abs=2e-3)  # BT.2408's 75 % is 203 nits to 0.1 %
    assert shown(pq, grey_pq) == pytest.approx((26 / 203) ** (1 / 2.4), abs=2e-4)
    grey_hlg = (float(hdr.hlg_inverse_oetf(np.float64(0.38))) ** 1.2 * 1000 / 203) ** (1 / 2.4)
    assert shown(hlg, 0.38) == pytest.approx(grey_hlg, abs=2e-4)
    assert abs(shown(hlg, 0.38) - shown(pq, grey_pq)) < 0.02


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
    # a change goes back in full where the signal needs at most MAX_SIGNAL_GAIN times it (most colours), else capped
    change = restored - sdr
    full = (np.abs(view.to_hdr(restored) - view.to_hdr(sdr)) <= hdr.MAX_SIGNAL_GAIN * np.abs(change) + 1e-6).all(-1)
    full &= view.to_hdr(restored).max(-1) < 0.999
    assert full[10:20, 10:30].mean() > 0.75
    np.testing.assert_allclose(view.to_sdr(out)[full], restored[full], atol=2e-3)
    assert (np.abs(out - frame) <= hdr.MAX_SIGNAL_GAIN * np.abs(change) + 1e-6).all()


def test_a_small_change_near_white_stays_small_in_the_signal():
    """Near SDR white the inverse roll-off is steep: one 8-bit step up at 0.996 would take PQ from ~440 to 1000
    nits. A change goes back at most MAX_SIGNAL_GAIN times its size, in either direction, and sizes must match."""
    for transfer in ("pq", "hlg"):
        view = hdr.HdrView(transfer)
        sdr = np.full((4, 4, 3), 0.996, np.float32)
        frame = view.to_hdr(sdr)
        for step in (1 / 255, -1 / 255):
            out = view.merge(frame, sdr, np.clip(sdr + step, 0, 1))
            assert np.abs(out - frame).max() <= hdr.MAX_SIGNAL_GAIN / 255 + 1e-6
        mid = np.full((4, 4, 3), 0.5, np.float32)  # where faces are: the change goes back in full
        out = view.merge(view.to_hdr(mid), mid, mid + 0.02)
        np.testing.assert_allclose(view.to_sdr(out), mid + 0.02, atol=1e-3)
        with pytest.raises(ValueError, match="one size"):
            view.merge(frame, sdr, np.zeros((8, 8, 3), np.float32))


def test_hdr_view_for_stream_codes():
    """Transfer 16 is PQ, 18 HLG, anything else SDR; primaries 9 (BT.2020) turn the gamut conversion on."""
    assert hdr.hdr_view_for(16, 9) == hdr.HdrView("pq", wide_gamut=True)
    assert hdr.hdr_view_for(18, 1) == hdr.HdrView("hlg", wide_gamut=False)
    assert hdr.hdr_view_for(1, 1) is None and hdr.hdr_view_for(14, 9) is None and hdr.hdr_view_for(2, 2) is None
    with pytest.raises(ValueError, match="transfer"):
        hdr.HdrView("sdr")
