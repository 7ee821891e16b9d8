"""StyleGAN2 prior training adapter (``method: stylegan2`` in a training config).

Trains ``facerestore.nn.stylegan2.Generator`` + ``Discriminator`` on the config's HQ faces with the
StyleGAN2 objective (Karras et al. 2020, as in NVIDIA's stylegan2-ada-pytorch ``StyleGAN2Loss``):

- G: non-saturating logistic loss softplus(-D(G(z))), style mixing with probability ``style_mixing``
  (a second z takes over from a random layer index on), random noise inputs.
- D: softplus(D(fake)) + softplus(-D(real)), plus the lazy R1 penalty ``r1_gamma / 2 * |grad D(real)|^2``
  every ``r1_interval`` steps (scaled by the interval), with the lazy-regularisation correction of the
  learning rate and betas of D's Adam (``c = interval / (interval + 1)``: lr * c, beta ** c).
- Path-length regularisation is not used (a documented simplification: it mainly smooths the W -> image
  map of large models and costs a second G backward; our CPU priors are trained for tens of kimg).
- No augmentation (ADA is optional in the issue; with ~2k faces and tens of kimg D does not overfit).
- ``noise: none`` trains without per-pixel noise inputs (their strengths are held at 0). Our 64 px CPU
  prior used it after 4k steps: with noise, the briefly trained generator had put a fixed spotty texture
  into its 32 px noise layer, which const-noise inversion would reproduce on every face.

The fake batch of the G step is reused (detached) by the D step, which saves a G forward per step.
Every random draw is a pure function of (seed, step, rank) or of the checkpointed global RNG state, so
runs resume exactly. Data: ``data.task: none`` (lq = hq); images are mapped to StyleGAN's [-1, 1].

Config ``model`` keys: ``generator`` (``Generator`` keyword arguments, ``img_resolution`` defaults to
``data.size``), ``discriminator`` (``Discriminator`` keyword arguments; resolution and channel width
default to the generator's), ``r1_gamma`` (default 0.0002 * size**2 / batch, StyleGAN2-ADA's heuristic),
``r1_interval`` (16), ``style_mixing`` (0.9), ``noise`` ("random" or "none"). Optimisers: Adam(lr, betas) for
both networks (``optim.lr`` and ``optim.lr_d``; StyleGAN2 uses 0.0025 and betas (0, 0.99)). The exported
generator is the EMA of G (``ema_decay``); ``facerestore.nn.stylegan2_io.load_stylegan2`` reads it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from facerestore.errors import InputError
from facerestore.nn.stylegan2 import Discriminator, Generator
from facerestore.train.adapter import TrainAdapter, step_with_scaler
from facerestore.train.data import step_seed

__all__ = ["StyleGAN2Adapter", "discriminator_step", "lazy_r1_adam", "mixed_latents", "r1_penalty"]

_MODEL_KEYS = {"generator", "discriminator", "r1_gamma", "r1_interval", "style_mixing", "noise"}


def r1_penalty(d_real: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Per-sample squared gradient norm |dD(x)/dx|^2 (B,) of logits ``d_real`` w.r.t. ``real`` (create_graph)."""
    (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
    return grad.square().sum(dim=(1, 2, 3))


def lazy_r1_adam(params, lr: float, betas: tuple[float, float], r1_gamma: float,
                 r1_interval: int) -> torch.optim.Adam:
    """Adam for a discriminator whose R1 penalty is applied every ``r1_interval`` steps: StyleGAN2's correction
    of the learning rate and betas by c = interval / (interval + 1) (none without R1). NVIDIA's correction exists
    because their R1 term gets an optimiser step of its own every interval; here it joins that interval's regular D
    step, so the correction only runs D at c times the configured rate (16/17 at interval 16): a small deviation,
    kept so that configs written for NVIDIA's rates behave alike."""
    c = r1_interval / (r1_interval + 1) if r1_gamma > 0 else 1.0
    return torch.optim.Adam(params, lr=lr * c, betas=(betas[0] ** c, betas[1] ** c), eps=1e-8)


def discriminator_step(d_net: torch.nn.Module, fake: torch.Tensor, real: torch.Tensor,
                       optimizer: torch.optim.Optimizer, *, step: int, r1_gamma: float, r1_interval: int,
                       autocast, scaler, grad_clip: float = 0.0) -> dict[str, float]:
    """One discriminator step: softplus(D(fake)) + softplus(-D(real)), plus the lazy R1 penalty
    ``r1_gamma / 2 * |grad D(real)|^2`` (scaled by the interval) on every ``r1_interval``-th ``step``. Images in
    [-1, 1]; ``fake`` is detached here. Returns scalar logs."""
    d_net.requires_grad_(True)
    do_r1 = r1_gamma > 0 and step % r1_interval == 0
    real = real.detach().requires_grad_(do_r1)
    with autocast():
        d_fake, d_real = d_net(fake.detach()).float(), d_net(real).float()
    d_loss = F.softplus(d_fake).mean() + F.softplus(-d_real).mean()
    logs = {"loss/d": float(d_loss.detach()), "d/real": float(d_real.detach().mean()),
            "d/fake": float(d_fake.detach().mean())}
    if do_r1:
        r1 = r1_penalty(d_real, real).mean()
        d_loss = d_loss + r1 * (r1_gamma / 2 * r1_interval)
        logs["loss/r1"] = float(r1.detach())
    step_with_scaler(d_loss, optimizer, scaler, d_net.parameters(), grad_clip)
    return logs


def mixed_latents(g_net: Generator, z: torch.Tensor, z2: torch.Tensor, mix: torch.Tensor,
                  cutoff: torch.Tensor) -> torch.Tensor:
    """W+ latents (B, num_ws, w_dim): rows >= ``cutoff[b]`` come from ``z2`` where ``mix[b]`` is True."""
    w = g_net.mapping(z)
    ws = w.unsqueeze(1).repeat(1, g_net.num_ws, 1)
    if not bool(mix.any()):
        return ws
    w2 = g_net.mapping(z2, update_w_avg=False).unsqueeze(1)
    rows = torch.arange(g_net.num_ws, device=z.device).view(1, -1, 1)
    take2 = mix.view(-1, 1, 1) & (rows >= cutoff.view(-1, 1, 1))
    return torch.where(take2, w2, ws)


class StyleGAN2Adapter(TrainAdapter):
    """StyleGAN2 G + D with lazy R1 (see the module docstring)."""

    def __init__(self, cfg, device: torch.device) -> None:
        super().__init__(cfg, device)
        model = dict(cfg.model)
        unknown = set(model) - _MODEL_KEYS
        if unknown:
            raise InputError(f"unknown stylegan2 model key(s): {', '.join(sorted(unknown))}; "
                             f"use {', '.join(sorted(_MODEL_KEYS))}")
        size = cfg.data.size
        g_kwargs = {"img_resolution": size, **(model.get("generator") or {})}
        if g_kwargs["img_resolution"] != size:
            raise InputError(f"generator img_resolution {g_kwargs['img_resolution']} != data.size {size}")
        try:
            g = Generator(**g_kwargs)
            d_kwargs = {"img_resolution": size, "channel_base": g.config["channel_base"],
                        "channel_max": g.config["channel_max"], **(model.get("discriminator") or {})}
            d = Discriminator(**d_kwargs)
        except (TypeError, ValueError, ZeroDivisionError, AssertionError) as e:  # z_dim: 0, ...
            raise InputError(f"bad stylegan2 network settings: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                             ) from None
        self.nets = {"generator": g.to(device), "discriminator": d.to(device)}
        batch = cfg.data.batch_size
        self.r1_gamma = float(model.get("r1_gamma", 0.0002 * size**2 / batch))
        self.r1_interval = int(model.get("r1_interval", 16))
        self.style_mixing = float(model.get("style_mixing", 0.9))
        if self.r1_interval < 1 or not 0 <= self.style_mixing <= 1 or self.r1_gamma < 0:
            raise InputError("need r1_interval >= 1, r1_gamma >= 0 and style_mixing in [0, 1]")
        self.noise = str(model.get("noise", "random"))
        if self.noise not in ("random", "none"):
            raise InputError(f"model.noise must be 'random' or 'none', got {self.noise!r}")
        # keys other adapters read, which this one would silently ignore
        if cfg.losses:
            raise InputError(f"stylegan2 takes no losses: settings (its loss is the non-saturating GAN loss with "
                             f"lazy R1: model.r1_gamma / r1_interval); got {', '.join(sorted(cfg.losses))}")
        if cfg.optim.weight_decay:
            raise InputError("stylegan2 uses no weight decay (as the reference): remove optim.weight_decay")
        if cfg.val_every:
            raise InputError("a stylegan2 run has no restoration to validate: set val_every: 0")
        if torch.distributed.is_available() and torch.distributed.is_initialized():  # before any image is read
            self.wrap_ddp(None)

    def wrap_ddp(self, local_rank: int | None) -> None:
        # the step calls the generator's mapping and synthesis directly, which DistributedDataParallel would not
        # synchronise, and draws its latents from one seed: refused rather than trained wrong on every rank
        raise InputError("stylegan2 training runs in one process: start it without torchrun")

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        o = self.cfg.optim
        return {
            "generator": torch.optim.Adam(self.nets["generator"].parameters(), lr=o.lr, betas=o.betas, eps=1e-8),
            "discriminator": lazy_r1_adam(self.nets["discriminator"].parameters(), o.lr_d, tuple(o.betas),
                                          self.r1_gamma, self.r1_interval),
        }

    def _latents(self, batch: int) -> torch.Tensor:
        g_net = self.nets["generator"]
        z = torch.randn(batch, g_net.z_dim, device=self.device)  # global RNG: checkpointed, resumable
        z2 = torch.randn(batch, g_net.z_dim, device=self.device)
        mix = torch.rand(batch, device=self.device) < self.style_mixing
        cutoff = torch.randint(1, g_net.num_ws, (batch,), device=self.device)
        return mixed_latents(g_net, z, z2, mix, cutoff)

    def train_step(self, lq, hq, optimizers, autocast, scaler) -> dict[str, Any]:
        g_net, d_net = self.nets["generator"], self.nets["discriminator"]
        real = hq * 2 - 1
        batch = real.shape[0]
        noise_gen = torch.Generator(device=self.device).manual_seed(
            step_seed(self.cfg.seed, self.step, 0, stream=2))
        # --- generator -------------------------------------------------------------------------------
        d_net.requires_grad_(False)
        if self.noise == "none":  # no noise inputs: strengths held at 0, so every noise mode gives the same image
            with torch.no_grad():
                for name, p in g_net.named_parameters():
                    if name.endswith("noise_strength"):
                        p.zero_()
        with autocast():
            fake = g_net.synthesis(self._latents(batch), noise_mode=self.noise, generator=noise_gen)
            g_loss = F.softplus(-d_net(fake).float()).mean()
        step_with_scaler(g_loss, optimizers["generator"], scaler, g_net.parameters(), self.cfg.optim.grad_clip)
        # --- discriminator ---------------------------------------------------------------------------
        logs = {"loss/g": float(g_loss.detach())}
        logs.update(discriminator_step(d_net, fake, real, optimizers["discriminator"], step=self.step,
                                       r1_gamma=self.r1_gamma, r1_interval=self.r1_interval, autocast=autocast,
                                       scaler=scaler, grad_clip=self.cfg.optim.grad_clip))
        return logs

    @torch.no_grad()
    def infer(self, net, lq: torch.Tensor) -> torch.Tensor:
        raise InputError("a stylegan2 run has no restoration validation: set val_every: 0")

    def export_metadata(self) -> dict[str, Any]:
        return {"method": "stylegan2", "kind": "stylegan2", "size": self.cfg.data.size,
                "generator": dict(self.generator.config)}
