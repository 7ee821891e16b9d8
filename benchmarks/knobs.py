"""Do the two knobs of `facerestore restore` move the output monotonically? ``--fidelity`` and ``--blend``.

Faces: ffhq256 validation ids (numbers ending in 0), bicubic-upsampled to 512, degraded with ``realworld-gfpgan``
(seed = face index). Each is restored through the pipeline in aligned mode (``restore_photo(aligned=True,
upscale=1, gate=False)``: the gate would pick its own share and hide the knob) with the default method at
fidelity 0, 0.25, 0.5, 0.75, 1 (blend 1) and at blend 0, 0.25, 0.5, 0.75, 1 (default fidelity).

Per setting: PSNR to the degraded input (closeness to the input: should rise with fidelity and fall with blend),
PSNR to the clean face, high-frequency energy of the face box (``quality_gate.face_sharpness``) and NIQE. A knob is
monotonic when the mean closeness to the input moves in one direction over its five settings, and the table
also gives the share of faces for which every step moves that way.

    python benchmarks/knobs.py            # 20 faces, a few minutes
Writes benchmarks/results/knobs.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
VALUES = (0.0, 0.25, 0.5, 0.75, 1.0)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--faces", type=int, default=20)
    ap.add_argument("--method", default="ispl")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "knobs.json"))
    args = ap.parse_args()

    from facerestore import degrade
    from facerestore.io import read_image
    from facerestore.metrics.niqe import niqe
    from facerestore.pipeline import get_restorer, restore_photo
    from facerestore.quality_gate import face_sharpness

    files = sorted(p for p in (DATA / "ffhq256").glob("*.*") if p.stem[-1:] == "0")[: args.faces]
    if not files:
        sys.exit(f"no faces under {DATA / 'ffhq256'}")
    restorer = get_restorer(args.method)
    has_fidelity = restorer.spec.supports_fidelity
    rows: dict[str, dict[float, list[dict[str, float]]]] = {"fidelity": {v: [] for v in VALUES},
                                                            "blend": {v: [] for v in VALUES}}
    for i, f in enumerate(files):
        x = torch.from_numpy(read_image(f).rgb.transpose(2, 0, 1)).float()[None]
        gt = F.interpolate(x, size=(512, 512), mode="bicubic", align_corners=False).clamp(0, 1)
        lq = degrade.apply(gt, "realworld-gfpgan", generator=i)[0].clamp(0, 1)
        lq_np = lq[0].permute(1, 2, 0).numpy().copy()
        gt_np = gt[0].permute(1, 2, 0).numpy()
        for knob in rows:
            if knob == "fidelity" and not has_fidelity:
                continue
            for v in VALUES:
                kw = {"fidelity": v} if knob == "fidelity" else {"blend": v}
                out = restore_photo(lq_np, restorer, aligned=True, upscale=1, gate=False, identity=False, **kw).image
                q = float(niqe(torch.from_numpy(out.transpose(2, 0, 1).copy())[None])[0])
                rows[knob][v].append({"psnr_to_input": min(psnr(out, lq_np), 60.0), "psnr_to_clean": psnr(out, gt_np),
                                      "sharpness": face_sharpness(out), "niqe": q})
        print(f"[{i + 1}/{len(files)}] {f.name}", file=sys.stderr)

    result: dict = {"benchmark": "knobs", "command": ("python benchmarks/knobs.py " + shlex.join(sys.argv[1:])).strip(),
                    "method": args.method, "weights": str(type(restorer).default_weights()),
                    "restorer": restorer.describe(), "faces": len(files), "task": "realworld-gfpgan", "knobs": {}}
    for knob, per in rows.items():
        if not per[VALUES[0]]:
            result["knobs"][knob] = "not supported by the method"
            continue
        closeness = np.array([[r["psnr_to_input"] for r in per[v]] for v in VALUES])  # (values, faces)
        steps = np.diff(closeness, axis=0)
        sign = 1 if knob == "fidelity" else -1  # fidelity up -> closer to the input; blend up -> further
        result["knobs"][knob] = {
            "values": list(VALUES),
            "mean": {m: [float(np.mean([r[m] for r in per[v]])) for v in VALUES]
                     for m in ("psnr_to_input", "psnr_to_clean", "sharpness", "niqe")},
            "mean_monotonic": bool(np.all(sign * np.diff(closeness.mean(1)) > 0)),
            "faces_monotonic_share": float(np.mean(np.all(sign * steps > 0, axis=0))),
        }
    Path(args.out).write_text(json.dumps(result, indent=1))
    for knob, r in result["knobs"].items():
        if isinstance(r, str):
            print(f"{knob}: {r}")
            continue
        print(f"{knob}: mean monotonic {r['mean_monotonic']}, faces monotonic {r['faces_monotonic_share']:.0%}")
        for m, vals in r["mean"].items():
            print(f"  {m:14s} " + "  ".join(f"{v:8.4g}" for v in vals))


if __name__ == "__main__":
    main()
