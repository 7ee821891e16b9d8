"""Labelled picture sheets of the benchmarks: columns of faces side by side, one row per face."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def labelled_sheet(columns: dict[str, torch.Tensor], path: str | Path, rows: int | None = None,
                   tile: int = 128) -> Path:
    """Write a PNG: one column per entry of ``columns`` (name -> (N, 3, H, W) in [0, 1]), its name on top, faces
    resized (area / bicubic) to ``tile`` px; ``rows``: the first N faces (default all of the shortest column)."""
    from PIL import Image, ImageDraw

    n = min(len(t) for t in columns.values()) if rows is None else min(rows, *(len(t) for t in columns.values()))
    head = 14
    sheet = Image.new("RGB", (tile * len(columns), head + tile * n), "white")
    draw = ImageDraw.Draw(sheet)
    for c, (name, t) in enumerate(columns.items()):
        draw.text((c * tile + 3, 1), name[: tile // 6], fill="black")
        t = t[:n].detach().float().cpu()
        if t.shape[-1] != tile or t.shape[-2] != tile:
            mode = "area" if t.shape[-1] > tile else "bicubic"
            t = F.interpolate(t, size=(tile, tile), mode=mode, **({} if mode == "area" else {"align_corners": False}))
        for r in range(n):
            arr = (t[r].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            sheet.paste(Image.fromarray(arr), (c * tile, head + r * tile))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
