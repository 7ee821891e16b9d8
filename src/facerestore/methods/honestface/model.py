"""HonestFace network: the prompt embedder feeding the one-step backbone, and the reference preparation
(landmarks, r0 by A-LD, eye patches, dlib identity embeddings) shared by the restorer and training.

Weights file (``.safetensors`` + ``.json``): every tensor of :class:`HonestFaceNet` except the frozen dlib
network inside the facial feature extractor (``prompt.ffe.net.*``), which is read from dlib's own model file at
load time (third-party weights are never redistributed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facerestore.errors import InputError, WeightsMissingError
from facerestore.methods.honestface.backbone import COMPACT, BackboneConfig, OneStepBackbone
from facerestore.methods.honestface.prompt import PromptEmbedder, eye_patches, select_r0

__all__ = ["EXCLUDED_PREFIX", "HonestFaceNet", "ReferenceSet", "face_landmarks68", "load_honestface",
           "save_honestface"]

EXCLUDED_PREFIX = "prompt.ffe.net."  # dlib's frozen ResNet: loaded from dlib's file, never saved


class HonestFaceNet(nn.Module):
    """``forward(lq, eyes, id_emb, id_mask)`` -> restored (B, 3, S, S) (unclamped)."""

    def __init__(self, config: BackboneConfig = COMPACT, lora: bool = True, features: nn.Module | None = None,
                 backbone: OneStepBackbone | None = None) -> None:
        super().__init__()
        self.config = config
        self.backbone = OneStepBackbone(config, lora=lora) if backbone is None else backbone
        self.prompt = PromptEmbedder(config.prompt_dim, features)

    def forward(self, lq: torch.Tensor, eyes: torch.Tensor | None = None, id_emb: torch.Tensor | None = None,
                id_mask: torch.Tensor | None = None, return_latent: bool = False) -> Any:
        p = self.prompt(lq, eyes, id_emb, id_mask)
        return self.backbone(lq, p, return_latent=return_latent)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith(EXCLUDED_PREFIX)}


def face_landmarks68(faces: torch.Tensor) -> np.ndarray:
    """(B, 68, 2) dlib landmarks of FFHQ-aligned (B, 3, S, S) crops (the predictor in the template's face box)."""
    from facerestore.faces.detect import aligned_face_box, predict_landmarks

    imgs = (faces.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    box = aligned_face_box(int(faces.shape[-1]))
    return np.stack([predict_landmarks(np.ascontiguousarray(im), box, 68) for im in imgs]).astype(np.float64)


class ReferenceSet:
    """Reference faces prepared once: aligned crops (R, 3, S, S), their dlib landmarks and 128-d embeddings.

    ``embedder``: a module with ``embed(faces) -> (R, 128)`` (``train.losses.IdentityLoss``: dlib's network on
    the chip dlib's own route cuts)."""

    def __init__(self, refs: torch.Tensor, embedder: Any) -> None:
        self.faces = refs
        self.landmarks = face_landmarks68(refs)
        with torch.no_grad():
            self.embeddings = embedder.embed(refs.float()).to(refs.device)

    def __len__(self) -> int:
        return int(self.faces.shape[0])

    def identity_distance(self, embedding: torch.Tensor) -> torch.Tensor:
        """(R,) Euclidean (FED) distances from one (128,) embedding to each reference."""
        return (self.embeddings.float() - embedding.float()[None]).norm(dim=-1)

    def inputs_for(self, lq: torch.Tensor, lq_landmarks: np.ndarray | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
        """(eyes (B, 2, 3, P, P) of each sample's r0, id_emb (B, R, 128), mask (B, R), r0 indices)."""
        lm = face_landmarks68(lq) if lq_landmarks is None else lq_landmarks
        r0 = [select_r0(lm[i], self.landmarks) for i in range(lq.shape[0])]
        faces = self.faces[r0].to(lq.dtype)
        lms = torch.as_tensor(self.landmarks[r0], dtype=lq.dtype, device=lq.device)
        eyes = eye_patches(faces, lms)
        b, r = lq.shape[0], len(self)
        emb = self.embeddings[None].expand(b, -1, -1).to(lq.device)
        mask = torch.ones(b, r, dtype=torch.bool, device=lq.device)
        return eyes, emb, mask, r0


# ------------------------------------------------------------------------------------------------- weights io


def save_honestface(net: HonestFaceNet, path: str | os.PathLike, meta: dict[str, Any] | None = None,
                    dtype: torch.dtype = torch.float16) -> Path:
    """``path`` (.safetensors, tensors in ``dtype``) + ``path.with_suffix('.json')`` (config + ``meta``)."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous().cpu()
             for k, v in net.trainable_state().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, path)
    info = {"method": "honestface", "backbone": net.config.to_dict(), "lora": bool(net.backbone.has_lora),
            "dtype": str(dtype).replace("torch.", ""), **(meta or {})}
    path.with_suffix(".json").write_text(json.dumps(info, indent=2))
    return path


def load_honestface(path: str | os.PathLike, features: nn.Module | None = None) -> HonestFaceNet:
    """A :class:`HonestFaceNet` from a file written by :func:`save_honestface` (float32; strict: every key of the
    network but the dlib ResNet must be in the file with its shape, nothing else)."""
    from facerestore.nn.safe_weights import load_safetensors, read_json

    path = Path(path)
    if not path.is_file():
        raise WeightsMissingError(f"HonestFace weights not found: {path}")
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        raise InputError(f"{path.name} needs its description {meta_path.name} next to it")
    meta = read_json(meta_path, "HonestFace description")
    try:
        cfg = BackboneConfig.from_dict(meta["backbone"])
        if cfg.size > 1024 or cfg.prompt_dim > 4096:
            raise ValueError("sizes out of range")
        # diffusers checks the UNet / VAE keys and values only when it builds them
        net = HonestFaceNet(cfg, lora=bool(meta.get("lora", True)), features=features)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"{meta_path.name}: bad backbone description ({type(exc).__name__}: {exc})") from None
    state = {k: v.float() if v.is_floating_point() else v
             for k, v in load_safetensors(path, "HonestFace weights").items()}
    expected = {k: tuple(v.shape) for k, v in net.trainable_state().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        bad = sorted(set(expected) ^ set(found))[:3] or [k for k in expected if expected[k] != found[k]][:3]
        raise InputError(f"{path.name} does not match its description ({bad})")
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(EXCLUDED_PREFIX) for k in missing):
        raise InputError(f"{path.name} does not match the network: {unexpected[:3]} {missing[:3]}")
    return net
