"""Devices and precisions: the meaning of half on each device and the CPU's native bf16 flag."""

from __future__ import annotations

import torch

from facerestore.nn.devices import cpu_has_native_bf16, half_dtype, precision_name


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
