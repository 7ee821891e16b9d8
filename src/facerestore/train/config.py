"""Training configuration: one YAML file describes a run on one CPU, one GPU or many (torchrun).

The YAML maps onto the dataclasses below; unknown keys are an error (a typo must not silently do
nothing), and so is a value of the wrong type or out of range (``steps: abc``, ``batch_size: 0``,
``lr: .nan``): every problem is one InputError naming the key. ``load_config`` also accepts ``overrides``
such as ``["optim.lr=1e-4", "steps=10"]``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from facerestore.errors import InputError


@dataclass
class DataConfig:
    """HQ face images and their on-the-fly degradation.

    roots: folders of HQ face crops (aligned); size: training side in px (images are resized to it);
    task/level: degradation preset of facerestore.degrade used to make the LQ input ("none": no
        degradation, lq is hq; for unconditional generators);
    val_rule: which files of the ``val_from`` roots are held out for validation: "ends-with-0" (files whose
    numeric stem ends in 0, the FFHQ convention of ../shared/data), "every-N" (every N-th file by sorted
    name) or "none"; val_from: the roots the rule applies to (default: every root); val_count: at most this
    many validation images (the first ones by name; 0: all); val_roots: extra folders used only for validation
    (never inside, or holding, a training root: validation would score training faces).
    exclude_held_out: files named by the project's hold-out rule (a numeric stem ending in 0: the validation ids
    of ../shared/data's ffhq256 that every benchmark reports on) never join training, in any root and whatever
    val_rule says (true by default: a config that forgot the rule must not train on benchmark faces; false only
    for a dataset of your own with numeric file names).
    clean_p: probability in [0, 1] that a training sample is left undegraded (its LQ is its HQ), so that the
    degradation runs from none to the task's heaviest; validation pairs are always degraded.
    synth: generator faces added to the training set (never to validation): ``{count: N, weights: NAME (default
    MobileStyleGAN when cached), truncation: 1.0, seed: 0, folder: PATH}``; the faces are written once by
    ``facerestore.train.synth`` into ``folder`` (default ``<run dir>/synth``) on first use and reused after
    (a folder made by ``facerestore synth`` works too); ``store: memory`` instead renders them on the training
    device straight into memory at ``size`` (no files: the fast path on a GPU, where writing and decoding
    thousands of PNGs would cost more than rendering them).
    """

    roots: list[str] = field(default_factory=list)
    size: int = 128
    task: str = "realworld-gfpgan"
    level: str | None = None
    val_rule: str = "ends-with-0"
    val_from: list[str] = field(default_factory=list)
    val_roots: list[str] = field(default_factory=list)  # extra folders used only for validation
    val_count: int = 64
    batch_size: int = 8
    hflip: bool = True
    clean_p: float = 0.0  # share of training samples left undegraded (lq = hq): a clean face must pass through
    synth: dict[str, Any] = field(default_factory=dict)
    exclude_held_out: bool = True


@dataclass
class OptimConfig:
    lr: float = 1e-4
    lr_d: float = 4e-4
    betas: tuple[float, float] = (0.0, 0.9)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    decay_start: float = 0.6  # fraction of steps after which lr decays linearly to 0 (HiFaceGAN: 30/50 epochs)
    grad_clip: float = 0.0


@dataclass
class TrainConfig:
    """A whole run. ``method`` names a training adapter (see facerestore.train.methods)."""

    name: str = "run"
    method: str = "ispl"
    model: dict[str, Any] = field(default_factory=dict)  # method-specific architecture options
    losses: dict[str, float] = field(default_factory=dict)  # method-specific loss weights
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    steps: int = 1000
    seed: int = 0
    output_dir: str = "runs"
    device: str = "auto"
    amp: str = "none"  # "none" | "bf16" | "fp16" (GPU only)
    ema_decay: float = 0.999
    log_every: int = 10
    val_every: int = 500
    ckpt_every: int = 500
    val_metrics: list[str] = field(default_factory=lambda: ["psnr", "ssim"])
    time_limit_s: float = 0.0  # stop cleanly (and checkpoint) after this many seconds; 0 = no limit
    init_from: str = ""  # fine-tuning: a weights file (.safetensors export) for the generator at step 0
    deterministic: bool = True

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise InputError(f"config key {where.rstrip('.') or '(top level)'} must be a mapping, "
                         f"got {type(values).__name__}")
    if any(not isinstance(k, str) for k in values):
        raise InputError(f"config keys must be names, got {sorted(map(repr, values))[:3]} under {where or 'the top'}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(names)
    if unknown:
        raise InputError(f"unknown config key(s): {', '.join(where + k for k in sorted(unknown))}")
    kwargs = {}
    for key, val in values.items():
        ftype = names[key].type
        val = _coerce(val, ftype, f"{where}{key}")
        if ftype in ("DataConfig", DataConfig):
            val = _build(DataConfig, val or {}, f"{where}{key}.")
        elif ftype in ("OptimConfig", OptimConfig):
            val = _build(OptimConfig, val or {}, f"{where}{key}.")
            val.betas = tuple(val.betas)
        kwargs[key] = val
    return cls(**kwargs)


_SCALARS = {"float": float, "int": int, "str": str, float: float, int: int, str: str}


def _coerce(val: Any, ftype: Any, name: str) -> Any:
    """Convert a YAML value to the field's declared type (YAML reads ``1e-9`` as a string); InputError naming
    the key when it cannot be."""
    ftype = getattr(ftype, "__name__", ftype) if isinstance(ftype, type) else ftype
    if ftype in ("bool",):
        if not isinstance(val, bool):
            raise InputError(f"config key {name} must be true or false, got {val!r}")
        return val
    if ftype == "str | None":
        if val is not None and not isinstance(val, str):
            raise InputError(f"config key {name} must be a string or null, got {val!r}")
        return val
    if ftype == "list[str]":
        if not isinstance(val, list) or not all(isinstance(v, str) for v in val):
            raise InputError(f"config key {name} must be a list of strings, got {val!r}")
        return val
    if ftype in ("dict[str, Any]", "dict[str, float]"):
        if val is None:
            return {}
        if not isinstance(val, dict) or not all(isinstance(k, str) for k in val):
            raise InputError(f"config key {name} must be a mapping, got {val!r}")
        if ftype == "dict[str, float]":
            return {k: _coerce(v, "float", f"{name}.{k}") for k, v in val.items()}
        return val
    if ftype == "tuple[float, float]":
        if not isinstance(val, (list, tuple)) or len(val) != 2:
            raise InputError(f"config key {name} must be a list of two numbers, got {val!r}")
        return tuple(_coerce(v, "float", f"{name}[{i}]") for i, v in enumerate(val))
    conv = _SCALARS.get(ftype)
    if conv is None:
        return val
    if val is None or isinstance(val, bool) or isinstance(val, (list, dict, tuple)):
        raise InputError(f"config key {name} must be {conv.__name__}, got {val!r}")
    try:
        if conv is int and isinstance(val, (float, str)) and not float(val).is_integer():
            raise ValueError  # "2.5e0" (YAML reads it as a string) is no batch size of 2
        return conv(float(val)) if conv is int and isinstance(val, (str, float)) else conv(val)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"config key {name} must be {conv.__name__}, got {val!r}") from None


def _apply_override(raw: dict[str, Any], override: str) -> None:
    if "=" not in override:
        raise InputError(f"override must look like key.sub=value, got {override!r}")
    key, value = override.split("=", 1)
    node = raw
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise InputError(f"override {override!r}: {p} is not a mapping in the config")
    try:
        node[parts[-1]] = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise InputError(f"override {override!r} is not a YAML value: {str(exc).splitlines()[0]}") from None


def _check(ok: bool, key: str, what: str, value: Any) -> None:
    if not ok:
        raise InputError(f"config key {key} must be {what}, got {value!r}")


def validate(cfg: TrainConfig) -> TrainConfig:
    """Range checks of every numeric setting (one InputError naming the key); returns ``cfg``."""
    def finite(x: float) -> bool:
        return isinstance(x, (int, float)) and math.isfinite(x)

    d, o = cfg.data, cfg.optim
    _check(0 <= cfg.steps <= 100_000_000, "steps", "in 0..100000000", cfg.steps)
    _check(0 <= cfg.seed < 2**32, "seed", "in 0..4294967295", cfg.seed)
    _check(8 <= d.size <= 4096, "data.size", "in 8..4096 pixels", d.size)
    _check(1 <= d.batch_size <= 4096, "data.batch_size", "in 1..4096", d.batch_size)
    _check(d.val_count >= 0, "data.val_count", ">= 0", d.val_count)
    _check(finite(d.clean_p) and 0 <= d.clean_p <= 1, "data.clean_p", "in [0, 1]", d.clean_p)
    _check(d.val_rule in ("ends-with-0", "none") or re.fullmatch(r"every-[1-9]\d*", d.val_rule) is not None,
           "data.val_rule", "ends-with-0, every-N (N >= 1) or none", d.val_rule)
    for key, v in (("optim.lr", o.lr), ("optim.lr_d", o.lr_d)):
        _check(finite(v) and 0 <= v <= 10, key, "a finite number in [0, 10]", v)
    for i, b in enumerate(o.betas):
        _check(finite(b) and 0 <= b < 1, f"optim.betas[{i}]", "in [0, 1)", b)
    _check(finite(o.weight_decay) and o.weight_decay >= 0, "optim.weight_decay", "a finite number >= 0", o.weight_decay)
    _check(o.warmup_steps >= 0, "optim.warmup_steps", ">= 0", o.warmup_steps)
    _check(finite(o.decay_start) and 0 <= o.decay_start <= 1, "optim.decay_start", "in [0, 1]", o.decay_start)
    _check(finite(o.grad_clip) and o.grad_clip >= 0, "optim.grad_clip", "a finite number >= 0", o.grad_clip)
    _check(finite(cfg.ema_decay) and 0 <= cfg.ema_decay < 1, "ema_decay", "in [0, 1)", cfg.ema_decay)
    _check(cfg.log_every >= 1, "log_every", ">= 1", cfg.log_every)
    _check(cfg.val_every >= 0, "val_every", ">= 0 (0: never)", cfg.val_every)
    _check(cfg.ckpt_every >= 0, "ckpt_every", ">= 0 (0: only at the end)", cfg.ckpt_every)
    _check(finite(cfg.time_limit_s) and cfg.time_limit_s >= 0, "time_limit_s", "a finite number >= 0",
           cfg.time_limit_s)
    _check(cfg.amp in ("none", "bf16", "fp16"), "amp", "none, bf16 or fp16", cfg.amp)
    _check(bool(cfg.name) and "/" not in cfg.name and cfg.name not in (".", ".."), "name",
           "a non-empty folder name without '/'", cfg.name)
    for k, v in cfg.losses.items():
        _check(finite(v) and v >= 0, f"losses.{k}", "a finite number >= 0", v)
    from facerestore.metrics.registry import get_spec

    for m in cfg.val_metrics:  # a typo fails now, not at the first validation hours into the run
        try:
            spec = get_spec(m)
        except InputError as exc:
            raise InputError(f"config key val_metrics: {exc}") from None
        _check(spec.needs_reference and spec.kind != "distribution", "val_metrics",
               "metrics comparing each output with its ground truth (psnr, ssim, lpips, ...)", m)
        _check(d.size >= spec.min_side, "val_metrics", f"metrics that can score {d.size} px faces", m)
    if d.task != "none":  # a typo fails now, not at the first step after minutes of image loading
        from facerestore.degrade.tasks import _resolve_level, get_task

        try:
            _resolve_level(get_task(d.task), d.level)
        except InputError as exc:
            raise InputError(f"config key data.task / data.level: {exc}") from None
    roots = {str(Path(r).resolve()) for r in d.roots}
    for r in d.val_from:  # a hold-out that matches no root would silently train on the held-out faces
        _check(str(Path(r).resolve()) in roots, "data.val_from", f"folders listed in data.roots ({', '.join(d.roots)})",
               r)
    for r in d.val_roots:
        _check(Path(r).is_dir(), "data.val_roots", "existing folders", r)
        # folders are read without their subfolders: only the same folder shares files
        overlap = [t for t in d.roots if Path(r).resolve() == Path(t).resolve()]
        _check(not overlap, "data.val_roots", "folders other than data.roots (validation would score the training "
               f"faces of {', '.join(overlap)})", r)
    if d.synth:
        unknown = sorted(set(d.synth) - {"count", "weights", "truncation", "seed", "folder", "store"})
        _check(not unknown, "data.synth", "a mapping of count, weights, truncation, seed, folder, store", unknown)
        _check(d.synth.get("store", "files") in ("files", "memory"), "data.synth.store", "files or memory",
               d.synth.get("store"))
        _check(not (d.synth.get("store") == "memory" and d.synth.get("folder")), "data.synth.folder",
               "unset with store: memory (nothing is written)", d.synth.get("folder"))
        n = d.synth.get("count")
        _check(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 10_000_000, "data.synth.count",
               "a whole number in 1..10000000", n)
        t = d.synth.get("truncation", 1.0)
        _check(finite(t) and 0 <= t <= 2, "data.synth.truncation", "in [0, 2]", t)
        for key in ("weights", "folder"):
            v = d.synth.get(key)
            _check(v is None or isinstance(v, str), f"data.synth.{key}", "a string", v)
        _check(isinstance(d.synth.get("seed", 0), int), "data.synth.seed", "a whole number", d.synth.get("seed"))
    return cfg


def config_from_dict(raw: dict[str, Any], overrides: list[str] | None = None) -> TrainConfig:
    if not isinstance(raw, dict):
        raise InputError(f"a training config must be a mapping at the top level, got {type(raw).__name__}")
    raw = dict(raw)
    for ov in overrides or []:
        _apply_override(raw, ov)
    return validate(_build(TrainConfig, raw, ""))


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML training config (unknown keys are an InputError)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"config not found: {p}")
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as exc:
        raise InputError(f"cannot read config {p}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"config {p} is not UTF-8 text (byte {exc.start})") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"invalid YAML in {p}: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise InputError(f"invalid YAML in {p}: nested too deeply") from None
    if not isinstance(raw, dict):
        raise InputError(f"{p} must contain a mapping at the top level")
    return config_from_dict(raw, overrides)
