"""ISPL and HiFaceGAN behind the ``Restorer`` interface.

- ``ISPLRestorer`` ("ispl"): our own compact ISPL weights, shipped in ``facerestore/zoo/builtin`` (fp16
  ``.safetensors`` + a ``.json`` describing the network + a model card ``.md``): ``ispl-compact-256-gpu`` (the
  default, 256 px: ``ispl-compact-256`` fine-tuned on a GPU), ``ispl-compact-256`` (256 px, CPU-trained) and
  ``ispl-compact-128`` (the smallest, 128 px: ``weights="builtin:ispl-compact-128.safetensors"``).
  ``weights=`` may instead name any ``.safetensors`` exported by ``facerestore train`` (``final.safetensors`` with
  its ``final.json``).
- ``HiFaceGANRestorer`` ("hifacegan"): the authors' released ``latest_net_G.pth`` (not redistributable,
  not in the zoo): ``weights=`` is required.

Crop size: the networks work at their training size S (256 for the default weights). ``restore`` takes
aligned crops of any size, resizes them to S (area when shrinking, bicubic when enlarging), restores, and
resizes the result back to the input size (bicubic up / area down), clamped to [0, 1]. Crops larger than S
therefore lose detail above S's resolution (the photo pipeline aligns at 512 px and lets the restorer
resize, so that crops, paste-back masks and identity checks work at one size for every method).

Weights are read with safetensors / ``torch.load(weights_only=True)`` only; no code is executed.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from facerestore.errors import InputError, WeightsMissingError
from facerestore.methods.ispl.generator import ISPLConfig, ISPLGenerator
from facerestore.methods.ispl.train import ISPLAdapter
from facerestore.methods.restorer import Restorer
from facerestore.methods.spec import MethodSpec

__all__ = ["BUILTIN_NAME", "CPU_256_NAME", "SMALLEST_NAME", "HiFaceGANRestorer", "ISPLRestorer", "builtin_weights",
           "load_hifacegan", "load_ispl"]

BUILTIN_NAME = "ispl-compact-256-gpu"  # the default
CPU_256_NAME = "ispl-compact-256"  # the CPU-trained 256 px weights the default was fine-tuned from
SMALLEST_NAME = "ispl-compact-128"  # the first built-in weights, kept as the smallest option


def builtin_weights(name: str = BUILTIN_NAME) -> Path:
    """Path of shipped weights (``zoo/builtin/<name>.safetensors``; default the default ``ispl-compact-256-gpu``)."""
    from facerestore.zoo import BUILTIN_DIR

    return Path(BUILTIN_DIR) / f"{name}.safetensors"


def load_ispl(weights: str | os.PathLike | None = None) -> ISPLGenerator:
    """Build an ``ISPLGenerator`` from a safetensors file and the JSON description next to it (float32).

    Hostile or malformed files fail with one InputError before anything large is allocated: the description's
    settings are checked against sane bounds, the shapes they imply (computed on the meta device) must equal
    the tensor shapes in the file's header, and only then is the network built and the tensors read.
    """
    from facerestore.nn.safe_weights import (
        check_settings,
        check_shapes,
        load_safetensors,
        meta_shapes,
        open_safetensors,
        weights_and_description,
    )

    path = builtin_weights() if weights is None else Path(weights)
    if weights is None and not path.is_file():
        raise WeightsMissingError(f"built-in ISPL weights are missing from the installation: {path}")
    path, meta = weights_and_description(path, "ISPL")
    meta_path = path.with_suffix(".json")
    where = f"{meta_path.name} (ISPL architecture description)"
    if "generator" not in meta:
        raise InputError(f"{where} has no 'generator' settings")
    # sane bounds of the settings (the paper's model: 512 px, ngf 64, max 1024 channels, 5 subspaces); a
    # crafted description must not make the build allocate terabytes
    bounds = {
        "size": ("pow2", 16, 2048),
        "ngf": ("int", 1, 512),
        "max_channels": ("int", 1, 2048),
        "n_subspaces": ("int", 1, 8),
        "fusion": ("choice", ("unet", "y0", "concat", "matrix")),
        "guide_channels": ("int", 1, 1024),
        "pac": ("bool",),
        "pac_embed_dim": ("int", 1, 256),
        "spade_hidden": ("int", 1, 1024),
        "spade_norm": ("choice", ("instance", "batch")),
        "spade_form": ("choice", ("gamma", "one_plus_gamma")),
        "spectral": ("bool",),
        "input_guide": ("bool",),
        "default_fidelity": ("float", 0.0, 1.0),
    }
    settings = check_settings(meta["generator"], bounds, where)
    try:
        gen = ISPLConfig(**settings)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: {exc}") from None
    _, found = open_safetensors(path, "ISPL weights")
    check_shapes(meta_shapes(lambda: ISPLGenerator(config=gen), where), found, path.name)
    net = ISPLGenerator(config=gen)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_safetensors(path, "ISPL weights").items()}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(f"{path.name} does not match its description: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}")
    return net


class ISPLRestorer(Restorer):
    """ISPL restorer: ``restore(lq, fidelity=None)`` on aligned crops of any size (see module docstring).

    ``fidelity`` in [0, 1]: 1 = all subspace embeddings (closest to the input, the default), 0 = only the
    innermost embedding (most generative); None uses the network's default (1).
    """

    spec = MethodSpec(
        name="ispl",
        paper="000",
        description="ISPL (implicit subspace prior learning), compact 256 px model trained by us on FFHQ + "
        "StyleGAN faces with degradations from none to heavy blind real-world ones, on a CPU then a GPU (model "
        "card: zoo/builtin/ispl-compact-256-gpu.md); the 128 px weights stay as the smallest option",
        size=256,
        min_side=8,
        supports_fidelity=True,
        precisions=("fp32", "fp16", "bf16"),
        weights=(f"builtin:{BUILTIN_NAME}.safetensors", f"builtin:{CPU_256_NAME}.safetensors",
                 f"builtin:{SMALLEST_NAME}.safetensors"),
        weights_licence="Apache-2.0 (ours), trained on FFHQ (CC BY-NC-SA 4.0), StyleGAN and MobileStyleGAN samples "
        "(FFHQ-derived): non-commercial",
        trainer=ISPLAdapter,
        trained_on=("realworld-gfpgan",),
        note="the built-in ispl weights are compact models (2M parameters) trained on a CPU and, for the default, "
             "4 minutes of one GPU (model cards zoo/builtin/ispl-compact-256-gpu.md, ispl-compact-256.md, "
             "ispl-compact-128.md): faces are restored at 256 px (128 px with --weights "
             "builtin:ispl-compact-128.safetensors), soft next to GFPGAN/CodeFormer, and can drift in identity on "
             "very degraded inputs; recipes: configs/ispl-compact-128-warmup.yaml, configs/ispl-compact-128.yaml, "
             "configs/ispl-compact-256.yaml, then configs/ispl-compact-256-gpu.yaml",
    )

    def __init__(self, weights: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.net = load_ispl(self.weights_or_default(weights)).eval()
        self.size = self.net.config.size
        self.with_spec(size=self.size, supports_fidelity=self.net.supports_fidelity)
        self.default_fidelity = float(self.net.config.default_fidelity)

    def _restore(self, x: torch.Tensor, *, fidelity: float | None, refs: torch.Tensor | None) -> torch.Tensor:
        return self.net(x, fidelity)


def load_hifacegan(weights: str | os.PathLike | None, ngf: int = 48):
    """The released HiFaceGAN (``latest_net_G.pth``, "lipspade" layout, ngf 48) from an explicit path."""
    from facerestore.methods.ispl.hifacegan import HiFaceGAN, load_hifacegan_state_dict

    if weights is None:
        raise WeightsMissingError("hifacegan needs the authors' latest_net_G.pth (Lotayou/Face-Renovation), which "
                                  "is not redistributed: pass weights=PATH (--weights PATH)")
    path = Path(weights)
    if not path.is_file():
        raise WeightsMissingError(f"HiFaceGAN weights not found: {path}")
    return load_hifacegan_state_dict(HiFaceGAN(ngf=ngf, variant="lipspade"), path)


class HiFaceGANRestorer(Restorer):
    """HiFaceGAN with user-supplied released weights; works at 512 (crops are resized to it and back)."""

    spec = MethodSpec(
        name="hifacegan",
        paper="000",
        description="HiFaceGAN (the ISPL paper's predecessor) with the authors' released latest_net_G.pth; "
        "weights are not redistributed: pass --weights PATH",
        size=512,
        min_side=8,
        precisions=("fp32", "fp16", "bf16"),
        weights=None,
        weights_licence="the authors' (Lotayou/Face-Renovation, not redistributed; you supply the file)",
    )

    def __init__(self, weights: str | os.PathLike | None = None, ngf: int = 48) -> None:
        super().__init__()
        self.net = load_hifacegan(weights, ngf).eval()

    def _restore(self, x: torch.Tensor, *, fidelity: float | None, refs: torch.Tensor | None) -> torch.Tensor:
        return self.net(x)
