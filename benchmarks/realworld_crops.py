"""Real degraded face crops: NIQE of the input, of the previous default (every face restored: ``gate=False``) and
of the default (``ispl`` + the quality gate), with a grid of 12 faces (input | previous | default).

Faces: ../shared/data/realworld/*/cropped_faces (real low-quality 512 px FFHQ-aligned crops shipped with CodeFormer
and GFPGAN; read-only, no ground truth). Each is restored with ``restore_photo(aligned=True, upscale=1)``. NIQE is
computed on the whole 512 crop (MATLAB-release compatible; lower is better), not on the gate's face box.

    python benchmarks/realworld_crops.py --grid docs/realworld_crops_grid.png
Writes benchmarks/results/realworld_crops.json and prints the means.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "realworld"


def niqe_of(img: np.ndarray) -> float:
    from facerestore.metrics.niqe import niqe

    return float(niqe(torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].float())[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "realworld_crops.json"))
    ap.add_argument("--grid", default="", help="PNG of the first 12 faces: input | previous default | default")
    args = ap.parse_args()

    from facerestore.io import read_image
    from facerestore.pipeline import restore_photo

    files = sorted(DATA.glob("*/cropped_faces/*"))
    if not files:
        sys.exit(f"no crops under {DATA}")
    rows, tiles = [], []
    for f in files:
        rgb = read_image(f).rgb
        if rgb.shape[0] != rgb.shape[1]:
            continue
        prev = restore_photo(rgb, "ispl", aligned=True, upscale=1, gate=False, identity=False).image
        new = restore_photo(rgb, "ispl", aligned=True, upscale=1)
        face = new.faces[0]
        rows.append({"face": str(f.relative_to(DATA)), "niqe_input": niqe_of(rgb), "niqe_previous": niqe_of(prev),
                     "niqe_default": niqe_of(new.image), "paste_weight": face.paste_weight,
                     "gate": None if face.gate is None else face.gate.reason})
        if len(tiles) < 12:
            tiles.append(np.concatenate([cv2.resize(x, (192, 192), interpolation=cv2.INTER_AREA)
                                         for x in (rgb, prev, new.image)], axis=1))
        print(f"{f.name}: {rows[-1]['niqe_input']:.2f} {rows[-1]['niqe_previous']:.2f} "
              f"{rows[-1]['niqe_default']:.2f} ({rows[-1]['gate']})", file=sys.stderr)
    mean = {k: float(np.nanmean([r[k] for r in rows])) for k in ("niqe_input", "niqe_previous", "niqe_default")}
    better_than_input = int(sum(r["niqe_default"] < r["niqe_input"] for r in rows))
    result = {"benchmark": "realworld_crops", "faces": len(rows), "mean": mean,
              "default_below_input": better_than_input,
              "default_below_previous": int(sum(r["niqe_default"] < r["niqe_previous"] for r in rows)),
              "kept": int(sum(r["paste_weight"] == 0 for r in rows)),
              "blended": int(sum(0 < r["paste_weight"] < 1 for r in rows)), "per_face": rows}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "per_face"}, indent=1))
    if args.grid and tiles:
        half = (len(tiles) + 1) // 2
        cols = [np.concatenate(tiles[:half], axis=0), np.concatenate(tiles[half:] + [np.ones_like(tiles[0])] *
                                                                       (half - len(tiles[half:])), axis=0)]
        grid = np.concatenate([cols[0], np.ones((cols[0].shape[0], 12, 3), np.float32), cols[1]], axis=1)
        cv2.imwrite(args.grid, cv2.cvtColor((np.clip(grid, 0, 1) * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR))


if __name__ == "__main__":
    main()
