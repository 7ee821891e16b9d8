"""MFPSNet / FRSNet behind the ``Restorer`` interface ("mfpsnet").

Default weights: ``mfpsnet-compact-128`` (``zoo/builtin/mfpsnet-compact-128.*``, model card
``mfpsnet-compact-128.md``), a compact MFPSNet (released genotypes, 1.96M parameters) trained by us for 200 steps
on a CPU: it barely changes faces (a mild denoiser, +0.3 dB on eq. 10 inputs); it exists so that the method runs
end to end, and as the row of our ablation. ``weights=`` (``--weights``) may instead name any ``.safetensors``
with its description ``<same name>.json`` next to it (what ``facerestore train`` exports for ``method: mfpsnet``)::

    {"network": "mfpsnet" | "frsnet", "genotype": <a genotype JSON object or a preset name>,
     "model": {"nf": 64, ...}, "size": 128, "disabled_priors": [], "dictionary": "<optional component dictionary
     .safetensors, relative to the JSON>"}

:func:`save_mfpsnet` writes both. The network works at ``size`` (128 in the paper): crops are resized to it and
back by the wrapper. MFPSNet computes its priors from its first iteration's output with
:class:`~facerestore.methods.mfpsnet.priors.PriorExtractor` (dlib landmarks, Face Mesh parsing maps when
cached, the component dictionary when the description names one; a missing or disabled prior enters as zeros).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from facerestore.errors import InputError, WeightsMissingError
from facerestore.methods.mfpsnet.network import FRSNET_KEYS, MODEL_KEYS
from facerestore.methods.mfpsnet.train import MFPSNetAdapter
from facerestore.methods.restorer import Restorer
from facerestore.methods.spec import MethodSpec

__all__ = ["BUILTIN_NAME", "MFPSNetRestorer", "load_mfpsnet", "save_mfpsnet"]

BUILTIN_NAME = "mfpsnet-compact-128"



def save_mfpsnet(net: torch.nn.Module, path: str | os.PathLike, *, size: int = 128,
                 model: dict[str, Any] | None = None, dictionary: str | None = None) -> Path:
    """Write ``net`` (FRSNet or MFPSNet) as ``path`` (.safetensors) + its JSON description."""
    from safetensors.torch import save_file

    from facerestore.methods.mfpsnet.network import MFPSNet

    p = Path(path)
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(p))
    # input_skip has no parameters, so no shape check would notice it missing: always written from the network
    described = {**dict(model or {}), "input_skip": bool(getattr(net, "input_skip", False))}
    desc = {"network": "mfpsnet" if isinstance(net, MFPSNet) else "frsnet", "genotype": net.genotype.to_dict(),
            "model": described, "size": int(size)}
    if dictionary:
        desc["dictionary"] = dictionary
    p.with_suffix(".json").write_text(json.dumps(desc, indent=1) + "\n", encoding="utf-8")
    return p


def load_mfpsnet(weights: str | os.PathLike | None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(network in eval mode, description) from a safetensors file and the JSON next to it."""
    from facerestore.methods.mfpsnet.genotype import Genotype, get_preset
    from facerestore.methods.mfpsnet.network import FRSNet, MFPSNet
    from facerestore.nn.safe_weights import (
        check_shapes,
        load_safetensors,
        meta_shapes,
        open_safetensors,
        weights_and_description,
    )

    if weights is None:
        raise WeightsMissingError("mfpsnet: no weights given: pass --weights FILE.safetensors (with its FILE.json "
                                  "description), e.g. a `facerestore train` export")
    path, desc = weights_and_description(weights, "MFPSNet")
    desc_path = path.with_suffix(".json")
    kind = desc.get("network")
    if kind not in ("mfpsnet", "frsnet"):
        raise InputError(f"{desc_path.name}: network must be 'mfpsnet' or 'frsnet', got {kind!r}")
    g = desc.get("genotype")
    genotype = get_preset(g) if isinstance(g, str) else Genotype.from_dict(g, desc_path.name)
    model = desc.get("model", {})
    if not isinstance(model, dict) or set(model) - MODEL_KEYS or not all(
            isinstance(v, bool) if k == "input_skip" else isinstance(v, int) and 1 <= v <= 1024
            for k, v in model.items()):
        raise InputError(f"{desc_path.name}: model options must be integers 1..1024 among {sorted(MODEL_KEYS)} "
                         "(input_skip: true/false)")
    size = desc.get("size", 128)
    if not isinstance(size, int) or size % 64 or not 64 <= size <= 1024:
        raise InputError(f"{desc_path.name}: size must be a multiple of 64 in 64..1024, got {size!r}")
    if kind == "frsnet":
        model = {k: v for k, v in model.items() if k in FRSNET_KEYS}
    disabled = desc.get("disabled_priors", [])
    if not isinstance(disabled, list) or set(disabled) - {"parse", "heat", "dict"}:
        raise InputError(f"{desc_path.name}: disabled_priors must be a list among parse, heat, dict")

    def build():
        return (MFPSNet if kind == "mfpsnet" else FRSNet)(genotype, **model)

    _, found = open_safetensors(path, "MFPSNet weights")
    check_shapes(meta_shapes(build, desc_path.name), found, path.name)
    net = build()
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_safetensors(path, "MFPSNet weights").items()}
    net.load_state_dict(state, strict=True)
    desc["size"] = size
    if desc.get("dictionary"):
        desc["dictionary"] = str((desc_path.parent / desc["dictionary"]).resolve())
    return net.eval(), desc


class MFPSNetRestorer(Restorer):
    """MFPSNet (or FRSNet) with user-trained weights (see the module docstring)."""

    spec = MethodSpec(
        name="mfpsnet",
        paper="001",
        description="MFPSNet / FRSNet (NAS-searched multi-prior restoration, 128 px); built-in compact model "
        "trained by us for 200 steps on a CPU (model card: zoo/builtin/mfpsnet-compact-128.md); search and train "
        "your own with `facerestore search` / `facerestore train`, then --weights FILE.safetensors",
        size=128,
        min_side=8,
        weights=f"builtin:{BUILTIN_NAME}.safetensors",
        weights_licence="Apache-2.0 (ours), trained on FFHQ (CC BY-NC-SA 4.0) and StyleGAN samples: non-commercial "
        "(its dictionary prior runs MobileFaceNet, whose own licence is not stated)",
        trained_on=("mfpsnet-full",),
        trainer=MFPSNetAdapter,
        note="the built-in mfpsnet weights are a compact model trained for 25 minutes on a CPU (model card "
             "zoo/builtin/mfpsnet-compact-128.md): they barely change a face (+0.3 dB on eq. 10 inputs)",
    )

    def __init__(self, weights: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.net, self.description = load_mfpsnet(self.weights_or_default(weights))
        self.with_spec(size=int(self.description["size"]))
        self._priors = None
        self._check_parsing_source()

    def _check_parsing_source(self) -> None:
        """Weights trained on Face Mesh parsing maps need its weights (older exports do not say: the cache
        decides); WeightsMissingError (one line) at load, before any face is read."""
        from facerestore import zoo

        if (self.description["network"] == "mfpsnet" and self.description.get("parsing") == "mesh"
                and not zoo.is_available("facemesh-468")):
            raise WeightsMissingError("these mfpsnet weights were trained on Face Mesh parsing maps: run "
                                      "`facerestore models download facemesh-468` (the 68-landmark polygons "
                                      "differ: no forehead in the skin class)")

    def prior_fn(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self._priors is None:
            from facerestore.methods.mfpsnet.priors import PriorExtractor

            # parsing maps from the source the weights were trained on (older exports do not say: the cache decides)
            self._check_parsing_source()
            parsing = self.description.get("parsing")
            self._priors = PriorExtractor(self.description.get("dictionary"),
                                          use_mesh=None if parsing is None else parsing == "mesh")
        return self._priors(images.clamp(0, 1))

    def _restore(self, x: torch.Tensor, *, fidelity: float | None, refs: torch.Tensor | None) -> torch.Tensor:
        if self.description["network"] == "frsnet":
            return self.net(x)
        return self.net(x, prior_fn=self.prior_fn, disabled=tuple(self.description.get("disabled_priors", ())))[-1]
