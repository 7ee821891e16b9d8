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

from facerestore.zoo import ZooEntry, register

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
