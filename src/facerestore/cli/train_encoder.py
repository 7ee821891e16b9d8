"""`facerestore train-encoder`: train the W encoder that starts robust-inversion near the face (beyond paper 002)."""

from __future__ import annotations

import argparse
import math

HELP = "train the W encoder that gives robust-inversion its starting latent"
EXAMPLES = """\
  facerestore train-encoder --generator mobilestylegan-ffhq-1024 --pairs 4096 --steps 6000
  facerestore train-encoder --generator ffhq.pkl --out priors/ffhq.w-encoder.safetensors --device cuda --pairs 50000
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from facerestore.cli.common import add_generator_file_arguments

    add_generator_file_arguments(p, ".w-encoder", "robust-inversion looks")
    p.add_argument("--pairs", type=int, default=4096, help="generator samples rendered with their W (default 4096)")
    p.add_argument("--pairs-dir", default=None,
                   help="folder of the rendered pairs, reused when present (default: <out>.pairs/)")
    p.add_argument("--pairs-size", type=int, default=128,
                   help="side of the rendered pairs, a power of two (default 128); the degraded views are made at "
                   "this side and the encoder resizes them to --in-size")
    p.add_argument("--held-out", type=int, default=256, help="pairs kept out of training to report the error")
    p.add_argument("--steps", type=int, default=6000, help="Adam steps (default 6000)")
    p.add_argument("--batch", type=int, default=32, help="faces per step (default 32)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate, cosine-decayed (default 1e-3)")
    p.add_argument("--in-size", type=int, default=64, help="encoder input side, a power of two (default 64)")
    p.add_argument("--width", type=int, default=32, help="stem channels (default 32)")
    p.add_argument("--max-channels", type=int, default=256, help="channel cap (default 256)")
    p.add_argument("--head-channels", type=int, default=64,
                   help="channels of the 4 x 4 features the linear head reads (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pairs, the initialisation and every draw")
    p.add_argument("--save-every", type=int, default=500,
                   help="every N steps (default 500): write a checkpoint (a rerun resumes from it) and, when the "
                   "held-out error is the lowest so far, the weights")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    p.add_argument("--half", action="store_true", help="store the weights in float16 (half the file size)")
    p.add_argument("--log-every", type=int, default=250, help="print the loss every N steps (0: never)")


def _check_args(args: argparse.Namespace) -> None:
    """Every option in range (one-line InputError), before anything is loaded."""
    from facerestore.cli.guards import check_finite
    from facerestore.errors import InputError

    for flag, value, low, high in (("--pairs", args.pairs, 2, 10_000_000), ("--held-out", args.held_out, 1, None),
                                   ("--steps", args.steps, 0, 10_000_000), ("--batch", args.batch, 1, 1 << 16),
                                   ("--width", args.width, 1, 1024), ("--max-channels", args.max_channels, 1, 4096),
                                   ("--head-channels", args.head_channels, 1, 4096),
                                   ("--save-every", args.save_every, 0, None),
                                   ("--log-every", args.log_every, 0, None)):
        if value < low or (high is not None and value > high):
            raise InputError(f"{flag} must be in {low}..{high if high is not None else 'any'}, got {value}")
    if args.held_out >= args.pairs:
        raise InputError(f"--held-out ({args.held_out}) must be smaller than --pairs ({args.pairs})")
    for flag, value in (("--in-size", args.in_size), ("--pairs-size", args.pairs_size)):
        if value < 16 or value > 1024 or value & (value - 1):
            raise InputError(f"{flag} must be a power of two in 16..1024, got {value}")
    check_finite("--lr", args.lr, low=0, high=1, low_open=True)


def run(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    import torch

    from facerestore.cli.common import check_generator_file_outputs
    from facerestore.errors import InputError, Interrupted, deferred_interrupts
    from facerestore.methods.inversion.encoder import encoder_paths, save_encoder
    from facerestore.methods.inversion.encoder_train import (
        new_encoder,
        render_pairs,
        train_encoder,
        whitened_error,
    )
    from facerestore.nn.devices import resolve_device
    from facerestore.nn.stylegan2_io import prior_file, resolve_generator

    _check_args(args)
    gen_path = prior_file(args.generator)
    out = Path(args.out) if args.out else encoder_paths(gen_path)[0]
    check_generator_file_outputs(gen_path, out, "encoder", checkpoint=out.with_suffix(".ckpt"))
    pairs_dir = Path(args.pairs_dir) if args.pairs_dir else out.with_suffix(".pairs")
    device = resolve_device(args.device)
    G = resolve_generator(args.generator).to(device).eval().requires_grad_(False)
    started = time.time()
    if args.pairs_size > G.img_resolution:
        raise InputError(f"--pairs-size {args.pairs_size} is larger than the generator's {G.img_resolution} px")
    pairs = render_pairs(G, args.pairs, seed=args.seed, size=args.pairs_size, folder=pairs_dir)
    render_s = time.time() - started
    train, held = pairs.split(args.held_out)
    torch.manual_seed(args.seed)
    enc = new_encoder(G, seed=args.seed, in_size=args.in_size, width=args.width, max_channels=args.max_channels,
                      head_channels=args.head_channels).to(device)
    del G

    def held_out_error() -> float:
        enc.eval()
        with torch.no_grad():
            err = torch.cat([whitened_error(enc, held.images[i:i + 64].float().div(255).to(device),
                                            held.ws[i:i + 64].to(device)) for i in range(0, len(held), 64)])
        enc.train()
        return float(err.mean())

    # the paper's start (w_avg; the untrained encoder returns it exactly) scores the held-out faces' own spread
    mean_start = float(((held.ws - enc.w_avg.cpu()) / enc.w_std.cpu()).pow(2).mean())
    rec_path = out.with_suffix(".json")
    best = {"error": float("inf"), "step": 0}
    if out.with_suffix(".ckpt").is_file() and rec_path.is_file():  # a resumed run keeps the best weights so far
        prev = json.loads(rec_path.read_text())
        best = {"error": float(prev.get("held_out_whitened_mse", float("inf"))), "step": int(prev.get("steps", 0))}

    def export(e, step: int, losses: list[float], seconds: float) -> None:
        """Weights are written when the held-out error is the lowest so far (early stopping on held-out generator
        samples: the encoder memorises its training pairs long before the training loss levels off)."""
        err = held_out_error()
        if not math.isfinite(err) or err >= best["error"]:  # NaN compares False: never "better"
            print(f"step {step}: held-out whitened W error {err:.4f}, not below step {best['step']}'s "
                  f"{best['error']:.4f}: {out.name} kept", flush=True)
            return
        best.update(error=err, step=step)
        save_encoder(e, out, gen_path, half=args.half, steps=step, batch=args.batch, lr=args.lr, seed=args.seed,
                     scheduled_steps=args.steps, pairs=len(train), held_out=len(held), pairs_size=args.pairs_size,
                     train_loss_last_100=sum(losses[-100:]) / max(len(losses[-100:]), 1),
                     held_out_whitened_mse=err, held_out_mean_start_mse=mean_start,
                     render_seconds=round(render_s, 1), train_hours=round(seconds / 3600, 4),
                     device=str(device))
        print(f"step {step}: held-out whitened W error {err:.4f} (the mean start: {mean_start:.4f}); wrote {out}",
              flush=True)

    def report(step: int, loss: float) -> None:
        if args.log_every and (step % args.log_every == 0 or step == args.steps - 1):
            print(f"step {step + 1}/{args.steps}  loss {loss:.4f}", flush=True)

    with deferred_interrupts() as signalled:  # Ctrl-C / SIGTERM: the step ends, the checkpoint is saved, then it stops
        train_encoder(enc, train, steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
                      checkpoint=out.with_suffix(".ckpt"), save_every=args.save_every, on_save=export, callback=report,
                      should_stop=lambda: "signum" in signalled)
    print(f"W encoder of step {best['step']} (held-out error {best['error']:.4f}) at {out}")
    if "signum" in signalled:
        raise Interrupted(signalled["signum"])
    return 0
