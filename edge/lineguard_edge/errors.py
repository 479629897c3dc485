"""LineGuard's errors: one hierarchy, and the one table that turns it into HTTP statuses and exit codes.

Every error LineGuard raises on purpose is a :class:`LineGuardError` whose message names the bad value and
the fix, raised where the value enters. The service answers ``OUTCOMES[...].http`` with the message as its
``detail``; the command line prints the message and exits with ``OUTCOMES[...].exit``. Anything else that
escapes (a ``ValueError`` from deep inside a library, say) is a bug: a 500, or a traceback.

It lives at the very bottom, in the edge runtime (which the service builds on), so that every layer of the
service and the edge runtime on a camera PC raise the same types and answer the same statuses;
``lineguard.errors`` re-exports it.

=====================  ====  ====  =====================================================================
error                  HTTP  exit  raised when
=====================  ====  ====  =====================================================================
ConfigError            422   2     an option, setting or argument has a value that cannot be used
DataError              422   3     input data is unusable (an image, a CSV cell, a reading, a folder)
ImageTooLargeError     413   3     an image announces more pixels than allowed (read from its header)
FeatureMismatchError   409   4     features do not fit the model (another backbone, other columns)
NotFittedError         409   4     a model is asked to score before it is fitted
NotFoundError          404   5     an unknown line or version
StoreError             503   6     the model store cannot be read or written
CorruptModelError      503   6     a stored version fails its checks (checksum, safetensors)
UnavailableError       503   7     the service cannot answer now (at capacity, a timeout): retry shortly
ExportError            500   8     an exported bundle disagrees with the line's model, or a head cannot be exported
=====================  ====  ====  =====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass


class LineGuardError(Exception):
    """Base of every error LineGuard raises on purpose."""


class ConfigError(LineGuardError, ValueError):
    """An option, setting or argument has a value LineGuard cannot use: fix the value."""


class DataError(LineGuardError, ValueError):
    """Input data is unusable (an image that does not decode, a cell that is not a number, a reading of the
    wrong length, a folder without images): fix the data."""


class ImageTooLargeError(DataError):
    """An image announces more pixels than allowed (read from its header, before anything is decoded)."""


class FeatureMismatchError(LineGuardError):
    """Features do not fit the model: another backbone, other layers or other sensor columns than it was
    fitted on. Score with what the line's model card records."""


class NotFittedError(LineGuardError):
    """A model was asked to score before it was fitted (or its fitted state is missing)."""


class StoreError(LineGuardError):
    """The model store cannot do what was asked."""


class NotFoundError(StoreError, LookupError):
    """An unknown line or version."""


class CorruptModelError(StoreError):
    """A stored version fails its checks: its files do not match the card's checksums, or do not parse."""


class UnavailableError(LineGuardError):
    """The service cannot answer now (its queues are full, a step timed out, a replica is restarting); the
    same request can succeed shortly. ``retry_after_s`` is the wait the answer suggests."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ExportError(LineGuardError):
    """``lineguard export`` cannot give a bundle that answers as the line does: the exported graph's scores or
    decisions differ beyond the tolerance, or the line's network has a part the exporter cannot write."""


@dataclass(frozen=True)
class Outcome:
    """What an error becomes: the HTTP status of the service's answer and the exit code of the CLI."""

    http: int
    exit: int


OUTCOMES: dict[type[LineGuardError], Outcome] = {
    LineGuardError: Outcome(500, 1),
    ConfigError: Outcome(422, 2),
    DataError: Outcome(422, 3),
    ImageTooLargeError: Outcome(413, 3),
    FeatureMismatchError: Outcome(409, 4),
    NotFittedError: Outcome(409, 4),
    NotFoundError: Outcome(404, 5),
    StoreError: Outcome(503, 6),
    CorruptModelError: Outcome(503, 6),
    UnavailableError: Outcome(503, 7),
    ExportError: Outcome(500, 8),
}


def outcome(err: LineGuardError) -> Outcome:
    """The table's row for ``err``: its own class's, else the nearest base class's."""
    for cls in type(err).__mro__:
        if cls in OUTCOMES:
            return OUTCOMES[cls]
    return OUTCOMES[LineGuardError]
