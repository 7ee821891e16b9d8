"""Paste-back quality on real photos: colour and seam error in a ring around each pasted face, per mask.

For every whole photo in ../shared/data (realworld/*/whole_imgs and photos/; read-only) the faces are found
as the pipeline finds them (dlib HOG, min score 0.3), aligned at 512 px and restored once with the default
restorer (``ispl``); the same restored crops are then pasted back at scale 1 with each mask (square,
landmarks = dlib's 68 points, mesh = Face Mesh's face oval) and colour matching on, and the composed photo is
compared with the input. The reference outline of each face is its Face Mesh oval (face without hair or
neck); faces where Face Mesh sees no face are left out of every mask's numbers.

Per face, in pixels of the photo:

- ring: outside the face oval grown by 2% of the crop side, inside the crop's footprint (everything the
  paste may touch that is not face: hair, ears, neck, clothes, background). There the composed photo should
  equal the input.
  - ``ring_dE``: mean CIE76 colour difference (Lab) of the two, each blurred with a Gaussian of 1.5 px
    (colour shifts, halos, clothes colour bleeding);
  - ``ring_seam``: mean absolute difference of the gradient magnitudes (Sobel, per channel, x255) of the two
    (seams, halos, lost or added edges);
  - ``ring_grain``: mean absolute difference of the local high-frequency amplitude (input minus its 1 px
    Gaussian blur, RMS in a 4 px window, x255): grain, scan lines or halftone that vanished or appeared.
- face: inside the oval shrunk by 4% of the crop side, without eyes, brows and mouth (skin).
  - ``face_dE``: mean CIE76 difference of the two blurred with a 3 px Gaussian, where the blend mask is
    >= 0.99 (the colour error the restorer + colour matching leave on the skin; detail mostly blurred away);
  - ``face_shift``: CIE76 difference of the mean Lab colour of those pixels (the face's global colour shift);
  - ``coverage``: share of the face (whole oval) where the blend mask is >= 0.5 (how much of the face is
    restored at all: a mask that leaves the face out cannot count as better).
- gray photos: the data holds no black-and-white photo, so each realworld whole photo is also run as a gray
  copy stored as RGB (BT.601 luma in all three channels, restored again): ``gray_chroma``, the mean Lab
  chroma of the composed face (0 for a gray result; the input's is 0).

    python benchmarks/paste_back.py                      # all photos, masks square, landmarks, mesh
    python benchmarks/paste_back.py --limit 5 --grid docs/paste_back_grid.png

Restored crops are cached in --cache (default /tmp/facerestore-paste-back) so later runs only paste.
Writes benchmarks/results/paste_back.json (per face and the means per mask) and prints a summary table.
"""

from __future__ import annotations

import argparse
import hashlib
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
MASKS = ("square", "landmarks", "mesh")


def photo_list() -> list[Path]:
    files = sorted((DATA / "realworld").glob("*/whole_imgs/*")) + sorted((DATA / "photos").glob("*"))
    return [p for p in files if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp", ".bmp")]


def _lab(rgb: np.ndarray) -> np.ndarray:
    from facerestore.faces.paste import rgb_to_lab

    return rgb_to_lab(np.clip(rgb, 0, 1))


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(np.ascontiguousarray(x, np.float32), (0, 0), sigma)


def _grad(x: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(x, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(x, cv2.CV_32F, 0, 1, ksize=3)
    return np.sqrt(gx * gx + gy * gy)


def _hf_amplitude(x: np.ndarray) -> np.ndarray:
    hf = x - _blur(x, 1.0)
    return np.sqrt(_blur((hf * hf).mean(2), 4.0))


def is_gray(rgb: np.ndarray) -> bool:
    spread = rgb.max(2) - rgb.min(2)
    return float(np.percentile(spread, 99)) <= 3 / 255


def face_regions(mesh_xy: np.ndarray, aligned, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Ring and face masks of one face in photo pixels (see the module doc)."""
    from facerestore.faces.mesh import mesh_region_masks

    regions = mesh_region_masks(mesh_xy, shape)
    s = aligned.size
    px = s / np.sqrt(abs(np.linalg.det(aligned.affine[:, :2])))  # crop side in photo pixels
    foot = np.zeros(shape, np.uint8)
    inv = aligned.inverse
    corners = np.array([[-0.5, -0.5], [s - 0.5, -0.5], [s - 0.5, s - 0.5], [-0.5, s - 0.5]])
    pts = corners @ inv[:, :2].T + inv[:, 2]
    cv2.fillPoly(foot, [np.round(pts * 16).astype(np.int32)], 1, shift=4)
    face = regions["face"].astype(np.uint8)
    d_out = cv2.distanceTransform(1 - face, cv2.DIST_L2, 5)
    d_in = cv2.distanceTransform(face, cv2.DIST_L2, 5)
    ring = (d_out > 0.02 * px) & foot.astype(bool)
    core = (d_in > 0.04 * px) & regions["skin"]
    return {"ring": ring, "core": core, "face": regions["face"]}


def measure(inp: np.ndarray, out: np.ndarray, regions: dict[str, np.ndarray], blend: np.ndarray,
            gray: bool) -> dict[str, float]:
    ring, core = regions["ring"], regions["core"]
    full = core & (blend >= 0.99)
    lab_in1, lab_out1 = _lab(_blur(inp, 1.5)), _lab(_blur(out, 1.5))
    lab_in3, lab_out3 = _lab(_blur(inp, 3.0)), _lab(_blur(out, 3.0))
    d1 = np.linalg.norm(lab_in1 - lab_out1, axis=2)
    d3 = np.linalg.norm(lab_in3 - lab_out3, axis=2)
    seam = np.abs(_grad(inp) - _grad(out)).mean(2) * 255
    grain = np.abs(_hf_amplitude(inp) - _hf_amplitude(out)) * 255
    rec = {
        "ring_px": int(ring.sum()),
        "ring_dE": float(d1[ring].mean()) if ring.any() else float("nan"),
        "ring_seam": float(seam[ring].mean()) if ring.any() else float("nan"),
        "ring_grain": float(grain[ring].mean()) if ring.any() else float("nan"),
        "face_dE": float(d3[full].mean()) if full.any() else float("nan"),
        "face_shift": float(np.linalg.norm(lab_in3[full].mean(0) - lab_out3[full].mean(0))) if full.any()
        else float("nan"),
        "coverage": float((blend[regions["face"]] >= 0.5).mean()) if regions["face"].any() else float("nan"),
    }
    if gray:
        lab = _lab(out)
        rec["gray_chroma"] = float(np.hypot(lab[..., 1], lab[..., 2])[regions["face"]].mean())
    return rec


def blend_weights(shape, faces, mask, lm68, mesh, **kw) -> np.ndarray:
    """The blend mask the paste used (white crops pasted on black, colour matching off)."""
    from facerestore.faces.paste import paste_faces

    black = np.zeros((*shape, 3), np.float32)
    white = [(np.ones_like(c), a) for c, a in faces]
    out = paste_faces(black, white, 1.0, mask=mask, landmarks68=lm68, mesh_points=mesh, color_match=False,
                      grain=0.0, **kw)
    return out[..., 0]


def load_photo(path: Path, gray: bool = False) -> np.ndarray:
    from facerestore import io

    rgb = io.as_image(path).rgb
    return io.to_gray(rgb) if gray else rgb


def restore_photo_faces(rgb: np.ndarray, cache: Path, key: str):
    """(faces [(restored crop, AlignedFace)], landmarks68, mesh points or None) of one photo; the restored crops
    are cached under ``key``."""
    from facerestore.faces.align import align_face
    from facerestore.faces.mesh import FaceMesher
    from facerestore.pipeline import detect_and_select, get_restorer, restore_crops

    f = cache / f"{key}.npz"
    if f.exists():
        z = np.load(f, allow_pickle=False)
        lm5, lm68, restored = z["lm5"], z["lm68"], z["restored"]
    else:
        dets = detect_and_select(rgb, "hog")
        lm5 = np.array([d.landmarks5 for d in dets]).reshape(-1, 5, 2)
        lm68 = np.array([d.landmarks68 for d in dets]).reshape(-1, 68, 2)
        crops = [align_face(rgb, p, size=512).crop for p in lm5]
        restored = np.array(restore_crops(get_restorer("ispl"), crops)).reshape(-1, 512, 512, 3) if crops else \
            np.zeros((0, 512, 512, 3), np.float32)
        np.savez(f, lm5=lm5, lm68=lm68, restored=restored.astype(np.float16))
    faces = [(np.asarray(r, np.float32), align_face(rgb, p, size=512)) for r, p in zip(restored, lm5)]
    mesh = FaceMesher()(rgb, list(lm5)) if len(lm5) else []
    return faces, list(lm68), [None if m is None else m.xy for m in mesh]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=0, help="only the first N photos")
    ap.add_argument("--masks", default=",".join(MASKS))
    ap.add_argument("--cache", default="/tmp/facerestore-paste-back")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "paste_back.json"))
    ap.add_argument("--grid", default="", help="write a crop grid PNG (input | each mask) of some faces")
    ap.add_argument("--grid-faces", default="", help="comma-separated photo:face ids for the grid")
    ap.add_argument("--dump", default="", help="folder for the composed photos (for looking at them)")
    args = ap.parse_args()

    from facerestore.faces.paste import paste_faces

    masks = [m for m in args.masks.split(",") if m]
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    photos = photo_list()[: args.limit or None]
    if not photos:
        sys.exit(f"no photos under {DATA}")
    from facerestore.pipeline import get_restorer

    ispl = get_restorer("ispl")
    restorer_tag = json.dumps({**ispl.describe(), "weights": str(type(ispl).default_weights())}, sort_keys=True)
    runs = [(p, False) for p in photos] + [(p, True) for p in photos if "realworld" in p.parts]
    rows = []
    grid_tiles: dict[str, list[np.ndarray]] = {}
    t0 = time.time()
    for path, as_gray in runs:
        rgb = load_photo(path, as_gray)
        # the photo and the restorer's weights: a cache of older weights' crops is never reused
        key = hashlib.sha256(path.read_bytes() + restorer_tag.encode()).hexdigest()[:16] + ("-gray" if as_gray else "")
        faces, lm68, mesh = restore_photo_faces(rgb, cache, key)
        name = ("gray:" if as_gray else "") + str(path.relative_to(DATA))
        gray = is_gray(rgb)
        outs = {}
        for mask in masks:
            out = paste_faces(rgb, faces, 1.0, mask=mask, landmarks68=lm68, mesh_points=mesh, color_match=True)
            blend = blend_weights(rgb.shape[:2], faces, mask, lm68, mesh)
            outs[mask] = out
            if args.dump:
                Path(args.dump).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(Path(args.dump) / f"{name.replace('/', '_').replace(':', '_')}.{mask}.jpg"),
                            cv2.cvtColor((out * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR))
            for i, ((_, aligned), m) in enumerate(zip(faces, mesh)):
                if m is None:
                    continue
                reg = face_regions(m, aligned, rgb.shape[:2])
                ys, xs = np.nonzero(reg["ring"] | reg["face"])
                if not len(ys):
                    continue
                pad = 12  # the blurs' reach
                box = (slice(max(ys.min() - pad, 0), ys.max() + pad + 1),
                       slice(max(xs.min() - pad, 0), xs.max() + pad + 1))
                rows.append({"photo": name, "face": i, "mask": mask, "gray": gray,
                             **measure(rgb[box], out[box], {k: v[box] for k, v in reg.items()}, blend[box], gray)})
        if args.grid:
            for i, m in enumerate(mesh):
                if m is None:
                    continue
                x0, y0 = np.floor(m.min(0)).astype(int)
                x1, y1 = np.ceil(m.max(0)).astype(int)
                side = int(max(x1 - x0, y1 - y0) * 1.6)
                cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
                box = (slice(max(cy - side // 2, 0), cy + side // 2), slice(max(cx - side // 2, 0), cx + side // 2))
                tiles = [rgb[box]] + [outs[k][box] for k in masks]
                grid_tiles[f"{name}:{i}"] = [cv2.resize(t, (192, 192), interpolation=cv2.INTER_AREA) for t in tiles]
        print(f"{name}: {len(faces)} faces, {time.time() - t0:.0f} s", flush=True)

    summary = {}
    for mask in masks:
        sel = [r for r in rows if r["mask"] == mask]
        sel = [r for r in sel if not r["photo"].startswith("gray:")]
        summary[mask] = {k: float(np.nanmean([r[k] for r in sel])) for k in
                         ("ring_dE", "ring_seam", "ring_grain", "face_dE", "face_shift", "coverage")}
        g = [r["gray_chroma"] for r in rows if r["mask"] == mask and "gray_chroma" in r]
        summary[mask]["gray_chroma"] = float(np.mean(g)) if g else None
        summary[mask]["faces"] = len(sel)
    record = {
        "command": "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.python_version()}",
        "photos": len(photos),
        "restorer": "ispl",
        "summary": summary,
        "faces": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1))
    print(f"{'mask':10s} {'ring_dE':>8s} {'ring_seam':>9s} {'ring_grain':>10s} {'face_dE':>8s} {'face_shift':>10s} "
          f"{'coverage':>8s} {'gray_C':>7s} faces")
    for mask, s in summary.items():
        gc = "-" if s["gray_chroma"] is None else f"{s['gray_chroma']:.2f}"
        print(f"{mask:10s} {s['ring_dE']:8.2f} {s['ring_seam']:9.2f} {s['ring_grain']:10.2f} {s['face_dE']:8.2f} "
              f"{s['face_shift']:10.2f} {s['coverage']:8.3f} {gc:>7s} {s['faces']}")
    if args.grid and grid_tiles:
        keys = args.grid_faces.split(",") if args.grid_faces else list(grid_tiles)[:6]
        rows_img = [np.hstack(grid_tiles[k]) for k in keys if k in grid_tiles]
        grid = (np.clip(np.vstack(rows_img), 0, 1) * 255 + 0.5).astype(np.uint8)
        cv2.imwrite(args.grid, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        print("grid:", args.grid, "rows:", [k for k in keys if k in grid_tiles])


if __name__ == "__main__":
    main()
