"""Labelled picture sheets of the benchmarks: columns of faces side by side, one row per face
(:func:`facerestore.sheets.labelled_grid`, written atomically)."""

from __future__ import annotations

from pathlib import Path

import torch

from facerestore.sheets import labelled_grid


def labelled_sheet(columns: dict[str, torch.Tensor], path: str | Path, rows: int | None = None,
                   tile: int = 128) -> Path:
    """Write a PNG: one column per entry of ``columns`` (name -> (N, 3, H, W) in [0, 1]), its name on top, faces
    resized (area / bicubic) to ``tile`` px; ``rows``: the first N faces (default all of the shortest column)."""
    from facerestore.io import write_image

    return write_image(path, labelled_grid(columns, tile=tile, rows=rows))
