"""Where robust-inversion's blind mode starts: the prior's mean latent (paper 002) vs the W encoder's guess.

    python benchmarks/encoder_init.py                       # 6 faces, budgets 30 / 90 / 180 steps: 36 min here (fp32)
    python benchmarks/encoder_init.py --count 2 --budgets 30

What whole-photo ``facerestore restore --method robust-inversion`` sees: an aligned crop in which a face of the
photo has been enlarged. Simulated as in ``blind_detail.py``: each held-out ffhq256 face (ids ending in 0) is shrunk
by ``--factor`` (area, 256 -> 64 px) and enlarged back into a 512 px crop (bicubic). robust-inversion restores the
crop in its blind mode on MobileStyleGAN (fp32; ``--half``: bf16), at each total step budget (split equally over the
three phases, as ``--steps`` does), once from ``w_avg`` (``init="mean"``, the paper) and once from the W encoder
(``init="encoder"``, the shipped ``mobilestylegan-ffhq-1024.w-encoder``). The row ``encoder W only`` renders the
encoder's latent without any optimisation.

Scored against the 256 px ground truth (outputs area-reduced to 256): PSNR, dlib FED, MobileFace distance
``id_mobileface`` (the independent identity judge: no loss of ours and not the encoder's training uses it), NIQE, and
the inversion's own final loss; paired differences encoder - mean with their 95% bootstrap interval over the faces.
The encoder was trained on generator samples only (no photo); these faces are validation faces, and whether the
encoder becomes the blind mode's default start was decided on this benchmark (said in the restorer's docs).
Writes results/encoder_init.{json,md} and docs/encoder_init_grid.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("psnr", "fed", "id_mobileface", "niqe", "final_loss")


def scores(pred: torch.Tensor, clean: torch.Tensor, final_loss: torch.Tensor | None = None) -> dict:
    """Means (NaN-skipping: FED is NaN where dlib finds no face) and per-face values against ``clean``."""
    from facerestore import metrics

    per_face = {"psnr": metrics.create("psnr")(pred, clean), "fed": metrics.create("fed", aligned=True)(pred, clean),
                "id_mobileface": metrics.create("id_mobileface", aligned=True)(pred, clean),
                "niqe": metrics.create("niqe")(pred)}
    if final_loss is not None:
        per_face["final_loss"] = final_loss
    per_face = {k: [float(x) for x in v.reshape(-1)] for k, v in per_face.items()}
    return {**{k: float(np.nanmean(v)) for k, v in per_face.items()}, "per_face": per_face}


def paired(a: dict, b: dict) -> dict[str, tuple[float, float, float]]:
    from facerestore.metrics.stats import paired_bootstrap

    return {k: paired_bootstrap(np.array(a["per_face"][k]) - np.array(b["per_face"][k]), 2000, 0)
            for k in METRICS if k in a["per_face"] and k in b["per_face"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ffhq256"))
    p.add_argument("--count", type=int, default=6)
    p.add_argument("--factor", type=int, default=4)
    p.add_argument("--budgets", type=int, nargs="+", default=[30, 90, 180], help="total steps (three phases)")
    p.add_argument("--grid-faces", type=int, default=3)
    p.add_argument("--half", action="store_true", help="the generator in bf16 (pays only on CPUs with native bf16)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from facerestore.nn.devices import machine_description, tune_cpu_allocator

    tuned = tune_cpu_allocator()  # as the CLI does
    from facerestore import io
    from facerestore.methods.inversion.restorer import RobustInversionRestorer
    from facerestore.methods.restorer import resize_crop
    from facerestore.nn.stylegan2 import render_unit
    from facerestore.train.config import DataConfig
    from facerestore.train.data import load_images, split_files

    name = "mobilestylegan-ffhq-1024"
    _, val = split_files(DataConfig(roots=[args.data], size=256, val_count=args.count))
    clean = load_images(val, 256).float() / 255
    side = 256 // args.factor
    crop = resize_crop(resize_crop(clean, (side, side)), (512, 512))
    rows: dict = {"input": scores(resize_crop(crop, (256, 256)), clean)}
    t_all = time.time()
    rest = {init: RobustInversionRestorer(name, init=init, progress=False).set_half(args.half)
            for init in ("mean", "encoder")}
    enc_rest = rest["encoder"]
    work = enc_rest.blind_side(crop)
    with torch.no_grad():
        w0 = enc_rest.start(resize_crop(crop, (work, work)), blind=True)
        only = torch.cat([render_unit(enc_rest.G, w0[i:i + 1], resolution=256).float() for i in range(len(w0))])
    rows["encoder W only"] = scores(only.clamp(0, 1), clean)
    grid_cols = {"crop": crop, "encoder W only": resize_crop(only.clamp(0, 1), (512, 512))}
    for budget in args.budgets:
        for init, r in rest.items():
            r.steps = RobustInversionRestorer.budget_options(budget)["steps"]
            t0 = time.time()
            out, details = r.restore(crop, size=(512, 512), return_details=True)
            out = out.float().clamp(0, 1)
            key = f"{budget} steps, {init}"
            rows[key] = {**scores(resize_crop(out, (256, 256)), clean, details.final_loss),
                         "seconds_per_face": round((time.time() - t0) / len(clean), 1),
                         "work_resolution": details.work_resolution}
            grid_cols[key] = out
            row = rows[key]
            print(f"{key}: PSNR {row['psnr']:.2f}, FED {row['fed']:.3f}, id_mobileface {row['id_mobileface']:.3f}, "
                  f"NIQE {row['niqe']:.2f}, loss {row['final_loss']:.4f} ({row['seconds_per_face']} s/face)",
                  flush=True)
        rows[f"{budget} steps, encoder - mean"] = paired(rows[f"{budget} steps, encoder"],
                                                         rows[f"{budget} steps, mean"])
    grid_cols["truth"] = resize_crop(clean, (512, 512))
    result = {"benchmark": "encoder_init",
              "command": "python benchmarks/encoder_init.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "generator": f"{name}, {'bf16' if args.half else 'fp32'}",
              "encoder": "mobilestylegan-ffhq-1024.w-encoder (built-in)",
              "faces": [f.name for f in val], "factor": args.factor, "work_resolution": work, "rows": rows,
              "wall_s": round(time.time() - t_all, 1),
              "hardware": machine_description(args.threads)
                          + (", malloc tuned as by the CLI" if tuned else ""),
              "intervals": "'encoder - mean': mean per-face difference and its paired 95% bootstrap interval "
                           "(2000 resamples, seed 0)"}
    out_dir = ROOT / "benchmarks" / "results"
    (out_dir / "encoder_init.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "encoder_init.md").write_text(to_markdown(result))
    faces = range(min(args.grid_faces, len(clean)))
    img = torch.cat([torch.cat([F.interpolate(v[i:i + 1], size=(192, 192), mode="area")[0]
                                for v in grid_cols.values()], -1) for i in faces], -2)
    io.write_image(ROOT / "docs" / "encoder_init_grid.png", np.ascontiguousarray(img.permute(1, 2, 0).numpy()))
    (ROOT / "docs" / "encoder_init_grid.txt").write_text("columns: " + " | ".join(grid_cols) + "\n")
    print(to_markdown(result))
    return 0


def to_markdown(result: dict) -> str:
    lines = ["# robust-inversion's blind mode: starting from w_avg (paper) vs the W encoder", "",
             f"`{result['command']}`: {len(result['faces'])} held-out ffhq256 faces shrunk x{result['factor']} into "
             f"512 px crops (compared at {result['work_resolution']} px), {result['generator']}, "
             f"{result['wall_s'] / 60:.0f} min ({result['hardware']}). Means against the 256 px ground truth; "
             "brackets: paired 95% bootstrap interval of encoder - mean.", "",
             "| row | PSNR | FED | id_mobileface | NIQE | final loss | s/face |", "|---|---|---|---|---|---|---|"]
    for name, r in result["rows"].items():
        if "per_face" in r:
            loss = f"{r['final_loss']:.4f}" if "final_loss" in r else ""
            lines.append(f"| {name} | {r['psnr']:.2f} | {r['fed']:.3f} | {r['id_mobileface']:.3f} | {r['niqe']:.2f} | "
                         f"{loss} | {r.get('seconds_per_face', '')} |")
        else:
            cells = " | ".join(f"{r[k][0]:+.3f} [{r[k][1]:+.3f}, {r[k][2]:+.3f}]" for k in METRICS)
            lines.append(f"| {name} | {cells} | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
