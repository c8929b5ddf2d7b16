"""``python -m normpipe.cli``."""

from normpipe.cli import entrypoint

entrypoint()
