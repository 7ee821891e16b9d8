"""Exceptions with messages meant for users: the CLI prints them as one line and exits non-zero."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any


class FaceRestoreError(Exception):
    """Base class for errors caused by user input or environment (bad file, missing weights, ...)."""


class InputError(FaceRestoreError, ValueError):
    """An input image, folder, option or parameter is invalid."""


class RefsMismatchError(InputError):
    """The reference photos look like another person than the face(s) to restore; ``distance`` is the reference
    check's (smallest) dlib distance that exceeded the threshold."""

    def __init__(self, message: str, distance: float) -> None:
        super().__init__(message)
        self.distance = float(distance)


class OutputError(InputError, OSError):
    """An output path cannot or must not be written (unwritable folder, an input, a device, FIFO or link)."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``exit_code`` is 128 + the signal number (130 / 143)."""

    def __init__(self, signum: int = 2) -> None:
        super().__init__(signum)
        self.signum = int(signum)
        self.exit_code = 128 + int(signum)


@contextlib.contextmanager
def on_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """While active, ``handler(signum, frame)`` handles SIGINT and SIGTERM (main thread only: elsewhere Python
    cannot install handlers, and this does nothing); the previous handlers come back after (one installed outside
    Python, which Python sees as None, comes back as the default)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):  # pragma: no cover - platforms without the signal
            pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[dict[str, int]]:
    """While active (main thread only), SIGINT / SIGTERM set ``flag["signum"]`` instead of interrupting: a training
    loop finishes its step, saves a checkpoint and then stops (a step cut in half would leave the networks updated
    for a step the checkpoint has not counted). A second signal interrupts at once (:class:`Interrupted`)."""
    import os

    flag: dict[str, int] = {}

    def _defer(signum, frame):
        if "signum" in flag:
            raise Interrupted(signum)
        flag["signum"] = signum
        # os.write, not print: a handler may run in the middle of another write to the same stream; a closed or
        # broken stderr (`... 2>&1 | tee`, tee killed by the same Ctrl-C) must not turn the deferred stop into a crash
        with contextlib.suppress(OSError):
            os.write(2, b"\nstopping after this step (a checkpoint is saved); signal again to stop now\n")

    with on_signals(_defer):
        yield flag


_WARNINGS_LOCK = threading.RLock()


@contextlib.contextmanager
def quiet_warnings(category: type[Warning] = Warning) -> Iterator[None]:
    """Ignore warnings of ``category`` inside the block. ``warnings.catch_warnings`` saves and restores the
    process-wide filter list, so two threads using it at once (the web app's jobs) can restore each other's
    "ignore" for good and silence every later warning; facerestore's blocks take turns under one lock instead
    (they are short: a header read, a nan-mean, a file load)."""
    import warnings

    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", category)
        yield


class WeightsMissingError(FaceRestoreError, FileNotFoundError):
    """Weights for a model are not in the cache and cannot be downloaded (offline, or not allowed)."""


class WeightsHashError(FaceRestoreError):
    """A weight file exists but its sha256 does not match the zoo entry."""


class NoFaceError(FaceRestoreError):
    """No face was found where one is required."""


class TrainingError(FaceRestoreError):
    """Training cannot go on (a non-finite loss: it diverged); the message says what to change."""


def did_you_mean(word: str, known: Iterable[str], cutoff: float = 0.75) -> str:
    """``" (did you mean X?)"`` naming the known name nearest to a mistyped ``word``, or ``""`` when none is near.

    Nearness: the only known name that starts with ``word`` (3 characters or more), else difflib's ratio >= ``cutoff``
    (0-1); case and leading dashes ignored (``--thread`` is not a near miss of ``--method`` because both start with
    ``--``). X is returned as spelt in ``known``."""
    import difflib

    def key(name: str) -> str:
        return str(name).lstrip("-").lower()

    by_key = {key(name): str(name) for name in known}
    typed = key(word)
    close = [k for k in by_key if k.startswith(typed)] if len(typed) >= 3 else []
    if len(close) != 1:
        close = difflib.get_close_matches(typed, list(by_key), n=1, cutoff=cutoff)
    return f" (did you mean {by_key[close[0]]}?)" if close else ""
