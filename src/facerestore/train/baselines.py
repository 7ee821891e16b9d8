"""Baseline training adapters: a plain U-Net trained with L1 (the comparison of our model cards)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from facerestore.errors import InputError
from facerestore.nn.unet import UNet
from facerestore.train.adapter import TrainAdapter, step_with_scaler


class UNetL1Adapter(TrainAdapter):
    """U-Net + L1 loss; model options: ch, depth, max_ch (see facerestore.nn.unet.UNet)."""

    def __init__(self, cfg, device) -> None:
        super().__init__(cfg, device)
        if cfg.losses:  # its loss is L1 alone: other weights would silently do nothing
            raise InputError(f"unet-l1 takes no losses: settings (its loss is L1); got {', '.join(sorted(cfg.losses))}")
        try:
            net = UNet(**cfg.model)
        except (TypeError, ValueError, ZeroDivisionError) as exc:  # an unknown key, a bad width
            raise InputError(f"bad unet-l1 model settings ({str(exc).splitlines()[0]}); model options: ch, depth, "
                             "max_ch") from None
        self.nets = {"generator": net.to(device)}  # out of memory is no settings mistake

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        o = self.cfg.optim
        return {"generator": torch.optim.Adam(self.nets["generator"].parameters(), lr=o.lr, betas=o.betas,
                                              weight_decay=o.weight_decay)}

    def train_step(self, lq, hq, optimizers, autocast, scaler) -> dict[str, Any]:
        with autocast():
            loss = F.l1_loss(self.nets["generator"](lq), hq)
        step_with_scaler(loss, optimizers["generator"], scaler, self.nets["generator"].parameters(),
                         self.cfg.optim.grad_clip)
        return {"loss/l1": float(loss.detach())}
