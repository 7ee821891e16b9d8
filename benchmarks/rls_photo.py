"""RLS on whole photos, as `facerestore restore` runs it: the search rate and start, side by side on each face.

Each photo goes through ``restore_photo`` with ``rls`` on MobileStyleGAN (1024 px, blind mode: each face is fitted
at its detail side) four times: the paper's search rate 0.5 and the default preset's (0.25 x W's spread), each from
the paper's start (the mean of W samples) and from the W encoder's guess (beyond the paper). Per face and setting:
the quality gate's decision (paste weight, dlib identity distance between the input crop and the restoration) and
the NIQE of the restored crop; a sheet (input crop | the four restorations) for the eye, because one photo's
scores cannot say which face a user would keep.

    python benchmarks/rls_photo.py                                   # the README's photo, 100 steps (5 min)
    python benchmarks/rls_photo.py --photos a.jpg b.png --steps 200 --sheet docs/rls_photo_sheet.png

Writes results/rls_photo.json (``--tag`` adds a suffix) and the sheet (default docs/rls_lr_astronaut.png).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {  # label -> RLSRestorer options
    "lr 0.5, mean start": {"lr": 0.5},
    "lr 0.5, encoder start": {"lr": 0.5, "init": "encoder"},
    "default, mean start": {},
    "default, encoder start": {"init": "encoder"},
}


def sheet(rows: list[list[tuple[str, np.ndarray]]], path: Path, side: int = 256) -> None:
    """One row per face: (label, crop (S, S, 3) in [0, 1]) tiles at ``side`` px under their labels."""
    from PIL import Image, ImageDraw

    head = 16
    cols = max(len(r) for r in rows)
    out = Image.new("RGB", (side * cols, (side + head) * len(rows)), "white")
    draw = ImageDraw.Draw(out)
    for i, row in enumerate(rows):
        y = i * (side + head)
        for j, (label, crop) in enumerate(row):
            tile = Image.fromarray((np.clip(crop, 0, 1) * 255).round().astype(np.uint8))
            out.paste(tile.resize((side, side), Image.LANCZOS), (j * side, y + head))
            draw.text((j * side + 3, y + 2), label, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", nargs="+", default=[str(ROOT / "examples" / "astronaut_lq.png")])
    p.add_argument("--steps", type=int, default=100, help="RLS steps per face (the paper: 200)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sheet", default=str(ROOT / "docs" / "rls_lr_astronaut.png"))
    p.add_argument("--tag", default="", help="suffix of the result file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from facerestore.methods.rls import RLSRestorer
    from facerestore.metrics import create
    from facerestore.nn.devices import tune_cpu_allocator
    from facerestore.pipeline import restore_photo

    tuned = tune_cpu_allocator()  # as the CLI does
    niqe = create("niqe")
    restorers = {label: RLSRestorer(steps=args.steps, progress=False, **opts) for label, opts in SETTINGS.items()}
    faces: list[dict] = []
    rows: list[list[tuple[str, np.ndarray]]] = []
    t_all = time.time()
    for photo in args.photos:
        results = {}
        for label, restorer in restorers.items():
            t = time.time()
            results[label] = (restore_photo(photo, restorer), round(time.time() - t, 1))
        first = next(iter(results.values()))[0]
        for k, face in enumerate(first.faces):
            rec: dict = {"photo": Path(photo).name, "face": k, "settings": {}}
            rows.append([(f"{Path(photo).stem} face {k}: input crop", face.input_crop)])
            for label, (res, sec) in results.items():
                f = res.faces[k]
                gate = f.gate
                rec["settings"][label] = {
                    "seconds_photo": sec, "paste_weight": float(f.paste_weight),
                    "gate": None if gate is None else gate.reason,
                    "identity_distance": None if gate is None else float(gate.identity_distance),
                    "niqe_restored_crop": float(niqe(torch.from_numpy(f.restored_crop).permute(2, 0, 1)[None]))}
                rows[-1].append((label, f.restored_crop))
            faces.append(rec)
            print(json.dumps(rec), flush=True)
    sheet(rows, Path(args.sheet))
    result = {"benchmark": "rls_photo",
              "command": "python benchmarks/rls_photo.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "method": "rls (MobileStyleGAN 1024 px, blind mode)", "steps": args.steps,
              "settings": {k: {kk: str(vv) for kk, vv in v.items()} for k, v in SETTINGS.items()},
              "faces": faces, "sheet": str(Path(args.sheet).resolve().relative_to(ROOT))
              if Path(args.sheet).resolve().is_relative_to(ROOT) else args.sheet,
              "wall_s": round(time.time() - t_all, 1),
              "hardware": f"{platform.machine()}, torch {torch.__version__}, CPU, {args.threads} thread(s)"
                          + (", malloc tuned as by the CLI" if tuned else ""),
              "notes": "identity_distance: dlib distance between the input crop and the pasted restoration at the "
                       "gate's weight; the gate blends toward the input when it exceeds its threshold"}
    out = ROOT / "benchmarks" / "results" / ("rls_photo" + (f"_{args.tag}" if args.tag else "") + ".json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)} and {args.sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
