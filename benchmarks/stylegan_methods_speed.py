"""Seconds per image of the StyleGAN2-prior restorers (robust-inversion, rls, rls-plus).

    python benchmarks/stylegan_methods_speed.py                 # CPU: built-in prior, full step budgets
    python benchmarks/stylegan_methods_speed.py --device cuda   # GPU: also 1024 px config-f, full budgets

Step budgets: robust-inversion 3 x 150 NGD steps (paper 002: 450); RLS 200 Adam steps and RLS+ 200 + 50
(paper 004's "paper" preset). One 64 px face (the built-in prior ``stylegan2-face-64``, its flow) is
restored end to end, batch 1, and timed after one warm-up run of a few steps.

At 1024 px a randomly initialised FFHQ config-f generator (30.0M synthesis parameters, the layout of the
official weights; speed does not depend on the weight values) and an untrained MAF(512, 5 blocks, hidden 1024)
are used. A full 1024 budget takes hours on a 2-core CPU, so there the CPU row times ``--probe-steps`` steps
of each phase and reports ``seconds_per_step * budget`` marked ``"extrapolated": true``; on a GPU the full
budget is run. Writes ``benchmarks/results/stylegan_methods_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _restorers(G, flow, steps: dict[str, tuple], n_mean: int):
    from facerestore.methods.inversion.restorer import RobustInversionRestorer
    from facerestore.methods.rls.restorer import RLSRestorer

    return {
        "robust-inversion": RobustInversionRestorer(generator=G, task="robust-upsample", level="M", loss="auto",
                                                    steps=steps["robust-inversion"]),
        "rls": RLSRestorer(generator=G, flow=flow, steps=steps["rls"][0], n_mean=n_mean),
        "rls-plus": RLSRestorer(generator=G, flow=flow, plus=True, steps=steps["rls-plus"][0],
                                plus_steps=steps["rls-plus"][1], n_mean=n_mean),
    }


def _inputs(G, device: torch.device) -> dict[str, torch.Tensor]:
    from facerestore import degrade

    torch.manual_seed(0)
    r = G.img_resolution
    clean = torch.rand(1, 3, r, r, device=device)
    y_up, _ = degrade.apply(clean, "robust-upsample", level="M", generator=0)  # 8x downsampling
    y_rls, _ = degrade.apply(clean, "rls-x8", generator=0)
    return {"robust-inversion": y_up, "rls": y_rls, "rls-plus": y_rls}


BUDGETS = {"robust-inversion": (150, 150, 150), "rls": (200, 0), "rls-plus": (200, 50)}


def bench(G, flow, device: torch.device, probe_steps: int | None) -> dict[str, dict]:
    """Seconds per image for each method (full budget, or extrapolated from ``probe_steps`` per phase)."""
    G = G.to(device).eval().requires_grad_(False)
    flow = flow.to(device).eval()
    ys = _inputs(G, device)
    out = {}
    warm = _restorers(G, flow, {"robust-inversion": (2, 2, 2), "rls": (2, 0), "rls-plus": (2, 2)}, 1000)
    for name, r in warm.items():
        r.restore(ys[name])
    if probe_steps is None:
        for name, r in _restorers(G, flow, BUDGETS, 10000).items():
            if hasattr(r, "w_init"):
                r.w_init()  # the start latent (mean of W samples) is computed once per restorer, not per image
            secs = _time(lambda r=r, y=ys[name]: r.restore(y), device)
            out[name] = {"seconds_per_image": secs, "steps": sum(BUDGETS[name]), "extrapolated": False}
        return out
    k = probe_steps
    probe = {"robust-inversion": (k, k, k), "rls": (k, 0), "rls-plus": (k, k)}
    for name, r in _restorers(G, flow, probe, 10000).items():
        if hasattr(r, "w_init"):
            r.w_init()
        secs = _time(lambda r=r, y=ys[name]: r.restore(y), device)
        # phases cost differently: scale each probed phase to its budget
        budget, probed = BUDGETS[name], probe[name]
        per_step = secs / sum(probed)
        out[name] = {"seconds_per_image": per_step * sum(budget), "seconds_per_step_probe": per_step,
                     "steps": sum(budget), "extrapolated": True, "probe_steps": list(probed)}
    return out


def main(argv: list[str] | None = None) -> int:
    from facerestore.nn.devices import machine_description

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--probe-steps", type=int, default=3, help="steps per phase timed at 1024 on CPU")
    p.add_argument("--skip-1024", action="store_true")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "stylegan_methods_speed.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    from facerestore.methods.rls.flow_prior import find_flow, load_generator_flow
    from facerestore.nn.flow import MAF
    from facerestore.nn.stylegan2 import Generator
    from facerestore.nn.stylegan2_io import builtin_prior_path, resolve_generator

    result = {"benchmark": "stylegan_methods_speed", "command": " ".join(["python benchmarks/stylegan_methods_speed.py",
                                                                          *(argv or sys.argv[1:])]),
              "device": str(device), "threads": args.threads,
              "hardware": machine_description(),
              "budgets": {k: list(v) for k, v in BUDGETS.items()}}
    G = resolve_generator(None)
    flow = load_generator_flow(find_flow(builtin_prior_path()))
    result["builtin_64"] = bench(G, flow, device, None)
    print("64 px:", json.dumps(result["builtin_64"]), flush=True)
    if not args.skip_1024:
        torch.manual_seed(0)
        G1024 = Generator()  # FFHQ config-f layout, random weights
        G1024.estimate_w_avg(1000, torch.Generator().manual_seed(0))
        maf = MAF(dim=512, generator=torch.Generator().manual_seed(0))
        maf.eval()
        probe = None if device.type == "cuda" else args.probe_steps
        result["config_f_1024_random"] = bench(G1024, maf, device, probe)
        print("1024 px:", json.dumps(result["config_f_1024_random"]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
