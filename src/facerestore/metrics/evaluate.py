"""Score a folder of restored images against a folder of references with any registered metrics.

``evaluate_folders`` pairs files by stem (stems compared exactly, any image extension in any case, so
``a.png`` pairs with ``a.JPG``), batches pairs of the same size, and
returns a JSON-serialisable report: per-image scores, a summary per metric, and every file it could
not use with the reason (unmatched, size mismatch, unreadable, duplicate stem, metric error). Nothing is
dropped silently: undefined scores (NaN, e.g. no face found) are counted in ``n_undefined``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facerestore.errors import FaceRestoreError, InputError
from facerestore.metrics import registry

__all__ = ["crop_border_tensor", "evaluate_folders", "match_pairs", "summarize"]


def _index_by_stem(files: Iterable[Path]) -> tuple[dict[str, Path], list[dict[str, str]]]:
    by_stem: dict[str, Path] = {}
    dups: list[dict[str, str]] = []
    for f in sorted(files, key=lambda p: (p.stem, p.suffix.lower(), p.name)):
        if f.stem in by_stem:
            dups.append({"path": str(f), "reason": f"duplicate stem {f.stem!r}, using {by_stem[f.stem].name}"})
        else:
            by_stem[f.stem] = f
    return by_stem, dups


def match_pairs(pred_files: Sequence[Path], gt_files: Sequence[Path]) -> dict[str, Any]:
    """Pair files by exact stem (any image extension, any case).

    Returns {"pairs": [(stem, pred, gt)], "unmatched_pred": [...], "unmatched_gt": [...],
    "duplicates": [{"path", "reason"}]} with paths as Path objects in the pairs and str elsewhere.
    """
    preds, dup_p = _index_by_stem(pred_files)
    gts, dup_g = _index_by_stem(gt_files)
    pairs = [(s, preds[s], gts[s]) for s in sorted(preds) if s in gts]
    return {
        "pairs": pairs,
        "unmatched_pred": [str(preds[s]) for s in sorted(preds) if s not in gts],
        "unmatched_gt": [str(gts[s]) for s in sorted(gts) if s not in preds],
        "duplicates": dup_p + dup_g,
    }


def crop_border_tensor(x: torch.Tensor, crop_border: int) -> torch.Tensor:
    """Remove ``crop_border`` pixels from each side of (B, C, H, W); InputError if nothing is left."""
    if crop_border <= 0:
        return x
    h, w = x.shape[-2:]
    if 2 * crop_border >= min(h, w):
        raise InputError(f"--crop-border {crop_border} leaves nothing of a {w}x{h} image")
    return x[..., crop_border:-crop_border, crop_border:-crop_border]


def _scale_hint(pred_hw: tuple[int, ...], gt_hw: tuple[int, ...]) -> str:
    """A hint when the prediction is the reference's size times a whole scale (``restore`` upscales by 2 by default):
    score outputs restored at the reference's size instead."""
    (ph, pw), (gh, gw) = pred_hw, gt_hw
    for k in range(2, 9):
        if (ph, pw) == (round(k * gh), round(k * gw)):
            return f" ({k}x: restored with --upscale {k}? restore with --upscale 1 to score against these references)"
    return ""


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """mean / std (population) / count over the defined (non-NaN) values, and n_undefined (NaN count).

    An infinite score (PSNR of an identical pair) makes ``mean`` infinite and ``std`` NaN, which is the
    truth but says nothing about the other pairs; such summaries also carry ``n_infinite`` and
    ``finite_mean`` / ``finite_std`` over the finite scores (NaN when there are none).
    """
    a = np.asarray(values, dtype=np.float64)
    nan = np.isnan(a)
    d = a[~nan]
    if d.size == 0:
        mean = std = math.nan
    else:
        with np.errstate(invalid="ignore"):  # inf - inf in std when a PSNR is inf
            mean, std = float(d.mean()), float(d.std())
    out = {"mean": mean, "std": std, "count": int(d.size), "n_undefined": int(nan.sum())}
    infinite = np.isinf(d)
    if infinite.any():
        finite = d[~infinite]
        out["n_infinite"] = int(infinite.sum())
        out["finite_mean"] = float(finite.mean()) if finite.size else math.nan
        out["finite_std"] = float(finite.std()) if finite.size else math.nan
    return out


def _create_metrics(names: Sequence[str], device: str) -> dict[str, Any]:
    # every metric is built before any image is read, so missing weights fail fast with their own message
    return {n: registry.create(n, device=device) for n in names}


def _read(path: Path) -> np.ndarray:
    from facerestore.io import read_rgb

    return read_rgb(path)


def evaluate_folders(
    pred_dir: str | Path,
    gt_dir: str | Path | None = None,
    metrics: Sequence[str] = ("psnr", "ssim"),
    device: str = "cpu",
    batch_size: int = 8,
    crop_border: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate the images in ``pred_dir`` (against ``gt_dir``, paired by stem) with ``metrics``.

    * No-reference metrics (NIQE, ...) run without ``gt_dir``; asking for a reference metric without
      ``gt_dir`` raises InputError. With ``gt_dir`` only matched pairs are scored.
    * Distribution metrics (``fid``, ``kid``, ``pfid``) see all scored predictions vs all their references
      through ``update``/``compute``; their summary is ``{"value", "count"}``.
    * ``crop_border`` pixels are removed from each side of both images before every metric.
    * Images of different sizes are fine: only same-size pairs are batched together.

    Returns a JSON-serialisable dict: ``per_image`` (list of {name, pred, gt, scores}), ``summary``
    (per metric: mean, std, count, n_undefined), ``metric_info``, ``n_scored``, and the lists
    ``unmatched_pred``, ``unmatched_gt``, ``size_mismatch``, ``unreadable``, ``duplicates``, ``errors``.
    """
    from tqdm import tqdm

    from facerestore.io import list_images

    if batch_size < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}")
    if crop_border < 0:
        raise InputError(f"crop border must be >= 0, got {crop_border}")
    if isinstance(metrics, str):
        metrics = metrics.split(",")
    names = [m.strip().lower() for m in metrics if m.strip()]
    if not names:
        raise InputError("no metrics given")
    names = list(dict.fromkeys(names))
    specs = {n: registry.get_spec(n) for n in names}  # InputError for unknown names
    needs_ref = [n for n, s in specs.items() if s.needs_reference]
    if gt_dir is None and needs_ref:
        raise InputError(f"metrics {', '.join(needs_ref)} need reference images: give --gt DIR "
                         "(no-reference metrics: " + ", ".join(registry.list_metrics("no-reference")) + ")")
    pred_files = list_images(pred_dir)
    gt_files = list_images(gt_dir) if gt_dir is not None else []
    models = _create_metrics(names, device)

    report: dict[str, Any] = {
        "pred_dir": str(pred_dir),
        "gt_dir": None if gt_dir is None else str(gt_dir),
        "metrics": names,
        "device": str(device),
        "crop_border": int(crop_border),
        "metric_info": {
            n: {"kind": s.kind, "lower_better": s.lower_better, "range": list(s.score_range)} for n, s in specs.items()
        },
        "per_image": [],
        "summary": {},
        "unmatched_pred": [],
        "unmatched_gt": [],
        "size_mismatch": [],
        "unreadable": [],
        "duplicates": [],
        "errors": [],
    }
    if gt_dir is not None:
        m = match_pairs(pred_files, gt_files)
        items = m["pairs"]
        for k in ("unmatched_pred", "unmatched_gt", "duplicates"):
            report[k] = m[k]
    else:
        by_stem, dups = _index_by_stem(pred_files)
        items = [(s, p, None) for s, p in sorted(by_stem.items())]
        report["duplicates"] = dups

    per_image: dict[str, dict[str, Any]] = {}
    scores: dict[str, dict[str, float]] = {}
    dist_count = {n: 0 for n in names if specs[n].kind == "distribution"}
    pending: dict[tuple[int, int], list[tuple[str, np.ndarray, np.ndarray | None]]] = {}

    def run_batch(batch: list[tuple[str, np.ndarray, np.ndarray | None]]) -> None:
        stems = [b[0] for b in batch]
        pred = torch.from_numpy(np.stack([b[1] for b in batch]).transpose(0, 3, 1, 2).copy()).to(device)
        gt = None
        if batch[0][2] is not None:
            gt = torch.from_numpy(np.stack([b[2] for b in batch]).transpose(0, 3, 1, 2).copy()).to(device)
        try:
            pred = crop_border_tensor(pred, crop_border)
            gt = crop_border_tensor(gt, crop_border) if gt is not None else None
        except InputError as exc:
            for s in stems:
                report["errors"].append({"name": s, "metric": "*", "reason": str(exc)})
                for n in names:
                    scores[s][n] = math.nan
            return
        for n in names:
            model = models[n]
            try:
                with torch.no_grad():
                    if specs[n].kind == "distribution":
                        model.update(pred, gt)
                        dist_count[n] += len(stems)
                        continue
                    out = model(pred, gt if specs[n].needs_reference else None)
                vals = out.detach().double().cpu().reshape(-1).tolist()
            except FaceRestoreError as exc:
                msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                vals = [math.nan] * len(stems)
                for s in stems:
                    report["errors"].append({"name": s, "metric": n, "reason": msg})
            for s, v in zip(stems, vals):
                scores[s][n] = v

    bar = tqdm(items, desc="evaluating", unit="img", disable=not progress or len(items) < 2, file=sys.stderr)
    for stem, pred_path, gt_path in bar:
        try:
            p = _read(pred_path)
        except InputError as exc:
            report["unreadable"].append({"path": str(pred_path), "reason": str(exc)})
            continue
        g = None
        if gt_path is not None and needs_ref:  # no-reference metrics never read the reference
            try:
                g = _read(gt_path)
            except InputError as exc:
                report["unreadable"].append({"path": str(gt_path), "reason": str(exc)})
                continue
            if g.shape != p.shape:
                report["size_mismatch"].append({
                    "pred": str(pred_path), "gt": str(gt_path),
                    "pred_size": [p.shape[1], p.shape[0]], "gt_size": [g.shape[1], g.shape[0]],
                    "reason": f"prediction is {p.shape[1]}x{p.shape[0]}, reference is {g.shape[1]}x{g.shape[0]}"
                              + _scale_hint(p.shape[:2], g.shape[:2]),
                })
                continue
        per_image[stem] = {"name": stem, "pred": str(pred_path), "gt": None if gt_path is None else str(gt_path)}
        scores[stem] = {}
        key = (p.shape[0], p.shape[1])
        pending.setdefault(key, []).append((stem, p, g))
        if len(pending[key]) >= batch_size:
            run_batch(pending.pop(key))
    for key in list(pending):
        run_batch(pending.pop(key))

    for stem in sorted(per_image):
        row = per_image[stem]
        row["scores"] = {n: scores[stem].get(n, math.nan) for n in names if specs[n].kind != "distribution"}
        report["per_image"].append(row)
    for n in names:
        if specs[n].kind == "distribution":
            if dist_count[n] == 0:
                value = math.nan
            else:
                try:
                    value = float(models[n].compute())
                except FaceRestoreError as exc:
                    report["errors"].append({"name": "*", "metric": n, "reason": str(exc).splitlines()[0]})
                    value = math.nan
            report["summary"][n] = {"value": value, "count": dist_count[n],
                                    "n_undefined": int(math.isnan(value))}
        else:
            report["summary"][n] = summarize([r["scores"][n] for r in report["per_image"]])
    report["n_scored"] = len(report["per_image"])
    return report
