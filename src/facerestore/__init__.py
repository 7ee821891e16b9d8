"""facerestore: restore degraded face photos; degrade, evaluate, benchmark and train restorers.

Heavy sub-packages are imported on first use, so ``import facerestore`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from facerestore._version import __version__

# public name -> module that defines it (imported lazily; no import-time scanning)
_LAZY = {
    "restore_photo": "facerestore.pipeline",
    "list_restorers": "facerestore.methods",
    "get_spec": "facerestore.methods",
    "load_restorer": "facerestore.methods",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'facerestore' has no attribute {name!r}")
