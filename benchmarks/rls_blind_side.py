"""RLS's blind mode: observe a degraded face at its detail side (the default) or one octave below it.

    python benchmarks/rls_blind_side.py                  # 8 faces x blind / x8, 60 steps: ~22 min on 2 cores
    python benchmarks/rls_blind_side.py --count 2 --steps 20

What whole-photo ``facerestore restore --method rls`` and the reference benchmarks give RLS: a 256 px face with no
known degradation, restored at the prior's 1024 px (the blind mode). RLS reduces the crop by PULSE's bicubic to an
observation and super-resolves that. Two rows per degraded face, on MobileStyleGAN (fp32, the CLI's default):

- ``detail``: the default, the observation at the face's :func:`~facerestore.methods.restorer.detail_side`;
- ``octave below``: half that side (at least 16 px; ``work_resolution`` set for each face), where the degradation's
  residue (noise blobs, a blur's soft edges) is averaged away and the prior supplies the rest. The question: does
  that residue make RLS's blind faces hazy, and is a sharper face worth what it costs in fidelity?

Faces: held-out ffhq256 faces (ids ending in 0) other than the five a first look used (0, 20, 30, 200, 220: there
one octave below looked sharper at equal MobileFace identity), degraded as ``benchmarks/honestface_refs.py`` does
(``blind``: ``realworld-vqfr``; ``x8``: bicubic x8 down and back). Scored against the clean 256 px face: PSNR, dlib
FED, MobileFace distance ``id_mobileface`` (the independent identity judge: no loss of ours uses it), NIQE; paired
95% bootstrap intervals of octave below - detail over the faces whose two sides differ (a face observed at 16 px is
the same in both rows).
Writes results/rls_blind_side.{json,md} and docs/rls_blind_side_grid.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from blind_detail import METRICS, paired, scores
from honestface_refs import degrade_face
from sheets import labelled_sheet

ROOT = Path(__file__).resolve().parents[1]
FIRST_LOOK = (0, 20, 30, 200, 220)  # the validation faces of the first look (module docstring)
KINDS = ("blind", "x8")
ROWS = ("detail", "octave below")


def held_out_faces(data: Path, count: int) -> list[Path]:
    """The first ``count`` ffhq256 validation faces (the project's hold-out rule: numbers ending in 0) not among
    ``FIRST_LOOK``."""
    from facerestore.train.config import DataConfig
    from facerestore.train.data import split_files

    _, val = split_files(DataConfig(roots=[str(data)], size=256, val_count=0))
    return [f for f in val if int(f.stem) not in FIRST_LOOK][:count]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ffhq256"))
    p.add_argument("--count", type=int, default=8)
    p.add_argument("--steps", type=int, default=60, help="RLS latent-search steps (the paper's: 200)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    data = Path(args.data)
    if not data.is_dir():
        print(f"rls_blind_side: {data} not found (../shared/data/ffhq256)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    from facerestore.methods.restorer import resize_crop
    from facerestore.methods.rls import RLSRestorer
    from facerestore.methods.rls.flow_prior import find_flow, load_generator_flow
    from facerestore.nn.devices import machine_description, tune_cpu_allocator
    from facerestore.nn.stylegan2_io import prior_file, resolve_generator
    from facerestore.train.data import load_images

    tuned = tune_cpu_allocator()  # as the CLI does
    name = "mobilestylegan-ffhq-1024"
    G = resolve_generator(name).eval().requires_grad_(False)
    flow = load_generator_flow(find_flow(prior_file(name)), generator_path=prior_file(name))
    R = G.img_resolution
    files = held_out_faces(data, args.count)
    clean = load_images(files, 256).float() / 255
    default = RLSRestorer(generator=G, flow=flow, steps=args.steps, progress=False)
    t_all = time.time()
    rows: dict = {}
    sheet: dict[str, list[torch.Tensor]] = {}
    for kind in KINDS:
        outs: dict[str, list[torch.Tensor]] = {"input": [], **{r: [] for r in ROWS}}
        sides, seconds = [], {r: 0.0 for r in ROWS}
        for i, f in enumerate(files):
            x = clean[i: i + 1]
            lq = degrade_face(x, kind, seed=3000 + int(f.stem))
            side = default.blind_side(resize_crop(lq, (R, R)))
            below = max(16, side // 2)
            sides.append([side, below])
            outs["input"].append(lq)
            for row, rest in (("detail", default), ("octave below", RLSRestorer(
                    generator=G, flow=flow, steps=args.steps, progress=False, work_resolution=below))):
                t0 = time.time()
                outs[row].append(rest.restore(lq, size=(256, 256)).float().clamp(0, 1))
                seconds[row] += time.time() - t0
            print(f"{kind} {f.name}: sides {sides[-1]}", flush=True)
        differ = [i for i, (a, b) in enumerate(sides) if a != b]
        res = {"sides": sides, "faces_differing": len(differ)}
        for row, ys in outs.items():
            res[row] = scores(torch.cat(ys), clean)
            if row in seconds:
                res[row]["seconds_per_face"] = round(seconds[row] / len(files), 1)
        if differ:
            sub = {row: {"per_face": {k: [res[row]["per_face"][k][i] for i in differ] for k in METRICS}}
                   for row in ROWS}
            res["octave below - detail"] = paired(sub["octave below"], sub["detail"])
        rows[kind] = res
        for row, ys in outs.items():
            sheet[f"{kind} {row}"] = torch.cat(ys)
        print(to_markdown({"rows": {kind: res}, "command": "", "faces": files, "steps": args.steps,
                           "wall_s": time.time() - t_all, "hardware": ""}), flush=True)
    sheet["clean"] = clean
    result = {"benchmark": "rls_blind_side",
              "command": ("python benchmarks/rls_blind_side.py " + shlex.join(argv if argv is not None else
                                                                              sys.argv[1:])).strip(),
              "generator": f"{name}, fp32", "faces": [f.name for f in files], "steps": args.steps, "rows": rows,
              "wall_s": round(time.time() - t_all, 1),
              "hardware": machine_description(args.threads)
                          + (", malloc tuned as by the CLI" if tuned else ""),
              "intervals": "'octave below - detail': mean per-face difference over the faces whose sides differ, "
                           "paired 95% bootstrap interval (2000 resamples, seed 0)"}
    out_dir = ROOT / "benchmarks" / "results"
    (out_dir / "rls_blind_side.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "rls_blind_side.md").write_text(to_markdown(result))
    labelled_sheet(sheet, ROOT / "docs" / "rls_blind_side_grid.png", tile=160)
    print(to_markdown(result))
    return 0


def to_markdown(result: dict) -> str:
    lines = ["# RLS blind mode: observe at the detail side or one octave below", "",
             f"`{result['command']}`: {len(result['faces'])} held-out ffhq256 faces x {' / '.join(result['rows'])}, "
             f"rls {result['steps']} steps, {result.get('generator', '')}, {result['wall_s'] / 60:.0f} min "
             f"({result['hardware']}). Means against the clean 256 px face (`id_mobileface`: no loss of ours uses it); "
             "brackets: paired 95% bootstrap interval of octave below - detail over the faces whose sides differ.",
             "", "| degradation | row | PSNR | FED | id_mobileface | NIQE | s/face |", "|---|---|---|---|---|---|---|"]
    for kind, res in result["rows"].items():
        for row in ("input", *ROWS):
            r = res[row]
            lines.append(f"| {kind} | {row} | {r['psnr']:.2f} | {r['fed']:.3f} | {r['id_mobileface']:.3f} | "
                         f"{r['niqe']:.2f} | {r.get('seconds_per_face', '')} |")
        if "octave below - detail" in res:
            d = res["octave below - detail"]
            cells = " | ".join(f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]" for m, lo, hi in (d[k] for k in METRICS))
            lines.append(f"| {kind} | octave below - detail ({res['faces_differing']} faces) | {cells} | |")
        sides = ", ".join(f"{a}->{b}" for a, b in res["sides"])
        lines.append(f"| {kind} | sides (detail->observed) | {sides} | | | | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
