"""Registry rows of the StyleGAN2-prior restorers (papers 002 and 004); imported by ``methods/table.py``."""

from __future__ import annotations

from facerestore.methods import RestorerInfo, register

INFOS: tuple[RestorerInfo, ...] = (
    RestorerInfo(
        name="robust-inversion",
        paper="002",
        description="Robust unsupervised StyleGAN2 inversion (W -> W+ -> W++ with normalized gradient descent, "
        "multi-resolution LPIPS + L1) for upsampling, denoising, JPEG, inpainting and their compositions; "
        "needs the task's degradation records; prior: our built-in 64 px face StyleGAN2, or StyleGAN2 FFHQ 1024 "
        "(weights='stylegan2-ffhq-1024', zoo)",
        factory="facerestore.methods.inversion.restorer:RobustInversionRestorer",
        input_size=64,
        unsupervised=True,
        default_weights="stylegan2-face-64",
        extra={"tasks": "robust-*", "steps": (150, 150, 150), "lrs": (0.08, 0.02, 0.005)},
    ),
    RestorerInfo(
        name="rls",
        paper="004",
        description="RLS: regularized latent search in W+ of StyleGAN2 FFHQ for face super-resolution (PULSE "
        "bicubic degradation), with a MAF flow prior trained by `facerestore train-flow`; prior: our built-in 64 px "
        "face StyleGAN2 and its flow, or StyleGAN2 FFHQ 1024 (zoo) with a flow you train",
        factory="facerestore.methods.rls.restorer:RLSRestorer",
        input_size=64,
        unsupervised=True,
        default_weights="stylegan2-face-64",
        extra={"tasks": "rls-x*", "plus": False},
    ),
    RestorerInfo(
        name="rls-plus",
        paper="004",
        description="RLS+: RLS followed by joint tuning of latents (inside an L1 ball around the RLS anchor), "
        "noise maps and generator weights",
        factory="facerestore.methods.rls.restorer:RLSPlusRestorer",
        input_size=64,
        unsupervised=True,
        default_weights="stylegan2-face-64",
        extra={"tasks": "rls-x*", "plus": True},
    ),
)

for _info in INFOS:
    register(_info)
