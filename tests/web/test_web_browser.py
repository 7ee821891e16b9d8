"""`facerestore serve` in a real browser: Debian's Chromium (/usr/bin/chromium) driven by Playwright, never a
downloaded browser. Skips with the reason when Chromium, playwright or gradio is missing; fails instead when
FACERESTORE_REQUIRE_BROWSER=1 (.ci/run sets it, so CI cannot pass by skipping).

FACERESTORE_WEB_SCREENSHOTS=DIR saves the page at each step into DIR (docs/img/web_*.png come from here).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

from conftest import EXAMPLES, free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")]  # its pandas calls, not ours

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LQ = EXAMPLES / "astronaut_lq.png"  # 192 x 192, one face
STARTUP_S = 180
JOB_S = 300


def _missing() -> str | None:
    if not CHROMIUM.is_file():
        return f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)"
    for module in ("playwright", "gradio"):
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:  # absent, or only the leftovers of an uninstall
            return f"needs the {module} package (pip install -e '.[web,web-test]')"
    return None


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    url: str = ""
    root: Path = Path()
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        return "".join(self.lines[-40:])


def _need_browser() -> None:
    why = _missing()
    if why:
        if os.environ.get("FACERESTORE_REQUIRE_BROWSER") == "1":
            pytest.fail(why)
        pytest.skip(why)


def _launch(pw, profile: Path):
    return pw.chromium.launch_persistent_context(
        str(profile), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True, accept_downloads=True,
        viewport={"width": 1400, "height": 1000})


def _shot(page, name: str, full_page: bool = True) -> None:
    shots = os.environ.get("FACERESTORE_WEB_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(shots) / f"web_{name}.png"), full_page=full_page)


@pytest.fixture
def server(tmp_path):
    _need_browser()
    port = free_port()
    # TMPDIR: the server's temporary folder lands in tmp_path, where the test can watch it
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "facerestore", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    srv = Server(proc=proc, port=port)
    threading.Thread(target=lambda: srv.lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    try:
        deadline = time.monotonic() + STARTUP_S
        while not srv.url:
            m = re.search(r"facerestore serve: (http://\S+) .*temporary files in (\S+), removed", srv.output())
            if m:
                srv.url, srv.root = m.group(1), Path(m.group(2))
            elif proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"facerestore serve did not start (exit code {proc.poll()}):\n{srv.output()}")
            else:
                time.sleep(0.2)
        yield srv
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def _upload(page, path: Path) -> None:
    """Give the photos field a file and wait until the page lists it (the name may be drawn as two pieces, stem and
    extension, so the field's text is compared without white space)."""
    page.locator("#photos input[type=file]").set_input_files(str(path))
    page.wait_for_function("name => document.querySelector('#photos').innerText.replace(/\\s/g, '').includes(name)",
                           arg=path.name)


def _download(page, selector: str, target: Path) -> tuple[Path, Path]:
    """Click a download link; (the saved file, the server-side file its URL names)."""
    link = page.locator(selector)
    href = link.get_attribute("href")
    with page.expect_download() as dl:
        link.click()
    dl.value.save_as(target)
    return target, Path(unquote(href.split("file=", 1)[1]))


def test_restore_a_photo_in_chromium(server, tmp_path):
    from playwright.sync_api import sync_playwright

    from facerestore import io
    from facerestore.faces.paste import upscale_image

    bad = tmp_path / "upload" / "notes.png"
    bad.parent.mkdir()
    bad.write_text("a text file with an image's name\n")
    from test_web_video_options import write_clip  # a short clip of the example, written with PyAV

    clip = write_clip(tmp_path / "upload" / "clip.mp4", n=6, size=96)
    hosts: set[str] = set()
    with sync_playwright() as pw:
        ctx = _launch(pw, tmp_path / "profile")
        try:
            page = ctx.new_page()
            page.set_default_timeout(60_000)
            page.on("request", lambda r: hosts.add(urlsplit(r.url).netloc) if r.url.startswith("http") else None)
            page.goto(server.url)
            page.wait_for_selector("#restore")

            # upload the bundled example, move the fidelity slider to its middle, restore
            _upload(page, LQ)

            def click_slider_middle() -> bool:
                # the box is re-read for every click: the upload's preview can still move the layout, and a click
                # at a stale position misses the slider (seen once in CI)
                box = page.locator("#fidelity input[type=range]").bounding_box()
                page.mouse.click(box["x"] + 0.5 * box["width"], box["y"] + 0.5 * box["height"])
                return page.locator("#fidelity input[type=number]").input_value() == "0.5"

            _wait_for(click_slider_middle, 10, "the fidelity slider to read 0.5")
            page.locator("#restore").click()
            page.wait_for_function("document.querySelector('#status').innerText.includes('restored 1 face')",
                                   timeout=JOB_S * 1000)
            page.locator("#face-compare img").first.wait_for()
            _shot(page, "result")

            # the downloads: the photo at twice the size, changed where the face is; its record says fidelity 0.5
            out, served = _download(page, '#downloads a[href$="/restored_imgs/astronaut_lq.png"]', tmp_path / "o.png")
            rec, _ = _download(page, '#downloads a[href$="/restored_imgs/astronaut_lq.json"]', tmp_path / "o.json")
            img = io.read_image(out).rgb
            assert img.shape == (384, 384, 3)
            record = json.loads(rec.read_text())
            assert record["fidelity"] == 0.5 and record["num_faces"] == 1 and record["input"] == "astronaut_lq.png"
            x0, y0, x1, y1 = (2 * np.asarray(record["faces"][0]["box"])).round().astype(int)
            before = upscale_image(io.read_image(LQ).rgb, 2.0)
            assert np.abs(img - before)[y0:y1, x0:x1].mean() > 0.01
            assert served.is_file() and served.is_relative_to(server.root)

            # reloading ends the browser session: its files are removed
            page.reload()
            page.wait_for_selector("#restore")
            _wait_for(lambda: not served.exists(), 60, "the closed session's files to be removed")

            # a text file named .png: the CLI's one-line error in the page
            _upload(page, bad)
            page.locator("#restore").click()
            page.wait_for_function("document.querySelector('#status').innerText.includes('notes.png:')",
                                   timeout=JOB_S * 1000)
            status = page.locator("#status").inner_text()
            assert "notes.png: cannot decode image (corrupt or unsupported format)" in status.splitlines()
            assert "Nothing restored." in status
            _shot(page, "error")

            # a short clip: restored with the CLI's video path, played in the page, downloadable
            page.reload()
            page.wait_for_selector("#restore")
            _upload(page, clip)
            page.locator("#more").get_by_text("More options").first.click()
            page.locator("#center-face input[type=checkbox]").check()
            page.locator("#restore").click()
            page.wait_for_function("document.querySelector('#status').innerText.includes('restored clip.mp4')",
                                   timeout=JOB_S * 1000)
            page.wait_for_function("(() => { const v = document.querySelector('#video video');"
                                   " return v && v.readyState >= 1 && !v.error; })()", timeout=60_000)
            assert page.evaluate("document.querySelector('#video video').videoWidth") == 192
            _shot(page, "video")
            vid, _ = _download(page, '#downloads a[href$="/restored_videos/clip.mp4"]', tmp_path / "clip.mp4")
            rec, _ = _download(page, '#downloads a[href$="/restored_videos/clip.json"]', tmp_path / "clip.json")
            assert json.loads(rec.read_text())["frames"] == 6 and vid.stat().st_size > 0
        finally:
            ctx.close()
    assert hosts == {f"127.0.0.1:{server.port}"}  # the page fetched nothing from anywhere else

    # Ctrl-C stops the server, which removes its temporary folder
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(60) == 0, server.output()
    assert not server.root.exists()


def test_a_full_queue_says_busy(tmp_path, monkeypatch):
    """--concurrency 1 --queue-size 1: a first job runs, a second waits (the page shows its place in the queue),
    a third is turned away with Gradio's "busy" message. The server runs in this process, its jobs held by the test."""
    _need_browser()
    from playwright.sync_api import sync_playwright

    from facerestore.errors import InputError
    from facerestore.web import jobs
    from facerestore.web.app import ServeConfig, serve

    started, release = threading.Event(), threading.Event()

    def held_job(*args, **kwargs):
        started.set()
        release.wait(JOB_S)
        raise InputError("released by the test")

    monkeypatch.setattr(jobs, "run_job", held_job)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    ready, stop, info = threading.Event(), threading.Event(), {}
    cfg = ServeConfig(port=free_port(), concurrency=1, queue_size=1)
    thread = threading.Thread(target=serve, args=(cfg,), daemon=True,
                              kwargs={"stop": stop, "on_ready": lambda url, root: (info.update(url=url), ready.set())})
    thread.start()
    try:
        assert ready.wait(STARTUP_S), "facerestore serve did not start"
        with sync_playwright() as pw:
            ctx = _launch(pw, tmp_path / "profile")
            try:
                pages = [ctx.new_page() for _ in range(3)]
                for page in pages:
                    page.set_default_timeout(60_000)
                    page.goto(info["url"])
                    page.wait_for_selector("#restore")
                pages[0].locator("#restore").click()
                assert started.wait(60)
                pages[1].locator("#restore").click()
                pages[1].get_by_text(re.compile(r"queue: 1/1")).first.wait_for()
                pages[2].locator("#restore").click()
                pages[2].get_by_text("This application is currently busy. Please try again.").first.wait_for()
                if os.environ.get("FACERESTORE_WEB_SCREENSHOTS"):
                    pages[2].wait_for_timeout(1000)  # the message fades in
                    _shot(pages[2], "busy", full_page=False)
                release.set()
                for page in pages[:2]:  # the held jobs end with their one-line error in the page
                    page.wait_for_function("document.querySelector('#status').innerText.includes('released')")
            finally:
                release.set()
                ctx.close()
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive() and not list(tmp_path.glob("facerestore-serve-*"))
