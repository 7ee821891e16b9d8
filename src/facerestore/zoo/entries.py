"""Static list of the zoo's declaration modules (one per family of upstream weights)."""

from facerestore.zoo import entries_faces, entries_methods, entries_metrics, entries_tfjs, entries_tflite  # noqa: F401
