"""Masked autoregressive flow (MAF, Papamakarios et al. 2017): the W-space prior of RLS (paper 004).

Architecture as in the RLS code: ``num_blocks`` (5) x [MADE(dim, hidden 1024, ReLU), batch-norm flow,
reverse permutation], applied to W standardised per dimension (mean / std stored as buffers).

Direction: ``forward`` maps data to the base space in one pass, ``w -> u = F(w)`` with
``u ~ N(0, I)`` for data from the modelled distribution, and returns ``log|det dF/dw|``. Each MADE
computes ``u_i = (x_i - mu_i(x_<i)) * exp(-alpha_i(x_<i))`` in its input order (the reverse layers
alternate the order between blocks); ``inverse`` needs one MADE pass per dimension.

``log_prob(w)`` is the density of w itself: it includes the standardisation Jacobian ``-sum(log std)``.
(The RLS code evaluates the flow on already-standardised w, i.e. without that constant; gradients are
the same.) Batch-norm layers use batch statistics in ``train()`` mode and running statistics in
``eval()`` mode; ``calibrate`` sets the running statistics to the exact statistics of a sample, as the
MAF paper does after training. ``train_flow`` fits a flow to samples from any ``sample_fn``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MADE",
    "MAF",
    "BatchNormFlow",
    "MaskedLinear",
    "Reverse",
    "load_flow",
    "made_masks",
    "read_flow_checkpoint",
    "save_flow",
    "train_flow",
]

_LOG_2PI = math.log(2.0 * math.pi)


def made_masks(dim: int, hidden: int, num_hidden_layers: int = 2) -> list[torch.Tensor]:
    """Binary masks (out, in) of a MADE with ``num_hidden_layers`` hidden layers and 2*dim outputs.

    Input i has degree i+1 (1..dim); hidden units cycle through degrees 1..dim-1; a hidden unit of degree
    m sees inputs of degree <= m; the two outputs of dimension j (mu_j, alpha_j) see hidden units of
    degree < j+1. So output j depends only on inputs 0..j-1 (autoregressive).
    """
    in_deg = torch.arange(1, dim + 1)
    if dim > 1:
        hid_deg = torch.arange(hidden) % (dim - 1) + 1
    else:
        hid_deg = torch.zeros(hidden, dtype=torch.long)
    masks = [(hid_deg[:, None] >= in_deg[None]).float()]
    masks += [(hid_deg[:, None] >= hid_deg[None]).float() for _ in range(num_hidden_layers - 1)]
    out_deg = in_deg.repeat(2)
    masks.append((out_deg[:, None] > hid_deg[None]).float())
    return masks


class MaskedLinear(nn.Linear):
    """Linear layer whose weight is multiplied by a fixed binary mask (out, in)."""

    def __init__(self, mask: torch.Tensor, bias: bool = True):
        super().__init__(mask.shape[1], mask.shape[0], bias=bias)
        self.register_buffer("mask", mask.clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Gaussian MADE as one autoregressive affine flow layer (density direction).

    forward: x (N, dim) -> (u, logdet) with u = (x - mu(x)) * exp(-alpha(x)), logdet = -sum(alpha).
    """

    def __init__(self, dim: int, hidden: int = 1024, num_hidden_layers: int = 2, activation: str = "relu"):
        super().__init__()
        self.dim = dim
        acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}
        if activation not in acts:
            raise ValueError(f"activation must be one of {sorted(acts)}, got {activation!r}")
        layers: list[nn.Module] = []
        masks = made_masks(dim, hidden, num_hidden_layers)
        for i, m in enumerate(masks):
            layers.append(MaskedLinear(m))
            if i < len(masks) - 1:
                layers.append(acts[activation]())
        self.net = nn.Sequential(*layers)

    def params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, alpha), each (N, dim); entry j depends on x[:, :j] only."""
        h = self.net(x)
        return h[..., : self.dim], h[..., self.dim :]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, alpha = self.params(x)
        return (x - mu) * torch.exp(-alpha), -alpha.sum(-1)

    def inverse(self, u: torch.Tensor) -> torch.Tensor:
        # After pass k the first k coordinates are exact (they depend only on earlier ones).
        x = torch.zeros_like(u)
        for _ in range(self.dim):
            mu, alpha = self.params(x)
            x = u * torch.exp(alpha) + mu
        return x


class BatchNormFlow(nn.Module):
    """Invertible batch normalisation: y = (x - mean) / sqrt(var + eps) * exp(log_gamma) + beta.

    train(): batch statistics (biased variance), running stats updated with ``momentum``;
    eval() and ``inverse``: running statistics.
    """

    def __init__(self, dim: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum = momentum
        self.eps = eps
        self.log_gamma = nn.Parameter(torch.zeros(dim))
        self.beta = nn.Parameter(torch.zeros(dim))
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training:
            mean = x.mean(0)
            var = x.var(0, unbiased=False)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach(), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        log_std = 0.5 * torch.log(var + self.eps)
        y = (x - mean) * torch.exp(self.log_gamma - log_std) + self.beta
        logdet = (self.log_gamma - log_std).sum().expand(x.shape[0])
        return y, logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        log_std = 0.5 * torch.log(self.running_var + self.eps)
        return (y - self.beta) * torch.exp(log_std - self.log_gamma) + self.running_mean


class Reverse(nn.Module):
    """Reverse the order of the last dimension (volume preserving)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.flip(-1), x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y.flip(-1)


class MAF(nn.Module):
    """Masked autoregressive flow on standardised inputs; inputs (..., dim), any leading dims.

    config: dim, num_blocks (5), hidden (1024), num_hidden_layers (2 hidden layers per MADE),
    activation ('relu'), batch_norm (True), bn_momentum. ``generator`` seeds the initialisation
    (orthogonal weights, zero biases, as the pytorch-flows code used by RLS).
    """

    def __init__(
        self,
        dim: int = 512,
        num_blocks: int = 5,
        hidden: int = 1024,
        num_hidden_layers: int = 2,
        activation: str = "relu",
        batch_norm: bool = True,
        bn_momentum: float = 0.1,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.config = {
            "dim": dim,
            "num_blocks": num_blocks,
            "hidden": hidden,
            "num_hidden_layers": num_hidden_layers,
            "activation": activation,
            "batch_norm": batch_norm,
            "bn_momentum": bn_momentum,
        }
        self.dim = dim
        layers: list[nn.Module] = []
        for _ in range(num_blocks):
            layers.append(MADE(dim, hidden, num_hidden_layers, activation))
            if batch_norm:
                layers.append(BatchNormFlow(dim, momentum=bn_momentum))
            layers.append(Reverse())
        self.layers = nn.ModuleList(layers)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        for m in self.modules():
            if isinstance(m, MaskedLinear):
                nn.init.orthogonal_(m.weight, generator=generator)
                nn.init.zeros_(m.bias)

    # -- standardisation -----------------------------------------------------------------------------

    @torch.no_grad()
    def fit_standardization(self, w: torch.Tensor, min_std: float = 1e-6) -> None:
        """Store per-dimension mean and std (biased) of samples w (N, dim)."""
        w = w.reshape(-1, self.dim).to(self.mean.dtype)
        self.mean.copy_(w.mean(0))
        self.std.copy_(w.std(0, unbiased=False).clamp_min(min_std))

    # -- transforms ----------------------------------------------------------------------------------

    def forward(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """w (..., dim) -> (u (..., dim), log|det du/dw| (...)), standardisation included."""
        lead = w.shape[:-1]
        x = (w.reshape(-1, self.dim) - self.mean) / self.std
        logdet = -torch.log(self.std).sum().expand(x.shape[0])
        for layer in self.layers:
            x, ld = layer(x)
            logdet = logdet + ld
        return x.reshape(*lead, self.dim), logdet.reshape(lead)

    def inverse(self, u: torch.Tensor) -> torch.Tensor:
        """u (..., dim) -> w (..., dim), using running batch-norm statistics."""
        lead = u.shape[:-1]
        x = u.reshape(-1, self.dim)
        for layer in reversed(self.layers):
            x = layer.inverse(x)
        return (x * self.std + self.mean).reshape(*lead, self.dim)

    def log_prob(self, w: torch.Tensor) -> torch.Tensor:
        """log p(w) in nats (..., ): standard-normal base density of F(w) plus log|det|."""
        u, logdet = self.forward(w)
        return -0.5 * u.square().sum(-1) - 0.5 * self.dim * _LOG_2PI + logdet

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` samples (n, dim) drawn through the inverse flow (slow: dim MADE passes per block)."""
        u = torch.randn((n, self.dim), generator=generator, device=generator.device)
        return self.inverse(u.to(device=self.mean.device, dtype=self.mean.dtype))

    @torch.no_grad()
    def calibrate(self, w: torch.Tensor) -> None:
        """Set every batch-norm layer's running statistics to the exact statistics of samples w (N, dim).

        Afterwards ``eval()`` outputs on w equal ``train()`` outputs on the full batch w.
        """
        x = (w.reshape(-1, self.dim).to(self.mean.dtype) - self.mean) / self.std
        for layer in self.layers:
            if isinstance(layer, BatchNormFlow):
                layer.running_mean.copy_(x.mean(0))
                layer.running_var.copy_(x.var(0, unbiased=False))
                was_training = layer.training
                layer.eval()
                x, _ = layer(x)
                layer.train(was_training)
            else:
                x, _ = layer(x)


def train_flow(
    sample_fn: Callable[[int, torch.Generator], torch.Tensor],
    steps: int,
    batch: int,
    lr: float,
    generator: torch.Generator,
    *,
    flow: MAF | None = None,
    num_blocks: int = 5,
    hidden: int = 1024,
    num_hidden_layers: int = 2,
    n_stats: int = 10000,
    n_calibrate: int = 10000,
    weight_decay: float = 1e-6,
    cosine_decay: bool = True,
    callback: Callable[[int, float], None] | None = None,
    checkpoint: str | os.PathLike | None = None,
    save_every: int = 1000,
    settings: dict[str, Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> MAF:
    """Fit a MAF by maximum likelihood to samples from ``sample_fn(n, generator) -> (n, dim)``.

    Standardisation statistics come from ``n_stats`` samples; then ``steps`` Adam steps of size ``lr`` on
    fresh batches of ``batch`` samples minimise the mean negative log-likelihood (learning rate decayed to
    zero on a cosine unless ``cosine_decay=False``); finally batch-norm
    running statistics are calibrated on ``n_calibrate`` samples and the flow is returned in eval mode.
    All randomness (init and samples) comes from ``generator``. ``callback(step, nll)`` sees each loss
    (nats per sample). Typical use: ``sample_fn = lambda n, g: G.sample_w(n, g)`` for a StyleGAN2 G.

    checkpoint: a file written atomically every ``save_every`` steps, when ``should_stop()`` turns true after a
    step (a signal), and at the end: the flow, Adam's state, the sampling generator's state, the step, the training
    seconds so far (``"seconds"``) and the settings. When it exists, training resumes from it and equals a run
    that never stopped; a checkpoint made with other settings (these arguments, plus the caller's ``settings``,
    e.g. the seed and the generator's hash) is refused with an InputError. A stopped run still returns a
    calibrated flow (usable weights for the steps done).
    """
    import time

    if steps < 0 or batch < 2:
        raise ValueError("train_flow needs steps >= 0 and batch >= 2 (batch norm uses batch statistics)")
    started = time.monotonic()
    stats = sample_fn(n_stats, generator).detach()
    dim = stats.shape[-1]
    if flow is None:
        flow = MAF(dim, num_blocks, hidden, num_hidden_layers, generator=generator)
    flow = flow.to(device=stats.device, dtype=stats.dtype)
    flow.fit_standardization(stats)
    opt = torch.optim.Adam(flow.parameters(), lr=lr, weight_decay=weight_decay)
    # what Adam's state and the draws depend on (the run length is not: a resumed run may ask for more steps)
    run_settings = {"lr": float(lr), "batch": int(batch), "config": dict(flow.config), "n_stats": int(n_stats),
                    "weight_decay": float(weight_decay), "cosine_decay": bool(cosine_decay), **(settings or {})}
    start, seconds_before, last_nll = 0, 0.0, None
    if checkpoint is not None and os.path.isfile(checkpoint):
        start, seconds_before, last_nll = _resume_flow(checkpoint, flow, opt, generator, run_settings, steps)

    def save(step: int) -> None:
        if checkpoint is not None:
            import io

            from facerestore.io import atomic_write_bytes

            buf = io.BytesIO()
            torch.save({"flow": flow.state_dict(), "optimizer": opt.state_dict(), "rng": generator.get_state(),
                        "step": step, "seconds": seconds_before + time.monotonic() - started,
                        "settings": run_settings, "scheduled_steps": int(steps), "nll": last_nll}, buf)
            atomic_write_bytes(checkpoint, buf.getbuffer())

    flow.train()
    step = start
    while step < steps:
        if cosine_decay:
            for group in opt.param_groups:
                group["lr"] = 0.5 * lr * (1.0 + math.cos(math.pi * step / steps))
        w = sample_fn(batch, generator).detach().to(device=stats.device, dtype=stats.dtype)
        loss = -flow.log_prob(w).mean()
        if not torch.isfinite(loss):  # before the weights or a checkpoint take it in
            from facerestore.errors import TrainingError

            raise TrainingError(f"train_flow: non-finite loss at step {step}; try a smaller learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        last_nll = float(loss.detach())
        if callback is not None:
            callback(step - 1, last_nll)
        if should_stop is not None and should_stop():
            break
        if save_every and step % int(save_every) == 0 and step < steps:
            save(step)
    save(step)  # before calibration draws: a resumed run continues the training draws exactly
    flow.calibrate(sample_fn(n_calibrate, generator).detach().to(device=stats.device, dtype=stats.dtype))
    return flow.eval()


def read_flow_checkpoint(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """What a :func:`train_flow` checkpoint says of its run: ``step`` reached, ``steps`` planned, training
    ``seconds`` (all chunks together) and the last step's ``nll`` (None before any step); {} without a file."""
    if not os.path.isfile(checkpoint):
        return {}
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return {"step": int(state["step"]), "steps": state.get("scheduled_steps"), "seconds": float(state["seconds"]),
            "nll": state.get("nll")}


def _resume_flow(checkpoint: str | os.PathLike, flow: MAF, opt: torch.optim.Optimizer, generator: torch.Generator,
                 settings: dict[str, Any], steps: int) -> tuple[int, float, float | None]:
    """Load ``checkpoint`` into the flow, Adam and the generator; (its step, its training seconds, its last step's
    nll). One-line InputError for an unreadable file, other settings or a step past ``steps``; a warning when the
    run was planned for another number of steps (the cosine learning rate jumps to the new schedule)."""
    import pickle

    from facerestore.errors import InputError

    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        saved = dict(state["settings"])
    except (RuntimeError, EOFError, ValueError, KeyError, TypeError, pickle.UnpicklingError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{checkpoint} is not a flow checkpoint ({first}); delete it to start over") from None
    changed = [f"{k}: {saved.get(k)!r} -> {settings.get(k)!r}" for k in sorted(set(saved) | set(settings))
               if saved.get(k) != settings.get(k)]
    if changed:
        raise InputError(f"{checkpoint}: the flow's training settings changed since its checkpoint "
                         f"({'; '.join(changed)}); restore them, or delete the checkpoint to start over")
    if int(state["step"]) > int(steps):
        raise InputError(f"{checkpoint} is at step {int(state['step'])}, past the {int(steps)} steps asked; ask for "
                         f"at least {int(state['step'])}")
    planned = state.get("scheduled_steps")
    if planned is not None and int(planned) != int(steps) and int(state["step"]) < int(steps):
        import warnings

        warnings.warn(f"{checkpoint}: resumed at step {int(state['step'])} of a run planned for {int(planned)} steps, "
                      f"now {int(steps)}: the cosine learning rate jumps to that schedule", stacklevel=3)
    flow.load_state_dict(state["flow"])
    opt.load_state_dict(state["optimizer"])
    generator.set_state(state["rng"])
    return int(state["step"]), float(state.get("seconds", 0.0)), state.get("nll")


def save_flow(flow: MAF, path: str | os.PathLike, half: bool = False) -> None:
    """Write a MAF to a safetensors file (weights + JSON config in the metadata); ``half`` stores floats
    as float16 (``load_flow`` computes in float32 whatever the stored precision)."""
    from facerestore.io import atomic_write_safetensors

    sd = {k: v.half() if half and v.is_floating_point() else v for k, v in flow.state_dict().items()}
    atomic_write_safetensors(path, sd, {"format": "facerestore-maf", "config": json.dumps(flow.config)})


# sane bounds for a flow file's architecture (a crafted dim/hidden must not allocate gigabytes)
FLOW_BOUNDS = {
    "dim": ("int", 1, 4096),
    "num_blocks": ("int", 1, 64),
    "hidden": ("int", 1, 8192),
    "num_hidden_layers": ("int", 1, 16),
    "activation": ("choice", ("relu", "tanh", "elu")),
    "batch_norm": ("bool",),
    "bn_momentum": ("float", 0.0, 1.0),
}


def load_flow(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> MAF:
    """Read a MAF written by ``save_flow`` (eval mode).

    The header is read first: the architecture in its metadata is checked against ``FLOW_BOUNDS`` and the
    shapes it implies (computed on the meta device) against the file's tensors before anything is built.
    """
    from facerestore.nn.safe_weights import check_shapes, load_safetensors, meta_shapes, read_settings

    where = os.fspath(path)
    config, shapes = read_settings(path, "facerestore-maf", FLOW_BOUNDS, "flow")
    check_shapes(meta_shapes(lambda: MAF(**config), where), shapes, where)
    flow = MAF(**config)
    flow.load_state_dict(load_safetensors(path, "flow"), strict=True)
    return flow.to(map_location).eval()
