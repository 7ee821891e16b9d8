"""Reading weight files that may be malformed or hostile, with one-line errors and bounded work.

- :func:`open_safetensors`: the metadata and tensor shapes of a ``.safetensors`` file from its header only
  (empty, truncated, header-only or huge-header files are one ``InputError``);
- :func:`load_safetensors`: its tensors, with the same errors;
- :func:`read_json`: a JSON description (bad JSON, wrong top-level type: one ``InputError``);
- :func:`weights_and_description`: a ``.safetensors`` export and the JSON next to it, checked in one place;
- :func:`check_settings`: architecture settings from a file checked against sane bounds *before* any
  network is built (a crafted ``w_dim: 2e6`` must not allocate terabytes);
- :func:`meta_shapes` / :func:`check_shapes`: the parameter shapes the settings imply, computed on the
  ``meta`` device (nothing allocated), compared with the tensors in the file before the real build.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from facerestore.errors import InputError, WeightsMissingError

__all__ = ["check_settings", "check_shapes", "load_safetensors", "meta_shapes", "open_safetensors", "read_json",
           "read_settings", "weights_and_description"]

MAX_JSON_BYTES = 16 << 20


def _name(path: str | os.PathLike) -> str:
    from facerestore.io import display_path

    return display_path(path)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


def open_safetensors(path: str | os.PathLike, what: str = "weights") -> tuple[dict[str, str], dict[str, tuple]]:
    """(metadata, {name: shape}) of a safetensors file, reading only its header."""
    from safetensors import safe_open

    p = os.fspath(path)
    if not os.path.isfile(p):
        raise InputError(f"{what} not found: {_name(p)}")
    if os.path.getsize(p) < 8:
        raise InputError(f"{_name(p)} is not a safetensors file ({os.path.getsize(p)} bytes)")
    try:
        with safe_open(p, "pt") as f:
            meta = dict(f.metadata() or {})
            shapes = {k: tuple(int(d) for d in f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # SafetensorError, OSError, ... : truncated, header-only, huge header, not one
        raise InputError(f"{_name(p)} is not a readable safetensors file: {_reason(exc)}") from None
    return meta, shapes


def load_safetensors(path: str | os.PathLike, what: str = "weights") -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file (call :func:`open_safetensors` and check the shapes first)."""
    from safetensors.torch import load_file

    p = os.fspath(path)
    try:
        return load_file(p)
    except MemoryError:
        raise InputError(f"not enough memory to load {what} {_name(p)}") from None
    except Exception as exc:
        raise InputError(f"{_name(p)} is not a readable safetensors file: {_reason(exc)}") from None


def read_json(path: str | os.PathLike, what: str = "description") -> dict:
    """A JSON object from a small file; InputError for unreadable, non-UTF-8, invalid or non-object JSON."""
    p = os.fspath(path)
    try:
        if os.path.getsize(p) > MAX_JSON_BYTES:
            raise InputError(f"{what} {_name(p)} is larger than {MAX_JSON_BYTES >> 20} MB")
        with open(p, "rb") as fh:
            obj = json.loads(fh.read().decode("utf-8"))
    except InputError:
        raise
    except OSError as exc:
        raise InputError(f"cannot read {what} {_name(p)}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InputError(f"{what} {_name(p)} is not valid JSON: {_reason(exc)}") from None
    if not isinstance(obj, dict):
        raise InputError(f"{what} {_name(p)} must hold a JSON object, got {type(obj).__name__}")
    return obj


def weights_and_description(weights: str | os.PathLike, what: str) -> tuple[Path, dict]:
    """``(path, description)`` for a ``.safetensors`` weights file and the JSON description next to it
    (``<same name>.json``, what ``facerestore train`` exports): WeightsMissingError when the file is absent,
    one-line InputError for another suffix, a missing or an invalid description. ``what``: e.g. "ISPL"."""
    path = Path(weights)
    if not path.is_file():
        raise WeightsMissingError(f"{what} weights not found: {path}")
    if path.suffix != ".safetensors":
        raise InputError(f"{what} weights must be a .safetensors file (a facerestore train export), got {path.name}")
    desc_path = path.with_suffix(".json")
    if not desc_path.is_file():
        raise InputError(f"{path.name} needs its description {desc_path.name} next to it")
    return path, read_json(desc_path, f"{what} description")


# bound kinds: ("int", lo, hi), ("float", lo, hi), ("float?", lo, hi) (null allowed), ("bool",),
# ("choice", (a, b, ...)), ("pow2", lo, hi)
Bound = tuple


def check_settings(settings: Any, bounds: Mapping[str, Bound], where: str) -> dict[str, Any]:
    """Architecture settings read from a file, checked key by key against ``bounds`` (unknown keys refused)
    and converted to Python ints/floats/bools; InputError naming the key otherwise."""
    if not isinstance(settings, dict):
        raise InputError(f"{where}: architecture settings must be a JSON object, got {type(settings).__name__}")
    unknown = sorted(str(k) for k in settings if k not in bounds)
    if unknown:
        raise InputError(f"{where}: unknown architecture setting(s) {', '.join(unknown[:5])}")
    out: dict[str, Any] = {}
    for key, value in settings.items():
        kind = bounds[key][0]

        def bad(expected: str, key: str = key, value: Any = value) -> InputError:
            return InputError(f"{where}: setting {key} must be {expected}, got {str(value)[:40]!r}")

        if kind == "bool":
            if not isinstance(value, bool):
                raise bad("true or false")
            out[key] = value
        elif kind == "choice":
            if value not in bounds[key][1]:
                raise bad("one of " + ", ".join(map(str, bounds[key][1])))
            out[key] = value
        elif kind in ("int", "pow2"):
            lo, hi = bounds[key][1:3]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or int(value) != value or not lo <= value <= hi:
                raise bad(f"a whole number in {lo}..{hi}")
            if kind == "pow2" and int(value) & (int(value) - 1):
                raise bad(f"a power of two in {lo}..{hi}")
            out[key] = int(value)
        elif kind in ("float", "float?"):
            lo, hi = bounds[key][1:3]
            if value is None and kind == "float?":
                out[key] = None
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not lo <= value <= hi:
                raise bad(f"a finite number in [{lo:g}, {hi:g}]" + (" or null" if kind == "float?" else ""))
            out[key] = float(value)
        else:  # pragma: no cover - a programming error in a bounds table
            raise ValueError(f"unknown bound kind {kind!r}")
    return out


def read_settings(path: str | os.PathLike, fmt: str, bounds: Mapping[str, Bound], what: str
                  ) -> tuple[dict[str, Any], dict[str, tuple]]:
    """(architecture settings, {name: shape}) of a safetensors file of ours, reading only its header: the metadata's
    ``format`` must be ``fmt`` and its JSON ``config`` must pass :func:`check_settings` with ``bounds``; one-line
    InputError naming ``what`` otherwise (check the shapes the settings imply with :func:`check_shapes` next)."""
    where = os.fspath(path)
    meta, shapes = open_safetensors(path, what)
    if meta.get("format") != fmt:
        raise InputError(f"{_name(where)} is not a facerestore {what} file")
    try:
        config = json.loads(meta.get("config", ""))
    except ValueError:
        raise InputError(f"{_name(where)}: the {what}'s architecture metadata is not valid JSON") from None
    return check_settings(config, bounds, where), shapes


class _NoDrawsOnMeta(TorchFunctionMode):
    """Random draws (and normalising them) while building on the meta device return empty tensors of their shape:
    meta tensors hold no values, and the first draw or vector norm on the meta device imports torch._dynamo
    (1.5 s of every restore with the default method, for ISPL's spectral-norm vectors). Other arithmetic on meta
    tensors (a StyleGAN2's scaled weights) still imports it; those methods take minutes a face anyway."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in (torch.randn, torch.rand):
            return torch.empty(*args, **{k: v for k, v in kwargs.items() if k in ("dtype", "device", "layout",
                                                                                   "requires_grad")})
        if func is torch.Tensor.normal_ or func is torch.nn.functional.normalize:  # same shape, no values
            return args[0]
        return func(*args, **kwargs)


def meta_shapes(build: Callable[[], torch.nn.Module], where: str) -> dict[str, tuple]:
    """Parameter and buffer shapes of the module ``build()`` makes, built on the meta device (no memory)."""
    try:
        with torch.device("meta"), _NoDrawsOnMeta():
            module = build()
        return {k: tuple(v.shape) for k, v in module.state_dict().items()}
    except (TypeError, ValueError, InputError, RuntimeError, AssertionError, KeyError) as exc:
        raise InputError(f"{where}: invalid architecture settings: {_reason(exc)}") from None


def check_shapes(expected: Mapping[str, tuple], found: Mapping[str, tuple], where: str, *,
                 optional: Callable[[str], bool] = lambda k: False) -> None:
    """InputError unless the file's tensors (``found``) are exactly the ``expected`` names and shapes
    (names for which ``optional(name)`` is true may be absent from the file)."""
    missing = sorted(k for k in expected if k not in found and not optional(k))
    extra = sorted(k for k in found if k not in expected)
    if missing or extra:
        raise InputError(f"{where} does not match its architecture settings: missing {missing[:3]}, "
                         f"unexpected {extra[:3]}")
    for k, shape in found.items():
        if tuple(expected[k]) != tuple(shape):
            raise InputError(f"{where}: tensor {k} has shape {tuple(shape)}, the settings imply {tuple(expected[k])}")
