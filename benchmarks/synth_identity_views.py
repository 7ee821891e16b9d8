"""Are the views of ``facerestore synth --views`` the same person? Identity distances within and between synthetic
persons, for the default view setting and alternatives, with a picture.

For ``--ids`` persons of MobileStyleGAN (seed 777, truncation 0.7: no training of ours used this seed), ``--views``
views each (``train.synth.identity_views``), per setting LAYERS:STRENGTH:
- same person: distance of each view to its person's sample (view 0);
- different persons: distance between the samples of every pair of persons;
with dlib's 128-d network (its usual same-person threshold is 0.6), MobileFace (``id_mobileface``; no loss of ours
uses it; same person under 0.71) and MobileFaceNet (``id_mfn``, weak), the ROC AUC of telling the two apart (1 =
every same-person pair closer than every different pair), and the landmark change of the views (LLE between view
and sample after a similarity fit, px at ``--size``: how much pose and expression change). The setting list is the
validation that chose the default (module docstring of train.synth).

    python benchmarks/synth_identity_views.py                    # 12 persons x 3 views, 3 settings, ~4 min on 2 cores

Writes benchmarks/results/synth_identity_views.json and docs/synth_identity_views.png (the default setting).
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SAME_PERSON = {"fed": 0.6, "id_mobileface": 0.709}  # dlib's usual threshold; MobileFace's EER threshold (photo pairs)


def measure(G, ids: int, views: int, size: int, seed: int, truncation: float, layers: int, strength: float,
            scorers: dict) -> tuple[dict, torch.Tensor]:
    from facerestore.metrics.stats import roc_auc
    from facerestore.train.synth import identity_views

    imgs = torch.cat([identity_views(G, [i], seed, views, size=size, truncation=truncation, layers=layers,
                                     strength=strength)[0] for i in range(ids)])
    out: dict = {"layers": layers, "strength": strength}
    for name, m in scorers.items():
        same = [float(m(imgs[i, v : v + 1], imgs[i, :1])) for i in range(ids) for v in range(1, views + 1)]
        if name == "lle":
            out["landmark_change_px"] = {"mean": float(np.mean(same)), "max": float(np.max(same))}
            continue
        diff = [float(m(imgs[i, :1], imgs[j, :1])) for i, j in itertools.combinations(range(ids), 2)]
        out[name] = {"same_mean": float(np.mean(same)), "same_max": float(np.max(same)),
                     "diff_mean": float(np.mean(diff)), "diff_min": float(np.min(diff)),
                     "auc": roc_auc(-np.array(same), -np.array(diff))}
        if name in SAME_PERSON:
            out[name][f"same_over_{SAME_PERSON[name]:g}"] = int((np.array(same) > SAME_PERSON[name]).sum())
    return out, imgs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ids", type=int, default=12)
    ap.add_argument("--views", type=int, default=3)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--truncation", type=float, default=0.7)
    ap.add_argument("--settings", default="7:0.6,4:1.0,10:0.6", help="LAYERS:STRENGTH, comma-separated; the first "
                    "is drawn")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "synth_identity_views.json"))
    ap.add_argument("--grid", default=str(ROOT / "docs" / "synth_identity_views.png"))
    args = ap.parse_args()

    from facerestore import io, metrics, zoo
    from facerestore.nn.stylegan2_io import resolve_generator
    from facerestore.train.synth import DEFAULT_PRIOR

    if not zoo.is_available(DEFAULT_PRIOR):
        sys.exit(f"{DEFAULT_PRIOR} is not cached: run `facerestore models download {DEFAULT_PRIOR}`")
    G = resolve_generator(DEFAULT_PRIOR).eval()
    scorers = {}
    for name in ("fed", "id_mobileface", "id_mfn", "lle"):
        try:
            scorers[name] = metrics.create(name, aligned=True)
        except Exception as exc:  # weights not cached: the column is absent and the JSON says why
            print(f"{name}: not measured ({str(exc).splitlines()[0]})", file=sys.stderr)
    rows, t0 = [], time.time()
    for k, spec in enumerate(args.settings.split(",")):
        layers, strength = spec.split(":")
        row, imgs = measure(G, args.ids, args.views, args.size, args.seed, args.truncation, int(layers),
                            float(strength), scorers)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if k == 0:
            # 160 px tiles keep the picture under 1 MB
            shown = torch.nn.functional.interpolate(imgs[:6].flatten(0, 1), size=(160, 160), mode="area").view(
                6, -1, 3, 160, 160)
            grid = torch.cat([torch.cat(list(person), 2) for person in shown], 1).permute(1, 2, 0).numpy()
            io.write_image(args.grid, grid)
    result = {
        "benchmark": "synth_identity_views",
        "command": "python benchmarks/synth_identity_views.py " + " ".join(sys.argv[1:]),
        "generator": f"{DEFAULT_PRIOR} (non-commercial weights)", "ids": args.ids, "views": args.views,
        "size": args.size, "seed": args.seed, "truncation": args.truncation, "settings": rows,
        "grid": f"{Path(args.grid).name}: rows = persons, column 0 = the sample, then its views "
                f"({args.settings.split(',')[0]})",
        "seconds": round(time.time() - t0, 1), "machine": f"{platform.machine()}, torch {torch.__version__}",
    }
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out} and {args.grid}")


if __name__ == "__main__":
    main()
