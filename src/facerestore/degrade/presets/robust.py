"""Paper 002 (robust unsupervised StyleGAN restoration) tasks: 4 degradations x 5 levels + 11 compositions.

§5.1 of the paper (values per level XS, S, M, L, XL):

- upsample: downsample by 2/4/8/16/32 with a filter drawn uniformly from bilinear, bicubic and Lanczos
  (antialiased, PIL-style); the target is the low-resolution image. f_hat: average pooling by the factor.
- denoise: Poisson(x * photons) / photons with photons 96/48/24/12/6, then each pixel (all channels)
  dead with probability 0.04/0.08/0.16/0.32/0.64, clamped. f_hat: Gaussian approximation of the shot
  noise with the clamp surrogate, the dead-pixel mask unknown (a fresh mask per call, as the authors' code).
- deartifact: libjpeg at quality 18/15/12/9/6 with 4:2:2 chroma subsampling (the code uses 4:2:0:
  "robust-deartifact-code"). f_hat: DiffJPEG with the same tables and cubic rounding (alpha 0.8).
- inpaint: 1/5/9/13/17 strokes of width 0.08 * resolution between random points in the outer thirds.
  f_hat = f (the mask is known).

§5.2: compositions of 2, 3 or 4 of them at level M, always applied in the order upsample, denoise,
deartifact, inpaint (so a later degradation acts on the low-resolution image); f_hat chains the single
surrogates. Composition names join the single names with "+" (alias: the letters U, N, A, P, e.g.
"robust-UNA" = "robust-upsample+denoise+deartifact").
"""

from __future__ import annotations

from itertools import combinations

from facerestore.degrade.presets._common import LEVELS, TaskInfo, choice, draw_seed, jpeg_op, resize_op

PAPER = "002 robust unsupervised StyleGAN restoration"

FACTORS = dict(zip(LEVELS, (2, 4, 8, 16, 32)))
PHOTONS = dict(zip(LEVELS, (96.0, 48.0, 24.0, 12.0, 6.0)))
DEAD = dict(zip(LEVELS, (0.04, 0.08, 0.16, 0.32, 0.64)))
QUALITY = dict(zip(LEVELS, (18, 15, 12, 9, 6)))
STROKES = dict(zip(LEVELS, (1, 5, 9, 13, 17)))
STROKE_WIDTH = 0.08
DOWN_FILTERS = ("bilinear", "bicubic", "lanczos")
SINGLE = ("upsample", "denoise", "deartifact", "inpaint")
LETTERS = dict(zip(SINGLE, "UNAP"))
COMPOSITION_LEVEL = "M"


def upsample_ops(g, h, w, level):
    f = FACTORS[level]
    if h // f < 1 or w // f < 1:
        from facerestore.errors import InputError

        raise InputError(f"a {w}x{h} image is smaller than the x{f} downsampling of level {level}: use a larger image "
                         "or a lower level")
    method = choice(g, list(DOWN_FILTERS))
    return [resize_op((h // f, w // f), method, True, factor=f, surrogate="avgpool")]


def denoise_ops(g, h, w, level):
    return [{"op": "poisson_dead_pixels", "photons": PHOTONS[level], "p": DEAD[level], "seed": draw_seed(g),
             "mask_seed": draw_seed(g)}]


def deartifact_ops(g, h, w, level, subsampling="4:2:2"):
    return [jpeg_op(QUALITY[level], subsampling)]


def inpaint_ops(g, h, w, level):
    return [{"op": "mask", "size": [h, w], "n_strokes": STROKES[level], "width": STROKE_WIDTH, "seed": draw_seed(g)}]


_BUILDERS = {"upsample": upsample_ops, "denoise": denoise_ops, "deartifact": deartifact_ops, "inpaint": inpaint_ops}


def _size_after(op, h, w):
    return (op["size"][0], op["size"][1]) if op["op"] == "resize" else (h, w)


def _single_sampler(name, **kw):
    def sample(g, h, w, level):
        return {"ops": _BUILDERS[name](g, h, w, level, **kw)}

    return sample


def _composition_sampler(names):
    def sample(g, h, w, level):
        ops = []
        for name in names:
            new = _BUILDERS[name](g, h, w, COMPOSITION_LEVEL)
            for op in new:
                h, w = _size_after(op, h, w)
            ops += new
        return {"ops": ops}

    return sample


def composition_name(names) -> str:
    return "robust-" + "+".join(names)


COMPOSITIONS = [c for n in (2, 3, 4) for c in combinations(SINGLE, n)]  # 6 + 4 + 1 = 11, in paper order
ALIASES = {"robust-" + "".join(LETTERS[n] for n in c): composition_name(c) for c in COMPOSITIONS}

_SINGLE_INFO = {
    "upsample": ("downsample by 2/4/8/16/32 (random bilinear/bicubic/Lanczos filter); output is low-res",
                 "paper: average pooling by the factor", "1/factor of the input size"),
    "denoise": ("Poisson shot noise (photons 96/48/24/12/6) then dead pixels (p .04/.08/.16/.32/.64)",
                "paper: Gaussian approximation + clamp surrogate, dead pixels as an unknown (fresh) mask",
                "input size"),
    "deartifact": ("libjpeg quality 18/15/12/9/6, 4:2:2 chroma subsampling",
                   "paper: DiffJPEG (same tables, cubic rounding alpha 0.8)", "input size"),
    "inpaint": ("1/5/9/13/17 random strokes of width 0.08*res masked to 0", "paper: the known mask (f_hat = f)",
                "input size"),
}

TASKS = [
    TaskInfo("robust-" + name, PAPER, desc, levels=LEVELS, default_level="M", source="paper", surrogate=sur,
             output=out, sampler=_single_sampler(name))
    for name, (desc, sur, out) in _SINGLE_INFO.items()
]
TASKS.append(
    TaskInfo("robust-deartifact-code", PAPER, "code: libjpeg quality 18/15/12/9/6, 4:2:0 chroma subsampling",
             levels=LEVELS, default_level="M", source="code",
             surrogate="paper: DiffJPEG (same tables, 4:2:0, cubic rounding alpha 0.8)",
             sampler=_single_sampler("deartifact", subsampling="4:2:0"))
)
TASKS += [
    TaskInfo(composition_name(c), PAPER,
             "composition at level M, applied in order: " + ", ".join(c), levels=(COMPOSITION_LEVEL,),
             default_level=COMPOSITION_LEVEL, source="paper",
             surrogate="paper: chain of the single surrogates in the same order",
             output="1/8 of the input size" if "upsample" in c else "input size",
             sampler=_composition_sampler(c))
    for c in COMPOSITIONS
]
