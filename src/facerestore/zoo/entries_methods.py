"""Zoo entries: upstream weights used by facerestore.methods.

StyleGAN2 FFHQ 1024 (papers 002 and 004): NVIDIA's stylegan2-ada-pytorch ``ffhq.pkl`` ("FFHQ at 1024x1024,
trained using original StyleGAN2", i.e. config-f) is read by ``facerestore.nn.stylegan2_io.load_nvidia_pkl``
through the restricted unpickler (no code from the file runs). NVIDIA publishes no checksum for it (none
is listed with the release, in its README or in the stylegan2-ada-pytorch code), so ``sha256`` is empty:
``facerestore models verify`` reports the file as "unverified" (never "ok") and prints its digest, and
loading it warns with that digest so users can pin it.
rosinality's converted ``stylegan2-ffhq-config-f.pt`` (used by the RLS code) is the same network converted
from NVIDIA's TensorFlow pickle; it is only distributed through a Google Drive folder (no direct URL), so
it is not an entry: users who have it can load it with ``load_rosinality_pt``.
"""

from facerestore.zoo import Member, Package, ZooEntry, register

register(ZooEntry(
    name="stylegan2-ffhq-1024",
    url="https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl",
    sha256="",  # NVIDIA publishes none: reported "unverified", never "ok"
    filename="stylegan2-ada-pytorch-ffhq.pkl",
    licence="NVIDIA Source Code License-NC (non-commercial)",
    format="pkl",
    description="StyleGAN2 config-f generator, FFHQ 1024x1024 (NVIDIA stylegan2-ada-pytorch ffhq.pkl, G_ema)",
    size=0,
    used_by=("methods:robust-unsupervised (paper 002)", "methods:rls (paper 004)"),
))

# MobileStyleGAN (Belousov 2021), 1024 px FFHQ, as OpenVINO IR v10 inside the wheel random-face==2021.7.21.1.
# Fetched with `pip download --no-deps` (the wheel's own dependencies are never installed); read by
# facerestore.nn.openvino_ir / facerestore.nn.mobilestylegan (no OpenVINO needed at run time).
register(ZooEntry(
    name="mobilestylegan-ffhq-1024",
    url="",
    sha256="",
    filename="mobilestylegan-ffhq-1024",
    licence="wheel Apache-2.0; weights distilled from NVIDIA StyleGAN2 FFHQ: non-commercial (NVIDIA Source Code "
            "License-NC, FFHQ CC BY-NC-SA 4.0)",
    format="openvino-ir",
    description="MobileStyleGAN 1024x1024 FFHQ face generator (mapping z -> w, synthesis w -> RGB, 23 style latents)",
    size=40915528,  # the four members together
    used_by=("methods:robust-inversion (paper 002)", "methods:rls, rls-plus (paper 004)", "facerestore synth"),
    package=Package(
        manager="pip",
        spec="random-face==2021.7.21.1",
        sha256="e5d10e2be7df63f06123855ec591ca35dcb1d059eba47ddcb175d7d26b4019b5",
        members=(
            Member("random_face/data/MappingNetwork.xml", "MappingNetwork.xml",
                   "73e2096cad6e696e4af47df2477e048ab4c42c0e0dec83c7c66604822689e55b"),
            Member("random_face/data/MappingNetwork.bin", "MappingNetwork.bin",
                   "212dd716bdb556e18db603ea97300d4fa3c872b878c726b2402fea80820e7305"),
            Member("random_face/data/SynthesisNetwork.xml", "SynthesisNetwork.xml",
                   "7918fce515243954d3e06628cb39a23902d6b1d5d02932cc0c2faee7a2aeeedd"),
            Member("random_face/data/SynthesisNetwork.bin", "SynthesisNetwork.bin",
                   "c7da15fa22d508c82e1c30dd6b4cdf67fe3ccdddaf85b310ee764dbf0c289645"),
        ),
    ),
))

# Stable Diffusion 2.1-base (HonestFace / OSDFace's base, paper 003): the released original checkpoint of the
# stabilityai/stable-diffusion-2-1-base model repository (EMA weights, 512 px), read with
# torch.load(weights_only=True) and converted to diffusers' UNet2DConditionModel / AutoencoderKL names by
# facerestore.methods.honestface.backbone.load_sd21_base. sha256 as published with the file (5.2 GB: fetched only by
# an explicit `facerestore models download sd21-base`; a copy you already have can be put into the cache instead).
register(ZooEntry(
    name="sd21-base",
    url="https://huggingface.co/stabilityai/stable-diffusion-2-1-base/resolve/main/v2-1_512-ema-pruned.ckpt",
    sha256="88ecb782561455673c4b78d05093494b9c539fc6bfc08f3a9a4a0dd7b0b10f36",
    filename="v2-1_512-ema-pruned.ckpt",
    licence="CreativeML Open RAIL++-M",
    format="pth",
    description="Stable Diffusion 2.1-base original checkpoint v2-1_512-ema-pruned.ckpt (stabilityai/"
                "stable-diffusion-2-1-base): UNet 865.9M + VAE 83.7M parameters + OpenCLIP text encoder (unused)",
    size=0,
    used_by=("methods:honestface (paper 003), weights='sd21-base'",),
))
