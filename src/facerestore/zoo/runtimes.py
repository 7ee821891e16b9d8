"""Reference runtimes: the upstream software our ports are tested against, fetched into the cache, never installed.

The TF.js models of the zoo (MobileFaceNet and MobileFace identity networks, ESRGAN-thick) are read by our own code
and run by our PyTorch ports. To prove those ports equal the models, the test suite runs the same files through
TensorFlow.js itself (``tests/nn/tfjs_runtime.py``), on Node.js. The runtime is six npm packages at exact versions
(``TFJS_RUNTIME``: tfjs-core, tfjs-converter (graph models), tfjs-layers (Keras models), the CPU backend, and their
two runtime dependencies ``long`` and ``seedrandom``; the other dependencies npm would add are TypeScript types
and ``node-fetch`` for loading over HTTP, which loading from memory does not use). :func:`fetch_tfjs_runtime` runs
``npm pack NAME@VERSION`` for each (the published tarball; no install scripts run), checks its sha256, unpacks its
regular files (no links, nothing outside the package folder) into ``<cache>/runtimes/tfjs-<version>/node_modules/``,
and moves the tree into place in one rename. ``facerestore models download --packages`` fetches it with the package
weights, so that the README's test command runs these comparisons; without it (or without ``node``) they skip with
a reason. Nothing of facerestore imports or runs it: the package itself never needs Node.js.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from facerestore.errors import WeightsHashError, WeightsMissingError
from facerestore.zoo.packages import download_archive, npm_pack_command

__all__ = ["TFJS_RUNTIME", "TFJS_VERSION", "extract_package_tree", "fetch_tfjs_runtime", "tfjs_runtime_cached",
           "tfjs_runtime_dir"]

TFJS_VERSION = "4.22.0"
# (name, version, sha256 of the npm tarball); licences: Apache-2.0 (tfjs), Apache-2.0 (long), MIT (seedrandom)
TFJS_RUNTIME: tuple[tuple[str, str, str], ...] = (
    ("@tensorflow/tfjs-core", TFJS_VERSION, "e8f8aa285ad0237b901e7d79995a1450993cf11fb1b3cc02f09de167fdaf9496"),
    ("@tensorflow/tfjs-converter", TFJS_VERSION, "f8fcaa0d13446e5637f590f72b1595c2571779a81a927003baa0d488165b1a7a"),
    ("@tensorflow/tfjs-backend-cpu", TFJS_VERSION, "d3c32e2fe0452fe302e88dde434cd8d7b126ce21754c6c972b28e3bcb8ec0878"),
    ("@tensorflow/tfjs-layers", TFJS_VERSION, "4fd27e07713d489eee7df5b0c5075956e6ee7d86ada3921af91cd5476c451bbc"),
    ("long", "4.0.0", "b4bfa0f1695b39b7beb11ffe71c936528e5f34bd3969192fdc4ef1df790c95fb"),
    ("seedrandom", "3.0.5", "f217e14961edb2a61f23b3eaee7477578021f0db15f69941a866e9f55e518544"),
)
MAX_TREE_BYTES = 256 << 20  # unpacked size of one package (tfjs-core: ~60 MB)
STAMP = ".facerestore-runtime"  # in the node_modules folder: which packages (and tarball hashes) it holds


def tfjs_runtime_dir() -> Path:
    """``<cache>/runtimes/tfjs-<version>/node_modules``: what ``NODE_PATH`` names to run TensorFlow.js."""
    from facerestore import zoo

    return zoo.home() / "runtimes" / f"tfjs-{TFJS_VERSION}" / "node_modules"


def extract_package_tree(archive: Path, dest: Path) -> None:
    """Unpack the regular files under ``package/`` of an npm tarball into the folder ``dest`` (made here). Links,
    devices, absolute paths and ``..`` are refused (WeightsHashError: not a plain published package)."""
    total = 0
    with tarfile.open(archive, "r:gz") as t:
        for info in t:
            path = PurePosixPath(info.name)
            if info.isdir():
                continue
            if not info.isfile() or path.is_absolute() or ".." in path.parts or path.parts[:1] != ("package",) \
                    or len(path.parts) < 2:
                raise WeightsHashError(f"{archive.name}: unexpected member {info.name!r} (not a plain package file)")
            total += info.size
            if total > MAX_TREE_BYTES:
                raise WeightsHashError(f"{archive.name}: unpacks to more than {MAX_TREE_BYTES} bytes")
            target = dest.joinpath(*path.parts[1:])
            target.parent.mkdir(parents=True, exist_ok=True)
            src = t.extractfile(info)
            assert src is not None
            with src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)


def tfjs_runtime_cached() -> bool:
    """Whether the cache holds this runtime: the stamp written after every package was checked and unpacked."""
    stamp = tfjs_runtime_dir() / STAMP
    try:
        return stamp.read_text(encoding="utf-8") == _stamp_text()
    except OSError:
        return False


def _stamp_text() -> str:
    return "".join(f"{name}@{version} {sha}\n" for name, version, sha in TFJS_RUNTIME)


def fetch_tfjs_runtime() -> Path:
    """Fetch TensorFlow.js (``TFJS_RUNTIME``) into :func:`tfjs_runtime_dir` (replaced in one rename) and return
    that folder; nothing is fetched when it is already there (:func:`tfjs_runtime_cached`). WeightsMissingError
    (one line) without npm or the registry; WeightsHashError for a tarball that is not the published one."""
    dest = tfjs_runtime_dir()
    if tfjs_runtime_cached():
        return dest
    hint = "run `facerestore models download --packages` where the npm registry is reachable"
    if shutil.which("npm") is None:
        raise WeightsMissingError("the TensorFlow.js reference runtime comes from npm packages, but npm is not "
                                  "installed (install Node.js/npm)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=dest.parent) as tmp:
        staged = Path(tmp) / "node_modules"
        for name, version, sha256 in TFJS_RUNTIME:
            download = Path(tmp) / "download" / name.replace("/", "__")
            download.mkdir(parents=True)
            spec = f"{name}@{version}"
            command = npm_pack_command(spec, download)
            extract_package_tree(download_archive(command, download, spec, sha256, spec, hint), staged / name)
        (staged / STAMP).write_text(_stamp_text(), encoding="utf-8")  # every package checked and unpacked
        if dest.exists():
            os.replace(dest, Path(tmp) / "old")
        os.replace(staged, dest)
    return dest
