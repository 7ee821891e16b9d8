"""HonestFace's prompt embedding p (paper 003, Sec. 3.2): VRE (eq. 7), IDE (facial feature extractor over the eyes
of the best reference r0, eq. 6; face identity encoder with attention pooling) and their fusion.

Token counts as the paper: n1 = 4 (facial features), n2 = 7 (identity), n3 = 77 (visual), n = 77 after fusion.

Substitutions (the paper's networks are not available offline here, said in the model card):

- facial feature extractor: the paper's VGG16 (layer 0 -> colour, layer 2 -> structure) is replaced by dlib's
  face-recognition ResNet (:class:`facerestore.nn.backbones.dlib_resnet.DlibFaceResNet`, frozen): its first
  convolution ("layer 0": colour, fine texture) and its output after the first two residual blocks ("layer 2":
  structure);
- face identity encoder: dlib's 128-d embeddings in place of ArcFace's 512-d ones.

References in a batch: ``(B, R, 3, S, S)`` with a ``(B, R)`` boolean mask (True = present); a sample without
references gets learned "null" identity tokens, so the same network restores with and without references.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["N1", "N2", "N3", "FaceIdentityEncoder", "FacialFeatureExtractor", "PromptEmbedder",
           "VisualRepresentationEmbedder", "eye_patches", "select_r0"]

N1, N2, N3 = 4, 7, 77
LEFT_EYE, RIGHT_EYE = tuple(range(36, 42)), tuple(range(42, 48))


# ---------------------------------------------------------------------------------------------------- VRE


class VisualRepresentationEmbedder(nn.Module):
    """Eq. 7: ``p_L = Dict_LQ(E_VRE(x_L))``: a small VQ encoder over the LQ face, nearest-code lookup in a learned
    codebook, the n3 codes nearest to the encoder's features (ascending distance, no duplicates), then a
    conv1d - SiLU - conv1d projection to the prompt width (OSDFace's layout, scaled down).

    Gradients: the selected codes are the forward value; a straight-through term gives the encoder the
    gradient its nearest features would receive (``vq_loss`` trains codebook and encoder as a VQ-VAE does).
    """

    def __init__(self, dim: int, code_dim: int = 64, codes: int = 256, width: int = 32, n_tokens: int = N3) -> None:
        super().__init__()
        if codes < n_tokens:
            raise ValueError(f"the codebook needs at least {n_tokens} codes")
        self.n_tokens = n_tokens
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, 4, 2, 1), nn.SiLU(), nn.Conv2d(width, 2 * width, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 4, 2, 1), nn.SiLU(), nn.Conv2d(2 * width, code_dim, 3, 1, 1),
        )
        self.codebook = nn.Embedding(codes, code_dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / codes, 1.0 / codes)
        self.proj = nn.Sequential(nn.Conv1d(code_dim, dim * 2, 1), nn.SiLU(), nn.Conv1d(dim * 2, dim, 1))
        self.last_vq_loss: torch.Tensor | None = None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, HW, code_dim) encoder features of x in [0, 1], resized to 64 px (8 x 8 = 64 positions)."""
        x = F.interpolate(x, size=(64, 64), mode="area") if x.shape[-1] != 64 else x
        f = self.encoder(x * 2 - 1)
        return f.flatten(2).transpose(1, 2)

    def select(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices (B, n3) of the codes nearest to any feature (ascending distance) and, for each, the index of
        that nearest feature (B, n3)."""
        d = torch.cdist(f.float(), self.codebook.weight.float()[None].expand(f.shape[0], -1, -1))  # (B, HW, K)
        dmin, pos = d.min(dim=1)  # per code: distance to its nearest feature
        order = torch.argsort(dmin, dim=1, stable=True)[:, : self.n_tokens]
        return order, torch.gather(pos, 1, order)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        idx, pos = self.select(f)
        codes = self.codebook(idx)  # (B, n3, code_dim)
        near = torch.gather(f, 1, pos[..., None].expand(-1, -1, f.shape[-1]))
        # VQ-VAE losses (codebook + 0.25 commitment) on the selected pairs, for training
        self.last_vq_loss = F.mse_loss(codes, near.detach()) + 0.25 * F.mse_loss(near, codes.detach())
        tokens = codes + (near - near.detach())  # value = codes (eq. 7); gradient also reaches the encoder
        return self.proj(tokens.transpose(1, 2)).transpose(1, 2)  # (B, n3, dim)


# ---------------------------------------------------------------------------------------------------- IDE


def select_r0(lq_landmarks: np.ndarray, ref_landmarks: np.ndarray, region: str = "eyes") -> int:
    """Eq. 6: the index of the reference whose landmarks are nearest to the LQ face's by A-LD (eq. 14-15) on
    ``region`` (eyes and eyebrows by default: the facial feature extractor uses the eyes). (68, 2) and (R, 68, 2)
    landmarks; references whose landmarks are NaN (no face) are never chosen unless all are."""
    from facerestore.metrics.face import ALD_REGIONS, affine_landmark_distance

    idx = list(ALD_REGIONS[region])
    refs = np.asarray(ref_landmarks, np.float64)
    lq = np.asarray(lq_landmarks, np.float64)
    d = np.full(len(refs), np.inf)
    for i, r in enumerate(refs):
        if np.all(np.isfinite(r)) and np.all(np.isfinite(lq)):
            # A-LD maps the candidate's landmarks onto the LQ face's (the LQ face plays the reference)
            d[i] = affine_landmark_distance(r[idx], lq[idx])
    return int(np.argmin(d)) if np.isfinite(d).any() else 0


def eye_patches(faces: torch.Tensor, landmarks: torch.Tensor, size: int = 32, scale: float = 1.6) -> torch.Tensor:
    """(B, 2, 3, size, size) left/right eye patches of (B, 3, S, S) faces given (B, 68, 2) landmarks in pixels: a
    square around each eye's centre, side ``scale`` x the eye's width, sampled bilinearly (differentiable)."""
    b, _, h, w = faces.shape
    out = []
    for eye in (LEFT_EYE, RIGHT_EYE):
        pts = landmarks[:, list(eye)].to(faces.dtype)
        centre = pts.mean(1)
        width = (pts[:, 3] - pts[:, 0]).norm(dim=-1).clamp_min(2.0) * scale  # corner to corner
        theta = torch.zeros(b, 2, 3, dtype=faces.dtype, device=faces.device)
        theta[:, 0, 0] = width / w
        theta[:, 1, 1] = width / h
        theta[:, 0, 2] = (2 * centre[:, 0] + 1) / w - 1
        theta[:, 1, 2] = (2 * centre[:, 1] + 1) / h - 1
        grid = F.affine_grid(theta, (b, 3, size, size), align_corners=False)
        out.append(F.grid_sample(faces, grid, mode="bilinear", padding_mode="border", align_corners=False))
    return torch.stack(out, 1)


class FacialFeatureExtractor(nn.Module):
    """Fig. 2: eye patches of r0 -> frozen face network, layer 0 -> colour embedding, layer 2 -> structural
    embedding, for each eye; the four embeddings are concatenated and projected to ``N1`` tokens.

    ``features``: a frozen network exposing ``conv``/``bn`` (layer 0) and ``blocks`` (dlib's ResNet); None
    builds dlib's (read from dlib's own model file)."""

    def __init__(self, dim: int, features: nn.Module | None = None, n_tokens: int = N1) -> None:
        super().__init__()
        if features is None:
            from facerestore.nn.backbones.dlib_resnet import load_dlib_face_resnet

            features = load_dlib_face_resnet()
        self.net = features.eval().requires_grad_(False)
        c0 = self.net.conv.out_channels
        c2 = _width_after(self.net, 2)
        self.color = nn.Sequential(nn.Linear(2 * c0, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.struct = nn.Sequential(nn.Linear(2 * c2, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.n_tokens = n_tokens
        self.out = nn.Linear(4 * dim, n_tokens * dim)
        self.dim = dim

    def train(self, mode: bool = True) -> FacialFeatureExtractor:
        super().train(mode)
        self.net.eval()
        return self

    def _layers(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.net
        h = (x * 255.0 - net.pixel_mean.to(x.dtype)) / 256.0
        f0 = F.relu(net.bn(net.conv(h)))
        h2 = F.max_pool2d(f0, 3, 2)
        for blk in list(net.blocks)[:2]:
            h2 = blk(h2)
        return f0, h2

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, 2, 3, P, P) eye patches -> (B, N1, dim)."""
        b = patches.shape[0]
        f0, f2 = self._layers(patches.flatten(0, 1))
        stats = lambda f: torch.cat([f.mean((2, 3)), f.std((2, 3))], 1)  # noqa: E731 - channel mean and spread
        col = self.color(stats(f0)).view(b, 2, -1)
        st = self.struct(stats(f2)).view(b, 2, -1)
        cat = torch.cat([col[:, 0], st[:, 0], col[:, 1], st[:, 1]], 1)
        return self.out(cat).view(b, self.n_tokens, self.dim)


def _width_after(net: nn.Module, n_blocks: int) -> int:
    with torch.no_grad():
        h = torch.zeros(1, net.conv.out_channels, 8, 8)
        for blk in list(net.blocks)[:n_blocks]:
            h = blk(h)
    return int(h.shape[1])


class FaceIdentityEncoder(nn.Module):
    """Fig. 3: attention pooling of the references' identity embeddings E_id = {e_i} into ``N2`` tokens.

    ``N2`` learned queries attend over keys/values projected from the (L2-normalised) embeddings; a masked
    softmax over the references makes the result invariant to their order and count-agnostic."""

    def __init__(self, dim: int, id_dim: int = 128, n_tokens: int = N2, heads: int = 4) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(n_tokens, dim) * 0.02)
        self.inp = nn.Sequential(nn.Linear(id_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, R, id_dim) embeddings, (B, R) bool mask (at least one True per row) -> (B, N2, dim)."""
        kv = self.inp(F.normalize(emb.float(), dim=-1).to(self.queries.dtype))
        q = self.queries[None].expand(emb.shape[0], -1, -1)
        out, _ = self.attn(q, kv, kv, key_padding_mask=~mask, need_weights=False)
        return self.norm(out + q)


class PromptEmbedder(nn.Module):
    """p = fusion(p_F, p_I, p_L): the n3 = 77 visual tokens attend (cross-attention, residual) over the n1 + n2 = 11
    identity tokens (learned null tokens for samples without references), then LayerNorm: p in R^{77 x dim}."""

    def __init__(self, dim: int, features: nn.Module | None = None, id_dim: int = 128) -> None:
        super().__init__()
        self.dim = dim
        self.vre = VisualRepresentationEmbedder(dim)
        self.ffe = FacialFeatureExtractor(dim, features)
        self.fie = FaceIdentityEncoder(dim, id_dim)
        self.null = nn.Parameter(torch.randn(N1 + N2, dim) * 0.02)
        self.fuse = nn.MultiheadAttention(dim, 4, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, lq: torch.Tensor, eyes: torch.Tensor | None = None, id_emb: torch.Tensor | None = None,
                id_mask: torch.Tensor | None = None) -> torch.Tensor:
        """lq (B, 3, S, S); eyes (B, 2, 3, P, P) patches of each sample's r0; id_emb (B, R, 128) with id_mask (B, R).
        Samples whose mask row is all False (or no references at all) use the null tokens."""
        p_l = self.vre(lq)
        b = lq.shape[0]
        ident = self.null[None].expand(b, -1, -1)
        if eyes is not None and id_emb is not None:
            if id_mask is None:
                id_mask = torch.ones(id_emb.shape[:2], dtype=torch.bool, device=id_emb.device)
            has = id_mask.any(1)
            safe = id_mask.clone()
            safe[~has, 0] = True  # rows without references: any key (their result is replaced below)
            p_f = self.ffe(eyes.to(lq.dtype))
            p_i = self.fie(id_emb, safe)
            ident = torch.where(has[:, None, None], torch.cat([p_f, p_i], 1).to(ident.dtype), ident)
        fused, _ = self.fuse(p_l, ident, ident, need_weights=False)
        return self.norm(p_l + fused)

    def tokens(self) -> dict[str, int]:
        return {"n1": N1, "n2": N2, "n3": N3, "n": N3}

