"""The run configuration: one typed model shared by the CLI, the Python API and the flows.

A YAML file (see ``configs/example.yaml``) holds the same keys as the model; unknown
keys and wrong types are rejected with the key's name. Relative paths are taken
relative to the current directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator

from normpipe.categories import CategorySpec
from normpipe.core.sketch import DEFAULT_K
from normpipe.errors import ConfigError, first_problem
from normpipe.impute import ImputeSpec
from normpipe.scalers import Request, RequestSpec, ZScore
from normpipe.tensors import TensorSpec
from normpipe.units import DEFAULT_UNIT_BYTES

__all__ = [
    "STATISTICS_OPTIONS",
    "ClusterConfig",
    "CompareConfig",
    "ModelOptions",
    "RunConfig",
    "Thresholds",
    "TrainOptions",
    "TrainRunConfig",
    "describe_validation_error",
    "load_config",
    "load_model_config",
]

Spec = Request


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


_SECRET_KEY = re.compile(r"key|secret|token|password|credential|signature", re.IGNORECASE)


def _masked(value: Any) -> Any:
    """``value`` with every entry whose name looks secret replaced by ``***``."""
    if isinstance(value, dict):
        return {k: "***" if _SECRET_KEY.search(str(k)) else _masked(v) for k, v in value.items()}
    return value


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


class Thresholds(_Model):
    """When a column has drifted (:func:`normpipe.drift.drift`): any measure past its limit."""

    psi: float = Field(default=0.2, gt=0, description="population stability index over deciles")
    ks: float = Field(default=0.1, gt=0, description="largest CDF distance")
    mean_shift: float = Field(default=0.25, gt=0, description="in the reference's standard deviations")
    missing: float = Field(default=0.05, gt=0, description="change in the share of null/NaN values")
    unseen: float = Field(
        default=0.05, gt=0, description="share of categorical values the reference never saw"
    )


#: The options that decide the statistics and the fitted transform (they key the flows'
#: cache, and an artifact being updated fixes them all).
STATISTICS_OPTIONS = (
    "method",
    "overrides",
    "columns",
    "exclude",
    "sketch_k",
    "quantiles",
    "distinct",
    "group_by",
    "unseen",
    "tensors",
    "categories",
    "categorical",
    "impute",
    "impute_overrides",
)


class RunConfig(_Model):
    """Every option of a fit / transform / run."""

    source: str | None = None
    output: str | None = None
    stats: str | None = None
    method: RequestSpec = Field(default_factory=ZScore)
    overrides: dict[str, RequestSpec] = Field(default_factory=dict)
    columns: list[str] | None = None
    exclude: list[str] = Field(default_factory=list)
    tensors: dict[str, TensorSpec] = Field(
        default_factory=dict,
        description="tensor columns (images, embeddings, windows) by name: shape, layout, per, method",
    )
    categories: dict[str, CategorySpec] = Field(
        default_factory=dict,
        description="categorical columns (strings, dictionaries, integer codes, booleans) by name: "
        "coded by a vocabulary (min_frequency, max_categories, hash_buckets)",
    )
    categorical: Literal["none", "auto"] = Field(
        default="none",
        description="auto: every other string or boolean column is coded when it looks categorical "
        "(identifiers are left as they are); none: only those in categories",
    )
    impute: ImputeSpec = Field(
        default_factory=ImputeSpec,
        description="missing values of every column: none (kept), mean, median, most_frequent, "
        "constant; missing_indicator adds <column>_missing",
    )
    impute_overrides: dict[str, ImputeSpec] = Field(default_factory=dict, description="impute per column")
    dtype: Literal["float64", "float32"] = "float64"
    sketch_k: int = Field(default=DEFAULT_K, ge=8, le=65535)
    quantiles: Literal["sketch", "exact"] = Field(
        default="sketch",
        description="exact: a second pass makes the recorded quantiles equal numpy.quantile",
    )
    group_by: str | None = Field(
        default=None, description="normalize each column per value of this column (per store, per sensor)"
    )
    unseen: Literal["global", "error"] = Field(
        default="global", description="with group_by: what rows of groups unseen at fit time get"
    )
    distinct: bool = Field(
        default=False, description="estimate distinct counts (HLL; about 0.2 s per million values)"
    )
    split_every: int = Field(default=8, ge=2)
    unit_size: int = Field(
        default=DEFAULT_UNIT_BYTES,
        ge=1,
        description="uncompressed bytes one task reads at most, e.g. '128MB': small files are "
        "batched and large ones split into row-group ranges up to this size",
    )
    report: bool = Field(default=False, description="also write OUTPUT/_report.html (normpipe report)")
    overwrite: bool = False
    append: bool = Field(
        default=False,
        description="transform: add the input files the output does not hold yet, with the same "
        "artifact, and commit them into its manifest (the output is created if absent)",
    )
    keep_versions: int = Field(
        default=2, ge=1, description="versions of an object-store output kept (the current one included)"
    )
    refit: Literal["always", "never", "on_drift"] = Field(
        default="always",
        description="the preprocess flow: always refit and rewrite; never (append new files with the "
        "frozen statistics); on_drift (append, or refit and rewrite when the new files drifted)",
    )
    drift: Thresholds = Field(default_factory=Thresholds, description="when a column has drifted")
    storage_options: dict[str, Any] = Field(default_factory=dict)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    @field_serializer("storage_options", when_used="json")
    def _hide_secrets(self, value: dict[str, Any]) -> dict[str, Any]:
        """Credentials never leave the process as text (Prefect parameters, logs): JSON
        dumps show them as ``***``."""
        masked: dict[str, Any] = _masked(value)
        return masked

    @field_validator("source", "output", "stats", mode="before")
    @classmethod
    def _paths(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("unit_size", mode="before")
    @classmethod
    def _bytes(cls, value: Any) -> Any:
        if isinstance(value, str):
            from dask.utils import parse_bytes

            try:
                return parse_bytes(value)
            except ValueError:
                raise ValueError("not a size; write e.g. '128MB'") from None
        return value

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

    def impute_for(self, column: str) -> ImputeSpec:
        return self.impute_overrides.get(column, self.impute)

    def log_columns(self, columns: list[str]) -> list[str]:
        """The columns whose method needs the moments of the signed log."""
        return [name for name in columns if self.spec_for(name).needs_log]


class ModelOptions(_Model):
    """The network: ``mlp`` for tabular rows, ``sequence`` for time-series windows,
    ``cnn`` for images (the first feature; scalar features may follow)."""

    kind: Literal["mlp", "sequence", "cnn"] = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [64, 64], min_length=1)
    channels: list[int] = Field(
        default_factory=lambda: [16, 32], min_length=1, description="cnn: output channels of each conv block"
    )
    norm: Literal["batch", "layer", "none", "instance"] = "batch"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    time: str | None = Field(
        default=None,
        description="sequence: the column ordering each series (left out: the feature is a window tensor)",
    )
    series: str | None = Field(default=None, description="sequence: the column naming the series")
    window: int = Field(default=24, ge=1, description="sequence: past rows per window")
    embedding_dim: int | None = Field(
        default=None,
        ge=1,
        description="mlp: width of each categorical feature's embedding "
        "(default min(50, round(1.6 * indices ** 0.56)))",
    )

    @field_validator("hidden", "channels")
    @classmethod
    def _widths(cls, value: list[int]) -> list[int]:
        if any(w < 1 for w in value):
            raise ValueError("every hidden width must be >= 1")
        return value


class TrainOptions(_Model):
    """Optimizer, early stopping and data loading."""

    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    batch_size: int = Field(default=256, ge=1)
    max_epochs: int = Field(default=50, ge=1)
    patience: int = Field(default=5, ge=1)
    seed: int = 0
    valid_fraction: float = Field(default=0.2, gt=0, lt=1)
    sample: float = Field(default=1.0, gt=0, le=1, description="share of rows used (a seeded subset)")
    shuffle_buffer: int = Field(default=16_384, ge=0)
    num_workers: int = Field(default=0, ge=0)
    device: str = "auto"


class _ModelRun(_Model):
    data: str | None = None
    features: list[str] = Field(default_factory=list)
    target: str | None = None
    model: ModelOptions = Field(default_factory=ModelOptions)
    training: TrainOptions = Field(default_factory=TrainOptions)
    overwrite: bool = False


class TrainRunConfig(_ModelRun):
    """``normpipe train``: a model on the normalized output of ``normpipe run``.

    ``stats`` defaults to ``DATA/_stats.json``; ``output`` is the model directory.
    """

    stats: str | None = None
    output: str | None = None


CompareScaler = Literal["none", "zscore", "minmax", "robust", "maxabs"]
CompareNorm = Literal["none", "batch", "layer", "instance"]
CompareInputs = Literal["all", "numeric", "all+impute", "numeric+impute"]


class CompareConfig(_ModelRun):
    """``normpipe compare``: k-fold cross-validation of scalers x normalization layers
    on the raw dataset ``data``; the report goes to ``output``."""

    output: str | None = None
    scalers: list[CompareScaler] = Field(
        default_factory=lambda: list(get_args(CompareScaler))[:4], min_length=1
    )
    norms: list[CompareNorm] = Field(default_factory=lambda: list(get_args(CompareNorm)), min_length=1)
    inputs: list[CompareInputs] = Field(
        default_factory=lambda: list(get_args(CompareInputs))[:1],
        min_length=1,
        description="all: every feature (categorical ones embedded); numeric: categorical features "
        "left out; +impute: missing numeric values filled with each fold's impute statistic instead "
        "of dropping the row",
    )
    impute: ImputeSpec = Field(default_factory=lambda: ImputeSpec(strategy="median"))
    categories: dict[str, CategorySpec] = Field(
        default_factory=dict,
        description="categorical features' options (string and boolean features are anyway)",
    )
    folds: int = Field(default=5, ge=2)
    target_rmse: float | None = Field(default=None, gt=0)
    within: float = Field(default=0.10, gt=0, description="default target: best final RMSE x (1 + within)")
    sketch_k: int = Field(default=2000, ge=8, le=65535)


def describe_validation_error(err: ValidationError, where: str) -> str:
    """One line naming the first offending key, what was wrong and what was received."""
    loc, _, first = first_problem(err)
    loc = loc or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"{where}: unknown key '{loc}'; remove it or check its spelling"
    received = first.get("input")
    shown = f" (got {received!r})" if not isinstance(received, dict | list) else ""
    return f"{where}: invalid value for '{loc}': {first['msg']}{shown}"


def _read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    where = str(path)
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
    return doc


def load_config(
    path: str | os.PathLike[str] | None = None, *, base: RunConfig | None = None, **options: Any
) -> RunConfig:
    """Validate a run config from a YAML file (``yaml.safe_load``) or a ``base`` config,
    and options: the one resolver of the CLI, the Python API and the flows.

    Options that are not None replace the file's (or ``base``'s) values; ``cluster`` is
    a mapping merged key by key into the ``cluster`` section.

    Raises
    ------
    ConfigError
        The file is missing or not YAML, or a key is unknown or has a wrong type.
    """
    where = str(path) if path is not None else "options"
    doc: Any = _read_yaml(path) if path is not None else {}
    if base is not None:
        doc = {**base.model_dump(), **doc}
    cluster = options.pop("cluster", None) or {}
    doc.update({k: v for k, v in options.items() if v is not None})
    cluster = {k: v for k, v in cluster.items() if v is not None}
    if cluster:
        section = doc.get("cluster") or {}
        doc["cluster"] = {**section, **cluster} if isinstance(section, dict) else section
    try:
        return RunConfig.model_validate(doc)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, where)) from None


def load_model_config(
    kind: type[TrainRunConfig] | type[CompareConfig], path: str | os.PathLike[str] | None, **options: Any
) -> Any:
    """Validate a ``train`` / ``compare`` config from YAML and/or options (not None wins)."""
    where = str(path) if path is not None else "options"
    doc = _read_yaml(path) if path is not None else {}
    doc.update({k: v for k, v in options.items() if v is not None})
    try:
        config = kind.model_validate(doc)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, where)) from None
    for key in ("data", "target", "output"):
        if not getattr(config, key):
            raise ConfigError(f"{where}: '{key}' is required; set it in the config or on the command line")
    if not config.features:
        raise ConfigError(f"{where}: 'features' is required: the input columns of the model")
    if config.model.norm == "instance" and config.model.kind == "mlp":
        raise ConfigError(
            f"{where}: model.norm 'instance' is for model.kind 'sequence' or 'cnn'; use batch, layer or none"
        )
    return config
