"""Whole photos: does `facerestore restore` ever paste a face worse than the one in the photo? Gate on vs off.

Photos: every whole photo of ../shared/data/realworld/*/whole_imgs and ../shared/data/photos (read-only), plus
sharp modern ones made here: the 512 px astronaut (examples/astronaut.png, at full size), scikit-image's
512 px cameraman, and three 1024 px MobileStyleGAN samples (seeds 0-2 of run 2026, truncation 0.7; synthetic
photographic faces, no real person) when that prior is cached.

Each photo is restored at scale 1 by the default method with the quality gate on (the default) and off (every
restoration pasted: what main did before the gate). Each face is then measured on the *final photos*, re-aligned
from them on the FFHQ template at 512 px with the detector's landmarks (so paste-back, colour matching and
grain are included, unlike the gate's own measure on the restorer's crop):

- ``sharpness_kept``: Laplacian energy (3x3 kernel, gray) of the output's face box over the input's; the issue's
  target is >= 0.8 for faces over 100 px (box width in the photo);
- ``niqe_in`` / ``niqe_out``: NIQE of the face box (lower is better); target: no face worse by more than 0.5.

    python benchmarks/whole_photo_gate.py                 # all photos, writes results/whole_photo_gate.json
    python benchmarks/whole_photo_gate.py --sheet docs/whole_photo_gate_sheet.png

Writes benchmarks/results/whole_photo_gate.json (per face, per setting, and the summary) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
METHOD = "ispl"
LARGE = 100  # px: faces at least this wide (detector box) must keep their sharpness
SETTINGS = {"gate on": True, "gate off": False}


def photo_list() -> list[tuple[str, np.ndarray]]:
    from facerestore.io import read_image

    files = sorted((DATA / "realworld").glob("*/whole_imgs/*")) + sorted((DATA / "photos").glob("*.*"))
    out = [(str(f.relative_to(DATA)), read_image(f).rgb) for f in files if f.suffix.lower() in (".jpg", ".jpeg",
                                                                                             ".png", ".webp")]
    out.append(("modern/astronaut.png", read_image(ROOT / "examples" / "astronaut.png").rgb))
    try:
        from skimage import data as skdata

        cam = skdata.camera().astype(np.float32) / 255.0
        out.append(("modern/cameraman.png", np.repeat(cam[:, :, None], 3, axis=2)))
    except ImportError:
        print("scikit-image missing: no cameraman", file=sys.stderr)
    from facerestore import zoo

    if zoo.is_available("mobilestylegan-ffhq-1024"):
        from facerestore.nn.stylegan2_io import resolve_generator
        from facerestore.train.synth import sample_faces

        G = resolve_generator("mobilestylegan-ffhq-1024")
        imgs, _ = sample_faces(G, [0, 1, 2], 2026, truncation=0.7)
        for i, im in enumerate(imgs):
            out.append((f"modern/mobilestylegan_{i}.png", im.permute(1, 2, 0).numpy().copy()))
    else:
        print("mobilestylegan-ffhq-1024 not cached: no synthetic 1024 px photos", file=sys.stderr)
    return out


def laplacian_energy(gray: np.ndarray) -> float:
    return float(np.mean(cv2.Laplacian(gray.astype(np.float64), cv2.CV_64F, ksize=3) ** 2))


def measure_face(inp: np.ndarray, out: np.ndarray, landmarks5: np.ndarray) -> dict[str, float]:
    from facerestore.faces.align import align_face
    from facerestore.quality_gate import face_box_slices, face_niqe

    rows, cols = face_box_slices(512)
    a = align_face(inp, landmarks5, size=512).crop
    b = align_face(out, landmarks5, size=512).crop
    w = np.array([0.299, 0.587, 0.114], np.float32)
    e_in, e_out = laplacian_energy((a @ w)[rows, cols]), laplacian_energy((b @ w)[rows, cols])
    return {"sharpness_kept": e_out / max(e_in, 1e-12), "niqe_in": face_niqe(a), "niqe_out": face_niqe(b)}


def summary(rows: list[dict]) -> dict[str, float]:
    large = [r for r in rows if r["face_px"] >= LARGE]
    d_niqe = np.array([r["niqe_out"] - r["niqe_in"] for r in rows if np.isfinite(r["niqe_out"] - r["niqe_in"])])
    return {
        "faces": len(rows),
        "faces_over_100px": len(large),
        "large_faces_sharpness_below_0.8": sum(r["sharpness_kept"] < 0.8 for r in large),
        "min_sharpness_kept_large": min((r["sharpness_kept"] for r in large), default=float("nan")),
        "faces_niqe_worse_by_0.5": int((d_niqe > 0.5).sum()),
        "max_niqe_increase": float(d_niqe.max()) if len(d_niqe) else float("nan"),
        "mean_niqe_in": float(np.nanmean([r["niqe_in"] for r in rows])),
        "mean_niqe_out": float(np.nanmean([r["niqe_out"] for r in rows])),
        "faces_kept": sum(r["paste_weight"] == 0.0 for r in rows),
        "faces_blended": sum(0.0 < r["paste_weight"] < 1.0 for r in rows),
        "faces_restored": sum(r["paste_weight"] == 1.0 for r in rows),
    }


def _tile(img: np.ndarray, height: int) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.resize(img, (max(1, round(w * height / h)), height), interpolation=cv2.INTER_AREA)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=0, help="only the first N photos")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "whole_photo_gate.json"))
    ap.add_argument("--sheet", default="", help="before/after sheet PNG (input | gate off | gate on) of some photos")
    ap.add_argument("--sheet-photos", default="realworld/codeformer/whole_imgs/02.png,modern/astronaut.png,"
                    "modern/mobilestylegan_0.png,realworld/codeformer/whole_imgs/00.jpg",
                    help="comma-separated photo names for the sheet")
    args = ap.parse_args()

    from facerestore.pipeline import restore_photo

    photos = photo_list()[: args.limit or None]
    if not any(n.startswith(("realworld", "photos")) for n, _ in photos):
        print(f"note: no photos under {DATA}: only the modern ones", file=sys.stderr)
    rows: dict[str, list[dict]] = {s: [] for s in SETTINGS}
    sheet_rows = []
    wanted = [s for s in args.sheet_photos.split(",") if s]
    t0 = time.time()
    for k, (name, rgb) in enumerate(photos):
        outs = {}
        for setting, gate in SETTINGS.items():
            res = restore_photo(rgb, METHOD, upscale=1, gate=gate)
            outs[setting] = res.image
            for i, f in enumerate(res.faces):
                rows[setting].append({
                    "photo": name, "face": i, "face_px": float(f.box[2] - f.box[0]),
                    "paste_weight": f.paste_weight, "gate": None if f.gate is None else f.gate.reason,
                    "identity_distance": f.identity_distance,
                    **measure_face(rgb, res.image, f.landmarks5),
                })
        print(f"[{k + 1}/{len(photos)}] {name}: {len(rows['gate on']) } faces so far, {time.time() - t0:.0f} s",
              file=sys.stderr)
        if name in wanted:
            sheet_rows.append((name, [rgb, outs["gate off"], outs["gate on"]]))

    result = {
        "benchmark": "whole_photo_gate",
        "method": METHOD,
        "upscale": 1,
        "targets": {"sharpness_kept_faces_over_100px": 0.8, "max_niqe_increase": 0.5},
        "summary": {s: summary(r) for s, r in rows.items()},
        "faces": rows,
        "seconds": round(time.time() - t0, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, torch threads {os.environ.get('OMP_NUM_THREADS')}",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=float))
    keys = list(result["summary"]["gate on"])
    print(f"{'':34s}" + "".join(f"{s:>12s}" for s in SETTINGS))
    for key in keys:
        print(f"{key:34s}" + "".join(f"{result['summary'][s][key]:12.3g}" for s in SETTINGS))

    if args.sheet and sheet_rows:
        height = 300
        lines = []
        for name, imgs in sheet_rows:
            tiles = [_tile(im, height) for im in imgs]
            gap = np.ones((height, 8, 3), np.float32)  # white
            line = np.concatenate([t for tile in tiles for t in (tile, gap)][:-1], axis=1)
            line = (np.clip(line, 0, 1) * 255 + 0.5).astype(np.uint8)
            cv2.putText(line, name, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 0), 1, cv2.LINE_AA)
            lines.append(line)
        width = max(ln.shape[1] for ln in lines)
        lines = [np.pad(ln, ((0, 8), (0, width - ln.shape[1]), (0, 0)), constant_values=255) for ln in lines]
        sheet = np.concatenate(lines, axis=0)
        cv2.imwrite(args.sheet, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        print(f"sheet: {args.sheet} (columns: input | gate off | gate on)", file=sys.stderr)


if __name__ == "__main__":
    main()
