"""evaluate_folders and `facerestore evaluate` on temporary folders."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from facerestore.cli import main
from facerestore.errors import InputError, WeightsMissingError
from facerestore.io import read_rgb, to_tensor, write_image
from facerestore.metrics import Metric, registry
from facerestore.metrics.base import DistributionMetric
from facerestore.metrics.evaluate import evaluate_folders, match_pairs, summarize
from facerestore.metrics.fullref import psnr, ssim
from facerestore.metrics.niqe import niqe

# ---------------------------------------------------------------- stand-in metrics for the registry


class HalfNaN(Metric):
    """Mean of the prediction, NaN for images whose mean is below 0.5 (like a face metric finding no face)."""

    def forward(self, pred, target=None):
        m = pred.double().mean(dim=(1, 2, 3))
        return torch.where(m < 0.5, torch.full_like(m, math.nan), m)


class CountingDist(DistributionMetric):
    """compute() = number of pairs seen, after checking that each batch's target matches its prediction."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def update(self, pred, target=None):
        assert target is not None and target.shape == pred.shape
        self.n += pred.shape[0]

    def compute(self):
        return float(self.n)

    def reset(self):
        self.n = 0


def missing_weights():
    raise WeightsMissingError("weights 'fake-net' are not in the cache (offline)")


def _register(monkeypatch, name, factory, kind="full-reference", needs_reference=True):
    spec = registry.MetricSpec(name, f"{__name__}:{factory}", kind, True, needs_reference, (0, math.inf), "test")
    monkeypatch.setitem(registry._BY_NAME, name, spec)


# ---------------------------------------------------------------- folders


def _img(seed: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    for stem, seed, (h, w) in (("a", 1, (40, 48)), ("b", 2, (40, 48)), ("c", 3, (32, 32)), ("d", 4, (40, 48))):
        ref = _img(seed, h, w)
        write_image(gt / f"{stem}.png", ref)
        noisy = np.clip(ref + 0.05 * _img(seed + 10, h, w), 0, 1)
        write_image(pred / (f"{stem}.JPG" if stem == "b" else f"{stem}.png"), noisy)
    write_image(gt / "size.png", _img(5, 40, 48))
    write_image(pred / "size.png", _img(5, 44, 48))
    (pred / "broken.png").write_bytes(b"not an image")
    write_image(gt / "broken.png", _img(6, 40, 48))
    write_image(pred / "only_pred.png", _img(7, 40, 48))
    write_image(gt / "only_gt.png", _img(8, 40, 48))
    return pred, gt


def test_pairs_reports_and_scores(folders):
    pred, gt = folders
    rep = evaluate_folders(pred, gt, metrics=("psnr", "ssim"), batch_size=2, progress=False)
    assert [r["name"] for r in rep["per_image"]] == ["a", "b", "c", "d"]
    assert rep["per_image"][1]["pred"].endswith("b.JPG")  # extension case does not matter
    assert rep["unmatched_pred"] == [str(pred / "only_pred.png")]
    assert rep["unmatched_gt"] == [str(gt / "only_gt.png")]
    assert [(m["pred"], m["pred_size"], m["gt_size"]) for m in rep["size_mismatch"]] == [
        (str(pred / "size.png"), [48, 44], [48, 40])]
    assert [u["path"] for u in rep["unreadable"]] == [str(pred / "broken.png")]
    assert "cannot decode" in rep["unreadable"][0]["reason"]
    # scores equal the functions on the same files (two sizes: batched separately)
    for row in rep["per_image"]:
        p, t = to_tensor(read_rgb(row["pred"])), to_tensor(read_rgb(row["gt"]))
        assert row["scores"]["psnr"] == pytest.approx(float(psnr(p, t)), abs=1e-12)
        assert row["scores"]["ssim"] == pytest.approx(float(ssim(p, t)), abs=1e-12)
    vals = [r["scores"]["psnr"] for r in rep["per_image"]]
    assert rep["summary"]["psnr"] == {"mean": pytest.approx(np.mean(vals)), "std": pytest.approx(np.std(vals)),
                                      "count": 4, "n_undefined": 0}
    json.dumps(rep, allow_nan=True)  # serialisable


def test_batch_size_and_crop_border(folders):
    pred, gt = folders
    a = evaluate_folders(pred, gt, metrics="psnr", batch_size=1, crop_border=3, progress=False)
    b = evaluate_folders(pred, gt, metrics=["psnr"], batch_size=8, crop_border=3, progress=False)
    assert a["per_image"] == b["per_image"]
    row = a["per_image"][0]
    p, t = to_tensor(read_rgb(row["pred"])), to_tensor(read_rgb(row["gt"]))
    assert row["scores"]["psnr"] == pytest.approx(float(psnr(p, t, crop_border=3)), abs=1e-12)


def test_nan_scores_are_counted(folders, monkeypatch):
    _register(monkeypatch, "halfnan", "HalfNaN")
    pred, gt = folders
    rep = evaluate_folders(pred, gt, metrics=["halfnan"], progress=False)
    vals = np.array([r["scores"]["halfnan"] for r in rep["per_image"]])
    n_nan = int(np.isnan(vals).sum())
    assert rep["summary"]["halfnan"]["n_undefined"] == n_nan
    assert rep["summary"]["halfnan"]["count"] == len(vals) - n_nan
    assert summarize([1.0, math.nan, 3.0]) == {"mean": 2.0, "std": 1.0, "count": 2, "n_undefined": 1}


def test_distribution_metric_sees_all_pairs(folders, monkeypatch):
    _register(monkeypatch, "countdist", "CountingDist", kind="distribution")
    pred, gt = folders
    rep = evaluate_folders(pred, gt, metrics=["psnr", "countdist"], batch_size=3, progress=False)
    assert rep["summary"]["countdist"] == {"value": 4.0, "count": 4, "n_undefined": 0}
    assert "countdist" not in rep["per_image"][0]["scores"]


def test_missing_weights_fail_before_any_work(folders, monkeypatch):
    _register(monkeypatch, "needsweights", "missing_weights")
    import facerestore.metrics.evaluate as ev

    def no_reading(path):
        raise AssertionError("images were read before all metrics were created")

    monkeypatch.setattr(ev, "_read", no_reading)
    pred, gt = folders
    with pytest.raises(WeightsMissingError, match="fake-net"):
        evaluate_folders(pred, gt, metrics=["psnr", "needsweights"], progress=False)


def test_no_reference_without_gt(tmp_path, astronaut):
    d = tmp_path / "pred"
    write_image(d / "x.png", astronaut[:192, :288])
    write_image(d / "y.png", astronaut[100:292, 50:242])  # another size in the same folder
    rep = evaluate_folders(d, None, metrics=["niqe"], progress=False)
    assert rep["gt_dir"] is None and [r["name"] for r in rep["per_image"]] == ["x", "y"]
    for r in rep["per_image"]:
        assert r["scores"]["niqe"] == pytest.approx(float(niqe(to_tensor(read_rgb(r["pred"])))), abs=1e-12)
    with pytest.raises(InputError, match="psnr need reference"):
        evaluate_folders(d, None, metrics=["niqe", "psnr"], progress=False)
    with pytest.raises(InputError, match="unknown metric"):
        evaluate_folders(d, None, metrics=["nope"], progress=False)


def test_metric_errors_are_reported_not_fatal(tmp_path):
    """NIQE on an image too small for two blocks: NaN plus an error entry, the run goes on."""
    d = tmp_path / "p"
    write_image(d / "small.png", _img(1, 64, 64))
    rep = evaluate_folders(d, None, metrics=["niqe"], progress=False)
    assert math.isnan(rep["per_image"][0]["scores"]["niqe"])
    assert rep["summary"]["niqe"]["n_undefined"] == 1
    assert rep["errors"][0]["metric"] == "niqe" and "96x96" in rep["errors"][0]["reason"]


def test_match_pairs_duplicates(tmp_path):
    files = [tmp_path / "a.png", tmp_path / "a.jpg", tmp_path / "b.png"]
    m = match_pairs(files, [tmp_path / "a.PNG"])
    assert [(s, p.name, g.name) for s, p, g in m["pairs"]] == [("a", "a.jpg", "a.PNG")]
    assert m["unmatched_pred"] == [str(tmp_path / "b.png")]
    assert len(m["duplicates"]) == 1 and "duplicate stem" in m["duplicates"][0]["reason"]


# ---------------------------------------------------------------- CLI


def test_cli_writes_json_and_csv(folders, tmp_path, capsys):
    pred, gt = folders
    out, table = tmp_path / "out" / "report.json", tmp_path / "out" / "per_image.csv"
    rc = main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--metrics", "psnr,ssim", "--out", str(out),
               "--csv", str(table), "--quiet"])
    assert rc == 1  # the size mismatch and the broken file were skipped (and reported)
    captured = capsys.readouterr()
    assert "psnr" in captured.out and "4 image(s) scored" in captured.out
    assert "skipped" in captured.err and "broken.png" in captured.err
    rep = json.loads(out.read_text())
    rows = list(csv.DictReader(table.open()))
    assert [r["name"] for r in rows] == [r["name"] for r in rep["per_image"]] == ["a", "b", "c", "d"]
    for r, j in zip(rows, rep["per_image"]):
        assert float(r["psnr"]) == j["scores"]["psnr"]
    assert not list(out.parent.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_cli_list_and_bad_input(tmp_path, capsys):
    assert main(["evaluate", "--list"]) == 0
    listed = capsys.readouterr().out
    for spec in registry.SPECS:
        assert spec.name in listed
    assert "lpips-alex-v0.1" in listed and "no-reference" in listed
    assert main(["evaluate", "--pred", str(tmp_path / "missing"), "--metrics", "niqe"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "input not found" in err[0]
    assert main(["evaluate", "--pred", str(tmp_path), "--metrics", "bogus"]) == 2
    assert "unknown metric" in capsys.readouterr().err


def test_identical_pairs_do_not_hide_the_other_scores(folders, capsys):
    """An identical pair's PSNR is inf (the truth, kept in ``mean``); the table shows the finite pairs' mean."""
    pred, gt = folders
    (pred / "a.png").write_bytes((gt / "a.png").read_bytes())
    rep = evaluate_folders(pred, gt, metrics=["psnr"], progress=False)
    scores = {r["name"]: r["scores"]["psnr"] for r in rep["per_image"]}
    finite = [v for v in scores.values() if math.isfinite(v)]
    s = rep["summary"]["psnr"]
    assert math.isinf(scores["a"]) and len(finite) == len(scores) - 1
    assert math.isinf(s["mean"]) and s["n_infinite"] == 1
    assert s["finite_mean"] == pytest.approx(float(np.mean(finite)), abs=1e-12)
    assert s["finite_std"] == pytest.approx(float(np.std(finite)), abs=1e-12)
    assert summarize([math.inf, math.inf])["finite_mean"] != summarize([math.inf, math.inf])["finite_mean"]  # NaN
    assert "n_infinite" not in summarize([1.0, 2.0])

    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--metrics", "psnr", "--quiet"]) == 1  # skips
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("psnr "))
    assert float(row.split()[2]) == pytest.approx(np.mean(finite), abs=1e-4)
    assert f"1 of {len(scores)} score(s) infinite" in out


def test_a_prediction_at_a_whole_multiple_of_the_reference_says_how_to_score_it(tmp_path):
    """`restore` upscales by 2 by default: such outputs are skipped as a size mismatch, with the way out."""
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    write_image(gt / "a.png", _img(1, 20, 30))
    write_image(pred / "a.png", _img(1, 40, 60))
    write_image(gt / "b.png", _img(2, 20, 30))
    write_image(pred / "b.png", _img(2, 21, 30))
    rep = evaluate_folders(pred, gt, metrics=["psnr"], progress=False)
    reasons = {Path(m["pred"]).name: m["reason"] for m in rep["size_mismatch"]}
    assert reasons["a.png"] == ("prediction is 60x40, reference is 30x20 (2x: restored with --upscale 2? restore "
                                "with --upscale 1 to score against these references)")
    assert reasons["b.png"] == "prediction is 30x21, reference is 30x20"


def test_unscored_predictions_fail_the_exit_status_and_extra_references_do_not(tmp_path, capsys):
    """A prediction without a reference of its name was never scored: exit 1 like any skipped input. References
    without a prediction (a few faces scored against a whole dataset) are normal: exit 0, one line when many."""
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    for i in range(8):
        write_image(gt / f"{i:05d}.png", _img(i, 32, 32))
    write_image(pred / "00000.png", _img(0, 32, 32) * 0.9)
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--metrics", "psnr", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "7 references have no prediction" in err and len(err.strip().splitlines()) == 1
    write_image(pred / "stray.png", _img(9, 32, 32))
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--metrics", "psnr", "--quiet"]) == 1
    assert "unmatched prediction" in capsys.readouterr().err


def test_json_report_is_standard_json_and_no_reference_metrics_ignore_sizes(folders, tmp_path, capsys):
    """Identical images have PSNR inf and every range ends at inf: the report holds them as "inf" (JSON has no
    Infinity; other parsers refuse it). With no-reference metrics only, a reference of another size is no reason
    to skip an image."""
    pred, gt = folders
    same = tmp_path / "same"
    same.mkdir()
    shutil.copy(gt / "a.png", same / "a.png")
    out = tmp_path / "r.json"
    main(["evaluate", "--pred", str(same), "--gt", str(gt), "--metrics", "psnr", "--out", str(out), "--quiet"])
    text = out.read_text()
    rep = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert rep["per_image"][0]["scores"]["psnr"] == "inf" and rep["metric_info"]["psnr"]["range"] == [0, "inf"]
    assert float(rep["per_image"][0]["scores"]["psnr"]) == math.inf
    rep = evaluate_folders(pred, gt, metrics=("niqe",), progress=False)
    assert rep["size_mismatch"] == [] and "size" in [r["name"] for r in rep["per_image"]]
    capsys.readouterr()
