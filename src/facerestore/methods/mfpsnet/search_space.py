"""The continuous search spaces (section 3.1.1, 3.2): searchable cells, the network level, and the super-networks.

:class:`SuperModule` is the relaxed counterpart of a decoded :class:`~facerestore.methods.mfpsnet.network.
SearchedModule`: 4 levels (level 0 = output resolution; the upsampling space starts at level 3 = rate 1 and
climbs to rate 8, the prior and fusion spaces start at level 0 and may go down to 1/8), ``layers`` layers, and
at every reachable node ``(l, k)`` one :class:`SearchCell`. A node's cell is applied once per incoming arrow
(from levels k-1, k, k+1 of layer l-1: the input resized bilinearly to level k and mapped by that arrow's own
1x1 ConvBR), its mixed operations shared, and the node is the beta-weighted sum (eq. 4):

    H_l^k = sum_{j in {k-1, k, k+1}} beta_l[j -> k] * Cell_alpha(H_{l-1}^j, H_{l-2}^k)

``H_{l-2}^k`` is the same level two layers back when that node exists (the module input for layer 0 at the
start level, the stem output for layer 1), else the cell's blocks ignore the edges from it. Each edge's
output is ``sum_o softmax(alpha_e)_o * o(x)`` (eq. 3) over skip / conv3 / conv5 / conv7 (ConvBR). One alpha
(9 x 4) per module, shared by all its cells; beta (L x 4 x 3) per module, softmax over each node's valid
outgoing arrows (eq. 5, :func:`~facerestore.methods.mfpsnet.decode.normalized_betas`). The outputs of the last
layer's nodes are brought to level 0 by the shared chain of 1x1 ConvBR + x2 bilinear projections and summed.

:class:`SearchFRSNet` and :class:`SearchMFPSNet` wrap the backbone, reconstruction and prior convolutions of
the decoded networks around super-modules; ``arch_parameters()`` are the alphas and betas,
``weight_parameters()`` everything else, ``genotype(rule)`` decodes the current architecture.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from facerestore.methods.mfpsnet.decode import decode_module, normalized_alphas, normalized_betas, reachable_levels
from facerestore.methods.mfpsnet.genotype import PRIOR_MODULES, START_LEVEL, Genotype, edge_range, num_edges
from facerestore.methods.mfpsnet.network import (
    DICT_CHANNELS,
    HEAT_CHANNELS,
    MULTIPLIER,
    PARSE_CHANNELS,
    RELEASED_DICT_STEM,
    Priors,
    Reconstruction,
    level_sides,
    prior_stems,
)
from facerestore.methods.mfpsnet.ops import PRIMITIVES, ConvBR, ResidualDenseBlock, make_op, resample

__all__ = ["MixedOp", "SearchCell", "SearchFRSNet", "SearchMFPSNet", "SuperModule"]


class MixedOp(nn.Module):
    """``sum_o w_o * o(x)`` over the candidate operations, ``w`` = softmax(alpha_e)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.ops = nn.ModuleList(make_op(p, channels) for p in PRIMITIVES)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(w * op(x) for w, op in zip(weights, self.ops))


class SearchCell(nn.Module):
    """A searchable cell at one node: a 1x1 ConvBR per incoming source level and for ``H_{l-2}``, and one mixed
    operation per edge."""

    def __init__(self, channels: int, sources: dict[int, int], c_prev_prev: int | None, steps: int = 3) -> None:
        super().__init__()
        self.steps = steps
        self.pre = nn.ModuleDict({str(k): ConvBR(c, channels, 1) for k, c in sources.items()})
        self.pre0 = ConvBR(c_prev_prev, channels, 1) if c_prev_prev is not None else None
        self.edges = nn.ModuleList(MixedOp(channels) for _ in range(num_edges(steps)))

    def forward(self, s0: torch.Tensor | None, s1: torch.Tensor, source: int, size: tuple[int, int],
                alphas: torch.Tensor) -> torch.Tensor:
        states: list[torch.Tensor | None] = [
            self.pre0(resample(s0, size)) if (s0 is not None and self.pre0 is not None) else None,
            self.pre[str(source)](resample(s1, size)),
        ]
        for step in range(self.steps):
            r = edge_range(step)
            terms = [self.edges[e](states[e - r.start], alphas[e]) for e in r if states[e - r.start] is not None]
            states.append(sum(terms))
        return torch.cat(states[-MULTIPLIER:], 1)


class SuperModule(nn.Module):
    """The relaxed search space of one module (see the module docstring)."""

    def __init__(self, c_in: int, filters: int, start_level: int, layers: int = 6, steps: int = 3,
                 init_scale: float = 1.0, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.c_in, self.filters, self.start_level, self.layers, self.steps = c_in, filters, start_level, layers, steps
        self.alphas = nn.Parameter(init_scale * torch.randn(num_edges(steps), len(PRIMITIVES), generator=generator))
        self.betas = nn.Parameter(init_scale * torch.randn(layers, 4, 3, generator=generator))
        self.stem = ConvBR(c_in, MULTIPLIER * c_in, 3)

        def out_ch(level: int) -> int:
            return MULTIPLIER * filters * 2**level

        self.cells = nn.ModuleDict()
        for layer in range(layers):
            prev = [start_level] if layer == 0 else reachable_levels(layer - 1, start_level)
            pprev = ([start_level] if layer <= 1 else reachable_levels(layer - 2, start_level))
            for k in reachable_levels(layer, start_level):
                sources = {j: (MULTIPLIER * c_in if layer == 0 else out_ch(j)) for j in prev if abs(j - k) <= 1}
                c_pp = None
                if k in pprev:
                    c_pp = c_in if layer == 0 else MULTIPLIER * c_in if layer == 1 else out_ch(k)
                self.cells[f"{layer}_{k}"] = SearchCell(filters * 2**k, sources, c_pp, steps)
        self.up = nn.ModuleDict({str(k): ConvBR(out_ch(k), out_ch(k - 1), 1) for k in range(1, 4)})
        self.last = ConvBR(out_ch(0), out_ch(0), 1, bn=False, relu=False)
        self.out_channels = out_ch(0)

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas, self.betas]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sides = level_sides(x.shape[-1], self.start_level)
        na, nb = normalized_alphas(self.alphas), normalized_betas(self.betas)
        prev_prev: dict[int, torch.Tensor] = {self.start_level: x}
        prev: dict[int, torch.Tensor] = {self.start_level: self.stem(x)}
        for layer in range(self.layers):
            new: dict[int, torch.Tensor] = {}
            for k in reachable_levels(layer, self.start_level):
                cell = self.cells[f"{layer}_{k}"]
                size = (sides[k], sides[k])
                terms = [nb[layer, j, k - j + 1] * cell(prev_prev.get(k), prev[j], j, size, na)
                         for j in sorted(prev) if abs(j - k) <= 1]
                new[k] = sum(terms)
            prev_prev, prev = prev, new
        out = 0
        for k, h in prev.items():
            for level in range(k, 0, -1):
                h = resample(self.up[str(level)](h), (sides[level - 1], sides[level - 1]))
            out = out + h
        return self.last(out)

    def genotype(self, rule: str = "non-skip"):
        return decode_module(self.alphas, self.betas, self.start_level, self.steps, rule)


class SearchFRSNet(nn.Module):
    """FRSNet with the upsampling module relaxed (the search of the upsampling space)."""

    def __init__(self, nf: int = 64, growth: int = 32, blocks: int = 3, sr_filters: int = 8, layers: int = 6,
                 unshuffle: int = 8, init_scale: float = 1.0, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.unshuffle = unshuffle
        self.conv_first = nn.Conv2d(3 * unshuffle * unshuffle, nf, 3, padding=1)
        self.trunk = nn.Sequential(*(ResidualDenseBlock(nf, growth) for _ in range(blocks)))
        self.sr = SuperModule(nf, sr_filters, START_LEVEL["sr"], layers, init_scale=init_scale, generator=generator)
        self.reconstruction = Reconstruction(self.sr.out_channels, nf, growth, blocks, unshuffle)

    def super_modules(self) -> dict[str, SuperModule]:
        return {"sr": self.sr}

    def arch_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.super_modules().values() for p in m.arch_parameters()]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def genotype(self, rule: str = "non-skip", fixed: Genotype | None = None) -> Genotype:
        mods = dict(fixed.modules) if fixed is not None else {}
        mods.update({n: m.genotype(rule) for n, m in self.super_modules().items()})
        return Genotype(mods)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        first = self.conv_first(torch.nn.functional.pixel_unshuffle(x, self.unshuffle))
        module_in = self.trunk(first)
        return first, module_in, self.sr(module_in)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        first, module_in, feats = self.features(x)
        return [self.reconstruction(feats, module_in, first)]


class SearchMFPSNet(SearchFRSNet):
    """MFPSNet with the upsampling, prior and fusion modules relaxed; ``forward`` returns both iterations."""

    def __init__(self, nf: int = 64, growth: int = 32, blocks: int = 3, sr_filters: int = 8, prior_filters: int = 8,
                 fusion_filters: int = 48, layers: int = 6, prior_layers: int = 6, fusion_layers: int = 8,
                 unshuffle: int = 8, init_scale: float = 1.0, generator: torch.Generator | None = None,
                 dict_stem: int = RELEASED_DICT_STEM) -> None:
        super().__init__(nf, growth, blocks, sr_filters, layers, unshuffle, init_scale, generator)
        p = prior_filters
        self.parse_in, self.heat_in, self.dict_in = prior_stems(p, dict_stem)
        self.priors = nn.ModuleDict({n: SuperModule(p, p, 0, prior_layers, init_scale=init_scale, generator=generator)
                                     for n in PRIOR_MODULES})
        self.prior_out = nn.Conv2d(MULTIPLIER * p, p, 3, padding=1)
        fuse_in = self.sr.out_channels + 3 * p
        self.fusion = SuperModule(fuse_in, fusion_filters, 0, fusion_layers, init_scale=init_scale,
                                  generator=generator)
        self.fusion_out = nn.Sequential(nn.Conv2d(self.fusion.out_channels, fuse_in, 3, padding=1),
                                        nn.Conv2d(fuse_in, self.sr.out_channels, 3, padding=1))

    def super_modules(self) -> dict[str, SuperModule]:
        return {"sr": self.sr, **dict(self.priors.items()), "fusion": self.fusion}

    def forward(self, x: torch.Tensor, priors: Priors | None = None,
                prior_fn: Callable[[torch.Tensor], Priors] | None = None) -> list[torch.Tensor]:
        first, module_in, feats = self.features(x)
        out1 = self.reconstruction(feats, module_in, first)
        if priors is None:
            priors = prior_fn(out1.detach()) if prior_fn is not None else {}
        first, module_in, feats = self.features(out1)
        b, _, h, w = out1.shape
        pf = []
        for name, conv, ch in (("parse", self.parse_in, PARSE_CHANNELS), ("heat", self.heat_in, HEAT_CHANNELS),
                               ("dict", self.dict_in, DICT_CHANNELS)):
            t = priors.get(name)
            t = out1.new_zeros(b, ch, h, w) if t is None else t.to(out1)
            t = conv(t if name == "dict" else torch.cat([out1, t], 1))
            pf.append(self.prior_out(self.priors[name](t)))
        fused = self.fusion_out(self.fusion(torch.cat([feats, *pf], 1)))
        return [out1, self.reconstruction(fused, module_in, first)]
