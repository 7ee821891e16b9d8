"""RLS and RLS+ (paper 004): regularized latent search in W+ and generator fine-tuning in an L1 ball.

RLS (eq. 5-6) minimises over W+ latents w = [w_1 .. w_L] (B, L, d)::

    l1_weight * L1(D(G(w)), y)                            fidelity (D: PULSE bicubic downsampling)
    + l_logp  * (-1/L sum_i log p_F(w_i))                 flow prior (MAF F, ``nn.flow``)
    + l_pn    * 1/L sum_i (||F(w_i)||_2 - sqrt(d))^2      gaussianized latents near the sphere
    + l_cross * P_cross(w)                                rows of W+ close to each other

with Adam (peak lr 0.5 in the paper, scaled to W's spread in "default" below; PULSE's "linear1cycledrop"
one-cycle schedule), starting from the mean of many
W samples, keeping the latent of the step with the lowest total loss.

RLS+ (eq. 7) starts at the RLS anchor and jointly optimises the latents, the noise maps (the first
``noise_layers`` = 9 conv layers; the paper: "only the first nine input layers are optimized") and the
synthesis weights with Adam, minimising the fidelity term only; after every step the noise maps are
renormalised (zero mean, unit variance) and each W+ row is projected onto the L1 ball of radius sqrt(d)
around its anchor row (exact Euclidean projection, Duchi et al. 2008). Early stopping on the fidelity loss;
the best step is kept. The caller's generator is never modified (RLS+ tunes a copy per image).

Presets, each from exactly one source:

- "paper": Sec. 4 and eq. 5-7 as written: (l_logp, l_pn, l_cross) = (0.0002, 0.0004, 0.05); fidelity the
  plain L1 norm ``||y - D(G(w))||_1`` (a sum over pixels); ``P_cross`` the sum of squared distances over the
  pairs i < j; 200 RLS steps, then 50 RLS+ steps at the single learning rate 1e-4.
- "code": the cleaned released code: (0.002, 0.004, 0.5); fidelity 10 x the mean absolute error; ``P_cross``
  the mean pairwise (unsquared) distance; 500 + 200 steps at 1e-4.
- "default" (ours, what the restorers use): "paper", except two learning rates set from the geometry.
  RLS+'s latent rate: with the paper's 1e-4, Adam moves a 512-d row by at most 50 x 1e-4 x 512 = 2.6 in L1
  norm, an eighth of the sqrt(512) = 22.6 radius: the ball can never bind and the constraint the paper ablates
  would be void. The default uses ``3 / (sqrt(d) * plus_steps)`` (2.7e-3 for d = 512 and 50 steps): Adam's
  per-coordinate step bound then lets a row travel three radii over the run, so the projection does what
  eq. 7 says (``tests/methods/test_rls`` checks that it binds); weights and noise keep 1e-4.
  RLS's latent rate: Adam moves every coordinate by up to ``lr`` per step, and the paper's 0.5 is more than the
  whole spread of W (MobileStyleGAN's per-dimension standard deviation is 0.42, our 64 px prior's 0.69). On
  MobileStyleGAN the search climbs out of its basin as the one-cycle schedule nears its peak and turns NaN
  (the README photo's face: best step 31 of 100 from the mean, 16 from the W encoder, NaN from step 75 / 46),
  so the kept latent is an early, poor fit; from the encoder's start it was a sepia, painterly stranger
  (``docs/rls_lr_astronaut.png``). The default peak rate is ``LR_SPREAD`` (0.25) times W's mean
  per-dimension standard deviation (:func:`search_lr`; 0.105 for MobileStyleGAN, 0.17 for the 64 px prior):
  on that face both starts then converge to the same fit, with 2.5x lower loss
  (``benchmarks/results/rls_factors_lr.md`` measures it on held-out faces).

Every preset stops the search once every face's loss is NaN, as the released code does (the kept step is
unchanged: a NaN loss is never the lowest).

Beyond the paper, both searches take an optional ``identity`` term of the generated image (reference photos of the
person, ``methods.inversion.refs``): RLS adds it to the total (history key "identity"), RLS+ to the fidelity it
minimises, early-stops on and keeps the best step of. Without it every step is exactly the paper's.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace

import torch

from facerestore.nn.flow import MAF
from facerestore.nn.stylegan2 import Generator, latent_dtype, render_unit, to_unit_range

__all__ = [
    "LR_SPREAD",
    "PRESETS",
    "RLSConfig",
    "RLSPlusResult",
    "RLSResult",
    "config",
    "cross_term",
    "fidelity_term",
    "logp_term",
    "mean_w",
    "one_cycle_factor",
    "pn_term",
    "project_l1_ball",
    "rls_loss",
    "rls_plus",
    "rls_search",
    "search_lr",
    "w_spread",
]


@dataclass(frozen=True)
class RLSConfig:
    """Hyper-parameters of RLS / RLS+ (see the module doc); ``PRESETS`` holds the paper's and the code's."""

    l_logp: float = 0.0002
    l_pn: float = 0.0004
    l_cross: float = 0.05
    l1_weight: float = 1.0
    l1_reduction: str = "sum"  # "sum" (eq. 6: the L1 norm) or "mean" (the code: mean absolute error)
    cross: str = "sum_squared"  # "sum_squared" (eq. 5) or "mean_distance" (the code)
    steps: int = 200
    lr: float | None = 0.5  # None: LR_SPREAD x W's mean per-dimension std (search_lr, see "default")
    schedule: str = "linear1cycledrop"
    n_mean: int = 100_000
    plus_steps: int = 50
    plus_lr_weights: float = 1e-4
    plus_lr_latent: float | None = 1e-4  # None: 3 / (sqrt(d) * plus_steps), see "default"
    plus_lr_noise: float = 1e-4
    noise_layers: int = 9
    radius: float | None = None  # None: sqrt(w_dim)
    patience: int = 10


PRESETS: dict[str, RLSConfig] = {
    "paper": RLSConfig(),
    "code": RLSConfig(l_logp=0.002, l_pn=0.004, l_cross=0.5, l1_weight=10.0, l1_reduction="mean",
                      cross="mean_distance", steps=500, plus_steps=200),
    "default": RLSConfig(lr=None, plus_lr_latent=None),
}

# the "default" preset's peak RLS learning rate as a fraction of W's mean per-dimension standard deviation (module
# docstring). Chosen on the README photo's face (not a benchmark face), 100 steps from the mean and from the W
# encoder: 0.5 (1.2 x MobileStyleGAN's spread) diverged, best totals 1137 / 1611; 0.03, 0.1, 0.15 and 0.2 (0.07-0.48 x)
# converged to 432-501, 0.1-0.2 the lowest. 0.25 x (0.105) lies in that plateau.
LR_SPREAD = 0.25


# ------------------------------------------------------------------------------------------- terms


def fidelity_term(pred_lr: torch.Tensor, target: torch.Tensor, weight: float = 1.0,
                  reduction: str = "sum") -> torch.Tensor:
    """weight * L1 per sample (B,): the sum of |pred_lr - target| (eq. 6) or its mean (the released code)."""
    err = (pred_lr - target).abs().flatten(1)
    if reduction == "sum":
        return weight * err.sum(1)
    if reduction == "mean":
        return weight * err.mean(1)
    raise ValueError(f"l1_reduction must be 'sum' or 'mean', got {reduction!r}")


def logp_term(flow: MAF, ws: torch.Tensor) -> torch.Tensor:
    """-mean_i log p_F(w_i) per sample (B,) for W+ latents ws (B, L, d)."""
    return -flow.log_prob(ws).mean(-1)


def pn_term(flow: MAF, ws: torch.Tensor) -> torch.Tensor:
    """mean_i (||F(w_i)||_2 - sqrt(d))^2 per sample (B,)."""
    u, _ = flow(ws)
    return (torch.linalg.vector_norm(u, dim=-1) - math.sqrt(ws.shape[-1])).square().mean(-1)


def cross_term(ws: torch.Tensor, kind: str = "mean_distance") -> torch.Tensor:
    """Cross prior over the L(L-1)/2 pairs i < j of W+ rows, per sample (B,): "sum_squared" = sum of squared
    Euclidean distances (eq. 5), "mean_distance" = mean Euclidean distance (the released code)."""
    L = ws.shape[-2]
    if L < 2:
        return ws.new_zeros(ws.shape[0])
    diff = ws.unsqueeze(-2) - ws.unsqueeze(-3)  # (B, L, L, d)
    sq = diff.square().sum(-1)
    iu = torch.triu_indices(L, L, offset=1, device=ws.device)
    if kind == "sum_squared":
        return sq[:, iu[0], iu[1]].sum(-1)
    if kind == "mean_distance":
        # +eps inside the sqrt: the distance of a row to itself is not differentiable at 0
        return (sq + 1e-12).sqrt()[:, iu[0], iu[1]].mean(-1)
    raise ValueError(f"cross must be 'sum_squared' or 'mean_distance', got {kind!r}")


def rls_loss(
    pred_lr: torch.Tensor, target: torch.Tensor, ws: torch.Tensor, flow: MAF | None, cfg: RLSConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total RLS loss (B,) and its unweighted terms {"l1", "logp", "pn", "cross"} (each (B,))."""
    terms = {"l1": fidelity_term(pred_lr, target, cfg.l1_weight, cfg.l1_reduction), "cross": cross_term(ws, cfg.cross)}
    total = terms["l1"] + cfg.l_cross * terms["cross"]
    if flow is not None and (cfg.l_logp or cfg.l_pn):
        terms["logp"] = logp_term(flow, ws)
        terms["pn"] = pn_term(flow, ws)
        total = total + cfg.l_logp * terms["logp"] + cfg.l_pn * terms["pn"]
    return total, terms


def one_cycle_factor(step: int, steps: int, schedule: str = "linear1cycledrop") -> float:
    """Learning-rate multiplier at ``step`` of ``steps`` (PULSE's schedules).

    "linear1cycledrop": 0.1 -> 1 -> 0.1 linearly over the first 90 % of the steps, then 0.1 -> 0.001.
    "linear1cycle": 0.1 -> 1 -> 0.1 over all steps. "fixed": 1.
    """
    if schedule == "fixed":
        return 1.0
    if schedule == "linear1cycle":
        return (9 * (1 - abs(step / steps - 0.5) * 2) + 1) / 10
    if schedule == "linear1cycledrop":
        peak_end = 0.9 * steps
        if step < peak_end:
            return (9 * (1 - abs(step / peak_end - 0.5) * 2) + 1) / 10
        return 0.1 + (step - peak_end) / (0.1 * steps) * (0.001 - 0.1)
    raise ValueError(f"unknown schedule {schedule!r}")


def project_l1_ball(v: torch.Tensor, radius: float | torch.Tensor, center: torch.Tensor | None = None) -> torch.Tensor:
    """Euclidean projection of each last-dim vector of v onto {x : ||x - center||_1 <= radius}.

    Exact sort-based algorithm (Duchi et al., ICML 2008): soft-threshold |v - c| by the theta that makes
    the L1 norm equal the radius; vectors already inside are returned unchanged. Shapes (..., d).
    """
    c = torch.zeros_like(v) if center is None else center.expand_as(v)
    d = v - c
    a = d.abs()
    r = torch.as_tensor(radius, dtype=v.dtype, device=v.device)
    inside = a.sum(-1, keepdim=True) <= r
    mu, _ = torch.sort(a, dim=-1, descending=True)
    css = mu.cumsum(-1)
    j = torch.arange(1, v.shape[-1] + 1, dtype=v.dtype, device=v.device)
    cond = mu - (css - r) / j > 0
    # cond holds on a prefix of the sorted entries; rho = index of its last element (>= 0 for radius > 0)
    rho = (cond.sum(-1, keepdim=True) - 1).clamp_min(0)
    theta = (css.gather(-1, rho) - r) / (rho + 1).to(v.dtype)
    proj = torch.sign(d) * (a - theta).clamp_min(0)
    return torch.where(inside, v, c + proj)


# ---------------------------------------------------------------------------------------------- RLS


@torch.no_grad()
def mean_w(G: Generator, n: int, generator: torch.Generator) -> torch.Tensor:
    """Mean of ``n`` mapping-network samples (w_dim,) (the paper's RLS initialisation, n = 100,000)."""
    total = torch.zeros(G.w_dim, dtype=torch.float64)  # on the CPU: Apple GPUs have no float64
    done = 0
    while done < n:
        m = min(8192, n - done)
        total += G.sample_w(m, generator).to("cpu", torch.float64).sum(0)
        done += m
    return (total / max(n, 1)).to(G.mapping.w_avg.device, latent_dtype(G))


@torch.no_grad()
def w_spread(G: Generator, n: int = 8192, seed: int = 0) -> float:
    """Mean over the w_dim dimensions of W's standard deviation, from ``n`` mapping samples drawn with ``seed``."""
    w = G.sample_w(n, torch.Generator().manual_seed(int(seed))).to("cpu", torch.float64)  # no float64 on MPS
    return float(w.std(0).mean())


def search_lr(G: Generator, cfg: RLSConfig) -> float:
    """RLS's peak learning rate: ``cfg.lr``, or for ``lr=None`` ``LR_SPREAD * w_spread(G)`` (module docstring)."""
    return float(cfg.lr) if cfg.lr is not None else LR_SPREAD * w_spread(G)


@dataclass
class RLSResult:
    """Best step of an RLS search: image (B, 3, R, R) in [0, 1], latents (B, L, d), per-step history."""

    image: torch.Tensor
    latents: torch.Tensor
    best_step: torch.Tensor  # (B,) step index of the kept latent
    best_loss: torch.Tensor  # (B,)
    history: dict[str, list[float]] = field(default_factory=dict)


def rls_search(
    G: Generator,
    target: torch.Tensor,
    flow: MAF | None,
    degrade_fn: Callable[[torch.Tensor], torch.Tensor],
    cfg: RLSConfig = PRESETS["default"],
    *,
    w_init: torch.Tensor | None = None,
    seed: int = 0,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    identity: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> RLSResult:
    """RLS on targets (B, 3, h, w) in [0, 1]; ``degrade_fn`` maps G's images (B, 3, R, R) to the targets' size.

    w_init: start latent, (d,) for every face or (B, d) one per face (e.g. a W encoder's guesses), repeated over
    the W+ rows; default the mean of ``cfg.n_mean`` W samples drawn with ``seed`` (the paper's start).
    flow: the MAF prior (eval mode), or None to drop the flow terms. Generator weights are untouched.
    identity: an extra per-sample loss ``identity(G(w)) -> (B,)`` (e.g. ``ReferenceIdentity.term``) added to the
    total, which also chooses the kept step; None: the paper's loss.
    A bf16 generator runs in bf16; the latents, Adam's state, the losses and the image stay float32.
    """
    dev, dtype = G.mapping.w_avg.device, latent_dtype(G)
    b = target.shape[0]
    target = target.to(device=dev, dtype=dtype)
    if w_init is None:
        w_init = mean_w(G, cfg.n_mean, torch.Generator().manual_seed(int(seed)))
    w_init = w_init.to(device=dev, dtype=dtype).reshape(-1, 1, G.w_dim)
    if w_init.shape[0] not in (1, b):
        raise ValueError(f"w_init holds {w_init.shape[0]} latents for {b} faces")
    ws = w_init.expand(b, G.num_ws, -1).clone().requires_grad_(True)
    lr = search_lr(G, cfg)
    opt = torch.optim.Adam([ws], lr=lr)
    best_loss = torch.full((b,), float("inf"), dtype=dtype, device=dev)
    best_ws = ws.detach().clone()
    best_img = torch.zeros(b, 3, G.img_resolution, G.img_resolution, dtype=dtype, device=dev)
    best_step = torch.zeros(b, dtype=torch.int64, device=dev)
    hist: dict[str, list[float]] = {}
    requires = [p.requires_grad for p in G.parameters()]
    G.requires_grad_(False)
    if flow is not None:
        flow.eval().requires_grad_(False)
    try:
        with torch.enable_grad():
            # as PULSE and the RLS code: each step scores the current latents, then updates them; the last update
            # is never scored (so ``steps`` evaluations, ``steps - 1`` of them after an update: steps=1 returns
            # the start)
            for step in range(cfg.steps):
                for group in opt.param_groups:
                    group["lr"] = lr * one_cycle_factor(step, cfg.steps, cfg.schedule)
                img = render_unit(G, ws)
                total, terms = rls_loss(degrade_fn(img), target, ws, flow, cfg)
                if identity is not None:
                    terms["identity"] = identity(img)
                    total = total + terms["identity"]
                with torch.no_grad():
                    better = total < best_loss
                    best_loss = torch.where(better, total.detach(), best_loss)
                    best_ws[better] = ws.detach()[better]
                    best_img[better] = img.detach()[better]
                    best_step[better] = step
                    values = {k: float(v.detach().mean()) for k, v in terms.items()}
                    values["total"] = float(total.detach().mean())
                    for k, v in values.items():
                        hist.setdefault(k, []).append(v)
                    if callback is not None:
                        callback(step, values)
                if not torch.isfinite(total).any():  # every face diverged: nothing left to find (the code's stop)
                    break
                opt.zero_grad(set_to_none=True)
                total.sum().backward()
                opt.step()
    finally:
        for p, r in zip(G.parameters(), requires):
            p.requires_grad_(r)
    if not bool(torch.isfinite(best_loss).all()):  # no step gave this face a finite loss: no image to return
        from facerestore.errors import FaceRestoreError

        bad = [int(i) for i in torch.nonzero(~torch.isfinite(best_loss)).flatten()]
        raise FaceRestoreError(f"RLS: the latent search found no finite loss for face(s) {bad} (a NaN or infinite "
                               "input pixel, or a diverging learning rate)")
    return RLSResult(best_img.clamp(0, 1), best_ws, best_step, best_loss, hist)


# --------------------------------------------------------------------------------------------- RLS+


@dataclass
class RLSPlusResult:
    """RLS+ output for one batch: image (B, 3, R, R) in [0, 1], latents (B, L, d), tuned noise maps and
    synthesis state dicts per sample, per-sample fidelity history and the step kept."""

    image: torch.Tensor
    latents: torch.Tensor
    noises: list[list[torch.Tensor]]
    synthesis_states: list[dict[str, torch.Tensor]]
    best_step: list[int]
    history: list[list[float]]


def _renorm(noises: Sequence[torch.Tensor]) -> None:
    with torch.no_grad():
        for n in noises:
            n.sub_(n.mean()).div_(n.std(unbiased=False).clamp_min(1e-8))


def rls_plus(
    G: Generator,
    target: torch.Tensor,
    anchor: torch.Tensor,
    degrade_fn: Callable[[torch.Tensor], torch.Tensor],
    cfg: RLSConfig = PRESETS["default"],
    *,
    keep_states: bool = False,
    callback: Callable[[int, int, float], None] | None = None,
    identity: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> RLSPlusResult:
    """RLS+ refinement of RLS anchors (B, L, d) for targets (B, 3, h, w); each sample tunes its own G copy.

    ``keep_states``: return each tuned synthesis state dict (memory heavy at 1024 px). ``G`` is unchanged.
    ``identity``: an extra loss ``identity(image (1, 3, R, R)) -> (1,)`` added to the fidelity (the history, the
    early stopping and the kept step then follow the sum); None: the paper's.
    """
    dev, dtype = G.mapping.w_avg.device, G.mapping.w_avg.dtype
    radius = float(cfg.radius) if cfg.radius is not None else math.sqrt(G.w_dim)
    lr_latent = cfg.plus_lr_latent
    if lr_latent is None:  # the geometry's rate: a row can travel three radii in L1 norm over the run
        lr_latent = 3.0 / (math.sqrt(G.w_dim) * max(cfg.plus_steps, 1))
    images, lats, all_noises, states, best_steps, histories = [], [], [], [], [], []
    for i in range(target.shape[0]):
        y = target[i : i + 1].to(device=dev, dtype=dtype)
        a = anchor[i : i + 1].to(device=dev, dtype=dtype).detach()
        syn = copy.deepcopy(G.synthesis).train(False)
        syn.requires_grad_(True)
        const = syn.const_noises()
        n_train = min(cfg.noise_layers, len(const))
        noises = [n.to(device=dev, dtype=dtype).requires_grad_(j < n_train) for j, n in enumerate(const)]
        ws = a.clone().requires_grad_(True)
        groups = [{"params": [ws], "lr": lr_latent},
                  {"params": list(syn.parameters()), "lr": cfg.plus_lr_weights}]
        if n_train:
            groups.append({"params": noises[:n_train], "lr": cfg.plus_lr_noise})
        opt = torch.optim.Adam(groups)
        best = (float("inf"), -1, None, None, None, None)
        hist: list[float] = []
        since = 0
        with torch.enable_grad():
            for step in range(cfg.plus_steps + 1):
                img = to_unit_range(syn(ws, noise_mode="const", noises=noises))
                loss = fidelity_term(degrade_fn(img), y, cfg.l1_weight, cfg.l1_reduction).sum()
                if identity is not None:
                    loss = loss + identity(img).sum()
                value = float(loss.detach())
                hist.append(value)
                if callback is not None:
                    callback(i, step, value)
                if value < best[0]:
                    state = {k: v.detach().clone() for k, v in syn.state_dict().items()} if keep_states else None
                    best = (value, step, img.detach(), ws.detach().clone(), [n.detach().clone() for n in noises], state)
                    since = 0
                else:
                    since += 1
                if step == cfg.plus_steps or since >= cfg.patience:
                    break  # the last render is only evaluated (the loop evaluates before stepping)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if n_train:
                    _renorm(noises[:n_train])
                with torch.no_grad():
                    ws.copy_(project_l1_ball(ws, radius, a))
        if best[2] is None:
            from facerestore.errors import FaceRestoreError

            raise FaceRestoreError(f"RLS+: fine-tuning found no finite loss for face {i}")
        images.append(best[2])
        lats.append(best[3])
        all_noises.append(best[4])
        states.append(best[5] if keep_states else {})
        best_steps.append(best[1])
        histories.append(hist)
    return RLSPlusResult(torch.cat(images).clamp(0, 1), torch.cat(lats), all_noises, states, best_steps, histories)


def config(preset: str = "default", **overrides) -> RLSConfig:
    """A preset ("default", "paper" or "code"; see the module docstring) with field overrides."""
    from facerestore.errors import InputError

    if preset not in PRESETS:
        raise InputError(f"unknown RLS preset {preset!r}; choose from {', '.join(PRESETS)}")
    known = {f.name for f in fields(RLSConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise InputError(f"unknown RLS setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    cfg = replace(PRESETS[preset], **overrides)
    if int(cfg.steps) < 1 or int(cfg.n_mean) < 1 or int(cfg.plus_steps) < 0:
        raise InputError(f"RLS needs steps >= 1, n_mean >= 1 and plus_steps >= 0; got {cfg.steps}, {cfg.n_mean} and "
                         f"{cfg.plus_steps}")
    return cfg
