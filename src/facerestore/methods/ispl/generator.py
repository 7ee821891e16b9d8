"""ISPL generator: PAC subspace embedding, dynamic prior fusion and a SPADE generator (paper 000, Sec. 3).

Structure for output size S and n subspaces (paper: S=512, n=5, base width 64 doubling to 1024):

- Embedding E_LQ (eq. 8-9). A stem (conv3x3, IN, ReLU) gives full-resolution features; each stage
  (conv3x3 + IN + ReLU, then a stride-2 pixel-adaptive convolution + IN, + ReLU except for the
  innermost) halves the resolution, with the two-convs-per-stage budget of HiFaceGAN's encoder.
  The n stage outputs are the subspace embeddings y_{n-1} (S/2) ... y_0 (S/2^n, the innermost,
  16x16 at 512). ``pac=False`` replaces the PAC by HiFaceGAN's LIP pooling + conv (Table 1, "has PAC x").
- Dynamic prior fusion F (eq. 7, Sec. 3.3). Each y_j is aligned to ``guide_channels`` by a 1x1 conv
  (as the paper does for matrix fusion) and the guidance of generator level i is
    "unet"   f_i = y_i                              (ISP-unet, default; HiFaceGAN's skip connections)
    "y0"     f_i = y_0                              (ISP-Y0, one shared embedding, StyleGAN-like)
    "concat" f_i = [y_0; ...; y_{n-1}]              (ISP-concat)
    "matrix" f_i = sum_j W_ij y_j, W learnable n x n (ISP-matrix, initialised to the identity)
  with embeddings resampled to level i's size (bilinear up, area down).
- Generator G_HQ (eq. 10): x_0 = y_0; x_{i+1} = up2(SPADEResBlock_i(x_i; f_i)) for i < n, then one
  SPADE block at full resolution conditioned on f_{n-1} (the paper does not describe the output
  stage; this mirrors HiFaceGAN's last block), LeakyReLU, conv3x3 -> 3, tanh, mapped to [0, 1].
  Bilinear 2x upsampling between levels ("2x bilinear sampling across adjacent layers").

Fidelity (perception-distortion) knob. The paper trades perception for distortion by the subspace
level k of ISP(k, n) (Sec. 3.2): the input is embedded at level k and the finer levels are
synthesised from the prior; a smaller k is more perceptual, a larger k keeps more input detail. The
dynamic fusion turns the discrete k into a continuous one: with kappa = fidelity * (n - 1) and
availability a_j = clamp(kappa - j + 1, 0, 1) (a_0 = 1), the embeddings entering the fusion are

    y~_0 = y_0,    y~_j = a_j * y_j + (1 - a_j) * up2(y~_{j-1}),

i.e. a subspace that is not available carries only what the coarser subspaces know. fidelity=1 uses
every subspace (the paper's trained ISP-unet), fidelity=0 only y_0 (ISP-Y0-like guidance:
perception), an integer kappa = k is exactly ISP(k, n) guidance and values in between interpolate
linearly. For the knob to be meaningful the model must be trained with random fidelity (see
``sample_fidelity``); with ``fusion="y0"`` it has no effect. ``fidelity=None`` uses
``default_fidelity`` (1.0).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from facerestore.errors import InputError
from facerestore.nn.lip import SimplifiedLIP
from facerestore.nn.pac import PacConv2d
from facerestore.nn.spade import SPADEResBlock

__all__ = ["FUSIONS", "ISPLConfig", "ISPLGenerator", "availability", "count_parameters", "resample"]

FUSIONS = ("unet", "y0", "concat", "matrix")


@dataclass(frozen=True)
class ISPLConfig:
    """Hyper-parameters of ``ISPLGenerator`` (see its docstring)."""

    size: int = 512
    ngf: int = 64
    max_channels: int = 1024
    n_subspaces: int = 5
    fusion: str = "unet"
    guide_channels: int = 128
    pac: bool = True
    pac_embed_dim: int = 16
    spade_hidden: int = 128
    spade_norm: str = "instance"
    spade_form: str = "gamma"
    spectral: bool = True
    input_guide: bool = False
    default_fidelity: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


def availability(fidelity: torch.Tensor, n: int) -> list[torch.Tensor]:
    """a_j = clamp(fidelity * (n - 1) - j + 1, 0, 1) for j = 0..n-1 (a_0 = 1); fidelity is (B,)."""
    kappa = fidelity * (n - 1)
    return [torch.ones_like(kappa)] + [(kappa - j + 1).clamp(0, 1) for j in range(1, n)]


def resample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize feature maps: bilinear when enlarging, area (exact box mean) when shrinking."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    if h >= size[0] and w >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class ISPLGenerator(nn.Module):
    """ISPL restorer network: ``forward(lq, fidelity=None)`` maps (B, 3, H, W) in [0, 1] to the same.

    H and W must be multiples of 2**n_subspaces; ``size`` is the nominal (training) size only.

    Args (all fields of ``ISPLConfig``, or pass ``config=``):
        size: nominal output size (128, 256, 512).
        ngf: base width; level s (resolution S/2^s) has min(ngf * 2^s, max_channels) channels.
        max_channels: channel cap (1024 in the paper).
        n_subspaces: n (5 in the paper; y_0 is then S/32).
        fusion: "unet" (default), "y0", "concat" or "matrix" (Table 1).
        guide_channels: channels of the aligned embeddings (128 in the paper's matrix fusion).
        pac: pixel-adaptive embedding (True) or HiFaceGAN's LIP embedding (False).
        pac_embed_dim: dimension D of g in eq. 9.
        spade_hidden, spade_norm, spade_form: SPADE settings (hidden width cap, "instance"/"batch",
            "gamma" = eq. 10 / "one_plus_gamma").
        spectral: spectral norm on the generator's SPADE-block convs (as HiFaceGAN).
        input_guide: append a colour anchor to every guidance map: the input box-averaged to y_0's size
            (S/2^n), bilinearly resampled to the level (3 extra SPADE label channels). Our addition, off in
            the paper configs: every embedding is instance-normalised, so the guidance carries no absolute
            colour or brightness and a small network trained briefly loses PSNR on colour casts; the anchor
            is as coarse as y_0, so it adds no detail and leaves the fidelity knob's meaning intact.
        default_fidelity: fidelity used when ``forward`` gets None.
    """

    def __init__(self, config: ISPLConfig | None = None, **kwargs) -> None:
        super().__init__()
        cfg = ISPLConfig(**kwargs) if config is None else config
        if kwargs and config is not None:
            raise TypeError("pass either config= or keyword arguments, not both")
        if cfg.fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {cfg.fusion!r}; choose from {', '.join(FUSIONS)}")
        if cfg.n_subspaces < 1:
            raise ValueError("n_subspaces must be >= 1")
        if cfg.size % 2**cfg.n_subspaces:
            raise ValueError(f"size {cfg.size} is not divisible by 2**n_subspaces = {2**cfg.n_subspaces}")
        if not 0.0 <= cfg.default_fidelity <= 1.0:
            raise ValueError("default_fidelity must lie in [0, 1]")
        self.config = cfg
        n, g = cfg.n_subspaces, cfg.guide_channels
        ch = [min(cfg.ngf * 2**s, cfg.max_channels) for s in range(n + 1)]  # ch[s]: level S/2^s
        self.channels = ch

        # --- embedding network E_LQ -------------------------------------------------------------
        self.stem = nn.Sequential(nn.Conv2d(3, ch[0], 3, padding=1, bias=False), nn.InstanceNorm2d(ch[0]), nn.ReLU())
        stages = []
        for s in range(1, n + 1):
            cin, cout = ch[s - 1], ch[s]
            if cfg.pac:
                layers: list[nn.Module] = [
                    nn.Conv2d(cin, cin, 3, padding=1), nn.InstanceNorm2d(cin), nn.ReLU(),
                    PacConv2d(cin, cout, 3, stride=2, embed_dim=cfg.pac_embed_dim), nn.InstanceNorm2d(cout),
                ]  # fmt: skip
            else:
                layers = [SimplifiedLIP(cin), nn.Conv2d(cin, cout, 3, padding=1), nn.InstanceNorm2d(cout)]
            if s < n:  # the innermost embedding y_0 stays signed (it is also the generator's input)
                layers.append(nn.ReLU())
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)  # stages[s-1] produces level s, i.e. y_{n-s}

        # --- dynamic prior fusion F ---------------------------------------------------------------
        # align[j] maps y_j (level n - j, ch[n - j] channels) to the common guidance space.
        self.align = nn.ModuleList([nn.Conv2d(ch[n - j], g, 1) for j in range(n)])
        if cfg.fusion == "matrix":
            self.fusion_matrix = nn.Parameter(torch.eye(n))
        label_nc = (g * n if cfg.fusion == "concat" else g) + (3 if cfg.input_guide else 0)

        # --- generator G_HQ -----------------------------------------------------------------------
        blk = dict(spectral=cfg.spectral, hidden=cfg.spade_hidden, norm=cfg.spade_norm, form=cfg.spade_form,
                   gamma_beta_bias=cfg.spade_form == "one_plus_gamma", resize_mode="bilinear")  # fmt: skip
        blocks = [SPADEResBlock(ch[n - i], ch[n - i - 1], label_nc, **blk) for i in range(n)]
        blocks.append(SPADEResBlock(ch[0], ch[0], label_nc, **blk))  # full-resolution refinement
        self.blocks = nn.ModuleList(blocks)
        self.to_rgb = nn.Conv2d(ch[0], 3, 3, padding=1)

    # ---------------------------------------------------------------------------------------------
    @property
    def n_subspaces(self) -> int:
        return self.config.n_subspaces

    @property
    def supports_fidelity(self) -> bool:
        return self.config.fusion != "y0" and self.config.n_subspaces > 1

    def encode(self, lq: torch.Tensor) -> list[torch.Tensor]:
        """Subspace embeddings [y_0 (innermost, S/2^n), ..., y_{n-1} (S/2)] of ``lq`` in [0, 1]."""
        h, w = lq.shape[-2:]
        m = 2**self.n_subspaces
        if lq.ndim != 4 or lq.shape[1] != 3:
            raise InputError(f"ISPL expects (B, 3, H, W) images, got shape {tuple(lq.shape)}")
        if h % m or w % m:
            raise InputError(f"ISPL with {self.n_subspaces} subspaces needs H and W divisible by {m}, got {h}x{w}")
        x = self.stem(lq * 2 - 1)
        levels = []
        for stage in self.stages:
            x = stage(x)
            levels.append(x)
        return levels[::-1]

    def _fidelity(self, fidelity: float | torch.Tensor | None, batch: int, ref: torch.Tensor) -> torch.Tensor:
        if fidelity is None:
            fidelity = self.config.default_fidelity
        f = torch.as_tensor(fidelity, dtype=torch.float32, device=ref.device)
        if f.ndim == 0:
            f = f.expand(batch)
        if f.shape != (batch,):
            raise InputError(f"fidelity must be a number or a ({batch},) tensor, got shape {tuple(f.shape)}")
        if bool(((f < 0) | (f > 1) | torch.isnan(f)).any()):
            raise InputError("fidelity must lie in [0, 1]")
        return f

    def fuse(self, ys: list[torch.Tensor], fidelity: float | torch.Tensor | None = None) -> list[torch.Tensor]:
        """Guidance maps [f_0, ..., f_{n-1}] (f_i at y_i's size) for embeddings ``ys`` from ``encode``."""
        n = self.n_subspaces
        f = self._fidelity(fidelity, ys[0].shape[0], ys[0])
        aligned = [self.align[j](ys[j]) for j in range(n)]
        if self.config.fusion != "y0" and bool((f < 1).any()):
            a = availability(f, n)
            mixed = [aligned[0]]
            for j in range(1, n):
                aj = a[j].to(aligned[j].dtype).view(-1, 1, 1, 1)
                mixed.append(aj * aligned[j] + (1 - aj) * _up2(mixed[j - 1]))
            aligned = mixed
        sizes = [tuple(y.shape[-2:]) for y in ys]
        fusion = self.config.fusion
        if fusion == "unet":
            return aligned
        if fusion == "y0":
            return [resample(aligned[0], s) for s in sizes]
        if fusion == "concat":
            return [torch.cat([resample(a_, s) for a_ in aligned], dim=1) for s in sizes]
        w = self.fusion_matrix.to(aligned[0].dtype)
        out = []
        for i, s in enumerate(sizes):
            res = [resample(a_, s) for a_ in aligned]
            out.append(sum(w[i, j] * res[j] for j in range(n)))
        return out

    def decode(self, y0: torch.Tensor, guides: list[torch.Tensor]) -> torch.Tensor:
        """G_HQ: from x_0 = y_0 and the guidance maps to an image in [0, 1]."""
        x = y0
        for i in range(self.n_subspaces):
            x = _up2(self.blocks[i](x, guides[i]))
        x = self.blocks[-1](x, guides[-1])
        return (torch.tanh(self.to_rgb(F.leaky_relu(x, 0.2))) + 1) / 2

    def forward(self, lq: torch.Tensor, fidelity: float | torch.Tensor | None = None) -> torch.Tensor:
        """Restore ``lq`` (B, 3, H, W) in [0, 1]; ``fidelity`` in [0, 1] (number or (B,) tensor) or None."""
        ys = self.encode(lq)
        guides = self.fuse(ys, fidelity)
        if self.config.input_guide:
            anchor = F.adaptive_avg_pool2d(lq * 2 - 1, ys[0].shape[-2:]).to(guides[0].dtype)
            guides = [torch.cat([g_, resample(anchor, tuple(g_.shape[-2:]))], dim=1) for g_ in guides]
        return self.decode(ys[0], guides)

    @staticmethod
    def sample_fidelity(
        batch: int, generator: torch.Generator | None = None, p_full: float = 0.5, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """Training-time fidelities (B,): 1 with probability ``p_full``, else U(0, 1).

        Training every sub-model ISP(k, n) jointly is what makes the test-time knob meaningful.
        """
        full = torch.rand(batch, generator=generator) < p_full
        u = torch.rand(batch, generator=generator)
        return torch.where(full, torch.ones_like(u), u).to(device)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (buffers excluded)."""
    return sum(p.numel() for p in module.parameters())
