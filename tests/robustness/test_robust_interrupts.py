"""SIGINT / SIGTERM during a batch: no partial or temporary file, how many files were done is printed, exit
130 / 143, inputs untouched, and a re-run completes every file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from facerestore import io as fio
from facerestore.cli import main
from facerestore.cli.common import run_batch
from facerestore.errors import Interrupted

from .robust_corpus import leftovers, rgb, snapshot

# The batch is slowed down in the child: each degradation sleeps, and each atomic rename waits while its
# temporary file exists, so the signal lands in the middle of the work (often during a write).
DRIVER = r"""
import os, sys, time
import facerestore.degrade as D
_apply, _replace = D.apply, os.replace
def slow_apply(*a, **k):
    time.sleep(0.15)
    return _apply(*a, **k)
def slow_replace(src, dst):
    time.sleep(0.15)
    return _replace(src, dst)
D.apply, os.replace = slow_apply, slow_replace
from facerestore.cli import main
sys.exit(main(sys.argv[1:]))
"""

N = 24


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(N):
        Image.fromarray(rgb(16, 16, seed=i)).save(d / f"f{i:02d}.png")
    return d


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_batch_leaves_no_partial_files_and_a_rerun_completes(sig, code, folder, tmp_path):
    out = tmp_path / "out"
    before = snapshot(folder)
    args = ["degrade", "-i", str(folder), "-o", str(out), "--task", "sr4x", "--size", "16"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.is_dir() and len(list(out.glob("*.png"))) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    time.sleep(0.1)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert f"of {N} inputs done" in stderr and "interrupted" in stderr
    assert leftovers(tmp_path) == [], stderr  # no temporary file survived the signal
    done = sorted(out.glob("*.png"))
    assert 2 <= len(done) < N
    for p in done:  # every output there is complete
        assert Image.open(p).size == (16, 16)
    assert not (out / "manifest.json").exists()  # the manifest is written only when the batch ends
    assert snapshot(folder) == before

    assert main(args) == 0  # the re-run completes every file
    assert len(list(out.glob("*.png"))) == N and (out / "manifest.json").is_file()
    assert leftovers(tmp_path) == []


def test_interrupt_inside_an_atomic_write_removes_the_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "x.png"
    target.write_bytes(b"old")

    def boom(src, dst):
        raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(Interrupted) as err:
        fio.atomic_write_bytes(target, b"new")
    assert err.value.exit_code == 143
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_run_batch_reports_how_far_it_got(capsys):
    def fn(i):
        if i == 3:
            raise Interrupted(signal.SIGINT)
        return i

    with pytest.raises(Interrupted):
        run_batch(list(range(10)), fn, progress=False)
    assert "interrupted: 3 of 10 inputs done" in capsys.readouterr().err
