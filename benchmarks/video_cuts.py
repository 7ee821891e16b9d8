"""Does the video tracker's cut detector (``FaceTracker``) see cuts, and only cuts?

A cut ends every face track (so that blending, the quality gate and reference matches never carry over to another
person framed in the same place); a false cut restarts tracks (their ids come back by identity). The detector fires
when a frame's mean-normalised 16 x 16 thumbnail moves by more than ``cut_threshold`` *and* its rg-chromaticity
histogram by more than ``cut_colour_threshold`` (:meth:`facerestore.video.FaceTracker._signature`).

Pairs measured (no video of cuts exists in ../shared/data; the pairs stand in for consecutive frames):
- cuts: two different ffhq256 faces (the hardest cut: the same framing), two different photos of
  ../shared/data/photos (resized to one size);
- not cuts, from one picture: a pan of 2% / 4% of the width (80% wide windows), a 10% zoom, a x1.3 flash, noise
  of sigma 0.03.

The thresholds were chosen on these same pairs (not held out): the table is a check of that choice, not an
independent estimate.

    python benchmarks/video_cuts.py          # under a minute
Writes benchmarks/results/video_cuts.json and prints a table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--faces", type=int, default=60, help="ffhq256 faces (paired 0-1, 2-3, ...)")
    ap.add_argument("--photos", type=int, default=20, help="photos of ../shared/data/photos")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "video_cuts.json"))
    args = ap.parse_args()
    import cv2

    from facerestore.io import read_rgb
    from facerestore.video import FaceTracker

    tracker = FaceTracker(fps=25.0)

    def distances(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
        sa, sb = tracker._signature(a), tracker._signature(b)
        return float(np.abs(sa[0] - sb[0]).mean()), 0.5 * float(np.abs(sa[1] - sb[1]).sum())

    faces = [read_rgb(f) for f in sorted((DATA / "ffhq256").glob("*.jpg"))[: args.faces]]
    photos = [read_rgb(p) for p in sorted((DATA / "photos").iterdir())
              if p.suffix.lower() in (".jpg", ".jpeg", ".png")][: args.photos]
    if len(faces) < 2 or len(photos) < 2:
        sys.exit(f"needs ../shared/data/ffhq256 and ../shared/data/photos (found {len(faces)} faces, "
                 f"{len(photos)} photos)")
    rng = np.random.default_rng(0)
    pairs: dict[str, list[tuple[float, float]]] = {k: [] for k in (
        "cut: two faces", "cut: two photos", "pan 2%", "pan 4%", "zoom 10%", "flash x1.3", "noise 0.03")}
    for i in range(0, len(faces) - 1, 2):
        pairs["cut: two faces"].append(distances(faces[i], faces[i + 1]))
    for a, b in itertools.pairwise(photos):
        pairs["cut: two photos"].append(distances(a, cv2.resize(b, (a.shape[1], a.shape[0]))))
    for img in photos + faces[:20]:
        h, w = img.shape[:2]
        cw = int(w * 0.8)
        for frac, key in ((0.02, "pan 2%"), (0.04, "pan 4%")):
            dx = int(w * frac)
            pairs[key].append(distances(img[:, :cw], img[:, dx : dx + cw]))
        zoom = cv2.resize(img[int(h * 0.05) : int(h * 0.95), int(w * 0.05) : int(w * 0.95)], (w, h))
        pairs["zoom 10%"].append(distances(img, zoom))
        pairs["flash x1.3"].append(distances(img, np.clip(img * 1.3, 0, 1)))
        noisy = np.clip(img + rng.normal(0, 0.03, img.shape).astype(np.float32), 0, 1)
        pairs["noise 0.03"].append(distances(img, noisy))

    rows = {}
    for key, vals in pairs.items():
        v = np.array(vals)
        fired = (v[:, 0] > tracker.cut_threshold) & (v[:, 1] > tracker.cut_colour_threshold)
        rows[key] = {"n": len(v), "cut_detected": int(fired.sum()), "share_detected": float(fired.mean()),
                     "thumbnail": [float(v[:, 0].min()), float(np.median(v[:, 0])), float(v[:, 0].max())],
                     "colour": [float(v[:, 1].min()), float(np.median(v[:, 1])), float(v[:, 1].max())]}
    result = {"command": "python benchmarks/video_cuts.py " + shlex.join(sys.argv[1:]),
              "cut_threshold": tracker.cut_threshold, "cut_colour_threshold": tracker.cut_colour_threshold,
              "note": "thresholds chosen on these pairs (not held out)", "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"{'pair':18s} {'n':>4s} {'detected':>9s}   thumbnail min/med/max   colour min/med/max")
    for key, r in rows.items():
        t, c = r["thumbnail"], r["colour"]
        print(f"{key:18s} {r['n']:4d} {r['cut_detected']:4d} ({r['share_detected']:4.0%})   "
              f"{t[0]:.3f} {t[1]:.3f} {t[2]:.3f}   {c[0]:.3f} {c[1]:.3f} {c[2]:.3f}")


if __name__ == "__main__":
    main()
