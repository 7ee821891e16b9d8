"""Static table of every metric with its metadata (no import-time scanning).

Each entry names the factory as "module:attribute"; ``create`` imports it on demand, so listing the
metrics imports nothing heavy.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any

import torch

INF = math.inf


@dataclass(frozen=True)
class MetricSpec:
    name: str
    factory: str  # "module:attribute" of a Metric subclass or factory function
    kind: str  # "full-reference" | "no-reference" | "distribution" | "face"
    lower_better: bool
    needs_reference: bool
    score_range: tuple[float, float]
    description: str
    papers: tuple[str, ...] = ()
    weights: tuple[str, ...] = ()  # zoo entries (or "dlib") the metric needs
    kwargs: dict[str, Any] = field(default_factory=dict)
    min_side: int = 0  # the smallest image side in px the metric can score (0: any)


_M = "facerestore.metrics"
SPECS: tuple[MetricSpec, ...] = (
    # full reference, pixel statistics
    MetricSpec("psnr", f"{_M}.fullref:PSNR", "full-reference", False, True, (0, INF),
               "PSNR (dB) on RGB, data range 1", ("000", "001", "004")),
    MetricSpec("psnr_y", f"{_M}.fullref:PSNR", "full-reference", False, True, (0, INF),
               "PSNR (dB) on BT.601 'MATLAB' Y (16-235), as BasicSR", ("000", "001"), kwargs={"y_channel": True}),
    MetricSpec("ssim", f"{_M}.fullref:SSIM", "full-reference", False, True, (-1, 1),
               "SSIM (Gaussian 11x11, sigma 1.5) averaged over RGB", ("000", "001"), min_side=11),
    MetricSpec("ssim_y", f"{_M}.fullref:SSIM", "full-reference", False, True, (-1, 1),
               "SSIM on BT.601 'MATLAB' Y, as BasicSR", ("000", "001"), kwargs={"y_channel": True}, min_side=11),
    MetricSpec("ms_ssim", f"{_M}.fullref:MSSSIM", "full-reference", False, True, (0, 1),
               "multi-scale SSIM (5 scales, Wang et al. 2003 weights)", ("000", "004"), min_side=176),
    # the official IQA convention (MATLAB rgb2gray of 8-bit data; msssim.m's weighted-sum pooling): these two
    # reproduce the official SSIM / MS-SSIM rows of the calibration set (tests/metrics/test_calibration.py)
    MetricSpec("ssim_gray", f"{_M}.fullref:SSIM", "full-reference", False, True, (-1, 1),
               "SSIM on MATLAB rgb2gray (8-bit), the official IQA convention", (), kwargs={"gray": True}, min_side=11),
    MetricSpec("ms_ssim_gray", f"{_M}.fullref:MSSSIM", "full-reference", False, True, (0, 1),
               "MS-SSIM on MATLAB rgb2gray (8-bit) with msssim.m's weighted-sum pooling, the official convention",
               (), kwargs={"gray": True, "method": "wtd_sum"}, min_side=176),
    # full reference, deep features
    MetricSpec("lpips", f"{_M}.lpips:LPIPS", "full-reference", True, True, (0, INF),
               "LPIPS v0.1, AlexNet backbone", ("000", "002", "003", "004"),
               ("alexnet-imagenet", "lpips-alex-v0.1"), {"net": "alex"}, min_side=31),
    MetricSpec("lpips_vgg", f"{_M}.lpips:LPIPS", "full-reference", True, True, (0, INF),
               "LPIPS v0.1, VGG16 backbone", ("002",), ("vgg16-imagenet", "lpips-vgg-v0.1"), {"net": "vgg"},
               min_side=16),
    MetricSpec("lpips_squeeze", f"{_M}.lpips:LPIPS", "full-reference", True, True, (0, INF),
               "LPIPS v0.1, SqueezeNet 1.1 backbone", (),
               ("squeezenet1_1-imagenet", "lpips-squeeze-v0.1"), {"net": "squeeze"}, min_side=17),
    MetricSpec("dists", f"{_M}.dists:DISTS", "full-reference", True, True, (0, 1),
               "DISTS (VGG16 structure and texture similarity)", ("003",), ("vgg16-imagenet", "dists-vgg16"),
               min_side=16),
    MetricSpec("ea_dists", f"{_M}.dists:EADISTS", "full-reference", True, True, (0, 2),
               "edge-aware DISTS: DISTS + DISTS of Sobel gradient magnitude (paper 003)", ("003",),
               ("vgg16-imagenet", "dists-vgg16"), min_side=16),
    MetricSpec("ms_swd", f"{_M}.swd:MSSWD", "full-reference", True, True, (0, INF),
               "multi-scale sliced Wasserstein colour distance (paper 003, table 3d)", ("003",), min_side=81),
    # face identity and geometry (dlib by default: works offline)
    MetricSpec("fed", f"{_M}.face:FED", "face", True, True, (0, INF),
               "feature embedding distance: L2 between dlib 128-d face embeddings (not unit length: norms ~1.4-1.5)",
               ("000",), ("dlib",)),
    MetricSpec("deg", f"{_M}.face:IdentityAngle", "face", True, True, (0, 180),
               "identity angle (degrees) between dlib face embeddings (paper 003's 'Deg.' used ArcFace: not "
               "comparable with its numbers)", ("003",), ("dlib",)),
    MetricSpec("id_mobileface", f"{_M}.face:IdentityDistanceMobileFace", "face", True, True, (0, 2),
               "identity distance: cosine distance of MobileFace 256-d embeddings, independent of dlib "
               "(evaluation only: model licence not stated)", (), ("mobileface", "dlib")),
    MetricSpec("id_mfn", f"{_M}.face:IdentityDistanceMFN", "face", True, True, (0, 2),
               "identity distance: cosine distance of MobileFaceNet 192-d embeddings, independent of dlib but "
               "weak (ROC AUC 0.70 on photo pairs; prefer id_mobileface; evaluation only: model licence not "
               "stated)", (), ("mobilefacenet", "dlib")),
    MetricSpec("lle", f"{_M}.face:LLE", "face", True, True, (0, INF),
               "landmark localisation error / L2-LD: mean L2 (px) over dlib 68 landmarks", ("000", "003"),
               ("dlib",)),
    MetricSpec("ald", f"{_M}.face:ALD", "face", True, True, (0, INF),
               "affine landmark distance A-LD over all 68 landmarks (paper 003 eq. 14-15)", ("003",),
               ("dlib",)),
    MetricSpec("ald_e", f"{_M}.face:ALD", "face", True, True, (0, INF),
               "A-LD on eyes and eyebrows", ("003",), ("dlib",), {"region": "eyes"}),
    MetricSpec("ald_m", f"{_M}.face:ALD", "face", True, True, (0, INF),
               "A-LD on the mouth border", ("003",), ("dlib",), {"region": "mouth"}),
    # no reference
    MetricSpec("niqe", f"{_M}.niqe:NIQE", "no-reference", True, False, (0, INF),
               "NIQE, MATLAB-compatible, standard pristine parameters", ("000", "004"), min_side=192),
    # distributions
    MetricSpec("fid", f"{_M}.fid:FID", "distribution", True, True, (0, INF),
               "Frechet Inception distance (pytorch-fid Inception pool3, float64)", ("000", "004"),
               ("pt-inception-fid",)),
    MetricSpec("kid", f"{_M}.fid:KID", "distribution", True, True, (-INF, INF),
               "kernel Inception distance (cubic polynomial kernel, unbiased)", ("004",), ("pt-inception-fid",)),
    MetricSpec("pfid", f"{_M}.fid:PatchFID", "distribution", True, True, (0, INF),
               "patch FID: 1000 random 128x128 crops per image (paper 002)", ("002",), ("pt-inception-fid",)),
)

_BY_NAME = {s.name: s for s in SPECS}


def list_metrics(kind: str | None = None) -> list[str]:
    """Names of all metrics (optionally of one kind), in table order."""
    return [s.name for s in SPECS if kind is None or s.kind == kind]


def get_spec(name: str) -> MetricSpec:
    try:
        return _BY_NAME[name.lower()]
    except KeyError:
        from facerestore.errors import InputError, did_you_mean

        raise InputError(f"unknown metric {name!r}{did_you_mean(name, _BY_NAME)}; available: {', '.join(_BY_NAME)}"
                         ) from None


def create(name: str, device: str | torch.device = "cpu", **kwargs: Any) -> Any:
    """Instantiate metric ``name`` on ``device``; ``kwargs`` override the spec's defaults."""
    spec = get_spec(name)
    modname, attr = spec.factory.split(":")
    factory = getattr(importlib.import_module(modname), attr)
    metric = factory(**{**spec.kwargs, **kwargs})
    metric.name = spec.name
    metric.lower_better = spec.lower_better
    metric.needs_reference = spec.needs_reference
    metric.score_range = spec.score_range
    return metric.to(device).eval()
