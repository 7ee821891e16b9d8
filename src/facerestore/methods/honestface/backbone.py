"""HonestFace's one-step diffusion backbone (paper 003, eq. 1-4; OSDFace's base: SD 2.1-base, t = 399).

``x -> z_L = E(x) -> eps = UNet(z_L, t, p) -> z_H = (z_L - sqrt(1 - abar_t) eps) / sqrt(abar_t) -> D(z_H)``

- ``alphas_cumprod``: the DDPM schedule of Stable Diffusion ("scaled_linear": betas = linspace(sqrt(0.00085),
  sqrt(0.012), 1000) ** 2), computed in float64.
- :func:`x0_from_eps` (eq. 2-3) runs in float64 and returns the latent's dtype.
- The UNet (``diffusers.UNet2DConditionModel``) carries LoRA adapters (``peft``; rank 16, alpha 16 as in the
  paper) on its transformers' attention projections, feed-forward and proj_in/out layers (:func:`lora_targets`;
  not the resnets' convolutions); only the LoRA weights are trained on
  the SD 2.1-base configuration, the base weights stay frozen.

Two configurations of the same classes:

- ``"sd21-base"``: Stable Diffusion 2.1-base's UNet (865.9M parameters, cross-attention dim 1024) and VAE
  (83.7M, latents x8 smaller, scaling factor 0.18215), read from the zoo entry ``sd21-base`` (the original
  ``v2-1_512-ema-pruned.ckpt``, hash-checked, never downloaded at run time) through diffusers' converters of the
  original checkpoint layout (:func:`load_sd21_base`);
- ``"compact"``: the configuration we train on a CPU (128 px faces, 16-channel latents x4 smaller, cross-attention
  dim 96) and ship as fp16 safetensors (``zoo/builtin/honestface-compact-128``).

``diffusers`` and ``peft`` are the ``[diffusion]`` extra: importing this module without them works; building a
network raises a one-line :class:`~facerestore.errors.InputError` naming the extra.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from facerestore.errors import InputError

__all__ = ["COMPACT", "LORA_ALPHA", "LORA_RANK", "SD21_BASE", "T_FIXED", "BackboneConfig", "OneStepBackbone",
           "alphas_cumprod", "build_unet", "build_vae", "ldm_to_diffusers", "load_sd21_base", "require_diffusion",
           "x0_from_eps"]

T_FIXED = 399  # OSDFace / HonestFace's fixed one-step timestep T_L
LORA_RANK = 16
LORA_ALPHA = 16
NUM_TRAIN_TIMESTEPS = 1000
BETA_START, BETA_END = 0.00085, 0.012  # Stable Diffusion's scaled-linear schedule


def require_diffusion() -> tuple[Any, Any]:
    """(diffusers, peft) or a one-line InputError naming the ``[diffusion]`` extra."""
    try:
        import diffusers
        import peft
    except ImportError as exc:
        raise InputError(f"HonestFace needs the [diffusion] extra (diffusers, peft): pip install "
                         f"'facerestore[diffusion]' ({exc.name} is missing)") from None
    return diffusers, peft


def alphas_cumprod(num_steps: int = NUM_TRAIN_TIMESTEPS, beta_start: float = BETA_START,
                   beta_end: float = BETA_END) -> np.ndarray:
    """abar_t, t = 0..num_steps-1, of the scaled-linear DDPM schedule, float64."""
    betas = np.linspace(math.sqrt(beta_start), math.sqrt(beta_end), num_steps, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


def x0_from_eps(z_t: torch.Tensor, eps: torch.Tensor, abar_t: float) -> torch.Tensor:
    """Eq. 2-3: ``(z_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``, computed in float64, returned in z_t's dtype and
    device. On Apple's MPS, which has no float64, the float64 step runs on the CPU."""
    a = float(abar_t)
    wide = z_t.device if z_t.device.type != "mps" else torch.device("cpu")
    out = (z_t.to(wide).double() - math.sqrt(1.0 - a) * eps.to(wide).double()) / math.sqrt(a)
    return out.to(device=z_t.device, dtype=z_t.dtype)


# ------------------------------------------------------------------------------------------- configurations

# Stable Diffusion 2.1-base (stabilityai/stable-diffusion-2-1-base, unet/config.json and vae/config.json)
SD21_BASE_UNET: dict[str, Any] = dict(
    sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=2, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
    norm_num_groups=32, flip_sin_to_cos=True, freq_shift=0,
)
SD21_BASE_VAE: dict[str, Any] = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    latent_channels=4, norm_num_groups=32, sample_size=512, scaling_factor=0.18215,
)
# ours: 128 px faces, 16 x 32 x 32 latents (4 channels at x4 left the from-scratch VAE unable to reconstruct faces
# after 400 CPU steps, L1 0.15: 16 channels, as the SD3/FLUX autoencoders, compress 3x instead of 12x)
COMPACT_UNET: dict[str, Any] = dict(
    sample_size=32, in_channels=16, out_channels=16, block_out_channels=(32, 64, 96),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    layers_per_block=1, cross_attention_dim=96, attention_head_dim=4, use_linear_projection=True,
    norm_num_groups=16, flip_sin_to_cos=True, freq_shift=0,
)
COMPACT_VAE: dict[str, Any] = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(16, 32, 64), layers_per_block=1,
    latent_channels=16, norm_num_groups=16, sample_size=128, scaling_factor=1.0,
)


class BackboneConfig:
    """A named backbone: UNet and VAE settings, image size, prompt width k."""

    def __init__(self, name: str, unet: dict[str, Any], vae: dict[str, Any], size: int) -> None:
        self.name, self.unet, self.vae, self.size = name, dict(unet), dict(vae), int(size)

    @property
    def prompt_dim(self) -> int:
        return int(self.unet["cross_attention_dim"])

    def to_dict(self) -> dict[str, Any]:
        def plain(d: dict[str, Any]) -> dict[str, Any]:
            return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

        return {"name": self.name, "size": self.size, "unet": plain(self.unet), "vae": plain(self.vae)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackboneConfig:
        def tup(x: dict[str, Any]) -> dict[str, Any]:
            return {k: tuple(v) if isinstance(v, list) else v for k, v in x.items()}

        return cls(str(d["name"]), tup(d["unet"]), tup(d["vae"]), int(d["size"]))


SD21_BASE = BackboneConfig("sd21-base", SD21_BASE_UNET, SD21_BASE_VAE, 512)
COMPACT = BackboneConfig("compact", COMPACT_UNET, COMPACT_VAE, 128)


def build_unet(config: dict[str, Any]) -> nn.Module:
    diffusers, _ = require_diffusion()
    return diffusers.UNet2DConditionModel(**config)


def build_vae(config: dict[str, Any]) -> nn.Module:
    diffusers, _ = require_diffusion()
    return diffusers.AutoencoderKL(**config)


def lora_targets(unet: nn.Module) -> list[str]:
    """Module-name suffixes LoRA wraps: the transformers' attention q/k/v/out projections, feed-forward and
    proj_in/out (the resnets' convolutions are left out: on the compact model they would add 0.6M parameters,
    and the paper does not say which layers carry LoRA)."""
    return ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]


def add_lora(unet: nn.Module, rank: int = LORA_RANK, alpha: int = LORA_ALPHA, adapter: str = "default") -> nn.Module:
    """Attach a LoRA adapter (peft, rank/alpha; B initialised to zero: the model is unchanged) to ``unet``."""
    _, peft = require_diffusion()
    cfg = peft.LoraConfig(r=int(rank), lora_alpha=int(alpha), init_lora_weights=True,
                          target_modules=lora_targets(unet))
    unet.add_adapter(cfg, adapter_name=adapter)
    return unet


# --------------------------------------------------------------------------------------------- the network


class OneStepBackbone(nn.Module):
    """VAE encoder -> one UNet evaluation at ``t`` -> x0 from eps (float64) -> VAE decoder (eq. 3-4).

    ``forward(x, prompt)``: x (B, 3, S, S) in [0, 1], prompt (B, n, k) -> (B, 3, S, S) (not clamped; the VAE works
    in [-1, 1]). ``lora``: attach the rank-16 / alpha-16 adapter.
    """

    def __init__(self, config: BackboneConfig, lora: bool = True, t: int = T_FIXED) -> None:
        super().__init__()
        self.config = config
        self.vae = build_vae(config.vae)
        self.unet = build_unet(config.unet)
        self.has_lora = bool(lora)
        if lora:
            add_lora(self.unet)
        self.t = int(t)
        self.abar = float(alphas_cumprod()[self.t])
        self.scaling = float(config.vae.get("scaling_factor", 0.18215))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z_L: the posterior mode (deterministic) times the VAE's scaling factor."""
        return self.vae.encode(x * 2 - 1).latent_dist.mode() * self.scaling

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return (self.vae.decode(z / self.scaling).sample + 1) / 2

    def predict_z0(self, z: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        t = torch.full((z.shape[0],), self.t, device=z.device, dtype=torch.long)
        eps = self.unet(z, t, encoder_hidden_states=prompt.to(z.dtype)).sample
        return x0_from_eps(z, eps, self.abar)

    def forward(self, x: torch.Tensor, prompt: torch.Tensor, return_latent: bool = False) -> Any:
        z0 = self.predict_z0(self.encode(x), prompt)
        y = self.decode(z0)
        return (y, z0) if return_latent else y


# ----------------------------------------------------------------------------------- SD 2.1-base from the zoo


def ldm_to_diffusers(state: dict[str, torch.Tensor], config: BackboneConfig = SD21_BASE
                     ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(unet_state, vae_state) in diffusers' names from an original (LDM) Stable Diffusion checkpoint's state dict
    (``model.diffusion_model.*``, ``first_stage_model.*``; EMA weights are already merged in the released pruned
    file). Uses diffusers' own converters; works on meta tensors."""
    require_diffusion()
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    unet_cfg = {**config.unet, "layers_per_block": config.unet["layers_per_block"]}
    unet = convert_ldm_unet_checkpoint(state, unet_cfg)
    vae = convert_ldm_vae_checkpoint(state, dict(config.vae))
    return unet, vae


def load_sd21_base(path: Any = None, *, lora: bool = True, device: str | torch.device = "cpu") -> OneStepBackbone:
    """The SD 2.1-base backbone with the released weights: the zoo entry ``sd21-base`` (hash-checked; never
    downloaded here: ``facerestore models download sd21-base``) or an explicit checkpoint ``path``.

    The network is built on the meta device and filled with ``load_state_dict(assign=True)`` after a strict key
    and shape check, so the 3.5 GB of fp32 weights are allocated once.
    """
    from facerestore import zoo

    p = zoo.weights_path("sd21-base") if path is None else path
    ckpt = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
    unet_sd, vae_sd = ldm_to_diffusers(state)
    with torch.device("meta"):
        net = OneStepBackbone(SD21_BASE, lora=False)
    for name, module, sd in (("unet", net.unet, unet_sd), ("vae", net.vae, vae_sd)):
        expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        found = {k: tuple(v.shape) for k, v in sd.items()}
        if expected != found:
            missing = sorted(set(expected) - set(found))[:3]
            extra = sorted(set(found) - set(expected))[:3]
            bad = [k for k in expected.keys() & found.keys() if expected[k] != found[k]][:3]
            raise InputError(f"{p}: not an SD 2.1-base checkpoint ({name}: missing {missing}, unexpected {extra}, "
                             f"shape mismatches {bad})")
        module.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True, assign=True)
    net = net.to(device)
    if lora:
        add_lora(net.unet)
        net.has_lora = True
    return net
