"""ISPL training adapter for ``facerestore.train`` (``method: ispl`` in a training config).

One step (order of the authors' pix2pix code: generator first, then discriminator):

- G: ``fake = G(lq, fidelity)`` with a random per-sample ``fidelity`` (``ISPLGenerator.sample_fidelity``:
  1 with probability ``fidelity_p_full``, else U(0, 1)) so that every sub-model ISP(k, n) is trained and
  the test-time knob is meaningful. Loss = ``gan`` * LSGAN + feature matching (weight ``fm``) +
  ``perceptual`` * perceptual (backbone named explicitly by ``model.perceptual_backbone``) +
  ``pixel`` * per-sample-weighted L1 + ``identity`` * identity distance (``train.losses.IdentityLoss``:
  dlib recogniser embeddings, the offline face-network substitute for VGG; joins in the adversarial phase).
- D: multi-scale conditional PatchGAN on [lq, image], LSGAN to 1 (real) / 0 (fake, detached).

Adversarial warm-up (``model.adversarial_start``, a step index, default 0): before it the generator is
trained with the pixel term alone, unweighted over all sampled fidelities, and D is not updated (G's
Adam uses ``model.warmup_betas``, default ``optim.betas``: L1 regression likes momentum, the GAN phase
keeps the paper's (0, 0.9)); from it on, the full objective above. This is ESRGAN's "PSNR-oriented
pre-training, then GAN fine-tuning": on a CPU budget of a few thousand steps the adversarial game started
from a random generator spends most of the budget on colours and layout that L1 learns several times
faster (and a GAN-free step costs about 60% of a full one).

The L1 pixel term is our addition (the authors use none): with a compact network, a few thousand CPU
steps and no VGG perceptual term available offline, adversarial + feature-matching losses alone
converge too slowly to give a usable restorer; L1 anchors colours and low frequencies from the first
steps. It is weighted per sample by ``fidelity ** pixel_fidelity_power`` so that low fidelity leaves
more room to the adversarial terms (the perception end of the knob).

Config (``model`` keys): ``generator`` (a name of ``methods.ispl.configs``, e.g. "ispl-compact-128"),
``generator_params`` (overrides of its ``ISPLConfig`` fields), ``disc`` (``MultiscaleDiscriminator``
kwargs, e.g. ``{ndf: 32, n_layers: 3, num_d: 2}``), ``perceptual_backbone`` ("vgg19", "vgg16" or
"none" — required when ``losses.perceptual`` > 0, never chosen silently), ``fidelity_p_full`` (0.5),
``pixel_fidelity_power`` (1.0). ``losses``: ``gan`` (1), ``fm`` (10), ``perceptual`` (10), ``pixel`` (0),
``identity`` (0).
Optimisers: Adam with ``optim.betas`` (paper: (0, 0.9)), G at ``optim.lr``, D at ``optim.lr_d``.
AMP: forward passes run under the trainer's autocast; LSGAN/feature-matching terms are computed in
float32 and both optimisers step through the shared GradScaler.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import torch
from torch import nn

from facerestore.errors import InputError
from facerestore.methods.ispl.configs import get_config
from facerestore.methods.ispl.discriminator import MultiscaleDiscriminator
from facerestore.methods.ispl.generator import ISPLConfig, ISPLGenerator
from facerestore.methods.ispl.losses import (
    FEATURE_NORMS,
    PerceptualLoss,
    discriminator_losses,
    feature_matching_loss,
    lsgan_loss,
)
from facerestore.train.adapter import TrainAdapter, step_with_scaler, unwrap
from facerestore.train.data import step_seed
from facerestore.train.losses import IdentityLoss

__all__ = ["ISPLAdapter", "generator_config_from_model"]

_MODEL_KEYS = {"generator", "generator_params", "disc", "perceptual_backbone", "fidelity_p_full",
               "pixel_fidelity_power", "adversarial_start", "warmup_betas", "feature_norm"}
_LOSS_KEYS = {"gan", "fm", "perceptual", "pixel", "identity"}

FIDELITY_STREAM = 11  # step_seed stream of the training fidelities


def generator_config_from_model(model: dict[str, Any], size: int) -> ISPLConfig:
    """The ``ISPLConfig`` described by a training config's ``model`` section at training size ``size``."""
    unknown = set(model) - _MODEL_KEYS
    if unknown:
        raise InputError(f"unknown ispl model key(s): {', '.join(sorted(unknown))}; "
                         f"use {', '.join(sorted(_MODEL_KEYS))}")
    named = get_config(model.get("generator", f"ispl-compact-{size}"))
    if named.kind != "ispl":
        raise InputError(f"training supports ISPL generators only, {named.name!r} is {named.kind!r}")
    params = {**named.params, **(model.get("generator_params") or {}), "size": size}
    valid = {f.name for f in fields(ISPLConfig)}
    bad = set(params) - valid
    if bad:
        raise InputError(f"unknown generator_params: {', '.join(sorted(bad))}")
    return ISPLConfig(**params)


class ISPLAdapter(TrainAdapter):
    """ISPL generator + multi-scale discriminator (see the module docstring)."""

    def __init__(self, cfg, device: torch.device) -> None:
        super().__init__(cfg, device)
        model = dict(cfg.model)
        try:
            self.gen_config = generator_config_from_model(model, cfg.data.size)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"ispl model: {exc}") from None
        unknown = set(cfg.losses) - _LOSS_KEYS
        if unknown:
            raise InputError(f"unknown ispl loss(es): {', '.join(sorted(unknown))}; "
                             f"use {', '.join(sorted(_LOSS_KEYS))}")
        self.w = {"gan": 1.0, "fm": 10.0, "perceptual": 10.0, "pixel": 0.0, "identity": 0.0,
                  **{k: float(v) for k, v in cfg.losses.items()}}
        try:
            self.p_full = float(model.get("fidelity_p_full", 0.5))
            self.pixel_power = float(model.get("pixel_fidelity_power", 1.0))
            self.adversarial_start = int(model.get("adversarial_start", 0))
            self.warmup_betas = tuple(float(b) for b in model.get("warmup_betas", cfg.optim.betas))
        except (TypeError, ValueError):
            raise InputError("ispl model: fidelity_p_full, pixel_fidelity_power and adversarial_start are numbers, "
                             "warmup_betas two numbers") from None
        if not 0.0 <= self.p_full <= 1.0:
            raise InputError(f"model.fidelity_p_full is a probability in [0, 1], got {self.p_full}")
        if not self.pixel_power >= 0.0:  # negative: low-fidelity samples would weigh most, the opposite of intended
            raise InputError(f"model.pixel_fidelity_power must be >= 0, got {self.pixel_power}")
        if self.adversarial_start < 0:
            raise InputError("model.adversarial_start must be a step index >= 0")
        # paper 000 eq. 12's mean squared feature distance by default; "l1": the released code's (our shipped
        # ISPL configs, which reproduce the built-in weights)
        self.feature_norm = model.get("feature_norm", "l2")
        if self.feature_norm not in FEATURE_NORMS:
            raise InputError(f"model.feature_norm must be one of {', '.join(FEATURE_NORMS)}, got {self.feature_norm!r}")
        if len(self.warmup_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.warmup_betas):
            raise InputError("model.warmup_betas must be two numbers in [0, 1), e.g. [0.9, 0.99]")
        if self.adversarial_start > 0 and self.w["pixel"] <= 0:
            raise InputError("model.adversarial_start > 0 needs losses.pixel > 0 (the warm-up trains L1 alone)")
        disc = {"input_nc": 6, **(model.get("disc") or {})}
        try:
            self.nets = {
                "generator": ISPLGenerator(config=self.gen_config).to(device),
                "discriminator": MultiscaleDiscriminator(**disc).to(device),
            }
        except (TypeError, ValueError) as exc:  # an unknown or invalid generator_params / disc option
            raise InputError(f"ispl model: {exc}") from None
        self.perceptual: PerceptualLoss | None = None
        if self.w["perceptual"] > 0:
            backbone = model.get("perceptual_backbone")
            if backbone is None:
                raise InputError("losses.perceptual > 0 needs model.perceptual_backbone: 'vgg19', 'vgg16' or 'none'")
            self.perceptual = PerceptualLoss(backbone=backbone, weight=self.w["perceptual"],
                                             norm=self.feature_norm).to(device)
            if self.perceptual.net is None:
                self.perceptual = None  # "none": the term is off (PerceptualLoss logged a warning)
        self.identity: IdentityLoss | None = None
        if self.w["identity"] > 0:
            self.identity = IdentityLoss(weight=self.w["identity"]).to(device)

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        o = self.cfg.optim
        return {
            "generator": torch.optim.Adam(self.nets["generator"].parameters(), lr=o.lr, betas=o.betas,
                                          weight_decay=o.weight_decay),
            "discriminator": torch.optim.Adam(self.nets["discriminator"].parameters(), lr=o.lr_d, betas=o.betas,
                                              weight_decay=o.weight_decay),
        }

    def fidelities(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """This step's training fidelities (B,): a function of (seed, step, rank), so a resumed run draws the same
        ones and each torchrun rank draws its own (one shared draw made the whole global batch one fidelity)."""
        g = torch.Generator().manual_seed(step_seed(self.cfg.seed, self.step, self.rank, stream=FIDELITY_STREAM))
        return ISPLGenerator.sample_fidelity(batch, g, self.p_full, device)

    def _set_d_grad(self, flag: bool) -> None:
        d = self.nets["discriminator"]
        if d is unwrap(d):  # under DDP every parameter must keep requires_grad (the reducer expects them)
            d.requires_grad_(flag)

    def train_step(self, lq, hq, optimizers, autocast, scaler) -> dict[str, Any]:
        g_net, d_net = self.nets["generator"], self.nets["discriminator"]
        fid = self.fidelities(lq.shape[0], lq.device)
        warm = self.step < self.adversarial_start
        for group in optimizers["generator"].param_groups:  # set every step: a function of the step, resumable
            group["betas"] = self.warmup_betas if warm else tuple(self.cfg.optim.betas)
        if warm:
            return self._pixel_step(lq, hq, fid, optimizers, autocast, scaler)
        # --- generator step -------------------------------------------------------------------------
        self._set_d_grad(False)
        with autocast():
            fake = g_net(lq, fid)
            pred_fake = d_net(fake, lq)
            with torch.no_grad():
                pred_real = d_net(hq, lq)
        fake32 = fake.float()
        pred_fake = [[t.float() for t in s] for s in pred_fake]
        pred_real = [[t.float() for t in s] for s in pred_real]
        terms = {"gan": self.w["gan"] * lsgan_loss(pred_fake, True),
                 "fm": feature_matching_loss(pred_fake, pred_real, self.w["fm"], self.feature_norm)}
        if self.perceptual is not None:
            with autocast():
                terms["perceptual"] = self.perceptual(fake, hq).float()
        if self.identity is not None:
            terms["identity"] = self.identity(fake32, hq)
        if self.w["pixel"] > 0:
            per_sample = (fake32 - hq.float()).abs().mean(dim=(1, 2, 3))
            weight = fid.float() ** self.pixel_power
            terms["pixel"] = self.w["pixel"] * (weight * per_sample).sum() / weight.sum().clamp_min(1e-8)
        g_loss = sum(terms.values())
        step_with_scaler(g_loss, optimizers["generator"], scaler, g_net.parameters(), self.cfg.optim.grad_clip)
        self._set_d_grad(True)
        # --- discriminator step ---------------------------------------------------------------------
        with autocast():
            d_fake = d_net(fake.detach(), lq)
            d_real = d_net(hq, lq)
        d_terms = discriminator_losses([[t.float() for t in s] for s in d_fake],
                                       [[t.float() for t in s] for s in d_real])
        step_with_scaler(d_terms["total"], optimizers["discriminator"], scaler, d_net.parameters(),
                         self.cfg.optim.grad_clip)
        logs = {f"loss/g_{k}": float(v.detach()) for k, v in terms.items()}
        logs["loss/g_total"] = float(g_loss.detach())
        logs.update({f"loss/d_{k}": float(v.detach()) for k, v in d_terms.items()})
        logs["fidelity_mean"] = float(fid.mean())
        return logs

    def _pixel_step(self, lq, hq, fid, optimizers, autocast, scaler) -> dict[str, Any]:
        """Warm-up step: L1 over every sampled fidelity, no discriminator (see the module docstring)."""
        g_net = self.nets["generator"]
        with autocast():
            fake = g_net(lq, fid)
        loss = self.w["pixel"] * (fake.float() - hq.float()).abs().mean()
        step_with_scaler(loss, optimizers["generator"], scaler, g_net.parameters(), self.cfg.optim.grad_clip)
        return {"loss/g_pixel": float(loss.detach()), "loss/g_total": float(loss.detach()),
                "fidelity_mean": float(fid.mean())}

    @torch.no_grad()
    def infer(self, net: nn.Module, lq: torch.Tensor) -> torch.Tensor:
        """Validation at fidelity 1 (the distortion end of the knob; the model card's main setting)."""
        return net(lq, 1.0).clamp(0, 1)

    def export_metadata(self) -> dict[str, Any]:
        return {"method": "ispl", "kind": "ispl", "size": self.cfg.data.size,
                "generator": self.gen_config.to_dict(), "model": dict(self.cfg.model)}
