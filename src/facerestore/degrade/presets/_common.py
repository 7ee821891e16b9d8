"""Task metadata and the op-record builders shared by the presets.

A sample's record is ``{"task", "level", "input_size", "ops": [...]}`` (plus ``"order"`` when the paper
applies its degradations in random order). Each op is a JSON-serialisable dict ``{"op": NAME, ...}`` that
holds every value drawn for it and the integer ``seed`` of its random field; :mod:`..tasks` maps NAME to
the primitive that runs it and to its differentiable surrogate. An optional ``"surrogate"`` key overrides
the default surrogate of the op (e.g. ``"avgpool"`` or ``"identity"``, as a paper prescribes).
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from facerestore.degrade._random import choice, draw_seed, randint, uniform

LEVELS = ("XS", "S", "M", "L", "XL")

Op = dict[str, Any]
# sampler(generator, height, width, level) -> {"ops": [...], optional "order": [...]}
Sampler = Callable[[torch.Generator, int, int, "str | None"], dict[str, Any]]


@dataclass(frozen=True)
class TaskInfo:
    """One named degradation task.

    Attributes:
        name: registry name (``facerestore degrade --task NAME``).
        paper: where the task comes from, e.g. "002 robust unsupervised (§5.1)".
        description: one line: what is applied, with its parameter ranges.
        levels: level names ("XS".."XL") or () for tasks without levels.
        default_level: the level used when none is given.
        source: where the numbers come from: "paper", "code" (the authors' release), "paper+code" (paper
            where it states values, code elsewhere) or "cited" (works the paper cites for its model).
        surrogate: how ``surrogate()`` builds f_hat ("paper: ..." when the paper defines it).
        output: "input size" or how the output size relates to the input.
        sampler: draws one sample's ops (internal).
    """

    name: str
    paper: str
    description: str
    levels: tuple[str, ...] = ()
    default_level: str | None = None
    source: str = "paper"
    surrogate: str = "engine: exact differentiable ops, recorded noise, DiffJPEG, straight-through rounding"
    output: str = "input size"
    sampler: Sampler = field(default=None, repr=False, compare=False)  # type: ignore[assignment]


# ----------------------------------------------------------------------------------------------- kernel cache
# random_kernel() returns the kernel it drew; keeping it saves rebuilding it when the op runs.

_KERNELS: OrderedDict[str, torch.Tensor] = OrderedDict()
_KERNELS_MAX = 256


def kernel_key(spec: dict[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True)


def remember_kernel(spec: dict[str, Any], kernel: torch.Tensor) -> None:
    _KERNELS[kernel_key(spec)] = kernel
    while len(_KERNELS) > _KERNELS_MAX:
        _KERNELS.popitem(last=False)


def cached_kernel(spec: dict[str, Any]) -> torch.Tensor | None:
    return _KERNELS.get(kernel_key(spec))


# ----------------------------------------------------------------------------------------------- op builders


def resize_op(size: tuple[int, int], method: str, antialias: bool = True, **extra: Any) -> Op:
    return {"op": "resize", "size": [int(size[0]), int(size[1])], "method": method, "antialias": bool(antialias),
            **extra}


def down_up_ops(h: int, w: int, lr: tuple[int, int], method: str, antialias: bool = True,
                back_method: str | None = None) -> list[Op]:
    """Downsample to ``lr`` then back to (h, w) (the same-size SR inputs of supervised restorers)."""
    return [resize_op(lr, method, antialias), resize_op((h, w), back_method or method, antialias)]


def gaussian_kernel_op(sigma: float, size: int, **extra: Any) -> Op:
    kernel = {"kind": "iso", "size": int(size), "sigma_x": float(sigma), "sigma_y": float(sigma), "theta": 0.0,
              "beta": 1.0}
    return {"op": "blur", "kernel": kernel, **extra}


def motion_kernel_op(size: int, length: float, angle: float, **extra: Any) -> Op:
    kernel = {"kind": "motion", "size": int(size), "length": float(length), "angle": float(angle)}
    return {"op": "blur", "kernel": kernel, **extra}


def gaussian_noise_op(g: torch.Generator, sigma: float, **extra: Any) -> Op:
    """Colour (per-channel) Gaussian noise; ``sigma`` in [0, 1] units."""
    return {"op": "gaussian_noise", "sigma": float(sigma), "gray": False, "seed": draw_seed(g), **extra}


def jpeg_op(quality: int, subsampling: str = "4:2:0", **extra: Any) -> Op:
    return {"op": "jpeg", "quality": int(quality), "subsampling": subsampling, **extra}


def lr_size(h: int, w: int, scale: float) -> tuple[int, int]:
    """BasicSR's ``int(w // scale)``: the floor of size / scale, at least one pixel."""
    return max(1, int(h // scale)), max(1, int(w // scale))


def round_size(h: int, w: int, factor: float) -> tuple[int, int]:
    """round(size * factor) with halves up (imgaug / PIL-style relative resizes), at least one pixel."""
    return max(1, math.floor(h * factor + 0.5)), max(1, math.floor(w * factor + 0.5))


def odd(n: float) -> int:
    """The odd integer nearest to n (ties up), at least 1."""
    return max(1, 2 * math.floor(n / 2) + 1)


def permutation(g: torch.Generator, n: int) -> list[int]:
    return [int(i) for i in torch.randperm(n, generator=g)]


__all__ = [
    "LEVELS",
    "Op",
    "Sampler",
    "TaskInfo",
    "cached_kernel",
    "choice",
    "down_up_ops",
    "draw_seed",
    "gaussian_kernel_op",
    "gaussian_noise_op",
    "jpeg_op",
    "kernel_key",
    "lr_size",
    "motion_kernel_op",
    "odd",
    "permutation",
    "randint",
    "remember_kernel",
    "resize_op",
    "round_size",
    "uniform",
]
