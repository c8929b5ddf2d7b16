"""The commands over datasets and artifacts: fit, transform, run, inspect, merge, report, drift."""

from __future__ import annotations

import json
import os
import time
from typing import Annotated, Any

import typer
from rich.table import Table

from normpipe.cli.app import app, clean_errors, console
from normpipe.cli.options import (
    AppendOpt,
    CategoricalOpt,
    CategoriesOpt,
    ColumnsOpt,
    ConfigOpt,
    DistinctOpt,
    DtypeOpt,
    ExcludeOpt,
    GroupByOpt,
    ImputeOpt,
    KOpt,
    MemoryOpt,
    MethodOpt,
    OutputOpt,
    OverrideOpt,
    OverwriteOpt,
    ProgressOpt,
    QuantilesOpt,
    ReportOpt,
    SchedulerOpt,
    Source,
    StatsOpt,
    ThreadsOpt,
    UnitSizeOpt,
    UnseenOpt,
    WorkersOpt,
    build_config,
    config_from,
    config_options,
    progress_bar,
    split_list,
)
from normpipe.cli.tables import fmt, print_stats
from normpipe.errors import ConfigError


@app.command()
@clean_errors
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
    categories: CategoriesOpt = None,
    categorical: CategoricalOpt = None,
    impute: ImputeOpt = None,
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
    unit_size: UnitSizeOpt = None,
    progress: ProgressOpt = None,
) -> None:
    """Compute global statistics of SOURCE and save them (with the fitted scalers) to --stats,
    or with --update merge them into an existing artifact."""
    options = config_options(locals())
    from normpipe import api
    from normpipe.storage import locate

    if update is not None:
        from normpipe.config import STATISTICS_OPTIONS

        cfg = build_config(config, **{**options, "stats": stats or update})
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
        with progress_bar(progress) as tick:
            merged, files = api.update(config=cfg, base=update, allow_repeat=allow_repeat, progress=tick)
        print_stats(merged, locate(cfg.stats or update).url)
        console.print(
            f"stats: {locate(cfg.stats or update).url}  ({files} new files, "
            f"{merged.rows:,} rows in all; {time.perf_counter() - started:.1f} s)"
        )
        return

    cfg = build_config(config, **options)
    if not cfg.stats:
        raise ConfigError("missing --stats: where to save the stats artifact, e.g. --stats stats.json")
    started = time.perf_counter()
    with progress_bar(progress) as tick:
        result = api.fit(config=cfg, progress=tick)
    print_stats(result, locate(cfg.stats).url)
    console.print(f"stats: {locate(cfg.stats).url}  ({time.perf_counter() - started:.1f} s)")


@app.command()
@clean_errors
def transform(
    source: Source = None,
    stats: StatsOpt = None,
    output: OutputOpt = None,
    config: ConfigOpt = None,
    dtype: DtypeOpt = None,
    report: ReportOpt = None,
    overwrite: OverwriteOpt = None,
    append: AppendOpt = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    threads_per_worker: ThreadsOpt = None,
    memory_limit: MemoryOpt = None,
    unit_size: UnitSizeOpt = None,
    progress: ProgressOpt = None,
) -> None:
    """Write a normalized copy of SOURCE to --output with the scalers saved in --stats
    (--append: only the files --output does not hold yet, committed into it)."""
    cfg = config_from(locals())
    from normpipe import api

    started = time.perf_counter()
    with progress_bar(progress) as tick:
        manifest = api.transform(config=cfg, progress=tick)
    held = f"; {manifest['rows_out']:,} rows in {len(manifest['files'])} files in all" if cfg.append else ""
    written = manifest["files"][len(manifest["files"]) - manifest["written"] :]
    console.print(
        f"wrote {sum(f['rows_out'] for f in written):,} rows in {len(written)} files to "
        f"{manifest['output']}{held}  ({time.perf_counter() - started:.1f} s)"
        + (f"\nreport: {manifest['report']}" if manifest.get("report") else "")
    )


@app.command()
@clean_errors
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
    categories: CategoriesOpt = None,
    categorical: CategoricalOpt = None,
    impute: ImputeOpt = None,
    unseen: UnseenOpt = None,
    report: ReportOpt = None,
    overwrite: OverwriteOpt = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    threads_per_worker: ThreadsOpt = None,
    memory_limit: MemoryOpt = None,
    unit_size: UnitSizeOpt = None,
    progress: ProgressOpt = None,
) -> None:
    """Fit, then transform: normalized SOURCE in --output, stats in OUTPUT/_stats.json (or --stats)."""
    cfg = config_from(locals())
    run_and_report(cfg, progress)


def run_and_report(cfg: Any, progress: bool | None, prefect: bool = False) -> None:
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
        with progress_bar(progress) as tick:
            stats, manifest = api.run(config=cfg, progress=tick)
    print_stats(stats, manifest["stats"])
    console.print(
        f"output: {manifest['output']}  ({manifest['rows_out']:,} rows, {len(manifest['files'])} files)\n"
        f"stats:  {manifest['stats']}\n"
        + (f"report: {manifest['report']}\n" if manifest.get("report") else "")
        + f"done in {time.perf_counter() - started:.1f} s"
    )


def artifact_path(stats: str) -> str:
    """A stats file as given, or the ``_stats.json`` of a normpipe output directory."""
    from normpipe.api import artifact_location

    return artifact_location(stats)


@app.command()
@clean_errors
def inspect(
    stats: Annotated[str, typer.Argument(help="A stats artifact, or an output written by run.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Show the statistics and fitted scalers of a stats artifact."""
    from normpipe.stats import Stats

    artifact = Stats.load(artifact_path(stats))
    if as_json:
        doc = artifact.to_json()
        for name, column in doc["columns"].items():
            column.pop("sketch")
            edges, shares = artifact.columns[name].state.histogram(20)
            column["histogram"] = {"edges": edges, "shares": shares}
        typer.echo(json.dumps(doc, indent=2))
        return
    print_stats(artifact)
    console.print(
        f"dataset: {artifact.dataset.source} ({len(artifact.dataset.files)} files)  "
        f"sha256 {artifact.sha256[:16]}…"
    )


@app.command()
@clean_errors
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
    print_stats(merged, locate(output).url)
    console.print(f"stats: {locate(output).url}  ({merged.rows:,} rows)")


@app.command()
@clean_errors
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

    artifact = Stats.load(artifact_path(stats))
    started = time.perf_counter()
    where = write_report(artifact, output, png_dir, split_list(columns))
    pngs = f" and {png_dir}/" if png_dir else ""
    console.print(f"report: {where}{pngs}  ({time.perf_counter() - started:.1f} s)")


@app.command()
@clean_errors
def drift(
    reference: Annotated[str, typer.Argument(help="Stats artifact (or output) of the reference run.")],
    current: Annotated[str, typer.Argument(help="Stats artifact (or output) of the current run.")],
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
        Stats.load(artifact_path(reference)),
        Stats.load(artifact_path(current)),
        Thresholds(psi=psi, ks=ks, mean_shift=mean_shift, missing=missing),
    )
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in results], indent=2))
    else:
        table = Table(
            "column", "PSI", "KS", "mean shift (std)", "std ratio", "missing change", "unseen share", "drift"
        )
        for r in results:
            table.add_row(
                r.column,
                fmt(r.psi),
                fmt(r.ks),
                fmt(r.mean_shift),
                fmt(r.std_ratio),
                fmt(r.missing_change),
                fmt(r.unseen_share),
                "; ".join(r.reasons) or "no",
            )
        console.print(table)
    drifted = [r.column for r in results if r.drifted]
    if drifted:
        typer.echo(f"drift in {len(drifted)} of {len(results)} columns: {', '.join(drifted[:12])}", err=True)
        raise typer.Exit(1)
