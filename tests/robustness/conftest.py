"""Fixtures of the robustness suite (issue 12): the hostile corpus, generated into each test's tmp_path,
and one way to run a command and check the guarantees of docs/reliability.md on what it printed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from facerestore.cli import main

from . import robust_corpus as corpus


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        """Lines of stderr, progress-bar redraws (carriage returns) split off."""
        return [seg for line in self.err.splitlines() for seg in re.split(r"\r", line) if seg.strip()]


def check_clean(res: Result) -> None:
    """No traceback, and every error is one line: exit 2 ends with exactly one 'error:' line."""
    assert "Traceback" not in res.err and "Traceback" not in res.out, res.err
    assert res.code in (0, 1, 2, 130, 143), res
    errors = [ln for ln in res.err_lines if ": error: " in ln]
    skipped = [ln for ln in res.err_lines if ln.startswith("skipped ")]
    if res.code == 2 and not errors:  # the single input file named by -i failed: its one "skipped" line
        assert len(skipped) == 1, res.err
    elif res.code == 2:
        assert len(errors) == 1, res.err
        assert res.err_lines[-1] == errors[0], res.err  # the error is the last word, on its own line
    else:
        assert not errors, res.err


@pytest.fixture
def run(capsys):
    """run(*args) -> Result of ``facerestore ARGS`` in-process, checked by :func:`check_clean`."""
    def _run(*args) -> Result:
        capsys.readouterr()
        code = main([str(a) for a in args])
        got = capsys.readouterr()
        res = Result(code, got.out, got.err)
        check_clean(res)
        return res

    return _run


@pytest.fixture
def hostile(tmp_path) -> tuple[Path, dict[str, str], dict[str, str]]:
    """(folder, {image file: 'ok'|'fail'}, {ignored entry: reason}) of the hostile image corpus."""
    d = tmp_path / "hostile in"
    expect = corpus.write_images(d)
    ignored = corpus.write_unreadable_entries(d)
    return d, expect, ignored


@pytest.fixture
def clean_images(tmp_path) -> Path:
    """A folder of three small good images and nothing else."""
    from PIL import Image

    d = tmp_path / "clean"
    d.mkdir()
    for i in range(3):
        Image.fromarray(corpus.rgb(seed=10 + i)).save(d / f"img{i}.png")
    return d
