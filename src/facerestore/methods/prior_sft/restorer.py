"""The generative-prior restorer behind the ``Restorer`` interface (``prior-sft``).

An encoder trained by us steers the frozen MobileStyleGAN FFHQ prior (:mod:`.network`): 512 px faces whose texture
comes from the prior and whose layout and identity come from the input. ``--fidelity`` in [0, 1] is the strength of
the spatial steering (0 = the prior's face from the latents alone, 1 = fully steered, the default); it was trained
over that range (``alpha_random`` of :mod:`.train`).

Needs the prior in the cache (``facerestore models download mobilestylegan-ffhq-1024``; non-commercial weights).
Default encoder weights: ``zoo/builtin/prior-sft-256.safetensors`` (model card ``prior-sft-256.md``); ``weights=``
may name any ``facerestore train`` export (``.safetensors`` with its ``.json`` description next to it).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from facerestore.errors import InputError
from facerestore.methods.prior_sft.train import PriorSFTAdapter, build_prior_sft
from facerestore.methods.restorer import Restorer
from facerestore.methods.spec import MethodSpec
from facerestore.nn.safe_weights import check_settings

__all__ = ["BUILTIN_NAME", "PriorSFTRestorer", "load_prior_sft"]

BUILTIN_NAME = "prior-sft-256"
PRIOR_LICENCE = ("encoder: Apache-2.0 (ours), trained on FFHQ (CC BY-NC-SA 4.0) and StyleGAN samples; decoder: "
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
    """MobileStyleGAN prior steered by a trained encoder (see the module docstring)."""

    spec = MethodSpec(
        name="prior-sft",
        paper="ours",
        description="generative-prior restorer: an encoder (W+ latents + spatial feature transforms, the idea of "
        "GFPGAN / GPEN) steering the frozen MobileStyleGAN FFHQ prior; 512 px faces; --fidelity = steering "
        "strength; needs `facerestore models download mobilestylegan-ffhq-1024`",
        size=512,
        min_side=8,
        supports_fidelity=True,
        precisions=("fp32", "bf16", "fp16"),
        weights=f"builtin:{BUILTIN_NAME}.safetensors",
        weights_licence=PRIOR_LICENCE,
        trainer=PriorSFTAdapter,
        trained_on=("realworld-gfpgan",),
    )
    default_fidelity = 1.0

    def __init__(self, weights: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.net, self.description = load_prior_sft(self.weights_or_default(weights))

    def _restore(self, x: torch.Tensor, *, fidelity: float | None, refs: torch.Tensor | None,
                 **options: Any) -> torch.Tensor:
        if options:
            raise InputError(f"prior-sft has no option(s) {', '.join(sorted(options))}")
        alpha = self.default_fidelity if fidelity is None else float(fidelity)
        return self.net(x, alpha)
