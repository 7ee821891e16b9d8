"""Devices and precisions: one meaning of ``device="auto"`` and of ``half`` for the whole package.

- :func:`resolve_device`: "auto" / None -> "cuda" if available, else "mps", else "cpu"; an explicit device is
  checked to exist (one-line :class:`InputError` otherwise).
- :func:`half_dtype`: what ``half=True`` means on a device: float16 on CUDA and MPS, bfloat16 on the CPU
  (float16 matrix products are emulated and slow on CPUs; bfloat16 has native kernels there).
- :func:`cpu_has_native_bf16`: whether this CPU computes bfloat16 natively (where ``--half`` pays on a CPU).
- :func:`tune_cpu_allocator` / :func:`release_cpu_memory`: keep the memory freed between steps in the process
  (the CLI does it; 1.5-2x faster StyleGAN inversion on a CPU) and hand it back to the system between jobs.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

import torch

from facerestore.errors import InputError

__all__ = ["ALLOCATOR_ENV", "PRECISIONS", "cpu_has_native_bf16", "half_dtype", "precision_name",
           "release_cpu_memory", "resolve_device", "tune_cpu_allocator"]

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


def cpu_description(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU as benchmark records name it: its model (Linux ``/proc/cpuinfo``; else ``platform.processor()``) and
    the instruction set PyTorch's CPU kernels dispatch to (e.g. "AMD EPYC, AVX512 kernels"). The kernels differ
    between instruction sets and round differently, so a long optimisation run on another CPU does not give the same
    numbers to the last digit; records that name this can be told apart."""
    import platform

    model = ""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):  # older torch
        capability = "unknown"
    return f"{model}, {capability} kernels"


def machine_description(threads: int | None = None) -> str:
    """One line for a benchmark record: architecture, :func:`cpu_description`, cores, torch version and the torch
    threads used (default: ``torch.get_num_threads()``), e.g. "x86_64 (AMD EPYC, AVX512 kernels), 2 cores, torch
    2.13.0+cpu, 2 thread(s)"."""
    import platform

    n = torch.get_num_threads() if threads is None else int(threads)
    return (f"{platform.machine()} ({cpu_description()}), {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{n} thread(s)")


def precision_name(dtype: torch.dtype) -> str:
    """"fp32" / "fp16" / "bf16" for a floating dtype (ValueError for others)."""
    for name, d in PRECISIONS.items():
        if d == dtype:
            return name
    raise ValueError(f"no precision name for {dtype}")


# -- the CPU allocator -------------------------------------------------------------------------------------------

ALLOCATOR_ENV = "FACERESTORE_CPU_ALLOCATOR"  # "system": leave the C allocator as it is
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
_tuned = False


def _glibc_malloc() -> ctypes.CDLL | None:
    """The C library when the process allocates with glibc's malloc (Linux, no jemalloc/tcmalloc preloaded)."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    if any(name in os.environ.get("LD_PRELOAD", "") for name in ("jemalloc", "tcmalloc", "mimalloc")):
        return None  # an allocator that already keeps freed memory; its mallopt would not be glibc's
    try:
        libc = ctypes.CDLL(None)  # the symbols the process already uses
        libc.mallopt.argtypes, libc.malloc_trim.argtypes = [ctypes.c_int, ctypes.c_int], [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


def tune_cpu_allocator() -> bool:
    """Make glibc's malloc keep the memory a process frees for reuse instead of returning it to the system.

    By default glibc gives each large block (over a threshold that starts at 128 KB and adapts up to 32 MB) its
    own memory mapping, unmapped when freed, and returns freed memory at the top of its heap to the system, so
    each step of an optimisation (a forward and backward pass allocating the same 16-64 MB activations again)
    pays the page faults of fresh memory: measured here (2 cores), robust-inversion spends 35-50% of its time there
    (0.46 -> 0.31 s per step at 256 px bf16, 1.74 -> 0.88 s at the paper's 1024 px fp32). This turns off the
    separate mappings (``M_MMAP_MAX`` 0) and the returning of freed memory at the top of the heap
    (``M_TRIM_THRESHOLD`` at its maximum) for the rest of the process. The cost: the process keeps its peak
    memory until it exits or :func:`release_cpu_memory` is called (the web server calls it after each job).

    ``facerestore``'s CLI calls this once at start; Python users opt in by calling it. Returns True when it
    applied the setting (or had already), False where it does not apply: not Linux with glibc, another allocator
    preloaded (jemalloc, tcmalloc and mimalloc keep freed memory themselves), or ``FACERESTORE_CPU_ALLOCATOR=system``
    in the environment.
    """
    global _tuned
    if _tuned:
        return True
    if os.environ.get(ALLOCATOR_ENV, "").strip().lower() == "system":
        return False
    libc = _glibc_malloc()
    if libc is None:
        return False
    _tuned = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    return _tuned


def release_cpu_memory() -> bool:
    """Hand the memory glibc's malloc keeps free back to the system (``malloc_trim``); True when some was.

    For long-running processes between jobs after :func:`tune_cpu_allocator`; safe to call from any thread and
    at any time (a no-op returning False where glibc's malloc is not the allocator)."""
    libc = _glibc_malloc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
