"""The run configuration: one typed model shared by the CLI, the Python API and the flows.

A YAML file (see ``configs/example.yaml``) holds the same keys as the model; unknown
keys and wrong types are rejected with the key's name. Relative paths are taken
relative to the current directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from normpipe.core.sketch import DEFAULT_K
from normpipe.errors import ConfigError
from normpipe.scalers import MaxAbs, MinMax, Robust, ScalerSpec, ZScore

__all__ = ["ClusterConfig", "RunConfig", "describe_validation_error", "load_config"]

Spec = ZScore | MinMax | Robust | MaxAbs


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ClusterConfig(_Model):
    """Where the Dask work runs.

    With ``scheduler`` unset a private ``LocalCluster`` is started (``workers``
    processes of ``threads_per_worker`` threads, each limited to ``memory_limit``)
    and closed afterwards; otherwise the scheduler at that address is used.
    """

    scheduler: str | None = None
    workers: int | None = Field(default=None, ge=1, description="default: one per core")
    threads_per_worker: int = Field(default=1, ge=1)
    memory_limit: str | int | None = Field(default="auto", description="per worker, e.g. '2GB'")
    processes: bool = True


class RunConfig(_Model):
    """Every option of a fit / transform / run."""

    source: str | None = None
    output: str | None = None
    stats: str | None = None
    method: ScalerSpec = Field(default_factory=ZScore)
    overrides: dict[str, ScalerSpec] = Field(default_factory=dict)
    columns: list[str] | None = None
    exclude: list[str] = Field(default_factory=list)
    dtype: Literal["float64", "float32"] = "float64"
    sketch_k: int = Field(default=DEFAULT_K, ge=8, le=65535)
    split_every: int = Field(default=8, ge=2)
    overwrite: bool = False
    storage_options: dict[str, Any] = Field(default_factory=dict)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, value: Any) -> Any:
        return {"method": value} if isinstance(value, str) else value

    @field_validator("overrides", mode="before")
    @classmethod
    def _overrides(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: {"method": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    def spec_for(self, column: str) -> Spec:
        return self.overrides.get(column, self.method)


def describe_validation_error(err: ValidationError, where: str) -> str:
    """One line naming the first offending key, what was wrong and what was received."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"{where}: unknown key '{loc}'; remove it or check its spelling"
    received = first.get("input")
    shown = f" (got {received!r})" if not isinstance(received, dict | list) else ""
    return f"{where}: invalid value for '{loc}': {first['msg']}{shown}"


def load_config(path: str | os.PathLike[str] | None = None, **options: Any) -> RunConfig:
    """Validate a run config from a YAML file (``yaml.safe_load``) and/or options.

    Options that are not None replace the file's values; ``cluster`` is a mapping
    merged key by key into the file's ``cluster`` section.

    Raises
    ------
    ConfigError
        The file is missing or not YAML, or a key is unknown or has a wrong type.
    """
    where = str(path) if path is not None else "options"
    doc: Any = {}
    if path is not None:
        try:
            doc = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{where}: config file not found; check the --config path") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{where}: not valid YAML{at}; fix the syntax") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"{where}: expected a mapping of options at the top level")
    cluster = options.pop("cluster", None) or {}
    doc.update({k: v for k, v in options.items() if v is not None})
    cluster = {k: v for k, v in cluster.items() if v is not None}
    if cluster:
        base = doc.get("cluster") or {}
        doc["cluster"] = {**base, **cluster} if isinstance(base, dict) else base
    try:
        return RunConfig.model_validate(doc)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, where)) from None
