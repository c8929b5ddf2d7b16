"""The options the commands share (one definition each), and turning them into a config."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from normpipe.errors import ConfigError

Source = Annotated[str | None, typer.Argument(help="Parquet file, directory, glob or fsspec URL.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML run config (see configs/).")]
StatsOpt = Annotated[str | None, typer.Option("--stats", "-s", help="Stats artifact (JSON) path.")]
OutputOpt = Annotated[str | None, typer.Option("--output", "-o", help="Output directory.")]
MethodOpt = Annotated[
    str | None,
    typer.Option(
        "--method",
        "-m",
        help="Default method: zscore, minmax, robust, maxabs, log1p, signed_log, quantile, clip, "
        "or auto (per column, with a reason).",
    ),
]
OverrideOpt = Annotated[
    list[str] | None, typer.Option("--override", help="Per-column scaler, COLUMN=METHOD (repeatable).")
]
ColumnsOpt = Annotated[
    str | None, typer.Option("--columns", help="Comma-separated columns to normalize (default: all numeric).")
]
ExcludeOpt = Annotated[
    str | None, typer.Option("--exclude", help="Comma-separated columns to leave as they are.")
]
DtypeOpt = Annotated[
    str | None, typer.Option("--dtype", help="Output dtype of normalized columns: float64 or float32.")
]
UnitSizeOpt = Annotated[
    str | None,
    typer.Option(
        "--unit-size",
        help="Uncompressed bytes one task reads at most, e.g. 64MB (default 128MB): small files "
        "are batched, large ones split into row-group ranges.",
    ),
]
KOpt = Annotated[int | None, typer.Option("--sketch-k", help="KLL sketch k (accuracy; default 4000).")]
GroupByOpt = Annotated[
    str | None,
    typer.Option(
        "--group-by", help="Normalize each column per value of this column (per store, per sensor)."
    ),
]
UnseenOpt = Annotated[
    str | None,
    typer.Option(
        "--unseen", help="With --group-by: 'global' (default) or 'error' for groups unseen at fit time."
    ),
]
QuantilesOpt = Annotated[
    str | None,
    typer.Option(
        "--quantiles",
        help="sketch (one pass, within the stated rank error) or exact "
        "(a second pass; equals numpy.quantile).",
    ),
]
DistinctOpt = Annotated[
    bool | None,
    typer.Option("--distinct", help="Estimate distinct counts (HLL; about 0.2 s per million values)."),
]
CategoriesOpt = Annotated[
    str | None,
    typer.Option(
        "--categories",
        help="Comma-separated categorical columns, coded as int32 by frequency (options: YAML categories:).",
    ),
]
CategoricalOpt = Annotated[
    str | None,
    typer.Option(
        "--categorical", help="auto: also code every other string/boolean column that looks categorical."
    ),
]
ImputeOpt = Annotated[
    str | None,
    typer.Option(
        "--impute", help="Missing values of every column: none (default), mean, median or most_frequent."
    ),
]
ReportOpt = Annotated[
    bool | None,
    typer.Option("--report", help="Also write the HTML report as OUTPUT/_report.html (see 'report')."),
]
OverwriteOpt = Annotated[
    bool | None, typer.Option("--overwrite", help="Replace an existing normpipe output.")
]
AppendOpt = Annotated[
    bool | None,
    typer.Option(
        "--append",
        help="Write only the files the output does not hold yet (same artifact) and commit them into it.",
    ),
]
SchedulerOpt = Annotated[
    str | None, typer.Option("--scheduler", help="Address of an existing Dask scheduler (tcp://host:8786).")
]
WorkersOpt = Annotated[int | None, typer.Option("--workers", help="Local cluster: worker processes.")]
ThreadsOpt = Annotated[
    int | None, typer.Option("--threads-per-worker", help="Local cluster: threads per worker.")
]
MemoryOpt = Annotated[
    str | None, typer.Option("--memory-limit", help="Local cluster: memory per worker, e.g. 2GB.")
]
ProgressOpt = Annotated[
    bool | None, typer.Option("--progress/--no-progress", help="Progress bar (default: on a terminal).")
]


def split_list(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def parse_overrides(items: list[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    result = {}
    for item in items:
        column, sep, method = item.rpartition("=")
        if not sep or not column or not method:
            raise ConfigError(f"--override {item!r}: expected COLUMN=METHOD, e.g. --override price=robust")
        result[column] = method
    return result


#: The options of the local cluster (the config's ``cluster`` section).
CLUSTER_OPTIONS = ("scheduler", "workers", "threads_per_worker", "memory_limit")
#: Command parameters that are not run-config keys.
NOT_CONFIG = ("config", "progress", "update", "allow_repeat")


def build_config(config: Path | None, **options: Any) -> Any:
    """The run config of the YAML file ``config`` and the options given (not None)."""
    from normpipe.config import load_config

    cluster = {key: options.pop(key) for key in CLUSTER_OPTIONS if key in options}
    return load_config(config, cluster=cluster, **options)


def config_options(parameters: dict[str, Any]) -> dict[str, Any]:
    """A command's parameters as run-config keys: ``--override`` items parsed into
    ``overrides``, comma-separated ``--columns``/``--exclude`` split; parameters that
    are not config keys left out."""
    options = {key: value for key, value in parameters.items() if key not in NOT_CONFIG}
    if "override" in options:
        options["overrides"] = parse_overrides(options.pop("override"))
    for key in ("columns", "exclude"):
        if key in options:
            options[key] = split_list(options[key])
    if options.get("categories") is not None:
        options["categories"] = {name: {} for name in split_list(options["categories"]) or []}
    return options


def config_from(parameters: dict[str, Any]) -> Any:
    """The run config of a command's parameters (its ``locals()`` on entry): one rule
    for every command, from one definition of each option."""
    return build_config(parameters.get("config"), **config_options(parameters))


@contextmanager
def progress_bar(enabled: bool | None) -> Iterator[Callable[[str, int, int], None] | None]:
    if not (sys.stderr.isatty() if enabled is None else enabled):
        yield None
        return
    bar = Progress(
        TextColumn("{task.description:>9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("units"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    tasks: dict[str, Any] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bar.add_task(phase, total=total)
        bar.update(tasks[phase], completed=done)

    with bar:
        yield update
