"""Restoration methods, one sub-package per paper, behind one ``Restorer`` interface.

    >>> import facerestore
    >>> facerestore.list_restorers()
    >>> r = facerestore.load_restorer("ispl", device="cpu")
    >>> out = r.restore(lq)        # (B, 3, S, S) aligned face crops in [0, 1]

The registry is a static table (no import-time scanning); a method's module is imported only when it
is loaded.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from facerestore.errors import InputError


@dataclass(frozen=True)
class RestorerInfo:
    """Metadata of a restoration method.

    input_size: side (px) of the aligned face crop the method works on; the pipeline aligns faces at this
    size (or resizes to it). supports_fidelity: accepts ``fidelity`` in [0, 1] (1 = closest to the input,
    0 = most realistic). needs_refs: needs reference photos of the same person.
    """

    name: str
    paper: str
    description: str
    factory: str  # "module:attribute" returning a Restorer
    input_size: int = 512
    supports_fidelity: bool = False
    needs_refs: bool = False
    supports_half: bool = False
    supports_bf16: bool = False
    unsupervised: bool = False  # optimisation-based (no trained restorer weights), slow per image
    default_weights: str | None = None  # built-in weight file or zoo entry
    extra: dict[str, Any] = field(default_factory=dict)


class Restorer(torch.nn.Module):
    """Base class: ``restore(lq, refs=None, fidelity=None) -> (B, 3, S, S)`` on aligned crops in [0, 1]."""

    info: RestorerInfo

    @torch.no_grad()
    def restore(
        self, lq: torch.Tensor, *, refs: torch.Tensor | None = None, fidelity: float | None = None
    ) -> torch.Tensor:
        raise NotImplementedError

    def check_fidelity(self, fidelity: float | None) -> None:
        if fidelity is None:
            return
        if not self.info.supports_fidelity:
            raise InputError(f"method {self.info.name!r} has no fidelity control; drop --fidelity")
        if not 0.0 <= float(fidelity) <= 1.0:
            raise InputError(f"fidelity must be in [0, 1], got {fidelity}")


def check_images(lq: Any, name: str, min_side: int = 1) -> None:
    """InputError (one line) unless ``lq`` is a (B, 3, H, W) tensor with H, W >= ``min_side``."""
    if not isinstance(lq, torch.Tensor) or lq.ndim != 4 or lq.shape[1] != 3:
        shape = tuple(lq.shape) if isinstance(lq, torch.Tensor) else type(lq).__name__
        raise InputError(f"{name} expects (B, 3, H, W) images in [0, 1], got {shape}")
    if lq.shape[-1] < min_side or lq.shape[-2] < min_side:
        raise InputError(f"{name}: face crop {lq.shape[-1]}x{lq.shape[-2]} is too small (need >= {min_side} px)")


def resize_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize (B, 3, H, W) images to ``size`` (area when shrinking, bicubic when enlarging; float32 math)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    xf = x.float()
    shrink = x.shape[-2] >= size[0] and x.shape[-1] >= size[1]
    if shrink:
        y = F.interpolate(xf, size=size, mode="area")
    else:
        y = F.interpolate(xf, size=size, mode="bicubic", align_corners=False)
    return y.clamp(0, 1).to(x.dtype)


# name -> info. Add a row when a method lands; the factory module is imported lazily.
_REGISTRY: dict[str, RestorerInfo] = {}


def register(info: RestorerInfo) -> RestorerInfo:
    if info.name in _REGISTRY:
        raise ValueError(f"duplicate restorer {info.name!r}")
    _REGISTRY[info.name] = info
    return info


def _ensure_table() -> None:
    if not _REGISTRY:
        from facerestore.methods import table  # noqa: F401  (declares the rows)


def list_restorers() -> list[RestorerInfo]:
    """Metadata of every registered method."""
    _ensure_table()
    return list(_REGISTRY.values())


def get_info(name: str) -> RestorerInfo:
    _ensure_table()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}; available: {', '.join(_REGISTRY) or 'none'}") from None


def load_restorer(
    name: str,
    *,
    weights: str | None = None,
    device: str | torch.device = "cpu",
    half: bool = False,
    **kwargs: Any,
) -> Restorer:
    """Build method ``name`` with its default (or given) weights on ``device``; ``half`` uses fp16."""
    info = get_info(name)
    modname, attr = info.factory.split(":")
    factory = getattr(importlib.import_module(modname), attr)
    restorer = factory(weights=weights, **kwargs)
    restorer = restorer.to(device).eval()
    if half:
        if not info.supports_half:
            raise InputError(f"method {name!r} does not support half precision")
        restorer = restorer.half()
    return restorer


__all__ = ["Restorer", "RestorerInfo", "get_info", "list_restorers", "load_restorer", "register"]
