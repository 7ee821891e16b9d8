"""Atomic checkpoints and exact resume.

A checkpoint holds every module's and optimiser's state, the AMP scaler, the EMA weights, the global
step and torch's RNG state. Data order and degradations are pure functions of (seed, step, rank) (see
``data.py``), so resuming from step s reproduces the run that did not stop. Files are written to a
temporary name and renamed, so a killed job never leaves a truncated checkpoint; loading uses
``torch.load(weights_only=True)`` (no code from the file is executed).
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (the project's one atomic writer: a temporary file renamed over the
    target; a symbolic link target is refused)."""
    from facerestore.io import atomic_write_bytes

    buf = io.BytesIO()
    torch.save(state, buf)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(p, buf.getbuffer())  # a view: no second copy of a large state in memory


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", *,
                    remedy: str = "start over with --fresh") -> dict[str, Any]:
    """The state saved by :func:`save_checkpoint`; one-line InputError for a file that is not one (truncated by
    a full disk, another program's file), ending with ``remedy``."""
    from facerestore.errors import InputError

    try:
        state = torch.load(Path(path), map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path} is not a readable checkpoint ({first}); {remedy}") from None
    if not isinstance(state, dict):
        raise InputError(f"{path} is not a training checkpoint; {remedy}")
    return state


def setting_changes(saved: dict[str, Any], current: dict[str, Any], *, resumable: Iterable[str] = (),
                    same: Callable[[str, Any, Any], bool] | None = None) -> list[str]:
    """The keys (sorted) whose values differ between the settings a checkpoint was made with and the current ones,
    leaving out ``resumable`` (what a resumed run may change); ``same(key, old, new)`` compares (default ``==``); a
    key on one side only compares with None. What every resumable loop refuses before it continues another run."""
    keep = set(resumable)
    equal = same or (lambda k, a, b: a == b)
    return sorted(k for k in set(saved) | set(current)
                  if k not in keep and not equal(k, saved.get(k), current.get(k)))


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    p = Path(run_dir) / "checkpoints" / "last.pt"
    return p if p.is_file() else None
