"""`facerestore train-flow`: train the MAF W-space prior of RLS / RLS+ (paper 004) for a StyleGAN2 generator."""

from __future__ import annotations

import argparse

HELP = "train the normalizing-flow W prior used by the rls / rls-plus restorers"
EXAMPLES = """\
  facerestore train-flow --generator stylegan2-ffhq-config-f.pt
  facerestore train-flow --generator mobilestylegan-ffhq-1024 --hidden 256 --steps 3000 --batch 256 --half
  facerestore train-flow --generator ffhq.pkl --out priors/ffhq-flow.safetensors --steps 20000 --device cuda
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from facerestore.cli.common import add_generator_file_arguments

    add_generator_file_arguments(p, ".rls-flow", "the RLS restorers look")
    p.add_argument("--steps", type=int, default=20000, help="Adam steps (default 20000)")
    p.add_argument("--batch", type=int, default=512, help="W samples per step (default 512)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate, cosine-decayed (default 1e-4)")
    p.add_argument("--blocks", type=int, default=5, help="MAF blocks (default 5, as RLS)")
    p.add_argument("--hidden", type=int, default=1024, help="MADE hidden width (default 1024, as RLS)")
    p.add_argument("--stats", type=int, default=100000, help="W samples for standardisation/calibration")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation and of every W sample")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    p.add_argument("--half", action="store_true", help="store the weights in float16 (half the file size)")
    p.add_argument("--log-every", type=int, default=500, help="print the loss every N steps (0: never)")
    p.add_argument("--save-every", type=int, default=1000,
                   help="write a checkpoint (<out>.ckpt) every N steps (default 1000; 0: only at the end or on "
                   "Ctrl-C); a rerun of the same command resumes from it")


def _check_args(args: argparse.Namespace) -> None:
    """Every option in range (one-line InputError), before anything is loaded."""
    from facerestore.cli.guards import check_finite
    from facerestore.errors import InputError
    from facerestore.nn.flow import FLOW_BOUNDS

    blocks, hidden = FLOW_BOUNDS["num_blocks"][1:], FLOW_BOUNDS["hidden"][1:]  # what load_flow will accept
    # --stats: the W samples are held at once (2 KiB each at dim 512): 4M is 8 GiB
    for flag, value, low, high in (("--steps", args.steps, 1, 10_000_000), ("--batch", args.batch, 2, 1 << 20),
                                   ("--blocks", args.blocks, *blocks), ("--hidden", args.hidden, *hidden),
                                   ("--stats", args.stats, 2, 4_000_000), ("--log-every", args.log_every, 0, None),
                                   ("--save-every", args.save_every, 0, None)):
        if value < low or (high is not None and value > high):
            raise InputError(f"{flag} must be in {low}..{high if high is not None else 'any'}, got {value}")
    check_finite("--lr", args.lr, low=0, high=1, low_open=True)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from facerestore.cli.common import check_generator_file_outputs
    from facerestore.errors import Interrupted, deferred_interrupts
    from facerestore.methods.rls.flow_prior import flow_paths, save_generator_flow, train_generator_flow
    from facerestore.nn.devices import resolve_device
    from facerestore.nn.flow import read_flow_checkpoint
    from facerestore.nn.stylegan2_io import generator_sha256, prior_file, resolve_generator

    _check_args(args)
    # a file, a zoo name (MobileStyleGAN: its cache folder) or a builtin: reference -> the generator's path
    gen_path = prior_file(args.generator)
    out = Path(args.out) if args.out else flow_paths(gen_path)[0]
    ckpt = out.with_suffix(".ckpt")
    check_generator_file_outputs(gen_path, out, "flow", checkpoint=ckpt)  # and the record save_generator_flow writes
    device = resolve_device(args.device)
    G = resolve_generator(args.generator).to(device).eval().requires_grad_(False)
    gen_hash = generator_sha256(Path(gen_path)) if Path(gen_path).exists() else None
    if ckpt.is_file():
        print(f"resuming from {ckpt}", flush=True)

    def report(step: int, nll: float) -> None:
        if args.log_every and (step % args.log_every == 0 or step == args.steps - 1):
            print(f"step {step + 1}/{args.steps}  nll {nll:.3f} nats/sample", flush=True)

    # Ctrl-C / SIGTERM: the step ends, the checkpoint and the weights of the steps done are saved (the save too is
    # covered: weights never sit beside an older record)
    with deferred_interrupts() as signalled:
        flow = train_generator_flow(
            G, steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed, num_blocks=args.blocks,
            hidden=args.hidden, n_stats=args.stats, n_calibrate=args.stats, callback=report, checkpoint=ckpt,
            save_every=args.save_every, generator_hash=gen_hash, should_stop=lambda: "signum" in signalled,
        )
        done = read_flow_checkpoint(ckpt)  # what was reached, over every chunk (the checkpoint is always written)
        nll = done["nll"]
        path = save_generator_flow(
            flow.cpu(), gen_path, out, steps=done["step"], scheduled_steps=args.steps,
            finished=done["step"] >= args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
            final_nll=None if nll is None else round(float(nll), 6), half=args.half,
            train_hours=round(done["seconds"] / 3600, 6), device=str(device),
        )
    print(f"flow prior of step {done['step']}/{args.steps} written to {path}"
          + ("" if done["step"] >= args.steps else " (stopped early: rerun the same command to finish it)"))
    if "signum" in signalled:
        raise Interrupted(signalled["signum"])
    return 0
