"""The Python API: :func:`fit`, :func:`transform` and :func:`run`.

Each takes the options of :class:`~normpipe.config.RunConfig` as keyword arguments
(or a ready ``config``), validates them once, and runs on a Dask client: the one
passed as ``client``, else a private cluster built from the ``cluster`` options.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
from distributed import Client

from normpipe import engine
from normpipe.append import above_partitions, unheld
from normpipe.categories import CategorySpec
from normpipe.cluster import dask_client
from normpipe.commit import check_output, commit, committed, current
from normpipe.config import RunConfig, load_config
from normpipe.core.column import TableState
from normpipe.core.images import is_image_type
from normpipe.core.tensor import TensorLayout
from normpipe.core.vocab import Kind, VocabState, kind_of
from normpipe.dataset import Dataset, check_footers, discover, listing, pandas_index_columns, select_columns
from normpipe.engine import Progress
from normpipe.errors import ArtifactError, ConfigError, InputError
from normpipe.impute import indicator_name
from normpipe.scalers import GROUP_METHODS, REPORTED_PROBABILITIES
from normpipe.stats import Stats
from normpipe.storage import Location, locate, storage_errors
from normpipe.tensors import FittedTensor, first_image_shape, resolve_layout

__all__ = [
    "REPORT_IN_OUTPUT",
    "STATS_IN_OUTPUT",
    "artifact_location",
    "fit",
    "fit_pending",
    "pending",
    "run",
    "transform",
    "update",
]

#: Name of the stats artifact that :func:`run` writes inside the output directory.
STATS_IN_OUTPUT = "_stats.json"
#: Name of the HTML report written inside the output directory with ``report=True``.
REPORT_IN_OUTPUT = "_report.html"


def _config(config: RunConfig | None, options: dict[str, Any]) -> RunConfig:
    """``config`` with ``options`` applied, validated like the CLI's (a
    :class:`~normpipe.errors.ConfigError` naming the key)."""
    if config is not None and not options:
        return config
    return load_config(None, base=config, **options)


@contextmanager
def _client(config: RunConfig, client: Client | None) -> Iterator[Client]:
    if client is not None:
        with nullcontext(client) as given:
            yield given
        return
    with dask_client(config.cluster) as started:
        yield started


def _require(value: str | None, option: str) -> str:
    if not value:
        raise ConfigError(f"missing {option}; give it on the command line or in the config")
    return value


def _dataset(config: RunConfig) -> Dataset:
    return discover(_require(config.source, "SOURCE"), config.storage_options)


def _output(config: RunConfig, dataset: Dataset) -> Location:
    output = locate(_require(config.output, "--output"), config.storage_options)
    check_output(output, dataset, config.overwrite or config.append)
    return output


@dataclass(frozen=True)
class _Plan:
    """What a fit analyzes: numeric columns, tensor layouts, categorical columns (with
    their specs and whether ``auto`` found them) and the columns whose values are counted
    for ``most_frequent``."""

    columns: list[str]
    layouts: dict[str, TensorLayout]
    categories: dict[str, tuple[CategorySpec, bool]]
    kinds: dict[str, Kind]
    counts: list[str]


def _plan(config: RunConfig, dataset: Dataset) -> _Plan:
    """The columns to analyze and how; checked (in every file's footer) before any
    cluster starts."""
    if config.group_by and dataset.schema.get_field_index(config.group_by) < 0:
        names = listing(dataset.schema.names)
        raise ConfigError(
            f"--group-by '{config.group_by}' is not a column of {dataset.source}; columns: {names}"
        )
    exclude = [*config.exclude, config.group_by] if config.group_by else config.exclude
    if config.group_by and config.columns and config.group_by in config.columns:
        raise ConfigError(f"column '{config.group_by}' is the group key; it cannot be normalized too")
    if config.group_by and config.tensors:
        raise ConfigError("tensor columns are not normalized per group; leave out group_by or tensors")
    for name in config.tensors:
        if name in (config.columns or ()):
            raise ConfigError(f"column '{name}' is listed in both columns and tensors; list it in one")
    layouts = _tensor_layouts(config, dataset)  # a missing or mistyped tensor column is named first
    kinds = _categorical_kinds(config, dataset, [*exclude, *config.tensors])
    categories = {
        name: (config.categories.get(name, CategorySpec()), name not in config.categories) for name in kinds
    }
    columns = select_columns(
        dataset.schema,
        config.columns,
        [*exclude, *config.tensors, *(n for n in config.categories if n not in exclude)],
        dataset.source,
        bool(config.tensors or categories),
    )
    for name in config.overrides:
        if name not in columns:
            raise ConfigError(
                f"override for column '{name}', which is not normalized; "
                f"normalized columns: {listing(columns)}"
            )
    _check_imputation(config, dataset, columns, list(categories))
    if config.group_by:
        _check_group_plan(config, dataset, columns)
    check_footers(dataset, columns, config.tensors, categories)
    counts = [name for name in columns if config.impute_for(name).strategy == "most_frequent"]
    return _Plan(columns, layouts, categories, kinds, counts)


def _categorical_kinds(config: RunConfig, dataset: Dataset, exclude: list[str]) -> dict[str, Kind]:
    """The kind of values of each declared categorical column and, with ``categorical:
    auto``, of every other string or boolean column (not a stored pandas index)."""
    schema = dataset.schema
    kinds: dict[str, Kind] = {}
    for name in config.categories:
        index = schema.get_field_index(name)
        if index < 0:
            raise ConfigError(
                f"categorical column '{name}' is not in {dataset.source}; columns: {listing(schema.names)}"
            )
        if name in exclude or name in (config.columns or ()):
            raise ConfigError(
                f"column '{name}' is categorical and also listed elsewhere; list it in one place"
            )
        kind = kind_of(schema.field(index).type)
        if kind is None or kind == "float":
            raise ConfigError(
                f"categorical column '{name}' is {schema.field(index).type}; categories are strings, "
                "integers or booleans (leave a float column to a method)"
            )
        kinds[name] = kind
    if config.categorical == "auto":
        left = set(exclude) | set(pandas_index_columns(schema)) | set(config.columns or ())
        for field in schema:
            kind = kind_of(field.type)
            if field.name not in kinds and field.name not in left and kind in ("string", "boolean"):
                kinds[field.name] = kind
    return kinds


def _check_imputation(config: RunConfig, dataset: Dataset, columns: list[str], categories: list[str]) -> None:
    """Imputation names mapped columns, and indicators do not overwrite a column."""
    for name, spec in config.impute_overrides.items():
        if name not in columns and name not in categories:
            raise ConfigError(
                f"impute_overrides for column '{name}', which is not normalized or coded; "
                f"columns: {listing([*columns, *categories])}"
            )
        if name in categories and spec.strategy in ("mean", "median"):
            raise ConfigError(
                f"column '{name}' is categorical: impute it with most_frequent or constant, "
                f"not {spec.strategy}"
            )
    for name in [*columns, *categories]:
        flag = indicator_name(name)
        if config.impute_for(name).missing_indicator and dataset.schema.get_field_index(flag) >= 0:
            raise ConfigError(
                f"the missing indicator of column '{name}' would be '{flag}', which is already a column; "
                "rename that column or turn missing_indicator off"
            )


def _tensor_layouts(config: RunConfig, dataset: Dataset) -> dict[str, TensorLayout]:
    """The layout of each tensor column, from the config and the dataset's schema."""
    layouts = {}
    for name, spec in config.tensors.items():
        index = dataset.schema.get_field_index(name)
        if index < 0:
            raise ConfigError(
                f"tensor column '{name}' is not in {dataset.source}; columns: {listing(dataset.schema.names)}"
            )
        field = dataset.schema.field(index)
        if is_image_type(field.type) and spec.shape is None:
            spec = spec.model_copy(update={"shape": first_image_shape(dataset, name, spec.layout)})
        layouts[name] = resolve_layout(name, field, spec, dataset.source)
    return layouts


def _check_group_plan(config: RunConfig, dataset: Dataset, columns: list[str]) -> None:
    by = config.group_by or ""
    index = dataset.schema.get_field_index(by)
    key_type = dataset.schema.field(index).type
    if pa.types.is_dictionary(key_type):
        key_type = key_type.value_type
    if not (
        pa.types.is_integer(key_type)
        or pa.types.is_string(key_type)
        or pa.types.is_large_string(key_type)
        or pa.types.is_boolean(key_type)
        or pa.types.is_floating(key_type)
    ):
        raise ConfigError(
            f"--group-by '{by}' has type {key_type}; group keys must be integers, strings, booleans or floats"
        )
    for name in columns:
        method = config.spec_for(name).method
        if method not in GROUP_METHODS:
            raise ConfigError(
                f"column '{name}': {method} is not available per group (it needs quantiles per group); "
                f"use one of {', '.join(GROUP_METHODS)}, or leave the column out with --exclude"
            )


def _check_artifact_columns(stats: Stats, dataset: Dataset) -> None:
    schema = dataset.schema
    for name in [*stats.columns, *stats.tensors, *stats.categories]:
        if schema.get_field_index(name) < 0:
            raise ArtifactError(
                f"column '{name}' is in the stats artifact but not in {dataset.files[0].path}; "
                "use the artifact fitted on this dataset"
            )


def _fit(
    config: RunConfig,
    dataset: Dataset,
    plan: _Plan,
    client: Client,
    progress: Progress | None,
) -> Stats:
    columns, layouts = plan.columns, plan.layouts
    state = engine.analyze(
        client,
        dataset,
        columns,
        config.sketch_k,
        config.split_every,
        progress,
        log=config.log_columns(columns),
        distinct=columns if config.distinct else (),
        group_by=config.group_by,
        unit_bytes=config.unit_size,
        tensors=layouts,
        skip_images=[name for name, spec in config.tensors.items() if spec.on_error == "skip"],
        categories={
            name: VocabState.empty(plan.kinds[name], spec.limit, spec.lg_size)
            for name, (spec, _) in plan.categories.items()
        },
        counts=plan.counts,
    )
    if state.rows == 0:
        raise InputError(f"{dataset.source}: the dataset has no rows; nothing to fit")
    schema = dataset.schema
    specs = {name: config.spec_for(name) for name in columns}
    exact = None
    if config.quantiles == "exact":
        wanted = {
            name: sorted({*REPORTED_PROBABILITIES, *spec.probabilities()}) for name, spec in specs.items()
        }
        exact = engine.exact_quantiles(
            client, dataset, state, wanted, config.split_every, progress, config.unit_size
        )
    return Stats.from_state(
        state,
        specs,
        {name: str(schema.field(name).type) for name in [*columns, *config.tensors, *plan.categories]},
        config.sketch_k,
        dataset.fingerprint(),
        exact=exact,
        group_by=config.group_by,
        unseen=config.unseen,
        tensors=config.tensors,
        categories=plan.categories,
        imputes={name: config.impute_for(name) for name in [*columns, *plan.categories]},
    )


def _write_artifact(stats: Stats, where: Location) -> str:
    """Write ``stats`` to ``where``; its sha256."""
    data = stats.to_bytes()
    where.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _write_output(
    config: RunConfig,
    stats: Stats,
    dataset: Dataset,
    output: Location,
    client: Client,
    progress: Progress | None,
    stats_inside: bool,
) -> dict[str, Any]:
    """Write ``dataset`` normalized with ``stats`` to ``output`` under the commit protocol;
    with ``config.append``, only the files the output does not hold yet, committed into
    its manifest. Returns the manifest, with ``output``, ``location`` (where its files
    are: the output, or its new version on an object store), ``written`` (the files this
    run wrote) and ``report``."""
    replace_output = config.overwrite or config.append
    check_output(output, dataset, replace_output)  # again: the fit pass may have been long
    with commit(output, config.overwrite, config.append, config.keep_versions) as target:
        tmp, previous = target.where, target.previous
        held = [] if previous is None else previous.entries()
        if previous is not None:  # under the output's lock: what it holds now
            dataset = unheld(dataset, previous, stats.sha256, output)
        elif config.append:
            dataset = above_partitions(dataset)
        # serialized once (a wide table's artifact takes seconds), and its bytes are not
        # held while the workers write
        inside = stats_inside and (previous is None or not tmp.child(STATS_IN_OUTPUT).exists())
        sha = _write_artifact(stats, tmp.child(STATS_IN_OUTPUT)) if inside else stats.sha256
        files = []
        if dataset.files:
            files = engine.normalize_dataset(
                client,
                dataset,
                tmp,
                {
                    n: m
                    for n, m in stats.fitted.maps.items()
                    if not (isinstance(m, FittedTensor) and m.spec.output == "none")
                },
                config.dtype,
                sha,
                progress,
                groups=stats.fitted.groups,
                unit_bytes=config.unit_size,
            )
        if config.report:
            from normpipe.report import report_html

            tmp.child(REPORT_IN_OUTPUT).write_bytes(report_html(stats).encode())
        manifest = target.write_manifest([*held, *files], sha, dataset.source, dataset.root)
    files_at = output if output.is_local else tmp  # locally, the directory renamed into place
    manifest["output"] = output.url
    manifest["location"] = files_at.url
    manifest["written"] = len(files)
    if config.report:
        manifest["report"] = files_at.child(REPORT_IN_OUTPUT).url
    return manifest


def pending(
    source: str | os.PathLike[str] | None = None,
    stats: Stats | str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] | None = None,
    *,
    config: RunConfig | None = None,
    **options: Any,
) -> Dataset | None:
    """The files of ``source`` that an append with ``stats`` would write to ``output``
    (the same checks as :func:`transform` with ``append``); ``None`` when the output does
    not exist yet (an append writes every file). Reads the output's manifest only."""
    cfg, artifact = _transform_options(source, stats, output, config, options)
    found = committed(locate(_require(cfg.output, "--output"), cfg.storage_options))
    if found is None:
        return None
    return unheld(_dataset(cfg), found[1], artifact.sha256, found[0])


def _transform_options(
    source: str | os.PathLike[str] | None,
    stats: Stats | str | os.PathLike[str] | None,
    output: str | os.PathLike[str] | None,
    config: RunConfig | None,
    options: dict[str, Any],
) -> tuple[RunConfig, Stats]:
    if source is not None:
        options["source"] = os.fspath(source)
    if output is not None:
        options["output"] = os.fspath(output)
    if stats is not None and not isinstance(stats, Stats):
        options["stats"] = os.fspath(stats)
    cfg = _config(config, options)
    artifact = stats if isinstance(stats, Stats) else _load_stats(_require(cfg.stats, "--stats"), cfg)
    return cfg, artifact


def fit(
    source: str | os.PathLike[str] | None = None,
    *,
    config: RunConfig | None = None,
    client: Client | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> Stats:
    """Compute global statistics of a Parquet dataset and fit the scalers.

    Parameters
    ----------
    source : str or path
        A Parquet file, directory (hive partitions are searched), glob or fsspec URL.
    config : RunConfig, optional
        All options at once; keyword ``options`` then override it.
    client : distributed.Client, optional
        Run on this client; default: start a private cluster per ``cluster``.
    progress : callable, optional
        ``progress(phase, done, total)`` as files finish.
    **options
        Any :class:`RunConfig` field: ``method``, ``overrides``, ``columns``,
        ``exclude``, ``sketch_k``, ``cluster``, ``stats`` (where to save the artifact)...

    Returns
    -------
    Stats
        The artifact; also saved to ``stats`` when that option is given.

    Raises
    ------
    NormpipeError
        For any bad input, with a message naming the file or column.
    """
    if source is not None:
        options["source"] = os.fspath(source)
    cfg = _config(config, options)
    dataset = _dataset(cfg)
    plan = _plan(cfg, dataset)
    with _client(cfg, client) as c:
        stats = _fit(cfg, dataset, plan, c, progress)
    if cfg.stats:
        stats.save(cfg.stats, cfg.storage_options)
    return stats


def update(
    source: str | os.PathLike[str] | None = None,
    base: Stats | str | os.PathLike[str] | None = None,
    *,
    config: RunConfig | None = None,
    client: Client | None = None,
    progress: Progress | None = None,
    allow_repeat: bool = False,
    only_new: bool = False,
    **options: Any,
) -> tuple[Stats, int]:
    """Merge the statistics of more partitions into an artifact: one pass over them only.

    Parameters
    ----------
    source : str or path
        The new partitions (a file, directory, glob or URL).
    base : Stats or path
        The artifact to update; its columns, methods and sketch ``k`` are kept.
    allow_repeat : bool
        Count files that the artifact already counts (same location and size) again;
        by default they are refused.
    only_new : bool
        Read only the files of ``source`` that the artifact does not count yet (the
        incremental mode of the scheduled flow); with none, ``base`` comes back as is.
    **options
        :class:`RunConfig` fields: ``stats`` (where to save the result), ``cluster``...

    Returns
    -------
    (Stats, int)
        The merged artifact and the number of files read. Moments, counts, min and max
        equal a full refit up to float64 rounding; quantiles stay within the sketch bound.
    """
    if source is not None:
        options["source"] = os.fspath(source)
    cfg = _config(config, options)
    artifact = base if isinstance(base, Stats) else _load_stats(_require(_path(base), "--update"), cfg)
    where = "the artifact" if isinstance(base, Stats) else str(base)
    dataset = _dataset(cfg)
    if only_new:
        counted = artifact.dataset.counted()
        root = dataset.root.rstrip("/")
        fresh = tuple(f for f in dataset.files if (f"{root}/{f.relpath}", f.size) not in counted)
        if not fresh:
            return artifact, 0
        dataset = replace(dataset, files=fresh)
    elif not allow_repeat:
        artifact.statistics.check_not_counted(dataset.fingerprint().counted(), where)
    with _client(cfg, client) as c:
        state = _analyze_like(artifact, dataset, cfg, c, progress)
    merged = artifact.absorb(state, dataset.fingerprint(), allow_repeat=True, what=where)
    if cfg.stats:
        merged.save(cfg.stats, cfg.storage_options)
    return merged, len(dataset.files)


def _analyze_like(
    artifact: Stats, dataset: Dataset, cfg: RunConfig, client: Client, progress: Progress | None
) -> TableState:
    """One pass over ``dataset`` gathering what ``artifact`` holds: its columns, sketch
    ``k``, log and distinct states, groups, tensors, categories and value counts."""
    _check_artifact_columns(artifact, dataset)
    columns = list(artifact.columns)
    check_footers(dataset, columns, artifact.tensors, artifact.categories)
    log = [name for name, c in artifact.columns.items() if c.state.log is not None]
    distinct = [name for name, c in artifact.columns.items() if c.state.distinct is not None]
    by = artifact.groups.by if artifact.groups is not None else None
    return engine.analyze(
        client,
        dataset,
        columns,
        artifact.k,
        cfg.split_every,
        progress,
        log=log,
        distinct=distinct,
        group_by=by,
        unit_bytes=cfg.unit_size,
        tensors={name: t.state.layout for name, t in artifact.tensors.items()},
        skip_images=[name for name, t in artifact.tensors.items() if t.spec.on_error == "skip"],
        categories={
            name: VocabState.empty(c.state.kind, c.state.limit, c.state.lg_size)
            for name, c in artifact.categories.items()
        },
        counts=[name for name, c in artifact.columns.items() if c.state.counts is not None],
    )


def fit_pending(
    source: str | os.PathLike[str] | None = None,
    stats: Stats | str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] | None = None,
    *,
    config: RunConfig | None = None,
    client: Client | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> tuple[Stats | None, int]:
    """The statistics of the files an append would write (see :func:`pending`) alone,
    fitted as ``stats`` is (one pass over those files only), and their number; ``(None,
    0)`` when there are none. Compare them with ``stats`` (:func:`normpipe.drift.drift`)
    to decide between appending with the frozen artifact and refitting."""
    cfg, artifact = _transform_options(source, stats, output, config, options)
    dataset = pending(config=cfg, stats=artifact)
    if dataset is None:
        dataset = _dataset(cfg)
    if not dataset.files:
        return None, 0
    with _client(cfg, client) as c:
        state = _analyze_like(artifact, dataset, cfg, c, progress)
    return artifact.like(state, dataset.fingerprint()), len(dataset.files)


def artifact_location(stats: str, storage_options: dict[str, Any] | None = None) -> str:
    """A stats file as given, or the ``_stats.json`` of a normpipe output (of its current
    version on an object store), accepted only when the output's manifest is present and
    matches its parts."""
    location = locate(stats, storage_options)
    with storage_errors(location.url, "read"):
        is_dir = location.fs.isdir(location.path)
    if not is_dir:
        return stats
    discover(stats, storage_options)  # the commit protocol: a complete output, or one clear error
    inside = current(location).child(STATS_IN_OUTPUT)
    if not inside.exists():
        raise ArtifactError(f"{stats}: a directory without {STATS_IN_OUTPUT}; pass the stats file")
    return inside.url


def _load_stats(path: str, config: RunConfig) -> Stats:
    return Stats.load(artifact_location(path, config.storage_options), config.storage_options)


def _path(value: str | os.PathLike[str] | None) -> str | None:
    return None if value is None else os.fspath(value)


def transform(
    source: str | os.PathLike[str] | None = None,
    stats: Stats | str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] | None = None,
    *,
    config: RunConfig | None = None,
    client: Client | None = None,
    progress: Progress | None = None,
    save_stats: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Write a normalized copy of ``source`` to ``output`` with a fitted artifact.

    ``stats`` is a :class:`Stats` or the path of a saved artifact (default: the
    ``stats`` option). The output appears atomically with a ``_SUCCESS`` manifest,
    which is returned (row counts per file, the artifact's sha256; ``written``: the
    files this run wrote). With ``save_stats`` the artifact is also written as
    ``OUTPUT/_stats.json``, inside the atomic output.

    With the ``append`` option, only the files that ``output`` does not hold yet (by
    path below its input, and size) are read and written, with the artifact the output
    was written with (another is refused), and committed into its manifest; the parts
    already there are neither read nor rewritten. Nothing new: the output is left as it is.
    """
    cfg, artifact = _transform_options(source, stats, output, config, options)
    dataset = _dataset(cfg)
    output_path = _output(cfg, dataset)
    if cfg.append and (found := committed(output_path)) is not None:
        dataset = unheld(dataset, found[1], artifact.sha256, output_path)
        if not dataset.files:
            manifest = found[1].model_dump(mode="json")
            return {**manifest, "output": output_path.url, "location": found[0].url, "written": 0}
    _check_artifact_columns(artifact, dataset)
    check_footers(dataset, artifact.columns, artifact.tensors, artifact.categories)
    with _client(cfg, client) as c:
        manifest = _write_output(cfg, artifact, dataset, output_path, c, progress, stats_inside=save_stats)
    if save_stats:
        manifest["stats"] = locate(manifest["location"], cfg.storage_options).child(STATS_IN_OUTPUT).url
    return manifest


def run(
    source: str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] | None = None,
    *,
    config: RunConfig | None = None,
    client: Client | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> tuple[Stats, dict[str, Any]]:
    """Fit, then transform, on one cluster; returns the artifact and the manifest.

    The artifact is written to ``OUTPUT/_stats.json`` (inside the atomic output)
    unless the ``stats`` option names another path.
    """
    if source is not None:
        options["source"] = os.fspath(source)
    if output is not None:
        options["output"] = os.fspath(output)
    cfg = _config(config, options)
    if cfg.append:
        raise ConfigError(
            "append adds files with the artifact an output was written with; fit once, then "
            "'normpipe transform NEW --stats S --output OUT --append'"
        )
    dataset = _dataset(cfg)
    output_path = _output(cfg, dataset)
    plan = _plan(cfg, dataset)
    with _client(cfg, client) as c:
        stats = _fit(cfg, dataset, plan, c, progress)
        if cfg.stats:
            stats.save(cfg.stats, cfg.storage_options)
        manifest = _write_output(cfg, stats, dataset, output_path, c, progress, stats_inside=not cfg.stats)
    inside = locate(manifest["location"], cfg.storage_options).child(STATS_IN_OUTPUT)
    manifest["stats"] = locate(cfg.stats, cfg.storage_options).url if cfg.stats else inside.url
    return stats, manifest
