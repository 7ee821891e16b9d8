"""Devices and precisions: the meaning of half on each device, the CPU's native bf16 flag, the CPU allocator."""

from __future__ import annotations

import os

import pytest
import torch

from facerestore.nn.devices import (
    ALLOCATOR_ENV,
    cpu_description,
    cpu_has_native_bf16,
    half_dtype,
    machine_description,
    precision_name,
)


def test_half_means_bf16_on_cpu_and_fp16_elsewhere():
    assert half_dtype("cpu") == torch.bfloat16 and half_dtype("cuda:0") == torch.float16
    assert precision_name(torch.bfloat16) == "bf16" and precision_name(torch.float32) == "fp32"


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n\nprocessor\t: 1\n")
    assert cpu_has_native_bf16(str(info))
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 amx_bf16 amx_tile\n")
    assert cpu_has_native_bf16(str(info))
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n")  # AVX-512 without BF16
    assert not cpu_has_native_bf16(str(info))
    assert not cpu_has_native_bf16(str(tmp_path / "absent"))  # another system: no claim


def test_cpu_description_names_the_model_and_the_kernels_torch_dispatches_to(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9654 96-Core Processor\n")
    capability = torch.backends.cpu.get_cpu_capability()
    assert cpu_description(str(info)) == f"AMD EPYC 9654 96-Core Processor, {capability} kernels"
    assert cpu_description(str(tmp_path / "absent")).endswith(f", {capability} kernels")  # another system
    line = machine_description(3)
    assert f"({cpu_description()}), {os.cpu_count()} cores, torch {torch.__version__}, 3 thread(s)" in line


# -- the CPU allocator: checked in a fresh interpreter (the setting is per process) ---------------------------

_PROBE = """
import ctypes, json, sys
from facerestore.nn import devices

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
tuned = devices.tune_cpu_allocator()
before = libc.mallinfo2().hblkhd
block = libc.malloc(64 << 20)  # the size of one fp32 activation of MobileStyleGAN's last block
mapped = libc.mallinfo2().hblkhd - before
libc.free(block)
kept = libc.mallinfo2().fordblks
released = devices.release_cpu_memory()
print(json.dumps({"tuned": tuned, "mapped_mb": mapped >> 20, "kept_mb": kept >> 20, "released": released,
                  "kept_after_release_mb": libc.mallinfo2().fordblks >> 20}))
"""


def _probe(env_extra: dict[str, str]) -> dict:
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in (ALLOCATOR_ENV, "LD_PRELOAD")} | env_extra
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _has_mallinfo2() -> bool:
    import ctypes
    import platform

    return platform.libc_ver()[0] == "glibc" and hasattr(ctypes.CDLL(None), "mallinfo2")


@pytest.mark.skipif(not _has_mallinfo2(), reason="needs Linux with glibc 2.33+ (mallinfo2) to look inside malloc")
def test_tuned_allocator_keeps_large_blocks_in_the_heap_for_reuse():
    tuned = _probe({})
    assert tuned["tuned"] is True
    assert tuned["mapped_mb"] == 0  # the 64 MB block came from the heap, not a mapping of its own
    assert tuned["kept_mb"] >= 64  # and once freed it stays there for the next step
    assert tuned["released"] is True and tuned["kept_after_release_mb"] < 64  # until handed back between jobs
    system = _probe({ALLOCATOR_ENV: "system"})  # the opt-out: glibc's own behaviour
    assert system["tuned"] is False and system["mapped_mb"] == 64


def test_allocator_is_left_alone_where_it_does_not_apply(monkeypatch):
    from facerestore.nn import devices

    monkeypatch.setattr(devices, "_tuned", False)
    monkeypatch.setenv(ALLOCATOR_ENV, "system")
    assert devices.tune_cpu_allocator() is False
    monkeypatch.delenv(ALLOCATOR_ENV)
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")  # another allocator in charge
    assert devices._glibc_malloc() is None and devices.tune_cpu_allocator() is False
    assert devices.release_cpu_memory() is False
    monkeypatch.setattr(devices.sys, "platform", "darwin")
    monkeypatch.delenv("LD_PRELOAD")
    assert devices._glibc_malloc() is None and devices.tune_cpu_allocator() is False
