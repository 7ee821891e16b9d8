"""Degradation engine: batched torch primitives, differentiable surrogates and the papers' named tasks.

Images are (B, 3, H, W) float tensors in [0, 1]. Random functions take a ``generator`` (torch.Generator,
int seed or None) and return ``(y, params)`` with one JSON-serialisable dict per sample (its ``seed`` and
values); passing ``params`` back replays the output exactly.

Tasks::

    from facerestore import degrade
    y, params = degrade.apply(x, "robust-upsample", level="L", generator=0)
    f_hat = degrade.surrogate("robust-upsample", params)   # differentiable, for inversion methods
    [t.name for t in degrade.list_tasks()]

See docs/degradations.md for every task, its paper and parameter ranges.
"""

from __future__ import annotations

from facerestore.degrade._random import ensure_generator, make_generator
from facerestore.degrade.color import adjust_color, color_jitter, grayscale, hsv_to_rgb, rgb_to_hsv
from facerestore.degrade.diffjpeg import DiffJPEG, diff_jpeg
from facerestore.degrade.jpeg import jpeg, quality_to_tables, read_quant_tables, read_subsampling
from facerestore.degrade.kernels import (
    blur,
    gaussian_blur,
    gaussian_kernel,
    generalized_gaussian_kernel,
    kernel_from_params,
    motion_kernel,
    plateau_kernel,
    random_kernel,
)
from facerestore.degrade.masks import apply_mask, stroke_mask
from facerestore.degrade.noise import (
    dead_pixels,
    gaussian_noise,
    laplacian_noise,
    poisson_noise,
    random_sign_poisson_noise,
    salt_and_pepper,
)
from facerestore.degrade.resize import (
    downsample_pulse_bicubic,
    mosaic,
    project_area,
    project_pulse_bicubic,
    project_resize,
    resize,
)
from facerestore.degrade.surrogates import (
    avgpool_downsample,
    bernoulli_unknown_mask,
    clamp_surrogate,
    cubic_round,
    known_mask,
    poisson_bernoulli_surrogate,
    poisson_gaussian,
)
from facerestore.degrade.tasks import LEVELS, TaskInfo, apply, get_task, list_tasks, surrogate

__all__ = [
    "LEVELS",
    "DiffJPEG",
    "TaskInfo",
    "adjust_color",
    "apply",
    "apply_mask",
    "avgpool_downsample",
    "bernoulli_unknown_mask",
    "blur",
    "clamp_surrogate",
    "color_jitter",
    "cubic_round",
    "dead_pixels",
    "diff_jpeg",
    "downsample_pulse_bicubic",
    "ensure_generator",
    "gaussian_blur",
    "gaussian_kernel",
    "gaussian_noise",
    "generalized_gaussian_kernel",
    "get_task",
    "grayscale",
    "hsv_to_rgb",
    "jpeg",
    "kernel_from_params",
    "known_mask",
    "laplacian_noise",
    "list_tasks",
    "make_generator",
    "mosaic",
    "motion_kernel",
    "plateau_kernel",
    "poisson_bernoulli_surrogate",
    "poisson_gaussian",
    "poisson_noise",
    "project_area",
    "project_pulse_bicubic",
    "project_resize",
    "quality_to_tables",
    "random_kernel",
    "random_sign_poisson_noise",
    "read_quant_tables",
    "read_subsampling",
    "resize",
    "rgb_to_hsv",
    "salt_and_pepper",
    "stroke_mask",
    "surrogate",
]
