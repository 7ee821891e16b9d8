"""Load upstream StyleGAN2 weights into ``facerestore.nn.stylegan2.Generator`` without running their code.

Two formats:

* NVIDIA stylegan2-ada-pytorch network pickles (``ffhq.pkl``; key ``G_ema``). These pickles embed the
  source code of the network modules (``torch_utils.persistence``) and ``pickle.load`` would ``exec`` it.
  ``read_nvidia_pickle`` uses a restricted unpickler whose ``find_class`` only resolves an allow-list of
  globals: persistent objects become inert ``PersistentObject`` records (class name + ``__dict__`` state,
  the embedded source is dropped unexecuted), ``dnnlib`` EasyDicts become plain dicts, tensors are rebuilt
  through ``torch.load(weights_only=True)``, numpy scalars/arrays are decoded from their raw bytes.
  Any other global (``os.system``, ``builtins.eval``, ...) raises ``UnsafePickleError``.
* our own ``.safetensors`` (``facerestore train`` with ``method: stylegan2``, and the built-in prior
  ``zoo/builtin/stylegan2-face-64``): tensors in our layout, the ``Generator`` keyword arguments in the
  file's metadata (key ``stylegan2_config``) or in the ``generator`` field of the JSON file next to it.
* rosinality/stylegan2-pytorch checkpoints (``stylegan2-ffhq-config-f.pt``; key ``g_ema``, optional
  ``latent_avg``) through ``torch.load(weights_only=True)``; parameter names are translated to ours.

Our state-dict layout is NVIDIA's ``G_ema`` layout without the ``resample_filter`` buffers (which must be
the standard [1, 3, 3, 1] filter; anything else is refused).
"""

from __future__ import annotations

import collections
import contextlib
import io
import math
import os
import pickle
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from facerestore.errors import InputError, quiet_warnings
from facerestore.nn.stylegan2 import Generator

__all__ = [
    "BUILTIN_PRIOR",
    "PersistentObject",
    "UnsafePickleError",
    "builtin_prior_path",
    "check_generator_record",
    "config_from_state_dict",
    "find_sidecar",
    "generator_from_nvidia",
    "generator_from_rosinality",
    "generator_sha256",
    "load_nvidia_pkl",
    "load_rosinality_pt",
    "load_safetensors_generator",
    "load_stylegan2",
    "load_zoo_generator",
    "nvidia_to_ours",
    "prior_file",
    "read_nvidia_pickle",
    "resolve_generator",
    "rosinality_to_ours",
    "save_safetensors_generator",
    "sidecar_paths",
]


class UnsafePickleError(InputError):
    """A pickle references a global outside the allow-list (it could execute code when loaded)."""


# --------------------------------------------------------------------------------------------------
# Restricted unpickler
# --------------------------------------------------------------------------------------------------


@dataclass
class PersistentObject:
    """Inert stand-in for an object pickled by ``torch_utils.persistence`` (its code is never run)."""

    class_name: str
    state: dict
    version: Any = None
    module_src_chars: int = 0

    @property
    def init_kwargs(self) -> dict:
        kw = self.state.get("_init_kwargs") or {}
        return dict(kw) if isinstance(kw, dict) else {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flattened parameters and persistent buffers, named like ``nn.Module.state_dict``."""
        return _module_state_dict(self)


class _InertObject:
    """Stand-in for allowed plain classes (e.g. ``torch.nn`` containers): stores state, runs nothing."""

    state: Any = None

    def __init__(self, *args, **kwargs):
        self.args = args
        self.state: Any = {}

    def __setstate__(self, state):
        self.state = state


class _EasyDict(dict):
    """Stand-in for ``dnnlib.EasyDict`` (a dict subclass)."""


class _Marker:
    """Non-callable stand-in for a type the pickle only names (torch.Tensor, Parameter, numpy.ndarray)."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"<marker {self.name}>"


_TENSOR = _Marker("torch.Tensor")
_PARAMETER = _Marker("torch.nn.Parameter")
_NDARRAY = _Marker("numpy.ndarray")


class _InertArray:
    """numpy array rebuilt from its pickled raw bytes (object arrays are kept as None)."""

    def __init__(self, *args):
        self.array: np.ndarray | None = None

    def __setstate__(self, state):
        _, shape, dtype, is_fortran, raw = state[:5]
        if isinstance(dtype, np.dtype) and not dtype.hasobject and isinstance(raw, (bytes, bytearray)):
            arr = np.frombuffer(bytes(raw), dtype=dtype)
            self.array = arr.reshape(shape, order="F" if is_fortran else "C").copy()


def _reconstruct_persistent_obj(meta) -> PersistentObject:
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise UnsafePickleError("unsupported torch_utils.persistence record")
    state = meta.get("state")
    return PersistentObject(
        class_name=str(meta.get("class_name")),
        state=dict(state) if isinstance(state, dict) else {},
        version=meta.get("version"),
        module_src_chars=len(meta.get("module_src") or ""),
    )


def _load_from_bytes(data: bytes):
    with quiet_warnings(UserWarning):  # TypedStorage deprecation chatter
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    # Backward hooks and metadata from the file are dropped: they are never needed for weights.
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, False, collections.OrderedDict())


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state):
    return torch.nn.Parameter(data, requires_grad=bool(requires_grad))


def _rebuild_from_type_v2(func, new_type, args, state=None):
    if func not in (_rebuild_tensor_v2, _rebuild_parameter):
        raise UnsafePickleError("tensor rebuild via an unexpected function")
    ret = func(*args)
    if new_type is _PARAMETER and not isinstance(ret, torch.nn.Parameter):
        ret = torch.nn.Parameter(ret, requires_grad=False)
    elif new_type not in (_TENSOR, _PARAMETER):
        raise UnsafePickleError("tensor rebuild to an unexpected type")
    return ret


def _np_scalar(dtype, data=None):
    if isinstance(dtype, np.dtype) and not dtype.hasobject and isinstance(data, (bytes, bytearray)):
        return np.frombuffer(bytes(data), dtype=dtype)[0]
    return None


def _np_reconstruct(subtype, shape, dtype):
    if subtype is not _NDARRAY:
        raise UnsafePickleError("numpy reconstruct of an unexpected type")
    return _InertArray()


def _copyreg_reconstructor(cls, base, state):
    if cls not in (_InertObject, _EasyDict) or base not in (object, dict):
        raise UnsafePickleError("copyreg reconstruct of an unexpected class")
    obj = cls.__new__(cls)
    if state is not None and cls is _EasyDict:
        obj.update(state)
    return obj


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib", "EasyDict"): _EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("copyreg", "_reconstructor"): _copyreg_reconstructor,
    ("builtins", "object"): object,
    ("builtins", "dict"): dict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("torch", "Tensor"): _TENSOR,
    ("torch._tensor", "Tensor"): _TENSOR,
    ("torch.nn.parameter", "Parameter"): _PARAMETER,
    ("torch", "device"): torch.device,
    ("torch", "Size"): torch.Size,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy._core.multiarray", "scalar"): _np_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, source: str):
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str):
        key = (module, name)
        if key in _ALLOWED:
            return _ALLOWED[key]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.startswith("torch.nn.modules.") and re.fullmatch(r"[A-Z]\w*", name):
            return _InertObject  # plain nn containers inside a network: keep their state only
        if module.startswith("dnnlib.tflib"):
            raise UnsafePickleError(
                f"{self._source} is a TensorFlow-era StyleGAN pickle ({module}.{name}); use the PyTorch release "
                f"(stylegan2-ada-pytorch) of the network or convert it with NVIDIA's legacy.py"
            )
        raise UnsafePickleError(
            f"refusing to load {self._source}: it references the global '{module}.{name}', which is not part of "
            f"a StyleGAN network pickle (loading it could execute code)"
        )

    def persistent_load(self, pid):
        raise UnsafePickleError(f"refusing to load {self._source}: unexpected persistent id in a network pickle")


def read_nvidia_pickle(src: str | os.PathLike | bytes | BinaryIO) -> Any:
    """Unpickle an NVIDIA network pickle with the restricted unpickler (no code from the file runs).

    Returns the top-level object (a dict with 'G', 'D', 'G_ema', ... for training snapshots), with
    persistent networks as ``PersistentObject``. Raises ``UnsafePickleError`` for disallowed globals and
    ``InputError`` for unreadable files.
    """
    if isinstance(src, (bytes, bytearray)):
        return _unpickle(io.BytesIO(bytes(src)), "<bytes>")
    if hasattr(src, "read"):
        return _unpickle(src, getattr(src, "name", "<stream>"))
    path = os.fspath(src)
    try:
        with open(path, "rb") as f:
            return _unpickle(f, path)
    except OSError as exc:
        raise InputError(f"cannot read StyleGAN pickle {path}: {exc}") from exc


def _unpickle(f: BinaryIO, source: str) -> Any:
    try:
        return _RestrictedUnpickler(f, source).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # corrupt / truncated / not a pickle / unexpected structure
        raise InputError(f"cannot unpickle {source} as a StyleGAN network pickle: {exc}") from exc


def _module_state_dict(obj, prefix: str = "", out: dict | None = None) -> dict[str, torch.Tensor]:
    out = {} if out is None else out
    state = obj.state if isinstance(obj, (PersistentObject, _InertObject)) else {}
    if not isinstance(state, dict):
        return out
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    for name, p in (state.get("_parameters") or {}).items():
        if isinstance(p, torch.Tensor):
            out[prefix + name] = p.detach()
    for name, b in (state.get("_buffers") or {}).items():
        if isinstance(b, torch.Tensor) and name not in non_persistent:
            out[prefix + name] = b.detach()
    for name, m in (state.get("_modules") or {}).items():
        if m is not None:
            _module_state_dict(m, f"{prefix}{name}.", out)
    return out


# --------------------------------------------------------------------------------------------------
# Layout conversion
# --------------------------------------------------------------------------------------------------

_FIR_2D = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1]))
_FIR_2D = _FIR_2D / _FIR_2D.sum()


def _check_fir(name: str, t: torch.Tensor) -> None:
    if t.is_meta:
        return
    t = t.detach().float().cpu()
    if t.shape != (4, 4) or t.sum() == 0 or not torch.allclose(t / t.sum(), _FIR_2D, atol=1e-6):
        raise InputError(f"unsupported StyleGAN2 weights: {name} is not the standard [1, 3, 3, 1] filter")


def nvidia_to_ours(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """NVIDIA ``G_ema`` state dict -> ours (drops and checks the ``resample_filter`` buffers)."""
    out = {}
    for k, v in sd.items():
        if k.endswith("resample_filter"):
            _check_fir(k, v)
            continue
        out[k] = v
    return out


def rosinality_to_ours(sd: dict[str, torch.Tensor], latent_avg: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """rosinality ``g_ema`` state dict -> ours. ``latent_avg`` (w_dim,) becomes ``mapping.w_avg``.

    Missing ``noises.noise_*`` buffers (older checkpoints) and a missing ``latent_avg`` are left out of
    the result: ``generator_from_rosinality`` fills them (seeded noise, estimated w_avg).
    """
    sd = dict(sd)
    out: dict[str, torch.Tensor] = {}

    def take(key: str):
        try:
            return sd.pop(key)
        except KeyError:
            raise InputError(f"not a rosinality StyleGAN2 generator: missing '{key}'") from None

    n_mlp = 0
    while f"style.{n_mlp + 1}.weight" in sd:
        out[f"mapping.fc{n_mlp}.weight"] = take(f"style.{n_mlp + 1}.weight")
        out[f"mapping.fc{n_mlp}.bias"] = take(f"style.{n_mlp + 1}.bias")
        n_mlp += 1
    if n_mlp == 0:
        raise InputError("not a rosinality StyleGAN2 generator: no 'style.N.weight' mapping layers")
    if latent_avg is not None:
        out["mapping.w_avg"] = latent_avg.reshape(-1)

    n_blocks = 0
    while f"to_rgbs.{n_blocks}.conv.weight" in sd:
        n_blocks += 1
    inp = take("input.input")
    out["synthesis.b4.const"] = inp.reshape(inp.shape[1:])

    def styled_conv(src: str, dst: str, noise_idx: int) -> None:
        w = take(f"{src}.conv.weight")
        out[f"{dst}.weight"] = w.reshape(w.shape[1:])
        out[f"{dst}.affine.weight"] = take(f"{src}.conv.modulation.weight")
        out[f"{dst}.affine.bias"] = take(f"{src}.conv.modulation.bias")
        out[f"{dst}.bias"] = take(f"{src}.activate.bias")
        out[f"{dst}.noise_strength"] = take(f"{src}.noise.weight").reshape(())
        blur = sd.pop(f"{src}.conv.blur.kernel", None)
        if blur is not None:
            _check_fir(f"{src}.conv.blur.kernel", blur)
        noise = sd.pop(f"noises.noise_{noise_idx}", None)
        if noise is not None:
            out[f"{dst}.noise_const"] = noise.reshape(noise.shape[-2:])

    def to_rgb(src: str, dst: str) -> None:
        w = take(f"{src}.conv.weight")
        out[f"{dst}.weight"] = w.reshape(w.shape[1:])
        out[f"{dst}.affine.weight"] = take(f"{src}.conv.modulation.weight")
        out[f"{dst}.affine.bias"] = take(f"{src}.conv.modulation.bias")
        out[f"{dst}.bias"] = take(f"{src}.bias").reshape(-1)
        up = sd.pop(f"{src}.upsample.kernel", None)
        if up is not None:
            _check_fir(f"{src}.upsample.kernel", up)

    styled_conv("conv1", "synthesis.b4.conv1", 0)
    to_rgb("to_rgb1", "synthesis.b4.torgb")
    for j in range(n_blocks):
        r = 2 ** (j + 3)
        styled_conv(f"convs.{2 * j}", f"synthesis.b{r}.conv0", 2 * j + 1)
        styled_conv(f"convs.{2 * j + 1}", f"synthesis.b{r}.conv1", 2 * j + 2)
        to_rgb(f"to_rgbs.{j}", f"synthesis.b{r}.torgb")
    if sd:
        extra = ", ".join(sorted(sd)[:5])
        raise InputError(f"unexpected keys in rosinality StyleGAN2 state dict: {extra}{' ...' if len(sd) > 5 else ''}")
    return out


def _infer_channel_layout(channels: dict[int, int]) -> tuple[int, int]:
    """(channel_base, channel_max) with channels[r] == min(base // r, max) for every r, or InputError."""
    cmax = max(channels.values())
    below = [r * c for r, c in channels.items() if c < cmax]
    base = min(below) if below else cmax * max(channels)
    for cand in sorted({base, *below}):
        if all(min(cand // r, cmax) == c for r, c in channels.items()):
            return cand, cmax
    raise InputError(f"unsupported StyleGAN2 channel layout {channels} (not min(base // res, max))")


def config_from_state_dict(sd: dict[str, torch.Tensor]) -> dict:
    """Infer ``Generator`` kwargs from a state dict in our layout (shapes only)."""
    n_map = 0
    while f"mapping.fc{n_map}.weight" in sd:
        n_map += 1
    if n_map == 0 or "synthesis.b4.const" not in sd:
        raise InputError("not a StyleGAN2 generator state dict (no mapping.fc0 / synthesis.b4.const)")
    res = [int(m.group(1)) for k in sd if (m := re.fullmatch(r"synthesis\.b(\d+)\.torgb\.weight", k))]
    img_resolution = max(res)
    channels = {r: int(sd[f"synthesis.b{r}.conv1.weight"].shape[0]) for r in res}
    base, cmax = _infer_channel_layout(channels)
    return {
        "z_dim": int(sd["mapping.fc0.weight"].shape[1]),
        "w_dim": int(sd[f"mapping.fc{n_map - 1}.weight"].shape[0]),
        "img_resolution": img_resolution,
        "img_channels": int(sd[f"synthesis.b{img_resolution}.torgb.weight"].shape[0]),
        "mapping_layers": n_map,
        "channel_base": base,
        "channel_max": cmax,
        "use_noise": "synthesis.b4.conv1.noise_strength" in sd,
    }


@dataclass
class _Options:
    conv_clamp: float | None = None
    mapping_lr_multiplier: float = 0.01
    w_avg_beta: float | None = 0.995
    extra: dict = field(default_factory=dict)


def _nvidia_options(init_kwargs: dict) -> _Options:
    """Check NVIDIA ``Generator`` init kwargs for features we do not implement; return the ones we do."""
    kw = dict(init_kwargs)
    if kw.get("c_dim", 0):
        raise InputError("class-conditional StyleGAN2 pickles (c_dim > 0) are not supported")
    syn = dict(kw.get("synthesis_kwargs") or {})
    mp = dict(kw.get("mapping_kwargs") or {})
    if syn.get("architecture", "skip") != "skip":
        raise InputError(f"unsupported generator architecture {syn.get('architecture')!r} (only 'skip')")
    for d, what in ((syn, "synthesis"), (mp, "mapping")):
        if d.get("activation", "lrelu") != "lrelu":
            raise InputError(f"unsupported {what} activation {d.get('activation')!r}")
    if list(syn.get("resample_filter", [1, 3, 3, 1])) != [1, 3, 3, 1]:
        raise InputError("unsupported resample_filter (only [1, 3, 3, 1])")
    clamp = syn.get("conv_clamp")
    return _Options(
        conv_clamp=float(clamp) if clamp is not None else None,
        mapping_lr_multiplier=float(mp.get("lr_multiplier", 0.01)),
        w_avg_beta=mp.get("w_avg_beta", 0.995),
    )


def generator_from_nvidia(sd: dict[str, torch.Tensor], init_kwargs: dict | None = None) -> Generator:
    """Build a ``Generator`` from an NVIDIA-layout ``G_ema`` state dict (+ its init kwargs if known)."""
    ours = nvidia_to_ours(sd)
    cfg = config_from_state_dict(ours)
    opts = _nvidia_options(init_kwargs or {})
    syn = dict((init_kwargs or {}).get("synthesis_kwargs") or {})
    if "channel_base" in syn and "channel_max" in syn:
        declared = {r: min(int(syn["channel_base"]) // r, int(syn["channel_max"])) for r in _resolutions(cfg)}
        if all(min(cfg["channel_base"] // r, cfg["channel_max"]) == c for r, c in declared.items()):
            cfg["channel_base"], cfg["channel_max"] = int(syn["channel_base"]), int(syn["channel_max"])
    cfg.update(conv_clamp=opts.conv_clamp, mapping_lr_multiplier=opts.mapping_lr_multiplier, w_avg_beta=opts.w_avg_beta)
    return _build(_check_inferred(cfg), ours)


def generator_from_rosinality(
    sd: dict[str, torch.Tensor],
    latent_avg: torch.Tensor | None = None,
    *,
    w_avg_samples: int = 10000,
) -> Generator:
    """Build a ``Generator`` from a rosinality ``g_ema`` state dict.

    Without ``latent_avg``, ``w_avg`` is estimated from ``w_avg_samples`` mapped samples (seed 0);
    missing constant-noise buffers are drawn with seed 0 (both deterministic).
    """
    ours = rosinality_to_ours(sd, latent_avg)
    cfg = _check_inferred(config_from_state_dict(ours))
    g = torch.Generator().manual_seed(0)
    G = Generator(**cfg)
    missing = [k for k in G.state_dict() if k not in ours]
    for k in missing:
        if k.endswith("noise_const"):
            ours[k] = torch.randn(G.state_dict()[k].shape, generator=g)
    need_w_avg = "mapping.w_avg" not in ours
    if need_w_avg:
        ours["mapping.w_avg"] = torch.zeros(cfg["w_dim"])
    G = _build(cfg, ours, G)
    if need_w_avg:
        G.estimate_w_avg(w_avg_samples, torch.Generator().manual_seed(0))
    return G


def _resolutions(cfg: dict) -> list[int]:
    return [2**i for i in range(2, int(math.log2(cfg["img_resolution"])) + 1)]


def _build(cfg: dict, sd: dict[str, torch.Tensor], G: Generator | None = None) -> Generator:
    G = G if G is not None else Generator(**cfg)
    expected = G.state_dict()
    missing = sorted(set(expected) - set(sd))
    extra = sorted(set(sd) - set(expected))
    if missing or extra:
        raise InputError(f"StyleGAN2 weights do not match the inferred architecture: missing {missing[:4]}, "
                         f"unexpected {extra[:4]}")
    bad = [k for k in expected if tuple(sd[k].shape) != tuple(expected[k].shape)]
    if bad:
        k = bad[0]
        raise InputError(f"StyleGAN2 weight {k} has shape {tuple(sd[k].shape)}, expected {tuple(expected[k].shape)}")
    G.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, strict=True)
    return G.eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------------
# File loaders
# --------------------------------------------------------------------------------------------------


def load_nvidia_pkl(path: str | os.PathLike, key: str = "G_ema") -> Generator:
    """Load generator ``key`` of an NVIDIA stylegan2-ada-pytorch pickle (restricted unpickler)."""
    data = read_nvidia_pickle(path)
    obj = data.get(key) if isinstance(data, dict) else None
    if not isinstance(obj, PersistentObject):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise InputError(f"{os.fspath(path)} has no StyleGAN network '{key}' (found: {keys})")
    if obj.class_name != "Generator":
        raise InputError(f"'{key}' in {os.fspath(path)} is a {obj.class_name}, not a Generator")
    with _malformed_is_input_error(path):
        return generator_from_nvidia(obj.state_dict(), obj.init_kwargs)


def load_rosinality_pt(path: str | os.PathLike, key: str = "g_ema", *, w_avg_samples: int = 10000) -> Generator:
    """Load a rosinality/stylegan2-pytorch checkpoint (``torch.load(weights_only=True)``)."""
    try:
        ckpt = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's weights_only refusal is many lines: keep the first meaningful one
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        reason = next((ln for ln in lines if "Unsupported global" in ln or "GLOBAL" in ln), lines[0] if lines
                      else type(exc).__name__)
        raise InputError(f"cannot load {os.fspath(path)} as a weights-only torch checkpoint (no code from it is "
                         f"run): {reason[:200]}") from None
    if not isinstance(ckpt, dict):
        raise InputError(f"{os.fspath(path)} is not a rosinality checkpoint (not a dict)")
    if key in ckpt:
        sd = ckpt[key]
    elif "style.1.weight" in ckpt:
        sd = ckpt
    else:
        raise InputError(f"{os.fspath(path)} has no '{key}' generator (keys: {sorted(ckpt)[:8]})")
    latent_avg = ckpt.get("latent_avg") if key in ckpt else None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()) or not (
            latent_avg is None or isinstance(latent_avg, torch.Tensor)):
        raise InputError(f"{os.fspath(path)}: '{key}' is not a state dict of tensors")
    with _malformed_is_input_error(path):
        return generator_from_rosinality(dict(sd), latent_avg, w_avg_samples=w_avg_samples)


@contextlib.contextmanager
def _malformed_is_input_error(path: str | os.PathLike) -> Iterator[None]:
    """A weights file whose tensors do not make a StyleGAN2 (wrong shapes, a self-referencing state, values of
    the wrong type, sizes no machine can allocate) is one InputError line naming it."""
    try:
        yield
    except InputError:
        raise
    except (TypeError, ValueError, AttributeError, IndexError, KeyError, RecursionError, RuntimeError) as exc:
        raise InputError(f"{os.fspath(path)} is not a usable StyleGAN2 generator ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from None


def _check_inferred(cfg: dict) -> dict:
    """Settings read off a file's tensor shapes, within the bounds our own exports are held to, before anything is
    built (a crafted stride-0 tensor of shape (512, 2**28) is a few bytes in a pickle)."""
    from facerestore.nn.safe_weights import check_settings

    bounded = {k: v for k, v in cfg.items() if k in _SETTINGS_BOUNDS}
    return {**cfg, **check_settings(bounded, _SETTINGS_BOUNDS, "StyleGAN2 weights")}


def load_zoo_generator(name: str = "stylegan2-ffhq-1024") -> Generator:
    """Generator from a zoo entry (NVIDIA ``.pkl`` or rosinality ``.pt``); never downloads.

    Raises ``WeightsMissingError`` (with the URL and cache path) when the file is not in the cache.
    """
    from facerestore import zoo

    path = zoo.weights_path(name)
    return load_stylegan2(path, format="pkl" if zoo.get_entry(name).format == "pkl" else "pt")


def load_stylegan2(path: str | os.PathLike, *, format: str | None = None) -> Generator:
    """Load StyleGAN2 generator weights by file type: NVIDIA ``.pkl``, rosinality ``.pt`` / ``.pth`` or our
    ``.safetensors`` (float32 in memory whatever the stored precision)."""
    fmt = format or os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
    if fmt == "pkl":
        return load_nvidia_pkl(path)
    if fmt in ("pt", "pth"):
        return load_rosinality_pt(path)
    if fmt == "safetensors":
        return load_safetensors_generator(path)
    raise InputError(f"unknown StyleGAN2 weight format {fmt!r} for {os.fspath(path)} "
                     "(expected .pkl, .pt, .pth or .safetensors)")


BUILTIN_PRIOR = "stylegan2-face-64"
CONFIG_KEY = "stylegan2_config"


def builtin_prior_path() -> str:
    """Path of our shipped StyleGAN2 face prior (``zoo/builtin/stylegan2-face-64.safetensors``)."""
    from facerestore.zoo import BUILTIN_DIR

    return os.path.join(BUILTIN_DIR, BUILTIN_PRIOR + ".safetensors")


# sane bounds of the Generator settings stored with our safetensors files (FFHQ config-f: 512 / 512 / 1024 px,
# 8 mapping layers, channel base 32768, max 512): a crafted ``w_dim: 2e6`` is refused before anything is built
_SETTINGS_BOUNDS = {
    "z_dim": ("int", 1, 4096),
    "w_dim": ("int", 1, 4096),
    "img_resolution": ("pow2", 4, 4096),
    "img_channels": ("int", 1, 4),
    "mapping_layers": ("int", 1, 32),
    "channel_base": ("int", 1, 1 << 20),
    "channel_max": ("int", 1, 4096),
    "conv_clamp": ("float?", 0.0, 1e6),
    "mapping_lr_multiplier": ("float", 0.0, 100.0),
    "w_avg_beta": ("float?", 0.0, 1.0),
    "use_noise": ("bool",),
}


def load_safetensors_generator(path: str | os.PathLike) -> Generator:
    """A ``Generator`` from our safetensors export (config in the metadata or the JSON file beside it).

    Malformed or hostile files fail with one InputError before anything large is allocated: the settings are
    checked against sane bounds and the shapes they imply (meta device) against the tensor shapes in the
    file's header; only then is the network built and the tensors read.
    """
    import json

    from facerestore.nn.safe_weights import (
        check_settings,
        check_shapes,
        load_safetensors,
        meta_shapes,
        open_safetensors,
        read_json,
    )

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"StyleGAN2 weights not found: {path}")
    meta, found = open_safetensors(path, "StyleGAN2 weights")
    name = os.path.basename(path)
    if CONFIG_KEY in meta:
        where = f"{name} ({CONFIG_KEY} metadata)"
        try:
            config = json.loads(meta[CONFIG_KEY])
        except (ValueError, RecursionError) as e:
            raise InputError(f"{where} is not valid JSON: {' '.join(str(e).split())[:200]}") from None
    else:
        side = os.path.splitext(path)[0] + ".json"
        if not os.path.isfile(side):
            raise InputError(f"{name} has no {CONFIG_KEY!r} metadata and no {os.path.basename(side)}")
        where = os.path.basename(side)
        config = read_json(side, "StyleGAN2 description").get("generator")
        if not isinstance(config, dict):
            raise InputError(f"{side} has no 'generator' settings")
    config = check_settings(config, _SETTINGS_BOUNDS, where)
    check_shapes(meta_shapes(lambda: Generator(**config), where), found, name)
    G = Generator(**config)
    state = load_safetensors(path, "StyleGAN2 weights")
    missing, unexpected = G.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    if missing or unexpected:
        raise InputError(f"{path} does not match its StyleGAN2 settings: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}")
    return G.eval().requires_grad_(False)  # as the .pkl / .pt loaders: frozen, w_avg never updated by a call


def save_safetensors_generator(G: Generator, path: str | os.PathLike, *, half: bool = True,
                               extra_metadata: dict[str, str] | None = None) -> str:
    """Write ``G`` as safetensors (fp16 when ``half``) with its settings in the metadata; atomic."""
    import json

    from facerestore.io import atomic_write_safetensors

    path = os.fspath(path)
    dtype = torch.float16 if half else torch.float32
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in G.state_dict().items()}
    atomic_write_safetensors(path, state, {CONFIG_KEY: json.dumps(G.config), **(extra_metadata or {})})
    return path


def generator_sha256(path: str | os.PathLike) -> str:
    """sha256 of a generator file; of a generator folder (e.g. MobileStyleGAN's OpenVINO IR pair), of its files'
    names and digests in name order. What the RLS flow and the W encoder record to name their generator."""
    import hashlib

    path = Path(path)
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(q for q in path.iterdir() if q.is_file()):
            h.update(f.name.encode() + b"\0" + generator_sha256(f).encode() + b"\n")
        return h.hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()



def sidecar_paths(generator_path: str | os.PathLike, suffix: str) -> tuple[Path, Path]:
    """(weights, record) of a file made for one generator and stored next to it: ``<generator stem><suffix>``
    ``.safetensors`` and ``.json`` (the RLS flow: ``.rls-flow``, the W encoder: ``.w-encoder``)."""
    p = Path(generator_path)
    stem = p.with_suffix("") if p.suffix else p
    return stem.with_name(stem.name + suffix + ".safetensors"), stem.with_name(stem.name + suffix + ".json")


def find_sidecar(generator_path: str | os.PathLike, suffix: str) -> Path | None:
    """The generator's ``suffix`` file stored next to it, else shipped with the package (``zoo/builtin/<name>``
    ``<suffix>.safetensors``, e.g. for the zoo's MobileStyleGAN), else None."""
    from facerestore.zoo import BUILTIN_DIR

    weights, _ = sidecar_paths(generator_path, suffix)
    return next((c for c in (weights, Path(BUILTIN_DIR) / weights.name) if c.is_file()), None)


def check_generator_record(path: str | os.PathLike, generator_path: str | os.PathLike, what: str, fix: str) -> None:
    """InputError (one line, ending in ``fix``) unless the record beside ``path`` (its .json) names
    ``generator_path``'s sha256: a file fitted to one generator's W space is meaningless for another. A file
    without a record, or a record without a digest, cannot be checked and is refused too."""
    from facerestore.nn.safe_weights import read_json

    rec_path = Path(path).with_suffix(".json")
    if not rec_path.is_file():
        raise InputError(f"{what} {Path(path).name} has no record {rec_path.name} naming its generator; {fix}")
    recorded = read_json(rec_path, f"{what} record").get("generator_sha256")
    if not recorded:
        raise InputError(f"{what} record {rec_path.name} names no generator sha256; {fix}")
    actual = generator_sha256(Path(generator_path))
    if recorded != actual:
        raise InputError(f"{what} {Path(path).name} was fitted to a generator with sha256 {recorded[:12]}..., not "
                         f"{Path(generator_path).name} ({actual[:12]}...); {fix}")

def prior_file(weights: str | os.PathLike | None = None) -> str:
    """The generator file named by ``weights``: None -> our built-in face prior; a zoo name
    (``stylegan2-ffhq-1024``) -> its cached file (never downloaded: WeightsMissingError); else a path that
    must exist (InputError). RLS looks for the flow next to this file."""
    from facerestore.errors import WeightsMissingError

    if weights is None:
        path = builtin_prior_path()
        if not os.path.isfile(path):
            raise WeightsMissingError(f"the built-in StyleGAN2 prior is missing from the installation: {path}")
        return path
    if os.fspath(weights).startswith("builtin:"):  # a built-in weight reference (zoo.refs)
        from facerestore.zoo.refs import resolve_weights

        return os.fspath(resolve_weights(weights))
    from facerestore import zoo

    if zoo.has_entry(os.fspath(weights)):  # an entry name wins over a same-named file here (./NAME for that file)
        return os.fspath(zoo.weights_path(os.fspath(weights)))
    if not os.path.isfile(weights):
        raise InputError(f"generator weights not found: {os.fspath(weights)}")
    return os.fspath(weights)


def resolve_generator(weights: str | os.PathLike | None = None) -> Generator:
    """Load the generator named by ``weights`` (see :func:`prior_file`): built-in prior, zoo name or file."""
    path = prior_file(weights)
    is_ref = weights is not None and os.fspath(weights).startswith("builtin:")
    from facerestore import zoo

    if weights is not None and not is_ref and zoo.has_entry(os.fspath(weights)):  # the entry knows the format
        if zoo.get_entry(str(weights)).format == "openvino-ir":  # MobileStyleGAN: a folder of OpenVINO IR files
            from facerestore.nn.mobilestylegan import load_mobilestylegan

            return load_mobilestylegan(path)  # type: ignore[return-value]  # same interface as Generator
        return load_zoo_generator(str(weights))
    return load_stylegan2(path)
