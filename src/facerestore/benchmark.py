"""Side-by-side benchmarks of restorers on your own aligned faces: degrade, restore, score, compare.

    from facerestore import benchmark, load_restorer
    names, faces = benchmark.load_faces("faces/", size=512, count=8)          # FFHQ-aligned crops
    result = benchmark.run_benchmark(faces, names, ["down:8", "noise:30", "realworld-gfpgan"],
                                     {"ispl": load_restorer("ispl")}, ["psnr", "id_mobileface", "niqe"])
    print(benchmark.to_markdown(result))                                       # means + paired 95% intervals

What it measures is what a user of the photo pipeline gets from a method on a face crop: every method sees the
degraded face at the benchmark's size (``restore(lq, size=(S, S))``, the call the pipeline makes) and knows
nothing of the degradation. Each face is degraded with its own seed (``seed + face index``), so a face's degraded
input is the same whatever ``count`` or batch a run uses, and every row of one degradation is scored on the same
degraded faces: the differences between rows are paired, and :func:`to_markdown` reports them with paired 95%
bootstrap intervals against one row (the degraded input by default).

Degradations (:func:`parse_degradation`): ``clean``; ``down:F`` (bicubic, antialiased, down by F and back);
``blur:S`` (Gaussian, sigma S px at the benchmark's size); ``noise:S`` (Gaussian, sigma S/255, seeded); ``jpeg:Q``
(libjpeg quality Q); or any task of :func:`facerestore.degrade.list_tasks`, optionally at a level
(``robust-denoise@L``); a task whose output is smaller than its input is resized back (:func:`resize_crop`).
Face metrics (identity distances, FED, LLE) are computed on the FFHQ template (``aligned=True``): give aligned crops
(``facerestore faces`` writes them).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from facerestore.errors import InputError
from facerestore.nn.devices import machine_description

__all__ = ["Degradation", "check_metric", "grid", "load_faces", "paired_difference", "parse_degradation",
           "run_benchmark", "to_markdown"]

SHORTHANDS = ("clean", "down:F", "blur:SIGMA_PX", "noise:SIGMA_255", "jpeg:QUALITY")


@dataclass(frozen=True)
class Degradation:
    """A named degradation: ``apply(x, seed)`` maps clean faces (1, 3, S, S) in [0, 1] to degraded ones of the same
    size; ``seed`` draws whatever is random (noise, a task's parameters)."""

    name: str
    apply: Callable[[torch.Tensor, int], torch.Tensor]


def _number(text: str, name: str, kind: type, low: float) -> float:
    try:
        v = kind(text)
    except ValueError:
        raise InputError(f"degradation {name!r}: {text!r} is not a{'n integer' if kind is int else ' number'}") \
            from None
    if not math.isfinite(v) or v < low:
        raise InputError(f"degradation {name!r}: the value must be >= {low:g}, got {text}")
    return v


def _back_to(y: torch.Tensor, size: int) -> torch.Tensor:
    from facerestore.methods.restorer import resize_crop

    return resize_crop(y, (size, size)).clamp(0, 1)


def parse_degradation(text: str) -> Degradation:
    """``"clean"``, ``"down:8"``, ``"blur:4"``, ``"noise:30"``, ``"jpeg:50"`` or a degradation task name, optionally
    ``"TASK@LEVEL"`` (module docstring). Raises InputError naming what is wrong."""
    from facerestore import degrade

    name = text.strip()
    kind, sep, value = name.partition(":")
    if name == "clean":
        return Degradation(name, lambda x, seed: x)
    if sep and kind == "down":
        f = int(_number(value, name, int, 2))

        def down(x: torch.Tensor, seed: int) -> torch.Tensor:
            small = degrade.resize(x, size=max(1, round(x.shape[-1] / f)), method="bicubic", antialias=True)
            return degrade.resize(small, size=x.shape[-1], method="bicubic", antialias=False)

        return Degradation(name, down)
    if sep and kind == "blur":
        sigma = _number(value, name, float, 0)
        return Degradation(name, lambda x, seed: degrade.gaussian_blur(x, sigma) if sigma > 0 else x)
    if sep and kind == "noise":
        sigma = _number(value, name, float, 0)
        return Degradation(name, lambda x, seed: degrade.gaussian_noise(x, sigma / 255.0, generator=seed)[0])
    if sep and kind == "jpeg":
        q = int(_number(value, name, int, 1))
        if q > 100:
            raise InputError(f"degradation {name!r}: JPEG quality must be 1..100")
        return Degradation(name, lambda x, seed: degrade.jpeg(x, q))
    if sep:
        raise InputError(f"unknown degradation {name!r}: shorthands are {', '.join(SHORTHANDS)}")
    task, _, level = name.partition("@")
    try:
        info = degrade.get_task(task)
    except Exception:
        raise InputError(f"unknown degradation {name!r}: use {', '.join(SHORTHANDS)} or a task of "
                         "`facerestore degrade --list`") from None
    if level and level not in info.levels:
        raise InputError(f"degradation {name!r}: task {task!r} has "
                         + (f"levels {', '.join(info.levels)}" if info.levels else "no levels"))
    return Degradation(name, lambda x, seed: _back_to(degrade.apply(x, task, level=level or None,
                                                                    generator=seed)[0], x.shape[-1]))


def load_faces(source: str | os.PathLike | Sequence[str | os.PathLike], size: int,
               count: int | None = None) -> tuple[list[str], torch.Tensor]:
    """The first ``count`` images of ``source`` (a folder, sorted by name, or a list of files in its order; None:
    all) as (N, 3, size, size) in [0, 1] (:func:`resize_crop`) with their file names. Crops must be square
    (aligned faces); anything else is refused with the file's name."""
    from pathlib import Path

    from facerestore.io import display_path, list_images, read_image, to_tensor
    from facerestore.methods.restorer import resize_crop

    if int(size) < 16:
        raise InputError(f"size must be >= 16 px, got {size}")
    if isinstance(source, (str, os.PathLike)):
        files = sorted(list_images(source), key=lambda p: p.name)
        where = display_path(source)
    else:
        files, where = [Path(f) for f in source], "the list"
    files = files[: None if count is None else max(int(count), 0)]
    if not files:
        raise InputError(f"no images in {where}")
    names, faces = [], []
    for f in files:
        rgb = read_image(f).rgb
        if rgb.shape[0] != rgb.shape[1]:
            raise InputError(f"{display_path(f)} is {rgb.shape[1]}x{rgb.shape[0]}: give square aligned face crops "
                             "(`facerestore faces` writes them)")
        faces.append(resize_crop(to_tensor(rgb).float(), (int(size), int(size))).clamp(0, 1))
        names.append(f.name)
    return names, torch.cat(faces)


def check_metric(name: str, size: int | None = None) -> str:
    """The metric's kind, or InputError when ``name`` is unknown, scores sets of images (FID, KID) rather than
    faces, or cannot score faces of ``size`` px (NIQE needs 192, MS-SSIM 176): said before any face is restored."""
    from facerestore.metrics.registry import get_spec

    spec = get_spec(name)
    if spec.kind == "distribution":
        raise InputError(f"metric {name!r} scores a set of images, not a face: use `facerestore evaluate` for it")
    if size is not None and size < spec.min_side:
        raise InputError(f"metric {name!r} needs faces of at least {spec.min_side} px; --size is {size}")
    return spec.kind


def _metric(name: str, device: str) -> Any:
    from facerestore import metrics

    return metrics.create(name, device=device, **({"aligned": True} if check_metric(name) == "face" else {}))


@torch.no_grad()
def _score(metrics: Mapping[str, Any], pred: torch.Tensor, clean: torch.Tensor) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, m in metrics.items():
        v = float((m(pred) if not m.needs_reference else m(pred, clean)).reshape(-1)[0])
        out[name] = v if math.isfinite(v) else None
    return out


FaceRecord = dict  # {"scores": {row: {metric: value | None}}, "seconds": {method label: s}}: one face, one degradation


def run_benchmark(
    faces: torch.Tensor,
    names: Sequence[str],
    degradations: Sequence[str | Degradation],
    methods: Mapping[str, Any],
    metrics: Sequence[str],
    *,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    keep_images: int = 0,
    done: Mapping[tuple[str, int], FaceRecord] | None = None,
    on_face: Callable[[str, int, FaceRecord, dict[str, torch.Tensor] | None], None] | None = None,
) -> dict[str, Any]:
    """Degrade every face with every degradation, restore it with every method, score input and outputs.

    Args:
        faces: (N, 3, S, S) clean aligned faces in [0, 1]; names: one per face (reported as given).
        degradations: strings for :func:`parse_degradation` or :class:`Degradation` objects.
        methods: label -> :class:`~facerestore.methods.restorer.Restorer` (``load_restorer(...)``).
        metrics: names of :func:`facerestore.metrics.create` (no-reference metrics score the image alone).
        seed: face i is degraded with seed ``seed + i``.
        keep_images: also return the first ``keep_images`` faces' images per degradation under "images"
            (degradation -> row -> (k, 3, S, S) tensor, rows input, the methods and "clean"; not JSON) for
            :func:`grid`; faces taken from ``done`` have none.
        done: records of faces measured before, (degradation name, face index) -> record: those faces are not
            run again (a resumed run; the caller checks that the protocol is the same).
        on_face: called after each face is measured with (degradation, face index, its record, its images:
            row -> (1, 3, S, S), for the first ``keep_images`` faces, else None): where a long run saves progress.

    Returns a JSON-able dict (but for "images"): "faces", "size", "seed", "degradations", "rows" (``input`` then
    the method labels), "methods" (name, paper, size, precision, weights licence and training data of each),
    "metrics", "scores" (degradation -> row -> metric -> one value per face, None where a metric found no face
    or the value is infinite, e.g. PSNR of identical images), "seconds_per_face" (degradation -> label: the mean
    over the faces, from their records), "hardware".
    """
    from tqdm import tqdm

    if faces.ndim != 4 or faces.shape[1] != 3 or faces.shape[-1] != faces.shape[-2]:
        raise InputError(f"faces must be (N, 3, S, S), got {tuple(faces.shape)}")
    if len(names) != faces.shape[0]:
        raise InputError(f"{len(names)} names for {faces.shape[0]} faces")
    if "input" in methods or "clean" in methods:
        raise InputError("'input' and 'clean' name the degraded and the clean faces: give the method another label")
    degs = [d if isinstance(d, Degradation) else parse_degradation(d) for d in degradations]
    if len({d.name for d in degs}) != len(degs):
        raise InputError("a degradation is listed twice")
    done = done or {}
    scorers = {m: _metric(m, device) for m in metrics}
    size, n = int(faces.shape[-1]), int(faces.shape[0])
    rows = ["input", *methods]
    records: dict[tuple[str, int], FaceRecord] = {}
    images: dict[str, dict[str, list[torch.Tensor]]] = {}
    todo = [(d, i) for d in degs for i in range(n) if (d.name, i) not in done]
    with tqdm(total=len(todo), desc="benchmark", unit="face", disable=not progress, leave=False) as bar:
        for d, i in todo:
            clean = faces[i:i + 1].float()
            lq = d.apply(clean, int(seed) + i).clamp(0, 1)
            if tuple(lq.shape) != tuple(clean.shape):
                raise InputError(f"degradation {d.name!r} returned {tuple(lq.shape)} for {tuple(clean.shape)}")
            outputs, spent = {"input": lq}, {}
            for label, restorer in methods.items():
                bar.set_postfix_str(f"{d.name}: {label}")
                t0 = time.perf_counter()
                y = restorer.restore(lq.to(device), size=(size, size))
                spent[label] = round(time.perf_counter() - t0, 3)
                outputs[label] = (y[0] if isinstance(y, tuple) else y).float().cpu().clamp(0, 1)
            rec = {"scores": {row: _score(scorers, pred.to(device), clean.to(device)) for row, pred in outputs.items()},
                   "seconds": spent}
            records[(d.name, i)] = rec
            kept = {**outputs, "clean": clean} if i < keep_images else None
            if kept is not None:
                for row, pred in kept.items():
                    images.setdefault(d.name, {}).setdefault(row, []).append(pred.cpu())
            if on_face is not None:
                on_face(d.name, i, rec, kept)
            bar.update(1)
    records.update({k: v for k, v in done.items() if k[0] in {d.name for d in degs} and k[1] < n})
    scores = {d.name: {r: {m: [records[(d.name, i)]["scores"][r].get(m) for i in range(n)] for m in metrics}
                       for r in rows} for d in degs}
    seconds = {d.name: {label: round(float(np.mean([records[(d.name, i)]["seconds"][label] for i in range(n)])), 3)
                        for label in methods} for d in degs}
    result: dict[str, Any] = {
        "benchmark": "facerestore benchmark", "faces": list(names), "size": size, "seed": int(seed),
        "degradations": [d.name for d in degs], "rows": rows, "metrics": list(metrics),
        "methods": {label: r.describe() for label, r in methods.items()},
        "scores": scores, "seconds_per_face": seconds,
        "hardware": f"{machine_description()}, {device}",
    }
    if keep_images:
        result["images"] = {d: {r: torch.cat(v) for r, v in rows_.items()} for d, rows_ in images.items()}
    return result


def _lower_better(metric: str) -> bool:
    from facerestore.metrics.registry import get_spec

    return bool(get_spec(metric).lower_better)


def paired_difference(a: Sequence[float | None], b: Sequence[float | None], resamples: int = 2000,
                      seed: int = 0) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of the per-face differences ``a - b`` over the faces where both are known, with the
    paired 95% bootstrap interval (:func:`facerestore.metrics.stats.paired_bootstrap`)."""
    from facerestore.metrics.stats import paired_bootstrap

    d = np.array([np.nan if x is None or y is None else x - y for x, y in zip(a, b)], dtype=np.float64)
    n = int(np.isfinite(d).sum())
    return (*paired_bootstrap(d, resamples, seed), n)


def _mean(values: Sequence[float | None]) -> float:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else float("nan")


def to_markdown(result: Mapping[str, Any], against: str = "input") -> str:
    """The result as tables, one per degradation: each row's mean per metric and, for every row but ``against``,
    the mean per-face difference to ``against`` with its paired 95% bootstrap interval; ``*`` marks an interval
    that excludes zero, in the metric's better direction (``+``) or worse (``-``)."""
    if against not in result["rows"]:
        raise InputError(f"--against {against!r} is not a row of this benchmark: {', '.join(result['rows'])}")
    metrics = result["metrics"]
    lines = [f"# facerestore benchmark: {len(result['faces'])} faces at {result['size']} px", "",
             f"Rows: the degraded input and {', '.join(f'`{k}`' for k in result['methods'])}; every method saw the "
             f"degraded face at {result['size']} px, nothing about the degradation. Face i was degraded with seed "
             f"{result['seed']} + i. Brackets: mean per-face difference to `{against}` [paired 95% bootstrap "
             "interval]; `*+` / `*-`: the interval excludes zero and the row is better / worse. "
             + ", ".join(f"{m} {'lower' if _lower_better(m) else 'higher'} is better" for m in metrics) + ".", ""]
    for deg in result["degradations"]:
        per_row = result["scores"][deg]
        secs = result["seconds_per_face"].get(deg, {})
        lines += [f"## {deg}", "", "| row | " + " | ".join(metrics) + " | s/face |",
                  "|---|" + "---|" * len(metrics) + "---|"]
        for row in result["rows"]:
            cells = []
            for m in metrics:
                mean_row = _mean(per_row[row][m])
                cell = f"{mean_row:.4g}" if math.isfinite(mean_row) else "n/a"  # e.g. PSNR of identical images
                if row != against:
                    mean, lo, hi, n = paired_difference(per_row[row][m], per_row[against][m])
                    mark = ""
                    if n and (lo > 0 or hi < 0):
                        better = (mean < 0) == _lower_better(m)
                        mark = "*+" if better else "*-"
                    cell += f" ({mean:+.3g} [{lo:+.3g}, {hi:+.3g}]{mark})" if n else " (no pairs)"
                cells.append(cell)
            lines.append(f"| {row} | " + " | ".join(cells) + f" | {secs.get(row, '')} |")
        lines.append("")
    lines.append(f"{result['hardware']}.")
    return "\n".join(lines) + "\n"


def grid(result: Mapping[str, Any], degradation: str) -> np.ndarray:
    """A labelled picture of one degradation's kept images (``run_benchmark(..., keep_images=k)``): one row per
    face, columns input | each method | clean at the benchmark's size; (14 + k*S, (methods+2)*S, 3) float32 in
    [0, 1] (:func:`facerestore.sheets.labelled_grid`)."""
    from facerestore.sheets import labelled_grid

    kept = result.get("images", {}).get(degradation)
    if not kept:
        raise InputError(f"no images kept for {degradation!r} (run with keep_images > 0)")
    columns = {("input: " + degradation if r == "input" else r): kept[r] for r in [*result["rows"], "clean"]}
    return labelled_grid(columns, tile=int(result["size"]))
