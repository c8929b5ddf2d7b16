"""Errors that normpipe raises for bad input.

Every error carries one line that names the file, column or value at fault and how
to fix it; the CLI prints that line and exits non-zero. The classes take a single
message argument so that they survive the trip from a Dask worker to the client.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "REPR_PREFIX",
    "ArtifactError",
    "ClusterError",
    "ConfigError",
    "DriftError",
    "InputError",
    "NormpipeError",
    "OutputError",
]


class NormpipeError(ValueError):
    """Base class: a problem with what the user gave normpipe, not a bug.

    The ``repr`` names the package (``normpipe.InputError('...')``): Dask workers log a
    failed task with the ``repr`` of its exception, and normpipe's log filter (see
    :mod:`normpipe.cluster`) recognizes its own errors by that prefix alone.
    """

    def __repr__(self) -> str:
        return f"{REPR_PREFIX}{type(self).__name__}({str(self)!r})"


#: How the ``repr`` of every :class:`NormpipeError` starts.
REPR_PREFIX = "normpipe."


class InputError(NormpipeError):
    """The input dataset is missing, unreadable, empty or has unusable columns."""


class OutputError(NormpipeError):
    """The output location cannot be used (exists, or lies inside the input)."""


class ArtifactError(NormpipeError):
    """A stats artifact is not a valid normpipe artifact or does not fit the data."""


class ConfigError(NormpipeError):
    """A run configuration (YAML file or options) is invalid."""


class ClusterError(NormpipeError):
    """The Dask cluster failed the run: it went away, its workers kept dying, or a task
    failed on an environment problem (disk full, permissions). Nothing was committed."""


class DriftError(NormpipeError):
    """The data drifted from the previous run's statistics past the set thresholds."""


def first_problem(err: Any) -> tuple[str, str, dict[str, Any]]:
    """The dotted location, the message and the whole entry of the first problem a
    pydantic ``ValidationError`` reports: what one-line messages name."""
    first: dict[str, Any] = err.errors()[0]
    return ".".join(str(p) for p in first["loc"]), str(first["msg"]), first
