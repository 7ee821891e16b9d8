"""The prior-comparison benchmark's summary (issue 13's checks): counts of tasks won by MobileStyleGAN over the 64 px
prior, the comparison with the input on upsampling/denoising M..XL, and the robustness spread across levels; and the
result keys of its projection columns (earlier results keep theirs)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

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


def _chunk(faces: list[str], psnr: list[float], ident: list[float | None], seconds: float = 10.0) -> dict:
    """A result of one chunk of faces: per-face scores and their means (NaN identities left out of the mean)."""
    finite = [v for v in ident if v is not None]
    cell = {"psnr": sum(psnr) / len(psnr), "fed": 0.4, "id_mobileface": sum(finite) / len(finite), "niqe": 6.0,
            "per_face": {"psnr": psnr, "id_mobileface": ident}}  # fed / niqe as results before per-face values
    row = {"task": "robust-upsample", "level": "M", "input": dict(cell),
           REAL: {**cell, "resolution": 256, "loss": "substitute", "seconds_per_face": seconds}}
    return {"benchmark": "prior_comparison", "command": f"chunk {faces}", "faces": faces, "steps": [30, 30, 30],
            "resolution": 256, "fidelity": [0.0], "projection": ["area"], "detail": [1.0], "precision": "fp32",
            "priors": {REAL: {"img_resolution": 256, "init": "encoder"}}, "rows": {"robust-upsample@M": row},
            "wall_s": 5.0, "hardware": "cpu"}


def test_merge_gives_the_means_over_every_face_of_every_chunk():
    a = _chunk(["a", "b"], [20.0, 22.0], [0.2, None], seconds=10.0)
    b = {**_chunk(["c"], [30.0], [0.5], seconds=40.0), "degradation_seed": 2}  # a chunk made with --seed's default
    merged = bench.merge_results([a, b])  # other seeds are other draws of one protocol: merged, each chunk's named
    cell = merged["rows"]["robust-upsample@M"][REAL]
    assert cell["psnr"] == 24.0  # (20 + 22 + 30) / 3, not the mean of the chunks' means (26)
    assert cell["id_mobileface"] == 0.35  # the NaN face counts for nothing: (0.2 + 0.5) / 2
    assert cell["per_face"]["psnr"] == [20.0, 22.0, 30.0] and cell["per_face"]["id_mobileface"] == [0.2, None, 0.5]
    assert cell["seconds_per_face"] == 20.0 and cell["loss"] == "substitute"
    assert merged["faces"] == ["a", "b", "c"] and merged["wall_s"] == 10.0
    assert [c["faces"] for c in merged["chunks"]] == [["a", "b"], ["c"]]
    assert [c["degradation_seed"] for c in merged["chunks"]] == [bench.SEED_BEFORE_OPTION, 2]  # a: made before --seed
    markdown = bench.to_markdown({**merged, "command": "merge"})
    assert "24.00" in markdown and "(c; degradation seed 2; 5 s)" in markdown


def test_merge_weights_results_without_per_face_values_by_their_faces():
    old = _chunk(["a", "b"], [20.0, 22.0], [0.2, 0.4])
    for cell in (old["rows"]["robust-upsample@M"]["input"], old["rows"]["robust-upsample@M"][REAL]):
        cell.pop("per_face")
    for key in ("detail", "precision"):  # results made before these keys existed ran with their defaults
        old.pop(key)
    cell = bench.merge_results([old, _chunk(["c"], [30.0], [0.5])])["rows"]["robust-upsample@M"][REAL]
    assert cell["psnr"] == 24.0 and abs(cell["id_mobileface"] - (0.3 * 2 + 0.5) / 3) < 1e-12
    assert "per_face" not in cell  # not every chunk had them


def test_merge_refuses_other_protocols_and_shared_faces():
    a = _chunk(["a"], [20.0], [0.2])
    with pytest.raises(ValueError, match="two chunks"):
        bench.merge_results([a, _chunk(["a"], [21.0], [0.3])])
    with pytest.raises(ValueError, match="steps"):
        bench.merge_results([a, {**_chunk(["b"], [21.0], [0.3]), "steps": [10, 10, 10]}])
    other = _chunk(["b"], [21.0], [0.3])
    other["rows"]["robust-upsample@M"].pop(REAL)
    with pytest.raises(ValueError, match="columns"):
        bench.merge_results([a, other])
    with pytest.raises(ValueError, match="two results"):
        bench.merge_results([a])


def test_paired_intervals_need_per_face_values_everywhere():
    a = _chunk(["a", "b"], [20.0, 22.0], [0.2, 0.4])
    b = _chunk(["c", "d"], [24.0, 26.0], [0.3, None])
    merged = bench.merge_results([a, b])
    row = merged["rows"]["robust-upsample@M"]
    row[REAL]["per_face"]["psnr"] = [x + 1.5 for x in row["input"]["per_face"]["psnr"]]  # 1.5 dB over every face
    row[REAL]["per_face"]["id_mobileface"] = [0.1, 0.5, 0.3, 0.2]  # -0.1, +0.1, 0; d's input is NaN
    body = _table(bench.paired_intervals(merged), "MobileStyleGAN's own output, paired over the 4 faces")
    # 3 paired faces: Student's t interval, 4.303 x 0.1 / sqrt(3) = 0.248 (the plain bootstrap gave [-0.1, +0.1])
    assert body == [["robust-upsample", "M", "+1.500 [+1.500, +1.500]*", "+0.000 [-0.248, +0.248]"]]
    merged["rows"]["robust-upsample@M"]["input"].pop("per_face")  # a chunk from before per-face values
    lines = bench.paired_intervals(merged)
    assert len(lines) == 2 and "not every cell here holds per-face values" in lines[1]
