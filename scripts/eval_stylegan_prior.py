"""Evaluate (and optionally export) our StyleGAN2 face prior: sample grid and identity-embedding Frechet distance.

    python scripts/eval_stylegan_prior.py --export runs/stylegan2-face-64/final.safetensors

Sample quality is the Frechet distance between dlib 128-d face embeddings (the toolkit's offline identity
network) of generated and of real faces. Every image (real or generated) goes through the same path: the
64 px image is upsampled bicubically to 256 px and embedded with dlib's 5-point predictor and ResNet inside
the fixed FFHQ-aligned face box (``faces.detect.aligned_face_box``), so detection cannot fail or differ.
Rows of the result:

- ``real half A vs real half B``: the noise floor: two disjoint halves of the training faces (ffhq256 +
  stylegan256 minus the held-out ids ending in 0) at 64 px.
- ``real blurred (sigma 1.5 px) vs real B``: a degraded-real reference for the scale of the number.
- ``samples psi=1`` / ``samples psi=0.7``: ``--num`` generator samples (z seeded) vs real half B.

Inception FID is computed as well when the pytorch-fid Inception weights (zoo ``pt-inception-fid``) are in
the cache; otherwise the result says that they are missing. Writes ``benchmarks/results/stylegan2_prior.json``
and the grid ``docs/stylegan2_face64_samples.png`` (8 x 8 samples, psi = 1, z seeds 0..63).
``--export FINAL`` first writes a trainer export as the fp16 built-in prior
(``src/facerestore/zoo/builtin/stylegan2-face-64.safetensors``, settings in its metadata); a run trained
with ``noise: none`` gets its noise strengths set to exactly 0.
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
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]


def embed_all(images: torch.Tensor, face_size: int = 256) -> np.ndarray:
    """dlib embeddings (N, 128) of (N, 3, s, s) images in [0, 1] after bicubic upsampling to ``face_size``."""
    from facerestore.faces.detect import aligned_face_box
    from facerestore.faces.identity import dlib_embedding

    box = aligned_face_box(face_size)
    out = []
    for i in range(0, images.shape[0], 64):
        up = F.interpolate(images[i : i + 64].float(), size=(face_size, face_size), mode="bicubic", align_corners=False)
        arr = (up.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
        out.extend(dlib_embedding(a, box) for a in arr)
    return np.stack(out)


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    from facerestore.metrics.fid import frechet_distance

    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


@torch.no_grad()
def sample(G, n: int, psi: float, seed: int = 0, batch: int = 64) -> torch.Tensor:
    from facerestore.nn.stylegan2 import to_unit_range

    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.z_dim, generator=g)
    return torch.cat([to_unit_range(G(z[i : i + batch], truncation_psi=psi)).clamp(0, 1)
                      for i in range(0, n, batch)])


def export_builtin(final: Path, record: dict) -> Path:
    from facerestore.nn.stylegan2_io import builtin_prior_path, load_stylegan2, save_safetensors_generator

    G = load_stylegan2(final)
    if record.get("noise") == "none":
        # trained without noise inputs: the EMA still holds decaying strengths from before the switch
        with torch.no_grad():
            for name, p in G.named_parameters():
                if name.endswith("noise_strength"):
                    p.zero_()
    dst = Path(builtin_prior_path())
    save_safetensors_generator(G, dst, half=True, extra_metadata={"source": json.dumps(record)})
    return dst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", default=[str(ROOT.parent / "shared" / "data" / d)
                                                 for d in ("ffhq256", "stylegan256")])
    p.add_argument("--weights", default=None, help="generator file (default: the built-in prior)")
    p.add_argument("--export", default=None, metavar="FINAL", help="write FINAL as the fp16 built-in prior first")
    p.add_argument("--num", type=int, default=1000, help="generated samples per row (default 1000)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "stylegan2_prior.json"))
    p.add_argument("--grid", default=str(ROOT / "docs" / "stylegan2_face64_samples.png"))
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    from facerestore import zoo
    from facerestore.io import write_image
    from facerestore.nn.stylegan2_io import resolve_generator
    from facerestore.train.config import DataConfig
    from facerestore.train.data import load_images, split_files

    t0 = time.time()
    if args.export:
        final = Path(args.export)
        meta = json.loads(final.with_suffix(".json").read_text())
        export_builtin(final, {"config": "configs/stylegan2-face-64.yaml", "steps": meta.get("steps"),
                               "noise": meta.get("config", {}).get("model", {}).get("noise", "random")})
    G = resolve_generator(args.weights).eval()
    res = G.img_resolution

    train_files, _ = split_files(DataConfig(roots=args.data, val_from=[args.data[0]], size=res))
    real = load_images(train_files, res).float() / 255
    perm = torch.randperm(real.shape[0], generator=torch.Generator().manual_seed(0))
    half_a, half_b = real[perm[: len(perm) // 2]], real[perm[len(perm) // 2 :]]
    emb_a, emb_b = embed_all(half_a), embed_all(half_b)
    blurred = torch.from_numpy(np.stack([_gauss_blur(x.numpy(), 1.5) for x in half_a]))
    rows = {
        "real half A vs real half B": frechet(emb_a, emb_b),
        "real blurred (sigma 1.5 px) vs real B": frechet(embed_all(blurred), emb_b),
    }
    for psi in (1.0, 0.7):
        rows[f"samples psi={psi:g} vs real B"] = frechet(embed_all(sample(G, args.num, psi)), emb_b)

    result = {
        "benchmark": "stylegan2_prior",
        "command": "python scripts/eval_stylegan_prior.py" + (f" --export {args.export}" if args.export else ""),
        "generator": G.config,
        "metric": "Frechet distance between dlib 128-d face embeddings (64 px images upsampled to 256, "
                  "fixed FFHQ-aligned box); lower is better",
        "real_faces": {"count_a": len(half_a), "count_b": len(half_b), "roots": args.data,
                       "held_out": "ffhq256 ids ending in 0 excluded"},
        "num_samples": args.num,
        "dlib_frechet": rows,
    }
    if zoo.is_available("pt-inception-fid"):
        from facerestore.metrics.fid import FID

        fid = FID()
        fid.update(pred=sample(G, args.num, 1.0), target=half_b)
        result["inception_fid_psi1"] = float(fid.compute())
    else:
        result["inception_fid_psi1"] = None
        result["inception_fid_missing"] = "pytorch-fid Inception weights (zoo pt-inception-fid) are not cached here"
    result["hardware"] = f"{platform.machine()}, torch {torch.__version__}, CPU"
    result["wall_s"] = round(time.time() - t0, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

    grid = sample(G, 64, 1.0).reshape(8, 8, 3, res, res).permute(0, 3, 1, 4, 2).reshape(8 * res, 8 * res, 3)
    Path(args.grid).parent.mkdir(parents=True, exist_ok=True)
    write_image(args.grid, grid.numpy().astype(np.float32))
    print(json.dumps(rows, indent=1))
    return 0


def _gauss_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """(3, H, W) float image blurred with a separable Gaussian (reflect borders)."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(img, sigma=(0, sigma, sigma), mode="reflect").astype(np.float32)


if __name__ == "__main__":
    sys.exit(main())
