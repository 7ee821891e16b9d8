"""Training losses shared by the methods.

``IdentityLoss``: distance between dlib face-recogniser embeddings (``nn.backbones.DlibFaceResNet``, the
FED metric's network, ported to PyTorch) of restored and ground-truth aligned faces. It is the offline
"identity features of a face network" substitute for the VGG perceptual term, in the spirit of GFPGAN's
ArcFace identity loss. Note: a model trained with it is then evaluated by FED with the same network, which
favours it over models trained without it; model cards say so.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facerestore.nn.identity import embedding_distance

__all__ = ["IdentityLoss", "affine_crop"]


def affine_crop(images: torch.Tensor, affine: torch.Tensor, out_size: int) -> torch.Tensor:
    """Differentiable crop (bilinear, zeros outside) of (B, C, H, W) ``images``.

    ``affine`` (2, 3), or (B, 2, 3) for one per image, maps output pixel (u, v, 1) to input pixel (x, y),
    pixel centres at integer coordinates (dlib's and OpenCV's convention). Returns (B, C, out_size, out_size).
    """
    b, _, h, w = images.shape
    coords = torch.arange(out_size, device=images.device, dtype=images.dtype)
    v, u = torch.meshgrid(coords, coords, indexing="ij")
    uv1 = torch.stack([u, v, torch.ones_like(u)], dim=-1)  # (S, S, 3)
    a = affine.to(images)
    xy = (uv1 @ a.t()).expand(b, -1, -1, -1) if a.dim() == 2 else torch.einsum("hwk,bjk->bhwj", uv1, a)
    grid = torch.stack([(2 * xy[..., 0] + 1) / w - 1, (2 * xy[..., 1] + 1) / h - 1], dim=-1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class IdentityLoss(nn.Module):
    """``weight * mean_b || E(chip(pred_b)) - E(chip(target_b)) ||_2`` for FFHQ-aligned face crops.

    ``pred``/``target``: (B, 3, S, S) RGB in [0, 1], aligned with the FFHQ 5-point template (the crops of
    ``faces.align.align_face`` and of the training data). The 150 px dlib chip is cut, for both images,
    where dlib's route would cut it for the target:

    - ``chip="target"`` (default): dlib's 5-point predictor runs on each target (about 1 ms, CPU, no
      gradient) and ``faces.identity.dlib_chip_affine`` gives the chip exactly as FED's route would;
    - ``chip="template"``: one fixed chip from the predictor's mean landmarks on FFHQ-aligned crops
      (``faces.identity.aligned_chip_affine``); no landmark detection, but embeddings differ from dlib's
      route by about 0.15 on average (same-person threshold 0.6).

    E: dlib's recogniser (frozen); target embeddings carry no gradient. The value is the mean FED between
    the two batches times ``weight`` (``nn.identity.embedding_distance``; ``nn.identity.reference_distance``
    measures predictions against a fixed set of references instead, as the reference-guided methods do).
    """

    def __init__(self, weight: float = 1.0, chip: str = "target", net: nn.Module | None = None) -> None:
        super().__init__()
        from facerestore.nn.backbones import freeze
        from facerestore.nn.backbones.dlib_resnet import DLIB_CHIP_SIZE, load_dlib_face_resnet

        if chip not in ("target", "template"):
            raise ValueError(f"chip must be 'target' or 'template', got {chip!r}")
        self.chip = chip
        self.weight = float(weight)
        self.chip_size = DLIB_CHIP_SIZE
        self.net = freeze(net if net is not None else load_dlib_face_resnet())
        self._affines: dict[int, torch.Tensor] = {}

    def train(self, mode: bool = True) -> IdentityLoss:
        super().train(mode)
        self.net.eval()  # frozen in every mode
        return self

    def chip_affines(self, faces: torch.Tensor) -> torch.Tensor:
        """(2, 3) template chip affine, or (B, 2, 3) per-face ones (``chip="target"``), for (B, 3, S, S) faces."""
        size = faces.shape[-1]
        if faces.shape[-2] != size:
            raise ValueError(f"aligned faces must be square, got {tuple(faces.shape[-2:])}")
        if self.chip == "template":
            if size not in self._affines:
                from facerestore.faces.identity import aligned_chip_affine

                self._affines[size] = torch.from_numpy(aligned_chip_affine(size, self.chip_size)).float()
            return self._affines[size]
        from facerestore.faces.detect import _dlib_rect, aligned_face_box
        from facerestore.faces.dlib_models import shape_predictor
        from facerestore.faces.identity import dlib_chip_affine

        predictor, rect = shape_predictor(5), _dlib_rect(aligned_face_box(size))
        imgs = (faces.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        out = []
        for img in imgs:
            shape = predictor(np.ascontiguousarray(img), rect)
            out.append(dlib_chip_affine(np.array([[p.x, p.y] for p in shape.parts()]), self.chip_size))
        return torch.from_numpy(np.stack(out)).float()

    def embed(self, faces: torch.Tensor, affines: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 128) embeddings of (B, 3, S, S) FFHQ-aligned faces in [0, 1] (chips from ``affines`` if given)."""
        a = self.chip_affines(faces) if affines is None else affines
        return self.net(affine_crop(faces, a, self.chip_size))

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        affines = self.chip_affines(target)
        with torch.no_grad():
            e_target = self.embed(target.float(), affines)
        e_pred = self.embed(pred.float(), affines)
        return self.weight * embedding_distance(e_pred, e_target).mean()
