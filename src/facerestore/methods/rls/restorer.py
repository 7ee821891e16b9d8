"""``rls`` / ``rls-plus`` restorers (paper 004): face super-resolution by regularized latent search.

    r = RLSRestorer(weights="stylegan2-ffhq-config-f.pt")          # flow found next to the weights
    out = r.restore(lr)                                              # (B, 3, 1024, 1024) in [0, 1]
    r = RLSPlusRestorer(generator=G, flow=maf, preset="code")

The input is the low-resolution face (B, 3, h, w) with R / h an integer (R: generator resolution); the
degradation model is PULSE's bicubic downsampling by R / h unless a task's ``params`` (records of
``degrade.apply``) are given, in which case that task's surrogate is used.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from facerestore.errors import InputError, WeightsMissingError
from facerestore.methods.inversion.restorer import PRIOR_SPEC, load_generator
from facerestore.methods.restorer import Restorer, StepProgress
from facerestore.methods.rls.flow_prior import find_flow, load_generator_flow
from facerestore.methods.rls.rls import RLSPlusResult, RLSResult, config, rls_plus, rls_search
from facerestore.methods.spec import MethodSpec
from facerestore.nn.flow import MAF
from facerestore.nn.stylegan2 import Generator

__all__ = ["RLSPlusRestorer", "RLSRestorer"]

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
        preset: "default" (the paper's, with an RLS+ latent step that lets the L1 ball bind), "paper" (Sec. 4 and
            eq. 5-7 exactly, 200 + 50 steps) or "code" (the released code, 500 + 200 steps);
            ``overrides`` change single ``RLSConfig`` fields (e.g. steps=50, n_mean=10000).
        seed: seeds the W samples of the initial mean. progress: a progress bar (phase, step, loss, ETA) on stderr.
    """

    spec = MethodSpec(
        name="rls",
        paper="004",
        description="RLS: regularized latent search in W+ of StyleGAN2 FFHQ for face super-resolution (PULSE "
        "bicubic degradation), with a MAF flow prior trained by `facerestore train-flow`; prior: our built-in 64 px "
        "face StyleGAN2 and its flow, or StyleGAN2 FFHQ 1024 (zoo) with a flow you train",
        **PRIOR_SPEC,
    )

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
        **overrides: Any,
    ) -> None:
        super().__init__()
        self.plus = isinstance(self, RLSPlusRestorer) if plus is None else bool(plus)
        if self.plus != isinstance(self, RLSPlusRestorer):
            self.spec = (RLSPlusRestorer if self.plus else RLSRestorer).spec
        if generator is None:
            weights = self.weights_or_default(weights)
        self.G = load_generator(generator, weights).eval()
        self.G.requires_grad_(False)
        self.flow = _resolve_flow(flow, weights, generator is not None)
        if self.flow is not None:
            self.flow.requires_grad_(False)
        self.cfg = config(preset, **overrides)
        self.preset = preset
        self.seed = int(seed)
        self.progress = bool(progress)
        self._w_init: torch.Tensor | None = None
        self.with_spec(size=self.G.img_resolution)

    @classmethod
    def budget_options(cls, steps: int) -> dict[str, Any]:
        """RLS: ``steps`` latent-search steps; RLS+ adds a quarter of that (the paper's 200 + 50 proportion)."""
        if int(steps) < 1:
            raise InputError(f"--steps must be >= 1, got {steps}")
        return {"steps": int(steps), "plus_steps": max(1, int(steps) // 4)}

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
        return lambda x: degrade.downsample_pulse_bicubic(x, factor)

    def w_init(self) -> torch.Tensor:
        """The RLS start latent: mean of ``cfg.n_mean`` W samples (computed once, seeded)."""
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
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, RLSResult | RLSPlusResult]]:
        """Low-resolution faces lq (B, 3, h, w) in [0, 1] -> (B, 3, R, R) in [0, 1].

        return_details: also return {"rls": RLSResult, "plus": RLSPlusResult (RLS+ only)}.
        """
        fn = self._degrade_fn(lq, task, params)
        details: dict[str, RLSResult | RLSPlusResult] = {}
        total = self.cfg.steps + (lq.shape[0] * (self.cfg.plus_steps + 1) if self.plus else 0)
        with StepProgress(total, self.spec.name, self.progress) as bar:
            res = rls_search(self.G, lq, self.flow, fn, self.cfg, w_init=self.w_init(),
                             callback=lambda step, v: bar.update("RLS", step, v["total"]))
            if self.plus:
                plus = rls_plus(self.G, lq, res.latents, fn, self.cfg,
                                callback=lambda i, step, v: bar.update(f"RLS+ face {i + 1}", step, v))
        details["rls"] = res
        out = res.image
        if self.plus:
            details["plus"] = plus
            out = plus.image
        return (out, details) if return_details else out


class RLSPlusRestorer(RLSRestorer):
    """RLS+ (RLS followed by the L1-ball generator refinement); same arguments as :class:`RLSRestorer`."""

    spec = MethodSpec(
        name="rls-plus",
        paper="004",
        description="RLS+: RLS followed by joint tuning of latents (inside an L1 ball around the RLS anchor), "
        "noise maps and generator weights",
        **PRIOR_SPEC,
    )
