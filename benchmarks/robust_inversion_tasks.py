"""Paper 002's 31 restoration tasks with the robust-inversion restorer on held-out real faces.

    python benchmarks/robust_inversion_tasks.py --count 8                      # all 31 tasks, one process
    python benchmarks/robust_inversion_tasks.py --count 8 --shard 0/2 &       # or split over two cores ...
    python benchmarks/robust_inversion_tasks.py --count 8 --shard 1/2
    python benchmarks/robust_inversion_tasks.py --merge 2                      # ... and merge the shards

Faces: the first ``--count`` held-out ffhq256 faces (ids ending in 0, never seen by the prior's training),
resized to the prior's resolution (64 px for the built-in ``stylegan2-face-64``). Each task (robust-upsample,
-denoise, -deartifact, -inpaint at XS..XL, then the 11 compositions at M) degrades them with seed 0 and the
restorer inverts the result with paper 002's single hyper-parameter set (3 x 150 NGD steps, lrs 0.08 /
0.02 / 0.005) and the task's surrogate.

Metrics (the paper uses LPIPS and pFID, whose ImageNet weights are absent offline; proxies are used and
named in the output, the paper's own metric is added when its weights are cached):

- accuracy: PSNR(restored, clean) in dB (higher is better) and dlib identity distance FED(restored, clean)
  (lower is better; faces upsampled to 256 px, fixed FFHQ-aligned box); LPIPS-VGG when available.
- fidelity: PSNR(f(restored), y) in dB, where f is the *true* degradation replayed with the task's records
  (the same noise, mask and JPEG tables) and y the degraded input.
- realism: MS-SWD between the patch distributions of the restored set and of the clean set (each set tiled
  into one mosaic; lower is better): a weight-free stand-in for pFID's patch statistics.

The ``input`` columns score the degraded input itself, resized bicubically to the clean size (for
inpainting: the masked image). Writes ``benchmarks/results/robust_inversion_tasks.json`` and a Markdown
table ``benchmarks/results/robust_inversion_tasks.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SINGLE = ("upsample", "denoise", "deartifact", "inpaint")
LEVELS = ("XS", "S", "M", "L", "XL")


def paper_tasks() -> list[tuple[str, str]]:
    """The 31 (task, level) pairs of paper 002: 4 degradations x 5 levels, then 11 compositions at M."""
    from facerestore import degrade

    rows = [(f"robust-{d}", lvl) for d in SINGLE for lvl in LEVELS]
    comps = [t.name for t in degrade.list_tasks() if t.name.startswith("robust-") and "+" in t.name]
    rows += [(c, "M") for c in sorted(comps, key=lambda n: (n.count("+"), n))]
    if len(rows) != 31:
        raise RuntimeError(f"expected 31 paper-002 tasks, found {len(rows)}")
    return rows


def mosaic(x: torch.Tensor) -> torch.Tensor:
    """Tile (N, 3, H, W) into one near-square image of at least 2 x 2 tiles (repeating tiles to fill it)."""
    n, c, h, w = x.shape
    cols = max(2, math.ceil(math.sqrt(n)))
    rows = max(2, math.ceil(n / cols))
    reps = math.ceil(rows * cols / n)
    x = x.repeat(reps, 1, 1, 1)[: rows * cols]
    return x.reshape(rows, cols, c, h, w).permute(2, 0, 3, 1, 4).reshape(1, c, rows * h, cols * w)


def score(pred: torch.Tensor, clean: torch.Tensor, lpips) -> dict[str, float]:
    from facerestore import metrics

    out = {
        "psnr": float(metrics.create("psnr")(pred, clean).mean()),
        "fed": float(torch.nanmean(_fed(pred, clean))),
        "realism_msswd": float(metrics.create("ms_swd")(mosaic(pred), mosaic(clean)).mean()),
    }
    if lpips is not None:
        out["lpips"] = float(lpips(pred, clean).mean())
    return out


def _fed(pred: torch.Tensor, clean: torch.Tensor, size: int = 256) -> torch.Tensor:
    from facerestore.metrics.face import FED

    up = lambda t: F.interpolate(t, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)  # noqa: E731
    return FED(aligned=True)(up(pred), up(clean))


def run_tasks(args: argparse.Namespace) -> dict:
    from facerestore import degrade, zoo
    from facerestore.methods.inversion.restorer import RobustInversionRestorer
    from facerestore.nn.stylegan2_io import resolve_generator
    from facerestore.train.config import DataConfig
    from facerestore.train.data import load_images, split_files

    G = resolve_generator(args.weights).eval()
    res = G.img_resolution
    _, val = split_files(DataConfig(roots=[args.data], size=res, val_count=args.count))
    clean = load_images(val, res).float() / 255
    lpips = None
    if zoo.is_available("lpips-vgg-v0.1") and zoo.is_available("vgg16-imagenet"):
        from facerestore import metrics

        lpips = metrics.create("lpips")
    tasks = paper_tasks()
    shard, nshard = args.shard
    rows = {}
    for i, (task, level) in enumerate(tasks):
        if i % nshard != shard:
            continue
        t0 = time.time()
        y, recs = degrade.apply(clean, task, level=level, generator=0)
        r = RobustInversionRestorer(generator=G, loss="auto", steps=args.steps)
        pred = r.restore(y, task=task, params=recs).clamp(0, 1)
        seconds = time.time() - t0
        fid_y = degrade.apply(pred, task, params=recs)[0]
        from facerestore import metrics

        inp = F.interpolate(y, size=(res, res), mode="bicubic", align_corners=False).clamp(0, 1) \
            if y.shape[-1] != res else y
        rows[f"{task}@{level}"] = {
            "task": task, "level": level,
            "input": score(inp, clean, lpips),
            "restored": {**score(pred, clean, lpips),
                         "fidelity_psnr": float(metrics.create("psnr")(fid_y, y).mean())},
            "seconds_per_image": seconds / clean.shape[0],
            "loss": r.loss_kind,
        }
        print(f"{task}@{level}: input PSNR {rows[f'{task}@{level}']['input']['psnr']:.2f} -> "
              f"{rows[f'{task}@{level}']['restored']['psnr']:.2f} dB ({seconds:.0f} s)", flush=True)
    return {"generator": G.config, "faces": [p.name for p in val], "lpips_available": lpips is not None,
            "steps": list(args.steps), "rows": rows}


def to_markdown(result: dict) -> str:
    g = result["generator"]
    lines = [
        "# Paper 002's 31 tasks: robust-inversion on held-out faces",
        "",
        f"`{result['command']}` ({len(result['faces'])} held-out ffhq256 faces per task at "
        f"{g['img_resolution']} px, prior {g['img_resolution']} px StyleGAN2 (w_dim {g['w_dim']}), NGD steps "
        f"{result['steps']}, loss: {next(iter(result['rows'].values()))['loss']}; {result['wall_s']:.0f} s of CPU "
        f"in total). Columns: input (the degraded image resized to the clean size) -> restored. PSNR and FED "
        "(dlib identity distance) against the clean face = accuracy proxies; MS-SWD between the patch "
        "distributions of the restored and the clean sets = realism proxy (pFID needs Inception weights); "
        "fidelity = PSNR between the true degradation of the restoration (replayed records) and the input.",
        "",
    ]
    lines += [
        "| task | level | PSNR in -> out (dB) | FED in -> out | MS-SWD realism in -> out | fidelity PSNR (dB) |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"].values():
        i, o = r["input"], r["restored"]
        lines.append(f"| {r['task']} | {r['level']} | {i['psnr']:.2f} -> {o['psnr']:.2f} | {i['fed']:.3f} -> "
                     f"{o['fed']:.3f} | {i['realism_msswd']:.2f} -> {o['realism_msswd']:.2f} | "
                     f"{o['fidelity_psnr']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from facerestore.nn.devices import machine_description

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ffhq256"))
    p.add_argument("--weights", default=None, help="StyleGAN2 generator (default: the built-in 64 px face prior)")
    p.add_argument("--count", type=int, default=8, help="held-out faces per task (default 8)")
    p.add_argument("--steps", type=int, nargs=3, default=(150, 150, 150), help="NGD steps per phase")
    p.add_argument("--shard", default="0/1", help="i/n: run every n-th task starting at i")
    p.add_argument("--merge", type=int, default=0, metavar="N", help="merge N shard files into the final result")
    p.add_argument("--render", action="store_true", help="only rewrite the Markdown table from the JSON result")
    args = p.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    final = RESULTS / "robust_inversion_tasks.json"
    if args.render:
        (RESULTS / "robust_inversion_tasks.md").write_text(to_markdown(json.loads(final.read_text())))
        return 0
    if args.merge:
        parts = [json.loads((RESULTS / f"robust_inversion_tasks.shard{i}of{args.merge}.json").read_text())
                 for i in range(args.merge)]
        result = {**parts[0], "rows": {}}
        order = [f"{t}@{lvl}" for t, lvl in paper_tasks()]
        merged = {k: v for part in parts for k, v in part["rows"].items()}
        result["rows"] = {k: merged[k] for k in order if k in merged}
        result["wall_s"] = sum(part["wall_s"] for part in parts)
    else:
        torch.set_num_threads(1 if args.shard != "0/1" else torch.get_num_threads())
        i, n = (int(v) for v in args.shard.split("/"))
        args.shard = (i, n)
        t0 = time.time()
        result = {"benchmark": "robust_inversion_tasks",
                  "command": "python benchmarks/robust_inversion_tasks.py --count "
                             f"{args.count}" + ("" if args.weights is None else f" --weights {args.weights}"),
                  **run_tasks(args),
                  "hardware": machine_description()}
        result["wall_s"] = round(time.time() - t0, 1)
        if n > 1:
            (RESULTS / f"robust_inversion_tasks.shard{i}of{n}.json").write_text(json.dumps(result, indent=2) + "\n")
            return 0
    final.write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "robust_inversion_tasks.md").write_text(to_markdown(result))
    print(to_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
