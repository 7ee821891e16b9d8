"""Weight zoo: cache location, hash checks, offline errors (nothing is downloaded here)."""

from __future__ import annotations

import hashlib

import pytest

from conftest import free_port
from facerestore import zoo
from facerestore.errors import WeightsHashError, WeightsMissingError


@pytest.fixture
def fake_entry(monkeypatch, tmp_path):
    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path / "home"))
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)  # local addresses only: never through a proxy
    monkeypatch.setenv("no_proxy", "*")
    data = b"weights!"
    url = f"http://127.0.0.1:{free_port()}/fake.pth"  # nothing listens there: a download fails at once
    entry = zoo.ZooEntry(name="fake-net", url=url,
                         sha256=hashlib.sha256(data).hexdigest()[:10], filename="fake.pth",
                         licence="MIT", format="pth", description="test entry")
    zoo.list_entries()  # make sure the static table is loaded first
    monkeypatch.setitem(zoo._REGISTRY, entry.name, entry)
    return entry, data


def test_every_entry_is_complete():
    entries = zoo.list_entries()
    assert entries
    for e in entries:
        assert e.licence and e.filename, e.name
        if e.package is not None:  # weights inside a registry package: every member and the archive pinned
            assert not e.url and e.package.sha256 and all(len(m.sha256) == 64 for m in e.package.members), e.name
            continue
        assert e.url.startswith("https://"), e.name
        assert e.format in ("pth", "safetensors", "pkl", "dat", "onnx", "pt", "npz"), e
        assert all(c in "0123456789abcdef" for c in e.sha256), e.name


def test_cache_lives_in_facerestore_home(fake_entry, tmp_path):
    entry, _ = fake_entry
    assert zoo.cached_path(entry.name) == tmp_path / "home" / "weights" / "fake.pth"


def test_missing_weights_error_names_file_url_and_destination(fake_entry):
    entry, _ = fake_entry
    with pytest.raises(WeightsMissingError) as err:
        zoo.weights_path(entry.name)
    msg = str(err.value)
    assert "\n" not in msg and entry.url in msg and str(zoo.cached_path(entry.name)) in msg


def test_hash_prefix_is_checked(fake_entry):
    entry, data = fake_entry
    p = zoo.cached_path(entry.name)
    p.parent.mkdir(parents=True)
    p.write_bytes(data)
    assert zoo.weights_path(entry.name) == p
    p.write_bytes(b"tampered")
    with pytest.raises(WeightsHashError):
        zoo.weights_path(entry.name)


def test_unknown_hash_is_accepted_only_with_a_warning(fake_entry, monkeypatch):
    entry, data = fake_entry
    monkeypatch.setitem(zoo._REGISTRY, entry.name, zoo.ZooEntry(**{**entry.__dict__, "sha256": ""}))
    p = zoo.cached_path(entry.name)
    p.parent.mkdir(parents=True)
    p.write_bytes(data)
    with pytest.warns(UserWarning, match="no published sha256"):
        assert zoo.verify(entry.name)


def test_fetch_offline_fails_with_one_line_error(fake_entry):
    entry, _ = fake_entry
    with pytest.raises(WeightsMissingError) as err:
        zoo.fetch(entry.name, timeout=2)
    assert "download failed" in str(err.value) and "\n" not in str(err.value)
    assert not list(zoo.cache_dir().glob("*.part"))


def test_models_cli_lists_and_refuses_unknown(fake_entry, capsys):
    from facerestore.cli import main

    assert main(["models", "list", "fake-net"]) == 0
    out = capsys.readouterr().out
    assert "fake-net" in out and "missing" in out
    assert main(["models", "list"]) == 0  # the whole list says where the built-in weights are listed
    assert "restore --list-methods" in capsys.readouterr().out
    assert main(["models", "verify", "fake-net"]) == 1  # named and not there: it cannot be used
    assert "fake-net: missing" in capsys.readouterr().out
    assert main(["models", "verify"]) == 0  # a survey of the whole zoo lists what is missing without failing
    assert main(["models", "download", "no-such-entry"]) == 2


def test_models_download_goes_on_after_an_entry_it_cannot_fetch(monkeypatch, capsys, tmp_path):
    from facerestore import zoo
    from facerestore.cli import main

    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path / "home"))  # the command probes the cache: never the user's

    def fetch(name):
        if name == "facemesh-468":
            raise WeightsMissingError(f"{name}: download failed (offline)")
        return f"/cache/{name}"

    monkeypatch.setattr(zoo, "fetch", fetch)
    assert main(["models", "download", "facemesh-468", "mobileface"]) == 1
    captured = capsys.readouterr()
    assert "mobileface: /cache/mobileface" in captured.out
    assert f"  licence: {zoo.get_entry('mobileface').licence}" in captured.out  # what was fetched may be used for
    assert "skipped facemesh-468: facemesh-468: download failed (offline)" in captured.err
    assert main(["models", "download", "facemesh-468"]) == 2  # nothing fetched at all: one error line


def test_has_entry_tells_entry_names_from_other_strings():
    from facerestore import zoo

    assert zoo.has_entry("stylegan2-ffhq-1024") and zoo.has_entry("pt-inception-fid")
    assert not zoo.has_entry("ffhq.pkl") and not zoo.has_entry("")


@pytest.fixture
def local_server():
    """A server on this machine (nothing leaves it) whose handler sends ``body`` but announces ``announce`` bytes."""
    import http.server
    import threading

    reply = {"body": b"", "announce": 0, "chunked": False}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # the http.server API
            self.send_response(200)
            if reply["chunked"]:  # one chunk announced larger than what is sent, then the connection closes
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(f"{len(reply['body']) + 50:x}\r\n".encode() + reply["body"])
            else:
                self.send_header("Content-Length", str(reply["announce"]))
                self.end_headers()
                self.wfile.write(reply["body"])
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/w.pth", reply
    server.shutdown()
    server.server_close()


def test_fetch_refuses_a_download_cut_short_and_keeps_a_whole_one(fake_entry, local_server, monkeypatch):
    """urllib reads a body cut short without an error; an entry without a pinned hash would then have cached a
    truncated file as valid. Whole downloads land readable by other users, like any file the process writes."""
    import os

    from facerestore.io import new_file_mode

    entry, data = fake_entry
    url, reply = local_server
    loose = zoo.ZooEntry(**{**entry.__dict__, "url": url, "sha256": ""})  # no hash to catch it
    monkeypatch.setitem(zoo._REGISTRY, entry.name, loose)
    reply.update(body=data, announce=len(data) + 100)
    with pytest.raises(WeightsMissingError, match="cut short") as err:
        zoo.fetch(entry.name, timeout=5)
    assert str(err.value).count("not in the cache") == 1  # said once, not wrapped in itself
    assert not zoo.cached_path(entry.name).exists() and not list(zoo.cache_dir().glob("*.part"))
    reply.update(chunked=True)  # a chunked reply cut off: http.client's IncompleteRead, not an OSError
    with pytest.raises(WeightsMissingError, match="IncompleteRead") as err:
        zoo.fetch(entry.name, timeout=5)
    assert "\n" not in str(err.value) and not list(zoo.cache_dir().glob("*.part"))
    reply.update(chunked=False)
    sized = zoo.ZooEntry(**{**loose.__dict__, "size": len(data) + 1})
    monkeypatch.setitem(zoo._REGISTRY, entry.name, sized)
    reply.update(announce=len(data))
    with pytest.raises(WeightsHashError, match="bytes"):
        zoo.fetch(entry.name, timeout=5)
    monkeypatch.setitem(zoo._REGISTRY, entry.name, zoo.ZooEntry(**{**entry.__dict__, "url": url}))
    path = zoo.fetch(entry.name, timeout=5)
    assert path.read_bytes() == data and (os.stat(path).st_mode & 0o777) == new_file_mode()


def test_entries_registered_before_first_use_keep_the_built_in_ones(monkeypatch):
    zoo.list_entries()  # loaded first, so that monkeypatch records (and restores) the real declaration modules
    monkeypatch.setattr(zoo, "_REGISTRY", {})
    monkeypatch.setattr(zoo, "_LOADED", __import__("threading").Event())
    import sys

    # the declaration modules register on import: make them import again into the empty registry
    for mod in [m for m in sys.modules if m.startswith("facerestore.zoo.entries")]:
        monkeypatch.delitem(sys.modules, mod)
        monkeypatch.delattr(zoo, mod.rsplit(".", 1)[1], raising=False)
    mine = zoo.ZooEntry(name="my-net", url="http://invalid.example/m.pth", sha256="", filename="m.pth",
                        licence="MIT", format="pth", description="a user's entry")
    zoo.register(mine)
    assert zoo.get_entry("my-net") is mine and zoo.has_entry("stylegan2-ffhq-1024")


def test_home_is_absolute_and_an_unknown_user_is_one_line(monkeypatch, tmp_path):
    from facerestore.errors import InputError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FACERESTORE_HOME", "cache")
    assert zoo.home() == tmp_path / "cache" and zoo.home().is_absolute()
    monkeypatch.setenv("FACERESTORE_HOME", "~no-such-user-facerestore/x")
    with pytest.raises(InputError, match="FACERESTORE_HOME"):
        zoo.home()


def test_two_fetches_of_one_entry_take_turns(fake_entry, local_server, monkeypatch, capsys):
    """Two downloads at once (the web app and the CLI): the second waits for the first (and says so), then finds
    its file instead of downloading again."""
    import threading
    import time

    entry, data = fake_entry
    url, reply = local_server
    monkeypatch.setitem(zoo._REGISTRY, entry.name, zoo.ZooEntry(**{**entry.__dict__, "url": url}))
    reply.update(body=data, announce=len(data))
    calls, real = [], zoo._fetch_url
    entered, gate = threading.Event(), threading.Event()

    def slow_fetch(*a, **k):
        calls.append(1)
        entered.set()
        gate.wait(10)  # holds the lock until the second fetch is seen waiting
        return real(*a, **k)

    monkeypatch.setattr(zoo, "_fetch_url", slow_fetch)
    results = []
    threads = [threading.Thread(target=lambda: results.append(zoo.fetch(entry.name, timeout=5))) for _ in range(2)]
    threads[0].start()
    assert entered.wait(10)
    threads[1].start()
    said, deadline = "", time.monotonic() + 10
    while "waiting for another download" not in said and time.monotonic() < deadline:
        time.sleep(0.02)
        said += capsys.readouterr().err
    gate.set()
    for t in threads:
        t.join(10)
    assert "waiting for another download of 'fake-net'" in said
    assert len(results) == 2 and results[0] == results[1] and results[0].read_bytes() == data
    assert len(calls) == 1  # one download: the second found the first's file once it had the lock


def test_a_mismatching_package_member_is_named(tmp_path, monkeypatch):
    from facerestore.zoo.packages import Member, Package

    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path / "home"))
    pkg = Package("pip", "p==1.0", "0" * 64, (Member("p/a.bin", "a.bin", hashlib.sha256(b"a").hexdigest()),))
    entry = zoo.ZooEntry(name="pkg-net", url="", sha256="", filename="pkg-net", licence="MIT", format="t",
                         description="d", package=pkg)
    zoo.list_entries()
    monkeypatch.setitem(zoo._REGISTRY, entry.name, entry)
    folder = zoo.cached_path(entry.name)
    folder.mkdir(parents=True)
    (folder / "a.bin").write_bytes(b"tampered")
    with pytest.raises(WeightsHashError, match=r"a\.bin does not match sha256 [0-9a-f]{64}; run `facerestore models"):
        zoo.weights_path(entry.name)


def test_an_entry_name_wins_over_a_same_named_file_in_the_working_directory(fake_entry, tmp_path, monkeypatch):
    from facerestore.zoo.refs import resolve_weights

    entry, data = fake_entry
    monkeypatch.chdir(tmp_path)
    (tmp_path / entry.name).write_bytes(b"not the published weights")
    with pytest.raises(WeightsMissingError):  # the hash-checked entry, not the stray file, is what the name means
        resolve_weights(entry.name)
    cached = zoo.cached_path(entry.name)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(data)
    assert resolve_weights(entry.name) == cached
    assert resolve_weights(f"./{entry.name}").read_bytes() == b"not the published weights"  # ./NAME: the file


def test_packages_download_without_npm_is_a_note_so_the_test_command_goes_on(monkeypatch, capsys, tmp_path):
    """README's test command chains `models download --packages && pytest`: on a machine without Node.js the npm
    entries are left out with a note (their tests skip), the pip ones are fetched, and the exit status is 0."""
    import shutil

    from facerestore.cli import main

    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path / "home"))  # the command probes the cache: never the user's
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda cmd, *a, **k: None if cmd == "npm" else real_which(cmd, *a, **k))
    fetched = []
    monkeypatch.setattr(zoo, "fetch", lambda name: fetched.append(name) or f"/cache/{name}")
    assert main(["models", "download", "--packages"]) == 0
    err = capsys.readouterr().err
    npm = sorted(e.name for e in zoo.list_entries() if e.package is not None and e.package.manager == "npm")
    pip = sorted(e.name for e in zoo.list_entries() if e.package is not None and e.package.manager == "pip")
    assert npm and sorted(fetched) == pip and "npm is not installed" in err and all(n in err for n in npm)
