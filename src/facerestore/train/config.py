"""Training configuration: one YAML file describes a run on one CPU, one GPU or many (torchrun).

The YAML maps onto the dataclasses below; unknown keys are an error (a typo must not silently do
nothing). ``load_config`` also accepts ``overrides`` such as ``["optim.lr=1e-4", "steps=10"]``.
"""

from __future__ import annotations

import dataclasses
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
    many validation images (the first ones by name); val_roots: extra folders used only for validation.
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
    """Convert a YAML scalar to the field's declared scalar type (YAML reads ``1e-9`` as a string)."""
    conv = _SCALARS.get(ftype)
    if conv is None or val is None or isinstance(val, bool):
        return val
    try:
        if conv is int and isinstance(val, float) and not val.is_integer():
            raise ValueError
        return conv(float(val)) if conv is int and isinstance(val, (str, float)) else conv(val)
    except (TypeError, ValueError):
        raise InputError(f"config key {name} must be {conv.__name__}, got {val!r}") from None


def _apply_override(raw: dict[str, Any], override: str) -> None:
    if "=" not in override:
        raise InputError(f"override must look like key.sub=value, got {override!r}")
    key, value = override.split("=", 1)
    node = raw
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = yaml.safe_load(value)


def config_from_dict(raw: dict[str, Any], overrides: list[str] | None = None) -> TrainConfig:
    raw = dict(raw)
    for ov in overrides or []:
        _apply_override(raw, ov)
    return _build(TrainConfig, raw, "")


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML training config (unknown keys are an InputError)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"config not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"invalid YAML in {p}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(raw, dict):
        raise InputError(f"{p} must contain a mapping at the top level")
    return config_from_dict(raw, overrides)
