"""FRSNet and MFPSNet (paper 001) built from any genotype.

Searched module (:class:`SearchedModule`, one per genotype module): a 3x3 ConvBR stem (``c_in -> 3 c_in``),
then one decoded cell per layer of the path. Cell ``l`` at level ``p_l`` has ``C = F * 2**p_l`` channels per
block; it resizes ``H_{l-1}`` by one level (bilinear, x2 or x0.5) and ``H_{l-2}`` to the same size, maps both
with a 1x1 ConvBR to C channels, runs its blocks (each the sum of its chosen operations on its chosen inputs)
and outputs the concatenation of the 3 block outputs (multiplier 3, ``3 C`` channels). Layer 0 takes the stem
output as ``H_{l-1}`` and the module input as ``H_{l-2}``; layer 1 takes the stem output as ``H_{l-2}``. The
last cell's output is brought to level 0 by 1x1 ConvBRs that halve the channels, each followed by a x2
bilinear upsampling, and a final 1x1 convolution (no BN, no ReLU): ``3 F`` channels at level 0.

- upsampling module ("sr"): input = the 64-channel backbone features at 16 px (level 3), F = 8: 24 channels
  at 128 px;
- prior modules: input = 8 channels at 128 px (level 0), F = 8: 24 channels, then a shared 3x3 conv to 8;
- fusion module: input = [24 image, 8 parsing, 8 heatmap, 8 dictionary] = 48 channels, F = 48: 144
  channels, then 3x3 convs 144 -> 48 -> 24.

FRSNet: ``pixel_unshuffle(8)`` -> conv 3x3 192 -> 64 -> 3 residual dense blocks (the searched module's input)
-> upsampling module (24 @ 128) -> reconstruction: ``pixel_unshuffle(8)`` (1536 @ 16) -> 1x1 1536 -> 512 ->
LReLU -> 1x1 512 -> 64, + the module input, 3 dense blocks, 3x3 conv, + the first conv's output, 3 x (nearest
x2, 3x3 conv, LReLU), 3x3 conv, LReLU, 3x3 conv 64 -> 3 (no output activation; inputs in [0, 1]).

MFPSNet: two iterations of one set of weights, both supervised. Iteration 1 is FRSNet on the input; iteration
2 runs the backbone and the upsampling module on iteration 1's output, the prior modules on the priors
(parsing map and heatmaps concatenated with the iteration-1 image, 3x3 conv to 8 channels; dictionary
features through 3x3 convs 256 -> 174 -> 90 -> 8), fuses the four feature maps with the fusion module and
reconstructs. The priors are a function of iteration 1's output (``prior_fn``) or given (``priors``).

Parameter counts (:func:`count_parameters`), released genotypes: FRSNet 2,863,299; MFPSNet 17,540,927 (fusion
module 13,552,704). The authors' model object holds 18,356,043 (the paper's 18.4M; fusion module 14,217,696):
their code also builds an output projection for every level a module's path does not end at, a BatchNorm in
the final projection that it never applies, and three convolutions (64 -> 50 -> 38 -> 24, 3x3) of an abandoned
baseline, none of which take part in the forward pass. ``released_extras=True`` adds exactly that many
frozen, unused parameters (:func:`released_dead_parameters`) so that the count equals the released one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from facerestore.methods.mfpsnet.genotype import START_LEVEL, Genotype, ModuleGenotype, edge_range
from facerestore.methods.mfpsnet.ops import PRIMITIVES, ConvBR, ResidualDenseBlock, make_op, resample, scale_side

__all__ = [
    "DICT_CHANNELS",
    "HEAT_CHANNELS",
    "PARSE_CHANNELS",
    "FRSNet",
    "MFPSNet",
    "Priors",
    "Reconstruction",
    "SearchedModule",
    "count_parameters",
    "level_sides",
    "prior_stems",
    "released_dead_parameters",
]

# constructor options of FRSNet / MFPSNet that a weights description (JSON) may set
FRSNET_KEYS = frozenset({"nf", "growth", "blocks", "sr_filters", "input_skip"})
MODEL_KEYS = FRSNET_KEYS | {"prior_filters", "fusion_filters", "dict_stem"}
PARSE_CHANNELS = 19
HEAT_CHANNELS = 71
DICT_CHANNELS = 256
MULTIPLIER = 3
Priors = dict[str, torch.Tensor]


RELEASED_DICT_STEM = 174  # first hidden width of the released dictionary stem (the second is 90)


def prior_stems(p: int, dict_stem: int = RELEASED_DICT_STEM) -> tuple[nn.Module, nn.Module, nn.Module]:
    """The input convolutions of the three priors (parsing map + image, heatmaps + image, component-dictionary
    features) to ``p`` channels, as the released model has them (shared by MFPSNet and its search space).

    ``dict_stem``: first hidden width of the dictionary stem (256 -> dict_stem -> dict_stem * 90 / 174 -> p,
    3x3 convolutions at full resolution); 174 is the released model's. It is most of MFPSNet's CPU time at small
    widths, hence the option for compact models."""
    hidden = max(1, dict_stem * 90 // RELEASED_DICT_STEM)
    return (nn.Conv2d(PARSE_CHANNELS + 3, p, 3, padding=1), nn.Conv2d(HEAT_CHANNELS + 3, p, 3, padding=1),
            nn.Sequential(nn.Conv2d(DICT_CHANNELS, dict_stem, 3, padding=1), nn.LeakyReLU(0.2),
                          nn.Conv2d(dict_stem, hidden, 3, padding=1), nn.LeakyReLU(0.2),
                          nn.Conv2d(hidden, p, 3, padding=1)))


def level_sides(side: int, start_level: int) -> dict[int, int]:
    """Feature-map side of every level (0..3) for an input of ``side`` px at ``start_level``."""
    sides = {start_level: side}
    for k in range(start_level - 1, -1, -1):
        sides[k] = scale_side(sides[k + 1], 2.0)
    for k in range(start_level + 1, 4):
        sides[k] = scale_side(sides[k - 1], 0.5)
    return sides


class DecodedCell(nn.Module):
    """One cell of a decoded genotype (see the module docstring); ``forward(s0, s1, size)``."""

    def __init__(self, c_prev_prev: int, c_prev: int, channels: int, genotype: ModuleGenotype) -> None:
        super().__init__()
        self.steps = genotype.steps
        self.pre0 = ConvBR(c_prev_prev, channels, 1)
        self.pre1 = ConvBR(c_prev, channels, 1)
        self.edges = [e for e, _ in genotype.cell]
        self.ops = nn.ModuleList(make_op(PRIMITIVES[o], channels) for _, o in genotype.cell)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        s1 = self.pre1(resample(s1, size))
        s0 = self.pre0(resample(s0, size))
        states = [s0, s1]
        for step in range(self.steps):
            r = edge_range(step)
            h = sum(op(states[e - r.start]) for e, op in zip(self.edges, self.ops) if e in r)
            states.append(h)
        return torch.cat(states[-MULTIPLIER:], 1)


class SearchedModule(nn.Module):
    """A decoded searched module: ``(B, c_in, s, s)`` at ``start_level`` -> ``(B, 3 F, S, S)`` at level 0."""

    def __init__(self, genotype: ModuleGenotype, c_in: int, filters: int, start_level: int) -> None:
        super().__init__()
        self.genotype, self.start_level, self.filters = genotype, start_level, filters
        path = genotype.path
        self.stem = ConvBR(c_in, MULTIPLIER * c_in, 3)

        def out_ch(level: int) -> int:
            return MULTIPLIER * filters * 2**level

        self.cells = nn.ModuleList()
        for i, level in enumerate(path):
            c_prev = MULTIPLIER * c_in if i == 0 else out_ch(path[i - 1])
            c_pp = c_in if i == 0 else MULTIPLIER * c_in if i == 1 else out_ch(path[i - 2])
            self.cells.append(DecodedCell(c_pp, c_prev, filters * 2**level, genotype))
        self.up = nn.ModuleList(ConvBR(out_ch(k), out_ch(k - 1), 1) for k in range(path[-1], 0, -1))
        self.last = ConvBR(out_ch(0), out_ch(0), 1, bn=False, relu=False)
        self.out_channels = out_ch(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sides = level_sides(x.shape[-1], self.start_level)
        s0, s1 = x, self.stem(x)
        for level, cell in zip(self.genotype.path, self.cells):
            s0, s1 = s1, cell(s0, s1, (sides[level], sides[level]))
        k = self.genotype.path[-1]
        for conv in self.up:
            s1 = resample(conv(s1), (sides[k - 1], sides[k - 1]))
            k -= 1
        return self.last(s1)


class Reconstruction(nn.Module):
    """Features (B, 24, S, S) -> image (B, 3, S, S), with the skips from the backbone (module docstring)."""

    def __init__(self, feat_channels: int = 24, nf: int = 64, growth: int = 32, blocks: int = 3, unshuffle: int = 8):
        super().__init__()
        wide = feat_channels * unshuffle * unshuffle
        self.unshuffle = unshuffle
        self.redistill1 = nn.Conv2d(wide, wide // 3, 1)
        self.redistill2 = nn.Conv2d(wide // 3, nf, 1)
        self.trunk = nn.Sequential(*(ResidualDenseBlock(nf, growth) for _ in range(blocks)))
        self.conv_trunk = nn.Conv2d(nf, nf, 3, padding=1)
        self.ups = nn.ModuleList(nn.Conv2d(nf, nf, 3, padding=1) for _ in range(3))
        self.conv_hr = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv_last = nn.Conv2d(nf, 3, 3, padding=1)

    def forward(self, feats: torch.Tensor, module_in: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        r = F.pixel_unshuffle(feats, self.unshuffle)
        r = self.redistill2(F.leaky_relu(self.redistill1(r), 0.2)) + module_in
        f = self.conv_trunk(self.trunk(r)) + first
        for conv in self.ups:
            f = F.leaky_relu(conv(F.interpolate(f, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(f), 0.2))


class FRSNet(nn.Module):
    """Face Restoration Searching Network: (B, 3, S, S) in [0, 1] -> (B, 3, S, S); S a multiple of 64."""

    def __init__(self, genotype: Genotype, nf: int = 64, growth: int = 32, blocks: int = 3, sr_filters: int = 8,
                 unshuffle: int = 8, input_skip: bool = False) -> None:
        super().__init__()
        self.genotype = genotype
        self.unshuffle = unshuffle
        self.conv_first = nn.Conv2d(3 * unshuffle * unshuffle, nf, 3, padding=1)
        self.trunk = nn.Sequential(*(ResidualDenseBlock(nf, growth) for _ in range(blocks)))
        self.sr = SearchedModule(genotype["sr"], nf, sr_filters, START_LEVEL["sr"])
        self.reconstruction = Reconstruction(self.sr.out_channels, nf, growth, blocks, unshuffle)
        # input_skip (our option, off in the paper): every iteration predicts a correction added to its input.
        # The 8x pixel-unshuffle head squeezes 192 values per 8x8 block into nf channels, so without the skip the
        # network must first learn to reproduce the face through that bottleneck: on a CPU budget of a few
        # hundred steps it returns a blurred mean face. The last convolution starts at zero: output = input.
        self.input_skip = bool(input_skip)
        if self.input_skip:
            nn.init.zeros_(self.reconstruction.conv_last.weight)
            nn.init.zeros_(self.reconstruction.conv_last.bias)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(first conv output, upsampling-module input, upsampling-module output)."""
        if x.shape[-1] % (self.unshuffle * 8) or x.shape[-2] != x.shape[-1]:
            raise ValueError(f"FRSNet needs square inputs with a side divisible by {self.unshuffle * 8}, "
                             f"got {tuple(x.shape[-2:])}")
        first = self.conv_first(F.pixel_unshuffle(x, self.unshuffle))
        module_in = self.trunk(first)
        return first, module_in, self.sr(module_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, module_in, feats = self.features(x)
        out = self.reconstruction(feats, module_in, first)
        return x + out if self.input_skip else out


class MFPSNet(FRSNet):
    """Multiple Facial Prior Searching Network (two iterations; see the module docstring).

    ``forward(x, priors=None, prior_fn=None)`` returns ``[out1, out2]``; ``priors`` maps "parse" (B, 19, S, S),
    "heat" (B, 71, S, S) and "dict" (B, 256, S, S) to tensors, or ``prior_fn(out1)`` computes them. A prior
    missing from the mapping (or listed in ``disabled``) enters as zeros: the prior-ablation rows.
    """

    def __init__(self, genotype: Genotype, nf: int = 64, growth: int = 32, blocks: int = 3, sr_filters: int = 8,
                 prior_filters: int = 8, fusion_filters: int = 48, unshuffle: int = 8,
                 released_extras: bool = False, dict_stem: int = RELEASED_DICT_STEM, input_skip: bool = False) -> None:
        super().__init__(genotype, nf, growth, blocks, sr_filters, unshuffle, input_skip)
        if not genotype.has_priors:
            from facerestore.errors import InputError

            raise InputError("MFPSNet needs a genotype with the parse, heat, dict and fusion modules (a searched "
                             "FRSNet genotype has the sr module only): use a preset such as 'released' or the "
                             "genotype of an MFPSNet search")
        p = prior_filters
        self.parse_in, self.heat_in, self.dict_in = prior_stems(p, dict_stem)
        self.priors = nn.ModuleDict({n: SearchedModule(genotype[n], p, p, 0) for n in ("parse", "heat", "dict")})
        self.prior_out = nn.Conv2d(self.priors["parse"].out_channels, p, 3, padding=1)  # shared by the 3 priors
        fuse_in = self.sr.out_channels + 3 * p
        self.fusion = SearchedModule(genotype["fusion"], fuse_in, fusion_filters, 0)
        self.fusion_out = nn.Sequential(nn.Conv2d(self.fusion.out_channels, fuse_in, 3, padding=1),
                                        nn.Conv2d(fuse_in, self.sr.out_channels, 3, padding=1))
        self.released_extras = None
        if released_extras:
            self.released_extras = nn.ParameterList(
                nn.Parameter(torch.zeros(n), requires_grad=False) for n in released_dead_parameters(self).values())

    def prior_features(self, image: torch.Tensor, priors: Priors, disabled: tuple[str, ...] = ()) -> list[torch.Tensor]:
        b, _, h, w = image.shape
        out = []
        for name, conv, ch in (("parse", self.parse_in, PARSE_CHANNELS), ("heat", self.heat_in, HEAT_CHANNELS),
                               ("dict", self.dict_in, DICT_CHANNELS)):
            t = priors.get(name) if name not in disabled else None
            if t is None:
                t = image.new_zeros(b, ch, h, w)
            t = t.to(image)
            t = conv(t if name == "dict" else torch.cat([image, t], 1))
            out.append(self.prior_out(self.priors[name](t)))
        return out

    def forward(self, x: torch.Tensor, priors: Priors | None = None,
                prior_fn: Callable[[torch.Tensor], Priors] | None = None,
                disabled: tuple[str, ...] = ()) -> list[torch.Tensor]:
        out1 = super().forward(x)
        if priors is None:
            priors = prior_fn(out1.detach()) if prior_fn is not None else {}
        first, module_in, feats = self.features(out1)
        fused = self.fusion(torch.cat([feats, *self.prior_features(out1, priors, disabled)], 1))
        out2 = self.reconstruction(self.fusion_out(fused), module_in, first)
        return [out1, out1 + out2 if self.input_skip else out2]


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (trainable or not)."""
    return sum(p.numel() for p in module.parameters())


def released_dead_parameters(net: MFPSNet) -> dict[str, int]:
    """Parameters the authors' model object holds beyond ours, never used in its forward pass: output
    projections of the levels a module's path does not end at (and, at the end, the unused BatchNorm of the
    final projection), plus three convolutions 64 -> 50 -> 38 -> 24 (3x3) of an abandoned baseline."""
    dead: dict[str, int] = {}
    mods = {"sr": net.sr, **dict(net.priors.items()), "fusion": net.fusion}
    for name, m in mods.items():
        f3 = MULTIPLIER * m.filters
        n = 2 * f3  # BatchNorm (weight + bias) of the last projection
        for k in range(m.genotype.path[-1] + 1, 4):  # projections of deeper levels
            cin, cout = f3 * 2**k, f3 * 2 ** (k - 1)
            n += cin * cout + 2 * cout
        dead[name] = n
    dead["baseline"] = sum(9 * a * b + b for a, b in ((64, 50), (50, 38), (38, 24)))
    return dead
