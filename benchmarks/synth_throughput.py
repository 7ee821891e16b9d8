"""Face-generator throughput: `facerestore synth`'s PyTorch MobileStyleGAN vs the OpenVINO runtime on the same IR.

    python benchmarks/synth_throughput.py [--n 8 --batch 1 4 --threads 2]

Times mapping + synthesis at 1024 px (our port: fp32, and bf16 where the CPU has it) and the OpenVINO
runtime (f32 inference precision forced; the `openvino` package of the dev extra) on the same z, plus the
whole `write_synth` path (PNG writing included) at 512 px. Writes results/synth_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="faces per measurement")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from facerestore import zoo
    from facerestore.nn.stylegan2_io import resolve_generator
    from facerestore.train.synth import write_synth

    folder = zoo.weights_path("mobilestylegan-ffhq-1024")
    G = resolve_generator("mobilestylegan-ffhq-1024").eval()
    z = torch.randn(args.n, 512, generator=torch.Generator().manual_seed(0))
    res: dict = {"ours": {}, "openvino": None}
    with torch.no_grad():
        for b in args.batch:
            for dtype in (torch.float32, torch.bfloat16):
                Gd = G.to(dtype)
                Gd(z[:b].to(dtype))  # warm-up
                t = time.perf_counter()
                for i in range(0, args.n, b):
                    Gd(z[i : i + b].to(dtype))
                res["ours"][f"{str(dtype).split('.')[-1]}_batch{b}"] = round(args.n / (time.perf_counter() - t), 3)
    G = G.float()
    try:
        import openvino as ov

        core = ov.Core()
        cfg = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": args.threads}
        mapping = core.compile_model(str(folder / "MappingNetwork.xml"), "CPU", cfg)
        synthesis = core.compile_model(str(folder / "SynthesisNetwork.xml"), "CPU", cfg)
        zs = z.numpy()
        synthesis(mapping(zs[:1])[0])  # warm-up
        t = time.perf_counter()
        for i in range(args.n):
            synthesis(mapping(zs[i : i + 1])[0])
        res["openvino"] = {"f32_batch1": round(args.n / (time.perf_counter() - t), 3)}
    except ImportError as exc:
        res["openvino_missing"] = str(exc)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        write_synth(Path(tmp) / "s", args.n, size=512, seed=0, weights="mobilestylegan-ffhq-1024", batch=4)
        res["write_synth_512_faces_per_s"] = round(args.n / (time.perf_counter() - t), 3)
    out = {"benchmark": "synth_throughput", "unit": "faces per second (1024 px unless said)",
           "command": "python benchmarks/synth_throughput.py " + " ".join(sys.argv[1:]),
           "n": args.n, "threads": args.threads, **res,
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                       "load_at_end": list(np.round(os.getloadavg(), 2))}}
    (ROOT / "benchmarks" / "results" / "synth_throughput.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
