"""dlib model files (detectors, landmark predictors, face recogniser) and cached loaders.

The files are found by :mod:`facerestore.zoo.dlib_files` (the ``face_recognition_models`` package or
``$FACERESTORE_DLIB_MODELS``).

Loaded models are cached per process: the 68-point predictor takes about 1.5 s to load.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

from facerestore.errors import WeightsMissingError
from facerestore.zoo.dlib_files import MODEL_FILES, model_path, models_dir

__all__ = ["MODEL_FILES", "cnn_detector", "face_recognizer", "hog_detector", "import_dlib", "model_path",
           "models_dir", "shape_predictor"]

# dlib's C++ objects are not documented as thread-safe for concurrent loads; the lock only guards loading.
_LOAD_LOCK = threading.Lock()


def import_dlib() -> Any:
    """Import dlib, or raise WeightsMissingError with the package to install."""
    try:
        import dlib
    except ImportError as exc:  # pragma: no cover - dlib is a declared dependency
        raise WeightsMissingError("dlib is not installed: pip install dlib-bin (or dlib)") from exc
    return dlib


@cache
def hog_detector() -> Any:
    """dlib's frontal-face HOG + linear SVM detector (built into dlib, no file needed)."""
    dlib = import_dlib()
    with _LOAD_LOCK:
        return dlib.get_frontal_face_detector()


@cache
def cnn_detector() -> Any:
    """dlib's MMOD CNN face detector (``mmod_human_face_detector.dat``)."""
    dlib = import_dlib()
    path = model_path("mmod_human_face_detector.dat")
    with _LOAD_LOCK:
        return dlib.cnn_face_detection_model_v1(str(path))


@cache
def shape_predictor(points: int = 68) -> Any:
    """dlib landmark predictor with 68 (iBUG 300-W) or 5 (eye corners + nose base) points."""
    if points not in (5, 68):
        raise ValueError(f"dlib shape predictors have 5 or 68 points, not {points}")
    dlib = import_dlib()
    path = model_path(f"shape_predictor_{points}_face_landmarks.dat")
    with _LOAD_LOCK:
        return dlib.shape_predictor(str(path))


@cache
def face_recognizer() -> Any:
    """dlib's ResNet face recogniser (128-d embeddings, 0.6 same-person distance threshold)."""
    dlib = import_dlib()
    path = model_path("dlib_face_recognition_resnet_model_v1.dat")
    with _LOAD_LOCK:
        return dlib.face_recognition_model_v1(str(path))


__all__ = [
    "MODEL_FILES",
    "cnn_detector",
    "face_recognizer",
    "hog_detector",
    "import_dlib",
    "model_path",
    "models_dir",
    "shape_predictor",
]
