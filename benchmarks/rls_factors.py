"""RLS vs RLS+ (paper 004) on MobileStyleGAN at x8 / x16 / x64 super-resolution of held-out real faces (issue 13).

    python benchmarks/rls_factors.py                                  # paper budget: 200 + 50 steps, 30 faces
    python benchmarks/rls_factors.py --count 1 --steps 100 --plus-steps 25
    python benchmarks/rls_factors.py --count 4                        # paper budget, 4 faces: about 40 min

Each held-out ffhq256 face (ids ending in 0) is downsampled with PULSE's bicubic by the factor (256 -> 32, 16, 4
px) and restored by RLS+ on MobileStyleGAN at 256 px (its exact box-averaged output) with our built-in flow for its
W space and the "default" preset; RLS is the anchor RLS+ starts from (the same run). Scored against the 256 px
ground truth: PSNR, dlib identity distance FED, NIQE; ``input`` = the low-resolution face bicubically upsampled.
Paper 004's claim to check: RLS+ raises fidelity (PSNR, identity) over RLS, most at small factors: per factor,
the paired difference RLS+ - RLS (and RLS+ - input) with a 95% bootstrap interval over the faces.
Writes results/rls_factors.json.

``--init mean encoder`` (beyond the paper) runs the search twice per factor, from the paper's start (the mean of W
samples) and from the W encoder's guess of each low-resolution face; ``--lr default 0.5`` runs it with the default
preset's peak learning rate (scaled to W's spread) and with the paper's 0.5. Every combination of the two lists is
a row, and each row after the first gets its paired differences against the first; ``--no-plus`` skips RLS+.
``--fidelity 0 0.5 1`` (beyond the paper) also scores each output projected onto the observation at those
strengths (the restorers' ``fidelity``: ``degrade.project_pulse_bicubic``; 0 is the search's own output, the rows
without a fidelity tag); the search runs once, at the largest fidelity, and the others are projected from its raw
images. Each projected row gets its paired differences against its fidelity-0 row and against the input.
Identity is also judged by MobileFace (``id_mobileface``: no loss of
ours uses it) when its weights are cached. Other runs than the default write results/rls_factors_<tag>.json. Every
run also writes a Markdown table beside its JSON (``--render JSON`` writes it again from a stored result).
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


def scores(pred: torch.Tensor, clean: torch.Tensor) -> dict:
    """Means (NaN-skipping: FED is NaN where dlib finds no face) and per-face values of PSNR, FED, NIQE."""
    from facerestore import metrics

    per_face = {"psnr": metrics.create("psnr")(pred, clean).reshape(-1),
                "fed": metrics.create("fed", aligned=True)(pred, clean).reshape(-1),
                "niqe": metrics.create("niqe")(pred).reshape(-1)}
    try:  # MobileFace: the independent identity judge
        per_face["id_mobileface"] = metrics.create("id_mobileface", aligned=True)(pred, clean).reshape(-1)
    except Exception:  # weights not cached: the column is absent
        pass
    out: dict = {k: float(torch.nanmean(v.double())) for k, v in per_face.items()}
    out["per_face"] = {k: [float(x) for x in v] for k, v in per_face.items()}
    return out


def paired(a: dict, b: dict) -> dict[str, tuple[float, float, float]]:
    """Per metric: mean of (a - b) over the faces and its paired 95% bootstrap interval."""
    import numpy as np

    from facerestore.metrics.stats import paired_bootstrap

    return {k: paired_bootstrap(np.array(a["per_face"][k]) - np.array(b["per_face"][k]), 2000, 0)
            for k in ("psnr", "fed", "id_mobileface", "niqe") if k in a["per_face"] and k in b["per_face"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ffhq256"))
    p.add_argument("--count", type=int, default=30)
    p.add_argument("--factors", type=int, nargs="+", default=[8, 16, 64])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--plus-steps", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--init", nargs="+", choices=("mean", "encoder"), default=["mean"],
                   help="the search's start(s): the paper's mean latent and/or the W encoder's guess")
    p.add_argument("--lr", nargs="+", default=["default"],
                   help="RLS's peak learning rate(s): 'default' (the preset's: LR_SPREAD x W's spread) or a number")
    p.add_argument("--no-plus", action="store_true", help="RLS only (no RLS+ fine-tuning)")
    p.add_argument("--fidelity", type=float, nargs="+", default=[0.0],
                   help="projection strength(s) onto the observation to score (0: the search's own output)")
    p.add_argument("--tag", default="", help="suffix of the result file")
    p.add_argument("--grid", default=None,
                   help="write a picture sheet (per factor: input, each row's output, truth) to this PNG")
    p.add_argument("--render", default=None, help="write the Markdown table of this stored result JSON and exit")
    args = p.parse_args(argv)
    if args.render:
        src = Path(args.render)
        src.with_suffix(".md").write_text(to_markdown(json.loads(src.read_text())))
        print(src.with_suffix(".md").read_text())
        return 0
    torch.set_num_threads(args.threads)
    from facerestore.nn.devices import machine_description, tune_cpu_allocator

    tuned = tune_cpu_allocator()  # as the CLI does: freed memory kept for reuse (about 2x faster here)
    from facerestore import degrade
    from facerestore.methods.inversion.encoder import EncoderStart
    from facerestore.methods.rls import RLSRestorer
    from facerestore.methods.rls.flow_prior import find_flow, load_generator_flow
    from facerestore.methods.rls.rls import config, search_lr
    from facerestore.nn.stylegan2_io import prior_file, resolve_generator
    from facerestore.train.config import DataConfig
    from facerestore.train.data import load_images, split_files

    name = "mobilestylegan-ffhq-1024"
    G = resolve_generator(name).eval()
    G.set_resolution(256)
    flow = load_generator_flow(find_flow(prior_file(name)), generator_path=prior_file(name))
    starts = {"mean": "mean"}
    if "encoder" in args.init:
        starts["encoder"] = EncoderStart("encoder", name, G).encoder
    rates = {rate: {} if rate == "default" else {"lr": float(rate)} for rate in args.lr}
    rate_used = {rate: search_lr(G, config("default", **opts)) for rate, opts in rates.items()}
    variants = [(init, rate, row_suffix(init, rate)) for init in args.init for rate in args.lr]
    _, val = split_files(DataConfig(roots=[args.data], size=256, val_count=args.count))
    clean = load_images(val, 256).float() / 255
    rows = {}
    sheet: dict[str, torch.Tensor] = {}
    t_all = time.time()
    for factor in args.factors:
        lr = degrade.downsample_pulse_bicubic(clean, factor).clamp(0, 1)
        inp = F.interpolate(lr, size=(256, 256), mode="bicubic", align_corners=False).clamp(0, 1)
        row: dict = {"lr_side": lr.shape[-1], "input": scores(inp, clean)}
        sheet[f"x{factor} input"] = inp
        for init, rate, at in variants:
            r = RLSRestorer(generator=G, flow=flow, plus=not args.no_plus, steps=args.steps,
                            plus_steps=args.plus_steps, progress=False, init=starts[init], **rates[rate])
            t0 = time.time()
            top = max(args.fidelity)
            out, details = r.restore(lr, fidelity=top, return_details=True)
            raw = {"rls": details["rls"].image.float()}
            if not args.no_plus:
                raw["rls_plus"] = details["plus"].image.float()
            shown = "rls" if args.no_plus else "rls_plus"
            for fid in sorted(args.fidelity):
                at_f = row_suffix(init, rate, fid)
                for kind, image in raw.items():
                    # the restorer's own output at the top fidelity; the others from the same raw images
                    proj = out.float() if (kind == shown and fid == top) else \
                        degrade.project_pulse_bicubic(image, lr, factor, fid) if fid else image
                    row[kind + at_f] = scores(proj.clamp(0, 1), clean)
                    if fid:
                        row[f"{kind}{at_f}_minus_{kind}{at}"] = paired(row[kind + at_f], row[kind + at])
                        if kind == "rls":  # RLS+'s rows get theirs below, under the historical key
                            row[f"rls{at_f}_minus_input"] = paired(row[kind + at_f], row["input"])
                    if kind == shown:
                        sheet[f"x{factor} " + row_label(kind + at_f)] = proj.clamp(0, 1)
                if not args.no_plus:
                    row["rls_plus_minus_rls" + at_f] = paired(row["rls_plus" + at_f], row["rls" + at_f])
                    row["rls_plus_minus_input" + at_f] = paired(row["rls_plus" + at_f], row["input"])
            row["seconds_per_face" + at] = round((time.time() - t0) / clean.shape[0], 1)
        base = variants[0][2]
        for _, _, at in variants[1:]:  # every other row against the first
            for kind in ("rls", "rls_plus"):
                if kind + base in row:
                    row[f"{kind}{at}_minus_{kind}{base}"] = paired(row[kind + at], row[kind + base])
        rows[f"x{factor}"] = row
        print(f"x{factor}: " + ", ".join(f"{k} {v['psnr']:.2f} dB / FED {v['fed']:.3f}" for k, v in row.items()
                                          if isinstance(v, dict) and "per_face" in v)
              + "".join(f" | {k}: " + ", ".join(f"{m} {d:+.3f} [{lo:+.3f}, {hi:+.3f}]" for m, (d, lo, hi) in v.items())
                        for k, v in row.items() if "_minus_" in k), flush=True)
    result = {"benchmark": "rls_factors",
              "command": "python benchmarks/rls_factors.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "generator": f"{name} at 256 px", "preset": "default", "faces": [f.name for f in val],
              "init": args.init, "lr": args.lr, "lr_used": rate_used, "plus": not args.no_plus,
              "fidelity": args.fidelity,
              "steps": args.steps, "plus_steps": args.plus_steps, "rows": rows, "wall_s": round(time.time() - t_all, 1),
              "hardware": machine_description(args.threads)
                          + (", malloc tuned as by the CLI" if tuned else ""),
              "intervals": "*_minus_*: mean of the per-face difference and its paired 95% bootstrap "
                           "interval (2000 resamples, seed 0); keys with @encoder: started from the W encoder, with "
                           "@lr=X: RLS's peak learning rate X instead of the default preset's, with @fidelity=F: "
                           "the output projected onto the observation at strength F (none: F = 0)"}
    if args.grid:
        from sheets import labelled_sheet

        labelled_sheet({"truth": clean, **sheet}, args.grid, tile=160)
    out_name = "rls_factors" + (f"_{args.tag}" if args.tag else "")
    (ROOT / "benchmarks" / "results" / f"{out_name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (ROOT / "benchmarks" / "results" / f"{out_name}.md").write_text(to_markdown(result))
    print(json.dumps(result, indent=2))
    return 0


ROW_NAMES = {"input": "input (bicubic)", "rls": "RLS", "rls_plus": "RLS+"}


def row_suffix(init: str, rate: str, fidelity: float = 0.0) -> str:
    """Key suffix of a row: "" for the paper's start at the preset's rate without projection (the historical keys),
    else e.g. "@encoder", "@lr=0.5", "@fidelity=1" or "@encoder,lr=0.5,fidelity=1"."""
    tags = (([] if init == "mean" else [init]) + ([] if rate == "default" else [f"lr={rate}"])
            + ([f"fidelity={fidelity:g}"] if fidelity else []))
    return "@" + ",".join(tags) if tags else ""


def rate_words(result: dict) -> str:
    """The default preset's peak RLS learning rate as a stored result records it (runs before it was scaled: 0.5)."""
    used = result.get("lr_used")
    if used is None:
        return "0.5, the paper's"
    return f"{used['default']:.3f} = LR_SPREAD x W's spread" if "default" in used else "not run"


def row_label(key: str) -> str:
    """'rls_plus@encoder,lr=0.5,fidelity=1' -> 'RLS+, encoder start, lr 0.5, fidelity 1'."""
    kind, _, tags = key.partition("@")
    words = [ROW_NAMES[kind]] + [t.replace("=", " ") if "=" in t else f"{t} start" for t in tags.split(",") if t]
    return ", ".join(words)


def to_markdown(result: dict) -> str:
    """Means per factor and row, then every paired difference with its interval."""
    metrics = [m for m in ("psnr", "fed", "id_mobileface", "niqe")
               if any(m in row.get("input", {}) for row in result["rows"].values())]
    head = ["PSNR (dB)", "FED", "MobileFace", "NIQE"]
    names = [head[("psnr", "fed", "id_mobileface", "niqe").index(m)] for m in metrics]
    lines = ["# RLS / RLS+ on MobileStyleGAN: super-resolution of held-out faces", "",
             f"`{result['command']}`: {len(result['faces'])} held-out ffhq256 faces, {result['steps']} RLS "
             + (f"+ {result['plus_steps']} RLS+ steps" if result.get("plus", True) else "steps (no RLS+)")
             + f", preset {result['preset']}, {result['generator']}, "
             f"{result['wall_s'] / 60:.0f} min ({result['hardware']}). Means against the 256 px ground truth; "
             "PSNR higher is better, the rest lower. MobileFace (`id_mobileface`) is the independent identity judge "
             "(no loss of ours uses it). Starts: the paper's mean of W samples unless a row says \"encoder start\" "
             "(the W encoder shipped beside the prior; beyond the paper). RLS's peak learning rate: the default "
             f"preset's ({rate_words(result)}) unless a row names another. Rows with a fidelity F: the output "
             "projected onto the observation at strength F (`degrade.project_pulse_bicubic`, beyond the paper); "
             "the others are the searches' own outputs.", "",
             "| factor | row | " + " | ".join(names) + " | s/face |", "|---|---|" + "---|" * (len(names) + 1)]
    for factor, row in result["rows"].items():
        for key, value in row.items():
            if isinstance(value, dict) and "per_face" in value:
                at = ",".join(t for t in key.partition("@")[2].split(",") if t and not t.startswith("fidelity="))
                sec = row.get("seconds_per_face" + (f"@{at}" if at else ""), "") if key != "input" else ""
                lines.append(f"| {factor} | {row_label(key)} | " + " | ".join(f"{value[m]:.3f}" for m in metrics)
                             + f" | {sec} |")
    lines += ["", "Paired differences (mean over faces [95% bootstrap interval]):", "",
              "| factor | difference | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for factor, row in result["rows"].items():
        for key, diff in row.items():
            if "_minus_" in key:
                lines.append(f"| {factor} | {key} | " + " | ".join(
                    "{:+.3f} [{:+.3f}, {:+.3f}]".format(*diff[m]) if m in diff else "" for m in metrics) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
