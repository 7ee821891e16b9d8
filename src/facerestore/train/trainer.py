"""The generic training loop: data, schedules, AMP, EMA, DDP, validation, logs, checkpoints.

    facerestore train configs/ispl-compact-128.yaml                       # one process (CPU or GPU)
    torchrun --nproc-per-node 8 -m facerestore train configs/ispl-compact-256-gpu.yaml # many GPUs, same config

A run lives in ``output_dir/name/``: ``checkpoints/last.pt`` (resumable), ``metrics.jsonl`` (every log
and validation line), TensorBoard events when tensorboard is installed, ``final.safetensors`` + ``final.json``
(the EMA generator and what is needed to rebuild it). Re-running the same command resumes exactly.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from facerestore.errors import InputError, deferred_interrupts
from facerestore.nn.devices import resolve_device
from facerestore.train import distributed as dist_utils
from facerestore.train.adapter import TrainAdapter
from facerestore.train.baselines import UNetL1Adapter
from facerestore.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, setting_changes
from facerestore.train.config import TrainConfig
from facerestore.train.data import StepSampler, load_images, make_pair, split_files, step_seed
from facerestore.train.ema import EMA
from facerestore.train.stylegan2 import StyleGAN2Adapter

AdapterFactory = Callable[[TrainConfig, torch.device], TrainAdapter]

# the framework's own adapters; a restoration method names its adapter in its spec (methods.registry)
FRAMEWORK_ADAPTERS: dict[str, AdapterFactory] = {"unet-l1": UNetL1Adapter, "stylegan2": StyleGAN2Adapter}


def framework_adapter(method: str) -> AdapterFactory:
    """The framework's adapter for ``method`` (one-line InputError naming where method adapters come from)."""
    try:
        return FRAMEWORK_ADAPTERS[method]
    except KeyError:
        raise InputError(
            f"training method {method!r} is not one of the framework's ({', '.join(FRAMEWORK_ADAPTERS)}); a "
            f"restoration method's adapter comes from its spec: train(cfg, adapter="
            f"facerestore.methods.training_adapter({method!r})), or `facerestore train CONFIG`"
        ) from None


def lr_factor(step: int, total: int, warmup: int, decay_start: float) -> float:
    """Linear warm-up over ``warmup`` steps, constant, then linear decay to 0 from ``decay_start * total``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    start = int(decay_start * total)
    if step < start or total <= start:
        return 1.0
    return max(0.0, 1.0 - (step - start) / (total - start))


class _Logger:
    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.tb = None
        if enabled:
            run_dir.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(ImportError):
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tb"))

    def log(self, step: int, values: dict[str, float], kind: str = "train") -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "kind": kind, **values}) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(f"{kind}/{k}" if kind != "train" else k, v, step)

    def keep_until(self, step: int) -> set[tuple[int, str]]:
        """Drop logged lines past ``step`` (where the run goes on from): a resumed run would log those steps again,
        and a fresh one (``step`` 0) starts an empty log instead of appending to an earlier run's. Returns the
        (step, kind) of the lines kept."""
        if not self.enabled or not self.path.is_file():
            return set()
        from facerestore.io import atomic_write_text

        kept, seen = [], set()
        for line in self.path.read_text().splitlines():
            with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
                record = json.loads(line)
                if int(record["step"]) <= step:
                    kept.append(line)
                    seen.add((int(record["step"]), str(record.get("kind"))))
        atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))
        return seen

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# settings a resumed run may change: how long, how often it logs / validates / saves, where it runs
RESUMABLE_CHANGES = frozenset({"steps", "time_limit_s", "log_every", "val_every", "ckpt_every", "device",
                               "val_metrics", "output_dir", "deterministic", "data.val_count", "data.val_roots",
                               "init_from"})  # init_from only starts a run: a resumed one holds its weights already
_PATH_LISTS = frozenset({"data.roots", "data.val_from"})
# keys added with a default that changes what earlier versions did (their checkpoints lack the key): what those
# versions did, so that resuming such a run under the new behaviour is refused rather than silently different
_OLDER_BEHAVIOUR = {"data.exclude_held_out": False}  # compared as resolved folders (relative or absolute)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("model", "losses", "synth"):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The settings (dotted keys) that differ between a checkpoint's config and the current one, leaving out
    :data:`RESUMABLE_CHANGES`, each as "key: old -> new"."""
    defaults = _flatten(TrainConfig().to_dict())  # a key the checkpoint's version did not have: its default
    # ... except where the new key's default changed what older versions did: those read as the old behaviour
    a = {**defaults, **_OLDER_BEHAVIOUR, **_flatten(saved)}
    b = {**defaults, **_flatten(current)}

    def same(k: str, old: Any, new: Any) -> bool:
        if k in _PATH_LISTS and isinstance(old, list) and isinstance(new, list):
            return [str(Path(x).resolve()) for x in old] == [str(Path(x).resolve()) for x in new]
        return old == new

    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in setting_changes(a, b, resumable=RESUMABLE_CHANGES, same=same)]


class Trainer:
    """Runs ``cfg`` to ``cfg.steps`` (or ``time_limit_s``), resuming from the last checkpoint if any."""

    def __init__(self, cfg: TrainConfig, *, adapter: AdapterFactory | None = None, progress: bool = True) -> None:
        self.cfg, self.progress = cfg, progress
        self.adapter_factory = adapter if adapter is not None else framework_adapter(cfg.method)
        self.device = torch.device(resolve_device(cfg.device))
        self.dist = dist_utils.init_distributed(str(self.device))
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        if cfg.amp not in ("none", "bf16", "fp16"):
            raise InputError(f"amp must be none, bf16 or fp16, got {cfg.amp!r}")
        if cfg.amp != "none" and self.device.type != "cuda":
            raise InputError(f"amp={cfg.amp} needs a CUDA device; use amp: none on {self.device.type}")
        if cfg.deterministic:
            # cuBLAS is deterministic only with a fixed workspace (set before its first call); other CUDA kernels
            # without a deterministic version only warn (warn_only): GPU runs are reproducible as far as torch
            # allows, CPU runs exactly
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False

    # -- helpers ---------------------------------------------------------------------------------
    def _autocast(self):
        if self.cfg.amp == "none":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.cfg.amp == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _validate(self, adapter: TrainAdapter, net: torch.nn.Module, val_hq: torch.Tensor) -> dict[str, float]:
        from facerestore import metrics

        if val_hq.shape[0] == 0:
            return {}
        scores: dict[str, list[float]] = {m: [] for m in self.cfg.val_metrics}
        with torch.random.fork_rng(devices=[]):  # building the metrics must not move the training RNG
            meters = {m: metrics.create(m, device=self.device) for m in self.cfg.val_metrics}
        bs = self.cfg.data.batch_size
        for i in range(0, val_hq.shape[0], bs):
            # validation degradations are fixed per image (seeded by its index only, not by the run's seed or batch
            # size): runs with other seeds or batch sizes are measured on the same degraded faces
            pairs = [make_pair(val_hq[j : j + 1], self.cfg.data, torch.Generator().manual_seed(
                step_seed(0, j, 0, stream=1)), self.device, hflip=False, clean_p=0.0)
                for j in range(i, min(i + bs, val_hq.shape[0]))]
            lq, hq = torch.cat([q for q, _ in pairs]), torch.cat([h for _, h in pairs])
            out = adapter.infer(net, lq).float()
            for name, m in meters.items():
                scores[name].extend(m(out, hq).float().cpu().tolist())
        return {f"val/{k}": float(torch.tensor(v).nanmean()) for k, v in scores.items()}

    def _out_of_time(self, t0: float) -> bool:
        """Whether ``time_limit_s`` has passed; under DDP rank 0's clock decides for every rank (ranks that stopped
        on different steps would wait for each other's gradients forever)."""
        over = time.monotonic() - t0 > self.cfg.time_limit_s
        if not self.dist.enabled:
            return over
        flag = torch.tensor([int(over)], device=self.device if self.device.type == "cuda" else "cpu")
        torch.distributed.broadcast(flag, src=0)
        return bool(flag.item())

    # -- main ------------------------------------------------------------------------------------
    def fit(self, resume: bool = True) -> dict[str, Any]:
        cfg, dev, info = self.cfg, self.device, self.dist
        run_dir = cfg.run_dir
        torch.manual_seed(cfg.seed)
        main = info.is_main
        # the method's networks first: a bad model option or a missing prior fails in one line before minutes of
        # image loading (nothing below draws from the global RNG, so the initialisation is unchanged)
        adapter = self.adapter_factory(cfg, dev)
        synth_files: list[Path] = []
        synth_imgs = torch.empty((0, 3, cfg.data.size, cfg.data.size), dtype=torch.uint8)
        # building the face generator draws from the global RNG: forked, so that the training's draws do not
        # depend on whether the synth folder was already there (or on which rank wrote it)
        if cfg.data.synth and cfg.data.synth.get("store") == "memory":  # rendered on every rank, never written
            from facerestore.train.synth import render_synth

            with torch.random.fork_rng(devices=[]):
                synth_imgs = render_synth(cfg.data.synth, cfg.data.size, dev, progress=self.progress and main)
        elif cfg.data.synth:  # generator faces, written once (rank 0) and reused: training data only
            from facerestore.train.synth import prepare_synth

            if main:
                with torch.random.fork_rng(devices=[]):
                    prepare_synth(cfg.data.synth, cfg.data.size, run_dir / "synth", progress=self.progress)
            if info.enabled:
                torch.distributed.barrier()
            folder = Path(cfg.data.synth.get("folder") or run_dir / "synth")
            synth_files = sorted(folder.glob("synth_*.png"))[: int(cfg.data.synth["count"])]
        train_files, val_files = split_files(cfg.data, synth_files, in_memory=len(synth_imgs))
        train_imgs = torch.cat([load_images(train_files, cfg.data.size, progress=self.progress and main), synth_imgs])
        # validation faces are read only where validation runs
        val_imgs = load_images(val_files, cfg.data.size, progress=False) if main and cfg.val_every else train_imgs[:0]
        sampler = StepSampler(len(train_imgs), cfg.data.batch_size, info.world_size, info.rank, cfg.seed)

        ckpt = latest_checkpoint(run_dir) if resume else None
        if not resume and main and latest_checkpoint(run_dir) is not None:
            # --fresh: the old run's checkpoint is set aside now (not at the first save), so that a fresh run
            # interrupted before it saves is not resumed as the old run by the next plain command
            old = run_dir / "checkpoints" / "last.pt"
            old.replace(old.with_name("last-before-fresh.pt"))
            print(f"--fresh: the earlier checkpoint is kept as {old.with_name('last-before-fresh.pt')}")
        if cfg.init_from and ckpt is None:
            _init_generator(adapter, cfg.init_from)  # a resumed run already holds these weights, trained on
        adapter.rank = info.rank  # per-rank random draws (fidelities, strengths) differ between ranks
        if info.enabled:
            adapter.wrap_ddp(info.local_rank if dev.type == "cuda" else None)
        optimizers = adapter.build_optimizers()
        o = cfg.optim
        schedulers = {k: torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(s, cfg.steps, o.warmup_steps, o.decay_start)) for k, opt in optimizers.items()}
        scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" else None
        ema = EMA(adapter.generator, cfg.ema_decay)
        logger = _Logger(run_dir, main)

        start, seconds_before = 0, 0.0
        if ckpt is not None:
            state = load_checkpoint(ckpt, map_location=dev)
            changed = config_changes(state.get("config", cfg.to_dict()), cfg.to_dict())
            if changed:  # the optimiser, schedule and EMA states come from the checkpoint: never pretend otherwise
                raise InputError(f"{ckpt}: the run's settings changed since its checkpoint ({'; '.join(changed)}); "
                                 "restore them, or start over with --fresh")
            missing = [k for k in adapter.nets if k not in state.get("nets", {})]
            if missing:
                raise InputError(f"{ckpt} holds no {', '.join(missing)} for method {cfg.method!r}; start over with "
                                 "--fresh")
            seconds_before = float(state.get("seconds", 0.0))
            for k, net in adapter.nets.items():
                getattr(net, "module", net).load_state_dict(state["nets"][k])
            for k, opt in optimizers.items():
                opt.load_state_dict(state["optimizers"][k])
            for k, sch in schedulers.items():
                sch.load_state_dict(state["schedulers"][k])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            ema.load_state_dict(state["ema"])
            torch.set_rng_state(state["rng_cpu"].cpu())  # loaded onto the device above; the state lives on the CPU
            if dev.type == "cuda" and state.get("rng_cuda") is not None:  # noise drawn on the GPU resumes too
                torch.cuda.set_rng_state(state["rng_cuda"].cpu(), dev)
            start = int(state["step"])
            saved_steps = int(state.get("config", {}).get("steps", cfg.steps))
            if main:
                print(f"resumed {run_dir} at step {start}")
                if saved_steps != cfg.steps:
                    # the LR schedule is a function of the total: changing it mid-run changes the remaining decay
                    print(f"warning: steps changed from {saved_steps} to {cfg.steps} since the checkpoint; "
                          "the learning-rate schedule follows the new total from here on")

        logged = logger.keep_until(start)
        if main and start and cfg.val_every and start % cfg.val_every == 0 and (start, "val") not in logged:
            # the checkpoint is written before validation: a run stopped during it validates that step now
            logger.log(start, self._validate(adapter, ema.shadow, val_imgs), kind="val")

        saved_at = [-1]  # the step of the last checkpoint written by this run: never written twice

        def save(step: int) -> None:
            if not main or saved_at[0] == step:
                return
            saved_at[0] = step
            save_checkpoint(run_dir / "checkpoints" / "last.pt", {
                "step": step,
                "seconds": seconds_before + time.monotonic() - t0,  # training time over every resumed chunk
                "config": cfg.to_dict(),
                "nets": {k: getattr(n, "module", n).state_dict() for k, n in adapter.nets.items()},
                "optimizers": {k: v.state_dict() for k, v in optimizers.items()},
                "schedulers": {k: v.state_dict() for k, v in schedulers.items()},
                "scaler": scaler.state_dict() if scaler is not None else None,
                "ema": ema.state_dict(),
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
            })

        from tqdm import tqdm

        t0 = time.monotonic()
        step = start
        bar = tqdm(total=cfg.steps, initial=start, desc=cfg.name, disable=not (self.progress and main))
        last_logs: dict[str, float] = {}
        stopped_early = False
        with deferred_interrupts() as signalled:
            step, stopped_early, last_logs = self._loop(
                adapter, optimizers, schedulers, scaler, ema, sampler, train_imgs, val_imgs, logger, save, bar,
                step, t0, seconds_before, signalled)
        bar.close()
        if "signum" in signalled:  # the checkpoint of the last whole step is saved: stop as interrupted
            from facerestore.errors import Interrupted

            save(step)
            dist_utils.barrier(info)  # no rank leaves (and has torchrun end the others) before rank 0 has saved
            logger.close()
            dist_utils.cleanup(info)
            raise Interrupted(signalled["signum"])
        save(step)
        result: dict[str, Any] = {"step": step, "finished": step >= cfg.steps, "stopped_early": stopped_early,
                                  "run_dir": str(run_dir), "last_logs": last_logs}
        if main:  # a run stopped early still leaves usable weights: the EMA generator of its last step
            name = "final.safetensors" if step >= cfg.steps else "latest.safetensors"
            record = {"train_hours": round((seconds_before + time.monotonic() - t0) / 3600, 4),
                      "device": str(dev), "world_size": info.world_size, "train_images": len(train_imgs),
                      "val_images": len(val_imgs), "torch": torch.__version__}
            result["weights"] = str(self.export(adapter, ema, run_dir / name, record))
        logger.close()
        dist_utils.cleanup(info)
        return result

    def _loop(self, adapter: TrainAdapter, optimizers: dict[str, Any], schedulers: dict[str, Any], scaler: Any,
              ema: EMA, sampler: StepSampler, train_imgs: torch.Tensor, val_imgs: torch.Tensor, logger: _Logger,
              save: Callable[[int], None], bar: Any, step: int, t0: float, seconds_before: float,
              signalled: dict[str, int]) -> tuple[int, bool, dict[str, float]]:
        """The training steps from ``step`` to ``cfg.steps`` (or the time limit, or a signal): (the step reached,
        whether the time limit stopped it, the last step's logs)."""
        cfg, dev, info = self.cfg, self.device, self.dist
        main = info.is_main
        last_logs: dict[str, float] = {}
        stopped_early = False
        while step < cfg.steps:
            for net in adapter.nets.values():
                net.train()
            idx = sampler.indices(step)
            g = torch.Generator().manual_seed(step_seed(cfg.seed, step, info.rank))
            lq, hq = make_pair(train_imgs[idx], cfg.data, g, dev)
            adapter.step = step
            last_logs = adapter.train_step(lq, hq, optimizers, self._autocast, scaler)
            lr_used = optimizers[next(iter(optimizers))].param_groups[0]["lr"]  # this step's, before the scheduler
            with warnings.catch_warnings():
                # an adapter may skip an optimiser on some steps (e.g. D during an L1 warm-up); the LambdaLR
                # factors are pure functions of the step, so stepping the scheduler anyway is correct
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
                for sch in schedulers.values():
                    sch.step()
            ema.update(adapter.generator)
            step += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps:  # time_s: training seconds since step 0
                logs = self._mean_over_ranks(last_logs)  # every rank's batch, not rank 0's alone
                logger.log(step, {**logs, "lr": lr_used, "time_s": seconds_before + time.monotonic() - t0})
            if cfg.ckpt_every and step % cfg.ckpt_every == 0:
                save(step)  # before validation: a validation that fails loses no training
            if main and cfg.val_every and (step % cfg.val_every == 0 or step == cfg.steps):
                logger.log(step, self._validate(adapter, ema.shadow, val_imgs), kind="val")
            if cfg.time_limit_s and step < cfg.steps and self._out_of_time(t0):
                stopped_early = True
                break
            if self._signalled(signalled):
                break
        return step, stopped_early, last_logs

    def _mean_over_ranks(self, logs: dict[str, float]) -> dict[str, float]:
        if not self.dist.enabled or not logs:
            return logs
        keys = sorted(logs)
        dev = self.device if self.device.type == "cuda" else torch.device("cpu")
        vals = dist_utils.all_reduce_mean(torch.tensor([float(logs[k]) for k in keys], dtype=torch.float64,
                                                       device=dev), self.dist)
        return dict(zip(keys, vals.cpu().tolist()))

    def _signalled(self, signalled: dict[str, int]) -> bool:
        """Whether to stop for a signal; under DDP every rank learns of any rank's signal at the same step."""
        if not self.dist.enabled:
            return "signum" in signalled
        # any rank's signal stops every rank at the same step (a preemption may reach one process first)
        flag = torch.tensor([signalled.get("signum", 0)], device=self.device if self.device.type == "cuda" else "cpu")
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if int(flag.item()):
            signalled.setdefault("signum", int(flag.item()))
        return bool(flag.item())

    def export_latest(self) -> Path:
        """Write the EMA generator of the run's last checkpoint to ``<run dir>/latest.safetensors`` (+ .json)
        without training: usable weights from a run that is still going or was interrupted."""
        ckpt = latest_checkpoint(self.cfg.run_dir)
        if ckpt is None:
            raise InputError(f"no checkpoint in {self.cfg.run_dir}/checkpoints to export")
        state = load_checkpoint(ckpt, map_location=self.device)
        changed = config_changes(state.get("config", self.cfg.to_dict()), self.cfg.to_dict())
        if changed:  # the export's record would describe settings these weights were not trained with
            raise InputError(f"{ckpt}: the run's settings changed since its checkpoint ({'; '.join(changed)}); "
                             "restore them to export its weights")
        adapter = self.adapter_factory(self.cfg, self.device)
        ema = EMA(adapter.generator, self.cfg.ema_decay)
        ema.load_state_dict(state["ema"])
        return self.export(adapter, ema, self.cfg.run_dir / "latest.safetensors")

    def export(self, adapter: TrainAdapter, ema: EMA, path: Path, record: dict[str, Any] | None = None) -> Path:
        """Write the EMA generator (fp32 safetensors) and a JSON description next to it (``record``: how it was
        trained: hours over every resumed chunk, device, world size, image counts)."""
        from facerestore.io import atomic_write_json, atomic_write_safetensors

        state = {k: v.float() if v.is_floating_point() else v for k, v in ema.shadow.state_dict().items()}
        atomic_write_safetensors(path, state)
        atomic_write_json(path.with_suffix(".json"), {**adapter.export_metadata(), "steps": ema.num_updates,
                                                      **(record or {}), "config": self.cfg.to_dict()})
        return path


def _init_generator(adapter: TrainAdapter, path: str) -> None:
    """Load an exported generator (``final.safetensors`` of an earlier run) before step 0 (fine-tuning)."""
    from facerestore.nn.backbones import load_exact, load_weights_file

    p = Path(path)
    if p.suffix != ".safetensors" or not p.is_file():
        raise InputError(f"init_from: {path} is not a .safetensors weights file (e.g. a run's final.safetensors)")
    load_exact(adapter.generator, load_weights_file(p),
               source=f"init_from: {path} does not fit this generator: its weights")


def train(cfg: TrainConfig, *, adapter: AdapterFactory | None = None, resume: bool = True,
          progress: bool = True) -> dict[str, Any]:
    """Train ``cfg`` (resuming from its run folder when a checkpoint exists).

    adapter: ``(cfg, device) -> TrainAdapter``; default the framework's adapter for ``cfg.method``
    (``unet-l1``, ``stylegan2``). Restoration methods: ``facerestore.methods.training_adapter(cfg.method)``.
    """
    return Trainer(cfg, adapter=adapter, progress=progress).fit(resume=resume)
