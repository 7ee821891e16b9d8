"""A picture of the generative-prior restorer next to the built-in ISPL, for eyes rather than numbers.

Rows: held-out ffhq256 faces (ids ending in 0, bicubic to 512) degraded with x8, blur sigma 4, noise sigma 30 and
``realworld-gfpgan`` (seeded), then real low-quality crops without ground truth (../shared/data/realworld:
CodeFormer's and GFPGAN's ``cropped_faces``). Columns: input | ispl (built-in, 128 px) | prior-sft at fidelity 0,
0.5 and 1 | ground truth (blank for real crops). Every face is the network's own output (no quality gate).

    python benchmarks/prior_sft_grid.py            # ~2 min on 2 cores; writes docs/prior_sft_grid.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SIZE = 512
TILE = 256


def synthetic_rows(n_tasks: int) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    from facerestore import degrade
    from facerestore.io import read_image

    files = sorted(p for p in (DATA / "ffhq256").glob("*.*") if p.stem[-1:] == "0")[20:20 + n_tasks]

    def down_up(x, f):
        return degrade.resize(degrade.resize(x, size=SIZE // f, method="bicubic", antialias=True), size=SIZE,
                              method="bicubic", antialias=False)

    tasks = [("x8", lambda x, s: down_up(x, 8)), ("blur4", lambda x, s: degrade.gaussian_blur(x, 4.0)),
             ("noise30", lambda x, s: degrade.gaussian_noise(x, 30 / 255, generator=s)[0]),
             ("realworld-gfpgan", lambda x, s: degrade.apply(x, "realworld-gfpgan", generator=s)[0])]
    rows = []
    for i, (f, (name, fn)) in enumerate(zip(files, tasks)):
        gt = torch.from_numpy(read_image(f).rgb.transpose(2, 0, 1)).float()[None]
        gt = F.interpolate(gt, size=(SIZE, SIZE), mode="bicubic", align_corners=False).clamp(0, 1)
        lq = fn(gt, 500 + i).clamp(0, 1)
        rows.append((f"{f.name} {name}", lq[0].permute(1, 2, 0).numpy(), gt[0].permute(1, 2, 0).numpy()))
    return rows


def real_rows(n: int) -> list[tuple[str, np.ndarray, None]]:
    from facerestore.io import read_image

    files = sorted((DATA / "realworld" / "codeformer" / "cropped_faces").glob("*.*"))[:n]
    out = []
    for f in files:
        img = read_image(f).rgb
        if img.shape[:2] != (SIZE, SIZE):
            t = torch.from_numpy(img.transpose(2, 0, 1))[None].float()
            img = F.interpolate(t, size=(SIZE, SIZE), mode="bicubic", align_corners=False)[0].permute(1, 2, 0).numpy()
        out.append((f"codeformer/{f.name}", np.clip(img, 0, 1), None))
    return out


def tile(img: np.ndarray | None) -> np.ndarray:
    if img is None:
        return np.ones((TILE, TILE, 3), np.float32)
    t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].float()
    return F.interpolate(t, size=(TILE, TILE), mode="area")[0].permute(1, 2, 0).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--real", type=int, default=4, help="real crops (CodeFormer cropped_faces)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "prior_sft_grid.png"))
    args = ap.parse_args()
    if not (DATA / "ffhq256").is_dir():
        sys.exit(f"needs {DATA / 'ffhq256'}")

    from facerestore.io import write_image
    from facerestore.pipeline import get_restorer, restore_crops

    ispl, prior = get_restorer("ispl"), get_restorer("prior-sft")
    rows = []
    for name, lq, gt in synthetic_rows(4) + real_rows(args.real):
        cells = [lq, restore_crops(ispl, [lq])[0]]
        cells += [restore_crops(prior, [lq], fidelity=a)[0] for a in (0.0, 0.5, 1.0)]
        rows.append(np.concatenate([tile(c) for c in [*cells, gt]], 1))
        print(name, file=sys.stderr)
    write_image(args.out, np.concatenate(rows, 0))
    print(f"wrote {args.out}: columns input | ispl | prior-sft fidelity 0 | 0.5 | 1 | ground truth")


if __name__ == "__main__":
    main()
