"""The Dask cluster: a client on a given scheduler, or a private local cluster tuned
for normpipe's tasks (worker memory settings, allocator, numpy's sort on Zen 4), and
the worker plugin that keeps normpipe's own errors out of the workers' logs.

The map and reduce over a dataset's files live in :mod:`normpipe.engine`.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import dask
import psutil
from dask.utils import parse_bytes
from distributed import Client, LocalCluster, WorkerPlugin

from normpipe.config import ClusterConfig
from normpipe.errors import REPR_PREFIX, ConfigError

__all__ = [
    "REUSE_FREED_MEMORY",
    "SMALL_WORKER",
    "QuietOwnErrors",
    "dask_client",
    "numpy_sort_environ",
]


class _OwnErrorsFilter(logging.Filter):
    """Drops a worker's "Compute Failed" record (with its traceback) when the task
    failed with one of normpipe's own errors: bad input reaches the user once, as the
    one line the client raises. Other failures are logged as Dask logs them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Compute Failed"):
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        return not any(isinstance(arg, str) and arg.startswith(REPR_PREFIX) for arg in args)


_OWN_ERRORS_FILTER = _OwnErrorsFilter()


class QuietOwnErrors(WorkerPlugin):
    """Installs :class:`_OwnErrorsFilter` on each worker's ``distributed.worker`` logger
    (registered by :func:`dask_client` on local and remote clusters alike; workers
    that join later get it too)."""

    name = "normpipe-quiet-own-errors"

    def setup(self, worker: Any) -> None:
        logging.getLogger("distributed.worker").addFilter(_OWN_ERRORS_FILTER)

    def teardown(self, worker: Any) -> None:
        logging.getLogger("distributed.worker").removeFilter(_OWN_ERRORS_FILTER)


@contextmanager
def _quiet_own_errors(client: Client, restore: bool = True) -> Iterator[None]:
    """:class:`QuietOwnErrors` on the workers while the block runs; with ``restore``
    removed afterwards (the workers of a cluster normpipe did not start log as before).
    normpipe's own cluster keeps it until it closes: when one task's bad input ends the
    run, tasks still executing elsewhere fail the same way while the cluster shuts down,
    and their records must stay quiet too. Best effort: a remote cluster may refuse
    plugins."""
    with contextlib.suppress(Exception):
        client.register_plugin(QuietOwnErrors(), name=QuietOwnErrors.name)
    try:
        yield
    finally:
        if restore:
            with contextlib.suppress(Exception):
                client.unregister_worker_plugin(QuietOwnErrors.name)


@contextmanager
def dask_client(config: ClusterConfig | None = None) -> Iterator[Client]:
    """A client on the configured scheduler, or on a private ``LocalCluster``.

    The local cluster (and the client) are closed on exit, also on error.
    """
    config = config or ClusterConfig()
    if config.scheduler:
        try:
            client = Client(config.scheduler, timeout="10s")
        except (OSError, TimeoutError, TypeError, ValueError) as err:
            hint = (
                "set Dask's TLS settings (distributed.comm.tls.ca-file, .client.cert, .client.key)"
                if config.scheduler.startswith("tls://")
                and not dask.config.get("distributed.comm.tls.ca-file")
                else "check --scheduler or leave it out to start a local cluster"
            )
            text = " ".join(str(err).split())[:200]
            raise ConfigError(
                f"cannot reach the Dask scheduler at {config.scheduler} ({text}); {hint}"
            ) from None
        with _quiet_client_logs(), client, _quiet_own_errors(client):
            yield client
        return
    workers = config.workers or max(1, min(os.cpu_count() or 1, 8) // config.threads_per_worker)
    # normpipe's tasks keep only small states in worker memory, so spilling to disk
    # cannot help, and pausing at 80% would stall workers whose imports alone (Python,
    # distributed, pyarrow: about 105 MB) fill a small limit. The nanny still
    # restarts a worker above 95%; per-task memory is bounded by the row-group size.
    # The statistical profiler's samples are not worth their memory here. Allocators,
    # measured on 20 M rows x 16 features (fit / transform wall on 2 cores): Arrow's
    # default pool (mimalloc) beats the system allocator by about 25% but holds on to
    # about 85 MB more per worker. Dask's default MALLOC_TRIM_THRESHOLD_ (64 KiB) and
    # glibc's mmap of blocks over 128 KiB return every freed column buffer to the OS,
    # so the next one is page-faulted in again (2 M faults, 5 s of system time per
    # pass); keeping freed memory for reuse (glibc up to 256 MB, mimalloc without
    # purging) takes the fit from 11.7 to 9.4 s and the transform from 6.6 to 4.5 s,
    # for a worker RSS that stays at its peak (about 320 MB here) instead of falling
    # back to 250 MB. Workers limited to less than 1 GB keep the frugal settings:
    # system allocator, memory handed back.
    environ = {"MALLOC_ARENA_MAX": "2", **numpy_sort_environ()}
    if _memory_per_worker(config.memory_limit, workers) < SMALL_WORKER:
        environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"
    else:
        environ.update(REUSE_FREED_MEMORY)
    settings = {
        "distributed.worker.memory.target": False,
        "distributed.worker.memory.spill": False,
        "distributed.worker.memory.pause": False,
        "distributed.worker.profile.enabled": False,
        **{f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in environ.items()},
    }
    # Given to each nanny too, so that restarted worker processes keep the settings.
    nanny = {"config": settings} if config.processes else {}
    before = dict(os.environ)
    try:
        with dask.config.set(settings):
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=config.threads_per_worker,
                memory_limit=config.memory_limit,
                processes=config.processes,
                dashboard_address=":0",
                silence_logs=logging.ERROR,
                **nanny,
            )
    finally:
        written = {n for n in {*os.environ, *before} if os.environ.get(n) != before.get(n)}
        _restore_environ(before, written)
    try:
        with cluster, Client(cluster) as client, _quiet_own_errors(client, restore=False):
            yield client
    finally:
        _restore_environ(before, written)  # a nanny that restarted its worker wrote them again


def _restore_environ(before: Mapping[str, str], names: Iterable[str]) -> None:
    """Put the environment variables ``names`` back as they were in ``before``.

    Dask's nannies (in this process, for a local cluster) write ``pre-spawn-environ``
    and a few variables of their own into ``os.environ`` before each spawn, and read
    them back in preference to the config, so one cluster's worker settings would leak
    into this process and into the next cluster it starts. Only the variables the
    cluster's start changed are put back; the caller's own changes stay.
    """
    for name in names:
        if name in before:
            os.environ[name] = before[name]
        else:
            os.environ.pop(name, None)


def numpy_sort_environ(cpuinfo: str | None = None) -> dict[str, str]:
    """Worker environment that keeps numpy's sort fast on this CPU (empty on most).

    The sketch sorts every column chunk with ``np.sort`` (see
    :meth:`QuantileSketch.from_sorted`). numpy's AVX-512 sort (x86-simd-sort) stores
    with ``vpcompressq`` to memory, which AMD's Zen 4 (family 19h) runs in microcode:
    45 ns a value there against 8 ns for numpy's AVX2 sort on the same CPU, so Zen 4
    workers get numpy's AVX-512 targets turned off, as OpenJDK does for its own SIMD
    sort on that family. Other numpy kernels are memory-bound here and measured the
    same with AVX2. A value the caller already set is kept.
    """
    if "NPY_DISABLE_CPU_FEATURES" in os.environ:
        return {}
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
                cpuinfo = file.read(1 << 16)
        except OSError:  # not Linux
            return {}
    fields: dict[str, str] = {}
    for line in cpuinfo.split("\n\n", 1)[0].splitlines():
        name, _, value = line.partition(":")
        fields[name.strip()] = value.strip()
    zen4 = fields.get("vendor_id") == "AuthenticAMD" and fields.get("cpu family") == "25"
    if not (zen4 and "avx512f" in fields.get("flags", "").split()):
        return {}
    targets: list[str] = []
    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):  # numpy 2, 1
        with contextlib.suppress(ImportError):
            targets = list(getattr(importlib.import_module(module), "__cpu_dispatch__", []))
            break
    avx512 = [t for t in targets if t.startswith("AVX512") or t == "X86_V4"]
    return {"NPY_DISABLE_CPU_FEATURES": " ".join(avx512)} if avx512 else {}


SMALL_WORKER = 1_000_000_000  # bytes
#: Worker environment that keeps freed buffers for reuse instead of returning them to
#: the OS (see :func:`dask_client`); for workers started outside normpipe too.
REUSE_FREED_MEMORY = {
    "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
    "MALLOC_TRIM_THRESHOLD_": str(256 * 2**20),
    "MIMALLOC_PURGE_DELAY": "-1",
}


def _memory_per_worker(limit: str | int | None, workers: int) -> float:
    """Bytes per worker as Dask reads ``memory_limit`` (None or 0: unlimited)."""
    if limit is None or limit == 0:
        return float("inf")
    if limit == "auto":
        return float(psutil.virtual_memory().total) / workers
    return float(parse_bytes(limit) if isinstance(limit, str) else limit)


@contextmanager
def _quiet_client_logs() -> Iterator[None]:
    """While a remote cluster is in use, the client does not log its connection errors
    (with tracebacks): a lost cluster reaches the user as one :class:`ClusterError` line."""
    loggers = [logging.getLogger(name) for name in ("distributed.client", "distributed.core")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
