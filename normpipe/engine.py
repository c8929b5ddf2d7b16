"""The Dask engine: the analyze pass as a tree reduction, the exact-quantile passes and
the transform pass, over the work units of a dataset.

Each pass is planned from the footers into units of about ``unit_bytes``
(:func:`normpipe.units.plan`): small files batched, large files split into row-group
ranges where the pass only reads. One task per unit; the per-unit states are combined
by a tree reduction whose fan-in is ``split_every``, so no single task ever holds more
than ``split_every`` states, and each leaf is released once merged. The fitted
parameters reach each worker once (broadcast), not with every task. The cluster itself
is started in :mod:`normpipe.cluster`; these two are the only modules that import Dask.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from distributed import Client, Future, as_completed
from distributed.scheduler import KilledWorker

from normpipe.analyzers import analyze_unit, collect_brackets, merge_brackets, merge_states
from normpipe.core import exact
from normpipe.core.column import TableState
from normpipe.core.tensor import TensorLayout
from normpipe.core.vocab import VocabState
from normpipe.dataset import Dataset
from normpipe.errors import ClusterError, NormpipeError
from normpipe.mappers import ColumnMap, GroupedScalers, OutputDtype
from normpipe.storage import Location
from normpipe.units import DEFAULT_UNIT_BYTES, Unit, plan
from normpipe.writer import write_unit

__all__ = [
    "EXACT_WIDTHS",
    "STATE_BUDGET",
    "Progress",
    "analyze",
    "column_batches",
    "exact_quantiles",
    "normalize_dataset",
    "tree_reduce",
    "units",
]

#: ``progress(phase, done, total)`` is called as work units complete.
Progress = Callable[[str, int, int], None]

T = TypeVar("T")

#: Memory of one merge task's states: wide tables are analyzed in column batches within it.
STATE_BUDGET = 256 * 2**20

#: Bracket half-widths of the exact-quantile passes, in sketch rank errors: most
#: brackets hold at the first width (99% confidence each); the last reads everything.
EXACT_WIDTHS = (2.0, 8.0, 32.0, math.inf)


def tree_reduce(
    client: Client, futures: Sequence[Future[Any]], combine: Callable[..., T], split_every: int
) -> Future[Any]:
    """Combine futures level by level, ``split_every`` at a time, on the cluster."""
    level = list(futures)
    while len(level) > 1:
        level = [
            client.submit(combine, *level[i : i + split_every], pure=False)
            for i in range(0, len(level), split_every)
        ]
    return level[0]


def units(client: Client, dataset: Dataset, unit_bytes: int, split: bool = True) -> list[Unit]:
    """The work units of a pass over ``dataset`` on the cluster behind ``client``."""
    threads = sum(client.nthreads().values()) or 1
    return plan(dataset.files, dataset.footers, unit_bytes, threads, split)


def _wait(futures: list[Future[Any]], phase: str, progress: Progress | None, keep: bool = True) -> None:
    """Report progress as ``futures`` finish; raise the first task error.

    With ``keep=False`` the list is emptied, so that each result is released as soon
    as it is reported and consumed by its dependents (the tree reduction's merges),
    instead of staying in worker memory until the end.
    """
    total = len(futures)
    if progress:
        progress(phase, 0, total)
    pending = as_completed(futures)
    if not keep:
        futures.clear()
    for done, future in enumerate(pending, start=1):
        if future.status == "error":
            future.result()  # re-raises the task's exception
        if progress:
            progress(phase, done, total)


@contextmanager
def _cluster_failures(phase: str) -> Iterator[None]:
    """Anything but normpipe's own errors that stops a phase becomes one line."""
    try:
        yield
    except NormpipeError:
        raise
    except KilledWorker as err:
        raise ClusterError(
            f"{phase}: workers kept dying while running a task ({getattr(err, 'task', '?')}); "
            "give workers more memory (--memory-limit) or check their logs; nothing was written"
        ) from None
    except Exception as err:  # the cluster went away, or the environment failed a task
        text = " ".join(str(err).split())[:200] or "no message"
        raise ClusterError(
            f"{phase} failed on the Dask cluster ({type(err).__name__}: {text}); nothing was written"
        ) from None


def column_batches(
    columns: Sequence[str], k: int, split_every: int, budget: int = STATE_BUDGET
) -> list[list[str]]:
    """``columns`` cut so that a merge task's ``split_every`` states of one batch stay
    within ``budget`` bytes (a column's state is at most about one full KLL sketch,
    ``24 k`` bytes, and its moments, 1 KiB): wide tables are reduced batch by batch."""
    per_column = 24 * k + 1024
    size = max(1, budget // (split_every * per_column))
    return [list(columns[i : i + size]) for i in range(0, len(columns), size)]


def analyze(
    client: Client,
    dataset: Dataset,
    columns: Sequence[str],
    k: int,
    split_every: int = 8,
    progress: Progress | None = None,
    log: Sequence[str] = (),
    distinct: Sequence[str] = (),
    group_by: str | None = None,
    unit_bytes: int = DEFAULT_UNIT_BYTES,
    tensors: Mapping[str, TensorLayout] | None = None,
    skip_images: Sequence[str] = (),
    categories: Mapping[str, VocabState] | None = None,
    counts: Sequence[str] = (),
) -> TableState:
    """One pass over every row of ``dataset``: the merged state of ``columns``
    (plus the signed-log moments of ``log``, the distinct sketches of ``distinct``, the
    value counts of ``counts``, the per-group moments with ``group_by``, the per-slot
    states of ``tensors``, whose undecodable images are skipped for the names in
    ``skip_images``, and the value counts of the categorical columns in ``categories``,
    each given as its empty state).

    A task reads one unit's rows of one batch of columns (:func:`column_batches`); each
    batch has its own tree reduction, and the client joins the batches' roots. The
    tensor and categorical columns go with the first batch."""
    options = {
        "log": frozenset(log),
        "distinct": frozenset(distinct),
        "counts": frozenset(counts),
        "group_by": group_by,
    }
    work = units(client, dataset, unit_bytes)
    leaves: list[Future[Any]] = []
    roots = []
    for i, batch in enumerate(column_batches(columns, k, split_every) or [[]]):
        with_tensors = dict(tensors or {}) if i == 0 else {}
        with_categories = dict(categories or {}) if i == 0 else {}
        batch_leaves = [
            client.submit(
                analyze_unit,
                u,
                dataset.fs,
                batch,
                k,
                **options,
                tensors=with_tensors,
                skip_images=frozenset(skip_images),
                categories=with_categories,
                pure=False,
            )
            for u in work
        ]
        leaves.extend(batch_leaves)
        roots.append(tree_reduce(client, batch_leaves, merge_states, split_every))
    try:
        with _cluster_failures("fit"):
            _wait(leaves, "fit", progress, keep=False)
            return TableState.join([root.result() for root in roots])
    finally:
        with contextlib.suppress(Exception):
            client.cancel(roots)


def exact_quantiles(
    client: Client,
    dataset: Dataset,
    state: TableState,
    wanted: Mapping[str, Sequence[float]],
    split_every: int = 8,
    progress: Progress | None = None,
    unit_bytes: int = DEFAULT_UNIT_BYTES,
) -> dict[str, dict[float, float]]:
    """Exact quantiles (numpy's linear interpolation) of the columns in ``wanted``.

    A second pass per bracket width: the sketch in ``state`` brackets each order
    statistic; brackets that missed are widened (x4 each time, finally the whole
    range) and only their columns read again. See :mod:`normpipe.core.exact`.
    """
    counts = {name: state.columns[name].moments.count for name in wanted}
    pending = {name: list(ps) for name, ps in wanted.items() if counts[name] > 0}
    result: dict[str, dict[float, float]] = {}
    work = units(client, dataset, unit_bytes)
    for widen in EXACT_WIDTHS:
        if not pending:
            break
        brackets = {
            name: exact.brackets_for(state.columns[name].sketch, counts[name], ps, widen)
            for name, ps in pending.items()
        }
        leaves = [client.submit(collect_brackets, u, dataset.fs, brackets, pure=False) for u in work]
        root = tree_reduce(client, leaves, merge_brackets, split_every)
        try:
            with _cluster_failures("exact quantiles"):
                _wait(leaves, "exact quantiles", progress, keep=False)
                merged: exact.BracketState = root.result()
        finally:
            with contextlib.suppress(Exception):
                client.cancel([root])
        found, pending = exact.resolve(brackets, merged, counts)
        for name, values in found.items():
            result.setdefault(name, {}).update(values)
    return result


def normalize_dataset(
    client: Client,
    dataset: Dataset,
    dest_root: Location,
    scalers: Mapping[str, ColumnMap],
    dtype: OutputDtype,
    stats_sha256: str,
    progress: Progress | None = None,
    groups: GroupedScalers | None = None,
    unit_bytes: int = DEFAULT_UNIT_BYTES,
) -> list[dict[str, Any]]:
    """Write every file of ``dataset``, normalized, below ``dest_root``; the manifest
    entries in file order.

    Units hold whole files (each output file is written by one task, in row order); the
    parameters (per-group ones can be large) are sent to each worker once."""
    shared = client.scatter([(scalers, groups)], broadcast=True, hash=False)[0]
    futures = [
        client.submit(write_unit, u, dataset.fs, dest_root, shared, dtype, stats_sha256, pure=False)
        for u in units(client, dataset, unit_bytes, split=False)
    ]
    try:
        with _cluster_failures("transform"):
            _wait(futures, "transform", progress)
            return [entry for f in futures for entry in f.result()]
    finally:
        with contextlib.suppress(Exception):
            client.cancel([*futures, shared])
