"""Refinement of prior-sft's latents by paper 002's robust inversion, started from the encoder's estimate.

The encoder gives W+ latents and spatial maps in one pass (:mod:`.network`); ``refine`` then runs ``steps`` NGD
steps (paper 002's optimiser: every 512-d row of W+ moves by exactly ``lr`` per step) on the W+ latents alone, the
maps held fixed, minimising

    loss(down(G(w)), down(x)) [+ identity(G(w))]

``down``: area averaging to ``side`` px (64). The input is degraded in an unknown way, so the output is compared with
it only at the scale where every degradation preset still leaves the face faithful (x8 of 512 px is 64 px; blur
sigma 4 at 512 px is 0.5 px at 64; noise averages out): the refinement pulls the face's shapes toward the photo's
without pulling its blur or noise into the output. ``loss``: paper 002's multi-resolution distance
(:class:`facerestore.methods.inversion.losses.MultiResolutionLoss`, 64 -> 32 -> 16 px). ``identity``: the pull toward
reference photos of the same person (:mod:`facerestore.methods.inversion.refs`), on the full output.

Cost: one decoder forward and backward per step (about 0.4 s per 512 px face in bf16 on 2 CPU cores with the
CLI's allocator setting; the MobileStyleGAN decoder computes every block whatever resolution is asked for).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from facerestore.methods.inversion.losses import MultiResolutionLoss
from facerestore.methods.inversion.ngd import ngd_update

__all__ = ["DEFAULT_REFINE_LR", "DEFAULT_REFINE_SIDE", "RefineResult", "refine"]

DEFAULT_REFINE_SIDE = 64
# per-step move of each W+ row (NGD). MobileStyleGAN's W is small: samples lie about 9.8 from w_avg (norm 4.1), the
# encoder's latents about 1.4; chosen among 0.02 / 0.05 / 0.1 on 4 ffhq256 validation faces (docs/prior_sft.md)
DEFAULT_REFINE_LR = 0.05


@dataclass
class RefineResult:
    """image: (B, 3, out, out) refined output, clamped to [0, 1]; ws: (B, num_ws, w_dim) refined latents;
    start_ws: the encoder's latents; losses: per-step batch-mean loss (before that step's update, identity term
    included); final_loss: (B,) image loss of the returned latents, without the identity term."""

    image: torch.Tensor
    ws: torch.Tensor
    start_ws: torch.Tensor
    losses: list[float] = field(default_factory=list)
    final_loss: torch.Tensor | None = None


def _down(img: torch.Tensor, side: int) -> torch.Tensor:
    if img.shape[-1] == side and img.shape[-2] == side:
        return img
    return F.interpolate(img, size=(side, side), mode="area")


def refine(
    net: torch.nn.Module,
    x: torch.Tensor,
    alpha: float | torch.Tensor,
    *,
    steps: int,
    loss: MultiResolutionLoss,
    lr: float = DEFAULT_REFINE_LR,
    side: int = DEFAULT_REFINE_SIDE,
    identity: Callable[[torch.Tensor], torch.Tensor] | None = None,
    callback: Callable[[str, int, float], None] | None = None,
) -> RefineResult:
    """Refine the W+ latents of ``net`` (a :class:`.network.PriorSFTNet`) for the degraded faces ``x`` (B, 3, S, S)
    in [0, 1] (module docstring). ``steps`` >= 0 (0 returns the encoder's output), ``lr`` > 0 the NGD step,
    ``side`` the comparison scale in px (a power of two <= S is sensible), ``identity`` a per-sample loss of the
    output (B,), ``callback(phase, step, loss)`` sees every step. The network's parameters are not modified."""
    if int(steps) < 0 or not lr > 0 or int(side) < 4:
        raise ValueError(f"steps must be >= 0, lr > 0 and side >= 4, got {steps}, {lr}, {side}")
    with torch.no_grad():
        start, maps = net.encoder(x)
        maps = {r: tuple(m.detach() for m in pair) for r, pair in maps.items()}
    target = _down(x.float(), int(side))
    ws = start.detach().float().clone()  # NGD in float32 whatever the network's precision (bf16 would round steps)
    gen = torch.Generator().manual_seed(0)  # the loss draws noise only under a mask; there is none here
    history: list[float] = []
    with torch.enable_grad():
        for i in range(int(steps)):
            ws.requires_grad_(True)
            out = net.render(x, ws.to(start.dtype), maps, alpha)
            per_sample = loss(_down(out.float(), int(side)), target, None, gen)
            if identity is not None:
                per_sample = per_sample + identity(out)
            (grad,) = torch.autograd.grad(per_sample.sum(), [ws])  # per-sample steps do not depend on the batch
            ws = ngd_update(ws.detach(), grad, lr)
            value = float(per_sample.detach().mean())
            history.append(value)
            if callback is not None:
                callback("W+", i, value)
    with torch.no_grad():
        out = net.render(x, ws.to(start.dtype), maps, alpha)
        final = loss(_down(out.float(), int(side)), target, None, gen)
    return RefineResult(image=out.clamp(0, 1), ws=ws.detach(), start_ws=start.detach(), losses=history,
                        final_loss=final.detach())
