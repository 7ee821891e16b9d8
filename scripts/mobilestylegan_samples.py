"""Write a grid of MobileStyleGAN faces (our PyTorch port, ``facerestore.nn.mobilestylegan``).

    python scripts/mobilestylegan_samples.py                      # weights from the zoo cache
    python scripts/mobilestylegan_samples.py --weights DIR --out docs/mobilestylegan_samples.png

DIR holds MappingNetwork.{xml,bin} and SynthesisNetwork.{xml,bin} (``facerestore models download
mobilestylegan-ffhq-1024`` puts them in the cache). Each face is z ~ N(0, I) drawn with numpy's
``default_rng(seed)`` for the seeds given, mapped to w, truncated towards ``w_avg`` by ``--truncation``,
synthesised at 1024 px (constant noise) and box-averaged to ``--size`` px (the generator's own
lower-resolution output, see the module doc); the PNG uses a 256-colour palette by default (``--colours``).
Prints the seconds per face.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
from PIL import Image

from facerestore.nn.mobilestylegan import load_mobilestylegan

ZOO_NAME = "mobilestylegan-ffhq-1024"


def weights_folder(arg: str | None) -> str:
    if arg:
        return arg
    from facerestore import zoo

    return os.fspath(zoo.weights_path(ZOO_NAME))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", help="folder with the four IR files (default: the zoo cache)")
    ap.add_argument("--out", default="docs/mobilestylegan_samples.png")
    ap.add_argument("--seeds", default="0,1,2,3", help="comma-separated z seeds, one face each")
    ap.add_argument("--truncation", type=float, default=0.7)
    ap.add_argument("--size", type=int, default=256, help="side of each face in the grid (a power of two <= 1024)")
    ap.add_argument("--columns", type=int, default=4)
    ap.add_argument("--colours", type=int, default=256,
                    help="palette size of the PNG (median cut; keeps the committed grid small); 0: full colour")
    args = ap.parse_args(argv)

    G = load_mobilestylegan(weights_folder(args.weights))
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    z = np.stack([np.random.default_rng(s).standard_normal(G.z_dim) for s in seeds])
    z = torch.from_numpy(z.astype(np.float32))
    faces = []
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(len(seeds)):  # one at a time: 1024 px activations are large
            w = G.mapping(z[i : i + 1], truncation_psi=args.truncation)
            faces.append(G.synthesis(w, resolution=args.size))
    per_face = (time.perf_counter() - start) / max(len(seeds), 1)
    img = ((torch.cat(faces).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (N, 3, S, S)
    cols = min(args.columns, len(seeds))
    rows = -(-len(seeds) // cols)
    grid = torch.zeros(3, rows * args.size, cols * args.size, dtype=torch.uint8)
    for k, face in enumerate(img):
        r, c = divmod(k, cols)
        grid[:, r * args.size : (r + 1) * args.size, c * args.size : (c + 1) * args.size] = face
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    picture = Image.fromarray(grid.permute(1, 2, 0).numpy())
    if args.colours:
        picture = picture.quantize(args.colours, method=Image.Quantize.MEDIANCUT)
    picture.save(args.out, optimize=True)
    print(f"wrote {args.out}: {len(seeds)} faces (seeds {args.seeds}, truncation {args.truncation}), "
          f"{per_face:.2f} s per face on {torch.get_num_threads()} threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
