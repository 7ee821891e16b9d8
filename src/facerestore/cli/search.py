"""`facerestore search`: the architecture search of FRSNet / MFPSNet (paper 001, Algorithm 1) from a YAML config."""

from __future__ import annotations

import argparse

HELP = "search an FRSNet / MFPSNet architecture (paper 001, NAS) from a YAML config; resumes automatically"
EXAMPLES = """\
  facerestore search configs/search/mfpsnet-tiny.yaml
  facerestore search configs/search/mfpsnet-tiny.yaml --set epochs=4 --set rule=code
Writes <output_dir>/<name>/genotype.json (the decoded architecture), arch_history.json and arch_<module>.png
(architecture weights per epoch); re-running the same command resumes from checkpoints/last.pt exactly.
"""


def _override(text: str) -> tuple[str, object]:
    import yaml

    from facerestore.errors import InputError

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise InputError(f"--set expects KEY=VALUE, got {text!r}")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise InputError(f"--set {text!r}: not a YAML value ({str(exc).splitlines()[0]})") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML search config (keys: facerestore.methods.mfpsnet.search.SearchConfig)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. epochs=4 (repeatable)")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start from step 0")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from facerestore.methods.mfpsnet.search import load_search_config, run_search

    overrides = dict(_override(s) for s in args.overrides)
    if args.quiet:
        overrides["progress"] = False
    cfg = load_search_config(args.config, overrides)
    result = run_search(cfg, resume=not args.fresh)
    state = "finished" if result["finished"] else "stopped (time limit); re-run to resume"
    print(f"{cfg.name}: step {result['step']}/{result['total_steps']} {state} ({result['train_hours']:.3f} h in all); "
          f"genotype {result['genotype']}")
    for plot in result["plots"]:
        print(f"architecture weights: {plot}")
    return 0
