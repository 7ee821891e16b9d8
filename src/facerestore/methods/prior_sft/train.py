"""Training the generative-prior restorer with ``facerestore train`` (``method: prior-sft``).

Only the encoder learns; the MobileStyleGAN decoder is loaded from the cache and frozen. A config::

    method: prior-sft
    model:
      prior: mobilestylegan-ffhq-1024   # zoo entry (or a folder of the IR files)
      in_size: 256                      # encoder resolution = data.size (the ground truth's)
      width: 16, max_channels: 128      # U-Net channels (network.PriorEncoder)
      sft_resolutions: [16, 32, 64, 128, 256]
      latent_gain: 10                   # learning-rate multiplier of the latent heads (network.PriorEncoder)
      colour_resolution: 32             # coarse colour maps on the output's low band
      low_transfer: 32                  # the output's 32 px content replaced by the input's (0: off)
      out_size: 512                     # what the restorer returns; the loss compares it at data.size
      decoder_dtype: bf16               # the frozen decoder's compute precision (bf16 ~2x faster on a CPU)
      alpha_random: 0.3                 # share of samples trained at a random SFT strength in [0, 1] (the rest at 1)
      discriminator: {channel_base: 8192, channel_max: 256}   # only with losses.adversarial > 0
      r1_gamma: 6.5, r1_interval: 16                          # lazy R1 of the discriminator (StyleGAN2's)
    losses: {l1: 1.0, pyramid: 1.0, identity: 0.1, latent: 0.0, adversarial: 0.0}

Loss on the output box-averaged to ``data.size``: ``l1`` * L1 + ``pyramid`` * (L1 at 1/2 + L1 at 1/4 of that size;
the coarse structure a GAN prior gets wrong first) + ``identity`` * dlib FED to the ground truth
(``train.losses.IdentityLoss``; the model is then evaluated for identity with MobileFaceNet, ``id_mfn``, which
no loss of ours uses) + ``latent`` * mean squared W+ offset from the prior's mean (keeps the latents where the
prior is trained) + ``adversarial`` * StyleGAN2's non-saturating loss softplus(-D(output)) of a residual
discriminator (:class:`facerestore.nn.stylegan2.Discriminator` at ``data.size``, trained alternately on the
ground truth against the outputs with lazy R1, as :mod:`facerestore.train.stylegan2` trains a prior): L1 terms
alone pull every output toward the average of the faces an input allows (soft), the adversarial term toward the
sharp faces of the training set. The degradations are ``data.task`` (``realworld-gfpgan``, GFPGAN's, reaches
from nearly clean to heavy), so clean faces are trained to pass through.

The export (``final.safetensors`` + ``final.json``) holds the encoder only; ``facerestore restore --method
prior-sft --weights final.safetensors`` reads it with the cached prior.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from facerestore.errors import InputError
from facerestore.train.adapter import TrainAdapter, step_with_scaler

__all__ = ["DECODER_DTYPES", "PriorSFTAdapter", "build_prior_sft"]

DECODER_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_NET_KEYS = {"prior", "out_size", "decoder_dtype", "alpha_random", "low_transfer"}  # + network.ENCODER_KEYS
_GAN_KEYS = {"discriminator", "r1_gamma", "r1_interval"}  # training-only model options (adversarial loss)
_LOSS_KEYS = {"l1", "pyramid", "identity", "latent", "adversarial"}


def build_prior_sft(model: dict[str, Any], *, in_size: int | None = None):
    """A :class:`~.network.PriorSFTNet` from the options of a config's ``model`` (or an export's JSON), its decoder
    loaded from the cache; one-line errors for unknown options and a missing prior."""
    from facerestore.methods.prior_sft.network import ENCODER_KEYS, PriorSFTNet
    from facerestore.nn import stylegan2_io

    known = _NET_KEYS | ENCODER_KEYS
    unknown = set(model) - known
    if unknown:
        raise InputError(f"unknown prior-sft model option(s): {', '.join(sorted(unknown))}; "
                         f"use {', '.join(sorted(known))}")
    dtype = model.get("decoder_dtype", "fp32")
    if dtype not in DECODER_DTYPES:
        raise InputError(f"model.decoder_dtype must be one of {', '.join(DECODER_DTYPES)}, got {dtype!r}")
    prior = model.get("prior", "mobilestylegan-ffhq-1024")
    G = stylegan2_io.resolve_generator(prior)
    if not hasattr(G.synthesis, "block_resolutions"):
        raise InputError(f"prior-sft needs a MobileStyleGAN prior (e.g. mobilestylegan-ffhq-1024), got {prior!r}")
    try:
        enc = {k: (tuple(int(r) for r in v) if k == "sft_resolutions" else float(v) if k == "latent_gain" else int(v))
               for k, v in model.items() if k in ENCODER_KEYS}
        if in_size is not None:
            enc.setdefault("in_size", int(in_size))
        return PriorSFTNet(G.synthesis, G.mapping.w_avg, out_size=int(model.get("out_size", 512)),
                           decoder_dtype=DECODER_DTYPES[dtype], low_transfer=int(model.get("low_transfer", 32)), **enc)
    except (TypeError, ValueError) as e:  # "abc" for a number, a number for the resolution list, out of range
        raise InputError(f"prior-sft model options: {e}") from None


class PriorSFTAdapter(TrainAdapter):
    """The encoder of :class:`~.network.PriorSFTNet`, Adam on the loss of the module docstring."""

    def __init__(self, cfg, device: torch.device) -> None:
        super().__init__(cfg, device)
        model = {k: v for k, v in cfg.model.items() if k not in _GAN_KEYS}
        unknown = set(cfg.losses) - _LOSS_KEYS
        if unknown:
            raise InputError(f"unknown prior-sft loss(es): {', '.join(sorted(unknown))}; use "
                             f"{', '.join(sorted(_LOSS_KEYS))}")
        self.weights = {"l1": 1.0, "pyramid": 1.0, "identity": 0.0, "latent": 0.0, "adversarial": 0.0,
                        **{k: float(v) for k, v in cfg.losses.items()}}
        self.alpha_random = float(model.get("alpha_random", 0.3))
        if not 0 <= self.alpha_random <= 1:
            raise InputError(f"model.alpha_random must be in [0, 1], got {self.alpha_random}")
        if int(model.get("in_size", cfg.data.size)) != cfg.data.size:
            raise InputError(f"model.in_size ({model['in_size']}) must equal data.size ({cfg.data.size})")
        net = build_prior_sft(model, in_size=cfg.data.size)
        self.nets = {"generator": net.to(device)}
        self.identity = None
        if self.weights["identity"] > 0:
            from facerestore.train.losses import IdentityLoss

            self.identity = IdentityLoss(self.weights["identity"]).to(device)
        if self.weights["adversarial"] > 0:
            self.nets["discriminator"] = self._discriminator(dict(cfg.model)).to(device)
        elif set(cfg.model) & _GAN_KEYS:  # options that would do nothing
            raise InputError(f"model.{', model.'.join(sorted(set(cfg.model) & _GAN_KEYS))} only apply with "
                             "losses.adversarial > 0")

    def _discriminator(self, model: dict[str, Any]) -> torch.nn.Module:
        """StyleGAN2's residual discriminator at ``data.size`` and its lazy-R1 settings (module docstring)."""
        from facerestore.nn.stylegan2 import Discriminator

        size, batch = self.cfg.data.size, self.cfg.data.batch_size
        self.r1_gamma = float(model.get("r1_gamma", 0.0002 * size**2 / batch))  # StyleGAN2's heuristic
        self.r1_interval = int(model.get("r1_interval", 16))
        if self.r1_gamma < 0 or self.r1_interval < 1:
            raise InputError("model.r1_gamma must be >= 0 and model.r1_interval >= 1")
        options = {"channel_base": 8192, "channel_max": 256, **(model.get("discriminator") or {})}
        try:
            return Discriminator(img_resolution=size, **options)
        except (TypeError, ValueError) as e:
            raise InputError(f"model.discriminator: {e}") from None

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        o = self.cfg.optim
        opts = {"generator": torch.optim.Adam(self.nets["generator"].parameters(), lr=o.lr, betas=tuple(o.betas),
                                              weight_decay=o.weight_decay)}
        if "discriminator" in self.nets:
            from facerestore.train.stylegan2 import lazy_r1_adam

            opts["discriminator"] = lazy_r1_adam(self.nets["discriminator"].parameters(), o.lr_d, tuple(o.betas),
                                                 self.r1_gamma, self.r1_interval)
        return opts

    def _alphas(self, batch: int) -> torch.Tensor:
        """Per-sample SFT strengths: 1, or with probability ``alpha_random`` uniform in [0, 1]; seeded by the step
        (a resumed run draws the same values) and the rank (each torchrun rank draws its own)."""
        from facerestore.train.data import step_seed

        g = torch.Generator().manual_seed(step_seed(int(self.cfg.seed), int(self.step), int(self.rank), stream=13))
        u, a = torch.rand(batch, generator=g), torch.rand(batch, generator=g)
        return torch.where(u < self.alpha_random, a, torch.ones(batch)).to(self.device)

    def losses(self, out: torch.Tensor, hq: torch.Tensor) -> dict[str, torch.Tensor]:
        """The weighted terms for output ``out`` (B, 3, O, O) against ground truth ``hq`` (B, 3, S, S)."""
        pred = F.adaptive_avg_pool2d(out, hq.shape[-2:]) if out.shape[-2:] != hq.shape[-2:] else out
        terms = {"l1": self.weights["l1"] * (pred - hq).abs().mean()}
        if self.weights["pyramid"]:
            terms["pyramid"] = self.weights["pyramid"] * sum(
                (F.avg_pool2d(pred, k) - F.avg_pool2d(hq, k)).abs().mean() for k in (2, 4))
        if self.identity is not None:
            terms["identity"] = self.identity(pred.clamp(0, 1), hq)
        return terms

    def train_step(self, lq, hq, optimizers, autocast, scaler) -> dict[str, float]:
        net = self.nets["generator"]
        inner = self.generator
        d_net = self.nets.get("discriminator")
        alphas = self._alphas(lq.shape[0])
        if d_net is not None:
            d_net.requires_grad_(False)
        with autocast():
            out, ws = net(lq, alphas, return_latents=True)
            terms = self.losses(out.float(), hq)
            if self.weights["latent"]:
                terms["latent"] = self.weights["latent"] * (ws - inner.encoder.w_avg).square().mean()
            if d_net is not None:
                fake = F.adaptive_avg_pool2d(out.float(), hq.shape[-2:]) * 2 - 1
                terms["adversarial"] = self.weights["adversarial"] * F.softplus(-d_net(fake).float()).mean()
            loss = sum(terms.values())
        step_with_scaler(loss, optimizers["generator"], scaler, net.parameters(), self.cfg.optim.grad_clip)
        logs = {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in terms.items()}}
        if d_net is not None:
            from facerestore.train.stylegan2 import discriminator_step

            logs.update(discriminator_step(d_net, fake, hq * 2 - 1, optimizers["discriminator"], step=self.step,
                                           r1_gamma=self.r1_gamma, r1_interval=self.r1_interval, autocast=autocast,
                                           scaler=scaler, grad_clip=self.cfg.optim.grad_clip))
        return logs

    @torch.no_grad()
    def infer(self, net, lq: torch.Tensor) -> torch.Tensor:
        out = net(lq)
        return F.adaptive_avg_pool2d(out, lq.shape[-2:]).clamp(0, 1)

    def export_metadata(self) -> dict[str, Any]:
        model = {k: v for k, v in self.cfg.model.items() if k not in _GAN_KEYS}  # the restorer's options only
        model.setdefault("in_size", self.cfg.data.size)
        return {"method": self.cfg.method, "model": model, "size": int(model.get("out_size", 512)),
                "trained_on": [self.cfg.data.task]}
