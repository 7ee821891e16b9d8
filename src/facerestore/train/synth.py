"""Unlimited training faces: samples of a face generator (FFHQ-aligned, like the real training data).

    facerestore synth -n 1000 -o synth/ --size 512 --seed 0 --truncation 0.8

Sample ``i`` of seed ``s`` is a pure function of (s, i): its z is drawn from a generator seeded with
:func:`sample_seed`, so any subset can be regenerated (to float rounding: a batch of one face takes another
convolution path, which can move a pixel by one level in 8 bits) and two runs with the same seed agree. The
mapping's W is truncated towards ``w_avg`` by ``psi`` (1 = none), rendered at the generator's resolution and
area-downsampled to ``size``. Each folder gets ``synth_NNNNNN.png`` files, ``latents.safetensors`` (``w``:
(N, w_dim) float32, row i = file i: targets for supervised latent regression) and ``manifest.json`` (weights,
their licence, seed, truncation, size, per-file seeds).

Several photos of one synthetic person (``--views V``, :func:`identity_views`): view v of sample i keeps the
sample's w in every W+ row but the first ``layers``, which move by ``strength`` toward the w of another random face
(seeded by (i, v)): pose, head shape, hair and background change, the face's identity mostly stays. The defaults (7
rows: MobileStyleGAN's 4-16 px layers; 0.6) were chosen by eye on 6 persons (moving all of the first 4 rows changed
apparent age) and checked by ``benchmarks/synth_identity_views.py`` on 12 other persons x 3 views: dlib distance to
the person's sample 0.45 on average (3 of 36 views over dlib's same-person threshold 0.6), between persons 0.74;
same/different ROC AUC 0.97 by dlib and 0.95 by MobileFace (independent of our losses; distance to the sample 0.43,
between persons 0.85, 4 of 36 views over its same-person threshold 0.71), above the settings 4 rows x 1.0 and 10 x
0.6. Views
are not guaranteed to be the same person: users filter them (HonestFace training drops views over 0.5 by dlib).
Files ``view_NNNNNN_V.png`` (V = 1..views; view 0 is ``synth_NNNNNN.png``), ``view_latents.safetensors``
(``w_other``: (N, views, w_dim), see :func:`view_wplus`).

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

__all__ = ["DEFAULT_PRIOR", "VIEW_LAYERS", "VIEW_STRENGTH", "default_prior", "identity_views", "latents_of",
           "prepare_synth", "render_synth", "sample_faces", "sample_seed", "view_wplus", "write_synth"]

DEFAULT_PRIOR = "mobilestylegan-ffhq-1024"
VIEW_LAYERS = 7  # W+ rows moved for another view of the same person (module docstring)
VIEW_STRENGTH = 0.6


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


def _view_base(seed: int, index: int) -> int:
    """The seed the views of sample ``index`` derive from: its own sample seed, except for sample 0 of run 0, whose
    sample seed is 0 itself, so that its views' seeds ``sample_seed(0, v) = v`` were samples 1..V of the same run
    (other persons' faces pulled in as "views"). Every other (seed, index) keeps its views as before."""
    base = sample_seed(seed, index)
    return base if base != int(seed) else 2**62 + int(seed)


@torch.no_grad()
def sample_faces(G: Any, indices: list[int], seed: int, *, size: int | None = None, truncation: float = 1.0,
                 device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Render samples ``indices`` of run ``seed``: (images (N, 3, S, S) float32 in [0, 1], W (N, w_dim)).

    ``size`` None keeps the generator's resolution; smaller sizes are area-downsampled (exact for powers of 2).
    """
    from facerestore.nn.stylegan2 import to_unit_range

    if not 0.0 <= truncation <= 2.0 or not math.isfinite(truncation):
        raise InputError(f"truncation must be in [0, 2], got {truncation}")
    w = _mapped(G, [sample_seed(seed, i) for i in indices], truncation, device)
    ws = w.unsqueeze(1).repeat(1, G.num_ws, 1)
    img = to_unit_range(G.synthesis(ws, noise_mode="const")).float().clamp(0, 1)
    if size is not None and size != img.shape[-1]:
        if size > img.shape[-1]:
            raise InputError(f"--size {size} is larger than the generator's {img.shape[-1]} px")
        img = F.interpolate(img, size=(size, size), mode="area")
    return img.cpu(), w.float().cpu()


def _mapped(G: Any, seeds: list[int], truncation: float, device: str | torch.device) -> torch.Tensor:
    """Truncated W (N, w_dim) of the z drawn from each seed."""
    z = torch.stack([torch.randn(G.z_dim, generator=torch.Generator().manual_seed(s)) for s in seeds]).to(device)
    w = G.mapping(z, truncation_psi=1.0, update_w_avg=False) if _takes_update_flag(G) else G.mapping(z)
    w_avg = G.mapping.w_avg.to(w.dtype)
    return w_avg + truncation * (w - w_avg)


def view_wplus(w: torch.Tensor, w_other: torch.Tensor, num_ws: int, layers: int = VIEW_LAYERS,
               strength: float = VIEW_STRENGTH) -> torch.Tensor:
    """W+ of views: ``w`` (N, w_dim) in every row, the first ``layers`` rows moved toward ``w_other`` (N, V, w_dim)
    by ``strength``: (N, V, num_ws, w_dim)."""
    ws = w[:, None, None, :].expand(-1, w_other.shape[1], num_ws, -1).clone()
    k = min(int(layers), num_ws)
    ws[:, :, :k] = ws[:, :, :k] + strength * (w_other[:, :, None, :] - ws[:, :, :k])
    return ws


@torch.no_grad()
def view_others(G: Any, indices: list[int], seed: int, views: int, truncation: float = 1.0,
                device: str | torch.device = "cpu") -> torch.Tensor:
    """The w that views 1..V of each sample move toward: (N, views, w_dim) float32 on the CPU, face seeded (i, v)."""
    seeds = [sample_seed(_view_base(seed, i), v) for i in indices for v in range(1, views + 1)]
    return _mapped(G, seeds, truncation, device).float().cpu().view(len(indices), views, -1)


@torch.no_grad()
def identity_views(G: Any, indices: list[int], seed: int, views: int, *, size: int | None = None,
                   truncation: float = 1.0, layers: int = VIEW_LAYERS, strength: float = VIEW_STRENGTH,
                   device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Several photos of each synthetic person: (images (N, 1 + views, 3, S, S) in [0, 1], W+ (N, 1 + views,
    num_ws, w_dim)). View 0 is sample i itself (equal to :func:`sample_faces`); views 1..V move its first
    ``layers`` W+ rows toward the w of the face seeded (i, v) by ``strength`` in [0, 1] (module docstring)."""
    from facerestore.nn.stylegan2 import to_unit_range

    if int(views) != views or views < 0:
        raise InputError(f"views must be a whole number >= 0, got {views}")
    if not 0.0 <= strength <= 1.0 or int(layers) != layers or layers < 1:
        raise InputError(f"view layers must be >= 1 and strength in [0, 1], got {layers} and {strength}")
    imgs, w = sample_faces(G, indices, seed, size=size, truncation=truncation, device=device)
    n, num_ws = len(indices), int(G.num_ws)
    anchor = w[:, None, None, :].expand(-1, 1, num_ws, -1)
    if views == 0:
        return imgs[:, None], anchor.clone()
    others = view_others(G, indices, seed, views, truncation, device)
    ws = view_wplus(w, others, num_ws, layers, strength)
    out = to_unit_range(G.synthesis(ws.flatten(0, 1).to(device), noise_mode="const")).float().clamp(0, 1)
    if size is not None and size != out.shape[-1]:
        out = F.interpolate(out, size=(size, size), mode="area")
    out = out.cpu().view(n, views, *out.shape[1:])
    return torch.cat([imgs[:, None], out], 1), torch.cat([anchor, ws], 1)


def _takes_update_flag(G: Any) -> bool:
    import inspect

    return "update_w_avg" in inspect.signature(G.mapping.forward).parameters


def _batches(G: Any, count: int, seed: int, batch: int, size: int, truncation: float,
             device: str | torch.device, views: int = 0):
    """Samples 0..count-1 of run ``seed`` in batches, with ``views`` more views each: yields (indices, images
    (B, 1 + views, 3, size, size) in [0, 1], W+ (B, 1 + views, num_ws, w_dim))."""
    for start in range(0, count, batch):
        idx = list(range(start, min(start + batch, count)))
        yield (idx, *identity_views(G, idx, seed, views, size=size, truncation=truncation, device=device))


def write_synth(out_dir: str | os.PathLike, count: int, *, size: int = 512, seed: int = 0, truncation: float = 1.0,
                weights: str | None = None, batch: int = 4, device: str | torch.device = "cpu",
                progress: Callable[[int], None] | None = None, views: int = 0) -> Path:
    """Write ``count`` samples into ``out_dir`` (see the module docstring), each with ``views`` more photos of the
    same synthetic person (:func:`identity_views`); returns the manifest's path."""
    from facerestore import io, zoo
    from facerestore.nn.stylegan2_io import resolve_generator

    if int(count) != count or count < 1:
        raise InputError(f"-n must be a positive number of images, got {count}")
    if int(size) != size or not 16 <= size <= 4096:
        raise InputError(f"--size must be a whole number in 16..4096, got {size}")
    if int(batch) != batch or batch < 1:
        raise InputError(f"--batch must be >= 1, got {batch}")
    if int(views) != views or not 0 <= views <= 64:
        raise InputError(f"--views must be a whole number in 0..64, got {views}")
    out = io.check_output_dir(out_dir)
    name = weights if weights is not None else default_prior()
    G = resolve_generator(name).to(device).eval()
    if name is not None and zoo.has_entry(name):
        licence = zoo.get_entry(name).licence
    elif name is None or name.startswith("builtin:"):
        licence = "Apache-2.0 (ours), trained on FFHQ (CC BY-NC-SA 4.0) and StyleGAN samples: non-commercial"
    else:
        licence = f"that of {name} (a file you supplied)"
    if (out / "manifest.json").is_file() and not _is_synth_manifest(out / "manifest.json"):
        raise InputError(f"{out} holds a manifest.json that facerestore synth did not write: choose another folder")
    # the manifest says the folder is complete: gone until this run's is written, so a run stopped half-way is never
    # taken for the folder's earlier run (whose images it has partly overwritten)
    for stale in ("manifest.json", "latents.safetensors", "view_latents.safetensors"):
        (out / stale).unlink(missing_ok=True)
    (out / WRITING_MARK).touch()  # this folder is being written by us: a rewrite after an interruption is ours to do
    files, latents, others = [], [], []
    for idx, imgs, ws in _batches(G, int(count), seed, int(batch), int(size), truncation, device, int(views)):
        for i, faces in zip(idx, imgs):
            for v, img in enumerate(faces):
                fname = f"synth_{i:06d}.png" if v == 0 else f"view_{i:06d}_{v}.png"
                io.write_image(out / fname, img.permute(1, 2, 0).numpy())
            files.append({"file": f"synth_{i:06d}.png", "index": i, "seed": sample_seed(seed, i)})
        latents.append(ws[:, 0, 0])
        if views:
            others.append(view_others(G, idx, seed, int(views), truncation, device))
        if progress is not None:
            progress(len(idx))
    io.atomic_write_safetensors(out / "latents.safetensors", {"w": torch.cat(latents).contiguous()})
    view_info = {}
    if views:
        io.atomic_write_safetensors(out / "view_latents.safetensors", {"w_other": torch.cat(others).contiguous()})
        view_info = {"views": {
            "count": int(views), "layers": VIEW_LAYERS, "strength": VIEW_STRENGTH,
            "files": "view_NNNNNN_V.png, V = 1..count (view 0 = synth_NNNNNN.png)",
            "latents": "view_latents.safetensors (w_other: count x views x w_dim; W+ = train.synth.view_wplus(w, "
                       "w_other, num_ws, layers, strength))"}}
    _remove_stale_faces(out, int(count), int(views))
    manifest = {
        "format": SYNTH_FORMAT, "generator": name or "builtin:stylegan2-face-64", "licence": licence,
        "resolution": int(G.img_resolution), "size": int(size), "seed": int(seed), "truncation": float(truncation),
        "count": int(count), "latents": "latents.safetensors (w: count x w_dim, row i = index i)",
        "alignment": "FFHQ (the generator's training alignment)", **view_info, "files": files,
    }
    path = io.atomic_write_json(out / "manifest.json", manifest)
    (out / WRITING_MARK).unlink(missing_ok=True)
    return path


def latents_of(folder: str | os.PathLike) -> np.ndarray:
    """The W latents of a synth folder (N, w_dim), row i = ``synth_i``."""
    from facerestore.nn.safe_weights import load_safetensors

    return load_safetensors(Path(folder) / "latents.safetensors", "synth latents")["w"].numpy()


WRITING_MARK = ".facerestore-synth-writing"  # present while write_synth fills a folder (removed with the manifest)
SYNTH_FORMAT = "facerestore-synth"


def _is_synth_manifest(path: Path) -> bool:
    """Whether ``path`` may be replaced as a manifest :func:`write_synth` wrote: ours (one without the format key:
    an earlier version's, known by its latents line) or unreadable (a damaged one of ours is written again); False
    for another tool's JSON object."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return True
    if not isinstance(data, dict):
        return False
    return data.get("format") == SYNTH_FORMAT or str(data.get("latents", "")).startswith("latents.safetensors")


def _remove_stale_faces(out: Path, count: int, views: int) -> None:
    """Faces of an earlier, larger run (an index >= ``count``, a view number > ``views``): the folder must hold
    what its manifest lists and nothing else of ours."""
    import re

    for f in out.iterdir():
        m = re.fullmatch(r"synth_(\d{6})\.png|view_(\d{6})_(\d+)\.png", f.name)
        if m is None:
            continue
        index = int(m.group(1) or m.group(2))
        if index >= count or (m.group(3) is not None and not 1 <= int(m.group(3)) <= views):
            f.unlink(missing_ok=True)


def prepare_synth(spec: dict[str, Any], size: int, default_folder: str | os.PathLike,
                  progress: bool = False) -> Path:
    """The folder of a training config's ``data.synth`` faces: reused when its manifest already holds ``count``
    faces of this seed, truncation and generator at >= ``size`` px, else (re)written: the run's own folder, an
    empty or new one, or one whose writing was interrupted; a folder the config names that holds other faces (a
    `facerestore synth` folder of other settings, anything else) is refused, never rewritten. Returns the folder."""
    import json

    folder = Path(spec.get("folder") or default_folder)
    count, seed = int(spec["count"]), int(spec.get("seed", 0))
    truncation = float(spec.get("truncation", 1.0))
    manifest = folder / "manifest.json"
    m = None
    if manifest.is_file():
        try:
            m = json.loads(manifest.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            m = None  # unreadable: written again
        # without weights in the config, the folder's own generator is accepted (a `facerestore synth --weights X`
        # folder named by data.synth.folder); with them, the folder must have been made by them
        same = (isinstance(m, dict) and m.get("count", 0) >= count and m.get("seed") == seed
                and m.get("truncation") == truncation and m.get("size", 0) >= size
                and (spec.get("weights") is None or m.get("generator") == spec["weights"]))
        if same:
            return folder
    broken_manifest = manifest.is_file() and not isinstance(m, dict)  # our own file, unreadable: rewritten
    if (spec.get("folder") and folder.is_dir() and any(folder.iterdir())
            and not (folder / WRITING_MARK).is_file() and not broken_manifest):
        # a folder the user named (one `facerestore synth` made, or anything else) is never rewritten: only the run's
        # own folder is
        from facerestore.errors import InputError

        raise InputError(f"data.synth.folder {folder} does not hold {count} faces of seed {seed}, truncation "
                         f"{truncation:g}, at least {size} px{' of ' + spec['weights'] if spec.get('weights') else ''} "
                         "(see its manifest.json): name its own settings in the config, or give an empty or new "
                         "folder")
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
            out[idx[0] : idx[-1] + 1] = torch.from_numpy(quantize(imgs[:, 0].numpy()))
            bar.update(len(idx))
    return out
