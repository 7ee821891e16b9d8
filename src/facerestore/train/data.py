"""Training data: HQ face crops, with LQ inputs made on the fly by the degradation engine.

Exact resume without saving loader state: the images of step ``s`` on rank ``r`` are a pure function
of (seed, s, r) — an epoch's permutation is drawn from ``seed + epoch`` and ranks take disjoint slices —
and so are the degradations (a generator seeded from (seed, s, r)).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facerestore.errors import InputError
from facerestore.io import is_image_file, read_rgb
from facerestore.train.config import DataConfig


def is_held_out(path: str | os.PathLike) -> bool:
    """The project's hold-out rule (``data.val_rule: ends-with-0``): a numeric file name ending in 0 (ffhq256's
    00010.png) is a validation face that no built-in weights trained on."""
    stem = Path(path).stem
    return stem.isascii() and stem.isdigit() and stem.endswith("0")


def split_files(cfg: DataConfig, extra_train: Sequence[Path] = (),
                in_memory: int = 0) -> tuple[list[Path], list[Path]]:
    """(train, validation) file lists from the configured roots and hold-out rule, sorted by path (files named by
    :func:`is_held_out` never train unless ``cfg.exclude_held_out`` is false); ``extra_train``
    (generator faces of ``data.synth``) only ever join the training list; ``in_memory``: how many training faces
    come without files (``data.synth.store: memory``), so that an empty file list is no error."""
    if not cfg.roots and not extra_train and not in_memory:
        raise InputError("data.roots is empty: list at least one folder of HQ face images (or data.synth)")
    train, val = [], []
    val_from = {str(Path(r).resolve()) for r in (cfg.val_from or cfg.roots)}
    every = None
    if re.fullmatch(r"every-[1-9]\d*", cfg.val_rule):
        every = int(cfg.val_rule.split("-", 1)[1])
    elif cfg.val_rule not in ("ends-with-0", "none"):  # every-0 / every-x too (this runs for unvalidated configs)
        raise InputError(f"unknown data.val_rule {cfg.val_rule!r}; use ends-with-0, every-N (N >= 1) or none")
    for root in cfg.roots:
        r = Path(root)
        if not r.is_dir():
            raise InputError(f"data root not found: {r}")
        files = sorted(f for f in r.iterdir() if f.is_file() and is_image_file(f))
        holdout = str(r.resolve()) in val_from
        for i, f in enumerate(files):
            is_val = False
            if holdout and cfg.val_rule == "ends-with-0":
                is_val = is_held_out(f)
            elif holdout and every:
                is_val = i % every == 0
            if not is_val and cfg.exclude_held_out and is_held_out(f):
                continue  # a benchmark's held-out face: never trained on, whatever the validation rule
            (val if is_val else train).append(f)
    for root in cfg.val_roots:
        val.extend(sorted(f for f in Path(root).iterdir() if f.is_file() and is_image_file(f)))
    train.extend(extra_train)
    if not train and not in_memory:
        raise InputError("no training images found in data.roots")
    return train, val[: cfg.val_count] if cfg.val_count else val


def load_images(files: Sequence[Path], size: int, progress: bool = False) -> torch.Tensor:
    """Decode files into a uint8 tensor (N, 3, size, size); images are resized (area/bicubic) to ``size``."""
    import cv2
    from tqdm import tqdm

    out = torch.empty((len(files), 3, size, size), dtype=torch.uint8)
    for i, f in enumerate(tqdm(files, desc="loading images", disable=not progress, unit="img")):
        rgb = read_rgb(f)
        if rgb.shape[:2] != (size, size):
            interp = cv2.INTER_AREA if rgb.shape[0] > size else cv2.INTER_CUBIC
            rgb = cv2.resize(rgb, (size, size), interpolation=interp)
        out[i] = torch.from_numpy(np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8).transpose(2, 0, 1))
    return out


def step_seed(seed: int, step: int, rank: int, stream: int = 0) -> int:
    """A 62-bit seed for (seed, step, rank, stream), stable across runs and platforms."""
    rng = np.random.SeedSequence([int(seed), int(step), int(rank), int(stream)])
    return int(rng.generate_state(1, dtype=np.uint64)[0] >> np.uint64(2))


class StepSampler:
    """Indices of the batch of global step ``step`` on ``rank`` (drop-last epochs, disjoint rank slices)."""

    def __init__(self, n: int, batch_size: int, world_size: int = 1, rank: int = 0, seed: int = 0) -> None:
        self.n, self.batch, self.world, self.rank, self.seed = n, batch_size, world_size, rank, seed
        self.steps_per_epoch = n // (batch_size * world_size)
        if self.steps_per_epoch == 0:
            raise InputError(f"{n} training images are fewer than one global batch ({batch_size} x {world_size})")
        self._epoch, self._perm = -1, None

    def indices(self, step: int) -> torch.Tensor:
        epoch, offset = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
            self._perm, self._epoch = torch.randperm(self.n, generator=g), epoch
        start = (offset * self.world + self.rank) * self.batch
        return self._perm[start : start + self.batch]


def make_pair(
    hq_uint8: torch.Tensor,
    cfg: DataConfig,
    generator: torch.Generator,
    device: torch.device | str,
    hflip: bool | None = None,
    clean_p: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(lq, hq) float batches in [0, 1] on ``device``: optional h-flip, then the configured degradation.

    ``hflip`` and ``clean_p`` override the config's (validation passes ``False`` and ``0``): each sample is
    left undegraded (lq is hq) with probability ``clean_p``.

    LQ outputs smaller than HQ (super-resolution tasks) are resized back bicubically, so restorers always
    map a crop to a crop of the same size.
    """
    from facerestore import degrade

    hq = hq_uint8.to(device).float().div_(255.0)
    if cfg.hflip if hflip is None else hflip:
        flip = torch.rand(hq.shape[0], generator=generator) < 0.5
        hq = torch.where(flip.to(device)[:, None, None, None], hq.flip(-1), hq)
    if cfg.task == "none":
        return hq, hq
    lq, _ = degrade.apply(hq, cfg.task, level=cfg.level, generator=generator)
    if lq.shape[-2:] != hq.shape[-2:]:
        lq = F.interpolate(lq, size=hq.shape[-2:], mode="bicubic", align_corners=False)
    lq = lq.clamp_(0, 1)
    p_clean = cfg.clean_p if clean_p is None else clean_p
    if p_clean > 0:
        clean = (torch.rand(hq.shape[0], generator=generator) < p_clean).to(device)[:, None, None, None]
        lq = torch.where(clean, hq, lq)
    return lq, hq
