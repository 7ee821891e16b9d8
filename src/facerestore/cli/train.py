"""`facerestore train`: train a restorer from a YAML config (resumes automatically)."""

from __future__ import annotations

import argparse

HELP = "train a restorer from a YAML config (one CPU, one GPU, or torchrun for many)"
EXAMPLES = """\
  facerestore train configs/unet-l1-128.yaml
  facerestore train configs/ispl-compact-128.yaml --set steps=2000 --set data.batch_size=16
  torchrun --nproc-per-node 4 -m facerestore train configs/ispl-compact-128.yaml
Re-running the same command resumes from <output_dir>/<name>/checkpoints/last.pt exactly.
  facerestore train configs/ispl-compact-256.yaml --export-latest   # weights of a run still going
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. optim.lr=1e-4 (repeatable)")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start from step 0")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--export-latest", action="store_true",
                   help="train nothing: write the EMA generator of the run's last checkpoint to "
                        "<run folder>/latest.safetensors (+ .json), usable as --weights while the run goes on")


def run(args: argparse.Namespace) -> int:
    from facerestore.methods import training_adapter
    from facerestore.train import load_config, train

    if args.export_latest and args.fresh:
        from facerestore.errors import InputError

        raise InputError("--export-latest writes the weights of the existing checkpoint; --fresh would start over: "
                         "choose one")
    cfg = load_config(args.config, args.overrides)
    if args.export_latest:
        from facerestore.train import Trainer

        print(f"weights: {Trainer(cfg, adapter=training_adapter(cfg.method)).export_latest()}")
        return 0
    result = train(cfg, adapter=training_adapter(cfg.method), resume=not args.fresh, progress=not args.quiet)
    state = "finished" if result["finished"] else "stopped (time limit); re-run to resume"
    print(f"{cfg.name}: step {result['step']}/{cfg.steps} {state}; run folder {result['run_dir']}")
    if result.get("weights"):
        print(f"weights: {result['weights']}")
    return 0
