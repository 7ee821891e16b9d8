"""Base classes of all metrics."""

from __future__ import annotations

import torch
from torch import nn


class Metric(nn.Module):
    """A per-image metric: ``forward(pred, target=None) -> (B,)`` scores.

    Inputs are (B, 3, H, W) tensors in [0, 1]. Scores are float tensors on the input's device; NaN
    marks an image where the metric is undefined (e.g. no face found), never a silent drop.
    Class attributes are overwritten from the registry's MetricSpec by ``create``.
    """

    name: str = ""
    lower_better: bool = True
    needs_reference: bool = True
    score_range: tuple[float, float] = (0.0, float("inf"))

    def forward(self, pred: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def check_inputs(self, pred: torch.Tensor, target: torch.Tensor | None) -> None:
        from facerestore.errors import InputError

        if pred.dim() != 4 or pred.shape[1] != 3:
            raise InputError(f"{self.name}: expected (B, 3, H, W) images, got shape {tuple(pred.shape)}")
        for what, t in (("prediction", pred), ("reference", target)):
            # integer images are 0-255 (or 0-65535): scored as if in [0, 1] they gave a PSNR of -40 dB
            if t is not None and not t.is_floating_point():
                raise InputError(f"{self.name}: the {what} is {t.dtype}; metrics take float images in [0, 1] "
                                 "(divide 8-bit data by 255)")
        if self.needs_reference:
            if target is None:
                raise InputError(f"{self.name} needs a reference image (--gt)")
            if target.shape != pred.shape:
                raise InputError(
                    f"{self.name}: prediction {tuple(pred.shape)} and reference {tuple(target.shape)} differ in size"
                )


class DistributionMetric(Metric):
    """A metric over two sets of images (FID, KID, patch-FID): update() batches, then compute()."""

    def update(self, pred: torch.Tensor, target: torch.Tensor | None = None) -> None:
        raise NotImplementedError

    def compute(self) -> float:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def forward(self, pred: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        raise TypeError(f"{self.name} is a distribution metric: use update(...) then compute()")
