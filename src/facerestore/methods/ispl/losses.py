"""ISPL / HiFaceGAN training losses: LSGAN, feature matching, perceptual, pixel.

Facts from the authors' code (Face-Renovation, SPADE's pix2pix model):
- LSGAN: MSE of each scale's patch logits to 1 (real) / 0 (fake), averaged over scales.
- Feature matching: L1 between D's intermediate outputs for fake and (detached) real, every layer
  but the last of every scale, each weighted ``lambda_fm / num_D`` (lambda_fm = 10).
- Perceptual: L1 between VGG19 features at relu1_1 .. relu5_1 with weights 1/32, 1/16, 1/8, 1/4, 1,
  times lambda_vgg = 10; images enter VGG in [0, 1] *without* ImageNet normalisation.
- The authors use no pixel loss; ``pixel_loss`` (L1/L2) is offered for distortion-oriented training.

Perceptual backbone choice (never silent): ``backbone="vgg19"`` (default, as upstream) needs the zoo
weights "vgg19-imagenet" in the cache and raises WeightsMissingError otherwise; "vgg16" (zoo
"vgg16-imagenet", same layer names) is a documented substitute; "none" disables the term (a warning
is logged and the loss is 0); any ``nn.Module`` mapping (B, 3, H, W) in [0, 1] to a list (or dict) of
feature maps can be passed, e.g. a face-identity network, with matching ``layer_weights``. The choice
is logged when the module is built.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from facerestore.errors import WeightsMissingError

__all__ = [
    "FEATURE_NORMS",
    "VGG_LAYERS",
    "VGG_LAYER_WEIGHTS",
    "FeatureMatchingLoss",
    "LSGANLoss",
    "PerceptualLoss",
    "PixelLoss",
    "discriminator_losses",
    "feature_matching_loss",
    "generator_losses",
    "lsgan_loss",
    "perceptual_distance",
    "pixel_loss",
]

log = logging.getLogger(__name__)

VGG_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
VGG_LAYER_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)

Preds = torch.Tensor | Sequence[torch.Tensor] | Sequence[Sequence[torch.Tensor]]


def _final_logits(preds: Preds) -> list[torch.Tensor]:
    """Patch logits of each scale: a tensor, a list of tensors, or a list (scales) of lists (layers)."""
    if isinstance(preds, torch.Tensor):
        return [preds]
    return [p[-1] if not isinstance(p, torch.Tensor) else p for p in preds]


def lsgan_loss(preds: Preds, target_is_real: bool) -> torch.Tensor:
    """Least-squares GAN loss: mean over scales of mean((logits - t)^2), t = 1 (real) or 0 (fake)."""
    logits = _final_logits(preds)
    target = 1.0 if target_is_real else 0.0
    return sum(F.mse_loss(p, torch.full_like(p, target)) for p in logits) / len(logits)


FEATURE_NORMS = ("l2", "l1")  # paper 000 eq. 12: 1/(HWC) ||.||_2^2 (mean square); the released code: mean |.|


def _feature_distance(a: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "l2":
        return F.mse_loss(a, b)
    if norm == "l1":
        return F.l1_loss(a, b)
    raise ValueError(f"feature norm must be one of {', '.join(FEATURE_NORMS)}, got {norm!r}")


def feature_matching_loss(
    fake: Sequence[Sequence[torch.Tensor]], real: Sequence[Sequence[torch.Tensor]], weight: float = 10.0,
    norm: str = "l1",
) -> torch.Tensor:
    """sum over scales i and layers j < last of d(fake[i][j], real[i][j].detach()) * weight / num_scales, d the mean
    absolute ("l1", the released code) or mean squared ("l2", paper 000 eq. 12) difference."""
    if len(fake) != len(real):
        raise ValueError("fake and real must come from the same discriminator")
    total = fake[0][0].new_zeros(())
    for f_scale, r_scale in zip(fake, real):
        for f, r in zip(f_scale[:-1], r_scale[:-1]):
            total = total + _feature_distance(f, r.detach(), norm)
    return total * (weight / len(fake))


def perceptual_distance(
    feats_x: Sequence[torch.Tensor], feats_y: Sequence[torch.Tensor], layer_weights: Sequence[float],
    norm: str = "l1",
) -> torch.Tensor:
    """sum_l w_l * d(phi_l(x), phi_l(y)) (phi(y) detached: y is the target), d as in :func:`feature_matching_loss`."""
    if not (len(feats_x) == len(feats_y) == len(layer_weights)):
        raise ValueError("features and layer_weights must have the same length")
    return sum(w * _feature_distance(a, b.detach(), norm) for w, a, b in zip(layer_weights, feats_x, feats_y))


def pixel_loss(x: torch.Tensor, y: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Mean absolute ("l1") or squared ("l2") error between images."""
    if kind == "l1":
        return F.l1_loss(x, y)
    if kind == "l2":
        return F.mse_loss(x, y)
    raise ValueError(f"pixel loss kind must be 'l1' or 'l2', got {kind!r}")


class LSGANLoss(nn.Module):
    """Module form of ``lsgan_loss``: ``forward(preds, target_is_real)``."""

    def forward(self, preds: Preds, target_is_real: bool) -> torch.Tensor:
        return lsgan_loss(preds, target_is_real)


class FeatureMatchingLoss(nn.Module):
    """Module form of ``feature_matching_loss`` with ``weight`` (10 upstream)."""

    def __init__(self, weight: float = 10.0) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, fake: Sequence[Sequence[torch.Tensor]], real: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
        return feature_matching_loss(fake, real, self.weight)


class PixelLoss(nn.Module):
    """``weight * pixel_loss(x, y, kind)``."""

    def __init__(self, kind: str = "l1", weight: float = 1.0) -> None:
        super().__init__()
        pixel_loss(torch.zeros(1), torch.zeros(1), kind)  # validate kind early
        self.kind, self.weight = kind, weight

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.weight * pixel_loss(x, y, self.kind)


class PerceptualLoss(nn.Module):
    """``weight * sum_l w_l * L1(phi_l(x), phi_l(y))`` for images in [0, 1] (see module docstring).

    Args:
        backbone: "vgg19" (default; zoo "vgg19-imagenet"), "vgg16" (zoo "vgg16-imagenet"), "none",
            or an ``nn.Module`` returning a list/dict of features (frozen here).
        layers: VGG layer names (default relu1_1 .. relu5_1); ignored for a custom module.
        layer_weights: per-layer weights (default 1/32, 1/16, 1/8, 1/4, 1).
        weight: overall factor (lambda_vgg = 10 upstream).
        weights_path: explicit VGG checkpoint (torchvision layout) instead of the zoo file.
        imagenet_normalize: normalise inputs for VGG (False upstream).
    """

    def __init__(
        self,
        backbone: str | nn.Module = "vgg19",
        layers: Sequence[str] = VGG_LAYERS,
        layer_weights: Sequence[float] = VGG_LAYER_WEIGHTS,
        weight: float = 10.0,
        weights_path: str | os.PathLike | None = None,
        imagenet_normalize: bool = False,
        norm: str = "l1",
    ) -> None:
        super().__init__()
        if norm not in FEATURE_NORMS:
            raise ValueError(f"feature norm must be one of {', '.join(FEATURE_NORMS)}, got {norm!r}")
        self.norm = norm
        self.layer_weights = tuple(float(w) for w in layer_weights)
        self.weight = weight
        self.layers = tuple(layers)
        self.net: nn.Module | None
        if isinstance(backbone, nn.Module):
            self.backbone_name = type(backbone).__name__
            self.net = backbone.eval()
            for p in self.net.parameters():
                p.requires_grad_(False)
            log.info("perceptual loss: custom backbone %s (weights %s)", self.backbone_name, self.layer_weights)
        elif backbone == "none":
            self.backbone_name, self.net = "none", None
            log.warning("perceptual loss disabled (backbone='none'): it contributes 0 to the objective")
        elif backbone in ("vgg19", "vgg16"):
            if len(self.layers) != len(self.layer_weights):
                raise ValueError("layers and layer_weights must have the same length")
            self.backbone_name = backbone
            self.net = _build_vgg(int(backbone[3:]), self.layers, weights_path, imagenet_normalize)
            log.info("perceptual loss: %s at %s, weights %s", backbone, ",".join(self.layers), self.layer_weights)
        else:
            raise ValueError(f"unknown perceptual backbone {backbone!r}; use 'vgg19', 'vgg16', 'none' or a module")

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        if self.net is not None:
            self.net.eval()  # the feature extractor is frozen in every mode
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        assert self.net is not None
        out = self.net(x)
        if isinstance(out, dict):
            keys = self.layers if all(k in out for k in self.layers) else list(out)
            out = [out[k] for k in keys]
        elif isinstance(out, torch.Tensor):
            out = [out]
        return list(out)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.net is None:
            return x.new_zeros(())
        fx = self.features(x)
        with torch.no_grad():
            fy = self.features(y)
        if len(fx) != len(self.layer_weights):
            raise ValueError(f"backbone gave {len(fx)} feature maps but {len(self.layer_weights)} layer weights")
        return self.weight * perceptual_distance(fx, fy, self.layer_weights, self.norm)


def _build_vgg(depth: int, layers: Sequence[str], weights_path, imagenet_normalize: bool) -> nn.Module:
    name = f"vgg{depth}-imagenet"
    from facerestore.nn.backbones.vgg import VGGFeatures  # lazy: optional heavy dependency

    try:
        return VGGFeatures(layers=layers, depth=depth, weights=weights_path, normalize=imagenet_normalize)
    except (WeightsMissingError, KeyError, FileNotFoundError) as exc:
        raise WeightsMissingError(
            f"perceptual loss backbone 'vgg{depth}' needs zoo weights '{name}', which are not available "
            f"(run `facerestore models download {name}`, pass weights_path=, or choose backbone='none' explicitly)"
        ) from exc


def generator_losses(
    pred_fake: Sequence[Sequence[torch.Tensor]],
    pred_real: Sequence[Sequence[torch.Tensor]],
    fake: torch.Tensor | None = None,
    real: torch.Tensor | None = None,
    perceptual: PerceptualLoss | None = None,
    lambda_fm: float = 10.0,
    pixel: PixelLoss | None = None,
) -> dict[str, torch.Tensor]:
    """Generator terms as upstream: {"gan", "fm", optional "perceptual", "pixel", "total"}."""
    terms = {"gan": lsgan_loss(pred_fake, True), "fm": feature_matching_loss(pred_fake, pred_real, lambda_fm)}
    if perceptual is not None and fake is not None and real is not None:
        terms["perceptual"] = perceptual(fake, real)
    if pixel is not None and fake is not None and real is not None:
        terms["pixel"] = pixel(fake, real)
    terms["total"] = sum(terms.values())
    return terms


def discriminator_losses(pred_fake: Preds, pred_real: Preds) -> dict[str, torch.Tensor]:
    """Discriminator terms: {"fake": LSGAN to 0, "real": LSGAN to 1, "total"}."""
    terms = {"fake": lsgan_loss(pred_fake, False), "real": lsgan_loss(pred_real, True)}
    terms["total"] = terms["fake"] + terms["real"]
    return terms
