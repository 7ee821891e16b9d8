"""Labelled picture sheets: columns of images side by side, one row per image, each column's name on top."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["labelled_grid"]

HEADER_PX = 14  # the strip above the columns that holds their names


def labelled_grid(columns: Mapping[str, torch.Tensor], tile: int = 128, rows: int | None = None) -> np.ndarray:
    """One picture: a column per entry of ``columns`` (name -> (N, 3, H, W) in [0, 1]), its name on a white strip
    on top, every image resized (area when shrinking, bicubic when enlarging) to ``tile`` px square; ``rows``: the
    first N images of each column (default: all of the shortest). Returns (14 + N*tile, len(columns)*tile, 3)
    float32 in [0, 1]; names longer than the column is wide are cut."""
    from PIL import Image, ImageDraw

    if not columns:
        raise ValueError("labelled_grid needs at least one column")
    n = min(len(t) for t in columns.values()) if rows is None else min(rows, *(len(t) for t in columns.values()))
    sheet = Image.new("RGB", (tile * len(columns), HEADER_PX + tile * n), "white")
    draw = ImageDraw.Draw(sheet)
    for c, (name, t) in enumerate(columns.items()):
        draw.text((c * tile + 3, 1), name[: tile // 6], fill="black")
        t = t[:n].detach().float().cpu()
        if t.shape[-1] != tile or t.shape[-2] != tile:
            mode = "area" if t.shape[-1] > tile else "bicubic"
            t = F.interpolate(t, size=(tile, tile), mode=mode, **({} if mode == "area" else {"align_corners": False}))
        for r in range(n):
            arr = (t[r].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            sheet.paste(Image.fromarray(arr), (c * tile, HEADER_PX + r * tile))
    return np.asarray(sheet, dtype=np.float32) / 255.0
