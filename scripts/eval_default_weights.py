"""Evaluate the default ISPL weights against two baselines on the held-out FFHQ validation faces.

    python scripts/eval_default_weights.py \
        --ispl src/facerestore/zoo/builtin/ispl-compact-128.safetensors \
        --unet runs/unet-l1-128/final.safetensors

Validation set: ../shared/data/ffhq256 files whose number ends in 0 (100 faces), resized to the model size
(128) exactly as in training (``facerestore.train.data.load_images``), degraded once with the training task
(realworld-gfpgan) and a fixed seed (``facerestore.train.data.make_pair``, no flip). Candidates:

- ``input (bicubic)``: the degraded input at crop size. The realworld-gfpgan pipeline already brings its
  low-resolution image back to the crop size (bilinear, as GFPGAN's pipeline); no extra resize is applied.
- ``unet-l1``: the plain U-Net trained with L1 (configs/unet-l1-128.yaml, same data/steps/batch).
- ``ispl f=1`` / ``ispl f=0.5``: our restorer at fidelity 1 and 0.5 (``ISPLRestorer``).

PSNR / SSIM are computed at the model size (every candidate); FED / LLE for the baselines and the ISPL
fidelities in ``--face-fidelities`` (default 1 only: dlib embeddings are slow on a shared CPU). dlib's HOG
detector scans an 80 px window, about the face size in a 128 px FFHQ crop, so FED and LLE are computed after
upscaling every candidate *and* the ground truth identically (bicubic) to ``--face-size`` (256): LLE is
therefore in pixels of a 256 px crop. The face box is found once on the ground truth
(``pred_box="target"``); faces not found give NaN and are counted in the output (``*_nan``).
Every ISPL row with face metrics is also compared with the U-Net face by face: the mean difference and its 95%
bootstrap confidence interval (``paired_vs_unet``), so that margins within the noise of 100 faces show as such.
Writes ``benchmarks/results/ispl_default_weights.json`` and the grid ``docs/ispl_validation_grid.png``
(input | ours | ground truth for 8 validation faces) and prints a one-line summary.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]


def _load_unet(path: Path) -> torch.nn.Module:
    from safetensors.torch import load_file

    from facerestore.nn.unet import UNet

    meta = json.loads(path.with_suffix(".json").read_text())
    net = UNet(**meta["model"])
    net.load_state_dict(load_file(str(path)))
    return net.eval()


def export_builtin(final: Path) -> Path:
    """Write a trainer export (fp32 ``final.safetensors`` + ``final.json``) as fp16 built-in weights named after
    its run (``zoo/builtin/<config name>.safetensors``, e.g. ``ispl-compact-256``)."""
    from safetensors.torch import load_file

    from facerestore.io import atomic_write_json, atomic_write_safetensors
    from facerestore.methods.ispl.restorer import builtin_weights

    meta = json.loads(final.with_suffix(".json").read_text())
    name = meta["config"]["name"]
    dst = builtin_weights(name)
    state = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(final)).items()}
    atomic_write_safetensors(dst, state, {"format": "pt", "source": f"facerestore train configs/{name}.yaml"})
    meta["dtype"] = "float16"
    atomic_write_json(dst.with_suffix(".json"), meta)
    return dst


def paired_differences(ours: dict[str, np.ndarray], base: dict[str, np.ndarray], resamples: int = 2000,
                       seed: int = 0) -> dict[str, dict[str, float | list[float]]]:
    """Per metric: mean of the per-face differences ``ours - base`` (faces where both are finite) and its
    95% bootstrap confidence interval (faces resampled with replacement, seeded)."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, float | list[float]]] = {}
    for m in ("psnr", "fed", "lle", "id_mfn"):
        if m not in ours or m not in base:
            continue
        d = ours[m].astype(np.float64) - base[m].astype(np.float64)
        d = d[np.isfinite(d)]
        boots = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
        lo, hi = np.percentile(boots, [2.5, 97.5])
        def sig(x: float) -> float:  # 4 significant digits: id_mfn differences are ~1e-5
            return float(f"{float(x):.4g}")

        out[m] = {"mean": sig(d.mean()), "ci95": [sig(lo), sig(hi)], "n": len(d)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ffhq256"))
    p.add_argument("--ispl", default=None, help="ISPL .safetensors (default: the built-in weights)")
    p.add_argument("--export", default=None, metavar="FINAL",
                   help="write FINAL (a run's final.safetensors, waited for) as the fp16 built-in weights")
    p.add_argument("--unet", default=str(ROOT / "runs" / "unet-l1-128" / "final.safetensors"))
    p.add_argument("--task", default="realworld-gfpgan")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--face-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--count", type=int, default=0, help="at most this many validation faces (0 = all)")
    p.add_argument("--fidelities", type=float, nargs="+", default=[1.0, 0.5])
    p.add_argument("--face-fidelities", type=float, nargs="*", default=[1.0],
                   help="ISPL fidelities that also get FED / LLE (dlib embeddings are slow on a busy CPU)")
    p.add_argument("--extra", nargs="*", default=[], metavar="NAME=PATH",
                   help="more ISPL weight files scored at fidelity 1 (with FED / LLE and the criteria), e.g. "
                   "other checkpoints of the same run")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ispl_default_weights.json"))
    p.add_argument("--grid", default=str(ROOT / "docs" / "ispl_validation_grid.png"))
    args = p.parse_args(argv)

    from facerestore import metrics
    from facerestore.io import write_image
    from facerestore.methods.ispl.restorer import ISPLRestorer
    from facerestore.train.config import DataConfig
    from facerestore.train.data import load_images, make_pair, split_files

    torch.set_num_threads(2)
    t0 = time.time()
    dcfg = DataConfig(roots=[args.data], size=args.size, task=args.task, val_rule="ends-with-0", val_count=0)
    _, val_files = split_files(dcfg)
    if args.count:
        val_files = val_files[: args.count]
    hq_u8 = load_images(val_files, args.size)
    g = torch.Generator().manual_seed(args.seed)
    lqs, hqs = [], []
    for i in range(0, len(val_files), 8):  # one generator, fixed batch order: the same inputs every run
        lq, hq = make_pair(hq_u8[i : i + 8], dcfg, g, "cpu", hflip=False)
        lqs.append(lq)
        hqs.append(hq)
    lq, hq = torch.cat(lqs), torch.cat(hqs)

    unet = _load_unet(Path(args.unet)) if Path(args.unet).is_file() else None
    if unet is None:
        print(f"note: no U-Net baseline at {args.unet} (train it with configs/unet-l1-128.yaml): its row and the "
              "criteria against it are left out", flush=True)
    meters = {m: metrics.create(m) for m in ("psnr", "ssim", "fed", "lle")}
    face_metrics = ["fed", "lle"]
    try:  # MobileFaceNet: an identity network no loss of ours uses (evaluation only; weights from the zoo)
        meters["id_mfn"] = metrics.create("id_mfn")
        face_metrics.append("id_mfn")
    except Exception as exc:
        print(f"note: id_mfn left out ({str(exc).splitlines()[0][:120]})", flush=True)

    def up(x: torch.Tensor) -> torch.Tensor:
        s = args.face_size
        return x if x.shape[-1] == s else F.interpolate(x, size=(s, s), mode="bicubic", align_corners=False).clamp(0, 1)

    def batched(fn) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([fn(lq[i : i + 8]) for i in range(0, len(lq), 8)])

    results: dict[str, dict[str, float]] = {}
    per_face: dict[str, dict[str, np.ndarray]] = {}  # per-face scores, for the paired comparison
    hq_face = up(hq)

    def score(name: str, out: torch.Tensor, face: bool = True) -> None:
        row: dict[str, float] = {}
        faces = per_face.setdefault(name, {})
        for m in ("psnr", "ssim"):
            s = meters[m](out, hq).float()
            row[m] = float(s.mean())
            faces[m] = s.numpy()
        if face:
            out_face = up(out)
            for m in face_metrics:
                s = torch.cat([meters[m](out_face[i : i + 8], hq_face[i : i + 8]) for i in range(0, len(out), 8)])
                row[m] = float(s.nanmean())
                row[f"{m}_nan"] = int(torch.isnan(s).sum())
                faces[m] = s.float().numpy()
        results[name] = row
        print(f"{name:18s} " + " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
              flush=True)

    score("input (bicubic)", lq)
    if unet is not None:
        score("unet-l1", batched(lambda x: unet(x).clamp(0, 1)))
    if args.export:  # the baselines above ran while the ISPL run was finishing
        final = Path(args.export)
        while not final.with_suffix(".json").is_file():
            time.sleep(10)
        time.sleep(2)
        print(f"exported {export_builtin(final)}", flush=True)
    ispl = ISPLRestorer(weights=args.ispl)
    cands: dict[str, torch.Tensor] = {}
    for f in args.fidelities:
        cands[f"ispl f={f:g}"] = batched(lambda x, f=f: ispl.restore(x, fidelity=f))
        score(f"ispl f={f:g}", cands[f"ispl f={f:g}"], face=f in args.face_fidelities)

    for item in args.extra:
        name, _, path = item.partition("=")
        extra = ISPLRestorer(weights=path)
        cands[f"ispl[{name}] f=1"] = batched(lambda x, r=extra: r.restore(x, fidelity=1.0))
        score(f"ispl[{name}] f=1", cands[f"ispl[{name}] f=1"])

    unet_row, inp = results.get("unet-l1"), results["input (bicubic)"]

    def criteria_of(ours: dict[str, float]) -> dict[str, bool] | None:
        if unet_row is None:
            return None
        return {
            "fed_beats_both": ours["fed"] < unet_row["fed"] and ours["fed"] < inp["fed"],
            "lle_beats_both": ours["lle"] < unet_row["lle"] and ours["lle"] < inp["lle"],
            "psnr_within_0.5dB_of_unet": ours["psnr"] >= unet_row["psnr"] - 0.5,
        }

    criteria = criteria_of(results["ispl f=1"])
    extra_criteria = {k: criteria_of(v) for k, v in results.items() if k.startswith("ispl[")}
    paired = {k: paired_differences(per_face[k], per_face["unet-l1"])
              for k in results if k.startswith("ispl") and "fed" in per_face[k] and unet_row is not None}
    paired_input = {k: paired_differences(per_face[k], per_face["input (bicubic)"])
                    for k in results if k.startswith("ispl") and "fed" in per_face[k]}
    for k, v in paired_input.items():
        print(f"{k} - input (mean [95% CI]): " + ", ".join(
            f"{m} {d['mean']:+.3g} [{d['ci95'][0]:+.3g}, {d['ci95'][1]:+.3g}]" for m, d in v.items()), flush=True)
    for k, v in paired.items():
        print(f"{k} - unet-l1 (mean [95% CI]): " + ", ".join(
            f"{m} {d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]" for m, d in v.items()), flush=True)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "ispl_default_weights",
        "command": "python scripts/eval_default_weights.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "data": f"ffhq256 ids ending in 0 ({len(val_files)} faces) at {args.size}px",
        "task": args.task, "seed": args.seed, "face_metric_size": args.face_size,
        "ispl_weights": str(args.ispl or "builtin"), "unet_weights": str(args.unet),
        "results": results, "criteria": criteria, "criteria_extra": extra_criteria,
        "paired_vs_unet": paired, "paired_vs_input": paired_input,
        "hardware": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, CPU",
        "wall_s": round(time.time() - t0, 1),
    }
    out_path.write_text(json.dumps(report, indent=2) + "\n")

    # grid: 8 faces, columns input | ours (f=1) | ground truth
    idx = list(range(min(8, len(lq))))
    ours_img = cands["ispl f=1"]
    rows = [torch.cat([lq[i], ours_img[i], hq[i]], dim=-1) for i in idx]
    grid = torch.cat(rows, dim=-2).permute(1, 2, 0).numpy().astype(np.float32)
    Path(args.grid).parent.mkdir(parents=True, exist_ok=True)
    write_image(args.grid, grid)

    summary = " | ".join(f"{k}: PSNR {v['psnr']:.2f} SSIM {v['ssim']:.3f} FED {v.get('fed', math.nan):.3f} "
                         f"LLE {v.get('lle', math.nan):.2f}" for k, v in results.items())
    print(f"ispl_default_weights ({len(val_files)} faces): {summary}; criteria {criteria}")
    return 0 if criteria is None or all(criteria.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
