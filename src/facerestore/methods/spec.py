"""``MethodSpec``: everything the package knows about a restoration method, declared once in its folder.

Each method class carries its spec as the class attribute ``spec`` (``methods/<method>/restorer.py``); the
static list in :mod:`facerestore.methods.registry` names the classes. Every field is read by something:

==================  =====================================================================================
field               read by
==================  =====================================================================================
name, paper,        the registry (lookup), ``facerestore restore --list-methods``, output JSON
description
size                :meth:`Restorer.restore` (crops are resized to ``size`` x ``size`` for the network)
output              :meth:`Restorer.restore`: "input" = the result has the input's size (resized back);
                    "model" = the result is the model's own ``size`` image (StyleGAN generators)
min_side            :func:`check_images` inside :meth:`Restorer.restore`
supports_fidelity,  :meth:`Restorer.check_options` (one place for both checks)
needs_refs
uses_refs           ``facerestore restore --list-methods``: the method uses reference photos when given (``refs=``,
                    ``--refs DIR``) without needing them; ``needs_refs`` implies it
precisions          :meth:`Restorer.set_half` ("fp16" on CUDA/MPS, "bf16" on CPU must be listed)
unsupervised        :meth:`Restorer.restore` (optimisation needs autograd) and the method list (slow)
weights             :meth:`Restorer.default_weights` ("builtin:FILE" or a zoo entry, or several in order of
                    preference: the first one available; None = user must pass)
weights_licence     the method list and every output JSON (non-commercial weights are said so)
trainer             :func:`facerestore.methods.registry.training_adapter` (``method: NAME`` in a config)
trained_on          the method list and output JSON: degradation tasks the default weights were trained on
note                ``facerestore restore`` prints it once when the default weights are used
==================  =====================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from facerestore.nn.devices import half_dtype, precision_name

__all__ = ["MethodSpec"]


@dataclass(frozen=True)
class MethodSpec:
    """Metadata of a restoration method (see the module docstring for who reads each field).

    size: side (px) of the square face images the network works at; ``output``: "input" or "model".
    precisions: supported parameter precisions, a subset of ("fp32", "fp16", "bf16").
    weights: default weights, "builtin:FILE" (shipped in ``facerestore/zoo/builtin``) or a zoo entry name; a tuple
        lists them in order of preference (the first available is used, a fallback is announced).
    trainer: the training adapter class (``facerestore.train.adapter.TrainAdapter``) or None.
    size_label: what listings say of the size when it depends on the weights (the prior's resolution), else
        None ("<size>px").
    """

    name: str
    paper: str  # "000".."004" (../shared/papers numbering) or "ours" (a method of this project, not of a paper)
    description: str
    size: int
    output: Literal["input", "model"] = "input"
    min_side: int = 1
    supports_fidelity: bool = False
    needs_refs: bool = False
    uses_refs: bool = False
    precisions: tuple[str, ...] = ("fp32",)
    unsupervised: bool = False
    weights: str | tuple[str, ...] | None = None
    weights_licence: str = "none shipped"
    trainer: Any = None
    trained_on: tuple[str, ...] = ()
    note: str | None = None
    size_label: str | None = None

    def __post_init__(self) -> None:
        if self.output not in ("input", "model"):
            raise ValueError(f"spec {self.name!r}: output must be 'input' or 'model', got {self.output!r}")
        bad = set(self.precisions) - {"fp32", "fp16", "bf16"}
        if bad or "fp32" not in self.precisions:
            raise ValueError(f"spec {self.name!r}: precisions must include fp32 and be among fp32/fp16/bf16")
        if int(self.size) != self.size or self.size < 1:
            raise ValueError(f"spec {self.name!r}: size must be a positive integer, got {self.size}")

    def supports_half(self, device: Any) -> bool:
        """Whether the precision that ``half`` means on ``device`` (bf16 on a CPU, fp16 on CUDA/MPS:
        :func:`facerestore.nn.devices.half_dtype`) is among ``precisions``."""
        return precision_name(half_dtype(device)) in self.precisions

    @property
    def origin(self) -> str:
        """Where the method comes from, for listings: "paper 002", or "ours" for a method of this project."""
        return f"paper {self.paper}" if self.paper.isdigit() else self.paper

    def flags(self) -> list[str]:
        """Short tags for listings: size, fidelity, refs, reduced precisions, slow optimisation."""
        out = [self.size_label or f"{self.size}px"]
        if self.supports_fidelity:
            out.append("fidelity")
        if self.needs_refs:
            out.append("needs refs")
        elif self.uses_refs:
            out.append("refs")
        half = [p for p in self.precisions if p != "fp32"]
        if half:
            out.append("/".join(half))
        if self.unsupervised:
            out.append("slow (optimisation)")
        return out
