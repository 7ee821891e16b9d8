"""The ``facerestore`` command line: one sub-command per module of this package.

Each sub-command module defines ``HELP`` (one line), ``EXAMPLES`` (text), ``add_arguments(parser)``
(argparse only, no heavy imports) and ``run(args) -> int``. Heavy libraries are imported inside
``run`` so that ``facerestore --help`` is instant.

Exit codes: 0 success; 1 some inputs of a batch failed (each reported, the rest completed);
2 bad usage or input (one-line error); 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

from facerestore._version import __version__
from facerestore.errors import FaceRestoreError, did_you_mean

# sub-command -> module (a static table: nothing is discovered by scanning)
SUBCOMMANDS: dict[str, str] = {
    "restore": "facerestore.cli.restore",
    "degrade": "facerestore.cli.degrade",
    "evaluate": "facerestore.cli.evaluate",
    "faces": "facerestore.cli.faces",
    "models": "facerestore.cli.models",
    "train": "facerestore.cli.train",
    "train-flow": "facerestore.cli.train_flow",
    "train-encoder": "facerestore.cli.train_encoder",
    "synth": "facerestore.cli.synth",
    "serve": "facerestore.cli.serve",
    "search": "facerestore.cli.search",
    "benchmark": "facerestore.cli.benchmark",
}


def _commands() -> dict[str, ModuleType]:
    """Every sub-command module (a missing one is a packaging bug and fails loudly)."""
    return {name: importlib.import_module(modname) for name, modname in SUBCOMMANDS.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facerestore",
        description="Restore degraded face photos; degrade, evaluate and train face restorers.",
        epilog=(
            "examples:\n"
            "  facerestore restore -i photo.jpg -o results/\n"
            "  facerestore degrade -i faces/ -o lq/ --task sr4x --seed 0\n"
            "  facerestore evaluate --pred results/ --gt faces/ --metrics psnr,ssim\n"
            "run 'facerestore COMMAND --help' for the options of a command."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"facerestore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod in _commands().items():
        p = sub.add_parser(
            name,
            help=mod.HELP,
            description=mod.HELP,
            epilog="examples:\n" + mod.EXAMPLES if getattr(mod, "EXAMPLES", "") else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run, _parser=p)
    return parser


def _unrecognized(sub_parser: argparse.ArgumentParser, extra: Sequence[str]) -> str:
    """The error for options a sub-command does not know, naming the closest option it does know."""
    known = [opt for action in sub_parser._actions for opt in action.option_strings]
    message = f"unrecognized arguments: {' '.join(extra)}"
    for word in extra:
        hint = did_you_mean(word.split("=", 1)[0], known) if word.startswith("-") else ""
        if hint:
            return message + hint
    return message


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # parse_known_args: an unknown option is reported by its sub-command's parser (its usage line, not the top
    # level's, which would hide where the option belongs)
    args, extra = parser.parse_known_args(argv)
    if not getattr(args, "_run", None):
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        parser.print_help()
        return 2
    if extra:
        args._parser.error(_unrecognized(args._parser, extra))
    from facerestore.cli.guards import handle_signals, one_line, quiet_opencv
    from facerestore.nn.devices import tune_cpu_allocator

    tune_cpu_allocator()  # freed memory stays for reuse: 1.5-2x faster optimisation loops on a CPU
    quiet_opencv()

    # warnings (a substitute loss, a missing optional model) read as one line, without a source excerpt
    warnings.formatwarning = lambda message, category, *rest, **kw: f"warning: {message}\n"
    try:
        with handle_signals():  # SIGINT / SIGTERM -> Interrupted: temporary files are removed on the way out
            return int(args._run(args) or 0)
    except (FaceRestoreError, OSError, MemoryError) as exc:
        print(f"facerestore {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("facerestore: interrupted", file=sys.stderr)
        return getattr(exc, "exit_code", 130)  # 130 SIGINT, 143 SIGTERM


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
