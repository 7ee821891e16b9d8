"""RLS (or robust-inversion) on whole photos, as `facerestore restore` runs it: settings side by side on each face.

Each photo goes through ``restore_photo`` with ``rls`` (``--method``) on MobileStyleGAN (1024 px, blind mode: each
face is fitted at its detail side) once per setting of the group ``--compare`` names: "lr" (rls only: the paper's
search rate 0.5 and the default preset's, 0.25 x W's spread, each from the paper's start, the mean of W samples,
and from the W encoder's guess) or "fidelity" (the method's defaults with the output projected onto the face's
observation at strength 0, 0.5 and 1; beyond the papers). Per face and setting: the quality gate's decision
(paste weight, dlib identity distance between the input crop and the restoration) and the NIQE of the restored
crop; a sheet (input crop | the restorations, one row per face) for the eye, because one photo's scores cannot say
which face a user would keep.

    python benchmarks/rls_photo.py                                   # the README's photo, 100 steps (5 min)
    python benchmarks/rls_photo.py --photos a.jpg b.png --steps 200 --sheet docs/rls_photo_sheet.png

Writes results/rls_photo.json (``--tag`` adds a suffix) and the sheet (default docs/rls_lr_astronaut.png).
``--steps`` is the method's budget per face (robust-inversion: split over its three phases).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {  # group -> label -> (RLSRestorer options, restore_photo options)
    "lr": {
        "lr 0.5, mean start": ({"lr": 0.5}, {}),
        "lr 0.5, encoder start": ({"lr": 0.5, "init": "encoder"}, {}),
        "default, mean start": ({"init": "mean"}, {}),
        "default, encoder start": ({"init": "encoder"}, {}),
    },
    "fidelity": {f"fidelity {f:g}": ({}, {"fidelity": f}) for f in (0.0, 0.5, 1.0)},
}


def crop_tensor(crop, side: int = 256) -> torch.Tensor:
    """A face crop (S, S, 3) in [0, 1] as (1, 3, side, side), area-resized, for one sheet column."""
    t = torch.from_numpy(crop).float().permute(2, 0, 1)[None]
    return F.interpolate(t, size=(side, side), mode="area" if t.shape[-1] > side else "bicubic")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", nargs="+", default=[str(ROOT / "examples" / "astronaut_lq.png")])
    p.add_argument("--method", choices=("rls", "robust-inversion"), default="rls")
    p.add_argument("--steps", type=int, default=100, help="steps per face (RLS, the paper: 200)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compare", choices=sorted(SETTINGS), default="lr", help="the group of settings to run")
    p.add_argument("--sheet", default=str(ROOT / "docs" / "rls_lr_astronaut.png"))
    p.add_argument("--tag", default="", help="suffix of the result file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from sheets import labelled_sheet

    from facerestore.methods.registry import REGISTRY
    from facerestore.metrics import create
    from facerestore.nn.devices import machine_description, tune_cpu_allocator
    from facerestore.pipeline import restore_photo

    tuned = tune_cpu_allocator()  # as the CLI does
    niqe = create("niqe")
    settings = SETTINGS[args.compare]
    if args.method != "rls" and args.compare != "fidelity":
        p.error(f"--compare {args.compare} is for rls only")
    cls = REGISTRY.restorer_class(args.method)
    restorers = {label: cls(progress=False, **cls.budget_options(args.steps), **opts)
                 for label, (opts, _) in settings.items()}
    faces: list[dict] = []
    columns: dict[str, list[torch.Tensor]] = {"input crop": [], **{label: [] for label in settings}}
    t_all = time.time()
    for photo in args.photos:
        results = {}
        for label, restorer in restorers.items():
            t = time.time()
            results[label] = (restore_photo(photo, restorer, **settings[label][1]), round(time.time() - t, 1))
        first = next(iter(results.values()))[0]
        for k, face in enumerate(first.faces):
            rec: dict = {"photo": Path(photo).name, "face": k, "settings": {}}
            columns["input crop"].append(crop_tensor(face.input_crop))
            for label, (res, sec) in results.items():
                f = res.faces[k]
                gate = f.gate
                rec["settings"][label] = {
                    "seconds_photo": sec, "paste_weight": float(f.paste_weight),
                    "gate": None if gate is None else gate.reason,
                    "identity_distance": None if gate is None else float(gate.identity_distance),
                    "niqe_restored_crop": float(niqe(torch.from_numpy(f.restored_crop).permute(2, 0, 1)[None]))}
                columns[label].append(crop_tensor(f.restored_crop))
            faces.append(rec)
            print(json.dumps(rec), flush=True)
    labelled_sheet({name: torch.cat(tiles) for name, tiles in columns.items()}, args.sheet, tile=256)
    result = {"benchmark": "rls_photo",
              "command": "python benchmarks/rls_photo.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "method": f"{args.method} (MobileStyleGAN 1024 px, blind mode)", "steps": args.steps,
              "compare": args.compare,
              "settings": {k: {kk: str(vv) for kk, vv in {**v[0], **v[1]}.items()} for k, v in settings.items()},
              "faces": faces, "sheet": str(Path(args.sheet).resolve().relative_to(ROOT))
              if Path(args.sheet).resolve().is_relative_to(ROOT) else args.sheet,
              "wall_s": round(time.time() - t_all, 1),
              "hardware": machine_description(args.threads)
                          + (", malloc tuned as by the CLI" if tuned else ""),
              "notes": "identity_distance: dlib distance between the input crop and the pasted restoration at the "
                       "gate's weight; the gate blends toward the input when it exceeds its threshold"}
    out = ROOT / "benchmarks" / "results" / ("rls_photo" + (f"_{args.tag}" if args.tag else "") + ".json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)} and {args.sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
