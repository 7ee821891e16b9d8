"""Where dlib's model files are: the installed ``face_recognition_models`` package or ``$FACERESTORE_DLIB_MODELS``.

The four ``.dat`` files ship inside the ``face_recognition_models`` package (a dependency). Its
``__init__`` imports ``pkg_resources`` (deprecated, absent on new setuptools), so the files are located
with ``importlib.util.find_spec`` without importing the package. ``$FACERESTORE_DLIB_MODELS`` may name
another folder holding the same file names (checked first). Loading them is :mod:`facerestore.faces.dlib_models`'s
job (detectors, predictors) and :mod:`facerestore.nn.backbones.dlib_resnet`'s (the recognition network).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from facerestore.errors import WeightsMissingError

__all__ = ["MODEL_FILES", "model_path", "models_dir"]

MODEL_FILES: tuple[str, ...] = (
    "shape_predictor_68_face_landmarks.dat",
    "shape_predictor_5_face_landmarks.dat",
    "mmod_human_face_detector.dat",
    "dlib_face_recognition_resnet_model_v1.dat",
)

_ENV = "FACERESTORE_DLIB_MODELS"


def models_dir() -> Path | None:
    """Folder of the installed ``face_recognition_models`` package's ``models/`` (None if not installed)."""
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [str(Path(spec.origin).parent)]
    for root in roots:
        d = Path(root) / "models"
        if d.is_dir():
            return d
    return None


def model_path(name: str) -> Path:
    """Path of dlib model file ``name`` (one of MODEL_FILES); raises WeightsMissingError if absent."""
    if name not in MODEL_FILES:
        raise ValueError(f"unknown dlib model {name!r}; known: {', '.join(MODEL_FILES)}")
    env = os.environ.get(_ENV)
    if env:
        p = Path(env).expanduser() / name
        if p.is_file():
            return p
    d = models_dir()
    if d is not None and (d / name).is_file():
        return d / name
    where = f"${_ENV} ({env}) or " if env else ""
    raise WeightsMissingError(
        f"dlib model {name} not found in {where}the face_recognition_models package: "
        "pip install face-recognition-models (or set $FACERESTORE_DLIB_MODELS to a folder holding it)"
    )
