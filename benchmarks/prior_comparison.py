"""Paper 002's tasks with two priors side by side: our built-in 64 px StyleGAN2 and MobileStyleGAN (issue 13).

    python benchmarks/prior_comparison.py                                   # the full protocol (hours on a GPU)
    python benchmarks/prior_comparison.py --count 2 --tasks robust-upsample@M,robust-denoise@M --steps 10 10 10

Faces: the first ``--count`` held-out ffhq256 faces (ids ending in 0). Each prior restores the task applied at
its own resolution (64 px for the built-in prior; MobileStyleGAN at ``--resolution``, default 256 = the data's,
its exact box-averaged output) with the robust-inversion restorer (paper 002's single hyper-parameter set; NGD
steps per phase ``--steps``, the paper's 150/150/150 by default), and both are scored against the 256 px ground
truth (64 px results bicubically upsampled): PSNR, dlib identity distance FED, the independent MobileFaceNet
identity distance ``id_mfn`` when its weights are cached, NIQE. ``input`` = the degraded image at 256 px
(bicubically resized to 256 where the task shrinks it). Writes results/prior_comparison.{json,md} and the grid
docs/prior_comparison_grid.png (degraded | 64 px prior | MobileStyleGAN | ground truth) for the first task.

``--fidelity 0 1`` (beyond the paper) adds, for ``robust-upsample`` tasks, a column per strength with the output
projected onto the observation (the restorer's ``fidelity``, ``degrade.project_resize``), through each reduction
of ``--projection``: ``area`` (the box average, the task's surrogate, the default), ``recorded`` (the bilinear,
bicubic or Lanczos filter the task drew for that face, what the restorer does when given the task's records) or
one fixed filter for every face (a guess when the filter is unknown); the inversion runs once and every column is
projected from its raw image. Without it every column is the inversion's own output (fidelity 0, the paper's).
``--detail 1 0.5`` adds, per fidelity column, the projections that keep that share of the prior's detail beyond
the observation (the restorer's ``detail``; ``robust-upsample`` defaults to 0.5 when projecting).

A long run goes in chunks of faces that each write a usable result, then one merge (means over every face; paired
intervals once every chunk stored per-face values)::

    python benchmarks/prior_comparison.py --first 2 --count 1 --steps 30 30 30 --init encoder --threads 2 \
        --out benchmarks/results/chunks/all_tasks_90steps/f2 --tag all_tasks_90steps
    python benchmarks/prior_comparison.py --merge A.json B.json ... --tag all_tasks_90steps_6faces

Each chunk draws its degradations for its whole batch from one seed, ``--seed`` (default: the index of its first
face), so a face's degradation depends on its chunk (the same protocol and distribution; a 1-face chunk and a
30-face run differ per face), and 1-face chunks at different faces draw different noise and masks. Results made
before ``--seed`` existed drew seed 0 (``SEED_BEFORE_OPTION``): the 1-face chunks of faces 2-4 share face 0's draws.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PRIORS = ("builtin:stylegan2-face-64.safetensors", "mobilestylegan-ffhq-1024")


def _tasks_module():
    spec = importlib.util.spec_from_file_location("robust_inversion_tasks", ROOT / "benchmarks" /
                                                  "robust_inversion_tasks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def up(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    mode = "area" if x.shape[-1] > size else "bicubic"
    kw = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(x, size=(size, size), mode=mode, **kw).clamp(0, 1)


def scores(pred: torch.Tensor, clean: torch.Tensor) -> dict:
    """Per metric the mean over the faces (NaN, e.g. no face found by an identity network, left out), and under
    "per_face" each face's value (None for NaN), so that chunks of faces merge exactly (:func:`merge_results`)."""
    from facerestore import metrics

    values = {"psnr": metrics.create("psnr")(pred, clean),
              "fed": metrics.create("fed", aligned=True)(pred, clean),
              "niqe": metrics.create("niqe")(pred)}
    out: dict = {}
    for name in ("id_mobileface", "id_mfn"):  # MobileFace: the independent identity judge (no loss of ours uses it)
        try:
            values[name] = metrics.create(name, aligned=True)(pred, clean)
        except Exception as exc:  # weights not cached: the column is absent, said so in the output
            out[f"{name}_missing"] = str(exc).splitlines()[0][:120]
    per_face = {}
    for name, v in values.items():
        v = v.reshape(-1).double()
        out[name] = float(torch.nanmean(v))
        per_face[name] = [None if not np.isfinite(x) else float(x) for x in v.tolist()]
    return {**out, "per_face": per_face}


def load_prior(name: str, resolution: int):
    from facerestore.nn.stylegan2_io import resolve_generator

    G = resolve_generator(name).eval()
    if hasattr(G, "set_resolution") and G.img_resolution > resolution:
        G.set_resolution(resolution)
    return G


def start_for(name: str, G, init: str):
    """The W encoder shipped beside prior ``name`` when ``init`` is "encoder" (None: the mean latent, the paper's
    start; also for a prior without an encoder, such as the 64 px built-in)."""
    from facerestore.methods.inversion.encoder import EncoderStart

    return None if init == "mean" else EncoderStart("auto", name, G).encoder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ffhq256"))
    p.add_argument("--count", type=int, default=30)
    p.add_argument("--first", type=int, default=0,
                   help="skip this many held-out faces (a chunk of a long run: faces FIRST..FIRST+COUNT-1)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the chunk's degradations (default: --first, so that chunks of one face each draw "
                        "their own noise and masks)")
    p.add_argument("--out", metavar="DIR", help="write the JSON, markdown and grid (or the merge) here (default: "
                   "benchmarks/results and docs/)")
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="join chunk results of one protocol (same tasks, steps, priors, options; disjoint faces) "
                        "into prior_comparison_TAG.{json,md}: each mean weighted by its faces")
    p.add_argument("--tasks", default="all", help="comma list of TASK@LEVEL, or all (the 31 of paper 002)")
    p.add_argument("--steps", type=int, nargs=3, default=(150, 150, 150))
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tag", default="", help="suffix of the result files (keep several budgets side by side)")
    p.add_argument("--half", action="store_true", help="generators in bf16, as `restore --half` (losses float32)")
    p.add_argument("--priors", default=",".join(PRIORS), help="comma list of the priors to run (default both)")
    p.add_argument("--fidelity", type=float, nargs="+", default=[0.0],
                   help="projection strength(s) onto the observation to score on robust-upsample (0: the paper's)")
    p.add_argument("--projection", nargs="+", default=["area"],
                   choices=("area", "recorded", "bilinear", "bicubic", "lanczos"),
                   help="the reduction(s) the fidelity columns project through (module docstring)")
    p.add_argument("--detail", type=float, nargs="+", default=[1.0],
                   help="share(s) of the prior's detail beyond the observation kept by the fidelity columns (1: all, "
                        "the projection alone; robust-inversion's DEFAULT_DETAIL for robust-upsample is 0.5)")
    p.add_argument("--render", metavar="JSON", help="only rewrite the markdown of an earlier result (its JSON)")
    p.add_argument("--init", choices=("mean", "encoder"), default="mean",
                   help="phase I's start: the prior's mean latent (paper 002) or the W encoder shipped beside the "
                        "prior (beyond the paper; priors without one start from the mean, said in the output)")
    args = p.parse_args(argv)
    if args.render:
        path = Path(args.render)
        path.with_suffix(".md").write_text(to_markdown(json.loads(path.read_text())))
        return 0
    if args.merge:
        try:
            result = merge_results([json.loads(Path(f).read_text()) for f in args.merge])
        except ValueError as exc:
            p.error(str(exc))
        result["command"] = "python benchmarks/prior_comparison.py " + " ".join(argv if argv is not None else
                                                                                sys.argv[1:])
        out_dir = Path(args.out) if args.out else RESULTS
        out_dir.mkdir(parents=True, exist_ok=True)
        name = "prior_comparison" + (f"_{args.tag}" if args.tag else "")
        (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (out_dir / f"{name}.md").write_text(to_markdown(result))
        print(to_markdown(result))
        return 0
    if args.first < 0 or args.count < 1:
        p.error("--first must be >= 0 and --count >= 1")
    seed = args.first if args.seed is None else args.seed
    torch.set_num_threads(args.threads)
    from facerestore.nn.devices import machine_description, tune_cpu_allocator

    tuned = tune_cpu_allocator()  # as the CLI does: freed memory kept for reuse
    from facerestore import degrade
    from facerestore.methods.inversion.restorer import RobustInversionRestorer, project_observation, recorded_filters
    from facerestore.train.config import DataConfig
    from facerestore.train.data import load_images, split_files

    tasks = _tasks_module().paper_tasks() if args.tasks == "all" else [
        tuple(t.split("@")) for t in args.tasks.split(",")]
    _, val = split_files(DataConfig(roots=[args.data], size=256, val_count=args.first + args.count))
    val = val[args.first:]
    if not val:
        p.error(f"no held-out faces from index {args.first} in {args.data}")
    clean = load_images(val, 256).float() / 255
    unknown = sorted(set(args.priors.split(",")) - set(PRIORS))
    if unknown:
        p.error(f"unknown prior(s) {unknown}; choose from {list(PRIORS)}")
    priors = {name: load_prior(name, args.resolution) for name in PRIORS if name in args.priors.split(",")}
    starts = {name: start_for(name, G, args.init) for name, G in priors.items()}
    rows, grid = {}, None
    t_all = time.time()
    for ti, (task, level) in enumerate(tasks):
        row: dict = {"task": task, "level": level}
        y256, _ = degrade.apply(clean, task, level=level, generator=seed)
        row["input"] = scores(up(y256, 256), clean)
        restored = {}
        for name, G in priors.items():
            r = G.img_resolution
            y, recs = degrade.apply(up(clean, r), task, level=level, generator=seed)
            rest = RobustInversionRestorer(generator=G, loss="auto", steps=args.steps, progress=False,
                                           init="mean" if starts[name] is None else starts[name], detail=1.0)
            if args.half:
                rest.set_half()
            t0 = time.time()
            fids = sorted(args.fidelity) if task == "robust-upsample" else [0.0]
            out, details = rest.restore(y, task=task, params=recs, fidelity=max(fids), return_details=True)
            seconds = round((time.time() - t0) / clean.shape[0], 1)
            columns = {name: details.image}
            for fid in fids:
                for proj in args.projection if fid else []:
                    filters = recorded_filters(recs, y.shape[0]) if proj == "recorded" else [proj] * y.shape[0]
                    for detail in sorted(args.detail, reverse=True):
                        columns[name + column_suffix(fid, proj, detail)] = project_observation(details.image, y, fid,
                                                                                               filters, detail)
            # the restorer's own output at the top strength is the "recorded" column (it was given the records)
            assert max(fids) == 0 or "recorded" not in args.projection or torch.equal(
                out, columns[name + column_suffix(max(fids), "recorded")])
            for key, pred in columns.items():
                restored[key] = up(pred.clamp(0, 1), 256)
                row[key] = {**scores(restored[key], clean), "resolution": r, "loss": rest.loss_kind,
                            "init": "encoder" if starts[name] is not None else "mean", "seconds_per_face": seconds}
                print(f"{task}@{level} {key}: PSNR {row['input']['psnr']:.2f} -> {row[key]['psnr']:.2f}, FED "
                      f"{row['input']['fed']:.3f} -> {row[key]['fed']:.3f} ({seconds} s/face)", flush=True)
        rows[f"{task}@{level}"] = row
        if ti == 0:
            cols = [up(y256, 256), *restored.values(), clean]
            grid = torch.cat([torch.cat(list(c), dim=-1) for c in cols], dim=-2)  # columns = faces, rows = kinds
    result = {"benchmark": "prior_comparison",
              "command": "python benchmarks/prior_comparison.py " + " ".join(argv if argv is not None else
                                                                             sys.argv[1:]),
              "faces": [f.name for f in val], "first": args.first, "degradation_seed": seed,
              "steps": list(args.steps),
              "resolution": args.resolution, "init": args.init,
              "fidelity": sorted(args.fidelity), "projection": args.projection,
              "detail": sorted(args.detail, reverse=True),
              "priors": {n: {"img_resolution": G.img_resolution,
                             "init": "encoder" if starts[n] is not None else "mean"} for n, G in priors.items()},
              "rows": rows, "wall_s": round(time.time() - t_all, 1),
              "precision": "bf16 generators" if args.half else "fp32",
              "hardware": machine_description(args.threads)
                          + (", malloc tuned as by the CLI" if tuned else "")}
    out_dir, grid_dir = (Path(args.out), Path(args.out)) if args.out else (RESULTS, ROOT / "docs")
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "prior_comparison" + (f"_{args.tag}" if args.tag else "")
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / f"{name}.md").write_text(to_markdown(result))
    if grid is not None:
        from facerestore import io

        io.write_image(grid_dir / f"{name}_grid.png", np.ascontiguousarray(grid.permute(1, 2, 0).numpy()))
    print(to_markdown(result))
    return 0


LABELS = {PRIORS[0]: "64 px prior", PRIORS[1]: "MobileStyleGAN"}
PROJECTION_LABELS = {"area": "", "recorded": " through the recorded filter", "bilinear": " through bilinear",
                     "bicubic": " through bicubic", "lanczos": " through Lanczos"}


def column_suffix(fidelity: float, projection: str = "area", detail: float = 1.0) -> str:
    """A result column's key after the prior's name: "" for the inversion's own output, "@fidelity=F" for the
    projection onto the box average (the keys of earlier results), "@fidelity=F,PROJECTION" for the others, then
    ";detail=D" when the projection kept D < 1 of the prior's detail beyond the observation."""
    if not fidelity:
        return ""
    return (f"@fidelity={fidelity:g}" + ("" if projection == "area" else f",{projection}")
            + ("" if detail == 1 else f";detail={detail:g}"))


def parse_column(key: str) -> tuple[str, str, str, str]:
    """(prior, fidelity, projection, detail) of a column key (:func:`column_suffix`; "" where the key has none)."""
    prior, _, rest = key.partition("@fidelity=")
    rest, _, detail = rest.partition(";detail=")
    fid, _, proj = rest.partition(",")
    return prior, fid, proj, detail


# what chunks of one run must share to be merged (the faces and the wall time are what differs)
PROTOCOL_KEYS = ("steps", "resolution", "fidelity", "projection", "detail", "precision", "priors")
# the values of keys that results made before the key existed leave out (what those runs did)
PROTOCOL_DEFAULTS = {"fidelity": [0.0], "projection": ["area"], "detail": [1.0], "precision": "fp32"}
SCORE_KEYS = ("psnr", "fed", "id_mobileface", "id_mfn", "niqe")
# the degradation seed of results made before --seed (not a protocol key: each chunk's draws may differ)
SEED_BEFORE_OPTION = 0


def _merge_cells(cells: list[dict], faces: list[int]) -> dict:
    """One row's column (a dict of scores) from several chunks: each metric's mean over every face of every chunk
    (the chunk's ``per_face`` values where it has them, else its mean weighted by its number of faces: results made
    before per-face values were stored), ``seconds_per_face`` weighted by faces, the other fields the first's."""
    out = {k: v for k, v in cells[0].items() if k not in SCORE_KEYS and k != "per_face"}
    per_face: dict[str, list] = {}
    for name in SCORE_KEYS:
        if not all(name in c for c in cells):
            continue
        total = count = 0.0
        for c, n in zip(cells, faces):
            vals = c.get("per_face", {}).get(name)
            if vals is None:
                total, count = total + c[name] * n, count + n
            else:
                finite = [v for v in vals if v is not None]
                total, count = total + sum(finite), count + len(finite)
        out[name] = total / count if count else float("nan")
        if all(name in c.get("per_face", {}) for c in cells):
            per_face[name] = [v for c in cells for v in c["per_face"][name]]
    if "seconds_per_face" in out:
        out["seconds_per_face"] = round(sum(c["seconds_per_face"] * n for c, n in zip(cells, faces)) / sum(faces), 1)
    if per_face:
        out["per_face"] = per_face
    return out


def merge_results(chunks: list[dict]) -> dict:
    """Join results of one protocol measured on disjoint chunks of faces (``--first``/``--count``) into one: the
    faces in chunk order, every cell's means over all faces (:func:`_merge_cells`), the wall times summed and each
    chunk's command kept. Raises ValueError when the chunks differ in protocol, tasks or columns, or share a face."""
    if len(chunks) < 2:
        raise ValueError("--merge needs at least two results")
    first = chunks[0]
    for c in chunks[1:]:
        for key in PROTOCOL_KEYS:
            a, b = (r.get(key, PROTOCOL_DEFAULTS.get(key, "absent")) for r in (first, c))
            if a != b:
                raise ValueError(f"chunks differ in {key}: {a!r} vs {b!r}")
        if list(c["rows"]) != list(first["rows"]):
            raise ValueError("chunks measured different tasks")
        if any(set(c["rows"][t]) != set(first["rows"][t]) for t in first["rows"]):
            raise ValueError("chunks measured different columns")
    faces = [f for c in chunks for f in c["faces"]]
    if len(set(faces)) != len(faces):
        raise ValueError(f"a face is in two chunks: {sorted(f for f in set(faces) if faces.count(f) > 1)}")
    n = [len(c["faces"]) for c in chunks]
    rows = {}
    for task, row in first["rows"].items():
        rows[task] = {k: (v if not isinstance(v, dict) else _merge_cells([c["rows"][task][k] for c in chunks], n))
                      for k, v in row.items()}
    protocol = {k: first.get(k, PROTOCOL_DEFAULTS.get(k)) for k in PROTOCOL_KEYS
                if k in first or k in PROTOCOL_DEFAULTS}
    return {"benchmark": first.get("benchmark", "prior_comparison"), **protocol, "faces": faces, "rows": rows,
            "wall_s": round(sum(c["wall_s"] for c in chunks), 1), "hardware": first["hardware"],
            "chunks": [{"command": c["command"], "faces": c["faces"], "wall_s": c["wall_s"],
                        "degradation_seed": c.get("degradation_seed", SEED_BEFORE_OPTION)} for c in chunks]}


def to_markdown(result: dict) -> str:
    names = columns(result)
    heads = [column_label(result, n) for n in names]
    lines = [
        "# Paper 002's tasks with two priors (robust-inversion)", "",
        f"`{result['command']}`: {len(result['faces'])} held-out ffhq256 faces, NGD steps {result['steps']}, "
        f"{result['wall_s']:.0f} s in all ({result['hardware']}, {result.get('precision', 'fp32')}). Cells: PSNR "
        "(dB) / FED (dlib identity distance) / MobileFace distance (`id_mobileface`, the independent judge; same "
        "person under 0.71) / NIQE against the 256 px ground truth; the 64 px prior's output is bicubically "
        "upsampled. Phase I starts from the prior's mean latent (the paper's start) unless a column says "
        "\"encoder start\" (the W encoder shipped beside the prior; beyond the paper). Columns with a fidelity: the "
        "output projected onto the observation at that strength (robust-upsample only; beyond the paper), through "
        "its box average (the task's surrogate) unless the column names a filter (\"recorded\": the one the task "
        "drew for that face), keeping all the prior's detail beyond the observation unless the column says "
        "\"detail D\" (robust-inversion's `detail`: the share kept; the reduction is the same at every D); the "
        "others are the inversion's own output.", "",
        *([f"Merged from {len(result['chunks'])} runs on disjoint faces (the same protocol): "
           + "; ".join(f"`{c['command']}` ({', '.join(c['faces'])}; degradation seed "
                       f"{c.get('degradation_seed', SEED_BEFORE_OPTION)}; {c['wall_s']:.0f} s)"
                       for c in result["chunks"]),
           ""] if result.get("chunks") else []),
        "| task | level | input | " + " | ".join(heads) + " |", "|---|---|---" + "|---" * len(names) + "|",
    ]
    for r in result["rows"].values():
        cell = lambda s: " / ".join([f"{s['psnr']:.2f}", f"{s['fed']:.3f}", *(  # noqa: E731
            [f"{s['id_mobileface']:.3f}"] if "id_mobileface" in s else []), f"{s['niqe']:.2f}"])
        lines.append(f"| {r['task']} | {r['level']} | {cell(r['input'])} | "
                     + " | ".join(cell(r[n]) if n in r else "" for n in names) + " |")
    return "\n".join(lines + summary(result)) + "\n"


def column_label(result: dict, key: str) -> str:
    """A column's heading: prior, start, and the projection's fidelity, filter and detail where it has them."""
    prior, fid, proj, detail = parse_column(key)
    encoder = result["priors"][prior].get("init") == "encoder"
    return (LABELS[prior] + (", encoder start" if encoder else "")
            + (f", fidelity {fid}{PROJECTION_LABELS[proj or 'area']}" if fid else "")
            + (f", detail {detail}" if detail else ""))


def columns(result: dict) -> list[str]:
    """The result's column keys in table order: per prior, its own output, then each fidelity x projection x
    detail."""
    fids = [f for f in result.get("fidelity", [0.0]) if f]
    projs, details = result.get("projection", ["area"]), result.get("detail", [1.0])
    return [n + column_suffix(f, pr, d) for n in PRIORS if n in result["priors"]
            for f, pr, d in [(0.0, "area", 1.0), *((f, pr, d) for f in fids for pr in projs for d in details)]]


# metric -> +1 when higher is better, -1 when lower is
METRICS = {"psnr": 1, "fed": -1, "id_mobileface": -1, "niqe": -1}


def summary(result: dict) -> list[str]:
    """Issue 13's checks on the rows of the inversions' own outputs (fidelity 0): on how many tasks MobileStyleGAN
    beats the 64 px prior per metric (where both ran); where each of MobileStyleGAN's columns (its own output and its
    projections) beats the degraded input on the upsampling and denoising tasks M..XL; and paper 002's robustness
    claim: per single task, the output's PSNR (and its gain over the input) at each level XS..XL with one
    hyper-parameter set, and the spread (max - min) of that PSNR."""
    rows = list(result["rows"].values())
    lines: list[str] = []
    small, real = PRIORS
    better = lambda a, b, m: METRICS[m] * (a[m] - b[m]) > 0  # noqa: E731
    if all(small in r and real in r for r in rows) and len(rows) > 1:
        lines += ["", f"## MobileStyleGAN against the 64 px prior ({len(rows)} tasks)", "",
                  "| metric | tasks where MobileStyleGAN is better | tasks where it is not |", "|---|---|---|"]
        for m in METRICS:
            have = [r for r in rows if m in r[small] and m in r[real]]
            worse = [f"{r['task']}@{r['level']}" for r in have if not better(r[real], r[small], m)]
            lines.append(f"| {m} | {len(have) - len(worse)} of {len(have)} | {', '.join(worse) or 'none'} |")
    target = [r for r in rows if r["task"] in ("robust-upsample", "robust-denoise") and r["level"] in ("M", "L", "XL")
              and real in r]
    if target:
        lines += ["", "## MobileStyleGAN against the degraded input (upsampling and denoising, M..XL)", "",
                  "| task | level | output | PSNR input -> output | MobileFace input -> output | better than the "
                  "input on both |", "|---|---|---|---|---|---|"]
        for r in target:
            for key in (k for k in columns(result) if k in r and parse_column(k)[0] == real):
                out = r[key]
                ident = (f"{r['input']['id_mobileface']:.3f} -> {out['id_mobileface']:.3f}"
                         if "id_mobileface" in out else "not cached")
                both = better(out, r["input"], "psnr") and "id_mobileface" in out and better(out, r["input"],
                                                                                            "id_mobileface")
                lines.append(f"| {r['task']} | {r['level']} | {column_label(result, key)} | "
                             f"{r['input']['psnr']:.2f} -> {out['psnr']:.2f} | {ident} | {'yes' if both else 'no'} |")
    levels = ("XS", "S", "M", "L", "XL")
    singles = sorted({r["task"] for r in rows if "+" not in r["task"]})
    spread = []
    for prior in (n for n in PRIORS if n in result["priors"]):
        for task in singles:
            by_level = {r["level"]: r for r in rows if r["task"] == task and prior in r}
            if len(by_level) == len(levels):
                out = [by_level[lv][prior]["psnr"] for lv in levels]
                gain = [by_level[lv][prior]["psnr"] - by_level[lv]["input"]["psnr"] for lv in levels]
                spread.append(f"| {LABELS[prior]} | {task} | " + " | ".join(f"{o:.2f} ({g:+.2f})" for o, g in
                                                                            zip(out, gain))
                              + f" | {max(out) - min(out):.2f} |")
    if spread:
        lines += ["", "## Robustness: one hyper-parameter set across levels", "",
                  "PSNR of the output in dB (its gain over the input); spread: max - min of the output's PSNR over "
                  "the levels.", "",
                  "| prior | task | " + " | ".join(levels) + " | spread |", "|---|---" + "|---" * len(levels) + "|---|",
                  *spread]
    return lines + paired_intervals(result)


def paired_intervals(result: dict, min_faces: int = 3) -> list[str]:
    """Per task, MobileStyleGAN's own output (fidelity 0) minus the input and minus the 64 px prior, per face, as
    means with paired 95% bootstrap intervals (PSNR, MobileFace). Only when every such cell holds per-face values
    (results since per-face scores were stored) for at least ``min_faces`` faces: a merge with an older chunk has
    means only, and says so."""
    from facerestore.benchmark import paired_difference

    small, real = PRIORS
    rows = [r for r in result["rows"].values() if real in r]
    names = [k for k in ("input", small) if rows and all(k in r for r in rows)]
    cells = [r[k] for r in rows for k in (real, *names)]
    if not rows or not all("per_face" in c for c in cells):
        return ["", "Paired intervals: not every cell here holds per-face values (a result made before they were "
                "stored, or a merge with one); the means above are over every face."] if rows else []
    if len(result["faces"]) < min_faces:
        return []
    ci = lambda a, b, m: paired_difference(a["per_face"][m], b["per_face"][m])[:3]  # noqa: E731
    num = lambda v: f"{round(v, 3) + 0.0:+.3f}"  # noqa: E731  (+ 0.0: no "-0.000" for a rounding residue)
    fmt = lambda t: f"{num(t[0])} [{num(t[1])}, {num(t[2])}]" + ("*" if t[1] > 0 or t[2] < 0 else "")  # noqa: E731
    metrics = [m for m in ("psnr", "id_mobileface") if all(m in c["per_face"] for c in cells)]
    heads = [f"{m} - {'input' if k == 'input' else LABELS[k]}" for k in names for m in metrics]
    lines = ["", f"## MobileStyleGAN's own output, paired over the {len(result['faces'])} faces", "",
             "Mean of the per-face difference [paired 95% bootstrap interval]; * marks intervals excluding zero "
             "(PSNR: higher is better; MobileFace distance: lower is better).", "",
             "| task | level | " + " | ".join(heads) + " |", "|---|---" + "|---" * len(heads) + "|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['level']} | "
                     + " | ".join(fmt(ci(r[real], r[k], m)) for k in names for m in metrics) + " |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
