"""The method-specific half of training: the ``TrainAdapter`` base class.

The generic loop (``trainer.py``) owns data, schedules, EMA, checkpoints, logging and DDP; an adapter
owns the networks, the optimisers and one training step. The framework's own adapters (the ``unet-l1``
baseline, the ``stylegan2`` prior) are listed in ``trainer.FRAMEWORK_ADAPTERS``; a restoration method names
its adapter in its spec (``facerestore.methods.registry.training_adapter`` finds both).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from facerestore.train.config import TrainConfig


def unwrap(module: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the module itself)."""
    return getattr(module, "module", module)


class TrainAdapter:
    """Base class. Subclasses set ``self.nets`` (name -> module; "generator" is the restorer that EMA
    tracks and that is exported) and implement ``build_optimizers`` and ``train_step``."""

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.nets: dict[str, nn.Module] = {}
        self.step = 0  # index of the step being taken; set by the trainer before every train_step
        self.rank = 0  # this process's rank under torchrun (set by the trainer): seeds of per-rank draws

    @property
    def generator(self) -> nn.Module:
        return unwrap(self.nets["generator"])

    def wrap_ddp(self, local_rank: int | None) -> None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [local_rank] if local_rank is not None else None
        self.nets = {k: DDP(v, device_ids=ids) if any(p.requires_grad for p in v.parameters()) else v
                     for k, v in self.nets.items()}

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def train_step(
        self,
        lq: torch.Tensor,
        hq: torch.Tensor,
        optimizers: dict[str, torch.optim.Optimizer],
        autocast: Callable[[], AbstractContextManager[Any]],
        scaler: torch.amp.GradScaler | None,
    ) -> dict[str, float]:
        """One optimisation step on a batch; returns scalar logs (floats)."""
        raise NotImplementedError

    @torch.no_grad()
    def infer(self, net: nn.Module, lq: torch.Tensor) -> torch.Tensor:
        """Restore ``lq`` with ``net`` (the EMA generator during validation)."""
        return net(lq).clamp(0, 1)

    def export_metadata(self) -> dict[str, Any]:
        """Architecture description stored next to exported weights (enough to rebuild the network)."""
        return {"method": self.cfg.method, "model": dict(self.cfg.model), "size": self.cfg.data.size}


def step_with_scaler(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
                     params: Any = None, grad_clip: float = 0.0) -> None:
    """Backward + optimiser step, through the fp16 GradScaler when one is given."""
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        if grad_clip and params is not None:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        if grad_clip and params is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
