"""Robust unsupervised StyleGAN inversion (paper 002, Alg. 1): W -> W+ -> W++ with NGD.

    result = robust_invert(G, y, f_hat)          # y: degraded target, f_hat: differentiable degradation
    result.image                                 # (B, 3, R, R) clean estimate G(w++) in [0, 1]

Phase I optimises one w (B, 512) from ``w_avg``; phase II repeats it to W+ (B, num_ws, 512); phase III
gives every output filter of every modulated layer its own w (W++, see ``nn.stylegan2``). Each phase
runs NGD (every 512-d vector moves by exactly its lr per step) on ``loss(f_hat(G(w)), y)``.
Hyper-parameters are the paper's and are the same for every task: 150 steps per phase, lr 0.08 / 0.02 /
0.005. The generator runs with its constant noise maps (as in the authors' code). Beyond the paper, an optional
``identity`` term of the clean image G(w) (reference photos: :mod:`.refs`) joins the loss of every phase.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from facerestore.methods.inversion.losses import MultiResolutionLoss
from facerestore.methods.inversion.ngd import ngd_update
from facerestore.nn.stylegan2 import Generator, latent_dtype, render_unit

__all__ = [
    "PAPER_LRS", "PAPER_STEPS", "PHASES", "InversionResult", "check_work_resolution", "inpainting_mask",
    "robust_invert",
]

PHASES = ("W", "W+", "W++")
PAPER_STEPS = (150, 150, 150)
PAPER_LRS = (0.08, 0.02, 0.005)


@dataclass
class InversionResult:
    """Output of :func:`robust_invert` (all tensors detached).

    image: (B, 3, R, R) G(w++) clamped to [0, 1]; w: (B, w_dim) after phase I; w_plus: (B, num_ws, w_dim)
    after phase II; w_pp: W++ after phase III (per-layer list, or the dense tensor for ``wpp_layout="dense"``);
    phase_losses: phase name -> per-step loss (batch mean, before that step's update; with an identity term,
    its value included); final_loss: (B,) image loss of the returned latents (without the identity term);
    loss_kind: "lpips" or "substitute"; ref_distance: (B,) dlib distance of ``image`` to the references' mean
    embedding when references guided the inversion (set by the restorer), else None; work_resolution: the side
    at which the restorer's blind mode compared the faces with the prior (None outside the blind mode);
    projection_filters: the reduction filter of each image the restorer projected its output through (its
    ``fidelity``; None when the output is ``image`` itself); projection_detail: the share of ``image``'s detail
    beyond the observation that the output kept (the restorer's ``detail``; None when the output is ``image``).
    """

    image: torch.Tensor
    w: torch.Tensor
    w_plus: torch.Tensor
    w_pp: Any
    phase_losses: dict[str, list[float]] = field(default_factory=dict)
    final_loss: torch.Tensor | None = None
    loss_kind: str = ""
    ref_distance: torch.Tensor | None = None
    work_resolution: int | None = None
    projection_filters: list[str] | None = None
    projection_detail: float | None = None


def inpainting_mask(records: Sequence[dict] | dict, out_size: Sequence[int]) -> torch.Tensor | None:
    """Known-pixel mask (B, 1, h, w) of the *last* op of each task record when it is a stroke mask, else None.

    Paper 002 applies inpainting last (restoration order inpaint o deartifact o denoise o upsample), so the
    mask lives at the target's resolution; records whose mask is not the last op get an all-ones mask.
    """
    from facerestore.degrade import make_generator, stroke_mask

    recs = [records] if isinstance(records, dict) else list(records)
    masks, any_mask = [], False
    h, w = int(out_size[0]), int(out_size[1])
    for rec in recs:
        last = rec["ops"][-1] if rec.get("ops") else {}
        if last.get("op") == "mask" and tuple(last["size"]) == (h, w):
            m, _ = stroke_mask((h, w), int(last["n_strokes"]), width=float(last["width"]),
                               generator=make_generator(int(last["seed"])))
            masks.append(m)
            any_mask = True
        else:
            masks.append(torch.ones(1, 1, h, w))
    return torch.cat(masks) if any_mask else None


def check_work_resolution(G: Generator, resolution: int | None) -> int | None:
    """``resolution`` if ``G`` renders it cheaply (a power of two below its own, for generators whose synthesis
    has ``check_resolution``, e.g. MobileStyleGAN's box averages), None for the generator's own; else ValueError."""
    if resolution is None or int(resolution) == G.img_resolution:
        return None
    check = getattr(G.synthesis, "check_resolution", None)
    if check is None:
        raise ValueError(f"this generator renders only its own {G.img_resolution} px, not {resolution} px")
    r = check(int(resolution))
    if r > G.img_resolution:
        raise ValueError(f"work resolution {r} px is above the generator's {G.img_resolution} px")
    return r


def robust_invert(
    G: Generator,
    target: torch.Tensor,
    f_hat: Callable[[torch.Tensor], torch.Tensor],
    loss: MultiResolutionLoss,
    *,
    mask: torch.Tensor | None = None,
    steps: Sequence[int] = PAPER_STEPS,
    lrs: Sequence[float] = PAPER_LRS,
    w_init: torch.Tensor | None = None,
    seed: int | Sequence[int] = 0,
    wpp_layout: str = "layers",
    callback: Callable[[str, int, float], None] | None = None,
    identity: Callable[[torch.Tensor], torch.Tensor] | None = None,
    resolution: int | None = None,
) -> InversionResult:
    """Invert ``target`` (B, 3, h, w) in [0, 1] through ``f_hat`` o G with paper 002's 3-phase NGD.

    f_hat: differentiable degradation (B, 3, R, R) -> (B, 3, h, w), e.g. ``degrade.surrogate(task, params)``.
    mask: (B|1, 1, h, w) known pixels for the inpainting noise trick (see :func:`inpainting_mask`).
    steps / lrs: per phase (W, W+, W++). w_init: (w_dim,) or (B, w_dim), default ``G.mapping.w_avg``.
    seed: seeds the inpainting noise (the only randomness besides stochastic surrogates, which carry
    their own record-seeded generators): one int for every face, or one per face (e.g. from each face's record,
    :func:`facerestore.degrade.tasks.record_seed`), never from a face's position in the batch.
    wpp_layout: "layers" (one w per output filter of every layer,
    the paper) or "dense" (the authors' code layout in which a toRGB layer shares the rows of the next
    block's first conv). callback(phase, step, loss) sees every step. Generator weights are not modified.
    identity: an extra per-sample loss ``identity(G(w)) -> (B,)`` of the clean generated image as rendered for
    the fit (R x R, or r x r with ``resolution``; before ``f_hat``), added in every phase
    (``ReferenceIdentity.term``: the pull toward reference photos); None (the paper) leaves every step exactly as
    without it.
    resolution: the side r the optimisation renders G at (beyond the paper, for speed): f_hat then maps (B, 3, r,
    r) images, and for MobileStyleGAN G's r px image is exactly the box average of its full image, so inverting
    at r is the paper's inversion through f_hat o box-downsampling; ``image`` is still rendered at the full
    resolution (the prior's detail above r comes from the latents), ``final_loss`` at r. None: the full size.
    Latents are optimised in float32 whatever the generator's precision (a bf16 generator casts them itself):
    NGD's smallest steps (lr 0.005 on unit-scale vectors) are below bf16's resolution.
    """
    if len(steps) != 3 or len(lrs) != 3:
        raise ValueError("steps and lrs need one value per phase (W, W+, W++)")
    if wpp_layout not in ("layers", "dense"):
        raise ValueError(f"wpp_layout must be 'layers' or 'dense', got {wpp_layout!r}")
    dev = G.mapping.w_avg.device
    dtype = latent_dtype(G)
    resolution = check_work_resolution(G, resolution)
    b = target.shape[0]
    target = target.to(device=dev, dtype=dtype)
    # one noise stream per face (inpainting), seeded by what the face is, not where it sits: a face's result does
    # not depend on the other faces of its batch
    seeds = [int(seed)] * b if isinstance(seed, int) else [int(s) for s in seed]
    if len(seeds) != b:
        raise ValueError(f"{len(seeds)} seeds for {b} faces")
    gen = [torch.Generator().manual_seed(s) for s in seeds]
    init = G.mapping.w_avg if w_init is None else w_init
    w = init.detach().to(device=dev, dtype=dtype).reshape(-1, G.w_dim).expand(b, -1).clone()

    requires = [p.requires_grad for p in G.parameters()]
    G.requires_grad_(False)  # only the latents are optimised; avoids weight-gradient work
    losses: dict[str, list[float]] = {}

    def run_phase(name: str, params: list[torch.Tensor], latents: Callable[[], Any], n: int, lr: float) -> None:
        hist = losses.setdefault(name, [])
        for p in params:
            p.requires_grad_(True)
        for i in range(int(n)):
            image = render_unit(G, latents(), resolution=resolution)
            per_sample = loss(f_hat(image), target, mask, gen)
            if identity is not None:
                per_sample = per_sample + identity(image)
            total = per_sample.sum()  # per-sample gradients do not depend on the batch size
            grads = torch.autograd.grad(total, params)
            for p, g in zip(params, grads):
                ngd_update(p, g, lr)
            value = float(per_sample.detach().mean())
            hist.append(value)
            if callback is not None:
                callback(name, i, value)
        for p in params:
            p.requires_grad_(False)

    try:
        with torch.enable_grad():
            run_phase("W", [w], lambda: w, steps[0], lrs[0])
            w_plus = w.detach().unsqueeze(1).repeat(1, G.num_ws, 1)
            run_phase("W+", [w_plus], lambda: w_plus, steps[1], lrs[1])
            if wpp_layout == "layers":
                w_pp: Any = G.synthesis.wpp_from_wplus(w_plus.detach())
                params = list(w_pp)
                run_phase("W++", params, lambda: params, steps[2], lrs[2])
            else:
                widest = max(s.out_channels for s in G.synthesis.layer_specs)
                w_pp = w_plus.detach().unsqueeze(2).expand(-1, -1, widest, -1).clone()
                run_phase("W++", [w_pp], lambda: G.synthesis.wpp_from_dense(w_pp), steps[2], lrs[2])
        with torch.no_grad():
            lat = w_pp if wpp_layout == "layers" else G.synthesis.wpp_from_dense(w_pp)
            raw = render_unit(G, lat)
            seen = raw if resolution is None else render_unit(G, lat, resolution=resolution)
            final = loss(f_hat(seen), target, mask, [torch.Generator().manual_seed(s) for s in seeds])
    finally:
        for p, r in zip(G.parameters(), requires):
            p.requires_grad_(r)
    w_pp_out = [t.detach() for t in w_pp] if isinstance(w_pp, list) else w_pp.detach()
    return InversionResult(
        image=raw.clamp(0.0, 1.0).detach(),
        w=w.detach(),
        w_plus=w_plus.detach(),
        w_pp=w_pp_out,
        phase_losses=losses,
        final_loss=final.detach(),
        loss_kind=loss.kind,
    )
