"""Algorithm 1 of paper 001: the architecture search of FRSNet / MFPSNet.

The training images (sorted by path, the validation rule of ``data.val_rule`` applied first) are split into
halves D_A (even positions) and D_B (odd positions). Every step:

1. a batch of D_A updates the network weights w (SGD, momentum 0.9, weight decay 3e-4, cosine learning rate
   0.025 -> 0.001 over the run);
2. from epoch ``arch_start_epoch`` on (10 in the paper), a batch of D_B updates the architecture parameters
   alpha, beta (Adam, lr 1e-4, weight decay 1e-3 as in the paper) with w fixed: the first-order
   approximation.

Batches (eq. 7-8, degradation disentanglement): each HQ face yields one fully degraded input (eq. 10,
degradation task ``mfpsnet-full``) and singly degraded ones (``mfpsnet-blur``, ``-down``, ``-noise``,
``-jpeg``: all four with ``singles: all``, one drawn at random with ``singles: one``); the joint batch is
trained against the repeated HQ targets. ``disentangle: false`` keeps only the full degradation (the w/o-Dis
ablation). The loss is eq. 9 on every iteration output (:mod:`~facerestore.methods.mfpsnet.losses`).

Exact resume: the data order and every degradation are functions of (seed, step) (``train.data``), and a
checkpoint (``checkpoints/last.pt``, written atomically every ``ckpt_every`` steps and at the end) holds the
network, both optimisers, the step and the architecture history, so a resumed search equals one that never
stopped. Outputs in the run folder: ``genotype.json`` (the decoded architecture; for an FRSNet search the
upsampling module only, for MFPSNet every module), ``arch_history.json`` (softmax weights at the end of each
epoch), ``arch_<module>.png`` (those weights over epochs as a heat map: rows are epochs, first the 9 x 4
operation weights, then the L x 4 x 3 arrow weights, white = 1) and ``search.json`` (the configuration).
``genotype.json`` records the search under ``"search"``: finished, step, total_steps, architecture_steps and
train_hours (every chunk's time added up). SIGINT / SIGTERM end the current step, save the checkpoint and the
genotype of the steps done, then raise :class:`~facerestore.errors.Interrupted`.

MFPSNet search and priors: the prior modules are searched on the priors of the first iteration's output, as
in retraining and inference. ``priors: extractor`` (the default) computes them with
:class:`~facerestore.methods.mfpsnet.priors.PriorExtractor` (dlib landmarks -> heatmaps, Face Mesh or landmark
polygons -> parsing maps, and the component dictionary file ``dictionary`` when given, else no dictionary prior);
``priors: zeros`` feeds empty priors (the prior modules are then searched on no information: only for timing or
tests). ``run_search(prior_fn=...)`` overrides both.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facerestore.errors import InputError

__all__ = ["SINGLE_TASKS", "SearchConfig", "disentangled_batch", "load_search_config", "run_search",
           "single_degradations"]

FULL_TASK = "mfpsnet-full"
SINGLE_TASKS = ("mfpsnet-blur", "mfpsnet-down", "mfpsnet-noise", "mfpsnet-jpeg")


@dataclass
class SearchConfig:
    """One search run (YAML keys = field names; unknown keys are an error)."""

    name: str = "mfpsnet-search"
    output_dir: str = "runs"
    network: str = "frsnet"  # "frsnet" (upsampling module) or "mfpsnet" (all five modules)
    roots: list[str] = field(default_factory=list)
    val_rule: str = "ends-with-0"  # held-out images never enter D_A / D_B
    exclude_held_out: bool = True  # as DataConfig: numeric names ending in 0 never train, whatever the rule
    max_images: int = 0  # 0 = all
    size: int = 128
    batch_size: int = 4
    epochs: int = 50
    arch_start_epoch: int = 10
    disentangle: bool = True
    singles: str = "all"  # "all" or "one"
    full_task: str = FULL_TASK
    model: dict[str, Any] = field(default_factory=dict)  # SearchFRSNet / SearchMFPSNet options
    init_scale: float = 1.0  # alpha, beta ~ init_scale * N(0, 1) (paper: standard Gaussian; code: 1e-3)
    w_lr: float = 0.025
    w_lr_min: float = 0.001
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    arch_lr: float = 1e-4
    arch_weight_decay: float = 1e-3
    grad_clip: float = 5.0
    perceptual: str = "auto"
    perceptual_weight: float = 0.001
    priors: str = "extractor"  # "extractor" (real priors, see the module docstring) or "zeros"
    dictionary: str = ""  # component dictionary .safetensors for the dictionary prior ("" = no dictionary prior)
    rule: str = "non-skip"
    seed: int = 0
    device: str = "cpu"
    ckpt_every: int = 50
    time_limit_s: float = 0.0
    progress: bool = True

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


# search settings a resumed search may change: how it runs, not what it searches
RESUMABLE_SEARCH_KEYS = frozenset({"rule", "progress", "time_limit_s", "ckpt_every", "device", "output_dir"})


def _check(cfg: SearchConfig) -> SearchConfig:
    from facerestore.methods.mfpsnet.decode import RULES
    from facerestore.methods.mfpsnet.losses import PERCEPTUAL_CHOICES

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise InputError(f"search config: {what}")

    need(cfg.network in ("frsnet", "mfpsnet"), f"network must be frsnet or mfpsnet, got {cfg.network!r}")
    need(cfg.size >= 64 and cfg.size % 64 == 0 and cfg.size <= 1024, f"size must be a multiple of 64, got {cfg.size}")
    need(1 <= cfg.batch_size <= 4096, f"batch_size out of range: {cfg.batch_size}")
    need(0 <= cfg.epochs <= 100000 and 0 <= cfg.arch_start_epoch, "epochs / arch_start_epoch out of range")
    need(cfg.epochs == 0 or cfg.arch_start_epoch < cfg.epochs,
         f"arch_start_epoch {cfg.arch_start_epoch} is not before the last of {cfg.epochs} epochs: the architecture "
         "would never be updated, and the genotype would be decoded from its random start")
    need(cfg.singles in ("all", "one"), f"singles must be all or one, got {cfg.singles!r}")
    need(cfg.perceptual in PERCEPTUAL_CHOICES, f"perceptual must be one of {', '.join(PERCEPTUAL_CHOICES)}")
    need(cfg.priors in ("extractor", "zeros"), f"priors must be extractor or zeros, got {cfg.priors!r}")
    need(not cfg.dictionary or Path(cfg.dictionary).is_file(), f"dictionary file not found: {cfg.dictionary}")
    need(cfg.rule in RULES, f"rule must be one of {', '.join(RULES)}")
    for key in ("w_lr", "w_lr_min", "arch_lr", "init_scale"):
        v = getattr(cfg, key)
        need(isinstance(v, (int, float)) and math.isfinite(v) and v > 0, f"{key} must be a positive number")
    need(cfg.ckpt_every >= 1 and cfg.max_images >= 0, "ckpt_every >= 1 and max_images >= 0")
    need(cfg.w_lr_min <= cfg.w_lr, f"w_lr_min ({cfg.w_lr_min}) must not exceed w_lr ({cfg.w_lr})")
    # a negative clip flips the gradients' sign (training runs uphill); 0 zeroes every update
    need(math.isfinite(cfg.grad_clip) and cfg.grad_clip > 0,
         f"grad_clip must be a positive number, got {cfg.grad_clip}")
    need(0 <= cfg.w_momentum < 1, f"w_momentum must be in [0, 1), got {cfg.w_momentum}")
    for key in ("w_weight_decay", "arch_weight_decay", "perceptual_weight", "time_limit_s"):
        v = getattr(cfg, key)
        need(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0, f"{key} must be a number >= 0, got {v}")
    return cfg


def _check_finite(loss: torch.Tensor, step: int, which: str) -> None:
    """A non-finite loss stops the search in one line before it reaches the weights (NaN architecture weights
    would decode silently to the first operation of every edge)."""
    if not torch.isfinite(loss):
        from facerestore.errors import TrainingError

        raise TrainingError(f"search: non-finite {which} loss at step {step}; lower w_lr / arch_lr (the last "
                            "checkpoint is intact)")


def load_search_config(path: str | Path, overrides: dict[str, Any] | None = None) -> SearchConfig:
    """Read a YAML search configuration (strict keys and types, one-line InputError)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(f"search config not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"search config {p.name} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise InputError(f"search config {p.name} must be a mapping")
    raw.update(overrides or {})
    return config_from_dict(raw, p.name)


def config_from_dict(raw: dict[str, Any], where: str = "search config") -> SearchConfig:
    fields = {f.name: f for f in dataclasses.fields(SearchConfig)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise InputError(f"{where}: unknown keys {unknown}")
    defaults = SearchConfig()
    values = {}
    for k, v in raw.items():
        d = getattr(defaults, k)
        if isinstance(d, bool):
            ok = isinstance(v, bool)
        elif isinstance(d, float):
            if isinstance(v, str):  # YAML 1.1 reads 1e-4 (no dot) as a string, in a file and in --set alike
                try:
                    v = float(v)
                except ValueError:
                    pass
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # "nan" parses too
            v = float(v) if ok else v
        elif isinstance(d, int):
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif isinstance(d, list):
            ok = isinstance(v, list) and all(isinstance(x, str) for x in v)
        elif isinstance(d, dict):
            ok = isinstance(v, dict)
        else:
            ok = isinstance(v, str)
        if not ok:
            raise InputError(f"{where}: {k} has the wrong type ({type(v).__name__}: {v!r}; expected "
                             f"{'a finite number' if isinstance(d, float) else type(d).__name__})")
        values[k] = v
    return _check(SearchConfig(**values))


# --------------------------------------------------------------------------------------------- data


def single_degradations(hq: torch.Tensor, generator: torch.Generator, singles: str = "all") -> list[torch.Tensor]:
    """The singly degraded copies of ``hq`` for eq. 8: one batch per single task (``singles="all"``), or one
    batch with a task drawn per image (``"one"``); each at the size its task returns."""
    from facerestore import degrade

    if singles == "all":
        return [degrade.apply(hq, task, generator=generator)[0] for task in SINGLE_TASKS]
    pick = torch.randint(len(SINGLE_TASKS), (hq.shape[0],), generator=generator).tolist()
    parts = [degrade.apply(hq[i:i + 1], SINGLE_TASKS[t], generator=generator)[0] for i, t in enumerate(pick)]
    side = hq.shape[-2:]
    return [torch.cat([_to_size(x, side) for x in parts])]


def _to_size(x: torch.Tensor, side: torch.Size | tuple[int, int]) -> torch.Tensor:
    """Bicubic resize back to ``side`` (the down-sampling task returns a smaller image)."""
    return x if x.shape[-2:] == side else torch.nn.functional.interpolate(
        x, size=side, mode="bicubic", align_corners=False)


def disentangled_batch(hq: torch.Tensor, generator: torch.Generator, *, disentangle: bool = True,
                       singles: str = "all", full_task: str = FULL_TASK) -> tuple[torch.Tensor, torch.Tensor]:
    """(lq, target) for eq. 8: the fully degraded batch, then (with ``disentangle``) the singly degraded ones
    (every single task, or one drawn per image), targets repeated to match."""
    from facerestore import degrade

    lqs = [degrade.apply(hq, full_task, generator=generator)[0]]
    if disentangle:
        lqs += single_degradations(hq, generator, singles)
    lq = torch.cat([_to_size(x, hq.shape[-2:]) for x in lqs]).clamp(0, 1)
    return lq, hq.repeat(len(lqs), 1, 1, 1)


def _image_halves(cfg: SearchConfig) -> tuple[torch.Tensor, torch.Tensor, int]:
    from facerestore.train.config import DataConfig
    from facerestore.train.data import load_images, split_files

    train, _ = split_files(DataConfig(roots=list(cfg.roots), size=cfg.size, val_rule=cfg.val_rule, val_count=0,
                                      exclude_held_out=cfg.exclude_held_out))
    if cfg.max_images:
        train = train[: cfg.max_images]
    if len(train) < 2 * cfg.batch_size:
        raise InputError(f"{len(train)} training images: D_A and D_B need at least {cfg.batch_size} each")
    images = load_images(train, cfg.size, progress=cfg.progress)
    return images[0::2], images[1::2], len(train)


# --------------------------------------------------------------------------------------------- search


def _build(cfg: SearchConfig) -> torch.nn.Module:
    from facerestore.methods.mfpsnet.search_space import SearchFRSNet, SearchMFPSNet

    cls = SearchMFPSNet if cfg.network == "mfpsnet" else SearchFRSNet
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    try:
        return cls(**cfg.model, init_scale=cfg.init_scale, generator=gen)
    except TypeError as exc:
        raise InputError(f"search config: bad model options ({exc})") from None


def _snapshot(net) -> dict[str, dict[str, list]]:
    from facerestore.methods.mfpsnet.decode import normalized_alphas, normalized_betas

    return {n: {"alphas": normalized_alphas(m.alphas.detach()).tolist(),
                "betas": normalized_betas(m.betas.detach()).tolist()} for n, m in net.super_modules().items()}


def plot_history(history: list[dict[str, Any]], out_dir: Path, cell: int = 8) -> list[Path]:
    """One PNG per module: row e = epoch e's softmax weights (alphas, then betas), white = 1 (PIL only)."""
    from PIL import Image

    paths = []
    if not history:
        return paths
    for name in history[0]["weights"]:
        rows = []
        for rec in history:
            w = rec["weights"][name]
            a, b = np.asarray(w["alphas"]).ravel(), np.asarray(w["betas"]).ravel()
            rows.append(np.concatenate([a, np.full(1, np.nan), b]))
        m = np.stack(rows)
        img = np.where(np.isnan(m), 0.5, np.clip(m, 0, 1))
        img = (np.kron(img, np.ones((cell, cell))) * 255).round().astype(np.uint8)
        p = out_dir / f"arch_{name}.png"
        Image.fromarray(img, mode="L").save(p)
        paths.append(p)
    return paths


def run_search(cfg: SearchConfig, *, prior_fn=None, resume: bool = True,
               max_steps: int | None = None) -> dict[str, Any]:
    """Run (or resume) the search of ``cfg``; returns a summary (genotype path, steps, seconds).

    ``max_steps`` stops after that global step (tests; the checkpoint then allows resuming)."""
    from tqdm import tqdm

    from facerestore.errors import Interrupted, deferred_interrupts
    from facerestore.methods.mfpsnet.genotype import save_genotype
    from facerestore.methods.mfpsnet.losses import RestorationLoss
    from facerestore.train.checkpoint import load_checkpoint, save_checkpoint, setting_changes
    from facerestore.train.data import StepSampler, step_seed

    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = run_dir / "checkpoints" / "last.pt"
    settings = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    saved = run_dir / "search.json"
    if resume and ckpt.is_file() and saved.is_file():
        # a resumed search must be the same search: its checkpoint holds the optimisers, schedule and data split of
        # those settings; only how it runs (rule, progress, time limit, checkpoint interval, device) may change
        before = json.loads(saved.read_text(encoding="utf-8"))
        changed = setting_changes(before, settings, resumable=RESUMABLE_SEARCH_KEYS)
        if changed:
            raise InputError(f"{run_dir} holds a search with other settings ({', '.join(changed)}): resume it with "
                             "its own config, start over with --fresh, or search into a new folder")
    if not resume and ckpt.is_file():  # --fresh: set the old search aside now, not at the first save
        ckpt.replace(ckpt.with_name("last-before-fresh.pt"))
    from facerestore.io import atomic_write_text

    atomic_write_text(saved, json.dumps(settings, indent=1) + "\n")
    device = torch.device(cfg.device)
    d_a, d_b, n_images = _image_halves(cfg)
    net = _build(cfg).to(device)
    loss_fn = RestorationLoss(cfg.perceptual, cfg.perceptual_weight).to(device)
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=cfg.w_lr, momentum=cfg.w_momentum,
                            weight_decay=cfg.w_weight_decay)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=cfg.arch_lr, betas=(0.5, 0.999),
                             weight_decay=cfg.arch_weight_decay)
    samp_a = StepSampler(len(d_a), cfg.batch_size, seed=cfg.seed)
    samp_b = StepSampler(len(d_b), cfg.batch_size, seed=cfg.seed + 1)
    per_epoch = samp_a.steps_per_epoch
    total = cfg.epochs * per_epoch
    step, history, seconds_before = 0, [], 0.0
    if resume and ckpt.is_file():
        state = load_checkpoint(ckpt, map_location=device)
        net.load_state_dict(state["net"])
        w_opt.load_state_dict(state["w_opt"])
        a_opt.load_state_dict(state["a_opt"])
        step, history = int(state["step"]), json.loads(state["history"])
        torch.set_rng_state(state["rng"].cpu())  # loaded onto the device above; the state lives on the CPU
        seconds_before = float(state.get("seconds", 0.0))

    def seconds() -> float:
        """Search seconds of every chunk so far."""
        return seconds_before + time.monotonic() - start

    def save() -> None:
        save_checkpoint(ckpt, {"net": net.state_dict(), "w_opt": w_opt.state_dict(), "a_opt": a_opt.state_dict(),
                               "step": step, "history": json.dumps(history), "rng": torch.get_rng_state(),
                               "seconds": seconds()})

    def batch(images: torch.Tensor, sampler: StepSampler, stream: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(step_seed(cfg.seed, step, 0, stream))
        hq = images[sampler.indices(step)].float().div(255.0)
        lq, target = disentangled_batch(hq, g, disentangle=cfg.disentangle, singles=cfg.singles,
                                        full_task=cfg.full_task)
        return lq.to(device), target.to(device)

    if cfg.network == "mfpsnet" and prior_fn is None and cfg.priors == "extractor":
        from facerestore.methods.mfpsnet.priors import PriorExtractor

        prior_fn = PriorExtractor(cfg.dictionary or None)

    def outputs(x: torch.Tensor) -> list[torch.Tensor]:
        if cfg.network == "mfpsnet":
            return net(x, prior_fn=prior_fn)
        return net(x)

    start, logs = time.monotonic(), {}
    stop = total if max_steps is None else min(total, max_steps)
    net.train()
    with (deferred_interrupts() as signalled,  # Ctrl-C / SIGTERM: the step ends, the checkpoint is saved, it stops
          tqdm(total=total, initial=step, desc=f"search {cfg.network}", unit="step", disable=not cfg.progress,
               dynamic_ncols=True) as bar):
        while step < stop:
            epoch = step // per_epoch
            lr = cfg.w_lr_min + 0.5 * (cfg.w_lr - cfg.w_lr_min) * (1 + math.cos(math.pi * step / max(total, 1)))
            for group in w_opt.param_groups:
                group["lr"] = lr
            lq, hq = batch(d_a, samp_a, 0)
            loss = loss_fn(outputs(lq), hq)
            _check_finite(loss, step, "weight")
            w_opt.zero_grad(set_to_none=True)
            a_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.weight_parameters(), cfg.grad_clip)
            w_opt.step()
            logs = {"w_loss": loss_fn.last["loss"]}
            if epoch >= cfg.arch_start_epoch:
                lq, hq = batch(d_b, samp_b, 1)
                a_loss = loss_fn(outputs(lq), hq)
                _check_finite(a_loss, step, "architecture")
                w_opt.zero_grad(set_to_none=True)
                a_opt.zero_grad(set_to_none=True)
                a_loss.backward()
                a_opt.step()
                logs["arch_loss"] = loss_fn.last["loss"]
            w_opt.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()}, refresh=False)
            if step % per_epoch == 0:
                history.append({"epoch": step // per_epoch, "step": step, **logs, "weights": _snapshot(net)})
            if step % cfg.ckpt_every == 0 or step == stop:
                save()
            if "signum" in signalled or (cfg.time_limit_s and time.monotonic() - start > cfg.time_limit_s):
                save()
                break
    genotype = net.genotype(cfg.rule)
    arch_steps = max(0, step - cfg.arch_start_epoch * per_epoch)  # architecture updates so far
    record = {"finished": step >= total, "step": step, "total_steps": total,
              # 0: stopped before the architecture phase: the genotype is the random start's decoding
              "architecture_steps": arch_steps, "train_hours": round(seconds() / 3600, 6)}
    out = save_genotype(genotype, run_dir / "genotype.json", search=record)
    atomic_write_text(run_dir / "arch_history.json", json.dumps(history) + "\n")
    plots = plot_history(history, run_dir)
    if "signum" in signalled:  # the checkpoint and the genotype of the steps done are saved
        raise Interrupted(signalled["signum"])
    return {"genotype": str(out), "images": n_images, "epochs_done": len(history), "plots": [str(p) for p in plots],
            "seconds": seconds(), **record, "last": logs}
