"""HonestFace (paper 003) behind the ``Restorer`` interface: ``restore(lq, refs=None)``.

- Default weights: our compact model (``zoo/builtin/honestface-compact-128.safetensors``, fp16, model card
  ``honestface-compact-128.md``), 128 px FFHQ-aligned crops; ``weights="sd21-base"`` builds the SD 2.1-base
  backbone from the zoo (the released checkpoint, hash-checked, never downloaded here) with a fresh LoRA and
  prompt embedder: the structure of the paper's model, untrained (no HonestFace weights exist).
- ``refs``: (R, 3, S, S) aligned reference faces of the same person (the photo pipeline aligns any photos).
  Before restoring, the references are checked against the face: when the median dlib distance between the
  face's embedding and the references' exceeds ``REFS_MAX_DISTANCE`` the call is refused with one
  :class:`~facerestore.errors.InputError` line, unless ``force_refs=True`` (``--force-refs``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from facerestore.errors import WeightsMissingError
from facerestore.methods.restorer import REFS_MAX_DISTANCE, Restorer, check_refs_identity, refs_check_distance
from facerestore.methods.spec import MethodSpec

__all__ = ["BUILTIN_NAME", "REFS_MAX_DISTANCE", "HonestFaceRestorer", "builtin_weights", "check_refs_identity"]

BUILTIN_NAME = "honestface-compact-128"


def builtin_weights() -> Path:
    from facerestore.zoo import BUILTIN_DIR

    return Path(BUILTIN_DIR) / f"{BUILTIN_NAME}.safetensors"


class HonestFaceRestorer(Restorer):
    """HonestFace: one-step diffusion restoration guided by reference photos (see the module docstring)."""

    spec = MethodSpec(
        name="honestface",
        paper="003",
        description="HonestFace one-step diffusion (VAE -> UNet at t=399 with LoRA -> VAE) with a prompt from the "
        "LQ face (VQ embedder) and reference photos (eye features of the A-LD-nearest reference, attention-pooled "
        "dlib identities); compact 128 px model trained by us on a CPU (model card: "
        "zoo/builtin/honestface-compact-128.md); needs the [diffusion] extra",
        size=128,
        min_side=8,
        precisions=("fp32",),
        weights=f"builtin:{BUILTIN_NAME}.safetensors",
        weights_licence="Apache-2.0 (ours), trained on FFHQ (CC BY-NC-SA 4.0), ../shared/data/photos (MIT) and "
        "MobileStyleGAN samples (non-commercial): non-commercial use",
        trained_on=("realworld-gfpgan", "realworld-vqfr"),
        uses_refs=True,
        note="the built-in honestface weights are a compact 128 px model trained for 1.35 h on a CPU (model card "
             "zoo/builtin/honestface-compact-128.md): expect soft, warm-tinted faces; references barely change them",
    )

    checks_refs = True  # the photo pipeline passes force_refs= to methods that check their references

    def __init__(self, weights: str | os.PathLike | None = None, force_refs: bool = False) -> None:
        super().__init__()
        from facerestore.methods.honestface.backbone import require_diffusion
        from facerestore.methods.honestface.model import HonestFaceNet, load_honestface
        from facerestore.nn.backbones.dlib_resnet import load_dlib_face_resnet

        require_diffusion()
        dlib_net = load_dlib_face_resnet()
        w = self.weights_or_default(weights)
        if str(w) == "sd21-base":
            from facerestore.methods.honestface.backbone import SD21_BASE, load_sd21_base

            net = HonestFaceNet(SD21_BASE, features=dlib_net, backbone=load_sd21_base())
            self.with_spec(size=512)
        else:
            if w is None or not Path(w).is_file():
                raise WeightsMissingError(f"HonestFace weights not found: {w}")
            net = load_honestface(w, features=dlib_net)
            self.with_spec(size=net.config.size)
        self.net = net.eval()
        self.force_refs = bool(force_refs)
        self.last_refs_distance: float | None = None
        self.last_r0: list[int] | None = None
        self._refset: tuple[Any, Any] | None = None  # (refs tensor, ReferenceSet) of the last call

    def _identity(self) -> Any:
        from facerestore.train.losses import IdentityLoss

        return IdentityLoss(net=self.net.prompt.ffe.net)

    def _references(self, refs: torch.Tensor) -> Any:
        from facerestore.methods.honestface.model import ReferenceSet

        cached = self._refset  # read once: another thread (shared restorers of the web server) may replace it
        if cached is not None and cached[0].shape == refs.shape and torch.equal(cached[0], refs):
            return cached[1]
        rs = ReferenceSet(refs.float(), self._identity())
        self._refset = (refs, rs)
        return rs

    def _refs_distances(self, x: torch.Tensor, refs: torch.Tensor) -> list[float]:
        rs = self._references(refs)
        return [refs_check_distance(rs.identity_distance(e)) for e in self._identity().embed(x.float())]

    def _restore(self, x: torch.Tensor, *, fidelity: float | None, refs: torch.Tensor | None,
                 force_refs: bool | None = None) -> torch.Tensor:
        if refs is None or refs.shape[0] == 0:
            self.last_refs_distance, self.last_r0 = None, None
            return self.net(x)
        rs = self._references(refs)
        force = self.force_refs if force_refs is None else bool(force_refs)
        emb = self._identity().embed(x.float())
        dists = [check_refs_identity(rs.identity_distance(e), force=force) for e in emb]  # before any work
        self.last_refs_distance = max(dists)
        eyes, id_emb, mask, r0 = rs.inputs_for(x.float())
        self.last_r0 = r0
        return self.net(x, eyes.to(x.dtype), id_emb, mask)
