"""The prior-comparison benchmark's summary (issue 13's checks): counts of tasks won by MobileStyleGAN over the 64 px
prior, the comparison with the input on upsampling/denoising M..XL, and the robustness spread across levels; and the
result keys of its projection columns (earlier results keep theirs)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import prior_comparison as bench

SMALL, REAL = bench.PRIORS
LEVELS = ("XS", "S", "M", "L", "XL")


def _scores(psnr: float, fed: float = 0.5, ident: float = 0.3, niqe: float = 5.0) -> dict:
    return {"psnr": psnr, "fed": fed, "id_mobileface": ident, "niqe": niqe}


def _result() -> dict:
    rows = {}
    for i, lv in enumerate(LEVELS):
        # upsampling: the input loses 2 dB a level; the real prior sits 1 dB under it except at XL; the small prior
        # is worse on PSNR and FED everywhere, better on identity and better on NIQE at XS only
        rows[f"robust-upsample@{lv}"] = {
            "task": "robust-upsample", "level": lv, "input": _scores(30 - 2 * i, ident=0.2 + 0.1 * i),
            SMALL: _scores(10, fed=0.7, ident=0.2, niqe=4.0 if lv == "XS" else 9.0),
            REAL: _scores(30 - 2 * i - (1 if lv != "XL" else -0.5), fed=0.4, ident=0.25, niqe=5.0)}
    rows["robust-upsample+denoise@M"] = {"task": "robust-upsample+denoise", "level": "M", "input": _scores(15),
                                         SMALL: _scores(12, niqe=6.0), REAL: _scores(18, fed=0.4, ident=0.25)}
    return {"priors": {n: {"init": "mean"} for n in bench.PRIORS}, "rows": rows}


def _table(lines: list[str], title: str) -> list[list[str]]:
    start = next(i for i, line in enumerate(lines) if line.startswith("## " + title))
    start = next(i for i in range(start, len(lines)) if lines[i].startswith("|---"))
    body = []
    for line in lines[start + 1:]:
        if not line.startswith("|"):
            break
        body.append([c.strip() for c in line.strip("|").split("|")])
    return body


def test_summary_counts_wins_compares_with_the_input_and_reports_the_spread():
    lines = bench.summary(_result())
    wins = {r[0]: (r[1], r[2]) for r in _table(lines, "MobileStyleGAN against the 64 px prior")}
    assert wins["psnr"] == ("6 of 6", "none")
    assert wins["fed"] == ("6 of 6", "none")
    assert wins["id_mobileface"] == ("1 of 6", "robust-upsample@XS, robust-upsample@S, robust-upsample@M, "
                                     "robust-upsample@L, robust-upsample@XL")  # the small prior's 0.2 beats 0.25
    assert wins["niqe"][0] == "5 of 6" and wins["niqe"][1] == "robust-upsample@XS"
    vs_input = _table(lines, "MobileStyleGAN against the degraded input")
    assert [r[1] for r in vs_input] == ["M", "L", "XL"] and {r[2] for r in vs_input} == {"MobileStyleGAN"}
    assert vs_input[0][3] == "26.00 -> 25.00" and vs_input[2][3] == "22.00 -> 22.50"
    assert vs_input[1][4] == "0.500 -> 0.250"
    assert [r[5] for r in vs_input] == ["no", "no", "yes"]  # PSNR and identity both better only at XL
    spread = {r[0]: r[2:] for r in _table(lines, "Robustness")}
    assert spread["MobileStyleGAN"] == ["29.00 (-1.00)", "27.00 (-1.00)", "25.00 (-1.00)", "23.00 (-1.00)",
                                        "22.50 (+0.50)", "6.50"]
    # the small prior's output is flat (spread 0) while its gain grows by 2 dB a level as the input worsens
    assert spread["64 px prior"] == ["10.00 (-20.00)", "10.00 (-18.00)", "10.00 (-16.00)", "10.00 (-14.00)",
                                     "10.00 (-12.00)", "0.00"]


def test_summary_skips_what_a_run_did_not_measure():
    result = _result()
    for row in result["rows"].values():
        row.pop(SMALL)
    result["priors"].pop(SMALL)
    lines = bench.summary(result)
    assert not any(line.startswith("## MobileStyleGAN against the 64 px prior") for line in lines)
    assert [r[0] for r in _table(lines, "Robustness")] == ["MobileStyleGAN"]


def test_projection_column_keys():
    assert bench.column_suffix(0.0, "recorded") == ""
    assert bench.column_suffix(1.0) == "@fidelity=1"  # the box average: the keys of earlier results
    assert bench.column_suffix(0.5, "recorded") == "@fidelity=0.5,recorded"
    assert bench.column_suffix(1.0, "recorded", 0.5) == "@fidelity=1,recorded;detail=0.5"
    assert bench.column_suffix(1.0, "area", 0.25) == "@fidelity=1;detail=0.25"
    for fid, proj, detail in ((1.0, "recorded", 0.5), (0.5, "area", 1.0), (1.0, "area", 0.25)):
        key = REAL + bench.column_suffix(fid, proj, detail)
        prior, f, pr, d = bench.parse_column(key)
        assert (prior, float(f), pr or "area", float(d or 1)) == (REAL, fid, proj, detail)


def test_every_projection_column_is_compared_with_the_input():
    result = _result()
    result.update(fidelity=[0.0, 1.0], projection=["recorded"], detail=[1.0, 0.5])
    key_full, key_half = (REAL + bench.column_suffix(1.0, "recorded", d) for d in (1.0, 0.5))
    for row in result["rows"].values():  # the half-detail column beats the input on PSNR by 0.5 dB everywhere
        row[key_full] = _scores(row["input"]["psnr"] - 0.2, ident=0.1)
        row[key_half] = _scores(row["input"]["psnr"] + 0.5, ident=0.15)
    suffixes = [bench.column_suffix(1.0, "recorded", d) for d in (1.0, 0.5)]
    assert bench.columns(result) == [SMALL, *(SMALL + x for x in suffixes), REAL, key_full, key_half]
    vs_input = _table(bench.summary(result), "MobileStyleGAN against the degraded input")
    assert [(r[1], r[2]) for r in vs_input[:3]] == [
        ("M", "MobileStyleGAN"), ("M", "MobileStyleGAN, fidelity 1 through the recorded filter"),
        ("M", "MobileStyleGAN, fidelity 1 through the recorded filter, detail 0.5")]
    assert [r[5] for r in vs_input if r[1] == "L"] == ["no", "no", "yes"]
    assert "detail 0.5" in bench.to_markdown({**result, "command": "x", "faces": [], "steps": [1, 1, 1],
                                              "wall_s": 1.0, "hardware": "cpu"})
