"""Helpers shared by the sub-commands: batch loops that report failures and go on, devices."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from facerestore.errors import FaceRestoreError

__all__ = ["BatchReport", "run_batch"]

T = TypeVar("T")


@dataclass
class BatchReport:
    done: list[Any] = field(default_factory=list)
    failed: list[tuple[Any, str]] = field(default_factory=list)
    single: bool = False  # the input was one file named on the command line

    @property
    def exit_code(self) -> int:
        """0 when every item succeeded, 1 when some failed (and were reported); 2 when the only input
        (a single file given with -i) failed: that is bad input, not a partly failed batch."""
        if not self.failed:
            return 0
        return 2 if self.single and not self.done else 1


def _out_of_memory(exc: BaseException) -> bool:
    """MemoryError, or a torch allocator failure (CPU "can't allocate memory", CUDA/MPS "out of memory")."""
    if isinstance(exc, MemoryError):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def run_batch(
    items: Sequence[T],
    fn: Callable[[T], Any],
    *,
    desc: str = "processing",
    progress: bool = True,
    expected: tuple[type[BaseException], ...] = (FaceRestoreError, OSError, ValueError),
    single: bool = False,
) -> BatchReport:
    """Call ``fn`` on every item with a progress bar; an error on one item is reported on stderr as one line
    ("skipped ITEM: reason") and the loop goes on: an ``expected`` error by its message, running out of memory as
    such, anything else (a bug) as "internal error (TYPE: message)".

    On SIGINT / SIGTERM (KeyboardInterrupt, see ``guards.handle_signals``) the bar is closed, how many items
    were done is printed and the interrupt propagates (exit 130 / 143). ``single``: the items are one file
    named by the user, whose failure is exit code 2.
    """
    from tqdm import tqdm

    from facerestore.cli.guards import say
    from facerestore.io import display_path

    report = BatchReport(single=single)
    bar = tqdm(items, desc=desc, unit="img", disable=not progress or len(items) < 2, file=sys.stderr)
    try:
        for item in bar:
            try:
                report.done.append(fn(item))
            except expected as exc:
                if _out_of_memory(exc):
                    msg = "out of memory (this file is too large for the available memory)"
                else:
                    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                report.failed.append((item, msg))
                say(f"skipped {display_path(item)}: {msg}")
            except Exception as exc:  # one file's failure, whatever it is, never stops the rest
                if _out_of_memory(exc):
                    msg = "out of memory (this file is too large for the available memory)"
                else:  # not a known failure of this input: a bug of ours or of a library, said as one line
                    first = str(exc).splitlines()[0] if str(exc) else ""
                    msg = f"internal error ({type(exc).__name__}{': ' + first if first else ''}); please report it"
                report.failed.append((item, msg))
                say(f"skipped {display_path(item)}: {msg}")
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted: {len(report.done)} of {len(items)} inputs done, {len(report.failed)} failed; "
              "no partial files were left; re-run the same command to process the inputs again",
              file=sys.stderr)
        raise
    bar.close()
    if report.failed:
        print(f"{len(report.failed)} of {len(items)} inputs failed (see above)", file=sys.stderr)
    return report


def add_generator_file_arguments(p: Any, suffix: str, user: str) -> None:
    """``--generator`` and ``--out`` of the commands that fit a file to one generator (``train-flow``,
    ``train-encoder``): ``suffix`` names the default file, ``user`` says who looks for it there."""
    p.add_argument("--generator", required=True,
                   help="generator: StyleGAN2 weights (NVIDIA .pkl, rosinality .pt, ours), or a zoo name such as "
                   "mobilestylegan-ffhq-1024")
    p.add_argument("--out", default=None,
                   help=f"output .safetensors (default: <generator stem>{suffix}.safetensors next to the generator, "
                   f"where {user} for it); a .json training record is written beside it")


def check_generator_file_outputs(generator: str, weights: Any, what: str, checkpoint: Any = None) -> None:
    """The weights (a flow, an encoder) fitted to ``generator`` (a file, or a folder such as MobileStyleGAN's),
    their record (the weights' path with .json) and their training ``checkpoint`` (if given) must not replace the
    generator (or its JSON description), must be regular files in a writable folder, and must differ from each
    other; OutputError otherwise."""
    import os
    from pathlib import Path

    from facerestore.errors import OutputError
    from facerestore.io import check_output_dir, check_output_file, display_path, same_file

    weights = Path(weights)
    record = weights.with_suffix(".json")
    if weights.suffix.lower() != ".safetensors":
        raise OutputError(f"--out must be a .safetensors file, got {display_path(weights)}")
    g = Path(generator if os.path.isfile(generator) else os.path.join(generator, "."))
    protect = [g] + ([g.with_suffix(".json")] if g.with_suffix(".json").exists() else [])
    for target in (weights, record, *([Path(checkpoint)] if checkpoint is not None else [])):
        check_output_file(target, protect)
        check_output_dir(target.absolute().parent)
    if same_file(weights, record) or weights.absolute() == record.absolute():
        raise OutputError(f"the {what} and its record would be the same file: {display_path(weights)}")
