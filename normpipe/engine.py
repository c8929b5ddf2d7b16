"""The Dask layer: the cluster, the analyze pass as a tree reduction, the transform pass.

This is the only module that imports Dask. Each Parquet file is one task; the
per-file states are combined by a tree reduction whose fan-in is ``split_every``,
so no single task ever holds more than ``split_every`` states.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from distributed import Client, Future, LocalCluster, as_completed

from normpipe.analyzers import analyze_file
from normpipe.config import ClusterConfig
from normpipe.core.column import TableState
from normpipe.dataset import Dataset
from normpipe.errors import ConfigError
from normpipe.mappers import OutputDtype
from normpipe.scalers import FittedScaler
from normpipe.writer import transform_file

__all__ = ["Progress", "analyze", "dask_client", "transform", "tree_reduce"]

#: ``progress(phase, done, total)`` is called as files complete.
Progress = Callable[[str, int, int], None]

T = TypeVar("T")


@contextmanager
def dask_client(config: ClusterConfig | None = None) -> Iterator[Client]:
    """A client on the configured scheduler, or on a private ``LocalCluster``.

    The local cluster (and the client) are closed on exit, also on error.
    """
    config = config or ClusterConfig()
    if config.scheduler:
        try:
            client = Client(config.scheduler, timeout="10s")
        except (OSError, TimeoutError) as err:
            raise ConfigError(
                f"cannot reach the Dask scheduler at {config.scheduler} ({err}); "
                "check --scheduler or leave it out to start a local cluster"
            ) from None
        with client:
            yield client
        return
    workers = config.workers or max(1, min(os.cpu_count() or 1, 8) // config.threads_per_worker)
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=config.threads_per_worker,
        memory_limit=config.memory_limit,
        processes=config.processes,
        dashboard_address=None,
        silence_logs=logging.WARNING,
    )
    with cluster, Client(cluster) as client:
        yield client


def _merge_states(*states: TableState) -> TableState:
    return TableState.merge_all(states)


def tree_reduce(
    client: Client, futures: Sequence[Future], combine: Callable[..., T], split_every: int
) -> Future:
    """Combine futures level by level, ``split_every`` at a time, on the cluster."""
    level = list(futures)
    while len(level) > 1:
        level = [
            client.submit(combine, *level[i : i + split_every], pure=False)
            for i in range(0, len(level), split_every)
        ]
    return level[0]


def _wait(futures: Sequence[Future], phase: str, progress: Progress | None) -> None:
    """Report progress as ``futures`` finish; raise the first task error."""
    total = len(futures)
    done = 0
    if progress:
        progress(phase, 0, total)
    for future in as_completed(futures):
        if future.status == "error":
            future.result()  # re-raises the task's exception
        done += 1
        if progress:
            progress(phase, done, total)


def analyze(
    client: Client,
    dataset: Dataset,
    columns: Sequence[str],
    k: int,
    split_every: int = 8,
    progress: Progress | None = None,
) -> TableState:
    """One pass over every file of ``dataset``: the merged state of ``columns``."""
    leaves = [
        client.submit(analyze_file, f, dataset.fs, list(columns), k, pure=False) for f in dataset.files
    ]
    root = tree_reduce(client, leaves, _merge_states, split_every)
    try:
        _wait(leaves, "fit", progress)
        del leaves
        result: TableState = root.result()
        return result
    finally:
        client.cancel([root])


def transform(
    client: Client,
    dataset: Dataset,
    dest_root: str,
    scalers: dict[str, FittedScaler],
    dtype: OutputDtype,
    stats_sha256: str,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Write every file of ``dataset``, normalized, below ``dest_root``; the manifest entries."""
    futures = [
        client.submit(transform_file, f, dataset.fs, dest_root, scalers, dtype, stats_sha256, pure=False)
        for f in dataset.files
    ]
    try:
        _wait(futures, "transform", progress)
        return [f.result() for f in futures]
    finally:
        client.cancel(futures)
