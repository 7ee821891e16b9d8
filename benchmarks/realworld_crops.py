"""Real degraded face crops: NIQE of the input and of each method's restoration, alone and behind the quality
gate, with a grid of 12 faces (input | each method behind the gate).

Faces: ../shared/data/realworld/*/cropped_faces (real low-quality 512 px FFHQ-aligned crops shipped with CodeFormer
and GFPGAN; read-only, no ground truth). Each is restored with ``restore_photo(aligned=True, upscale=1)``, once
with ``gate=False`` (the network's face pasted whatever it is) and once with the gate (what ``facerestore restore``
does). NIQE is computed on the whole 512 crop (MATLAB-release compatible; lower is better), not on the gate's face
box. Every row of every method is measured in the same run.

    python benchmarks/realworld_crops.py --methods ispl,prior-sft --half --grid docs/realworld_crops_grid.png
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
    ap.add_argument("--methods", default="ispl,prior-sft", help="comma-separated rows NAME or LABEL=NAME:WEIGHTS "
                    "(the first is the reference of the 'below' counts)")
    ap.add_argument("--half", action="store_true", help="bf16 on a CPU for the methods that allow it")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "realworld_crops.json"))
    ap.add_argument("--grid", default="", help="PNG of the first 12 faces: input | each method behind the gate")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from method_rows import load_row, parse_method_rows

    from facerestore.io import read_image
    from facerestore.pipeline import restore_photo

    files = sorted(DATA.glob("*/cropped_faces/*"))
    if not files:
        sys.exit(f"no crops under {DATA}")
    rows_spec = parse_method_rows(args.methods)
    restorers = {r.label: load_row(r, args.half) for r in rows_spec}
    rows, tiles = [], []
    for f in files:
        rgb = read_image(f).rgb
        if rgb.shape[0] != rgb.shape[1]:
            continue
        row: dict = {"face": str(f.relative_to(DATA)), "niqe": {"input": niqe_of(rgb)}, "gate": {}, "paste_weight": {}}
        shown = [rgb]
        for name, restorer in restorers.items():
            alone = restore_photo(rgb, restorer, aligned=True, upscale=1, gate=False, identity=False).image
            gated = restore_photo(rgb, restorer, aligned=True, upscale=1)
            face = gated.faces[0]
            row["niqe"][name] = niqe_of(alone)
            row["niqe"][f"{name}+gate"] = niqe_of(gated.image)
            row["gate"][name] = None if face.gate is None else face.gate.reason
            row["paste_weight"][name] = face.paste_weight
            shown.append(gated.image)
        rows.append(row)
        if len(tiles) < 12:
            tiles.append(np.concatenate([cv2.resize(x, (192, 192), interpolation=cv2.INTER_AREA) for x in shown],
                                        axis=1))
        print(f.name, " ".join(f"{k} {v:.2f}" for k, v in row["niqe"].items()), row["gate"], file=sys.stderr)

    keys = list(rows[0]["niqe"])
    mean = {k: float(np.nanmean([r["niqe"][k] for r in rows])) for k in keys}
    ref = f"{rows_spec[0].label}+gate"
    summary = {}
    for name in restorers:
        gated = f"{name}+gate"
        summary[name] = {"below_input": int(sum(r["niqe"][gated] < r["niqe"]["input"] for r in rows)),
                         f"below_{ref}": int(sum(r["niqe"][gated] < r["niqe"][ref] for r in rows)),
                         "kept": int(sum(r["paste_weight"][name] == 0 for r in rows)),
                         "blended": int(sum(0 < r["paste_weight"][name] < 1 for r in rows))}
    result = {"benchmark": "realworld_crops", "faces": len(rows),
              "methods": {r.label: {"method": r.method, "weights": r.weights or "the method's own"} for r in rows_spec},
              "half": args.half,
              "mean_niqe": mean, "gated": summary, "per_face": rows}
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
