"""``rls`` / ``rls-plus`` restorers (paper 004): face super-resolution by regularized latent search.

    r = RLSRestorer(weights="stylegan2-ffhq-config-f.pt")          # flow found next to the weights
    out = r.restore(lr)                                              # (B, 3, 1024, 1024) in [0, 1]
    r = RLSPlusRestorer(generator=G, flow=maf, preset="code")

The input is the low-resolution face (B, 3, h, w) with R / h an integer (R: generator resolution); the
degradation model is PULSE's bicubic downsampling by R / h unless a task's ``params`` (records of
``degrade.apply``) are given, in which case that task's surrogate is used. A face at the generator's own resolution
without a task (whole-photo crops: the blind mode) is first reduced by that downsampling to the side its detail has
(:func:`~facerestore.methods.restorer.detail_side`; a 60 px face of a photo: 64), so that RLS super-resolves it
instead of fitting its enlargement's blur (beyond the paper; ``work_resolution`` fixes the side).

``fidelity`` in [0, 1] (beyond the paper) moves the generator's output toward the images whose PULSE downsampling
is the observation (:func:`~facerestore.degrade.project_pulse_bicubic`, the range-null-space split): 0 is the
paper's output, 1 keeps the observation's content exactly and takes from the prior only the detail the
downsampling destroyed. It applies to PULSE bicubic observations (no task records; the blind mode's reduced crop is
one, and a crop fitted at the generator's full side is projected onto its 2x reduction, so that the prior keeps its
finest octave rather than the input's pixels, noise included). Without a fidelity the "default" preset projects
low-resolution inputs at ``DEFAULT_FIDELITY`` (1) and leaves the blind mode's output as the generator made it (0);
"paper" and "code" always use 0. Why the two: on held-out faces downsampled by PULSE (a clean observation) the
projection raises PSNR and identity at every factor (``benchmarks/results/rls_factors_fidelity.md``), but a real
photo's face carries its blur at its detail side too, and projecting onto it puts the blur back
(``docs/rls_fidelity_photos.png``: the README photo's face comes out as its blurred input with some sharp edges).

``refs`` (R, 3, S, S), aligned photos of the same person, add an identity term to the latent search and to RLS+'s
fine-tuning (beyond the paper; ``methods.inversion.refs``): ``ref_weight * F * d``, d the dlib distance between
G(w) and the references' mean embedding and F the fidelity term's scale (``l1_weight`` times the number of values of
one low-resolution face for the paper's summed L1, ``l1_weight`` for the code's mean), so that ``ref_weight`` is the
mean absolute error of the low-resolution fit that one unit of d is worth, whatever the preset and size. Faces the
check takes for another person are refused unless ``force_refs``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from facerestore.errors import InputError, WeightsMissingError
from facerestore.methods.inversion.encoder import ENCODER_LICENCE, EncoderStart, LatentEncoder
from facerestore.methods.inversion.refs import ReferenceCache, check_ref_weight
from facerestore.methods.inversion.restorer import PRIOR_SPEC, load_generator
from facerestore.methods.restorer import Restorer, StepProgress, detail_side
from facerestore.methods.rls.flow_prior import find_flow, load_generator_flow
from facerestore.methods.rls.rls import RLSPlusResult, RLSResult, config, rls_plus, rls_search
from facerestore.methods.spec import MethodSpec
from facerestore.nn.flow import MAF
from facerestore.nn.stylegan2 import Generator

__all__ = ["BLIND_MIN_SIDE", "DEFAULT_FIDELITY", "DEFAULT_REF_WEIGHT", "RLSPlusRestorer", "RLSRestorer"]

BLIND_MIN_SIDE = 16  # the blind mode's smallest observation: x64 of a 1024 px prior, the paper's largest factor

# low-resolution mean absolute error that one unit of dlib distance to the references is worth (module docstring).
# Chosen with benchmarks/honestface_refs.py (rls, 4 persons x blind/x8 = 8 faces, built-in 64 px prior, 60 steps):
# 0.02 lowers FED by 0.20 and leaves the independent id_mfn unchanged (+0.4e-5 [-0.7e-5, 1.7e-5]); 0.1 worsens LLE
# (+1.7 [0.6, 2.8] px) and 0.5 every metric but FED (id_mfn +5.0e-5 [3.3e-5, 6.7e-5]). 0.02 is the largest weight
# tried that hurts none of the independent metrics. Re-checked with MobileFace on held-out validation persons
# (benchmarks/results/ref_weight_rls.md: 12 synthetic persons x blind/x8): 0.02 -0.027 [-0.055, +0.004] against no
# term, 0.1 worse than 0.02 (+0.035 [+0.001, +0.068]) while dlib's distance falls further: 0.02 kept.
DEFAULT_REF_WEIGHT = 0.02

# the "default" preset's projection of low-resolution inputs onto their observation (module docstring). Chosen on 4
# held-out validation faces (benchmarks/results/rls_factors_fidelity.md, x8/x16/x64): 1 against 0, RLS+ x8 +1.2 dB
# and MobileFace -0.017, x16 +1.0 dB / -0.066, x64 +0.17 dB (intervals exclude zero); 0.5 lies between. The blind
# mode (whole photos) keeps 0: docs/rls_fidelity_photos.png (benchmarks/rls_photo.py --compare fidelity).
DEFAULT_FIDELITY = 1.0


def _resolve_flow(flow: MAF | str | os.PathLike | bool | None, weights: str | os.PathLike | None,
                  generator_given: bool) -> MAF | None:
    if isinstance(flow, MAF):
        return flow.eval()
    if flow is False:
        msg = "RLS without its flow prior (flow=False): only the L1 and cross terms are used"
        warnings.warn(msg, stacklevel=3)
        return None
    from facerestore.nn.stylegan2_io import prior_file

    if flow is not None and flow is not True:
        # a flow file with a generator file: checked to be that generator's (its record holds the sha256)
        return load_generator_flow(flow, generator_path=None if generator_given else prior_file(weights))
    if generator_given:
        raise WeightsMissingError("RLS needs its flow prior: pass flow= (a MAF or a `facerestore train-flow` file)")
    gen_file = prior_file(weights)
    return load_generator_flow(find_flow(gen_file), generator_path=gen_file)


class RLSRestorer(Restorer):
    """RLS (``plus=False``) or RLS+ (``plus=True``) on a StyleGAN2 generator with a MAF W-prior.

    Args:
        weights / generator: generator file (NVIDIA .pkl, rosinality .pt, our .safetensors), zoo name or object;
            default our built-in 64 px face prior (with its flow).
        flow: MAF object or file; default ``<weights stem>.rls-flow.safetensors`` next to the weights
            (``facerestore train-flow``); False runs without the flow terms (announced).
        preset: "default" (the paper's, with a search rate scaled to W's spread, which converges where the paper's
            0.5 diverges on MobileStyleGAN, an RLS+ latent step that lets the L1 ball bind, and low-resolution
            inputs' outputs projected onto the observation at ``DEFAULT_FIDELITY``), "paper" (Sec. 4 and eq. 5-7
            exactly, 200 + 50 steps) or "code" (the released code, 500 + 200 steps), both with fidelity 0 (no
            projection);
            ``overrides`` change single ``RLSConfig`` fields (e.g. steps=50, n_mean=10000).
        seed: seeds the W samples of the initial mean. progress: a progress bar (phase, step, loss, ETA) on stderr.
        ref_weight: weight of the identity term when ``refs`` are given, in low-resolution mean absolute error per
            unit of dlib distance (module docstring; default ``DEFAULT_REF_WEIGHT``); 0 ignores references.
        force_refs: use references that the check takes for another person (``--force-refs``).
        work_resolution: the blind mode's low-resolution side (a power of two dividing R; module docstring); None
            (default): each batch's largest :func:`~facerestore.methods.restorer.detail_side`, at least 16.
        init: where the latent search starts (beyond the paper, which starts from the mean of ``n_mean`` W samples):
            "auto" (default: the W encoder's guess of each face in the blind mode, whole-photo crops, when one is
            stored beside the generator or shipped for it, as MobileStyleGAN's is; the paper's mean for
            low-resolution inputs and tasks, whose records are the paper's), "mean" (always the paper's start),
            "encoder" (both modes), or an encoder file / ``LatentEncoder``
            (:class:`~facerestore.methods.inversion.encoder.EncoderStart`); ``robust-inversion`` takes the same.
            Why "auto": at the default preset's scaled rate the encoder's start (``init="encoder"`` on
            low-resolution inputs) keeps identity better on held-out faces at x16 (MobileFace -0.18 [-0.33, -0.03],
            ``benchmarks/results/rls_factors_init_scaled.md``; x8 n.s.) and keeps children children where the
            mean's start ages them; on whole photos both starts converge to the same face
            (``docs/rls_lr_astronaut.png``).
    """

    spec = MethodSpec(
        name="rls",
        paper="004",
        description="RLS: regularized latent search in W+ of StyleGAN2 FFHQ for face super-resolution (PULSE "
        "bicubic degradation), with a MAF flow prior trained by `facerestore train-flow`; prior: MobileStyleGAN "
        "1024 px and our flow for it when cached, else our built-in 64 px face StyleGAN2 and its flow; StyleGAN2 "
        "FFHQ 1024 (zoo) with a flow you train",
        uses_refs=True,
        supports_fidelity=True,  # the projection onto the observation (module docstring)
        precisions=("fp32", "bf16"),  # the generator in bf16 (--half on a CPU); latents, flow, losses float32
        **PRIOR_SPEC,
    )

    checks_refs = True  # the photo pipeline passes force_refs= to methods that check their references
    casts_input = False  # float32 targets under set_half (Restorer.casts_input)
    default_fidelity = 0.0  # whole-photo crops (the blind mode); low-resolution inputs: ``low_res_fidelity``

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        *,
        generator: Generator | None = None,
        flow: MAF | str | os.PathLike | bool | None = None,
        preset: str = "default",
        plus: bool | None = None,
        seed: int = 0,
        progress: bool = True,
        ref_weight: float = DEFAULT_REF_WEIGHT,
        force_refs: bool = False,
        work_resolution: int | None = None,
        init: str | os.PathLike | LatentEncoder = "auto",
        **overrides: Any,
    ) -> None:
        super().__init__()
        self.ref_weight = check_ref_weight(ref_weight)
        self.force_refs = bool(force_refs)
        self.last_refs_distance: float | None = None  # the reference check's distance of the last call (honestface's)
        self._refs = ReferenceCache()
        self.plus = isinstance(self, RLSPlusRestorer) if plus is None else bool(plus)
        if self.plus != isinstance(self, RLSPlusRestorer):
            self.spec = (RLSPlusRestorer if self.plus else RLSRestorer).spec
        if generator is None:
            weights = self.weights_or_default(weights)
        self.G = load_generator(generator, weights).eval()
        self.G.requires_grad_(False)
        self.starter = EncoderStart(init, None if generator is not None else weights, self.G)
        self.encoder = self.starter.encoder  # a submodule: .to(device) moves it with the generator
        self.flow = _resolve_flow(flow, weights, generator is not None)
        if self.flow is not None:  # on the generator's device (a flow file loads on the CPU)
            self.flow.to(self.G.mapping.w_avg.device)
        if self.flow is not None:
            self.flow.requires_grad_(False)
        self.cfg = config(preset, **overrides)
        self.preset = preset
        # fidelity None: 0 in the blind mode (whole photos, what records of photos say), the preset's for
        # low-resolution inputs (:meth:`fidelity_used`)
        self.low_res_fidelity = DEFAULT_FIDELITY if preset == "default" else 0.0
        self.seed = int(seed)
        self.progress = bool(progress)
        self._w_init: torch.Tensor | None = None
        self.with_spec(size=self.G.img_resolution)
        r = self.G.img_resolution
        if work_resolution is not None and (int(work_resolution) < 1 or r % int(work_resolution)
                                            or int(work_resolution) & (int(work_resolution) - 1)):
            raise InputError(f"rls work_resolution must be a power of two dividing {r}, got {work_resolution}")
        self.work_resolution = None if work_resolution is None else int(work_resolution)
        if self.starter.encoder is not None:  # every output record names the start and its licence consequences
            self.with_spec(weights_licence=f"{self.spec.weights_licence}; {ENCODER_LICENCE}")

    def describe(self) -> dict[str, Any]:
        """The base record plus how the search ran: the preset, its steps (and RLS+'s), the start."""
        out = {**super().describe(), "preset": self.preset, "steps": int(self.cfg.steps),
               "start": "encoder" if self.starter.encoder is not None else "mean"}
        if self.plus:
            out["plus_steps"] = int(self.cfg.plus_steps)
        return out

    def half_modules(self) -> list[torch.nn.Module]:
        """``set_half``: the generator's synthesis network in reduced precision (bf16 on a CPU; rls only: RLS+
        tunes the generator's weights, which bf16 cannot hold to its small steps); the mapping (and ``w_avg``),
        the flow prior, the losses and the W encoder are never converted, and the latents stay float32."""
        return [self.G.synthesis]

    @classmethod
    def budget_options(cls, steps: int) -> dict[str, Any]:
        """RLS: ``steps`` latent-search steps; RLS+ adds a quarter of that (the paper's 200 + 50 proportion)."""
        if int(steps) < 1:
            raise InputError(f"--steps must be >= 1, got {steps}")
        return {"steps": int(steps), "plus_steps": max(1, int(steps) // 4)}


    def fidelity_used(self, fidelity: float | None, blind: bool = True) -> float:
        """The projection strength a call runs at: ``fidelity`` when given, else 0 for whole-photo crops (``blind``,
        what the photo pipeline runs) and the preset's for low-resolution inputs (module docstring)."""
        if fidelity is not None:
            return float(fidelity)
        return self.default_fidelity if blind else self.low_res_fidelity

    def _refs_distances(self, x: torch.Tensor, refs: torch.Tensor) -> list[float] | None:
        if self.ref_weight == 0:
            return None
        dev = self.G.mapping.w_avg.device
        return self._refs.get(refs, dev).check_distances(x.to(dev), self.G.img_resolution)

    def _identity(self, lq: torch.Tensor, refs: torch.Tensor | None, force_refs: bool | None):
        """(ReferenceIdentity, loss term) for low-resolution faces ``lq`` after the reference check, or None without
        references or with ``ref_weight`` 0."""
        self.last_refs_distance = None
        if refs is None or self.ref_weight == 0:
            return None
        force = self.force_refs if force_refs is None else bool(force_refs)
        scale = self.cfg.l1_weight * (lq[0].numel() if self.cfg.l1_reduction == "sum" else 1)
        ref_id, term, self.last_refs_distance = self._refs.term_for(
            refs, lq, self.G.img_resolution, self.ref_weight * scale, force, self.G.mapping.w_avg.device)
        return ref_id, term

    def batch_key(self, crop: torch.Tensor) -> Any:
        # the blind mode observes the batch at its largest detail side: one side per batch
        return self.blind_side(crop) if crop.shape[-1] == self.G.img_resolution else None

    def blind_side(self, lq: torch.Tensor) -> int:
        """The low-resolution side of the blind mode's observation of faces ``lq`` (B, 3, R, R): the fixed
        ``work_resolution``, else the batch's largest :func:`detail_side` (at least ``BLIND_MIN_SIDE``)."""
        if self.work_resolution is not None:
            return self.work_resolution
        return max(detail_side(lq.float(), min_side=min(BLIND_MIN_SIDE, lq.shape[-1])))

    def _degrade_fn(self, lq: torch.Tensor, task: str | None, params: Sequence[dict] | dict | None):
        from facerestore import degrade

        r = self.G.img_resolution
        if params is not None:
            task = task or (params["task"] if isinstance(params, dict) else params[0]["task"])
            return degrade.surrogate(task, params)
        if task is not None:
            raise InputError("a task needs its params (records from degrade.apply); or pass neither for PULSE bicubic")
        h, w = lq.shape[-2:]
        if h != w or r % h:
            raise InputError(f"RLS needs square inputs whose side divides {r}, got {h}x{w}")
        factor = r // h
        if factor == 1:  # the crop is the observation: PULSE's bicubic at factor 1 is not the identity (it shifts)
            return lambda x: x
        return lambda x: degrade.downsample_pulse_bicubic(x, factor)

    def w_init(self, faces: torch.Tensor | None = None, blind: bool = False) -> torch.Tensor:
        """The RLS start: the W encoder's guesses (B, w_dim) for ``faces`` when ``init`` asks for them in this mode
        (``blind``: no task), else the mean of ``cfg.n_mean`` W samples (w_dim,) (computed once, seeded)."""
        guess = None if faces is None else self.starter.start(faces, blind)
        if guess is not None:
            return guess
        if self._w_init is None:
            from facerestore.methods.rls.rls import mean_w

            self._w_init = mean_w(self.G, self.cfg.n_mean, torch.Generator().manual_seed(self.seed))
        return self._w_init

    def _restore(
        self,
        lq: torch.Tensor,
        *,
        refs: torch.Tensor | None,
        fidelity: float | None,
        task: str | None = None,
        params: Sequence[dict] | dict | None = None,
        return_details: bool = False,
        force_refs: bool | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, RLSResult | RLSPlusResult | torch.Tensor | int | float]]:
        """Low-resolution faces lq (B, 3, h, w) in [0, 1] -> (B, 3, R, R) in [0, 1].

        return_details: also return {"rls": RLSResult, "plus": RLSPlusResult (RLS+ only), "observed_side": the side
        of the low-resolution face fitted (smaller than lq's in the blind mode), and with references
        "ref_distance": (B,) dlib distance of the output to the references' mean embedding}. refs: see the module
        docstring; force_refs: this call's override of the constructor's. fidelity: the projection's strength
        (module docstring; None: :meth:`fidelity_used`); the details' "rls" / "plus" images are the generator's,
        before it, and "fidelity" the strength applied.
        """
        from facerestore import degrade

        if params is not None and fidelity:
            raise InputError(f"{self.spec.name}: fidelity projects onto PULSE bicubic observations; a task's records "
                             "use its surrogate: drop fidelity")
        blind = task is None and params is None and lq.shape[-1] == lq.shape[-2] == self.G.img_resolution
        strength = self.fidelity_used(fidelity, blind)
        side = self.blind_side(lq) if blind else lq.shape[-1]
        if side < lq.shape[-1]:  # the observation at the side of the faces' detail (module docstring)
            lq = degrade.downsample_pulse_bicubic(lq.float(), lq.shape[-1] // side).clamp(0, 1)
        fn = self._degrade_fn(lq, task, params)
        guide = self._identity(lq, refs, force_refs)
        identity = None if guide is None else guide[1]
        details: dict[str, RLSResult | RLSPlusResult | torch.Tensor | int | float] = {}
        total = self.cfg.steps + (lq.shape[0] * (self.cfg.plus_steps + 1) if self.plus else 0)
        with StepProgress(total, self.spec.name, self.progress) as bar:
            res = rls_search(self.G, lq, self.flow, fn, self.cfg, w_init=self.w_init(lq, blind),
                             callback=lambda step, v: bar.update("RLS", step, v["total"]), identity=identity)
            if self.plus:
                plus = rls_plus(self.G, lq, res.latents, fn, self.cfg,
                                callback=lambda i, step, v: bar.update(f"RLS+ face {i + 1}", step, v),
                                identity=identity)
        details["rls"] = res
        details["observed_side"] = side  # the side of the low-resolution face RLS fitted
        details["fidelity"] = strength if params is None else 0.0  # the projection applied to the output
        out = res.image
        if self.plus:
            details["plus"] = plus
            out = plus.image
        if strength and params is None:  # the observation lq is PULSE's downsampling of the face by R / side
            observed = lq.float() if 2 * lq.shape[-1] <= out.shape[-1] else \
                degrade.downsample_pulse_bicubic(lq.float(), 2)  # a reduction, always (module docstring)
            out = degrade.project_pulse_bicubic(out.float(), observed, out.shape[-1] // observed.shape[-1],
                                                strength).clamp(0, 1).to(out.dtype)
        if guide is not None:
            with torch.no_grad():
                details["ref_distance"] = guide[0].distance(out).detach()
        return (out, details) if return_details else out


class RLSPlusRestorer(RLSRestorer):
    """RLS+ (RLS followed by the L1-ball generator refinement); same arguments as :class:`RLSRestorer`."""

    spec = MethodSpec(
        name="rls-plus",
        paper="004",
        description="RLS+: RLS followed by joint tuning of latents (inside an L1 ball around the RLS anchor), "
        "noise maps and generator weights",
        uses_refs=True,
        supports_fidelity=True,
        **PRIOR_SPEC,
    )
