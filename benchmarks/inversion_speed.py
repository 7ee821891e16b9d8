"""Seconds per face of robust-inversion's projection with MobileStyleGAN, by work resolution and precision.

Paper 002's inversion renders the 1024 px prior at every step. Whole-photo restoration (blind mode: no task, the
face is projected onto the prior) can compare the face at a smaller *work resolution* instead: MobileStyleGAN's
256 / 512 px output is the exact box average of its 1024 px image, so the loss and its levels shrink while the
result is still rendered at 1024 px (``work_resolution=``); and the generator can run in bf16 (``--half``: the
latents and the loss stay float32). This benchmark measures both, side by side with the paper's setting (1024,
fp32) in one run:

- speed: seconds per step, timed over every step of the quality runs after a warm-up, and the paper's schedule
  (3 x 150 steps) extrapolated per face; with ``--full`` one face is also restored with the whole schedule in
  the fastest setting and its wall time reported (measured, not extrapolated);
- quality at a short budget (``--steps`` per phase): each setting restores the same degraded held-out faces
  (ffhq256 ids ending in 0, not used by any training of ours; bicubic x4 down and up); PSNR at 256 px and the
  MobileFace identity distance (a network no loss of ours uses) to the clean face, and the paired difference to
  the paper's setting with a 95% bootstrap interval; plus the PSNR between each setting's output and the paper
  setting's (how far the shortcut moves the result).

With ``--rls-steps N``, RLS (paper 004, blind of its degradation: PULSE bicubic x8 of the prior's 1024 px, a 128 px
input) is timed and scored the same way in fp32 and with a bf16 generator (``--half``; the latents, the flow
prior and the losses stay float32). ``--skip-inversion`` keeps the robust-inversion part of an earlier run's
JSON and runs only RLS.

    facerestore models download mobilestylegan-ffhq-1024
    python benchmarks/inversion_speed.py --faces 3 --steps 30 --full --rls-steps 60 --threads 2

Writes benchmarks/results/inversion_speed.{json,md} and docs/inversion_speed_grid.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SETTINGS = (("1024 fp32 (paper)", 1024, False), ("512 bf16", 512, True), ("256 fp32", 256, False),
            ("256 bf16", 256, True))
PAPER_STEPS = 450


def load_faces(n: int) -> tuple[list[str], torch.Tensor]:
    """(names, (n, 3, 256, 256) clean faces): the first ``n`` ffhq256 validation faces (ids ending in 0)."""
    from facerestore.io import read_image

    files = sorted(p for p in (DATA / "ffhq256").glob("*.*") if p.stem[-1:] == "0")[:n]
    if not files:
        sys.exit(f"{DATA / 'ffhq256'} is missing")
    imgs = [torch.from_numpy(read_image(f).rgb.transpose(2, 0, 1)).float()[None] for f in files]
    return [f.name for f in files], torch.cat(imgs)


def degrade_x4(x: torch.Tensor) -> torch.Tensor:
    from facerestore import degrade

    small = degrade.resize(x, size=x.shape[-1] // 4, method="bicubic", antialias=True)
    return degrade.resize(small, size=x.shape[-1], method="bicubic", antialias=False).clamp(0, 1)


def make_restorer(G, work: int, half: bool, steps: tuple[int, int, int]):
    from facerestore.methods.inversion.restorer import RobustInversionRestorer

    r = RobustInversionRestorer(generator=G, loss="substitute", steps=steps, progress=False, work_resolution=work)
    return r.set_half(True) if half else r


def restore_each(r, lq: torch.Tensor, clean: torch.Tensor, score) -> tuple[list[torch.Tensor], list[float], list]:
    """Restore each face alone (batch 1, as the photo pipeline does): outputs, wall seconds, (PSNR, identity)."""
    outs, secs, scores = [], [], []
    for i in range(lq.shape[0]):
        t0 = time.perf_counter()
        outs.append(r.restore(lq[i:i + 1]))
        secs.append(time.perf_counter() - t0)
        scores.append(score(outs[-1], clean[i:i + 1]))
    return outs, secs, scores


def bootstrap(d: np.ndarray) -> tuple[float, float, float]:
    from facerestore.metrics.stats import paired_bootstrap

    return paired_bootstrap(d, 2000, 0)


def grid(rows: list[list[torch.Tensor]], path: Path) -> None:
    from facerestore.io import write_image

    tiles = [torch.cat([F.interpolate(t, size=(256, 256), mode="area") for t in row], dim=-1) for row in rows]
    img = torch.cat(tiles, dim=-2)[0].clamp(0, 1).permute(1, 2, 0).numpy()
    write_image(path, (img * 255).round().astype(np.uint8))


def to_markdown(res: dict) -> str:
    s = res["summary"]
    lines = [
        "# robust-inversion with MobileStyleGAN: work resolution and precision", "",
        f"`{res['command']}`", "",
        f"{res['machine']}; {res['faces']} held-out ffhq256 faces (ids ending in 0), bicubic x4 down and up, "
        f"projected (blind mode, substitute loss) with {res['steps']} NGD steps per phase; {res['seconds'] / 60:.1f} "
        "min in all. Seconds per step: the mean over every timed restoration after one warm-up; per face at the "
        f"paper's {PAPER_STEPS} steps: that times {PAPER_STEPS}. PSNR at 256 px and id_mobileface against the clean "
        "face; brackets: paired 95% bootstrap interval of (row - paper setting); 'vs paper': PSNR between the row's "
        "output and the paper setting's (256 px).", "",
        "| setting | s/step | min per face (450 steps) | PSNR (dB) | id_mobileface | vs paper (dB) |",
        "|---|---|---|---|---|---|"]
    for name, row in s.items():
        dp = "" if row.get("psnr_diff") is None else " [{:+.2f}, {:+.2f}]".format(*row["psnr_diff"][1:])
        di = "" if row.get("id_diff") is None else " [{:+.3f}, {:+.3f}]".format(*row["id_diff"][1:])
        vs = "" if row.get("psnr_vs_paper") is None else f"{row['psnr_vs_paper']:.1f}"
        lines.append(f"| {name} | {row['seconds_per_step']:.2f} | {row['seconds_per_step'] * PAPER_STEPS / 60:.1f} | "
                     f"{row['psnr']:.2f}{dp} | {row['id_mobileface']:.3f}{di} | {vs} |")
    lines += ["", f"Input (x4): PSNR {res['input']['psnr']:.2f} dB, id_mobileface {res['input']['id_mobileface']:.3f}."]
    if res.get("full"):
        f = res["full"]
        per_face = float(np.mean(f["seconds"]))
        lines += ["", f"The whole schedule ({PAPER_STEPS} steps) in the {f['setting']} setting, measured: "
                      f"{per_face / 60:.1f} min per face ({per_face / PAPER_STEPS:.2f} s/step); PSNR "
                      f"{np.mean(f['psnr']):.2f} dB, id_mobileface {np.mean(f['id_mobileface']):.3f}."]
    lines += ["", f"Grid ({res['grid']}), at 256 px: `docs/{res['grid'].split(':')[0]}`."]
    if res.get("rls"):
        rl = res["rls"]
        lines += ["", "## RLS with a bf16 generator", "", f"`{rl['command']}`", "",
                  f"The same {len(rl['names'])} faces as PULSE bicubic x8 of the prior's 1024 px (a 128 px input; "
                  f"PSNR {rl['input']['psnr']:.2f} dB, id_mobileface {rl['input']['id_mobileface']:.3f} after "
                  f"bicubic upsampling), {rl['steps']} RLS steps per face (the paper: 200), default preset and flow. "
                  "Brackets: paired 95% bootstrap interval of (bf16 - fp32).", "",
                  "| setting | s/step | min per face (200 steps) | PSNR (dB) | id_mobileface |",
                  "|---|---|---|---|---|"]
        for name, row in rl["summary"].items():
            dp = "" if row.get("psnr_diff") is None else " [{:+.2f}, {:+.2f}]".format(*row["psnr_diff"][1:])
            di = "" if row.get("id_diff") is None else " [{:+.3f}, {:+.3f}]".format(*row["id_diff"][1:])
            lines.append(f"| {name} | {row['seconds_per_step']:.2f} | {row['seconds_per_step'] * 200 / 60:.1f} | "
                         f"{row['psnr']:.2f}{dp} | {row['id_mobileface']:.3f}{di} |")
    return "\n".join(lines) + "\n"


def run_inversion(args, names: list[str], clean: torch.Tensor, score) -> dict:
    """robust-inversion's settings side by side (and the full schedule with ``--full``); the grid."""
    from facerestore.nn.stylegan2_io import resolve_generator

    t0 = time.time()
    lq = degrade_x4(clean)
    steps = (args.steps,) * 3
    outs: dict[str, list[torch.Tensor]] = {}
    rec: dict[str, dict] = {}
    for name, work, half in SETTINGS:
        G = resolve_generator("mobilestylegan-ffhq-1024")
        r = make_restorer(G, work, half, steps)
        make_restorer(G, work, half, (1, 1, 1)).restore(lq[:1])  # warm-up (allocations, first-call costs)
        outs[name], secs, scores = restore_each(r, lq, clean, score)
        rec[name] = {"work_resolution": work, "bf16": half, "seconds": secs,
                     "seconds_per_step": float(np.sum(secs) / (len(names) * sum(steps))),
                     "psnr": [s[0] for s in scores], "id_mobileface": [s[1] for s in scores]}
        print(name, f"{rec[name]['seconds_per_step']:.2f} s/step", f"PSNR {np.mean(rec[name]['psnr']):.2f}",
              f"id {np.mean(rec[name]['id_mobileface']):.3f}", flush=True)
    paper = SETTINGS[0][0]
    summary = {}
    for name, row in rec.items():
        s = {"seconds_per_step": row["seconds_per_step"], "psnr": float(np.mean(row["psnr"])),
             "id_mobileface": float(np.mean(row["id_mobileface"]))}
        if name != paper:
            s["psnr_diff"] = bootstrap(np.array(row["psnr"]) - np.array(rec[paper]["psnr"]))
            s["id_diff"] = bootstrap(np.array(row["id_mobileface"]) - np.array(rec[paper]["id_mobileface"]))
            s["psnr_vs_paper"] = float(np.mean([score(a, F.interpolate(b, size=(256, 256), mode="area"))[0]
                                                for a, b in zip(outs[name], outs[paper])]))
        summary[name] = s
    inp = [score(lq[i:i + 1], clean[i:i + 1]) for i in range(len(names))]
    res = {"benchmark": "inversion_speed", "command": command(), "machine": machine(),
           "faces": len(names), "names": names, "steps": list(steps),
           "input": {"psnr": float(np.mean([v[0] for v in inp])), "id_mobileface": float(np.mean([v[1] for v in inp]))},
           "summary": summary, "records": rec}
    fastest = min(SETTINGS, key=lambda st: rec[st[0]]["seconds_per_step"])
    full_name = f"{fastest[0]}, {PAPER_STEPS} steps"
    if args.full:
        G = resolve_generator("mobilestylegan-ffhq-1024")
        r = make_restorer(G, fastest[1], fastest[2], (PAPER_STEPS // 3,) * 3)
        outs[full_name], secs, scores = restore_each(r, lq, clean, score)
        res["full"] = {"setting": fastest[0], "seconds": secs, "psnr": [s[0] for s in scores],
                       "id_mobileface": [s[1] for s in scores]}
        print(f"full schedule, {fastest[0]}: {np.mean(secs) / 60:.1f} min per face", flush=True)
    res["seconds"] = time.time() - t0
    columns = [n for n, _, _ in SETTINGS] + ([full_name] if args.full else [])
    grid([[lq[i:i + 1], *[outs[n][i] for n in columns], clean[i:i + 1]] for i in range(len(names))],
         Path(args.grid))
    res["grid"] = f"{Path(args.grid).name}: input | " + " | ".join(columns) + " | clean"
    return res


def run_rls(args, names: list[str], clean: torch.Tensor, score) -> dict:
    """RLS in fp32 and with a bf16 generator on the faces as 128 px PULSE-bicubic x8 inputs of the 1024 px prior."""
    from facerestore import degrade
    from facerestore.methods.registry import load_restorer

    t0 = time.time()
    big = F.interpolate(clean, size=(1024, 1024), mode="bicubic", align_corners=False).clamp(0, 1)
    lq = degrade.downsample_pulse_bicubic(big, 8).clamp(0, 1)
    rec, summary = {}, {}
    for name, half in (("rls fp32", False), ("rls bf16", True)):
        load_restorer("rls", steps=1, progress=False, half=half).restore(lq[:1])  # warm-up
        r = load_restorer("rls", steps=args.rls_steps, progress=False, half=half)
        _, secs, scores = restore_each(r, lq, clean, score)
        rec[name] = {"bf16": half, "seconds": secs, "psnr": [v[0] for v in scores],
                     "id_mobileface": [v[1] for v in scores],
                     "seconds_per_step": float(np.sum(secs) / (len(names) * args.rls_steps))}
        print(name, f"{rec[name]['seconds_per_step']:.2f} s/step", f"PSNR {np.mean(rec[name]['psnr']):.2f}",
              f"id {np.mean(rec[name]['id_mobileface']):.3f}", flush=True)
    for name, row in rec.items():
        summary[name] = {"seconds_per_step": row["seconds_per_step"], "psnr": float(np.mean(row["psnr"])),
                         "id_mobileface": float(np.mean(row["id_mobileface"]))}
        if name != "rls fp32":
            summary[name]["psnr_diff"] = bootstrap(np.array(row["psnr"]) - np.array(rec["rls fp32"]["psnr"]))
            summary[name]["id_diff"] = bootstrap(np.array(row["id_mobileface"]) -
                                                 np.array(rec["rls fp32"]["id_mobileface"]))
    up = F.interpolate(lq, size=clean.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
    inp = np.array([score(up[i:i + 1], clean[i:i + 1]) for i in range(len(names))])
    return {"command": command(), "machine": machine(), "names": names, "steps": args.rls_steps,
            "input": {"psnr": float(inp[:, 0].mean()), "id_mobileface": float(inp[:, 1].mean())},
            "seconds": time.time() - t0, "summary": summary, "records": rec}


def command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


# Timed as the CLI runs: OpenMP's default (spinning) wait policy (passive waiting, the other benchmarks' choice for
# a shared machine, costs this loop of many short parallel regions 20%: 0.34 -> 0.41 s a step at 256 px bf16).
ALLOCATOR = "glibc malloc as it is"  # set in main(): the CLI's tuning (nn.devices.tune_cpu_allocator) or not


def machine() -> str:
    from facerestore.nn.devices import machine_description

    return f"{machine_description()}, OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', 'unset')}, {ALLOCATOR}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20, help="NGD steps per phase of the quality runs")
    ap.add_argument("--full", action="store_true", help="also run the paper's 450 steps in the fastest setting")
    ap.add_argument("--rls-steps", type=int, default=0, help="RLS steps per face (0: no RLS part)")
    ap.add_argument("--skip-inversion", action="store_true",
                    help="keep the robust-inversion part of the JSON at --out and run only RLS")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--system-allocator", action="store_true",
                    help="leave glibc's malloc as it is (the CLI keeps freed memory for reuse; this measures without)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "inversion_speed"))
    ap.add_argument("--grid", default=str(ROOT / "docs" / "inversion_speed_grid.png"))
    args = ap.parse_args()
    from facerestore import metrics, zoo

    if not zoo.is_available("mobilestylegan-ffhq-1024"):
        sys.exit("mobilestylegan-ffhq-1024 is not cached: run `facerestore models download mobilestylegan-ffhq-1024`")
    torch.set_num_threads(max(1, args.threads))
    if not args.system_allocator:
        from facerestore.nn.devices import tune_cpu_allocator

        global ALLOCATOR
        ALLOCATOR = "malloc tuned as by the CLI (freed memory kept for reuse)" if tune_cpu_allocator() else ALLOCATOR
    names, clean = load_faces(args.faces)
    psnr, idm = metrics.create("psnr"), metrics.create("id_mobileface", aligned=True)

    def score(pred: torch.Tensor, gt: torch.Tensor) -> tuple[float, float]:
        p = F.interpolate(pred, size=gt.shape[-2:], mode="area") if pred.shape[-1] != gt.shape[-1] else pred
        with torch.no_grad():
            return float(psnr(p, gt).reshape(-1)[0]), float(idm(p, gt).reshape(-1)[0])

    out = Path(args.out)
    if args.skip_inversion:
        res = json.loads(out.with_suffix(".json").read_text())
        if res["names"] != names:
            sys.exit(f"--skip-inversion: {out.with_suffix('.json')} measured other faces ({res['names']})")
    else:
        res = run_inversion(args, names, clean, score)
    if args.rls_steps:
        res["rls"] = run_rls(args, names, clean, score)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    out.with_suffix(".md").write_text(to_markdown(res))
    print(to_markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
