"""The ``normpipe`` command line (typer + rich).

Every command takes its options on the command line or from ``--config FILE.yaml``
(command-line values win). Bad input prints one line starting with ``error:`` and
exits with status 2; no traceback. The commands live by subject in this package's
modules; importing it registers them all on :data:`app`.
"""

from __future__ import annotations

from normpipe.cli import data, project, train  # noqa: F401  # each registers its commands
from normpipe.cli.app import app

__all__ = ["app", "entrypoint"]


def entrypoint() -> None:  # pragma: no cover - console script
    app()
