"""Training of the compact HonestFace model on a CPU, in resumable chunks (each exports usable weights).

    python -m facerestore.methods.honestface.train --out runs/honestface --minutes 15   # repeat to continue

Data (``prepare``, cached in ``OUT/data.pt``):
- reference sets from ../shared/data/photos: identities paired by master.csv and face-recognition-pivot.csv (one
  connected group per person); every photo's largest face aligned on the FFHQ template at 128 px. Each person's
  benchmark query photo (:func:`query_photo`: the lowest-numbered one of a person with >= 3 photos) is left out of
  training entirely, so that ``benchmarks/honestface_refs.py`` restores faces the model never saw;
- ../shared/data/ffhq256 (validation ids ending in 0 left out), area-resized to 128 px, with "self" references:
  photometrically jittered and slightly shifted views of the same face;
- optionally (``--synth DIR``, a ``facerestore synth --views V`` folder) synthetic persons: each sample and its views
  (other pose, hair, background; :func:`facerestore.train.synth.identity_views`) is one person, the views being
  its reference photos; views farther than ``SYNTH_MAX_DISTANCE`` from the sample by dlib are left out.
Every sample: HQ face, LQ = ``realworld-gfpgan`` (60%) or the heavier ``realworld-vqfr`` (40%), seeded by step
and sample, 0-4 references (none with probability 0.25). In a batch, sample 0 mod 4 comes from the photo persons,
2 mod 4 from the synthetic persons (from the photo persons when there are none), the odd ones from everything.

Phases (the compact model has no pretrained Stable Diffusion behind it):
- V (``--phase-v`` steps, default 700): the VAE alone, as an autoencoder of clean faces (L1); it never sees a
  degraded face, as SD's autoencoder never did;
- A (``--phase-a`` steps, default 1300): the UNet base weights (LoRA disabled) and the prompt embedder trained
  with L1 + identity (eq. 8) + the VQ loss; with a V phase before it the VAE stays frozen and the UNet's x0 is also
  regressed on the clean face's latent, so that the UNet, not the VAE, restores (``--phase-v 0``: the whole backbone
  trained end to end with the VAE's reconstruction of the clean face added, the recipe of the first built-in weights,
  whose VAE learnt the restoration and whose UNet stayed a near pass-through that ignores the prompt:
  ``benchmarks/results/ref_weight_honestface_v1.md``);
- B: the paper's setting: VAE and UNet base frozen, LoRA (rank 16, alpha 16) + prompt embedder trained with
  eq. 8 (identity, dlib's network: the only identity network we may train with; MobileFaceNet is reserved for
  evaluation), eq. 9 (global perceptual on the image and its Sobel edges), eq. 10-13 (masked face alignment,
  k = 10, on heatmaps of the LQ face's landmarks) and the adversarial loss of eq. 5, generator and discriminator
  alternately. DISTS and LPIPS need VGG/AlexNet ImageNet weights that are not available offline: both perceptual
  terms use a feature distance over dlib's ResNet (first conv and first two blocks, unit-normalised channels as
  LPIPS does) instead, plus L1 (our addition for the short budget).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facerestore.methods.honestface.backbone import alphas_cumprod
from facerestore.methods.honestface.model import HonestFaceNet, face_landmarks68, save_honestface
from facerestore.methods.honestface.prompt import eye_patches, select_r0

__all__ = ["LatentDiscriminator", "phase_at", "photo_identities", "query_photo", "set_phase"]

# ../shared/data beside the repository (not the current directory); ``--data`` names another
DATA = Path(__file__).resolve().parents[4].parent / "shared" / "data"
PHOTOS = DATA / "photos"
FFHQ = DATA / "ffhq256"
SIZE = 128
MAX_REFS = 4
SYNTH_PERSON0 = 100_000  # person ids of synthetic persons start here (photo persons count from 0, ffhq faces < 0)
SYNTH_MAX_DISTANCE = 0.5  # dlib distance above which a view is not taken for the same person (dlib's own: 0.6)


# ------------------------------------------------------------------------------------------------------ data


def photo_identities(root: Path = PHOTOS) -> list[list[str]]:
    """Persons of ../shared/data/photos: connected groups of the "same person" pairs of both CSV files, each a
    sorted list of file names (by image number), largest group first."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for name, col in (("master.csv", "Decision"), ("face-recognition-pivot.csv", "decision")):
        path = root / name
        if not path.is_file():
            continue
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                a, b = Path(row["file_x"]).name, Path(row["file_y"]).name
                if not ((root / a).is_file() and (root / b).is_file()):
                    continue
                ra, rb = find(a), find(b)
                if row[col].strip().lower() == "yes" and ra != rb:
                    parent[ra] = rb
    groups: dict[str, list[str]] = defaultdict(list)
    for x in list(parent):
        groups[find(x)].append(x)
    num = lambda s: int(re.sub(r"\D", "", s) or 0)  # noqa: E731
    return sorted((sorted(g, key=num) for g in groups.values()), key=lambda g: (-len(g), num(g[0])))


def query_photo(group: list[str]) -> str | None:
    """The benchmark's degraded photo of a person (the first of ``photo_identities``' order), None below 3 photos."""
    return group[0] if len(group) >= 3 else None


def _align(path: Path) -> np.ndarray | None:
    from facerestore import io
    from facerestore.faces.align import align_face
    from facerestore.faces.detect import detect_faces

    img = io.read_image(path).rgb
    dets = detect_faces(img, "hog", select="largest")
    if not dets:
        return None
    return align_face(img, dets[0].landmarks5, size=SIZE).crop.astype(np.float32)


def synth_persons(folder: Path, embedder: Any,
                  max_distance: float = SYNTH_MAX_DISTANCE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Synthetic persons of a ``facerestore synth --views`` folder at ``SIZE`` px: (faces (M, 3, S, S) float in
    [0, 1], person ids (M,) from ``SYNTH_PERSON0``, dlib embeddings (M, 128), views dropped). A person is its sample
    and the views within ``max_distance`` (dlib) of it; persons left with no view are dropped."""
    from facerestore import io
    from facerestore.faces.identity import embedding_distance

    manifest = json.loads((folder / "manifest.json").read_text())
    views = int(manifest.get("views", {}).get("count", 0))
    if views < 1:
        raise ValueError(f"{folder}: no views (write it with `facerestore synth --views V`)")
    faces, person, embs, dropped = [], [], [], 0
    for entry in manifest["files"]:
        i = int(entry["index"])
        names = [entry["file"]] + [f"view_{i:06d}_{v}.png" for v in range(1, views + 1)]
        x = torch.stack([torch.from_numpy(io.read_rgb(folder / n)).permute(2, 0, 1) for n in names]).float()
        if x.shape[-1] != SIZE:
            x = F.interpolate(x, size=(SIZE, SIZE), mode="area")
        with torch.no_grad():
            e = embedder.embed(x.clamp(0, 1)).float()
        keep = [0] + [v for v in range(1, views + 1) if embedding_distance(e[v].numpy(), e[0].numpy()) <= max_distance]
        dropped += views + 1 - len(keep)
        if len(keep) < 2:
            continue
        faces.append(x[keep])
        embs.append(e[keep])
        person += [SYNTH_PERSON0 + i] * len(keep)
    if not faces:
        raise ValueError(f"{folder}: no synthetic person kept (every view farther than {max_distance} by dlib)")
    return torch.cat(faces).clamp(0, 1), torch.tensor(person), torch.cat(embs), dropped


def _prepare(out: Path, n_ffhq: int, embedder: Any, synth: Path | None = None, data: Path = DATA) -> dict[str, Any]:
    from facerestore import io

    photos, ffhq = data / "photos", data / "ffhq256"
    missing = [str(p) for p in (photos, ffhq) if not p.is_dir()]
    if missing:
        raise SystemExit(f"training data not found: {', '.join(missing)} (pass --data DIR, the folder holding "
                         "photos/ and ffhq256/)")
    faces, person = [], []
    for pid, group in enumerate(photo_identities(photos)):
        q = query_photo(group)
        for name in group:
            if name == q:
                continue
            crop = _align(photos / name)
            if crop is not None:
                faces.append(torch.from_numpy(crop).permute(2, 0, 1))
                person.append(pid)
    files = sorted(p for p in ffhq.glob("*.*") if not p.stem.endswith("0"))[:n_ffhq]
    for i, p in enumerate(files):
        img = torch.from_numpy(io.read_image(p).rgb.astype(np.float32)).permute(2, 0, 1)[None]
        faces.append(F.interpolate(img, size=(SIZE, SIZE), mode="area")[0])
        person.append(-1 - i)  # its own identity: self references
    if not faces:
        raise SystemExit(f"no training faces in {photos} or {ffhq}")
    x = torch.stack(faces).clamp(0, 1)
    with torch.no_grad():
        emb = torch.cat([embedder.embed(x[i:i + 32]) for i in range(0, len(x), 32)]).float()
    pid = torch.tensor(person)
    if synth is not None:
        sx, sp, se, dropped = synth_persons(Path(synth), embedder)
        print(f"synthetic persons: {len(sp.unique())} ({len(sp)} faces; {dropped} views over "
              f"{SYNTH_MAX_DISTANCE} by dlib left out)", flush=True)
        x, pid, emb = torch.cat([x, sx]), torch.cat([pid, sp]), torch.cat([emb, se])
    lms = face_landmarks68(x)
    data = {"faces": (x * 255).round().to(torch.uint8), "person": pid,
            "landmarks": torch.from_numpy(lms).float(), "embeddings": emb,
            "synth": str(Path(synth).resolve()) if synth is not None else ""}
    from facerestore.train.checkpoint import save_checkpoint

    save_checkpoint(out / "data.pt", data)  # atomic: an interrupted preparation leaves no half file
    return data


def _jitter(x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, tuple[int, int]]:
    """Photometric jitter and a shift of up to 3 px (self references): (the view, its (dx, dy) shift in pixels).
    The border the shift uncovers repeats the edge pixels (a roll would wrap the other side's pixels in)."""
    b = 1 + 0.15 * (torch.rand(3, 1, 1, generator=g) - 0.5)
    c = 0.06 * (torch.rand(1, 1, 1, generator=g) - 0.5)
    dx, dy = (torch.randint(-3, 4, (2,), generator=g)).tolist()
    h, w = x.shape[-2:]
    padded = F.pad(x[None], (3, 3, 3, 3), mode="replicate")[0]
    shifted = padded[:, 3 - dy : 3 - dy + h, 3 - dx : 3 - dx + w]
    return (shifted * b + c).clamp(0, 1), (dx, dy)


def make_batch(data: dict[str, Any], step: int, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """One training batch, a function of (step, seed) only: resumable and reproducible."""
    from facerestore import degrade

    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    faces, person = data["faces"], data["person"]
    n = len(faces)
    photo = ((person >= 0) & (person < SYNTH_PERSON0)).nonzero().flatten()
    synth = (person >= SYNTH_PERSON0).nonzero().flatten()
    hq, lq, refs, ref_lm, ref_emb, mask = [], [], [], [], [], []
    for b in range(batch):
        # half of the samples carry true reference sets: photo persons, and synthetic persons when there are any
        pool_b = synth if (b % 4 == 2 and len(synth)) else photo
        i = int(pool_b[torch.randint(len(pool_b), (1,), generator=g)]) if (b % 2 == 0 and len(pool_b)) else \
            int(torch.randint(n, (1,), generator=g))
        x = faces[i].float() / 255
        if torch.rand((), generator=g) < 0.5:  # flip the target (refs keep their own geometry)
            x = x.flip(-1)
        task = "realworld-gfpgan" if torch.rand((), generator=g) < 0.6 else "realworld-vqfr"
        y, _ = degrade.apply(x[None].double(), task, generator=int(torch.randint(2**31, (1,), generator=g)))
        hq.append(x)
        lq.append(y[0].float().clamp(0, 1))
        pid = int(person[i])
        if pid >= 0:
            pool = [j for j in (person == pid).nonzero().flatten().tolist() if j != i]
        else:
            pool = [i]
        k = 0 if torch.rand((), generator=g) < 0.25 else int(torch.randint(1, MAX_REFS + 1, (1,), generator=g))
        pick = [pool[int(t)] for t in torch.randint(len(pool), (k,), generator=g)] if pool else []
        r = torch.zeros(MAX_REFS, 3, SIZE, SIZE)
        rl = torch.zeros(MAX_REFS, 68, 2)
        re_ = torch.zeros(MAX_REFS, 128)
        m = torch.zeros(MAX_REFS, dtype=torch.bool)
        for s, j in enumerate(pick):
            face = faces[j].float() / 255
            rl[s], re_[s], m[s] = data["landmarks"][j], data["embeddings"][j], True
            if pid < 0:  # a shifted view: its landmarks move with it (the eye patches are cut from them)
                r[s], (dx, dy) = _jitter(face, g)
                rl[s] = rl[s] + torch.tensor([float(dx), float(dy)])
            else:
                r[s] = face
        refs.append(r)
        ref_lm.append(rl)
        ref_emb.append(re_)
        mask.append(m)
    return {"hq": torch.stack(hq), "lq": torch.stack(lq), "refs": torch.stack(refs), "ref_lm": torch.stack(ref_lm),
            "ref_emb": torch.stack(ref_emb), "mask": torch.stack(mask)}


def reference_inputs(batch: dict[str, torch.Tensor], lq_lm: np.ndarray) -> tuple[torch.Tensor, ...]:
    """(eyes, id_emb, mask) per sample: r0 chosen by A-LD among the sample's own references (eq. 6)."""
    refs, ref_lm, mask = batch["refs"], batch["ref_lm"], batch["mask"]
    b = refs.shape[0]
    r0 = []
    for i in range(b):
        valid = mask[i].nonzero().flatten().tolist()
        r0.append(valid[select_r0(lq_lm[i], ref_lm[i, valid].numpy())] if valid else 0)
    idx = torch.tensor(r0)
    eyes = eye_patches(refs[torch.arange(b), idx], ref_lm[torch.arange(b), idx])
    return eyes, batch["ref_emb"], mask


# ---------------------------------------------------------------------------------------------------- losses


class LatentDiscriminator(nn.Module):
    """D(F(z, t)): a small conv net on forward-diffused latents with the timestep as an extra channel (eq. 5)."""

    def __init__(self, channels: int = 4, width: int = 64) -> None:
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        self.net = nn.Sequential(
            sn(nn.Conv2d(channels + 1, width, 3, 1, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(width, width * 2, 4, 2, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(width * 2, width * 2, 4, 2, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(width * 2, 1, 3, 1, 1)),
        )

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = (t.float() / 1000.0).view(-1, 1, 1, 1).expand(-1, 1, *z.shape[-2:]).to(z.dtype)
        return self.net(torch.cat([z, tt], 1))


def noise_seed(seed: int, step: int) -> int:
    """The seed of step ``step``'s timesteps and diffusion noise (phase B), a function of (seed, step) alone, apart
    from the data draws of :func:`make_batch` (``seed * 1_000_003 + step``)."""
    return (int(seed) * 1_000_003 + int(step)) * 2 + 1


def forward_diffuse(z: torch.Tensor, t: torch.Tensor, abar: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """F(z, t) = sqrt(abar_t) z + sqrt(1 - abar_t) eps (eq. 1)."""
    a = abar[t].view(-1, 1, 1, 1).to(z.dtype)
    eps = torch.randn(z.shape, generator=g).to(z)
    return a.sqrt() * z + (1 - a).sqrt() * eps


class DlibPerceptual(nn.Module):
    """LPIPS-like distance over dlib's frozen ResNet (first conv, then after blocks 1 and 2): unit-normalised
    channels, squared difference averaged (the offline stand-in for LPIPS / DISTS, see the module docstring)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def feats(self, x: torch.Tensor) -> list[torch.Tensor]:
        n = self.net
        h = (x * 255.0 - n.pixel_mean.to(x.dtype)) / 256.0
        f0 = F.relu(n.bn(n.conv(h)))
        out, h = [f0], F.max_pool2d(f0, 3, 2)
        for blk in list(n.blocks)[:2]:
            h = blk(h)
            out.append(h)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = x.new_zeros(())
        for a, b in zip(self.feats(x), self.feats(y)):
            a = a / (a.norm(dim=1, keepdim=True) + 1e-8)
            b = b / (b.norm(dim=1, keepdim=True) + 1e-8)
            loss = loss + ((a - b) ** 2).sum(1).mean()
        return loss


def sobel(x: torch.Tensor) -> torch.Tensor:
    """EA-DISTS's edge map (:func:`facerestore.metrics.dists.sobel_magnitude`, kornia's normalised Sobel: a unit
    step gives 0.5, so the map stays in the [0, 1] range the dlib features expect), (B, 3, H, W) -> (B, 3, H, W)."""
    from facerestore.metrics.dists import sobel_magnitude

    return sobel_magnitude(x)


def identity_cosine(idl: Any, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 8 with M = 1 (dlib): 1 - cos(f(x_H), f(x_hat_H)), chips cut where dlib's route cuts the target's."""
    a = idl.chip_affines(target)
    with torch.no_grad():
        et = idl.embed(target, a)
    ep = idl.embed(pred, a)
    return (1 - F.cosine_similarity(ep, et, dim=1)).mean()


def mfa_masks(lq_lm: np.ndarray, size: int) -> torch.Tensor:
    """Eq. 10-11 on landmark heatmaps of the LQ face (k = 10): (B, 1, S, S)."""
    from facerestore.faces.priors import landmark_heatmaps, mfa_mask

    return torch.from_numpy(mfa_mask(landmark_heatmaps(lq_lm, size), k=10.0)).float()


# ------------------------------------------------------------------------------------------------------ loop


def phase_at(step: int, phase_v: int, phase_a: int) -> str:
    """The phase of a step: "V" for the first ``phase_v`` steps, then "A" for ``phase_a`` steps, then "B"."""
    return "V" if step < phase_v else "A" if step < phase_v + phase_a else "B"


def set_phase(net: HonestFaceNet, phase: str, frozen_vae: bool = False) -> list[nn.Parameter]:
    """Trainable parameters of phase "V" (the VAE alone), "A" (everything but LoRA, adapters off; not the VAE when
    ``frozen_vae``) or "B" (LoRA + prompt embedder)."""
    unet = net.backbone.unet
    for p in net.parameters():
        p.requires_grad_(False)
    if phase == "V":
        unet.disable_adapters()
        params = list(net.backbone.vae.parameters())
    elif phase == "A":
        unet.disable_adapters()
        params = [p for n, p in net.named_parameters() if "lora_" not in n and not n.startswith("prompt.ffe.net.")
                  and not (frozen_vae and n.startswith("backbone.vae."))]
    else:
        unet.enable_adapters()
        params = [p for n, p in net.named_parameters()
                  if ("lora_" in n or n.startswith("prompt.")) and not n.startswith("prompt.ffe.net.")]
    for p in params:
        p.requires_grad_(True)
    return params


RUN_DEFAULTS: dict[str, Any] = {"phase_v": 700, "phase_a": 1300, "batch": 4, "seed": 0, "lr": 6e-4, "lr_b": 1e-4}
FIXED_FOR_A_RUN = ("phase_v", "phase_a", "batch", "seed")  # the schedule and the data order of a run


def resolve_run_settings(given: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
    """The settings of this chunk: a new run takes the command line's values (defaults ``RUN_DEFAULTS``); a
    resumed run (``saved``: what its first chunk recorded) keeps its own schedule, batch and seed (SystemExit when
    the command line names other ones: that is a new run, in a new --out folder) and its learning rates unless
    the command line gives new ones."""
    run = {k: given.get(k) if given.get(k) is not None else saved.get(k, v) for k, v in RUN_DEFAULTS.items()}
    clash = [f"--{k.replace('_', '-')} {given[k]} (the run's: {saved[k]})" for k in FIXED_FOR_A_RUN
             if saved and given.get(k) is not None and k in saved and given[k] != saved[k]]
    if clash:
        raise SystemExit(f"this run was started with other settings: {', '.join(clash)}; continue without them, or "
                         "train in a new --out folder")
    return run


def _check_args(args: argparse.Namespace) -> None:
    """Every option in range before anything loads (one-line InputError; a bad batch or rate was a traceback)."""
    import math

    from facerestore.errors import InputError

    if not (math.isfinite(args.minutes) and args.minutes > 0):
        raise InputError(f"--minutes must be a positive number, got {args.minutes}")
    for flag, v in (("--batch", args.batch), ("--phase-v", args.phase_v), ("--phase-a", args.phase_a)):
        low = 1 if flag == "--batch" else 0
        if v is not None and v < low:
            raise InputError(f"{flag} must be at least {low}, got {v}")
    for flag, v in (("--lr", args.lr), ("--lr-b", args.lr_b)):
        if v is not None and not (math.isfinite(v) and 0 < v <= 1):
            raise InputError(f"{flag} must be in (0, 1], got {v}")
    if args.export is not None and Path(args.export).suffix != ".safetensors":
        raise InputError(f"--export writes .safetensors weights (with a .json beside them), got {args.export}")


def reset_lora(net: HonestFaceNet) -> None:
    """Zero every LoRA ``B`` matrix: the adapters become the identity again (their ``A`` keeps its init)."""
    with torch.no_grad():
        for n, p in net.named_parameters():
            if "lora_B" in n:
                p.zero_()


def load_trainable_state(net: HonestFaceNet, tensors: dict[str, torch.Tensor], where: str) -> None:
    """A checkpoint's trainable state into ``net``: strict except for the frozen dlib ResNet, which is never saved."""
    missing, unexpected = net.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not k.startswith("prompt.ffe.net.")]
    if missing or unexpected:
        raise SystemExit(f"{where} does not match this network (missing {missing[:3]}, unexpected {unexpected[:3]}): "
                         "it was made with another configuration")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/honestface")
    ap.add_argument("--minutes", type=float, default=15.0, help="wall time of this chunk")
    ap.add_argument("--data", type=Path, default=DATA, help="the folder holding photos/ and ffhq256/ (default: "
                    "../shared/data beside the repository)")
    ap.add_argument("--phase-v", type=int, default=None, help="steps of phase V (the VAE as an autoencoder of clean "
                    "faces; then phase A keeps it frozen; 0: the first weights' end-to-end phase A); default 700. "
                    "A resumed run keeps its own --phase-v, --phase-a, --batch and --seed (saved with it)")
    ap.add_argument("--phase-a", type=int, default=None, help="steps of phase A (after phase V); default 1300")
    ap.add_argument("--init", default=None, help="start a new run from these exported weights (.safetensors with its "
                    ".json), e.g. builtin weights to retrain with another recipe")
    ap.add_argument("--batch", type=int, default=None, help="default 4")
    ap.add_argument("--lr", type=float, default=None, help="phases V and A (default 6e-4; a resumed run keeps its "
                    "own unless given)")
    ap.add_argument("--lr-b", type=float, default=None, help="phase B learning rate (default the paper's 1e-4, "
                    "AdamW; a resumed run keeps its own unless given)")
    ap.add_argument("--seed", type=int, default=None, help="default 0")
    ap.add_argument("--synth", default=None, help="a `facerestore synth --views V` folder: synthetic persons with "
                    "reference views, added to the data when OUT/data.pt is first prepared")
    ap.add_argument("--export", default=None, help="also write the fp16 weights here after the chunk")
    args = ap.parse_args(argv)
    _check_args(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from facerestore.train.checkpoint import load_checkpoint, save_checkpoint

    state_path = out / "state.pt"
    # weights_only: no code from the file runs
    saved: dict[str, Any] | None = (load_checkpoint(state_path, remedy="delete it or train in a new --out folder")
                                    if state_path.is_file() else None)
    run = resolve_run_settings(vars(args), dict(saved.get("run", {})) if saved else {})
    args.phase_v, args.phase_a, args.batch, args.seed, args.lr, args.lr_b = (
        run[k] for k in ("phase_v", "phase_a", "batch", "seed", "lr", "lr_b"))
    torch.manual_seed(args.seed)
    from facerestore.nn.backbones.dlib_resnet import load_dlib_face_resnet
    from facerestore.train.losses import IdentityLoss

    dlib_net = load_dlib_face_resnet()
    idl = IdentityLoss(net=dlib_net)
    synth = Path(args.synth) if args.synth else None
    if (out / "data.pt").is_file():
        data = load_checkpoint(out / "data.pt", remedy="delete it to prepare the data again")
        if synth is not None and data.get("synth", "") != str(synth.resolve()):
            raise SystemExit(f"{out / 'data.pt'} was prepared without the synthetic persons of {synth}: "
                             "train them in a new --out folder")
    else:
        data = _prepare(out, 600, idl, synth, Path(args.data))
    if args.init and saved is None:
        from facerestore.methods.honestface.model import load_honestface

        net = load_honestface(args.init, features=dlib_net)
        if args.phase_v + args.phase_a > 0:
            # phases V and A train the base with the adapters off: the init's LoRA would come back on, stale, in
            # every export of those phases and at the start of phase B; B starts from zero LoRA as in the paper
            reset_lora(net)
    else:
        net = HonestFaceNet(features=dlib_net)
    disc = LatentDiscriminator(int(net.config.vae["latent_channels"]))
    perc = DlibPerceptual(dlib_net)
    # "init": what the run started from, kept from its first command (a later chunk's --init is ignored: it resumes)
    state: dict[str, Any] = {"step": 0, "seconds": 0.0, "log": [], "init": args.init or None}
    if saved is not None:
        state = saved
        load_trainable_state(net, state["net"], str(state_path))
        disc.load_state_dict(state["disc"])
    step = int(state["step"])
    phase = phase_at(step, args.phase_v, args.phase_a)
    frozen_vae = args.phase_v > 0
    params = set_phase(net, phase, frozen_vae)
    opt = torch.optim.AdamW(params, lr=args.lr if phase in ("V", "A") else args.lr_b, weight_decay=0.0)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=args.lr_b, betas=(0.5, 0.999))
    if state.get("phase") == phase and "opt" in state:
        opt.load_state_dict(state["opt"])
        for group in opt.param_groups:  # the run's (or this command's) learning rate, not the one saved with Adam
            group["lr"] = args.lr if phase in ("V", "A") else args.lr_b
    if "opt_d" in state:
        opt_d.load_state_dict(state["opt_d"])
        for group in opt_d.param_groups:
            group["lr"] = args.lr_b
    abar = torch.from_numpy(alphas_cumprod())
    net.train()
    t_end = time.time() + args.minutes * 60
    t0 = time.time()
    g = torch.Generator()  # reseeded every step (noise_seed): a run in chunks draws what one run would
    from facerestore.errors import Interrupted, deferred_interrupts

    with deferred_interrupts() as signalled:  # Ctrl-C / SIGTERM: the step ends, the chunk is saved, then it stops
        step = _train_chunk(args=args, data=data, net=net, disc=disc, opt=opt, opt_d=opt_d, idl=idl, perc=perc,
                            params=params, abar=abar, g=g, frozen_vae=frozen_vae, state=state, step=step, phase=phase,
                            t_end=t_end, signalled=signalled)
    state.update(step=step, seconds=float(state["seconds"]) + time.time() - t0, phase=phase, run=run,
                 net=net.trainable_state(), disc=disc.state_dict(), opt=opt.state_dict(), opt_d=opt_d.state_dict())
    save_checkpoint(state_path, state)  # atomic
    meta = {"steps": step, "phase_v_steps": args.phase_v, "phase_a_steps": args.phase_a, "batch": args.batch,
            "train_hours": state["seconds"] / 3600, "seed": args.seed, "init": state.get("init")}
    net.eval()
    save_honestface(net, out / "final.safetensors", meta)
    if args.export:
        save_honestface(net, args.export, meta)
    print(f"chunk done: step {step}, {state['seconds'] / 3600:.3f} h in all", flush=True)
    if "signum" in signalled:
        raise Interrupted(signalled["signum"])
    return 0


def _train_chunk(*, args: argparse.Namespace, data: dict[str, Any], net: HonestFaceNet, disc: nn.Module,
                 opt: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, idl: Any, perc: Any, params: Any,
                 abar: torch.Tensor, g: torch.Generator, frozen_vae: bool, state: dict[str, Any], step: int,
                 phase: str, t_end: float, signalled: dict[str, int]) -> int:
    """The training steps of one chunk, until ``t_end``, the end of ``phase`` or a signal; returns the step reached.
    A non-finite loss stops it before anything is saved (:class:`TrainingError`): a diverged chunk must not replace
    the checkpoint."""
    from facerestore.errors import TrainingError

    while time.time() < t_end and "signum" not in signalled:
        if phase_at(step, args.phase_v, args.phase_a) != phase:
            break  # the next chunk starts the next phase with fresh optimisers
        ts = time.time()
        g.manual_seed(noise_seed(args.seed, step))
        batch = make_batch(data, step, args.batch, args.seed)
        lq, hq = batch["lq"], batch["hq"]
        if phase == "V":  # the autoencoder of clean faces (the references are clean faces too)
            clean = torch.cat([hq, batch["refs"][batch["mask"]]])[: 2 * args.batch]
            rec = net.backbone.decode(net.backbone.encode(clean))
            terms = {"ae": (rec - clean).abs().mean()}  # L1 alone: with the dlib feature term it stalled at 0.10
        else:
            lq_lm = face_landmarks68(lq)
            eyes, emb, mask = reference_inputs(batch, lq_lm)
            fake, z0 = net(lq, eyes, emb, mask, return_latent=True)
            terms = {"l1": 1.0 * (fake - hq).abs().mean(), "id": 2.0 * identity_cosine(idl, fake.clamp(0, 1), hq),
                     "vq": 0.25 * net.prompt.vre.last_vq_loss}
            if phase == "A" and frozen_vae:  # the UNet restores: its x0 regressed on the clean face's latent
                with torch.no_grad():
                    z_hq = net.backbone.encode(hq)
                terms["lat"] = 1.0 * F.mse_loss(z0, z_hq)
            elif phase == "A":  # VAE reconstruction of the clean face: stands in for the autoencoder SD was trained as
                terms["ae"] = 1.0 * (net.backbone.decode(net.backbone.encode(hq)) - hq).abs().mean()
            if phase == "B":
                m = mfa_masks(lq_lm, SIZE)
                terms["per"] = 0.5 * (perc(fake, hq) + perc(sobel(fake), sobel(hq)))  # eq. 9 (dlib features)
                terms["mfa"] = 1.0 * perc(m * fake + (1 - m) * 0.5, m * hq + (1 - m) * 0.5)  # eq. 12-13
                t = torch.randint(0, 1000, (lq.shape[0],), generator=g)
                disc.requires_grad_(False)
                terms["gan"] = 0.05 * F.softplus(-disc(forward_diffuse(z0, t, abar, g), t)).mean()  # eq. 5, G
                disc.requires_grad_(True)
        loss = sum(terms.values())
        if not torch.isfinite(loss):
            raise TrainingError(f"non-finite loss at step {step} (phase {phase}); lower --lr / --lr-b and run the "
                                "chunk again (the checkpoint is the last good one)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        if phase == "B":  # eq. 5, D (alternating)
            with torch.no_grad():
                z_real = net.backbone.encode(hq)
            t = torch.randint(0, 1000, (lq.shape[0],), generator=g)
            d_loss = (F.softplus(disc(forward_diffuse(z0.detach(), t, abar, g), t)).mean()
                      + F.softplus(-disc(forward_diffuse(z_real, t, abar, g), t)).mean())
            if not torch.isfinite(d_loss):
                raise TrainingError(f"non-finite discriminator loss at step {step}; lower --lr-b and run the chunk "
                                    "again (the checkpoint is the last good one)")
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            terms["d"] = d_loss
        step += 1
        if step % 10 == 0:
            rec = {"step": step, "phase": phase, "s": round(time.time() - ts, 2),
                   **{k: round(float(v.detach()), 4) for k, v in terms.items()}}
            state["log"].append(rec)
            print(json.dumps(rec), flush=True)
    return step


def _cli(argv: list[str] | None = None) -> int:
    """``python -m facerestore.methods.honestface.train``: one line and exit 2 for our errors, 130 / 143 for a
    signal (the chunk is saved first), as the ``facerestore`` commands do."""
    import sys

    from facerestore.errors import FaceRestoreError

    try:
        return main(argv)
    except FaceRestoreError as exc:
        print(f"honestface train: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("honestface train: interrupted", file=sys.stderr)
        return getattr(exc, "exit_code", 130)


if __name__ == "__main__":
    raise SystemExit(_cli())
