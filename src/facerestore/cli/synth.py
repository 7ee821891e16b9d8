"""`facerestore synth`: write face-generator samples (FFHQ-aligned) with their latents: unlimited training faces."""

from __future__ import annotations

import argparse

HELP = "write face-generator samples (FFHQ-aligned PNGs + W latents + manifest) as training data"
EXAMPLES = """\
  facerestore synth -n 1000 -o synth/ --size 512 --seed 0
  facerestore synth -n 200 -o synth-psi07/ --truncation 0.7 --device cuda
  facerestore synth -n 500 -o persons/ --size 128 --truncation 0.7 --views 3   # 4 photos of each synthetic person
Default generator: MobileStyleGAN 1024 px (`facerestore models download mobilestylegan-ffhq-1024`; weights
distilled from NVIDIA's StyleGAN2 FFHQ: non-commercial), else the built-in 64 px prior.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--count", type=int, required=True, help="number of faces")
    p.add_argument("-o", "--output", required=True, help="output folder (synth_NNNNNN.png, latents, manifest.json)")
    p.add_argument("--size", type=int, default=512, help="side of the written faces in px (default 512)")
    p.add_argument("--seed", type=int, default=0, help="run seed: face i is a pure function of (seed, i)")
    p.add_argument("--truncation", type=float, default=1.0, help="W truncation psi in [0, 2] (1 = none)")
    p.add_argument("--weights", default=None,
                   help="generator: a zoo name, a StyleGAN2 file (default: MobileStyleGAN if cached)")
    p.add_argument("--views", type=int, default=0, help="more photos of each synthetic person: pose, hair and "
                   "background change, identity stays (view_NNNNNN_V.png; default 0)")
    p.add_argument("--batch", type=int, default=4, help="faces per generator call (default 4)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import sys

    from tqdm import tqdm

    from facerestore.cli.guards import check_finite
    from facerestore.nn.devices import resolve_device
    from facerestore.train.synth import write_synth

    check_finite("--truncation", args.truncation, low=0, high=2)  # before the generator loads
    device = resolve_device(args.device)
    with tqdm(total=max(args.count, 0), desc="synth", unit="face", disable=args.quiet, file=sys.stderr) as bar:
        manifest = write_synth(args.output, args.count, size=args.size, seed=args.seed, truncation=args.truncation,
                               weights=args.weights, batch=args.batch, device=device, progress=bar.update,
                               views=args.views)
    views = f" with {args.views} more views each" if args.views else ""
    print(f"wrote {args.count} faces{views} to {args.output} (manifest {manifest})", file=sys.stderr)
    return 0
