"""A W encoder: a first guess of a face's W latent, so that the inversion starts near the face (beyond paper 002).

Paper 002 starts phase I (W) from the prior's mean latent ``w_avg``. NGD moves the latent by exactly the phase's
learning rate per step (0.08 for W), so a face far from the mean spends much of the W budget travelling towards it,
and a short budget (``--steps``) ends before it arrives. The encoder regresses W from the face image; the inversion
then runs the paper's three phases unchanged from that start (``robust_invert(..., w_init=...)``).

    enc = load_encoder(find_encoder(generator_path), generator_path=generator_path)
    w0 = enc(faces)                       # faces (B, 3, S, S) in [0, 1], FFHQ-aligned, any S -> (B, w_dim)

Network (ours): the face resized to ``in_size`` (64 px, antialiased: W holds the coarse face, and 128 px cost 5x
the training time on this CPU), scaled to [-1, 1]; a 3x3 stem; residual
stride-2 blocks (:class:`~facerestore.nn.blocks.ResidualDown`) down to 4 px with ``width`` channels doubling up to
``max_channels``; a 1x1 reduction to ``head_channels`` (64) and a linear layer from those 4 x 4 features to a
whitened offset; output ``w_avg + w_std * offset``,
``w_avg`` / ``w_std`` the per-dimension mean and spread of the generator's W (buffers, float32). The last layer starts
at zero: an untrained encoder returns ``w_avg``, exactly the paper's start.

Training (:mod:`.encoder_train`, ``facerestore train-encoder``): the generator's own samples, whose W is known,
rendered at 128 px and degraded at random (reduction, noise), with the squared error of the whitened W as the
loss. No photo is used, so the encoder knows the prior's faces only; on a real face it gives the W of a similar
prior face, which the three phases then refine. Files: ``<generator stem>.w-encoder.safetensors`` (weights and
config) beside a ``.json`` record naming the generator's sha256 (checked on load, as the RLS flow is).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from facerestore.errors import WeightsMissingError
from facerestore.nn.blocks import ResidualDown

__all__ = ["ENCODER_FORMAT", "ENCODER_LICENCE", "SUFFIX", "EncoderStart", "LatentEncoder", "encoder_paths",
           "find_encoder", "load_encoder", "save_encoder"]

SUFFIX = ".w-encoder"
ENCODER_FORMAT = "facerestore-w-encoder"
LRELU = 0.2
# what every output record that started from an encoder adds to its licence line
ENCODER_LICENCE = ("W encoder (the search's start, beyond the papers): ours, trained on the generator's samples, so "
                   "bound by the generator's terms")


class LatentEncoder(nn.Module):
    """Face image -> W latent of a StyleGAN-like generator (module docstring).

    Args:
        w_avg, w_std: (w_dim,) mean and per-dimension standard deviation of the generator's W.
        in_size: side the face is resized to (a power of two, 16..1024).
        width: channels of the stem (doubling per halving, capped at ``max_channels``).
        head_channels: channels of the 1x1 reduction of the 4 x 4 features that the linear head reads.
    """

    def __init__(self, w_avg: torch.Tensor, w_std: torch.Tensor, *, in_size: int = 64, width: int = 32,
                 max_channels: int = 256, head_channels: int = 64) -> None:
        super().__init__()
        if in_size < 16 or in_size > 1024 or in_size & (in_size - 1):
            raise ValueError(f"in_size must be a power of two in [16, 1024], got {in_size}")
        if w_avg.shape != w_std.shape or w_avg.ndim != 1:
            raise ValueError(f"w_avg and w_std must be (w_dim,), got {tuple(w_avg.shape)} and {tuple(w_std.shape)}")
        self.config = {"in_size": int(in_size), "width": int(width), "max_channels": int(max_channels),
                       "head_channels": int(head_channels), "w_dim": int(w_avg.shape[0])}
        self.in_size = int(in_size)
        self.register_buffer("w_avg", w_avg.detach().float().clone())
        self.register_buffer("w_std", w_std.detach().float().clone())
        channels, side = [int(width)], self.in_size
        while side > 4:
            channels.append(min(channels[-1] * 2, int(max_channels)))
            side //= 2
        self.stem = nn.Conv2d(3, channels[0], 3, 1, 1)
        self.down = nn.ModuleList(ResidualDown(a, b, LRELU) for a, b in itertools.pairwise(channels))
        # a 1x1 reduction before the linear head: a head on all 4 x 4 x 256 features had 2.1M weights and learnt
        # its few thousand training faces by heart (held-out error flat while the training loss halved)
        self.reduce = nn.Conv2d(channels[-1], int(head_channels), 1)
        self.head = nn.Linear(int(head_channels) * 16, self.config["w_dim"])
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def whitened(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> the whitened offset (B, w_dim): ``(w - w_avg) / w_std``."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, S, S), got {tuple(images.shape)}")
        dtype = self.stem.weight.dtype
        x = images.to(dtype)
        if tuple(x.shape[-2:]) != (self.in_size, self.in_size):
            x = F.interpolate(x, size=(self.in_size, self.in_size), mode="bilinear", align_corners=False,
                              antialias=True)
        x = F.leaky_relu(self.stem(x * 2 - 1), LRELU)
        for block in self.down:
            x = block(x)
        return self.head(F.leaky_relu(self.reduce(x), LRELU).flatten(1)).float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> W (B, w_dim), float32."""
        return self.w_avg + self.w_std * self.whitened(images)


def encoder_paths(generator_path: str | os.PathLike) -> tuple[Path, Path]:
    """(weights, record) paths of the encoder stored next to ``generator_path``."""
    from facerestore.nn.stylegan2_io import sidecar_paths

    return sidecar_paths(generator_path, SUFFIX)


# sane bounds for an encoder file's architecture (a crafted width must not allocate gigabytes)
ENCODER_BOUNDS = {
    "in_size": ("pow2", 16, 1024),
    "width": ("int", 1, 1024),
    "max_channels": ("int", 1, 4096),
    "head_channels": ("int", 1, 4096),
    "w_dim": ("int", 1, 4096),
}


def save_encoder(encoder: LatentEncoder, out: str | os.PathLike, generator_path: str | os.PathLike, *,
                 half: bool = False, **record: Any) -> Path:
    """Write ``encoder`` to ``out`` (.safetensors with its config in the metadata, atomic; fp16 weights with
    ``half``, the W statistics stay float32) and its record (``out`` with .json): the generator's file name and
    sha256, the config and ``record``'s facts (training steps, data, hours)."""
    from facerestore.io import atomic_write_json, atomic_write_safetensors
    from facerestore.nn.stylegan2_io import generator_sha256

    keep = ("w_avg", "w_std")
    state = {k: (v.half() if half and k not in keep else v.float()).contiguous()
             for k, v in encoder.state_dict().items()}
    out = Path(out)
    atomic_write_safetensors(out, state, {"format": ENCODER_FORMAT, "config": json.dumps(encoder.config)})
    gp = Path(generator_path)
    atomic_write_json(out.with_suffix(".json"), {
        "format": ENCODER_FORMAT, "generator": gp.name,
        "generator_sha256": generator_sha256(gp) if gp.exists() else None, "config": encoder.config,
        "dtype": "float16" if half else "float32", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **record,
    })
    return out


def find_encoder(generator_path: str | os.PathLike) -> Path:
    """The encoder of the generator at ``generator_path``: stored next to it, else shipped with the package
    (``zoo/builtin/<name>.w-encoder.safetensors``); WeightsMissingError with the command that trains one."""
    from facerestore.nn.stylegan2_io import find_sidecar

    found = find_sidecar(generator_path, SUFFIX)
    if found is None:
        raise WeightsMissingError(f"no W encoder at {encoder_paths(generator_path)[0]}: train one with "
                                  f"`facerestore train-encoder --generator {generator_path}`")
    return found


def load_encoder(path: str | os.PathLike, *, generator_path: str | os.PathLike | None = None,
                 map_location: str | torch.device = "cpu") -> LatentEncoder:
    """Load an encoder written by :func:`save_encoder` (float32, eval mode).

    The header is read first: the architecture in its metadata is checked against ``ENCODER_BOUNDS`` and the shapes
    it implies against the file's tensors before anything is built. With ``generator_path``, the record beside the
    file must name that generator's sha256 (an encoder fitted to one W space is meaningless for another)."""
    from facerestore.nn.safe_weights import check_shapes, load_safetensors, meta_shapes, read_settings
    from facerestore.nn.stylegan2_io import check_generator_record

    path, where = Path(path), os.fspath(path)
    if not path.is_file():
        raise WeightsMissingError(f"W encoder not found: {where}")
    config, shapes = read_settings(path, ENCODER_FORMAT, ENCODER_BOUNDS, "W encoder")
    stats = torch.zeros(config["w_dim"])

    def build() -> LatentEncoder:
        return LatentEncoder(stats, stats, in_size=config["in_size"], width=config["width"],
                             max_channels=config["max_channels"], head_channels=config["head_channels"])

    check_shapes(meta_shapes(build, where), shapes, where)
    if generator_path is not None:
        check_generator_record(path, generator_path, "W encoder",
                               f"train one for it: `facerestore train-encoder --generator {generator_path}`")
    enc = build()
    enc.load_state_dict({k: v.float() for k, v in load_safetensors(path, "W encoder").items()}, strict=True)
    return enc.to(map_location).eval().requires_grad_(False)


class EncoderStart:
    """Where a latent search starts, as a restorer's ``init`` option names it (beyond papers 002 and 004, which
    start from the prior's mean latent).

    init: "auto" starts the blind mode (no task: whole-photo faces) from the W encoder's guess when one is stored
    beside the generator or shipped for it, and tasks with records from the mean (the papers' tables); "mean"
    always from the mean; "encoder" both modes from the encoder (WeightsMissingError when there is none); a path or
    a :class:`LatentEncoder`: that encoder, both modes. weights: the generator's file or zoo name (its encoder is
    found and checked against its sha256), None for a generator object (whose file, and so encoder, is unknown:
    "auto" then means the mean, "encoder" is refused).
    """

    def __init__(self, init: str | os.PathLike | LatentEncoder, weights: str | os.PathLike | None,
                 G: nn.Module) -> None:
        from facerestore.errors import InputError

        self.init = "encoder" if isinstance(init, LatentEncoder) else os.fspath(init)
        self.encoder = self._resolve(init, weights)
        if self.encoder is not None and self.encoder.config["w_dim"] != G.w_dim:
            raise InputError(f"the W encoder gives {self.encoder.config['w_dim']}-d latents; the generator's are "
                             f"{G.w_dim}-d")

    def _resolve(self, init: str | os.PathLike | LatentEncoder,
                 weights: str | os.PathLike | None) -> LatentEncoder | None:
        from facerestore.errors import InputError
        from facerestore.nn.stylegan2_io import prior_file

        if isinstance(init, LatentEncoder):
            return init.eval().requires_grad_(False)
        if self.init == "mean":
            return None
        if self.init in ("auto", "encoder"):
            if weights is None:
                if self.init == "encoder":
                    raise InputError("init='encoder' with a generator object: pass the encoder itself (a file or a "
                                     "LatentEncoder)")
                return None
            gen_path = prior_file(weights)
            try:
                path = find_encoder(gen_path)
            except WeightsMissingError:
                if self.init == "encoder":
                    raise
                return None
            return load_encoder(path, generator_path=gen_path)
        return load_encoder(init, generator_path=None if weights is None else prior_file(weights))

    def start(self, faces: torch.Tensor, blind: bool) -> torch.Tensor | None:
        """The start for ``faces`` (B, 3, S, S) in [0, 1]: the encoder's W (B, w_dim), float32, when ``init`` asks
        for it in this mode (``blind``: no task), else None (the caller's mean latent)."""
        if self.encoder is None or (self.init == "auto" and not blind):
            return None
        with torch.no_grad():
            return self.encoder(faces.to(self.encoder.w_avg.device, torch.float32))
