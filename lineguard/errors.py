"""LineGuard's errors, one hierarchy with one table of HTTP statuses and exit codes: defined in
:mod:`lineguard_edge.errors` (the bottom of every layer, shared with the edge runtime) and named here
for the service's layers."""

from lineguard_edge.errors import (
    OUTCOMES,
    ConfigError,
    CorruptModelError,
    DataError,
    ExportError,
    FeatureMismatchError,
    ImageTooLargeError,
    LineGuardError,
    NotFittedError,
    NotFoundError,
    Outcome,
    StoreError,
    UnavailableError,
    outcome,
)

__all__ = [
    "OUTCOMES",
    "ConfigError",
    "CorruptModelError",
    "DataError",
    "ExportError",
    "FeatureMismatchError",
    "ImageTooLargeError",
    "LineGuardError",
    "NotFittedError",
    "NotFoundError",
    "Outcome",
    "StoreError",
    "UnavailableError",
    "outcome",
]
