"""The default-restorer sweep runs in shards (``--shard K/N``) that ``--merge`` joins: the joined result must equal
what one run over all faces would have summarised, and shards of different sweeps must be refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import default_restorer as sweep

METRICS = ["psnr", "niqe"]
ROWS = ["input", "ispl", "default"]


def _shard(names: list[str], seed: int, weights: str = "w.safetensors") -> dict:
    rng = np.random.default_rng(seed)
    per_face = {
        task: {row: [{m: float(rng.normal()) for m in METRICS} for _ in names] for row in ROWS}
        for task in ("x8", "clean")
    }
    paste = {"default": {task: [float(v) for v in rng.choice([0.0, 0.5, 1.0], len(names))] for task in per_face}}
    result = {
        "benchmark": "default_restorer",
        "rows": ROWS,
        "legend": {"default": weights},
        "methods": {},
        "metrics_present": METRICS,
        "metrics_missing": {},
        "names": names,
        "per_face": per_face,
        "paste_weights": paste,
        "seconds": 10.0,
        "command": "python benchmarks/default_restorer.py --shard",
    }
    return sweep.summarise(result)


def _write(tmp_path: Path, name: str, result: dict) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(result))
    return path


def test_parse_shard_accepts_k_of_n_and_refuses_the_rest():
    assert sweep.parse_shard("3/8") == (3, 8)
    for bad in ("8/8", "-1/2", "1", "a/b"):
        with pytest.raises(SystemExit):
            sweep.parse_shard(bad)


def test_merge_equals_the_summary_of_all_faces(tmp_path):
    a, b = _shard(["ffhq/0", "prior/9999-1"], 0), _shard(["ffhq/1"], 1)
    merged = sweep.merge([_write(tmp_path, "a.json", a), _write(tmp_path, "b.json", b)])
    assert merged["names"] == ["ffhq/0", "prior/9999-1", "ffhq/1"]
    assert (
        merged["faces"] == 3
        and merged["face_sets"].startswith("2 ffhq256")
        and "1 MobileStyleGAN" in merged["face_sets"]
    )
    assert merged["seconds"] == 20.0 and [s["faces"] for s in merged["shards"]] == [2, 1]
    for task in ("x8", "clean"):
        for row in ROWS:
            faces = a["per_face"][task][row] + b["per_face"][task][row]
            assert merged["per_face"][task][row] == faces
            for m in METRICS:
                assert merged["tasks"][task][row]["mean"][m] == pytest.approx(np.mean([f[m] for f in faces]))
        # the interval against ispl is recomputed from all faces: it contains the mean difference
        diff = np.mean(
            [
                f["psnr"] - g["psnr"]
                for f, g in zip(merged["per_face"][task]["default"], merged["per_face"][task]["ispl"])
            ]
        )
        mean, lo, hi = merged["tasks"][task]["default"]["vs_ispl"]["psnr"]
        assert mean == pytest.approx(diff) and lo <= diff <= hi
        w = np.array(a["paste_weights"]["default"][task] + b["paste_weights"]["default"][task])
        assert merged["tasks"][task]["default"]["gate"] == f"{int((w == 0).sum())}/{int(((w > 0) & (w < 1)).sum())}"


def test_merge_refuses_shards_of_different_sweeps(tmp_path):
    a = _write(tmp_path, "a.json", _shard(["ffhq/0"], 0))
    with pytest.raises(SystemExit, match="legend"):
        sweep.merge([a, _write(tmp_path, "b.json", _shard(["ffhq/1"], 1, weights="other.safetensors"))])
    with pytest.raises(SystemExit, match="two shards"):
        sweep.merge([a, _write(tmp_path, "c.json", _shard(["ffhq/0"], 2))])


def test_shards_partition_the_faces():
    """Every face of the sweep lands in exactly one of N shards, and shard 0 of 1 is the whole sweep."""
    n_ffhq, n_prior = 7, 5
    assert sweep.shard_indices(n_ffhq, n_prior, (0, 1)) == (list(range(n_ffhq)), list(range(n_prior)))
    for n in (2, 3, 8):
        ffhq, prior = [], []
        for k in range(n):
            f, p = sweep.shard_indices(n_ffhq, n_prior, (k, n))
            ffhq += f
            prior += p
        assert sorted(ffhq) == list(range(n_ffhq)) and sorted(prior) == list(range(n_prior))


def _faces(values: dict[str, list[float]]) -> list[dict[str, float]]:
    n = len(next(iter(values.values())))
    return [{m: values[m][i] for m in values} for i in range(n)]


def test_acceptance_checks_the_mean_limits_and_the_intervals():
    """Issue 15's claims from per-face values built so that each check's answer is known."""
    result = {
        "metrics_present": ["psnr", "id_mobileface", "niqe"],
        "per_face": {
            # PSNR: default loses 0.5 dB on average but 1.5 dB on one face (reported, claim still met);
            # id_mobileface: +0.03 on average (over the 0.02 limit: not met)
            "jpeg90": {
                "input": _faces({"psnr": [40.0, 40.0], "id_mobileface": [0.0, 0.0], "niqe": [5.0, 5.0]}),
                "ispl": _faces({"psnr": [30.0, 30.0], "id_mobileface": [0.1, 0.1], "niqe": [9.0, 9.0]}),
                "default": _faces({"psnr": [41.0, 38.5], "id_mobileface": [0.03, 0.03], "niqe": [5.0, 5.0]}),
            },
            # niqe: default 1 lower than ispl on every face (met); id_mobileface: equal on the mean (not met)
            "x8": {
                "input": _faces({"psnr": [25.0] * 4, "id_mobileface": [0.1] * 4, "niqe": [11.0] * 4}),
                "ispl": _faces({"psnr": [24.0] * 4, "id_mobileface": [0.2, 0.3, 0.2, 0.3], "niqe": [10.0] * 4}),
                "default": _faces({"psnr": [26.0] * 4, "id_mobileface": [0.3, 0.2, 0.3, 0.2], "niqe": [9.0] * 4}),
            },
        },
    }
    acc = sweep.acceptance(result)
    psnr, idm = acc["never_worse"]["jpeg90"]["psnr"], acc["never_worse"]["jpeg90"]["id_mobileface"]
    assert psnr["mean_loss"] == pytest.approx(0.25) and psnr["worst_face"] == pytest.approx(1.5)
    assert psnr["faces_over_limit"] == 1 and psnr["met"]
    assert idm["mean_loss"] == pytest.approx(0.03) and not idm["met"]
    assert acc["better"]["x8"]["niqe"]["met"] and acc["better"]["x8"]["niqe"]["high"] == pytest.approx(-1.0)
    assert not acc["better"]["x8"]["id_mobileface"]["met"]
    assert "ms_swd" not in acc["better"]["x8"]  # a metric the sweep lacks is not checked
    assert acc["met"] == "2/4"
    # a run without MobileFace: the 0.02 limit is on MobileFace's scale, id_mfn's ~1e-4 distances are not checked
    # against it (they could never fail), and the identity interval against ispl is still checked
    old = {"metrics_present": ["psnr", "id_mfn", "niqe"], "per_face": {
        task: {row: [{("id_mfn" if m == "id_mobileface" else m): v for m, v in f.items()} for f in faces]
               for row, faces in rows.items()} for task, rows in result["per_face"].items()}}
    acc = sweep.acceptance(old)
    assert acc["identity"] == "id_mfn" and set(acc["never_worse"]["jpeg90"]) == {"psnr"}
    assert "id_mfn" in acc["better"]["x8"] and acc["met"] == "2/3"


def test_acceptance_judges_identity_with_mobileface_when_measured():
    """With both identity metrics measured, the claims use id_mobileface (the discriminating network) and not the
    weak id_mfn; a run without it (made before it existed) is checked with id_mfn."""
    faces = {"input": _faces({"psnr": [30.0] * 2, "id_mobileface": [0.10] * 2, "id_mfn": [0.0] * 2}),
             "ispl": _faces({"psnr": [30.0] * 2, "id_mobileface": [0.5] * 2, "id_mfn": [0.0] * 2}),
             "default": _faces({"psnr": [30.0] * 2, "id_mobileface": [0.15] * 2, "id_mfn": [0.0] * 2})}
    result = {"metrics_present": ["psnr", "id_mobileface", "id_mfn"], "per_face": {"clean": faces}}
    acc = sweep.acceptance(result)
    assert acc["identity"] == "id_mobileface" and set(acc["never_worse"]["clean"]) == {"psnr", "id_mobileface"}
    assert acc["never_worse"]["clean"]["id_mobileface"]["mean_loss"] == pytest.approx(0.05)
    assert not acc["never_worse"]["clean"]["id_mobileface"]["met"]  # 0.05 over the input: beyond the 0.02 limit
    result["metrics_present"] = ["psnr", "id_mfn"]
    assert sweep.acceptance(result)["identity"] == "id_mfn"
