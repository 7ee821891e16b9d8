"""The generative-prior restorer behind the ``Restorer`` interface (``prior-sft``).

An encoder trained by us steers the frozen MobileStyleGAN FFHQ prior (:mod:`.network`): 512 px faces whose texture
comes from the prior and whose layout and identity come from the input. ``--fidelity`` in [0, 1] is the strength of
the spatial steering (0 = the prior's face from the latents alone, 1 = fully steered, the default); it was trained
over that range (``alpha_random`` of :mod:`.train`).

Refinement (``refine_steps`` > 0; ``--steps N`` on the command line): N steps of paper 002's NGD on the encoder's
W+ latents, comparing the output with the input at 64 px (:mod:`.refine`). References (``refs``, ``--refs DIR``):
an identity term toward photos of the same person joins the refinement (:mod:`facerestore.methods.inversion.refs`,
the same term and check as robust-inversion and rls); without a refinement budget (``refine_steps=None``),
references start ``REFS_STEPS`` steps, since a single encoder pass cannot use them; ``refine_steps=0`` keeps the
single pass and leaves references unused. Faces the check takes for another person are
refused unless ``force_refs``.

Needs the prior in the cache (``facerestore models download mobilestylegan-ffhq-1024``; non-commercial weights).
Default encoder weights: ``zoo/builtin/prior-sft-256.safetensors`` (model card ``prior-sft-256.md``); ``weights=``
may name any ``facerestore train`` export (``.safetensors`` with its ``.json`` description next to it).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from facerestore.errors import InputError
from facerestore.methods.inversion.refs import ReferenceCache, check_ref_weight
from facerestore.methods.inversion.restorer import DEFAULT_REF_WEIGHT
from facerestore.methods.prior_sft.refine import DEFAULT_REFINE_LR, DEFAULT_REFINE_SIDE, RefineResult, refine
from facerestore.methods.prior_sft.train import PriorSFTAdapter, build_prior_sft
from facerestore.methods.restorer import Restorer, StepProgress
from facerestore.methods.spec import MethodSpec
from facerestore.nn.safe_weights import check_settings

__all__ = ["BUILTIN_NAME", "REFS_STEPS", "PriorSFTRestorer", "load_prior_sft"]

BUILTIN_NAME = "prior-sft-256"
# ref_weight: robust-inversion's DEFAULT_REF_WEIGHT, validated for prior-sft on 24 synthetic validation faces with
# MobileFace as the judge (benchmarks/results/ref_weight_prior-sft.md): 0.25 -0.026, 1 -0.032 against no term;
# 1 - 0.25 not confirmed (-0.006 [-0.012, +0.001]) while dlib's distance moves 3x more: kept at 0.25
REFS_STEPS = 20  # refinement steps started by references when no budget was given (about 13 s per face, bf16 CPU)
PRIOR_LICENCE = ("encoder: Apache-2.0 (ours), trained on FFHQ (CC BY-NC-SA 4.0) and StyleGAN samples: "
                 "non-commercial; decoder: "
                 "MobileStyleGAN, non-commercial (distilled from NVIDIA's StyleGAN2 FFHQ)")


# the numbers an export's "model" may hold (train.build_prior_sft reads them; the network checks how they combine);
# "prior" (a zoo name or folder, resolved by the loader) and "sft_resolutions" are checked apart
SETTINGS = {"in_size": ("pow2", 32, 1024), "width": ("int", 1, 256), "max_channels": ("int", 1, 1024),
            "latent_gain": ("float", 0.0, 1e4), "colour_resolution": ("int", 0, 1024), "low_transfer": ("int", 0, 128),
            "out_size": ("pow2", 4, 1024), "decoder_dtype": ("choice", ("fp32", "bf16", "fp16")),
            "alpha_random": ("float", 0.0, 1.0)}


def _check_model(model: Any, where: str) -> dict[str, Any]:
    if not isinstance(model, dict):
        raise InputError(f"{where}: 'model' must be a mapping of prior-sft options")
    rest = {k: v for k, v in model.items() if k not in ("prior", "sft_resolutions")}
    out = check_settings(rest, SETTINGS, where)
    prior = model.get("prior", "mobilestylegan-ffhq-1024")
    if not isinstance(prior, str):
        raise InputError(f"{where}: prior must be a zoo name or a folder, got {str(prior)[:40]!r}")
    res = model.get("sft_resolutions", [16, 32, 64, 128, 256])
    if not isinstance(res, list) or len(res) > 10 or not all(isinstance(r, int) and 4 <= r <= 1024 for r in res):
        raise InputError(f"{where}: sft_resolutions must be a list of at most 10 whole numbers in 4..1024")
    return {**out, "prior": prior, "sft_resolutions": res}


def load_prior_sft(weights: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(network in eval mode, description) from an encoder ``.safetensors`` and its ``.json`` next to it."""
    from facerestore.nn.safe_weights import (
        check_shapes,
        load_safetensors,
        open_safetensors,
        weights_and_description,
    )

    path, desc = weights_and_description(weights, "prior-sft")
    # checked against sane bounds before anything is built: a crafted description must not allocate terabytes
    model = _check_model(desc.get("model"), f"{path.with_suffix('.json').name} (prior-sft)")
    # the decoder's training precision (decoder_dtype) is not the restorer's: inference runs in the restorer's
    # precision (fp32, or bf16 / fp16 after set_half), which is what its records say
    net = build_prior_sft({**model, "decoder_dtype": "fp32"})
    _, found = open_safetensors(path, "prior-sft weights")
    check_shapes({k: tuple(v.shape) for k, v in net.state_dict().items()}, found, path.name)
    state = load_safetensors(path, "prior-sft weights")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    net.load_state_dict(state, strict=True)
    return net.eval(), desc


class PriorSFTRestorer(Restorer):
    """MobileStyleGAN prior steered by a trained encoder (see the module docstring).

    Args:
        weights: an encoder export (default the built-in ``prior-sft-256``).
        refine_steps: NGD steps on the encoder's W+ latents per call (None, the default: 0, or ``REFS_STEPS`` when
            references are given; 0: always the encoder's output).
        refine_lr: each W+ row's move per step. refine_side: the comparison scale in px (64).
        ref_weight: weight of the identity term when ``refs`` are given, per loss level and per unit of dlib distance
            (robust-inversion's, ``DEFAULT_REF_WEIGHT``); 0 ignores references.
        force_refs: use references that the check takes for another person (``--force-refs``).
        progress: a per-call progress bar while refining.
    """

    spec = MethodSpec(
        name="prior-sft",
        paper="ours",
        description="generative-prior restorer: an encoder (W+ latents + spatial feature transforms, the idea of "
        "GFPGAN / GPEN) steering the frozen MobileStyleGAN FFHQ prior; 512 px faces; --fidelity = steering "
        "strength; --steps N refines the latents (paper 002's NGD, 0.4 s a step with --half); --refs adds an "
        "identity pull; needs `facerestore models download mobilestylegan-ffhq-1024`",
        size=512,
        min_side=8,
        supports_fidelity=True,
        uses_refs=True,
        precisions=("fp32", "bf16", "fp16"),
        weights=f"builtin:{BUILTIN_NAME}.safetensors",
        weights_licence=PRIOR_LICENCE,
        trainer=PriorSFTAdapter,
        trained_on=("realworld-gfpgan",),
    )
    default_fidelity = 1.0
    checks_refs = True  # the photo pipeline passes force_refs= to methods that check their references
    loss_kind = "substitute"  # the refinement's distance (multi-resolution L1 + SSIM; LPIPS-VGG is not used at 64 px)

    def __init__(self, weights: str | os.PathLike | None = None, *, refine_steps: int | None = None,
                 refine_lr: float = DEFAULT_REFINE_LR, refine_side: int = DEFAULT_REFINE_SIDE,
                 ref_weight: float = DEFAULT_REF_WEIGHT, force_refs: bool = False, progress: bool = True) -> None:
        super().__init__()
        if refine_steps is not None and (not isinstance(refine_steps, int) or isinstance(refine_steps, bool)
                                         or refine_steps < 0):
            raise InputError(f"prior-sft: refine_steps must be a whole number >= 0, got {refine_steps!r}")
        if not (isinstance(refine_lr, (int, float)) and 0 < float(refine_lr) <= 10):
            raise InputError(f"prior-sft: refine_lr must be a number in (0, 10], got {refine_lr!r}")
        if not (isinstance(refine_side, int) and 4 <= refine_side <= 512):
            raise InputError(f"prior-sft: refine_side must be a whole number in [4, 512] px, got {refine_side!r}")
        self.refine_steps, self.refine_lr, self.refine_side = refine_steps, float(refine_lr), refine_side
        self.ref_weight = check_ref_weight(ref_weight)
        self.force_refs, self.progress = bool(force_refs), bool(progress)
        self.last_refs_distance: float | None = None  # the reference check's distance of the last call
        self._refs = ReferenceCache()
        self._loss: Any = None
        self.net, self.description = load_prior_sft(self.weights_or_default(weights))
        # what these weights say of themselves (records and "trained on" lines): their output size and task
        trained_on = self.description.get("trained_on")
        changes: dict[str, Any] = {}
        if isinstance(trained_on, list) and trained_on and all(isinstance(t, str) for t in trained_on):
            changes["trained_on"] = tuple(trained_on)
        if int(self.net.out_size) != self.spec.size:
            changes["size"] = int(self.net.out_size)
        if changes:
            self.with_spec(**changes)

    @classmethod
    def budget_options(cls, steps: int) -> dict[str, Any]:
        """``--steps N``: N refinement steps per face (0 turns refinement off)."""
        if int(steps) < 0:
            raise InputError(f"--steps must be >= 0 for prior-sft (refinement steps), got {steps}")
        return {"refine_steps": int(steps)}

    def describe(self) -> dict[str, Any]:
        """The base record plus the refinement budget (None: none without references, REFS_STEPS with them)."""
        return {**super().describe(), "refine_steps": self.refine_steps}

    def unused_refs_reason(self) -> str | None:
        # references act only through a refinement, and only with a weight
        if self.refine_steps == 0:
            return "prior-sft uses references only through its refinement, which --steps 0 turns off"
        if self.ref_weight == 0:
            return "ref_weight is 0"
        return None

    def _refs_distances(self, x: torch.Tensor, refs: torch.Tensor) -> list[float] | None:
        if self.unused_refs_reason() is not None:
            return None
        return self._refs.get(refs, x.device).check_distances(x, self.spec.size)

    def _restore(self, x: torch.Tensor, *, fidelity: float | None, refs: torch.Tensor | None,
                 force_refs: bool | None = None, return_details: bool = False,
                 **options: Any) -> torch.Tensor | tuple[torch.Tensor, RefineResult]:
        """Degraded faces (B, 3, 512, 512) -> (B, 3, 512, 512). ``return_details``: also the :class:`RefineResult`
        (latents before and after refinement, the same without it; per-step losses). ``force_refs``: this call's
        override of the constructor's."""
        if options:
            raise InputError(f"prior-sft has no option(s) {', '.join(sorted(options))}")
        alpha = self.default_fidelity if fidelity is None else float(fidelity)
        self.last_refs_distance = None
        use_refs = refs is not None and self.unused_refs_reason() is None
        # None = no budget given: references start REFS_STEPS; an explicit 0 (--steps 0) turns refinement off
        steps = self.refine_steps if self.refine_steps is not None else (REFS_STEPS if use_refs else 0)
        if steps == 0:
            if not return_details:
                return self.net(x, alpha)
            out, ws = self.net(x, alpha, return_latents=True)
            return out, RefineResult(image=out.clamp(0, 1), ws=ws, start_ws=ws)
        if self._loss is None:
            from facerestore.methods.inversion.losses import make_loss

            self._loss = make_loss(self.loss_kind)
        identity = None
        if use_refs:
            from facerestore.methods.inversion.losses import num_levels

            force = self.force_refs if force_refs is None else bool(force_refs)
            weight = self.ref_weight * max(num_levels(self.refine_side, self._loss.min_side), 1)
            _, identity, self.last_refs_distance = self._refs.term_for(
                refs, x, self.spec.size, weight, force, x.device)
        with StepProgress(steps, "prior-sft refine", self.progress) as bar:
            result = refine(self.net, x, alpha, steps=steps, loss=self._loss, lr=self.refine_lr,
                            side=self.refine_side, identity=identity, callback=bar.update)
        return (result.image, result) if return_details else result.image
