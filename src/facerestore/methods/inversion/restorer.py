"""``robust-inversion`` restorer: paper 002's unsupervised StyleGAN2 inversion behind the Restorer API.

    r = RobustInversionRestorer(generator=G, task="robust-upsample")      # or weights="ffhq.pkl"
    y, params = degrade.apply(x, "robust-upsample", level="M", generator=0)
    out = r.restore(y, params=params)                                     # (B, 3, R, R) in [0, 1]
    out, details = r.restore(y, params=params, return_details=True)      # details: InversionResult

The degraded input is the *target* y of the task (its size is the task's output size for the
generator's resolution). The task's records (``params`` from ``degrade.apply``) build the surrogate
``f_hat``; without them the restorer draws records for the task (seed 0), which is exact for every
paper-002 task except inpainting, whose stroke mask must be known (pass ``params``).

``refs`` (R, 3, S, S), aligned photos of the same person, add an identity term to every phase (beyond the paper;
:mod:`.refs`): ``ref_weight * L * d``, d the dlib distance between G(w) and the references' mean embedding and L
the number of levels of the multi-resolution loss (2 at 64 px, 6 at 1024 px), so that ``ref_weight`` compares d
with the loss of one level. Faces the check takes for another person are refused unless ``force_refs``.

``fidelity`` in [0, 1] (beyond the paper) moves the generator's image toward the images whose reduction is the
observation (:func:`~facerestore.degrade.project_resize`, with a smooth bicubic correction): 0 is the paper's output,
1 keeps the observation's content exactly and takes from the prior only the detail the reduction destroyed. It
applies where the observation is such a reduction: the blind mode (whole-photo faces, compared at their detail
side, and at half the generator's side at most: a face compared at full size keeps the prior's finest octave
rather than the input's pixels, noise included; a box average) and ``robust-upsample``, through the filter its
records name when the caller passes them (the degradation is known) and otherwise ``UNKNOWN_FILTER``; other tasks
keep the paper's output. Without a fidelity, ``robust-upsample`` runs at ``DEFAULT_FIDELITY`` and the
blind mode at 0: a real photo's face carries its blur at its detail side, and projecting onto it puts the blur
back (as for RLS: ``docs/robust_inversion_fidelity_photos.png``, ``docs/rls_fidelity_photos.png``).

``detail`` in [0, 1] (beyond the paper; a constructor option) scales the part of the output that the observation's
reduction destroys, the prior's invented detail (``project_resize``'s ``detail``): 1 keeps all of it, 0 none (at
fidelity 1: the smooth image whose reduction is the observation). The reduction of the output does not depend on
it, so it trades realism for distortion without moving away from the observation. ``robust-upsample`` runs at
``DEFAULT_DETAIL`` without one when it projects (fidelity > 0), else at 1 (fidelity 0 is the paper's output), and
the blind mode at 1 (whole-photo faces keep the prior's detail).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from facerestore.degrade.tasks import record_seed
from facerestore.errors import InputError
from facerestore.methods.inversion.encoder import ENCODER_LICENCE, EncoderStart, LatentEncoder
from facerestore.methods.inversion.invert import (
    PAPER_LRS,
    PAPER_STEPS,
    InversionResult,
    check_work_resolution,
    inpainting_mask,
    robust_invert,
)
from facerestore.methods.inversion.losses import make_loss, num_levels
from facerestore.methods.inversion.refs import ReferenceCache, check_ref_weight
from facerestore.methods.restorer import Restorer, StepProgress, detail_side, resize_crop
from facerestore.methods.spec import MethodSpec
from facerestore.nn.stylegan2 import Generator

__all__ = ["DEFAULT_DETAIL", "DEFAULT_FIDELITY", "DEFAULT_REF_WEIGHT", "DEFAULT_WORK_RESOLUTION", "PRIOR_SPEC",
           "UNKNOWN_FILTER", "RobustInversionRestorer", "load_generator", "project_observation", "recorded_filters"]

log = logging.getLogger(__name__)

# spec fields shared by the methods whose default prior is our built-in 64 px face StyleGAN2 (trained on FFHQ,
# non-commercial, and StyleGAN samples): the output is the generator's image; the work is an optimisation
PRIOR_SPEC: dict[str, Any] = {
    "size": 64,  # the built-in fallback's; a restorer's own spec has its generator's resolution
    "size_label": "1024px prior (64px offline)",
    "output": "model",
    "unsupervised": True,
    # the real 1024 px prior when cached (`facerestore models download mobilestylegan-ffhq-1024`), else ours
    "weights": ("mobilestylegan-ffhq-1024", "builtin:stylegan2-face-64.safetensors"),
    "weights_licence": "MobileStyleGAN: non-commercial (distilled from NVIDIA's StyleGAN2 FFHQ); fallback 64 px "
                       "prior: Apache-2.0 (ours), trained on FFHQ (CC BY-NC-SA 4.0) and StyleGAN samples: "
                       "non-commercial",
}

# weight of the reference identity term per loss level and per unit of dlib distance (module docstring). Chosen with
# benchmarks/honestface_refs.py (4 persons x blind/x8 = 8 faces, built-in 64 px prior, 60 steps, substitute loss):
# 0.25 lowers FED by 0.058 and leaves the independent id_mfn unchanged (+0.07e-5 [-0.65e-5, 0.72e-5]); 1 and 4 lower
# FED further (0.115, 0.132) but make id_mfn worse (+1.6e-5, +4.0e-5, both intervals above 0): the pull then fits
# dlib rather than the person. 0.25 is the largest weight tried that does not hurt the independent metric.
# Re-checked with MobileFace on held-out validation persons (benchmarks/results/ref_weight_robust-inversion.md: 12
# synthetic persons x blind/x8): 0.25 -0.008 [-0.015, -0.002] against no term, 1 no better than 0.25 (-0.005
# [-0.015, +0.006]) while dlib's distance halves again; another person's views do not help (-0.001): 0.25 kept.
DEFAULT_REF_WEIGHT = 0.25

# side at which the blind mode compares a face with MobileStyleGAN (its exact box average; the result is still
# rendered at 1024 px). benchmarks/results/inversion_speed.md (3 held-out faces, x4, 90 steps): 512 and 256 give
# the paper setting's PSNR and identity (512 bf16: +0.07 dB [-0.03, +0.16], id -0.004 [-0.017, +0.009]) at a
# third of its time; 512 rather than 256 keeps the detail of faces larger than 256 px in the target.
DEFAULT_WORK_RESOLUTION = 512

# robust-upsample's projection onto its observation when no fidelity is given (module docstring; the blind mode: 0).
# benchmarks/results/prior_comparison_fidelity_encoder.md (2 held-out validation faces, M / L / XL, the paper's 450
# steps from the W encoder): 1 against 0, PSNR +2.2 / +1.0 / +0.2 dB, MobileFace 0.223 -> 0.175 at M, 0.379 -> 0.365
# at L, unchanged at XL; 0.5 between. As RLS's on held-out faces (rls.restorer.DEFAULT_FIDELITY).
DEFAULT_FIDELITY = 1.0

# robust-upsample's share of the prior's invented detail when no detail is given (module docstring; the blind mode: 1).
# Chosen on 6 ffhq256 training faces (ids 00001-00006, not held out), level M, 90 steps from the W encoder, fidelity
# 1 through the recorded filter: PSNR 24.75 / 24.97 / 24.90 / 24.55 / 24.01 dB at detail 0 / 0.25 / 0.5 / 0.75 / 1
# (input 24.14), MobileFace 0.236 / 0.194 / 0.165 / 0.157 / 0.171 (input 0.291), NIQE 12.4 / 11.7 / 9.3 / 7.5 / 6.5
# (input 12.6): 0.5 is within 0.1 dB of the best PSNR with nearly the best identity. Held out
# (benchmarks/results/prior_comparison_detail.md, 6 faces, M / L / XL): PSNR 25.03 / 21.44 / 18.49 dB against the
# input's 24.33 / 20.80 / 17.96 and detail 1's 23.99 / 20.63 / 17.47; MobileFace 0.162 / 0.419 / 0.758 against
# the input's 0.284 / 0.582 / 0.854 (detail 1: 0.158 / 0.414 / 0.742).
DEFAULT_DETAIL = 0.5

# the tasks whose observation is a reduction the projection can invert (robust-upsample's antialiased bilinear,
# bicubic or Lanczos; paper 002's surrogate is their box average)
PROJECTED_TASKS = ("robust-upsample",)

# the reduction robust-upsample's projection inverts when the caller does not pass the task's records (the filter is
# then unknown). benchmarks/results/prior_comparison_projection.md (2 held-out validation faces, M / L / XL, whose
# task drew Lanczos and bilinear): through the recorded filter PSNR +0.17 / +0.19 / +0.13 dB over the surrogate's box
# average, MobileFace 0.175 -> 0.150 at M; of the fixed guesses bicubic comes closest (+0.06 / +0.09 / +0.04 dB,
# MobileFace 0.162 / 0.344 / 0.584 vs the box's 0.175 / 0.365 / 0.590), small but at every level, and it is PIL's
# default reduction, what most low-resolution files went through
UNKNOWN_FILTER = "bicubic"


def inpainting_seed(seed: int, record: dict) -> int:
    """The inpainting noise seed of a face: its record's (:func:`facerestore.degrade.tasks.record_seed`) and the
    restorer's ``seed``, salted apart from the surrogate's own record-seeded draws (shot noise), which start from
    the record's seed alone."""
    return record_seed(record) + 1_000_003 * (int(seed) + 1)


def recorded_filters(params: Sequence[dict] | dict, batch: int) -> list[str]:
    """The reduction filter of each of ``batch`` robust-upsample observations, read from their records (one dict:
    the same for all): the method of the resize op (always antialiased in paper 002's task)."""
    records = [params] * batch if isinstance(params, dict) else list(params)
    if len(records) != batch:
        raise InputError(f"{len(records)} records for {batch} images: pass one per image (or one for all)")
    ops = [[op for op in rec["ops"] if op.get("op") == "resize"] for rec in records]
    if any(len(o) != 1 or not o[0].get("antialias", True) for o in ops):
        raise InputError("robust-upsample records must hold exactly one antialiased resize op each")
    return [o[0]["method"] for o in ops]


def project_observation(image: torch.Tensor, observation: torch.Tensor, strength: float,
                        filters: Sequence[str] | None = None, detail: float = 1.0) -> torch.Tensor:
    """``image`` (B, 3, R, R) moved onto ``observation`` (B, 3, r, r) at ``strength`` through each image's reduction
    filter (``filters``, default the box average) with :func:`~facerestore.degrade.project_resize`, keeping
    ``detail`` of what the reduction destroys; clamped to [0, 1], in the image's dtype."""
    from facerestore import degrade

    filters = list(filters or ["area"] * image.shape[0])
    obs = observation.float().to(image.device)
    out = [degrade.project_resize(image[i:i + 1].float(), obs[i:i + 1], m, strength, detail=detail)
           for i, m in enumerate(filters)]
    return torch.cat(out).clamp(0, 1).to(image.dtype)


def load_generator(generator: Generator | None = None, weights: str | os.PathLike | None = None) -> Generator:
    """A StyleGAN2 generator: the given object, a weights file (NVIDIA .pkl / rosinality .pt / our
    .safetensors), a zoo name ("stylegan2-ffhq-1024", never downloaded) or, by default, our built-in
    64 px face prior (``stylegan2-face-64``)."""
    if generator is not None and weights is not None:
        raise InputError("pass either a generator object or a weights path, not both")
    if generator is not None:
        # our StyleGAN2 Generator or any module with its interface (nn.mobilestylegan.Generator)
        needed = ("mapping", "synthesis", "num_ws", "w_dim", "img_resolution", "sample_w")
        if not isinstance(generator, torch.nn.Module) or not all(hasattr(generator, a) for a in needed):
            raise InputError(f"generator must be a StyleGAN2-like Generator (facerestore.nn.stylegan2 or "
                             f"nn.mobilestylegan), got {type(generator).__name__}")
        return generator
    from facerestore.nn import stylegan2_io

    return stylegan2_io.resolve_generator(weights)


class RobustInversionRestorer(Restorer):
    """Paper 002's robust 3-phase inversion (one hyper-parameter set for every task and composition).

    Args:
        weights: StyleGAN2 weights file (NVIDIA .pkl or rosinality .pt); default the zoo's FFHQ 1024.
        generator: a ready ``Generator`` instead of ``weights``.
        task: default degradation task (a name of ``degrade.list_tasks()``, e.g. "robust-upsample") used
            by ``restore(lq)`` without ``task=``; level: its level when records must be drawn.
        loss: "lpips" (LPIPS-VGG, the paper; needs the zoo weights), "substitute" (weight-free
            multi-resolution L1 + SSIM) or "auto" (LPIPS when available, else the substitute, announced).
        steps / lrs: per phase, default the paper's (150, 150, 150) / (0.08, 0.02, 0.005).
        min_side: side of the coarsest loss level (16). seed: inpainting noise seed.
        progress: a per-call progress bar (phase, step, loss, ETA) on stderr.
        ref_weight: weight of the identity term when ``refs`` are given, per loss level and per unit of dlib
            distance (see the module docstring; default ``DEFAULT_REF_WEIGHT``); 0 ignores references.
        force_refs: use references that the check takes for another person (``--force-refs``).
        work_resolution: the side (a power of two) at which the blind mode (no task: whole photos) compares the
            face with the prior (beyond the paper; :func:`.invert.robust_invert`'s ``resolution``): MobileStyleGAN
            renders it as the exact box average of its 1024 px image, the loss runs at that size, and the result
            is still rendered at 1024 px. None (default): the side the face's detail has
            (:func:`~facerestore.methods.restorer.detail_side`, the largest of the batch, at least twice
            ``min_side``), at most ``DEFAULT_WORK_RESOLUTION`` (512) for generators that render such box averages
            and are larger, else at most the generator's own; a small face enlarged into its crop is then compared
            at about its size in the photo, and the prior supplies the finer detail instead of fitting the
            enlargement's blur. An int: always that side (1024 is the paper's). Tasks with records
            (``task=``/``params=``) always work at the generator's resolution (their surrogate is built for it).
            ``--half`` runs the generator in bf16 on a CPU (the latents and the loss stay float32).
            Speed and agreement with the paper's setting: ``benchmarks/inversion_speed.py``.
        init: where phase I starts (beyond the paper, which starts from ``w_avg``): "auto" (default) starts the
            blind mode from the W encoder's guess (:mod:`.encoder`) when one is stored beside the generator or
            shipped for it (MobileStyleGAN's), and tasks with records from ``w_avg`` (the paper); "mean" always
            from ``w_avg``; "encoder" both modes from the encoder (WeightsMissingError when there is none); a path
            or a ``LatentEncoder``: that encoder, both modes. ``benchmarks/encoder_init.py`` measures it.
        detail: the share in [0, 1] of the prior's detail that the observation cannot confirm (module docstring);
            None (default): ``DEFAULT_DETAIL`` for robust-upsample at a fidelity above 0, else 1 (the blind mode,
            fidelity 0). Other tasks take only None or 1.
    """

    spec = MethodSpec(
        name="robust-inversion",
        paper="002",
        description="Robust unsupervised StyleGAN2 inversion (W -> W+ -> W++ with normalized gradient descent, "
        "multi-resolution LPIPS + L1) for upsampling, denoising, JPEG, inpainting and their compositions (given "
        "the task's records), or a projection of whole-photo faces onto the prior; prior: MobileStyleGAN 1024 px "
        "when cached (`facerestore models download mobilestylegan-ffhq-1024`), else our built-in 64 px face "
        "StyleGAN2; --weights stylegan2-ffhq-1024 for NVIDIA's",
        uses_refs=True,
        supports_fidelity=True,  # the projection onto the observation (module docstring)
        precisions=("fp32", "bf16"),  # fp16 untested: no GPU here
        **PRIOR_SPEC,
    )

    min_steps = 3  # one step per phase (W, W+, W++) at least
    casts_input = False  # float32 targets under set_half (Restorer.casts_input)
    default_fidelity = 0.0  # the blind mode's (whole photos, what their records say); tasks: fidelity_used
    checks_refs = True  # the photo pipeline passes force_refs= to methods that check their references

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        *,
        generator: Generator | None = None,
        task: str | None = None,
        level: str | int | None = None,
        loss: str = "auto",
        lpips_weights: Any = None,
        steps: Sequence[int] = PAPER_STEPS,
        lrs: Sequence[float] = PAPER_LRS,
        min_side: int = 16,
        wpp_layout: str = "layers",
        seed: int = 0,
        progress: bool = True,
        ref_weight: float = DEFAULT_REF_WEIGHT,
        force_refs: bool = False,
        work_resolution: int | None = None,
        init: str | os.PathLike | LatentEncoder = "auto",
        detail: float | None = None,
    ) -> None:
        super().__init__()
        if detail is not None and not 0.0 <= float(detail) <= 1.0:
            raise InputError(f"robust-inversion detail must lie in [0, 1], got {detail!r}")
        self.detail = None if detail is None else float(detail)
        self.ref_weight = check_ref_weight(ref_weight)
        self.force_refs = bool(force_refs)
        self.last_refs_distance: float | None = None  # the reference check's distance of the last call (honestface's)
        self._refs = ReferenceCache()
        if generator is None:
            weights = self.weights_or_default(weights)
        self.G = load_generator(generator, weights).eval()
        self.G.requires_grad_(False)
        self.starter = EncoderStart(init, None if generator is not None else weights, self.G)
        self.init, self.encoder = self.starter.init, self.starter.encoder
        if task is not None:
            from facerestore import degrade

            degrade.get_task(task)  # fail early on unknown names
        self.task, self.level = task, level
        # on the generator's device: a generator object passed already on a GPU needs no .to() to work
        self.loss_fn = make_loss(loss, lpips_weights=lpips_weights, min_side=min_side).to(self.G.mapping.w_avg.device)
        self.loss_kind = self.loss_fn.kind
        if loss == "auto":
            log.info("robust-inversion uses the %s loss", self.loss_kind)
        self.steps, self.lrs = tuple(int(s) for s in steps), tuple(float(v) for v in lrs)
        if len(self.steps) != 3 or len(self.lrs) != 3 or min(self.steps) < 1:
            raise InputError(f"robust-inversion takes three phases (W, W+, W++): steps and lrs of 3 values, steps "
                             f">= 1; got steps {steps} and lrs {lrs}")
        if wpp_layout not in ("layers", "dense"):
            raise InputError(f"wpp_layout must be 'layers' or 'dense', got {wpp_layout!r}")
        self.wpp_layout, self.seed, self.progress = wpp_layout, int(seed), bool(progress)
        self.adaptive_resolution = work_resolution is None  # the blind mode follows each batch's detail_side
        if work_resolution is None and hasattr(self.G.synthesis, "check_resolution"):
            work_resolution = min(DEFAULT_WORK_RESOLUTION, self.G.img_resolution)
        try:
            self.work_resolution = check_work_resolution(self.G, work_resolution) or self.G.img_resolution
        except ValueError as exc:
            raise InputError(f"robust-inversion work_resolution: {exc}") from None
        self.with_spec(size=self.G.img_resolution)
        if self.encoder is not None:  # every output record names the start and its licence consequences
            self.with_spec(weights_licence=f"{self.spec.weights_licence}; {ENCODER_LICENCE}")

    def describe(self) -> dict[str, Any]:
        """The base record plus how this inversion ran: its loss (``auto`` resolves to LPIPS-VGG once those weights
        are cached, else the substitute), the NGD steps per phase, the start (the W encoder or the mean latent)."""
        return {**super().describe(), "loss": self.loss_kind, "steps": [int(s) for s in self.steps],
                "start": "encoder" if self.encoder is not None else "mean"}

    def half_modules(self) -> list[torch.nn.Module]:
        """``set_half``: the generator's synthesis network in bf16 on a CPU (fp16 on a GPU is not offered: untested
        here); its mapping (with ``w_avg``, the start latent), the loss and its networks, and the W encoder are
        never converted (the latents are always float32: :func:`.invert.robust_invert`)."""
        return [self.G.synthesis]

    def fidelity_used(self, fidelity: float | None, blind: bool = True) -> float:
        """The projection strength a call runs at: ``fidelity`` when given, else 0 in the blind mode (whole-photo
        crops, what the photo pipeline runs) and ``DEFAULT_FIDELITY`` for tasks (module docstring)."""
        if fidelity is not None:
            return float(fidelity)
        return self.default_fidelity if blind else DEFAULT_FIDELITY

    def detail_used(self, blind: bool = True, strength: float = 1.0) -> float:
        """The share of the prior's unconfirmed detail a call keeps: the constructor's ``detail`` when given, else
        ``DEFAULT_DETAIL`` for robust-upsample projected at ``strength`` > 0, and 1 in the blind mode or at strength 0
        (the paper's output) (module docstring)."""
        if self.detail is not None:
            return self.detail
        return 1.0 if blind or not strength else DEFAULT_DETAIL

    def start(self, faces: torch.Tensor, blind: bool) -> torch.Tensor | None:
        """Phase I's start for ``faces`` (B, 3, S, S) in [0, 1]: :meth:`.encoder.EncoderStart.start`."""
        return self.starter.start(faces, blind)

    def _level(self, task: str, lq: torch.Tensor, level: str | int | None) -> str | int | None:
        """The task's level: given, fixed by the task (one level), read from the size ratio (single-degradation
        upsampling: the factor is the level), else an InputError: a level is never guessed."""
        from facerestore import degrade
        from facerestore.degrade.presets.robust import FACTORS

        info = degrade.get_task(task)
        if level is not None or len(info.levels) <= 1:
            return level
        if info.name == "robust-upsample":
            factor = self.G.img_resolution / lq.shape[-1]
            for lvl, f in FACTORS.items():
                if f == factor:
                    return lvl
            raise InputError(f"a {lq.shape[-1]} px target is not a robust-upsample level of a "
                             f"{self.G.img_resolution} px generator (factors {sorted(FACTORS.values())})")
        raise InputError(f"task {info.name!r} has levels {', '.join(info.levels)}: pass level= (or params=, the "
                         "records of degrade.apply); it is not guessed")

    def _records(self, task: str, lq: torch.Tensor, level: str | int | None) -> list[dict]:
        from facerestore import degrade

        level = self._level(task, lq, level)
        r = self.G.img_resolution
        dummy = torch.zeros(lq.shape[0], 3, r, r)
        _, recs = degrade.apply(dummy, task, level=level, generator=0)
        if any(op.get("op") == "mask" for rec in recs for op in rec["ops"]):
            raise InputError(f"task {task!r} masks pixels: pass params= (the records from degrade.apply)")
        return recs

    @classmethod
    def budget_options(cls, steps: int) -> dict[str, Any]:
        """``steps`` split over the three phases in the paper's proportions (equal: 150/150/150)."""
        if int(steps) < cls.min_steps:
            raise InputError(f"--steps must be >= {cls.min_steps} for robust-inversion (three phases), got {steps}")
        n = int(steps)
        return {"steps": (n // 3 + (n % 3 > 0), n // 3 + (n % 3 > 1), n // 3)}

    def _bar(self) -> StepProgress:
        return StepProgress(sum(self.steps), "robust-inversion", self.progress)

    def _refs_distances(self, x: torch.Tensor, refs: torch.Tensor) -> list[float] | None:
        if self.ref_weight == 0:
            return None
        dev = self.G.mapping.w_avg.device
        return self._refs.get(refs, dev).check_distances(x.to(dev), self.G.img_resolution)

    def _identity(self, lq: torch.Tensor, refs: torch.Tensor | None, force_refs: bool | None, side: int):
        """The identity term for a target of ``side`` px (None without references or with ``ref_weight`` 0), after
        the reference check of the faces ``lq`` (resized to the generator's resolution)."""
        self.last_refs_distance = None
        if refs is None or self.ref_weight == 0:
            return None
        force = self.force_refs if force_refs is None else bool(force_refs)
        weight = self.ref_weight * max(num_levels(side, self.loss_fn.min_side), 1)
        ref_id, term, self.last_refs_distance = self._refs.term_for(
            refs, lq, self.G.img_resolution, weight, force, self.G.mapping.w_avg.device)
        return ref_id, term

    def _finish(self, result: InversionResult, guide, return_details: bool, observation: torch.Tensor | None = None,
                strength: float = 0.0, filters: Sequence[str] | None = None, detail: float = 1.0):
        """The output: the generator's image (``result.image``, kept as is in the details), projected onto the
        ``observation`` (its reduction by ``filters``, default the box average) at ``strength`` keeping ``detail``
        of what the reduction destroys, when there is one (module docstring); the details name the filters and the
        detail used."""
        out = result.image
        if observation is not None and (strength or detail < 1.0):
            filters = list(filters or ["area"] * out.shape[0])
            out = project_observation(out, observation, strength, filters, detail)
            result.projection_filters, result.projection_detail = filters, detail
        if guide is not None:
            with torch.no_grad():
                result.ref_distance = guide[0].distance(out).detach()
        return (out, result) if return_details else out

    def _project(self, lq: torch.Tensor, return_details: bool, refs: torch.Tensor | None = None,
                 force_refs: bool | None = None, fidelity: float = 0.0):
        """Blind mode (no task): invert lq, resized to :meth:`blind_side` (the side its detail has, at most 512 for
        MobileStyleGAN), with f = identity at that side, i.e. project the face onto the prior (what whole-photo
        ``facerestore restore`` does with this method); the result is rendered at the generator's resolution."""
        r = self.blind_side(lq)
        target = resize_crop(lq.float(), (r, r))
        guide = self._identity(target, refs, force_refs, r)
        renders = r == self.G.img_resolution or hasattr(self.G.synthesis, "check_resolution")
        # a generator that renders only its own size is compared through an area reduction (what a box-averaged
        # rendering is); MobileStyleGAN renders the box average itself
        f = (lambda x: x) if renders else (lambda x: F.interpolate(x, size=(r, r), mode="area"))
        with self._bar() as bar:
            result = robust_invert(self.G, target, f, self.loss_fn, steps=self.steps, lrs=self.lrs,
                                   w_init=self.start(target, blind=True), seed=self.seed, wpp_layout=self.wpp_layout,
                                   callback=bar.update, identity=None if guide is None else guide[1],
                                   resolution=r if renders else None)
        result.work_resolution = r
        observed = target if 2 * r <= self.G.img_resolution else F.avg_pool2d(target, 2)  # a reduction, always
        return self._finish(result, guide, return_details, observed, fidelity, detail=self.detail_used(blind=True))

    def batch_key(self, crop: torch.Tensor) -> Any:
        return self.blind_side(crop)  # the blind mode works at the batch's largest side: one side per batch

    def blind_side(self, lq: torch.Tensor) -> int:
        """The side at which the blind mode compares the faces ``lq`` (B, 3, S, S) with the prior: the fixed
        ``work_resolution``, or by default the largest :func:`detail_side` of the batch (measured on the faces
        shrunk to the work resolution), at least twice the loss's ``min_side`` (two levels) and at most the work
        resolution."""
        r = self.work_resolution
        if not self.adaptive_resolution:
            return r
        floor = min(r, 2 * self.loss_fn.min_side)
        return max([floor, *detail_side(resize_crop(lq.float(), (r, r)), min_side=floor)])

    def _restore(
        self,
        lq: torch.Tensor,
        *,
        refs: torch.Tensor | None,
        fidelity: float | None,
        task: str | None = None,
        params: Sequence[dict] | dict | None = None,
        level: str | int | None = None,
        return_details: bool = False,
        force_refs: bool | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, InversionResult]:
        """Degraded targets lq (B, 3, h, w) in [0, 1] -> (B, 3, R, R) at the generator's resolution.

        task / params: the degradation (name + records from ``degrade.apply``); default the task given at
        construction; with neither, the blind mode: lq is projected onto the prior at the side its detail has
        (:meth:`blind_side`), as whole-photo restoration does. return_details: also return the
        :class:`InversionResult` (latents, per-phase losses, loss kind, distance to the references). Optimises for
        3 x 150 steps per call (slow on CPU at 1024 px). refs: see the module docstring; force_refs: this call's
        override of the constructor's.
        """
        from facerestore import degrade

        if isinstance(params, tuple):  # any sequence of records, as RLS takes them
            params = list(params)
        task = task or (params[0]["task"] if isinstance(params, list) and params else None)
        task = task or (params.get("task") if isinstance(params, dict) else None) or self.task
        strength = self.fidelity_used(fidelity, blind=task is None)
        if task is None:
            return self._project(lq, return_details, refs, force_refs, strength)
        if task not in PROJECTED_TASKS and (fidelity or (self.detail is not None and self.detail < 1.0)):
            what = "fidelity" if fidelity else "detail"
            raise InputError(f"robust-inversion: {what} projects onto reduced observations (the blind mode, "
                             f"{', '.join(PROJECTED_TASKS)}), not {task!r}: drop {what}")
        # the projection follows the caller's records (a known degradation); drawn records only guess the filter
        filters = recorded_filters(params, lq.shape[0]) if params is not None and task in PROJECTED_TASKS else None
        if params is None:
            params = self._records(task, lq, level if level is not None else self.level)
        f_hat = degrade.surrogate(task, params)
        dev = self.G.mapping.w_avg.device
        r = self.G.img_resolution
        with torch.no_grad():  # a separate f_hat: probing must not advance the stochastic surrogate's draws
            n = 1 if isinstance(params, dict) else lq.shape[0]
            probe = degrade.surrogate(task, params)(torch.zeros(n, 3, r, r, device=dev))
        if tuple(probe.shape[-2:]) != tuple(lq.shape[-2:]):
            raise InputError(
                f"task {task!r} maps {r}x{r} generator images to {tuple(probe.shape[-2:])}, but the input is "
                f"{tuple(lq.shape[-2:])}"
            )
        mask = inpainting_mask(params, lq.shape[-2:])
        guide = self._identity(lq, refs, force_refs, min(lq.shape[-2:]))
        with self._bar() as bar:
            result = robust_invert(
                self.G, lq.to(dev), f_hat, self.loss_fn, mask=mask, steps=self.steps, lrs=self.lrs,
                w_init=self.start(lq, blind=False), wpp_layout=self.wpp_layout, callback=bar.update,
                seed=[inpainting_seed(self.seed, p) for p in ([params] * lq.shape[0] if isinstance(params, dict)
                                                                 else params)],
                identity=None if guide is None else guide[1],
            )
        if task in PROJECTED_TASKS:
            return self._finish(result, guide, return_details, lq, strength, filters or [UNKNOWN_FILTER] * lq.shape[0],
                                self.detail_used(blind=False, strength=strength))
        return self._finish(result, guide, return_details, None, strength)
