"""The static list of restoration methods: one line per method class (its ``spec`` says the rest).

    >>> from facerestore.methods import registry
    >>> [s.name for s in registry.REGISTRY.specs()]
    >>> r = registry.load_restorer("ispl", device="cpu", half=False)

A new method is a folder ``methods/<name>/`` whose restorer class carries a
:class:`~facerestore.methods.spec.MethodSpec`, plus one line in ``RESTORERS`` below. Nothing is discovered
by scanning. :meth:`Registry.with_restorer` returns a copy with one more method (tests, plug-ins) without
touching the package's list.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from facerestore.errors import InputError, did_you_mean, quiet_warnings
from facerestore.methods.honestface.restorer import HonestFaceRestorer
from facerestore.methods.inversion.restorer import RobustInversionRestorer
from facerestore.methods.ispl.restorer import HiFaceGANRestorer, ISPLRestorer
from facerestore.methods.mfpsnet.restorer import MFPSNetRestorer
from facerestore.methods.prior_sft.restorer import PriorSFTRestorer
from facerestore.methods.restorer import Restorer
from facerestore.methods.rls.restorer import RLSPlusRestorer, RLSRestorer
from facerestore.methods.spec import MethodSpec
from facerestore.nn.devices import resolve_device
from facerestore.train.adapter import TrainAdapter
from facerestore.train.config import TrainConfig
from facerestore.train.trainer import FRAMEWORK_ADAPTERS, AdapterFactory

__all__ = ["REGISTRY", "RESTORERS", "Registry", "create_adapter", "get_spec", "list_restorers", "load_restorer",
           "training_adapter"]

# one line per method
RESTORERS: tuple[type[Restorer], ...] = (
    ISPLRestorer,
    HiFaceGANRestorer,
    RobustInversionRestorer,
    RLSRestorer,
    RLSPlusRestorer,
    MFPSNetRestorer,
    HonestFaceRestorer,
    PriorSFTRestorer,
)

class Registry:
    """Method name -> restorer class, built from a fixed list (no global mutation)."""

    def __init__(self, restorers: Iterable[type[Restorer]]) -> None:
        self._classes: dict[str, type[Restorer]] = {}
        for cls in restorers:
            spec = getattr(cls, "spec", None)
            if not isinstance(spec, MethodSpec):
                raise TypeError(f"{cls.__name__} has no MethodSpec as its 'spec' attribute")
            if spec.name in self._classes:
                raise ValueError(f"duplicate restorer {spec.name!r}")
            self._classes[spec.name] = cls

    def with_restorer(self, cls: type[Restorer]) -> Registry:
        """A copy of this registry with one more method."""
        return Registry([*self._classes.values(), cls])

    def names(self) -> list[str]:
        return list(self._classes)

    def specs(self) -> list[MethodSpec]:
        """The spec of every method, in list order."""
        return [cls.spec for cls in self._classes.values()]

    def restorer_class(self, name: str) -> type[Restorer]:
        try:
            return self._classes[name]
        except KeyError:
            raise InputError(f"unknown method {name!r}{did_you_mean(name, self._classes)}; available: "
                             f"{', '.join(self._classes)}") from None

    def get(self, name: str) -> MethodSpec:
        """The spec of method ``name`` (one-line InputError naming the available ones)."""
        return self.restorer_class(name).spec

    def load(self, name: str, *, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu",
             half: bool = False, **options: Any) -> Restorer:
        """Build method ``name`` with its default (or the given) weights, on ``device`` ("auto" allowed), in
        eval mode; ``half`` selects reduced precision as :meth:`Restorer.set_half` defines it."""
        cls = self.restorer_class(name)
        restorer = cls(weights=weights, **options).to(resolve_device(device)).eval()
        if weights is not None:
            restorer.weights_used = os.fspath(weights)
        else:
            with quiet_warnings():  # the constructor already said which default it fell back to
                default = cls.default_weights()
            restorer.weights_used = None if default is None else _reference(default)
        if half:
            restorer.set_half(True)
        return restorer

    def training_adapter(self, method: str) -> AdapterFactory:
        """The training adapter of ``method: NAME`` in a training config: a method's ``spec.trainer``, or one
        of the framework's own (``unet-l1`` baseline, ``stylegan2`` prior)."""
        cls = self._classes.get(method)
        if cls is not None and cls.spec.trainer is not None:
            return cls.spec.trainer
        if method in FRAMEWORK_ADAPTERS:
            return FRAMEWORK_ADAPTERS[method]
        known = sorted({*FRAMEWORK_ADAPTERS, *(c.spec.name for c in self._classes.values() if c.spec.trainer)})
        raise InputError(f"unknown training method {method!r}; available: {', '.join(known)}")


def _reference(weights: str | os.PathLike) -> str:
    """A default weights file as the records name it: ``builtin:FILE`` for files shipped with the package, a zoo
    entry's name as it is, a path otherwise."""
    from facerestore import zoo
    from facerestore.zoo.refs import BUILTIN_PREFIX

    p = Path(os.fspath(weights))
    try:
        return BUILTIN_PREFIX + p.resolve().relative_to(Path(zoo.BUILTIN_DIR).resolve()).as_posix()
    except ValueError:
        return os.fspath(weights)


REGISTRY = Registry(RESTORERS)


def list_restorers() -> list[MethodSpec]:
    """The spec of every registered method."""
    return REGISTRY.specs()


def get_spec(name: str) -> MethodSpec:
    """The spec of method ``name``."""
    return REGISTRY.get(name)


def load_restorer(name: str, *, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                  half: bool = False, **options: Any) -> Restorer:
    """Build method ``name`` (see :meth:`Registry.load`)."""
    return REGISTRY.load(name, weights=weights, device=device, half=half, **options)


def training_adapter(method: str) -> AdapterFactory:
    """The adapter factory for ``method: NAME`` (see :meth:`Registry.training_adapter`)."""
    return REGISTRY.training_adapter(method)


def create_adapter(cfg: TrainConfig, device: torch.device) -> TrainAdapter:
    """The training adapter of ``cfg.method`` built for ``cfg`` on ``device``."""
    return REGISTRY.training_adapter(cfg.method)(cfg, device)
