"""Training the W encoder of :mod:`.encoder` on the generator's own samples (their W is known).

    pairs = render_pairs(G, 4096, seed=1, folder="pairs/")     # uint8 faces (N, 3, 128, 128) and W (N, 512)
    enc = new_encoder(G)                                         # w_avg from G, w_std from 100k W samples
    train_encoder(enc, pairs, steps=6000, checkpoint="enc.ckpt")

Pairs are rendered once (the generator's full network runs for every face: about 0.5 s a face in bf16 on 2 CPU
cores) and stored in chunks of ``CHUNK`` faces, so a stopped run keeps what it rendered; training reads them
all into memory (N x 49 KB at 128 px). Each step degrades a batch at random (:func:`degrade_views`): what the
inversion's blind targets look like (faces enlarged from a smaller size, sensor noise) and clean faces.
Training saves a checkpoint (encoder, optimiser, step, loss history) every ``save_every`` steps and resumes from
it: every chunk of steps leaves a usable encoder.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from facerestore.methods.inversion.encoder import LatentEncoder
from facerestore.nn.stylegan2 import Generator, render_unit

__all__ = ["CHUNK", "EncoderPairs", "degrade_views", "new_encoder", "render_pairs", "train_encoder",
           "whitened_error"]

CHUNK = 256


class EncoderPairs:
    """Faces (N, 3, S, S) uint8 and their W (N, w_dim) float32; ``split(k)`` holds the last k out."""

    def __init__(self, images: torch.Tensor, ws: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or ws.ndim != 2 or images.shape[0] != ws.shape[0]:
            raise ValueError(f"pairs need uint8 (N, 3, S, S) images and (N, w_dim) latents, got "
                             f"{tuple(images.shape)} {images.dtype} and {tuple(ws.shape)}")
        self.images, self.ws = images, ws.float()

    def __len__(self) -> int:
        return self.images.shape[0]

    def split(self, held_out: int) -> tuple[EncoderPairs, EncoderPairs]:
        n = len(self) - int(held_out)
        return (EncoderPairs(self.images[:n], self.ws[:n]), EncoderPairs(self.images[n:], self.ws[n:]))


@torch.no_grad()
def render_pairs(G: Generator, n: int, *, seed: int, size: int = 128, psi_range: tuple[float, float] = (0.5, 1.0),
                 batch: int = 8, folder: str | os.PathLike | None = None, progress: bool = True) -> EncoderPairs:
    """``n`` faces of ``G`` at ``size`` px (box averages of its images) with their W.

    W = ``w_avg + psi * (mapping(z) - w_avg)``, z ~ N(0, I) and psi ~ U(psi_range) per face, all drawn from
    ``seed`` chunk by chunk (chunk i uses seed ``seed * 100003 + i``), so a resumed run renders the same faces.
    folder: chunks ``pairs-<seed>-<i>.safetensors`` are read from it when present and holding the same latents
    (the mapping network recomputes them: cheap), else rendered and written (atomically) to it.
    """
    from facerestore.io import atomic_write_safetensors
    from facerestore.nn.safe_weights import load_safetensors

    boxed = hasattr(G.synthesis, "check_resolution")  # MobileStyleGAN renders box averages itself
    if size > G.img_resolution:
        raise ValueError(f"pairs of {size} px from a {G.img_resolution} px generator")
    images, ws = [], []
    chunks = math.ceil(int(n) / CHUNK)
    dev = G.mapping.w_avg.device
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=int(n), desc="rendering W encoder pairs", unit="face")
    for i in range(chunks):
        m = min(CHUNK, int(n) - i * CHUNK)
        path = Path(folder) / f"pairs-{int(seed)}-{i:05d}.safetensors" if folder is not None else None
        gen = torch.Generator().manual_seed(int(seed) * 100003 + i)
        w = G.sample_w(CHUNK, gen).float()
        psi = torch.empty(CHUNK, 1).uniform_(*psi_range, generator=gen).to(dev)
        w = G.mapping.w_avg.float().lerp(w, psi)
        w = w[:m]  # a short last chunk keeps the draws of a full one
        if path is not None and path.is_file():
            state = load_safetensors(path, "W encoder pairs")
            # a stored chunk is used only if it holds these very latents (same generator, seed and psi range)
            if state["images"].shape[0] >= m and state["images"].shape[-1] == size and \
                    torch.allclose(state["ws"][:m], w.cpu(), rtol=0, atol=1e-5):
                images.append(state["images"][:m])
                ws.append(state["ws"][:m])
                if bar is not None:
                    bar.update(m)
                continue
        faces = []
        for j in range(0, m, batch):
            if boxed:
                img = render_unit(G, w[j:j + batch], resolution=size).float().clamp(0, 1)
            else:  # a generator that renders only its own size: its image reduced by area (the same box average)
                img = F.interpolate(render_unit(G, w[j:j + batch]).float(), size=(size, size), mode="area")
                img = img.clamp(0, 1)
            faces.append((img * 255).round().to(torch.uint8).cpu())
            if bar is not None:
                bar.update(img.shape[0])
        chunk_images, chunk_ws = torch.cat(faces), w.cpu()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_safetensors(path, {"images": chunk_images.contiguous(), "ws": chunk_ws.contiguous()},
                                     {"format": "facerestore-w-encoder-pairs"})
        images.append(chunk_images[:m])
        ws.append(chunk_ws[:m])
    if bar is not None:
        bar.close()
    return EncoderPairs(torch.cat(images), torch.cat(ws))


def degrade_views(images: torch.Tensor, gen: torch.Generator, *, max_factor: float = 8.0,
                  max_noise: float = 0.06, clean: float = 0.25) -> torch.Tensor:
    """Random views of faces (B, 3, S, S) in [0, 1] as the inversion sees them, drawn from ``gen``.

    Per face: with probability ``clean`` unchanged; else reduced by a factor f = 2^U(0, log2 max_factor) (area)
    and enlarged back (bilinear), then, with probability 1/2, Gaussian noise of sigma ~ U(0, max_noise). The
    encoder's W target stays the clean face's.
    """
    b, _, s, _ = images.shape
    out = images.clone()
    u = torch.rand(b, 3, generator=gen)
    factors = torch.exp2(torch.rand(b, generator=gen) * math.log2(max_factor))
    sigmas = torch.rand(b, generator=gen) * max_noise
    noise = torch.randn(images.shape, generator=gen)
    for k in range(b):
        if u[k, 0] < clean:
            continue
        side = max(4, round(s / float(factors[k])))
        x = images[k:k + 1]
        if side < s:
            x = F.interpolate(F.interpolate(x, size=(side, side), mode="area"), size=(s, s), mode="bilinear",
                              align_corners=False)
        if u[k, 1] < 0.5:
            x = x + sigmas[k] * noise[k:k + 1]
        out[k:k + 1] = x.clamp(0, 1)
    return out


def new_encoder(G: Generator, *, n_stats: int = 100_000, seed: int = 0, **config: int) -> LatentEncoder:
    """An untrained encoder for ``G``: ``w_avg`` its mean latent (the inversion's default start), ``w_std`` the
    per-dimension standard deviation of ``n_stats`` W samples (seeded). ``config``: in_size, width, max_channels."""
    gen = torch.Generator().manual_seed(int(seed))
    w = G.sample_w(int(n_stats), gen).float().cpu()
    return LatentEncoder(G.mapping.w_avg.float().cpu(), w.std(0).clamp_min(1e-6), **config)


def whitened_error(enc: LatentEncoder, images: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
    """Per-face mean squared error of the whitened W: ``mean(((enc(x) - w) / w_std)^2)`` (B,). The mean start
    (an untrained encoder) scores the faces' own whitened spread, about 1 for psi = 1 samples."""
    return ((enc.whitened(images) - (ws - enc.w_avg) / enc.w_std) ** 2).mean(1)


def train_encoder(enc: LatentEncoder, pairs: EncoderPairs, *, steps: int, batch: int = 32, lr: float = 1e-3,
                  seed: int = 0, checkpoint: str | os.PathLike | None = None, save_every: int = 500,
                  on_save: Callable[[LatentEncoder, int, list[float], float], None] | None = None,
                  callback: Callable[[int, float], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> list[float]:
    """Adam on :func:`whitened_error` of degraded views (:func:`degrade_views`), cosine-decayed from ``lr``.

    checkpoint: a file written (atomically) every ``save_every`` steps, at the end and when ``should_stop()`` turns
    true after a step (a signal) with the encoder, the optimiser, the step, the losses and the training seconds of
    every chunk so far; when it exists, training resumes from it (the draws of step k depend only on ``seed`` and
    k, so a resumed run equals an uninterrupted one). on_save(enc, step, losses, seconds) runs after each
    checkpoint (export usable weights there; ``seconds``: training time of all chunks together). Returns the
    per-step losses (all steps, resumed ones included).
    """
    import time


    started = time.monotonic()
    seconds_before = 0.0

    opt = torch.optim.Adam(enc.parameters(), lr=lr)
    losses: list[float] = []
    start = 0
    # what the checkpoint's optimiser state and draws depend on: a resumed run with other values would silently
    # continue another run
    import hashlib

    settings = {"lr": float(lr), "seed": int(seed), "batch": int(batch), "pairs": len(pairs),
                "pairs_size": int(pairs.images.shape[-1]),
                # the generator this encoder is for (its mean latent, which new_encoder copied from it)
                "generator": hashlib.sha256(enc.w_avg.detach().double().cpu().numpy().tobytes()).hexdigest()[:16]}
    if checkpoint is not None and Path(checkpoint).is_file():
        from facerestore.errors import InputError
        from facerestore.train.checkpoint import load_checkpoint, setting_changes

        state = load_checkpoint(checkpoint, remedy="delete it to start over")
        saved = state.get("settings", settings)
        # keys an older checkpoint lacks are not compared
        changed = [f"{k}: {saved[k]!r} -> {settings[k]!r}"
                   for k in setting_changes(saved, {k: v for k, v in settings.items() if k in saved})]
        if changed:
            raise InputError(f"{checkpoint}: the encoder's training settings changed since its checkpoint "
                             f"({'; '.join(changed)}); restore them, or delete the checkpoint to start over")
        try:
            enc.load_state_dict(state["encoder"])
        except (RuntimeError, KeyError) as exc:
            raise InputError(f"{checkpoint} holds another encoder ({str(exc).splitlines()[0]}); delete it to start "
                             "over") from None
        opt.load_state_dict(state["optimizer"])
        start, losses = int(state["step"]), [float(v) for v in state["losses"]]
        seconds_before = float(state.get("seconds", 0.0))
        planned = state.get("scheduled_steps")
        if planned is not None and int(planned) != int(steps) and start < int(steps):
            import warnings

            warnings.warn(f"{checkpoint}: resumed at step {start} of a run planned for {int(planned)} steps, now "
                          f"{int(steps)}: the cosine learning rate jumps to that schedule", stacklevel=2)
        if start > int(steps):
            raise InputError(f"{checkpoint} is at step {start}, past the {int(steps)} steps asked; ask for at least "
                             f"{start}")

    def save(step: int) -> None:
        seconds = seconds_before + time.monotonic() - started
        if checkpoint is not None:  # the project's atomic checkpoint writer
            from facerestore.train.checkpoint import save_checkpoint

            save_checkpoint(checkpoint, {"encoder": enc.state_dict(), "optimizer": opt.state_dict(), "step": step,
                                         "losses": losses, "settings": settings, "seconds": seconds,
                                         "scheduled_steps": int(steps)})
        if on_save is not None:
            on_save(enc, step, losses, seconds)

    enc.train()
    step = start
    while step < int(steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / max(int(steps), 1)))
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + step)
        idx = torch.randint(len(pairs), (int(batch),), generator=gen)
        x = degrade_views(pairs.images[idx].float() / 255, gen).to(enc.w_avg.device)
        loss = whitened_error(enc, x, pairs.ws[idx].to(enc.w_avg.device)).mean()
        if not torch.isfinite(loss):  # before the weights or any checkpoint take it in
            from facerestore.errors import TrainingError

            raise TrainingError(f"encoder training: non-finite loss at step {step}; lower --lr (the last checkpoint "
                                "is intact)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        losses.append(value)
        if callback is not None:
            callback(step, value)
        step += 1
        if should_stop is not None and should_stop():
            break
        if save_every and step % int(save_every) == 0 and step < int(steps):
            save(step)
    save(step)
    return losses
