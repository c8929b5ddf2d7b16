"""normpipe: global, out-of-core normalization statistics for partitioned Parquet.

>>> import normpipe
>>> stats = normpipe.fit("data/")                              # doctest: +SKIP
>>> normpipe.transform("data/", stats, "data-normalized/")     # doctest: +SKIP
>>> stats.inverse_transform(predictions, columns=["price"])    # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from normpipe.errors import ArtifactError, ConfigError, InputError, NormpipeError, OutputError

__version__ = "0.1.0"

__all__ = [
    "ArtifactError",
    "ClusterConfig",
    "ConfigError",
    "InputError",
    "NormpipeError",
    "OutputError",
    "RunConfig",
    "Stats",
    "__version__",
    "fit",
    "fit_pending",
    "load_config",
    "pending",
    "run",
    "transform",
    "update",
]

# Heavy modules (Dask, pandas) load on first use, so that ``normpipe.core`` stays light.
_LAZY = {
    "fit": "normpipe.api",
    "transform": "normpipe.api",
    "run": "normpipe.api",
    "update": "normpipe.api",
    "pending": "normpipe.api",
    "fit_pending": "normpipe.api",
    "Stats": "normpipe.stats",
    "RunConfig": "normpipe.config",
    "ClusterConfig": "normpipe.config",
    "load_config": "normpipe.config",
}

if TYPE_CHECKING:
    from normpipe.api import fit, fit_pending, pending, run, transform, update
    from normpipe.config import ClusterConfig, RunConfig, load_config
    from normpipe.stats import Stats


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'normpipe' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
