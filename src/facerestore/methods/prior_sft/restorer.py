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
from pathlib import Path
from typing import Any

import torch

from facerestore.errors import InputError, WeightsMissingError
from facerestore.methods.prior_sft.train import PriorSFTAdapter, build_prior_sft
from facerestore.methods.restorer import Restorer
from facerestore.methods.spec import MethodSpec

__all__ = ["BUILTIN_NAME", "PriorSFTRestorer", "load_prior_sft"]

BUILTIN_NAME = "prior-sft-256"
PRIOR_LICENCE = ("encoder: Apache-2.0 (ours), trained on FFHQ (CC BY-NC-SA 4.0) and StyleGAN samples; decoder: "
                 "MobileStyleGAN, non-commercial (distilled from NVIDIA's StyleGAN2 FFHQ)")


def load_prior_sft(weights: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(network in eval mode, description) from an encoder ``.safetensors`` and its ``.json`` next to it."""
    from facerestore.nn.safe_weights import check_shapes, load_safetensors, open_safetensors, read_json

    path = Path(weights)
    if not path.is_file():
        raise WeightsMissingError(f"prior-sft weights not found: {path}")
    if path.suffix != ".safetensors":
        raise InputError(f"prior-sft weights must be a .safetensors file, got {path.name}")
    desc_path = path.with_suffix(".json")
    if not desc_path.is_file():
        raise InputError(f"{path.name} needs its description {desc_path.name} next to it")
    desc = read_json(desc_path, "prior-sft description")
    model = desc.get("model")
    if not isinstance(model, dict):
        raise InputError(f"{desc_path.name}: 'model' must be a mapping of prior-sft options")
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
