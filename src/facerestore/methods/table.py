"""The static table of restoration methods (one ``register`` call per method that has landed)."""

from __future__ import annotations

from facerestore.methods import RestorerInfo, register

register(RestorerInfo(
    name="ispl",
    paper="000",
    description="ISPL (implicit subspace prior learning), compact 128 px model trained by us on FFHQ + StyleGAN "
    "faces with blind real-world degradation (model card: zoo/builtin/ispl-compact-128.md)",
    factory="facerestore.methods.ispl.restorer:ISPLRestorer",
    input_size=128,
    supports_fidelity=True,
    supports_half=True,
    supports_bf16=True,
    default_weights="builtin:ispl-compact-128.safetensors",
    extra={"note": "the built-in ispl weights are a compact 128 px model trained on a CPU (model card "
                   "zoo/builtin/ispl-compact-128.md): faces are restored at 128 px and can drift in identity on "
                   "very degraded inputs; retrain larger with configs/ispl-compact-128-warmup.yaml, then "
                   "configs/ispl-compact-128.yaml"},
))

register(RestorerInfo(
    name="hifacegan",
    paper="000",
    description="HiFaceGAN (the ISPL paper's predecessor) with the authors' released latest_net_G.pth; "
    "weights are not redistributed: pass --weights PATH",
    factory="facerestore.methods.ispl.restorer:HiFaceGANRestorer",
    input_size=512,
    supports_half=True,
    supports_bf16=True,
    default_weights=None,
))

# StyleGAN2-prior methods (papers 002, 004) are declared in their own module
from facerestore.methods import table_stylegan  # noqa: E402, F401
