"""Restoration methods, one sub-package per paper, behind one ``Restorer`` interface.

    >>> import facerestore
    >>> facerestore.list_restorers()                       # MethodSpec of every method
    >>> r = facerestore.load_restorer("ispl", device="cpu")
    >>> out = r.restore(lq)        # (B, 3, H, W) aligned face crops in [0, 1] -> same size, restored

- :class:`MethodSpec` (``spec.py``): a method's metadata, declared once as its restorer class's ``spec``;
- :class:`Restorer` (``restorer.py``): the wrapper that owns checks, device, precision and size; a method
  implements only its network call;
- ``registry.py``: the static list of method classes (one line per method) and the training adapters.
"""

from __future__ import annotations

from facerestore.methods.registry import (
    REGISTRY,
    Registry,
    create_adapter,
    get_spec,
    list_restorers,
    load_restorer,
    training_adapter,
)
from facerestore.methods.restorer import Restorer, check_images, resize_crop
from facerestore.methods.spec import MethodSpec

__all__ = [
    "REGISTRY",
    "MethodSpec",
    "Registry",
    "Restorer",
    "check_images",
    "create_adapter",
    "get_spec",
    "list_restorers",
    "load_restorer",
    "resize_crop",
    "training_adapter",
]
