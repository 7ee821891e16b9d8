"""Restoration speed: network time per 512x512 face and whole-photo time of ``facerestore restore``.

Measured in one run on this machine's CPU with 2 torch threads:

- ours: the default "ispl" restorer (our compact weights; the pipeline feeds it 512 px aligned crops, which it
  resizes to its network size, 256 px for the default weights, and back) as ``restorer.restore`` on a
  (1, 3, 512, 512) crop, and the bare network at its native size;
- the paper-size ISPL generator (config "ispl-512", 76M parameters, random init: speed does not depend
  on the weights) on a (1, 3, 512, 512) crop;
- the whole photo examples/astronaut.png through ``restore_photo(..., "ispl", upscale=2)``: read,
  detection (dlib HOG + 68 landmarks), alignment, network, identity embeddings, paste-back, with the
  median of every stage.

- ``prior-sft`` (needs the cached MobileStyleGAN decoder) per 512 face in fp32 and bf16, a refinement step
  (``--steps``), and the astronaut photo;
- a stand-in with GFPGAN v1.4's layer shapes (``GFPGANShape``: our code, random init; GFPGAN is not used),
  the reference the issue asks to time in the same run.

The issue's own numbers for GFPGAN v1.4 and CodeFormer (network only, per 512 face, 2 threads on this machine)
are quoted in the JSON as well, not re-measured (CodeFormer's architecture is not timed here). On a CUDA
machine the script also measures faces/s at batch 1 and 16 (float32 and half precision).

    python benchmarks/restore_speed.py [--repeat 5] [--out benchmarks/results/restore_speed.json]

Timings are the median of --repeat runs after one warm-up run; the machine's load average is recorded
(the CPU is shared, so absolute numbers vary with it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
THREADS = 2
TARGET_S_PER_FACE = 1.0
# Quoted from the issue ("ISPL restorer, training framework, our default weights, and `facerestore restore`
# end to end"): network only, per 512x512 face, this machine's CPU with 2 threads.
REFERENCES = {
    "gfpgan-v1.4": {"s_per_face": 6.9, "source": "quoted from the issue; not re-measured in this run",
                    "what": "GFPGAN v1.4 architecture, network only, 512x512 face, CPU 2 threads"},
    "codeformer": {"s_per_face": 17.8, "source": "quoted from the issue; not re-measured in this run",
                   "what": "CodeFormer, network only, 512x512 face, CPU 2 threads"},
}


CPU_TIMES: dict[int, list[float]] = {}  # id(times list) -> process CPU seconds of the same runs


def median_time(fn, repeat: int, warmup: int = 1, sync=None) -> tuple[float, list[float]]:
    """Median wall seconds of ``repeat`` calls after ``warmup`` calls, and the list of wall times.

    The process CPU seconds of the same calls are kept in CPU_TIMES: on a shared, overloaded machine
    CPU time / threads approximates the wall time the call would take on an idle one.
    """
    for _ in range(warmup):
        fn()
    times, cpu = [], []
    for _ in range(repeat):
        if sync:
            sync()
        t, c = time.perf_counter(), time.process_time()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    CPU_TIMES[id(times)] = cpu
    return statistics.median(times), times


def cpu_median(times: list[float]) -> float:
    return statistics.median(CPU_TIMES[id(times)])


def summary(times: list[float]) -> dict:
    """Wall median / best, CPU median, and the idle-machine estimate CPU / threads (seconds)."""
    cpu = cpu_median(times)
    return {"s_median": statistics.median(times), "s_best": min(times), "cpu_s_median": cpu,
            "s_idle_estimate": cpu / THREADS, "runs_s": times}


class GFPGANShape(torch.nn.Module):
    """A timing stand-in with GFPGAN v1.4's layer shapes (``GFPGANv1Clean``: out_size 512, channel_multiplier 2,
    narrow 1, sft_half, different_w), written here from the published configuration, random init; NOT GFPGAN
    (none of its code or weights are used): the speed of a network does not depend on its weights.

    Encoder: 1x1 conv, residual blocks with bilinear down-sampling 512 -> 4 px at half of StyleGAN2 config-f's
    channels (32 .. 256), a 3x3 conv and a linear layer to 16 W+ latents; a decoder-side U-Net of residual
    up-blocks back to 512 px with a 1x1 toRGB per level and two 3x3 convs each for the SFT scale and shift;
    decoder: our StyleGAN2 synthesis network at 512 px with config-f channels (512 .. 64), its second conv of
    every block modulated on half its channels (channel-split SFT).
    """

    def __init__(self) -> None:
        from torch import nn

        from facerestore.nn.stylegan2 import SynthesisNetwork

        super().__init__()
        self.decoder = SynthesisNetwork(w_dim=512, img_resolution=512, channel_base=32768, channel_max=512)
        unet = {r: c // 2 for r, c in self.decoder.channels.items()}  # GFPGAN's unet_narrow = 0.5
        self.res = [2**i for i in range(9, 1, -1)]  # 512 .. 4
        act = nn.LeakyReLU(0.2)

        def block(cin: int, cout: int) -> nn.ModuleDict:
            return nn.ModuleDict({"c1": nn.Conv2d(cin, cin, 3, padding=1), "c2": nn.Conv2d(cin, cout, 3, padding=1),
                                  "skip": nn.Conv2d(cin, cout, 1, bias=False)})

        self.act = act
        self.first = nn.Conv2d(3, unet[512], 1)
        self.down = nn.ModuleList(block(unet[r], unet[r // 2]) for r in self.res[:-1])
        self.final_conv = nn.Conv2d(unet[4], unet[4], 3, padding=1)
        self.final_linear = nn.Linear(unet[4] * 16, self.decoder.num_ws * 512)
        self.up = nn.ModuleList(block(unet[r // 2], unet[r]) for r in self.res[-2::-1])  # 8 .. 512
        self.to_rgb = nn.ModuleList(nn.Conv2d(unet[r], 3, 1) for r in self.res[-2::-1])
        self.scale = nn.ModuleList(nn.Sequential(nn.Conv2d(unet[r], unet[r], 3, padding=1), act,
                                                 nn.Conv2d(unet[r], unet[r], 3, padding=1)) for r in self.res[-2::-1])
        self.shift = nn.ModuleList(nn.Sequential(nn.Conv2d(unet[r], unet[r], 3, padding=1), act,
                                                 nn.Conv2d(unet[r], unet[r], 3, padding=1)) for r in self.res[-2::-1])
        self._sft: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for r in self.res[-2::-1]:
            self.decoder.get_submodule(f"b{r}.conv1").register_forward_hook(self._hook(r))

    def _hook(self, r: int):
        def apply(_module, _inputs, out):
            scale, shift = self._sft[r]
            same, steer = out.split(out.shape[1] // 2, 1)
            return torch.cat([same, steer * scale + shift], 1)
        return apply

    def _res(self, blk, x: torch.Tensor, factor: float) -> torch.Tensor:
        import torch.nn.functional as F

        if factor > 1:
            x = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
        y = self.act(blk["c1"](x))
        if factor < 1:
            y = F.interpolate(y, scale_factor=factor, mode="bilinear", align_corners=False)
            x = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
        return (self.act(blk["c2"](y)) + blk["skip"](x)) / 2**0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.act(self.first(x))
        skips = []
        for blk in self.down:
            feat = self._res(blk, feat, 0.5)
            skips.insert(0, feat)  # 256 .. 4 px, deepest first
        feat = self.act(self.final_conv(feat))
        ws = self.final_linear(feat.flatten(1)).view(x.shape[0], self.decoder.num_ws, 512)
        for i, (blk, r) in enumerate(zip(self.up, self.res[-2::-1])):
            feat = self._res(blk, feat + skips[i], 2.0)
            self.to_rgb[i](feat)  # the pyramid output GFPGAN computes at every level (used by its training loss)
            self._sft[r] = (self.scale[i](feat), self.shift[i](feat))
        return self.decoder(ws)


def default_restorer(device: str = "cpu"):
    """(restorer, note): the registered "ispl" with its shipped weights (they ship inside the package)."""
    from facerestore.methods import load_restorer

    return load_restorer("ispl", device=device), "registered 'ispl' restorer with its shipped weights"


def bench_photo(method, repeat: int) -> dict:
    """examples/astronaut.png through ``restore_photo(..., method, upscale=2)`` (``method``: a name or a loaded
    restorer): median wall and CPU seconds of ``repeat`` runs after one warm-up (which loads the dlib models), and
    the median of every pipeline stage."""
    from facerestore.pipeline import restore_photo

    photo = REPO / "examples" / "astronaut.png"
    stages: dict[str, list[float]] = {}
    totals: list[float] = []
    cpu_totals: list[float] = []
    n_faces = 0
    for i in range(repeat + 1):
        t, c = time.perf_counter(), time.process_time()
        out = restore_photo(photo, method, upscale=2.0)
        wall, cpu_s = time.perf_counter() - t, time.process_time() - c
        if i == 0:
            continue
        totals.append(wall)
        cpu_totals.append(cpu_s)
        n_faces = len(out.faces)
        for k, v in out.timings.items():
            stages.setdefault(k, []).append(v)
    return {
        "image": "examples/astronaut.png (512x512)", "upscale": 2.0, "faces": n_faces,
        "s_total": statistics.median(totals),
        "cpu_s_total": statistics.median(cpu_totals),
        "s_per_stage": {k: statistics.median(v) for k, v in stages.items()},
        "method": method if isinstance(method, str) else method.spec.name,
    }


def bench_cpu(repeat: int, paper_runs: int) -> dict:
    from facerestore.methods.ispl import build_generator, count_parameters
    from facerestore.pipeline import get_restorer

    g = torch.Generator().manual_seed(0)
    face = torch.rand(1, 3, 512, 512, generator=g)
    res: dict = {}

    r, note = default_restorer("cpu")
    size = int(r.spec.size)
    with torch.no_grad():
        _, runs = median_time(lambda: r.restore(face), repeat)
        native = torch.rand(1, 3, size, size, generator=g)
        net = getattr(r, "net", None)
        native_face = summary(median_time(lambda: net(native), repeat)[1]) if net is not None else None
    per_face = summary(runs)
    res["ours_default"] = {
        "restorer": note,
        "network_input_size": size,
        "parameters": sum(p.numel() for p in r.parameters()),
        "per_512_face": per_face,
        "native_size_face": native_face,
        "meets_target_wall_median": per_face["s_median"] < TARGET_S_PER_FACE,
        "meets_target_idle_estimate": per_face["s_idle_estimate"] < TARGET_S_PER_FACE,
    }

    big = build_generator("ispl-512").eval()
    with torch.no_grad():
        _, runs_big = median_time(lambda: big(face), paper_runs)
    res["ispl_512_paper_size"] = {
        "config": "ispl-512", "weights": "random init (speed does not depend on the weights)",
        "parameters": count_parameters(big), "per_512_face": summary(runs_big),
    }

    # whole photo: the pipeline as `facerestore restore` runs it (default restorer, cached)
    get_restorer("ispl")
    res["photo_astronaut"] = bench_photo("ispl", repeat)
    return res


def bench_references(runs: int) -> dict:
    """The GFPGAN v1.4-shaped stand-in (:class:`GFPGANShape`) on a (1, 3, 512, 512) face, in this run."""
    g = torch.Generator().manual_seed(1)
    face = torch.rand(1, 3, 512, 512, generator=g) * 2 - 1
    net = GFPGANShape().eval()
    with torch.no_grad():
        _, runs_s = median_time(lambda: net(face), runs)
    return {"gfpgan_v1.4_shape": {
        "what": "GFPGANv1Clean's layer shapes (out_size 512, channel_multiplier 2, sft_half), random init, our code "
                "(GFPGANShape in this script); not GFPGAN itself: speed does not depend on the weights",
        "parameters": sum(p.numel() for p in net.parameters()), "per_512_face": summary(runs_s)}}


def bench_prior_sft(repeat: int, refine_steps: int = 5) -> dict:
    """prior-sft (the generative-prior restorer) per 512 face in fp32 and bf16, a refinement step, and the
    astronaut photo; skipped with a reason when the MobileStyleGAN decoder is not in the cache."""
    from facerestore.errors import FaceRestoreError
    from facerestore.methods import load_restorer

    try:
        fp32 = load_restorer("prior-sft")
    except FaceRestoreError as e:
        return {"skipped": str(e)}
    bf16 = load_restorer("prior-sft", half=True)
    face = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(2))
    out: dict = {"note": "restorer.restore on a (1, 3, 512, 512) face: encoder at 256 px + MobileStyleGAN decoder "
                         "to 512 px"}
    with torch.no_grad():
        out["fp32_per_512_face"] = summary(median_time(lambda: fp32.restore(face), repeat)[1])
        out["bf16_per_512_face"] = summary(median_time(lambda: bf16.restore(face), repeat)[1])
    refine = load_restorer("prior-sft", half=True, refine_steps=refine_steps, progress=False)
    _, runs_r = median_time(lambda: refine.restore(face), max(2, repeat // 2))
    total = statistics.median(runs_r)
    out["bf16_refine"] = {"steps": refine_steps, "s_total_median": total,
                          "s_per_step": (total - out["bf16_per_512_face"]["s_median"]) / refine_steps}
    out["photo_astronaut_bf16"] = bench_photo(bf16, 2)
    return out


def bench_gpu(repeat: int, extra_weights: dict[str, str] | None = None) -> dict | None:
    """Faces/s on the first CUDA device at batch 1 and 16, float32 and float16 autocast: the default restorer, the
    paper-size ISPL-512, the GFPGAN v1.4-shaped stand-in, prior-sft when its decoder is cached, and "ispl" with
    each of ``extra_weights`` (name -> weights file, e.g. a run's final.safetensors)."""
    if not torch.cuda.is_available():
        return None
    from facerestore.errors import FaceRestoreError
    from facerestore.methods import load_restorer
    from facerestore.methods.ispl import build_generator

    out: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                 "statistic": f"median of {repeat} runs after 2 warm-ups, CUDA-synchronised; input (B, 3, 512, 512)"}
    r, note = default_restorer("cuda")
    nets = {"ours_default": (r, note), "ispl_512_paper_size": (build_generator("ispl-512").eval().cuda(), ""),
            "gfpgan_v1.4_shape": (GFPGANShape().eval().cuda(), "GFPGAN v1.4's layer shapes, random init, our code")}
    for name, path in (extra_weights or {}).items():
        nets[f"ispl_{name}"] = (load_restorer("ispl", weights=path, device="cuda"), f"'ispl' with {Path(path).name}")
    try:
        nets["prior_sft"] = (load_restorer("prior-sft", device="cuda"), "registered 'prior-sft' (MobileStyleGAN)")
    except FaceRestoreError as e:
        out["prior_sft"] = {"skipped": str(e)}
    for name, (model, note) in nets.items():
        row: dict = {"note": note} if note else {}
        for dtype in (torch.float32, torch.float16):
            for batch in (1, 16):
                x = torch.rand(batch, 3, 512, 512, device="cuda")
                fn = (lambda m=model, x=x: m.restore(x)) if hasattr(model, "restore") else (lambda m=model, x=x: m(x))
                with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=dtype == torch.float16):
                    t, _ = median_time(fn, repeat, warmup=2, sync=torch.cuda.synchronize)
                row[f"{'fp16' if dtype == torch.float16 else 'fp32'}_batch{batch}_faces_per_s"] = batch / t
        out[name] = row
        print(f"{name}: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items() if k != "note"), flush=True)
    return out


DEFAULT_OUT = REPO / "benchmarks" / "results" / "restore_speed.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--paper-runs", type=int, default=2, help="runs of the (slow) ispl-512 network")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--gpu-only", action="store_true",
                    help="only the CUDA rows, written to --out (default benchmarks/results/restore_speed_gpu.json)")
    ap.add_argument("--weights", action="append", default=[], metavar="NAME=FILE",
                    help="with --gpu-only: also time 'ispl' with these weights (repeatable)")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.gpu_only:
        extra = dict(w.split("=", 1) for w in args.weights)
        gpu = bench_gpu(args.repeat, extra)
        if gpu is None:
            raise SystemExit("restore_speed --gpu-only: no CUDA device")
        out = Path(args.out) if Path(args.out) != DEFAULT_OUT else DEFAULT_OUT.with_name("restore_speed_gpu.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"benchmark": "restore_speed (GPU rows)", "command": "python benchmarks/"
                                   "restore_speed.py --gpu-only " + " ".join(f"--weights {w}" for w in args.weights),
                                   "gpu": gpu}, indent=2) + "\n")
        return
    torch.set_num_threads(THREADS)

    load_before = os.getloadavg()
    t0 = time.time()
    cpu = bench_cpu(args.repeat, args.paper_runs)
    cpu["prior_sft"] = bench_prior_sft(args.repeat)
    cpu.update(bench_references(args.paper_runs + 1))
    gpu = bench_gpu(args.repeat)
    from facerestore.nn.devices import cpu_description

    result = {
        "benchmark": "restore_speed",
        "command": f"python benchmarks/restore_speed.py --repeat {args.repeat} --paper-runs {args.paper_runs}",
        "machine": {"cpu": cpu_description(), "cpu_count": os.cpu_count(),
                    "torch_threads": THREADS, "torch": torch.__version__,
                    "load_average_before_after": [list(load_before), list(os.getloadavg())]},
        "statistic": f"{args.repeat} runs after 1 warm-up (ispl-512: {args.paper_runs}); s_median / s_best = wall "
        "clock, cpu_s_median = process CPU seconds summed over threads, s_idle_estimate = cpu_s_median / threads "
        "(what the wall time would be on an idle machine: the CPU is shared with other jobs)",
        "target": f"default restorer under {TARGET_S_PER_FACE} s per 512x512 face on this CPU",
        "cpu": cpu,
        "reference_not_remeasured": REFERENCES,
        "gpu": gpu if gpu is not None else "no CUDA device in this run",
        "wall_s": time.time() - t0,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    d, big, ph = cpu["ours_default"], cpu["ispl_512_paper_size"], cpu["photo_astronaut"]
    df, bf = d["per_512_face"], big["per_512_face"]
    print(f"restore_speed (CPU, {THREADS} threads; wall median / idle estimate = CPU s / {THREADS}): ours default "
          f"{df['s_median']:.2f} / {df['s_idle_estimate']:.2f} s per 512 face (target < {TARGET_S_PER_FACE} s: "
          f"{'met' if d['meets_target_idle_estimate'] else 'MISSED'} idle, "
          f"{'met' if d['meets_target_wall_median'] else 'missed'} under load); paper-size ISPL-512 "
          f"{bf['s_median']:.1f} / {bf['s_idle_estimate']:.1f} s; quoted refs (not re-measured) GFPGAN v1.4 6.9 s, "
          f"CodeFormer 17.8 s; astronaut photo x2 {ph['s_total']:.2f} / {ph['cpu_s_total'] / THREADS:.2f} s "
          f"({ph['faces']} faces); load avg {os.getloadavg()[0]:.1f}")
    gf = cpu["gfpgan_v1.4_shape"]["per_512_face"]
    print(f"GFPGAN v1.4-shaped stand-in, measured in this run: {gf['s_median']:.2f} / {gf['s_idle_estimate']:.2f} s")
    ps = cpu["prior_sft"]
    if "skipped" in ps:
        print(f"prior-sft skipped: {ps['skipped']}")
    else:
        print(f"prior-sft per 512 face: fp32 {ps['fp32_per_512_face']['s_median']:.2f} s, bf16 "
              f"{ps['bf16_per_512_face']['s_median']:.2f} s, refinement "
              f"{ps['bf16_refine']['s_per_step']:.2f} s a step; "
              f"astronaut photo x2 {ps['photo_astronaut_bf16']['s_total']:.2f} s")


if __name__ == "__main__":
    main()
