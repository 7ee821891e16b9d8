"""Atomic checkpoints and exact resume.

A checkpoint holds every module's and optimiser's state, the AMP scaler, the EMA weights, the global
step and torch's RNG state. Data order and degradations are pure functions of (seed, step, rank) (see
``data.py``), so resuming from step s reproduces the run that did not stop. Files are written to a
temporary name and renamed, so a killed job never leaves a truncated checkpoint; loading uses
``torch.load(weights_only=True)`` (no code from the file is executed).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    from facerestore.io import new_file_mode

    os.fchmod(fd, new_file_mode())  # as a plain open() would: a shared run folder stays readable
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, p)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return p


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(Path(path), map_location=map_location, weights_only=True)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    p = Path(run_dir) / "checkpoints" / "last.pt"
    return p if p.is_file() else None
