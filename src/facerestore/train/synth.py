"""Unlimited training faces: samples of a face generator (FFHQ-aligned, like the real training data).

    facerestore synth -n 1000 -o synth/ --size 512 --seed 0 --truncation 0.8

Sample ``i`` of seed ``s`` is a pure function of (s, i): its z is drawn from a generator seeded with
:func:`sample_seed`, so any subset can be regenerated exactly and two runs with the same seed agree. The
mapping's W is truncated towards ``w_avg`` by ``psi`` (1 = none), rendered at the generator's resolution and
area-downsampled to ``size``. Each folder gets ``synth_NNNNNN.png`` files, ``latents.safetensors`` (``w``:
(N, w_dim) float32, row i = file i: targets for supervised latent regression) and ``manifest.json`` (weights,
their licence, seed, truncation, size, per-file seeds).

Default generator: MobileStyleGAN 1024 px (zoo ``mobilestylegan-ffhq-1024``, non-commercial weights) when it is
in the cache, else our built-in 64 px prior (with a one-line note: crude faces).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from facerestore.errors import InputError

__all__ = ["DEFAULT_PRIOR", "default_prior", "latents_of", "prepare_synth", "render_synth", "sample_faces",
           "sample_seed", "write_synth"]

DEFAULT_PRIOR = "mobilestylegan-ffhq-1024"


def default_prior() -> str | None:
    """The real prior's zoo name when cached, else None (the built-in 64 px prior), announced once."""
    from facerestore import zoo

    if zoo.is_available(DEFAULT_PRIOR):
        return DEFAULT_PRIOR
    warnings.warn(f"{DEFAULT_PRIOR} is not in the cache (`facerestore models download {DEFAULT_PRIOR}`): using the "
                  "built-in 64 px prior, whose faces are crude", stacklevel=2)
    return None


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample ``index`` of a run seeded ``seed`` (distinct, stable across versions)."""
    return (int(seed) * 1_000_003 + int(index)) % (2**63 - 1)


@torch.no_grad()
def sample_faces(G: Any, indices: list[int], seed: int, *, size: int | None = None, truncation: float = 1.0,
                 device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Render samples ``indices`` of run ``seed``: (images (N, 3, S, S) float32 in [0, 1], W (N, w_dim)).

    ``size`` None keeps the generator's resolution; smaller sizes are area-downsampled (exact for powers of 2).
    """
    from facerestore.nn.stylegan2 import to_unit_range

    if not 0.0 <= truncation <= 2.0 or not math.isfinite(truncation):
        raise InputError(f"truncation must be in [0, 2], got {truncation}")
    z = torch.stack([torch.randn(G.z_dim, generator=torch.Generator().manual_seed(sample_seed(seed, i)))
                     for i in indices]).to(device)
    w = G.mapping(z, truncation_psi=1.0, update_w_avg=False) if _takes_update_flag(G) else G.mapping(z)
    w_avg = G.mapping.w_avg.to(w.dtype)
    w = w_avg + truncation * (w - w_avg)
    ws = w.unsqueeze(1).repeat(1, G.num_ws, 1)
    img = to_unit_range(G.synthesis(ws, noise_mode="const")).float().clamp(0, 1)
    if size is not None and size != img.shape[-1]:
        if size > img.shape[-1]:
            raise InputError(f"--size {size} is larger than the generator's {img.shape[-1]} px")
        img = F.interpolate(img, size=(size, size), mode="area")
    return img.cpu(), w.float().cpu()


def _takes_update_flag(G: Any) -> bool:
    import inspect

    return "update_w_avg" in inspect.signature(G.mapping.forward).parameters


def _batches(G: Any, count: int, seed: int, batch: int, size: int, truncation: float,
             device: str | torch.device):
    """Samples 0..count-1 of run ``seed`` in batches: yields (indices, images (B, 3, size, size) in [0, 1], W)."""
    for start in range(0, count, batch):
        idx = list(range(start, min(start + batch, count)))
        yield (idx, *sample_faces(G, idx, seed, size=size, truncation=truncation, device=device))


def write_synth(out_dir: str | os.PathLike, count: int, *, size: int = 512, seed: int = 0, truncation: float = 1.0,
                weights: str | None = None, batch: int = 4, device: str | torch.device = "cpu",
                progress: Callable[[int], None] | None = None) -> Path:
    """Write ``count`` samples into ``out_dir`` (see the module docstring); returns the manifest's path."""
    from facerestore import io, zoo
    from facerestore.nn.stylegan2_io import resolve_generator

    if int(count) != count or count < 1:
        raise InputError(f"-n must be a positive number of images, got {count}")
    if int(size) != size or not 16 <= size <= 4096:
        raise InputError(f"--size must be a whole number in 16..4096, got {size}")
    if int(batch) != batch or batch < 1:
        raise InputError(f"--batch must be >= 1, got {batch}")
    out = io.check_output_dir(out_dir)
    name = weights if weights is not None else default_prior()
    G = resolve_generator(name).to(device).eval()
    if name is not None and zoo.has_entry(name):
        licence = zoo.get_entry(name).licence
    elif name is None or name.startswith("builtin:"):
        licence = "Apache-2.0 (ours), trained on FFHQ (CC BY-NC-SA 4.0) and StyleGAN samples"
    else:
        licence = f"that of {name} (a file you supplied)"
    files, latents = [], []
    for idx, imgs, w in _batches(G, int(count), seed, int(batch), int(size), truncation, device):
        for i, img in zip(idx, imgs):
            fname = f"synth_{i:06d}.png"
            io.write_image(out / fname, img.permute(1, 2, 0).numpy())
            files.append({"file": fname, "index": i, "seed": sample_seed(seed, i)})
        latents.append(w)
        if progress is not None:
            progress(len(idx))
    io.atomic_write_safetensors(out / "latents.safetensors", {"w": torch.cat(latents).contiguous()})
    manifest = {
        "generator": name or "builtin:stylegan2-face-64", "licence": licence,
        "resolution": int(G.img_resolution), "size": int(size), "seed": int(seed), "truncation": float(truncation),
        "count": int(count), "latents": "latents.safetensors (w: count x w_dim, row i = index i)",
        "alignment": "FFHQ (the generator's training alignment)", "files": files,
    }
    return io.atomic_write_json(out / "manifest.json", manifest)


def latents_of(folder: str | os.PathLike) -> np.ndarray:
    """The W latents of a synth folder (N, w_dim), row i = ``synth_i``."""
    from facerestore.nn.safe_weights import load_safetensors

    return load_safetensors(Path(folder) / "latents.safetensors", "synth latents")["w"].numpy()


def prepare_synth(spec: dict[str, Any], size: int, default_folder: str | os.PathLike,
                  progress: bool = False) -> Path:
    """The folder of a training config's ``data.synth`` faces: reused when its manifest already holds ``count``
    faces of this seed, truncation and generator at >= ``size`` px, else (re)written. Returns the folder."""
    import json

    folder = Path(spec.get("folder") or default_folder)
    count, seed = int(spec["count"]), int(spec.get("seed", 0))
    truncation = float(spec.get("truncation", 1.0))
    manifest = folder / "manifest.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        same = (m.get("count", 0) >= count and m.get("seed") == seed and m.get("truncation") == truncation
                and m.get("size", 0) >= size and (spec.get("weights") is None or m.get("generator") == spec["weights"]))
        if same:
            return folder
    from tqdm import tqdm

    with tqdm(total=count, desc="synth faces", unit="face", disable=not progress) as bar:
        write_synth(folder, count, size=size, seed=seed, truncation=truncation, weights=spec.get("weights"),
                    progress=bar.update)
    return folder


def render_synth(spec: dict[str, Any], size: int, device: str | torch.device = "cpu", batch: int | None = None,
                 progress: bool = False) -> torch.Tensor:
    """A training config's ``data.synth`` faces rendered straight into memory (``store: memory``).

    Returns (count, 3, size, size) uint8 on the CPU, quantised as ``write_synth``'s PNGs are (round half up), so
    the faces equal the files ``write_synth`` would write from the same spec on the same device. ``batch``:
    faces per generator call (default 16 on CUDA, 4 elsewhere).
    """
    from tqdm import tqdm

    from facerestore.io import quantize
    from facerestore.nn.stylegan2_io import resolve_generator

    count = int(spec["count"])
    dev = torch.device(device)
    G = resolve_generator(spec.get("weights") or default_prior()).to(dev).eval()
    step = int(batch or (16 if dev.type == "cuda" else 4))
    out = torch.empty((count, 3, size, size), dtype=torch.uint8)
    with tqdm(total=count, desc="synth faces (memory)", unit="face", disable=not progress) as bar:
        for idx, imgs, _ in _batches(G, count, int(spec.get("seed", 0)), step, size,
                                     float(spec.get("truncation", 1.0)), dev):
            out[idx[0] : idx[-1] + 1] = torch.from_numpy(quantize(imgs.numpy()))
            bar.update(len(idx))
    return out
