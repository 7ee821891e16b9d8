"""The generative-prior restorer: an encoder that steers a frozen MobileStyleGAN (``prior-sft``).

The idea is GFPGAN's (Wang et al. 2021) and GPEN's (Yang et al. 2021): a degraded face is encoded into
(a) latents of a pretrained face GAN, which give the prior's face, and (b) spatial features that modulate the
GAN's intermediate features with a spatial feature transform (SFT: ``x * (1 + scale) + shift``, per pixel), so
that the output follows the input's layout and identity while the prior supplies photographic texture. The
code is ours; the decoder is the MobileStyleGAN port of :mod:`facerestore.nn.mobilestylegan` (FFHQ, 1024 px,
non-commercial weights), kept frozen: only the encoder is trained and stored.

Shapes (defaults): input (B, 3, S, S) in [0, 1], any S, resized to ``in_size`` = 256 ->

* a U-Net at half the input size: ``stem`` on the 2x2 space-to-depth of the input (12 channels at 128 px),
  ``down`` stages to 4 px (channels ``width * 256 / R``, capped at ``max_channels``), ``up`` stages back to 128 px
  with skips;
* ``latent``: the 4 px features -> one 512-d code -> one W+ offset per synthesis block (8 groups: ``b4`` and
  ``b8`` .. ``b512``, the wavelet head joins ``b512``) added to the prior's mean latent ``w_avg`` -> W+
  (B, 23, 512). Zero-initialised: an untrained encoder gives the prior's mean face;
* ``sft`` heads at ``sft_resolutions`` (16 .. 256 px): per-pixel (scale, shift) for the first half of the
  channels that leave the decoder block of that resolution (GFPGAN's "channel-split" SFT: the other half stays
  the prior's own). Zero-initialised too. The 256 px head reads the 128 px features and ends in a depth-to-space;
* ``colour``: per-pixel (scale, shift) at ``colour_resolution`` (32 px), upsampled and applied to the low band of
  the decoder's wavelet output (the image at 512 px): the input's colours and tones at a coarse scale, where the
  prior alone gives its own (after 200 steps without this head every face came out in the prior's sepia
  average). Coarse on purpose: it cannot paste the input's blur; detail stays in the prior's high bands.
* ``low_transfer`` (no parameters, 32 px): the output's content at that scale is replaced by the input's (area
  averages to 32 x 32 px, bilinear back): colours, tones and the coarse layout of hair and background come from
  the photo, as a colour transfer would; this path is exact from the first step, where the learnt colour head
  alone had not moved the prior's sepia average after 200 steps.

``alpha`` in [0, 1] scales every SFT, colour and low-transfer term: 0 = the prior's face from the latents alone
(most generic), 1 = fully steered by the input (most faithful). Training draws it per sample (``alpha_random``
of :mod:`.train`) so that the restorer's ``--fidelity`` knob is a trained quantity, not an extrapolation.

Output: (B, 3, out_size, out_size) in [0, 1] (clamped by the caller); out_size 512 is the LL band of the
prior's 1024 px wavelet output (its exact 2x2 box average, :mod:`facerestore.nn.mobilestylegan`), 1024 the full
image. The decoder runs in ``decoder_dtype`` (bfloat16 on a CPU is about 2x faster than float32).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from facerestore.nn.blocks import ResidualDown
from facerestore.nn.mobilestylegan import SynthesisNetwork, haar_idwt

__all__ = ["ENCODER_KEYS", "PriorEncoder", "PriorSFTNet", "block_groups"]

ENCODER_KEYS = frozenset({"in_size", "width", "max_channels", "sft_resolutions", "latent_gain", "colour_resolution"})
LRELU = 0.2


def block_groups(synthesis: SynthesisNetwork) -> list[int]:
    """For each of the synthesis network's W+ rows, the index of its block (0 = ``b4``, 1 = ``b8`` ...)."""
    names = [s.name.split(".")[0] for s in synthesis.layer_specs]
    order = list(dict.fromkeys(names))
    return [order.index(n) for n in names]


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1)


class _Up(nn.Module):
    """Bilinear 2x upsampling, concatenation with the encoder's skip features, two 3x3 convolutions."""

    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.conv0, self.conv1 = _conv(cin + cskip, cout), _conv(cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = F.leaky_relu(self.conv0(torch.cat([x, skip], 1)), LRELU)
        return F.leaky_relu(self.conv1(x), LRELU)


class PriorEncoder(nn.Module):
    """Degraded face -> (W+ latents, SFT maps); see the module docstring.

    Args:
        w_avg: (w_dim,) the prior's mean latent (the offsets are added to it).
        groups: block index of each W+ row (:func:`block_groups`); its length is the number of rows.
        decoder_channels: channels leaving the decoder block at each resolution {R: C}.
        in_size: encoder resolution (power of two, 32..1024). width / max_channels: U-Net channels.
        sft_resolutions: decoder resolutions steered by SFT (each <= in_size).
        latent_gain: multiplier of the latent heads' output (a learning-rate multiplier for them, see the code).
        colour_resolution: resolution of the colour maps applied to the output's low band (0: none).
    """

    def __init__(self, w_avg: torch.Tensor, groups: Sequence[int], decoder_channels: dict[int, int], *,
                 in_size: int = 256, width: int = 16, max_channels: int = 128,
                 sft_resolutions: Sequence[int] = (16, 32, 64, 128, 256), latent_gain: float = 10.0,
                 colour_resolution: int = 32) -> None:
        super().__init__()
        if in_size < 32 or in_size & (in_size - 1) or in_size > 1024:
            raise ValueError(f"in_size must be a power of two in [32, 1024], got {in_size}")
        bad = [r for r in sft_resolutions if r not in decoder_channels or r > in_size]
        if bad:
            raise ValueError(f"sft_resolutions {bad} are not decoder resolutions <= in_size {in_size}")
        self.in_size, self.width, self.max_channels = int(in_size), int(width), int(max_channels)
        # the heads' output is multiplied by this: Adam moves a weight by about lr per step whatever its gradient,
        # and at gain 1 the offsets stayed under a tenth of W's spread (std ~0.4 per dimension) after 200 steps,
        # i.e. the prior's mean face; a gain is StyleGAN's learning-rate multiplier for these layers
        self.latent_gain = float(latent_gain)
        self.sft_resolutions = tuple(sorted(int(r) for r in sft_resolutions))
        self.register_buffer("w_avg", w_avg.detach().float().clone())
        self.register_buffer("groups", torch.as_tensor(list(groups), dtype=torch.long))
        self.num_ws, w_dim = len(groups), int(w_avg.shape[-1])

        def ch(r: int) -> int:
            return min(self.width * self.in_size // r, self.max_channels)

        # the U-Net runs from in_size / 2 down (the input enters as a 2x2 space-to-depth, lossless and 4x cheaper
        # than convolutions at full size); an SFT head at in_size itself ends in a depth-to-space
        self.res = [self.in_size // 2**i for i in range(1, int(math.log2(self.in_size // 4)) + 1)]
        # the colour head runs on the up path's features, which start above the bottleneck: not at res[-1]
        if colour_resolution and colour_resolution not in self.res[1:-1]:
            raise ValueError(f"colour_resolution must be 0 or one of {self.res[1:-1]}, got {colour_resolution}")
        self.colour_resolution = int(colour_resolution)
        self.stem = _conv(12, ch(self.res[0]))
        self.down = nn.ModuleList(ResidualDown(ch(r), ch(r // 2)) for r in self.res[:-1])
        c4 = ch(4)
        self.latent_conv = _conv(c4, c4)
        self.latent_fc = nn.Linear(c4 * 16, w_dim)
        self.latent_heads = nn.ModuleList(nn.Linear(w_dim, w_dim) for _ in range(int(max(groups)) + 1))
        for head in self.latent_heads:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        self.up = nn.ModuleList(_Up(ch(r), ch(2 * r), ch(2 * r)) for r in reversed(self.res[1:]))
        self.sft = nn.ModuleDict()
        for r in self.sft_resolutions:
            half = decoder_channels[r] // 2
            c = ch(min(r, self.res[0]))
            if r == self.in_size:  # from the in_size / 2 features, 1x1 to 4x the maps, then depth-to-space
                head = nn.Sequential(_conv(c, c), nn.LeakyReLU(LRELU), nn.Conv2d(c, 8 * half, 1), nn.PixelShuffle(2))
            else:
                head = nn.Sequential(_conv(c, c), nn.LeakyReLU(LRELU), _conv(c, 2 * half))
            nn.init.zeros_(head[2].weight)
            nn.init.zeros_(head[2].bias)
            self.sft[str(r)] = head
        if self.colour_resolution:
            c = ch(self.colour_resolution)
            self.colour = nn.Sequential(_conv(c, c), nn.LeakyReLU(LRELU), _conv(c, 6))
            nn.init.zeros_(self.colour[2].weight)
            nn.init.zeros_(self.colour[2].bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[int, tuple[torch.Tensor, torch.Tensor]]]:
        """(B, 3, S, S) in [0, 1] -> W+ (B, num_ws, w_dim) and {R: (scale, shift)}, each (B, C_R / 2, R, R); with
        a colour head, key 0 holds the colour maps (scale, shift), each (B, 3, r, r) at ``colour_resolution``."""
        if x.shape[-1] != self.in_size or x.shape[-2] != self.in_size:
            x = F.interpolate(x.float(), size=(self.in_size, self.in_size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.in_size).to(x.dtype)  # antialias: no bf16 kernel
        h = F.leaky_relu(self.stem(F.pixel_unshuffle(x * 2 - 1, 2)), LRELU)
        skips = [h]
        for block in self.down:
            h = block(h)
            skips.append(h)
        code = F.leaky_relu(self.latent_fc(F.leaky_relu(self.latent_conv(h), LRELU).flatten(1)), LRELU)
        offsets = self.latent_gain * torch.stack([head(code) for head in self.latent_heads], 1)  # (B, groups, w_dim)
        ws = self.w_avg.to(offsets.dtype) + offsets[:, self.groups]
        maps: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        r = 4
        for block, skip in zip(self.up, reversed(skips[:-1])):
            h, r = block(h, skip), 2 * r
            for target in (r, 2 * r) if r == self.res[0] else (r,):
                if str(target) in self.sft:
                    scale, shift = self.sft[str(target)](h).chunk(2, dim=1)
                    maps[target] = (scale, shift)
            if r == self.colour_resolution:
                scale, shift = self.colour(h).chunk(2, dim=1)
                maps[0] = (scale, shift)
        return ws, maps


class PriorSFTNet(nn.Module):
    """Encoder (trained, the only registered submodule: ``state_dict`` is the encoder's) + frozen decoder.

    The decoder (a MobileStyleGAN ``SynthesisNetwork``) is held outside the module tree so that exports,
    checkpoints, EMA averages and DDP see the encoder only; ``.to()`` moves it along (float32 kept: its
    precision is ``decoder_dtype``, applied by autocast).
    """

    def __init__(self, synthesis: SynthesisNetwork, w_avg: torch.Tensor, *, out_size: int = 512,
                 decoder_dtype: torch.dtype = torch.float32, low_transfer: int = 32, **encoder_options) -> None:
        super().__init__()
        if low_transfer and (low_transfer & (low_transfer - 1) or not 4 <= low_transfer <= 128):
            raise ValueError(f"low_transfer must be 0 or a power of two in [4, 128], got {low_transfer}")
        self.low_transfer = int(low_transfer)
        synthesis.eval().requires_grad_(False)
        object.__setattr__(self, "decoder", synthesis)
        self.out_size = synthesis.check_resolution(out_size)
        self.decoder_dtype = decoder_dtype
        channels = {r: c for r, c in zip(synthesis.block_resolutions, synthesis.channels[1:])}
        self.encoder = PriorEncoder(w_avg, block_groups(synthesis), channels, **encoder_options)

    def _apply(self, fn, recurse: bool = True):  # .to() / .cuda() / .float() move the held decoder too
        super()._apply(fn, recurse)
        object.__setattr__(self, "decoder", self.decoder._apply(fn, recurse))
        return self

    def forward(self, x: torch.Tensor, alpha: float | torch.Tensor = 1.0, return_latents: bool = False):
        """(B, 3, S, S) degraded faces in [0, 1] -> (B, 3, out_size, out_size), about [0, 1] (not clamped).

        alpha: SFT strength, a number or (B,) per sample, in [0, 1] (module docstring). ``return_latents``: also
        return the W+ latents (B, num_ws, w_dim)."""
        ws, maps = self.encoder(x)
        out = self.render(x, ws, maps, alpha)
        return (out, ws) if return_latents else out

    def render(self, x: torch.Tensor, ws: torch.Tensor, maps: dict[int, tuple[torch.Tensor, torch.Tensor]],
               alpha: float | torch.Tensor = 1.0) -> torch.Tensor:
        """The decoder steered by the encoder's outputs: ``x`` (B, 3, S, S) the degraded faces (their coarse
        content for ``low_transfer``), ``ws`` (B, num_ws, w_dim) and ``maps`` as :meth:`PriorEncoder.forward` gives
        them (``ws`` may have been refined since: :mod:`.refine`) -> (B, 3, out_size, out_size), about [0, 1].
        Differentiable in ``ws`` and ``maps``."""
        a = torch.as_tensor(alpha, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)

        def modulate(r: int, feats: torch.Tensor) -> torch.Tensor:
            if r not in maps:
                return feats
            scale, shift = maps[r]
            half = scale.shape[1]
            steered = feats[:, :half] * (1 + a * scale.to(feats.dtype)) + a * shift.to(feats.dtype)
            return torch.cat([steered, feats[:, half:]], 1)

        reduced = self.decoder_dtype != torch.float32 and x.device.type in ("cpu", "cuda")
        ctx = torch.autocast(x.device.type, dtype=self.decoder_dtype) if reduced else nullcontext()
        with ctx:
            bands = self.decoder.wavelets(ws, modulate=modulate)
        bands = bands.float()
        a32 = a.float()
        low = bands[:, :3]  # the low band = 2 x the image at half the full size, in [-1, 1] units
        size = low.shape[-2:]
        if self.low_transfer:  # the output's coarsest content replaced by the input's (module docstring)
            r = self.low_transfer

            def coarse(img: torch.Tensor) -> torch.Tensor:
                small = F.interpolate(img, size=(r, r), mode="area")
                return F.interpolate(small, size=size, mode="bilinear", align_corners=False)

            low = low + 2 * a32 * (coarse(x.float() * 2 - 1) - coarse(low * 0.5))
        if 0 in maps:  # learnt colour maps at the encoder's colour resolution, upsampled
            scale, shift = (F.interpolate(m.float(), size=size, mode="bilinear", align_corners=False) for m in maps[0])
            low = low * (1 + a32 * scale) + 2 * a32 * shift  # shift in image units
        bands = torch.cat([low, bands[:, 3:]], 1)
        if self.out_size == self.decoder.full_resolution:
            img = haar_idwt(bands)
        else:
            img = bands[:, :3] * 0.5
            if self.out_size < self.decoder.wavelet_resolution:
                img = F.avg_pool2d(img, self.decoder.wavelet_resolution // self.out_size)
        return (img + 1) * 0.5
