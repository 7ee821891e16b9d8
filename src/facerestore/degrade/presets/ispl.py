"""Paper 000 (ISPL / HiFaceGAN) tasks: 4x SR, 16x mosaic, denoise, deblur, JPEG, full; and the code's variants.

The paper (§4.3) fixes the task types, "4x bicubic downsampling", "16 pixel mosaics" and "JPEG quality
Q in [50, 85]", but no noise or blur magnitudes: those come from the authors' degradation script
(Lotayou/Face-Renovation ``degrade.py``, imgaug, 0-255 scale), as do the "-code" presets:

- down: imgaug ``Resize((0.125, 0.25))`` (cubic, not antialiased) then back to the input size (cubic).
- noise, one of: ``AdditiveGaussianNoise(scale=(20, 40), per_channel=True)``,
  ``AdditiveLaplaceNoise(scale=(20, 40), per_channel=True)``, ``AdditivePoissonNoise(lam=(15, 30),
  per_channel=True)`` (a Poisson count with a random sign, signal-independent).
- blur, one of: ``MotionBlur(k=(10, 20))`` (kernel size = line length, angle U(0, 360)) or
  ``GaussianBlur(sigma=(3, 8))`` (kernel size as imgaug: odd(max(c * sigma, 5)), c = 3.3/2.9/2.6).
- JPEG: ``JpegCompression(compression=(50, 85))``: imgaug maps compression c to PIL quality
  clip(round(1 + 99 * (1 - c / 101)), 1, 100), i.e. qualities 17..51 (not 50..85).
- full: blur, noise, JPEG and down in random order (``Sequential(..., random_order=True)``).
"""

from __future__ import annotations

import torch

from facerestore.degrade.presets._common import (
    TaskInfo,
    choice,
    down_up_ops,
    draw_seed,
    gaussian_kernel_op,
    gaussian_noise_op,
    jpeg_op,
    motion_kernel_op,
    permutation,
    randint,
    round_size,
    uniform,
)

PAPER = "000 ISPL / HiFaceGAN"

NOISE_SIGMA_255 = (20.0, 40.0)
LAPLACE_SCALE_255 = (20.0, 40.0)
POISSON_LAM_255 = (15.0, 30.0)
MOTION_KERNEL = (10, 20)
GAUSSIAN_SIGMA = (3.0, 8.0)
JPEG_QUALITY_PAPER = (50, 85)
JPEG_COMPRESSION_CODE = (50.0, 85.0)
DOWN_SCALE_CODE = (0.125, 0.25)


def imgaug_gaussian_ksize(sigma: float) -> int:
    """Kernel size imgaug's GaussianBlur uses with OpenCV (covers ~99/97/95 % of the weight)."""
    c = 3.3 if sigma < 3.0 else 2.9 if sigma < 5.0 else 2.6
    k = int(max(c * sigma, 5))
    return k + 1 if k % 2 == 0 else k


def imgaug_jpeg_quality(compression: float) -> int:
    """imgaug's JpegCompression: compression in [0, 100] -> PIL quality (higher compression, lower quality)."""
    return int(min(max(round(1 + 99 * (1.0 - compression / 101.0)), 1), 100))


def noise_op(g: torch.Generator) -> dict:
    kind = choice(g, ["gaussian", "poisson", "laplacian"])
    if kind == "gaussian":
        return gaussian_noise_op(g, uniform(g, *NOISE_SIGMA_255) / 255.0)
    if kind == "laplacian":
        return {"op": "laplacian_noise", "scale": uniform(g, *LAPLACE_SCALE_255) / 255.0, "gray": False,
                "seed": draw_seed(g)}
    return {"op": "random_sign_poisson_noise", "lam": uniform(g, *POISSON_LAM_255), "per_channel": True,
            "seed": draw_seed(g)}


def blur_op(g: torch.Generator) -> dict:
    if choice(g, ["motion", "gaussian"]) == "motion":
        k = randint(g, *MOTION_KERNEL)
        k += 1 - k % 2  # odd, as imgaug's MotionBlur makes it: an even kernel shifts the image by half a pixel
        return motion_kernel_op(k, k, uniform(g, 0.0, 360.0))
    sigma = uniform(g, *GAUSSIAN_SIGMA)
    return gaussian_kernel_op(sigma, imgaug_gaussian_ksize(sigma))


def jpeg_paper_op(g: torch.Generator) -> dict:
    return jpeg_op(randint(g, *JPEG_QUALITY_PAPER))


def jpeg_code_op(g: torch.Generator) -> dict:
    c = uniform(g, *JPEG_COMPRESSION_CODE)
    return jpeg_op(imgaug_jpeg_quality(c), compression=c)


def sr4x_ops(h: int, w: int) -> list[dict]:
    # "downscaled accordingly via bicubic interpolation": antialiased (PIL/MATLAB-style) bicubic
    return down_up_ops(h, w, round_size(h, w, 0.25), "bicubic", antialias=True)


def down_code_ops(g: torch.Generator, h: int, w: int) -> list[dict]:
    s = uniform(g, *DOWN_SCALE_CODE)
    ops = down_up_ops(h, w, round_size(h, w, s), "bicubic", antialias=False)
    ops[0]["scale"] = s
    return ops


def _full(g: torch.Generator, groups: dict[str, list[dict]]) -> dict:
    names = list(groups)
    order = [names[i] for i in permutation(g, len(names))]
    return {"ops": [op for name in order for op in groups[name]], "order": order}


def _sample_sr4x(g, h, w, level):
    return {"ops": sr4x_ops(h, w)}


def _sample_mosaic(g, h, w, level):
    return {"ops": [{"op": "mosaic", "block": 16}]}


def _sample_denoise(g, h, w, level):
    return {"ops": [noise_op(g)]}


def _sample_deblur(g, h, w, level):
    return {"ops": [blur_op(g)]}


def _sample_jpeg(g, h, w, level):
    return {"ops": [jpeg_paper_op(g)]}


def _sample_full(g, h, w, level):
    # draw every component first, then the order, so the values do not depend on the order
    groups = {"down": sr4x_ops(h, w), "noise": [noise_op(g)], "blur": [blur_op(g)], "jpeg": [jpeg_paper_op(g)]}
    return _full(g, groups)


def _sample_sr4x_code(g, h, w, level):
    return {"ops": down_code_ops(g, h, w)}


def _sample_jpeg_code(g, h, w, level):
    return {"ops": [jpeg_code_op(g)]}


def _sample_full_code(g, h, w, level):
    groups = {"blur": [blur_op(g)], "noise": [noise_op(g)], "jpeg": [jpeg_code_op(g)], "down": down_code_ops(g, h, w)}
    return _full(g, groups)


_NOISE = "1/3 each: Gaussian sigma U(20,40)/255, Poisson (random sign, lam U(15,30)/255), Laplace b U(20,40)/255"
_BLUR = "1/2 each: motion blur (line of k in 10..20 px, angle U(0,360)), Gaussian blur sigma U(3,8)"

TASKS = [
    TaskInfo("sr4x", PAPER, "4x bicubic downsampling, then bicubic back to the input size", source="paper",
             sampler=_sample_sr4x),
    TaskInfo("mosaic16x", PAPER, "16x16-pixel mosaic (each block replaced by its mean)", source="paper",
             sampler=_sample_mosaic),
    TaskInfo("denoise", PAPER, "noise, " + _NOISE, source="paper+code", sampler=_sample_denoise),
    TaskInfo("deblur", PAPER, "blur, " + _BLUR, source="paper+code", sampler=_sample_deblur),
    TaskInfo("jpeg", PAPER, "JPEG quality uniform in 50..85 (4:2:0)", source="paper", sampler=_sample_jpeg),
    TaskInfo("full", PAPER, "sr4x + denoise + deblur + jpeg in random order (no mosaic)", source="paper+code",
             sampler=_sample_full),
    TaskInfo("sr4x-code", PAPER, "code: down by U(0.125,0.25) (cubic, no antialias), cubic back to input size",
             source="code", sampler=_sample_sr4x_code),
    TaskInfo("jpeg-code", PAPER, "code: imgaug compression U(50,85) = JPEG quality 17..51 (4:2:0)",
             source="code", sampler=_sample_jpeg_code),
    TaskInfo("full-code", PAPER, "code: blur, noise, jpeg-code and sr4x-code in random order", source="code",
             sampler=_sample_full_code),
]
