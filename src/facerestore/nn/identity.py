"""Distances between face-identity embeddings, as differentiable torch functions.

The embeddings are those of dlib's 128-d face recogniser (:mod:`facerestore.nn.backbones.dlib_resnet`), whose
metric is the Euclidean distance (same person below about 0.6). Shared by the training identity loss
(``train.losses.IdentityLoss``: each prediction against its own target) and the reference-guided methods
(robust-inversion, rls, rls-plus, prior-sft: each prediction against the mean of a fixed set of reference embeddings).
"""

from __future__ import annotations

import torch

__all__ = ["embedding_distance", "reference_distance"]


def embedding_distance(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) Euclidean distances between (B, D) embeddings ``pred`` and ``target`` ((B, D) row by row, or one (D,)
    embedding for every row); differentiable in both."""
    if pred.ndim != 2 or target.shape[-1] != pred.shape[-1] or target.ndim not in (1, 2):
        raise ValueError(f"embeddings must be (B, D) against (B, D) or (D,), got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    return (pred - target).norm(dim=1)


def reference_distance(pred: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
    """(B,) Euclidean distance of each (B, D) embedding to the mean of the (R, D) reference embeddings ``refs`` (the
    references' centre: several photos of one person average out pose, light and expression)."""
    if refs.ndim != 2 or refs.shape[0] < 1:
        raise ValueError(f"reference embeddings must be (R, D) with R >= 1, got {tuple(refs.shape)}")
    return embedding_distance(pred, refs.mean(dim=0))
