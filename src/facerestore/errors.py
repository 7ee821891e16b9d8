"""Exceptions with messages meant for users: the CLI prints them as one line and exits non-zero."""

from __future__ import annotations


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


class WeightsMissingError(FaceRestoreError, FileNotFoundError):
    """Weights for a model are not in the cache and cannot be downloaded (offline, or not allowed)."""


class WeightsHashError(FaceRestoreError):
    """A weight file exists but its sha256 does not match the zoo entry."""


class NoFaceError(FaceRestoreError):
    """No face was found where one is required."""
