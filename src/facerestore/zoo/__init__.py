"""Weight zoo: a registry of upstream weight files (URL, sha256, size, licence, format) and one cache.

Files live in ``$FACERESTORE_HOME`` (default ``~/.cache/facerestore``), under ``weights/``; nothing is
ever written into site-packages or the working directory. Nothing is downloaded unless asked for
(``facerestore models download NAME`` or ``fetch(name)``); a missing file raises
``WeightsMissingError`` whose one-line message names the file, the URL and where to put it.

Our own trained weights are not in the zoo: they ship inside the package (``facerestore/zoo/builtin``).

Entries are declared statically in the ``entries_*`` modules (no import-time scanning).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from facerestore.errors import WeightsHashError, WeightsMissingError, did_you_mean
from facerestore.zoo.packages import Member, Package, fetch_package

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"


@dataclass(frozen=True)
class ZooEntry:
    """One downloadable weight file.

    sha256 is the full hex digest when known. Some upstream projects publish only the leading hex
    digits of the sha256 (torch.hub's "-<hash>.pth" file names); then sha256 holds that prefix and the
    check compares the prefix. ``size`` is in bytes (0 when unknown).

    Weights inside a registry package (``package``, see :mod:`facerestore.zoo.packages`) have no URL: their
    cache entry is the folder ``filename`` holding the package's listed members, each with its own sha256.
    """

    name: str
    url: str
    sha256: str
    filename: str
    licence: str
    format: str  # "pth" (torch.load weights_only), "safetensors", "pkl" (restricted unpickler), "dat" (dlib)
    description: str
    size: int = 0
    used_by: tuple[str, ...] = field(default_factory=tuple)
    package: Package | None = None

    @property
    def source(self) -> str:
        """Where it comes from, for people: the URL, or "pip random-face==..." / "npm @scope/name@version"."""
        if self.package is None:
            return self.url
        return f"{self.package.manager} {self.package.spec}" + (" (sdist)" if self.package.sdist else "")


_REGISTRY: dict[str, ZooEntry] = {}
_LOADED = threading.Event()  # set once the declaration modules are imported (a user's register() does not set it)
_LOAD_LOCK = threading.RLock()  # web jobs look entries up from several threads


def register(entry: ZooEntry) -> ZooEntry:
    """Add ``entry`` to the zoo (the declaration modules call this; so may users, before or after first use)."""
    with _LOAD_LOCK:
        if entry.name in _REGISTRY:
            raise ValueError(f"duplicate zoo entry {entry.name!r}")
        _REGISTRY[entry.name] = entry
    return entry


def _load_entries() -> None:
    if _LOADED.is_set():
        return
    with _LOAD_LOCK:  # re-entrant: the declaration modules' register() calls take it again
        if _LOADED.is_set():
            return
        # Static list of declaration modules: add a module here when adding a family of weights.
        from facerestore.zoo import entries  # noqa: F401

        _LOADED.set()


def list_entries() -> list[ZooEntry]:
    _load_entries()
    return sorted(_REGISTRY.values(), key=lambda e: e.name)


def has_entry(name: str) -> bool:
    """True when ``name`` is a zoo entry (e.g. to tell an entry name from a file path)."""
    _load_entries()
    return name in _REGISTRY


def get_entry(name: str) -> ZooEntry:
    _load_entries()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise KeyError(f"unknown zoo entry {name!r}{did_you_mean(name, _REGISTRY)}; known: {known}") from None


def home() -> Path:
    """Root of facerestore's cache: $FACERESTORE_HOME (a relative value is made absolute against the current
    directory, so that messages and records name one folder) or ~/.cache/facerestore."""
    from facerestore.errors import InputError

    env = os.environ.get("FACERESTORE_HOME")
    try:
        return Path(env).expanduser().absolute() if env else Path.home() / ".cache" / "facerestore"
    except RuntimeError as exc:  # "~user" of no such user, or no home directory at all
        raise InputError(f"cannot locate the weights cache ({exc}): set FACERESTORE_HOME to a folder") from None


def cache_dir() -> Path:
    return home() / "weights"


def cached_path(name: str) -> Path:
    """Where the file (or, for a package entry, the folder) of entry ``name`` is or would be in the cache."""
    return cache_dir() / get_entry(name).filename


def _members_status(entry: ZooEntry, folder: Path) -> str:
    return "ok" if _mismatched_member(entry, folder) is None else "mismatch"


def _mismatched_member(entry: ZooEntry, folder: Path) -> Member | None:
    """The first member of a package entry whose cached file does not have its sha256 (None: all match)."""
    assert entry.package is not None
    for m in entry.package.members:
        if sha256_file(folder / m.filename) != m.sha256:
            return m
    return None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_status(name: str, path: str | os.PathLike | None = None) -> str:
    """"ok" (sha256 matches the entry), "mismatch", or "unverified" (the entry has no published sha256: the
    file cannot be checked and must never be reported as "ok"). OSError when the file cannot be read."""
    entry = get_entry(name)
    if entry.package is not None:
        return _members_status(entry, Path(path) if path else cached_path(name))
    digest = sha256_file(Path(path) if path else cached_path(name))
    if not entry.sha256:
        return "unverified"
    return "ok" if digest.startswith(entry.sha256.lower()) else "mismatch"


def verify(name: str, path: str | os.PathLike | None = None) -> bool:
    """True if the file's sha256 matches the entry (full digest or published prefix).

    Entries whose upstream publishes no hash (``sha256 == ""``) cannot be verified: the file is accepted
    with a warning that prints its digest, so users can pin it.
    """
    entry = get_entry(name)
    p = Path(path) if path else cached_path(name)
    if entry.package is not None:
        return _members_status(entry, p) == "ok"
    digest = sha256_file(p)
    if not entry.sha256:
        warnings.warn(f"zoo entry '{name}' has no published sha256; {p} has sha256 {digest} (unverified)",
                      stacklevel=2)
        return True
    return digest.startswith(entry.sha256.lower())


def is_available(name: str) -> bool:
    """The cached file (or every member of a package entry) is there (not hash-checked)."""
    e = get_entry(name)
    p = cached_path(name)
    if e.package is not None:
        return all((p / m.filename).is_file() for m in e.package.members)
    return p.is_file()


def missing_message(name: str) -> str:
    e = get_entry(name)
    if e.package is not None:
        return (f"weights '{name}' ({e.description}) are not in the cache {cached_path(name)}: run "
                f"`facerestore models download {name}` where the {e.package.manager} registry is reachable "
                f"(it fetches {e.source} without installing it)")
    return (
        f"weights '{name}' ({e.description}) are not in the cache: download {e.url} and save it as "
        f"{cached_path(name)} (or run `facerestore models download {name}`)"
    )


def weights_path(name: str, *, check_hash: bool = True) -> Path:
    """Path of the cached file for ``name``; raises WeightsMissingError / WeightsHashError.

    Never downloads: call ``fetch`` (or the CLI) for that.
    """
    p = cached_path(name)
    if not is_available(name):
        raise WeightsMissingError(missing_message(name))
    if check_hash and not verify(name, p):
        entry = get_entry(name)
        bad = _mismatched_member(entry, p) if entry.package is not None else None
        what = (f"{p / bad.filename} does not match sha256 {bad.sha256}" if bad is not None
                else f"{p} does not match sha256 {entry.sha256}")
        raise WeightsHashError(f"weights '{name}': {what}; run `facerestore models download {name}` to replace it")
    return p


def _unwritable_cache(folder: Path, exc: OSError) -> Exception:
    """The one-line error for a weights cache that cannot be written (what to set instead)."""
    from facerestore.errors import OutputError

    return OutputError(f"cannot write into the weights cache {folder}: {exc.strerror or exc} "
                       "(set FACERESTORE_HOME to a writable folder)")


@contextlib.contextmanager
def _download_lock(name: str) -> Iterator[None]:
    """Holds an exclusive lock on ``weights/.NAME.lock`` (POSIX; elsewhere no lock): two downloads of one entry
    (two commands, the web app and the CLI) take turns instead of replacing each other's folder mid-load."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    import errno
    import sys

    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # read-only is enough for flock: a lock file another user of a shared cache created (0644) still opens
        fd = os.open(folder / f".{name}.lock", os.O_RDONLY | os.O_CREAT, 0o666)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and folder.is_dir():
            yield  # no lock to be had: download unlocked (the rename keeps each folder whole)
            return
        raise _unwritable_cache(folder, exc) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another download of '{name}' to finish", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def fetch(name: str, *, timeout: float = 60.0) -> Path:
    """Download entry ``name`` into the cache (atomically), verify its hash and return the path. Concurrent
    fetches of one entry take turns; the second finds the first's download and returns it."""
    entry = get_entry(name)
    dest = cached_path(name)
    if is_available(name) and verify(name, dest):
        return dest
    with _download_lock(name):
        if is_available(name) and verify(name, dest):  # fetched by another process while this one waited
            return dest
        if entry.package is not None:
            return fetch_package(entry.package, dest, what=name)
        return _fetch_url(entry, dest, timeout)


def _fetch_url(entry: ZooEntry, dest: Path, timeout: float) -> Path:
    """Download ``entry.url`` to a temporary file beside ``dest``, check its size and sha256, fsync it and rename
    it over ``dest``."""
    import http.client

    name = entry.name
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise _unwritable_cache(dest.parent, exc) from None
    try:
        from facerestore.io import new_file_mode

        os.fchmod(fd, new_file_mode())  # a shared cache stays readable by its other users (mkstemp makes 0600)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(entry.url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out)
            announced = resp.headers.get("Content-Length")
            got = out.tell()
        # a connection cut short is no error to urllib: compare with what the server announced and what we know
        if announced and announced.isdigit() and got != int(announced):
            raise WeightsMissingError(f"{missing_message(name)} (download cut short: {got} of {announced} bytes)")
        if entry.size and got != entry.size:
            raise WeightsHashError(f"downloaded '{name}' from {entry.url} but it has {got} bytes, not {entry.size}")
        if not sha256_file(tmp).startswith(entry.sha256.lower()):
            raise WeightsHashError(f"downloaded '{name}' from {entry.url} but its sha256 is wrong")
        with open(tmp, "rb") as f:  # on disk before the rename: a power cut never leaves a short file as the entry
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except WeightsMissingError:  # already the one-line message (it is an OSError too)
        raise
    except (OSError, http.client.HTTPException) as exc:  # IncompleteRead: a chunked reply cut off
        raise WeightsMissingError(f"{missing_message(name)} (download failed: {type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from exc
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


__all__ = [
    "BUILTIN_DIR",
    "Member",
    "Package",
    "ZooEntry",
    "cache_dir",
    "cached_path",
    "fetch",
    "get_entry",
    "has_entry",
    "home",
    "is_available",
    "list_entries",
    "missing_message",
    "register",
    "verify",
    "verify_status",
    "weights_path",
]
