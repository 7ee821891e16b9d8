"""Checks every sub-command makes before any work, and the messages of a batch (see docs/reliability.md).

- :func:`check_output_location`: an output folder that is the input folder, lies inside an input tree the
  command walks, or holds inputs is refused (exit 2) before anything is read or written.
- :func:`unique_stems`: one output name per input, never shared (``a.jpg``, ``a.png`` and ``a_png.jpg`` give
  ``a_jpg``, ``a_png`` and ``a_png_2``), never longer than a file name may be; every rename is reported.
- :func:`say`: a message line on stderr that is not glued onto a tqdm progress bar.
- :func:`handle_signals`: SIGINT / SIGTERM raise :class:`facerestore.errors.Interrupted` (exit 130 / 143),
  so atomic writers remove their temporary files and batch loops report how far they got.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from facerestore.errors import InputError, Interrupted, on_signals
from facerestore.io import NAME_MAX, display_path, one_line  # one_line lives in io so that web can share it

__all__ = [
    "check_finite",
    "check_output_location",
    "handle_signals",
    "note_ignored",
    "one_line",
    "say",
    "unique_stems",
]


def say(message: str) -> None:
    """Print one line on stderr without breaking a progress bar that may be on screen."""
    try:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)
    except Exception:  # tqdm missing or stderr odd: a plain print is still one line
        print(message, file=sys.stderr)


def quiet_opencv() -> None:
    """Silence OpenCV's own log lines (``[ WARN:0@0.05] global grfmt_tiff.cpp ...``, ``[ERROR:0@0.1] ...``) for
    this process: a command reports each problem in one line of its own, and a stray native line would land in
    the middle of a progress bar. A user's ``OPENCV_LOG_LEVEL`` is respected."""
    if "OPENCV_LOG_LEVEL" in os.environ:
        return
    os.environ["OPENCV_LOG_LEVEL"] = "SILENT"  # read when OpenCV is first imported
    cv2 = sys.modules.get("cv2")
    if cv2 is not None:  # already imported (the web server, a test run): set it directly
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def note_ignored(path: Path, reason: str) -> None:
    """``on_skip`` callback of :func:`facerestore.io.list_images`: report a folder entry that is not read."""
    say(f"ignored {display_path(path)}: {reason}")


def check_finite(name: str, value: float | None, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> None:
    """InputError unless ``value`` is a finite number in [low, high] (``low_open``: > low); None passes."""
    if value is None:
        return
    ok = math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        rng = ""
        if low is not None or high is not None:
            lo = "(" if low_open else "["
            rng = f" in {lo}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}]"
        raise InputError(f"{name} must be a finite number{rng}, got {value}")


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def check_output_location(out_dir: Path, src: Path, files: Iterable[Path], *, recursive: bool = False,
                          subfolders: Iterable[str] = ()) -> None:
    """Refuse (InputError, exit 2) an output folder that would mix outputs with inputs.

    ``src`` is the ``-i`` path (file or folder), ``files`` the inputs found there. Refused: ``out_dir`` is
    the input folder; with ``recursive``, ``out_dir`` lies inside the input folder (a re-run would read its
    own outputs); ``out_dir`` (or ``out_dir/SUB`` for each of ``subfolders``, where outputs go) holds an
    input file. Symbolic links are resolved.
    """
    out = out_dir.resolve()
    if src.is_dir():
        root = src.resolve()
        if out == root:
            raise InputError(f"output folder {display_path(out_dir)} is the input folder; choose another -o "
                             "(inputs are never overwritten)")
        if recursive and _inside(out, root):
            raise InputError(f"output folder {display_path(out_dir)} is inside the input folder "
                             f"{display_path(src)}, which is read recursively; choose -o outside it")
    targets = [out] + [(out_dir / s).resolve() for s in subfolders]
    parents = {f.resolve().parent for f in files}
    for t in targets:
        if t in parents:
            raise InputError(f"outputs would go into {display_path(t)}, which holds input files; choose another -o")


def _short(stem: str, room: int) -> str:
    """``stem`` cut to ``room`` bytes plus ``~`` and 8 hex digits of its hash (never half a UTF-8 character)."""
    raw = os.fsencode(stem)
    tag = "~" + hashlib.sha256(raw).hexdigest()[:8]
    cut = raw[: max(1, room - len(tag))]
    for _ in range(3):  # a UTF-8 name stays UTF-8: drop the bytes of a character cut in half
        try:
            cut.decode("utf-8")
            break
        except UnicodeDecodeError as exc:
            if exc.start < len(cut) - 3:  # not UTF-8 in the first place: keep the bytes as they are
                break
            cut = cut[:-1]
    return os.fsdecode(cut) + tag


def unique_stems(files: list[Path], stems: dict[Path, Path], *, reserve: int, report: bool = True
                 ) -> dict[Path, Path]:
    """Make output stems unique (case-insensitively, per folder) and short enough.

    ``stems`` maps each input to its proposed output stem (a relative path: folder / name). Inputs sharing a
    stem get their extension appended (``a.jpg`` -> ``a_jpg``); any stem still taken gets ``_2``, ``_3``...;
    a stem whose name plus ``reserve`` bytes (the longest suffix the command appends, e.g. ``_00.json``)
    would exceed the file-name limit is shortened with a hash. Renames are reported on stderr.
    """
    def key(s: Path) -> str:
        return os.fsdecode(os.fsencode(str(s))).lower()

    counts: dict[str, int] = {}
    for f in files:
        counts[key(stems[f])] = counts.get(key(stems[f]), 0) + 1
    out: dict[Path, Path] = {}
    taken: set[str] = set()
    # stems nobody else wants keep their name first, so a later clash never renames them
    order = sorted(files, key=lambda f: counts[key(stems[f])] > 1)
    for f in order:
        s = stems[f]
        if counts[key(s)] > 1 and f.suffix:
            s = s.parent / f"{s.name}_{f.suffix.lstrip('.').lower()}"
        base = s
        n = 2
        while True:
            if len(os.fsencode(s.name)) + reserve > NAME_MAX:
                s = s.parent / _short(s.name, NAME_MAX - reserve)
            if key(s) not in taken:
                break
            s = base.parent / f"{base.name}_{n}"
            n += 1
        taken.add(key(s))
        out[f] = s
        if report and s.name != stems[f].name:
            say(f"note: outputs of {display_path(f)} are named {display_path(s.name)} (the name "
                f"{display_path(stems[f].name)} is shared or too long)")
    return {f: out[f] for f in files}


@contextlib.contextmanager
def handle_signals() -> Iterator[None]:
    """While active, SIGINT and SIGTERM raise :class:`Interrupted` in the main thread (exit 130 / 143)."""
    def _raise(signum, frame):
        raise Interrupted(signum)

    with on_signals(_raise):
        yield
