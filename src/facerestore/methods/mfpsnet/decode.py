"""Decoding a searched architecture (section 3.3): the continuous relaxation's weights and the discrete genotype.

- :func:`normalized_alphas`: softmax over the operations of every edge (eq. 3).
- :func:`normalized_betas`: softmax over the outgoing arrows of every node (eq. 5): ``beta[l, k, d]`` is the
  weight of the arrow from level ``k`` at layer ``l - 1`` (layer -1 = the module input at its start level) to
  level ``k + d - 1`` at layer ``l`` (d = 0: one level finer, 1: same level, 2: one level coarser). Arrows that
  leave the 4 levels get weight 0 and the others of that node sum to 1 (the released code also scales the
  two arrows of a boundary node by 2/3; that is not in the paper and not done here).
- :func:`decode_cell`: the two strongest inputs of every block and their operation. Rules: "non-skip"
  (default, as the issue words it: inputs ranked by their strongest non-skip operation, which is kept),
  "code" (ranked by the strongest non-skip operation, then the strongest operation, skip included, is kept:
  what the released genotypes show), "darts" (ranked and chosen over every operation, as DARTS).
- :func:`viterbi_path`: the maximum-probability network path (the product of the normalized betas along the
  path, free end level), by dynamic programming; :func:`brute_force_path` enumerates every path (tests).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from facerestore.methods.mfpsnet.genotype import ModuleGenotype, edge_range
from facerestore.methods.mfpsnet.ops import NUM_LEVELS, PRIMITIVES

__all__ = ["RULES", "brute_force_path", "decode_cell", "decode_module", "normalized_alphas", "normalized_betas",
           "path_probability", "reachable_levels", "viterbi_path"]

RULES = ("non-skip", "code", "darts")
SKIP = PRIMITIVES.index("skip")


def normalized_alphas(alphas: torch.Tensor) -> torch.Tensor:
    """(E, |O|) softmax over operations."""
    return torch.softmax(alphas, dim=-1)


def normalized_betas(betas: torch.Tensor) -> torch.Tensor:
    """(L, 4, 3) betas -> softmax over each node's valid outgoing arrows (invalid arrows 0)."""
    valid = torch.ones(NUM_LEVELS, 3, dtype=torch.bool, device=betas.device)
    valid[0, 0] = False
    valid[NUM_LEVELS - 1, 2] = False
    masked = betas.masked_fill(~valid, float("-inf"))
    return torch.softmax(masked, dim=-1)


def reachable_levels(layer: int, start_level: int) -> list[int]:
    """Levels a path from ``start_level`` can be at on ``layer`` (0-based): within ``layer + 1`` of the start."""
    return [k for k in range(NUM_LEVELS) if abs(k - start_level) <= layer + 1]


def decode_cell(alphas: torch.Tensor | np.ndarray, steps: int = 3, rule: str = "non-skip") -> list[tuple[int, int]]:
    """(edge, op) pairs: for each block the two inputs ranked strongest under ``rule`` (module docstring).
    ``alphas``: the raw architecture parameters (edges, ops), a tensor or an array alike: both go through the
    softmax over ops before edges are ranked (raw logits of different edges are not comparable)."""
    if rule not in RULES:
        raise ValueError(f"unknown decoding rule {rule!r}; rules: {', '.join(RULES)}")
    logits = alphas.detach() if isinstance(alphas, torch.Tensor) else torch.from_numpy(np.asarray(alphas))
    w = logits.double().softmax(-1).cpu().numpy()
    non_skip = [i for i in range(w.shape[1]) if i != SKIP]
    rank_ops = list(range(w.shape[1])) if rule == "darts" else non_skip
    pick_ops = non_skip if rule == "non-skip" else list(range(w.shape[1]))
    gene: list[tuple[int, int]] = []
    for step in range(steps):
        edges = sorted(edge_range(step), key=lambda e: (-w[e, rank_ops].max(), e))[:2]
        for e in sorted(edges):
            gene.append((e, int(pick_ops[int(np.argmax(w[e, pick_ops]))])))
    return gene


def path_probability(nbetas: np.ndarray, path: list[int] | tuple[int, ...], start_level: int) -> float:
    """Product of the normalized betas along ``path`` from ``start_level``."""
    p, prev = 1.0, start_level
    for layer, level in enumerate(path):
        d = level - prev + 1
        if not 0 <= d <= 2:
            return 0.0
        p *= float(nbetas[layer, prev, d])
        prev = level
    return p


def viterbi_path(betas: torch.Tensor | np.ndarray, start_level: int, normalized: bool = False) -> list[int]:
    """The maximum-probability path (one level per layer) through the (L, 4, 3) betas, by dynamic programming
    over log-probabilities; ties go to the finer level."""
    nb = betas if normalized else normalized_betas(torch.as_tensor(betas, dtype=torch.float64))
    nb = nb.detach().cpu().double().numpy() if isinstance(nb, torch.Tensor) else np.asarray(nb, np.float64)
    layers = nb.shape[0]
    with np.errstate(divide="ignore"):
        logp = np.log(nb)
    score = np.full(NUM_LEVELS, -np.inf)
    score[start_level] = 0.0
    back = np.zeros((layers, NUM_LEVELS), dtype=np.int64)
    for layer in range(layers):
        new = np.full(NUM_LEVELS, -np.inf)
        for k in range(NUM_LEVELS):
            for prev in (k - 1, k, k + 1):
                if 0 <= prev < NUM_LEVELS and np.isfinite(score[prev]):
                    s = score[prev] + logp[layer, prev, k - prev + 1]
                    if s > new[k]:
                        new[k], back[layer, k] = s, prev
        score = new
    level = int(np.argmax(score))
    path = [level]
    for layer in range(layers - 1, 0, -1):
        level = int(back[layer, level])
        path.append(level)
    return path[::-1]


def brute_force_path(betas: torch.Tensor | np.ndarray, start_level: int) -> tuple[list[int], float]:
    """Every path enumerated (3^L of them): the most probable and its probability (for tests)."""
    nb = normalized_betas(torch.as_tensor(betas, dtype=torch.float64)).numpy()
    best, best_p = None, -1.0
    for moves in itertools.product((-1, 0, 1), repeat=nb.shape[0]):
        path, level = [], start_level
        for m in moves:
            level += m
            path.append(level)
        if min(path) < 0 or max(path) >= NUM_LEVELS:
            continue
        p = path_probability(nb, path, start_level)
        if p > best_p:
            best, best_p = path, p
    return list(best), best_p


def decode_module(alphas: torch.Tensor, betas: torch.Tensor, start_level: int, steps: int = 3,
                  rule: str = "non-skip") -> ModuleGenotype:
    """The genotype of one searched module."""
    g = ModuleGenotype(tuple(viterbi_path(betas, start_level)), tuple(decode_cell(alphas, steps, rule)), steps)
    return g.validate(start_level)
