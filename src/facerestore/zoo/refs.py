"""Weight references: how a method's default weights are named, turned into a file path in one place.

- ``"builtin:FILE"``: a file shipped inside the package (``facerestore/zoo/builtin/FILE``);
- a zoo entry name (``"stylegan2-ffhq-1024"``): its file in the cache, hash-checked (never downloaded here;
  one-line :class:`WeightsMissingError` naming the URL and the place to put it), even when a file of that name
  is in the working directory (``./NAME`` names the file);
- anything else: a path, which must exist.
"""

from __future__ import annotations

import os
from pathlib import Path

from facerestore.errors import InputError, WeightsMissingError

__all__ = ["BUILTIN_PREFIX", "resolve_weights"]

BUILTIN_PREFIX = "builtin:"


def resolve_weights(ref: str | os.PathLike) -> Path:
    """The file a weight reference names (see the module docstring)."""
    from facerestore import zoo

    text = os.fspath(ref)
    if text.startswith(BUILTIN_PREFIX):
        path = Path(zoo.BUILTIN_DIR) / text[len(BUILTIN_PREFIX):]
        if not path.is_file():
            raise WeightsMissingError(f"built-in weights are missing from the installation: {path}")
        return path
    if zoo.has_entry(text):  # before files: a file named like an entry must not replace the hash-checked one
        return zoo.weights_path(text)  # (``./NAME`` names such a file)
    if Path(text).is_file():
        return Path(text)
    raise InputError(f"weights not found: {text} (neither a file nor a zoo entry)")
