"""Devices and precisions: one meaning of ``device="auto"`` and of ``half`` for the whole package.

- :func:`resolve_device`: "auto" / None -> "cuda" if available, else "mps", else "cpu"; an explicit device is
  checked to exist (one-line :class:`InputError` otherwise).
- :func:`half_dtype`: what ``half=True`` means on a device: float16 on CUDA and MPS, bfloat16 on the CPU
  (float16 matrix products are emulated and slow on CPUs; bfloat16 has native kernels there).
- :func:`cpu_has_native_bf16`: whether this CPU computes bfloat16 natively (where ``--half`` pays on a CPU).
"""

from __future__ import annotations

import torch

from facerestore.errors import InputError

__all__ = ["PRECISIONS", "cpu_has_native_bf16", "half_dtype", "precision_name", "resolve_device"]

# precision name -> dtype (the names a method spec lists as supported)
PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str | torch.device | None) -> str:
    """'auto' / None -> cuda if available, else mps, else cpu; checks that an explicit device exists."""
    if isinstance(name, torch.device):
        name = str(name)
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if _mps_available():
            return "mps"
        return "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda requested but no CUDA device is available")
    if name == "mps" and not _mps_available():
        raise InputError("--device mps requested but MPS is not available")
    if name not in ("cpu", "mps") and not name.startswith("cuda"):
        raise InputError(f"unknown device {name!r}; use cpu, cuda, cuda:N or mps")
    return name


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def half_dtype(device: str | torch.device) -> torch.dtype:
    """The reduced precision that ``half=True`` selects on ``device``: bfloat16 on CPU, float16 elsewhere."""
    return torch.bfloat16 if torch.device(device).type == "cpu" else torch.float16


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU lists AVX-512 BF16 or AMX BF16 among its flags (Linux ``/proc/cpuinfo``); False when it
    does not or when that file is absent (other systems: no claim is made)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[-1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        return False
    return False


def precision_name(dtype: torch.dtype) -> str:
    """"fp32" / "fp16" / "bf16" for a floating dtype (ValueError for others)."""
    for name, d in PRECISIONS.items():
        if d == dtype:
            return name
    raise ValueError(f"no precision name for {dtype}")
