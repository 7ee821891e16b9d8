"""Eq. 9: ``L = ||I_hat - I_HQ||_1 + lambda_per * ||phi(I_hat) - phi(I_HQ)||_1`` on every iteration's output.

phi, never chosen silently (the choice is logged, and a substitute is announced by a warning):

- "vgg19": ImageNet VGG19 at conv5_4 on ImageNet-normalised inputs (what the released code uses; the paper only
  says "pretrained VGG-19"); needs the zoo entry ``vgg19-imagenet`` in the cache (WeightsMissingError
  otherwise: ``facerestore models download vgg19-imagenet``);
- "identity": the stated substitute when no VGG19 weights exist here: the distance between the 128-d
  embeddings of dlib's face recogniser (``train.losses.IdentityLoss``, template chip of FFHQ-aligned crops).
  It is a face-identity feature, not an ImageNet texture feature: it constrains who the face is, not how
  sharp its texture is, and a model trained with it is favoured by the FED metric (same network);
- "auto": "vgg19" when its weights are cached, else "identity" (with a warning);
- "none": L1 only (logged).

``weight`` is lambda_per: 0.001 in the paper (section 4.2); the released code uses 0.005.
"""

from __future__ import annotations

import logging
import warnings

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PERCEPTUAL_CHOICES", "RestorationLoss"]

log = logging.getLogger(__name__)
PERCEPTUAL_CHOICES = ("auto", "vgg19", "identity", "none")


class RestorationLoss(nn.Module):
    """``forward(outputs, target)``: the sum of eq. 9 over the outputs (a tensor or the list of iterations);
    ``last`` holds the terms of the latest call (floats) for logging."""

    def __init__(self, perceptual: str = "auto", weight: float = 0.001) -> None:
        super().__init__()
        if perceptual not in PERCEPTUAL_CHOICES:
            raise ValueError(f"perceptual must be one of {', '.join(PERCEPTUAL_CHOICES)}, got {perceptual!r}")
        if perceptual == "auto":
            from facerestore import zoo

            perceptual = "vgg19" if zoo.is_available("vgg19-imagenet") else "identity"
            if perceptual == "identity":
                warnings.warn("mfpsnet loss: VGG19 weights are not in the cache; the perceptual term uses dlib "
                              "face-recogniser embeddings instead (`facerestore models download vgg19-imagenet` "
                              "for the paper's VGG19)", stacklevel=2)
        self.kind, self.weight = perceptual, float(weight)
        self.net: nn.Module | None = None
        if perceptual == "vgg19":
            from facerestore.methods.ispl.losses import PerceptualLoss

            self.net = PerceptualLoss("vgg19", layers=("conv5_4",), layer_weights=(1.0,), weight=1.0,
                                      imagenet_normalize=True)
        elif perceptual == "identity":
            from facerestore.train.losses import IdentityLoss

            self.net = IdentityLoss(1.0, chip="template")
        log.info("mfpsnet loss: L1 + %g x perceptual (%s)", self.weight, self.kind)
        self.last: dict[str, float] = {}

    def forward(self, outputs: torch.Tensor | list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        outs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
        l1 = sum(F.l1_loss(o, target) for o in outs)
        total = l1
        per = None
        if self.net is not None and self.weight > 0:
            per = sum(self.net(o, target) for o in outs)
            total = total + self.weight * per
        self.last = {"l1": float(l1.detach()), "perceptual": float(per.detach()) if per is not None else 0.0,
                     "loss": float(total.detach())}
        return total
