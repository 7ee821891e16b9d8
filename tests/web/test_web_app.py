"""facerestore.web.app and `facerestore serve` without a browser: the page's wiring, the queue, the messages."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from facerestore.cli import main
from facerestore.errors import InputError
from facerestore.web import jobs


def _installed(module: str) -> bool:
    """A real package (a folder left behind by an uninstall is a namespace package without an origin)."""
    spec = importlib.util.find_spec(module)
    return spec is not None and spec.origin is not None


@pytest.mark.parametrize("host, loop", [("127.0.0.1", True), ("127.8.9.1", True), ("localhost", True),
                                        ("::1", True), ("[::1]", True), ("0.0.0.0", False), ("192.168.1.2", False),
                                        ("example", False)])
def test_is_loopback(host, loop):
    from facerestore.web.app import is_loopback

    assert is_loopback(host) is loop


def test_serve_config_is_checked():
    from facerestore.web.app import ServeConfig

    ServeConfig().validate()
    for kw in ({"port": 0}, {"concurrency": 0}, {"queue_size": 0}, {"max_steps": 0}, {"max_steps": 3},
               {"default_method": "hifacegan"}):  # max_steps 1 or 3: a slider whose maximum is its minimum crashed
        with pytest.raises(InputError):
            ServeConfig(**kw).validate()


def test_status_lists_each_failed_photo_in_one_line_and_escapes_names(tmp_path):
    from facerestore.web.app import status_markdown

    res = jobs.JobResult(dir=tmp_path, errors=["notes.png: cannot decode image (corrupt or unsupported format)",
                                               "*bold*_x.png: cannot decode image (corrupt or unsupported format)"])
    text = status_markdown(res)
    assert text.startswith("**Nothing restored.**")
    assert "- notes\\.png: cannot decode image \\(corrupt or unsupported format\\)" in text
    assert "\\*bold\\*\\_x\\.png" in text  # a file name cannot format the page
    assert status_markdown(None, "upload one or more photos first") == "**Error:** upload one or more photos first"


def test_views_of_a_job(tmp_path):
    from facerestore.web.app import face_view, photo_view

    face = jobs.FaceOutput(index=0, before=tmp_path / "b.png", after=tmp_path / "a.png", cmp=tmp_path / "c.png",
                           record={"identity_similarity": 0.9, "identity_distance": 0.4, "identity_changed": False,
                                   "gate": {"reason": "passed"}, "paste_weight": 1.0})
    photo = jobs.PhotoOutput(name="me.png", stem="me", image=tmp_path / "me.png", record=tmp_path / "me.json",
                             before=tmp_path / "prev.png", input_size=(10, 10), output_size=(20, 20), faces=[face])
    res = jobs.JobResult(dir=tmp_path, photos=[photo])
    pair, choices, fpair, caption = photo_view(res, "0")
    assert pair == (str(tmp_path / "prev.png"), str(tmp_path / "me.png")) and choices == [("face 1", "0")]
    assert fpair == (str(tmp_path / "b.png"), str(tmp_path / "a.png"))
    plain = caption.replace("\\", "")  # the caption is Markdown-escaped
    assert "identity similarity 0.900, distance 0.400 (the same person)" in plain and "passed" in plain
    assert face_view(res, "7", "9")[0] == fpair  # out-of-range choices clamp
    assert photo_view(None, 0) == (None, [], None, "")
    scan = jobs.PhotoOutput(name="scan.tif", stem="scan", image=tmp_path / "scan.tif", record=tmp_path / "scan.json",
                            before=tmp_path / "prev.png", input_size=(10, 10), output_size=(20, 20),
                            shown=tmp_path / "after.png")
    assert photo_view(jobs.JobResult(dir=tmp_path, photos=[scan]), 0)[0] == (str(tmp_path / "prev.png"),
                                                                             str(tmp_path / "after.png"))


def test_page_wiring_queue_and_concurrency(tmp_path):
    if not _installed("gradio"):
        pytest.skip("needs the web extra (pip install -e '.[web]')")
    from facerestore.web.app import ELEMENT_IDS, ServeConfig, build_app

    demo = build_app(ServeConfig(queue_size=3, concurrency=2), jobs.Sessions(tmp_path))
    assert demo._queue.max_size == 3  # bounded: past it Gradio answers "busy"
    fns = {fn.name: fn for fn in demo.fns.values()}
    assert fns["on_restore"].concurrency_limit == 2 and fns["on_restore"].queue  # one job per worker
    assert not any(fns[n].queue for n in ("on_method", "on_weights", "on_pick", "on_face"))  # instant, never queued
    ids = {b.elem_id for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    assert set(ELEMENT_IDS) <= ids


def test_serve_help_and_one_line_errors(monkeypatch, capsys):
    out = subprocess.run([sys.executable, "-m", "facerestore", "serve", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--max-upload-mb" in out.stdout and "127.0.0.1" in out.stdout
    if _installed("gradio"):
        assert main(["serve", "--max-pixels", "0"]) == 2
        assert capsys.readouterr().err.strip() == ("facerestore serve: error: --max-pixels must be a positive whole "
                                                   "number, got 0")
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    assert main(["serve"]) == 2
    assert capsys.readouterr().err.strip() == ('facerestore serve: error: facerestore serve needs Gradio: pip install '
                                               '"facerestore[web]"')


def test_nothing_imports_web():
    src = Path(__file__).resolve().parents[2] / "src" / "facerestore"
    users = [p for p in src.rglob("*.py") if "facerestore.web" in p.read_text() and "web" not in p.parts
             and p.name != "serve.py"]
    assert users == []


def test_the_report_table_has_a_width_per_column():
    from facerestore.web import app as web_app

    assert len(web_app.REPORT_WIDTHS) == len(jobs.REPORT_HEADERS)
