"""Prefect flows over normpipe's Dask jobs: ``compute_stats``, ``normalize``, ``preprocess``.

Each flow takes one :class:`~normpipe.config.RunConfig` (or the path of a YAML file in
``configs/``) and owns the Dask client for its whole run: a private ``LocalCluster``,
closed at the end even on failure, or the scheduler named by ``cluster.scheduler``.
Tasks are coarse (fingerprint, analyze, write artifact, transform, validate) and call
the library; no numerical code lives here. Every flow attaches the HTML report
(``normpipe report``): inside the output as ``_report.html``, or beside the stats
artifact for ``compute_stats``, linked from the run with a markdown summary of each
column's method, reason and warnings.

Scheduled runs follow the config's ``refit`` policy (``preprocess``): refit and rewrite
every time, or append the new files with the frozen statistics, always or unless they
drifted; the ``normpipe-refit`` artifact says which happened and why.

The analyze task is cached on the dataset fingerprint (file paths, sizes, modification
times) plus the statistics-relevant options; its result (the artifact's JSON text) is
stored, as JSON, under Prefect's ``PREFECT_LOCAL_STORAGE_PATH``. ``refresh=True`` forces
a new pass.
"""

# No `from __future__ import annotations`: Prefect builds each flow's parameter model
# from the annotations at run time, and string annotations leave RunConfig undefined
# when a deployment loads the flow from its entrypoint.
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from distributed import default_client
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.context import TaskRunContext
from prefect.runtime import flow_run

import normpipe
from normpipe.cluster import dask_client
from normpipe.commit import SUCCESS, Manifest, current, parse_manifest
from normpipe.config import STATISTICS_OPTIONS, RunConfig, Thresholds, load_config
from normpipe.dataset import discover
from normpipe.drift import drift
from normpipe.errors import ArtifactError, ClusterError, DriftError, NormpipeError, OutputError
from normpipe.fingerprint import Fingerprint
from normpipe.report import report_html, warnings_for
from normpipe.stats import Stats
from normpipe.storage import is_remote, locate

__all__ = ["compute_stats", "normalize", "preprocess"]


def _as_config(config: RunConfig | str | Path) -> RunConfig:
    return config if isinstance(config, RunConfig) else load_config(config)


def _transient(task: Any, task_run: Any, state: State[Any]) -> bool:
    """Retry I/O and cluster failures only: bad input fails the same way again, and a
    retry of a programming error would only repeat the whole Dask pass."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, ClusterError | OSError | TimeoutError)


@task(retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=_transient, cache_policy=NO_CACHE)
def fingerprint(config: RunConfig) -> Fingerprint:
    """List the dataset's files with sizes and modification times."""
    return discover(config.source or "", config.storage_options).fingerprint()


def _stats_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    config: RunConfig = parameters["config"]
    relevant = config.model_dump(include=set(STATISTICS_OPTIONS), mode="json")
    text = json.dumps([parameters["dataset"].sha256, parameters["dataset"].root, relevant], sort_keys=True)
    return "normpipe-stats-" + hashlib.sha256(text.encode()).hexdigest()


@task(
    cache_key_fn=_stats_cache_key,
    persist_result=True,
    result_serializer="json",
    retries=2,
    retry_delay_seconds=[1, 5],
    retry_condition_fn=_transient,
)
def analyze(config: RunConfig, dataset: Fingerprint) -> str:
    """The Dask pass: returns the stats artifact as JSON text (cached on ``dataset``)."""
    return (
        normpipe.fit(config=config.model_copy(update={"stats": None}), client=default_client())
        .to_bytes()
        .decode()
    )


@task(retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=_transient, cache_policy=NO_CACHE)
def write_stats(stats: Stats, config: RunConfig) -> str:
    """Save the artifact at ``config.stats`` atomically; returns its sha256."""
    return stats.save(config.stats or "", config.storage_options)


@task(retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=_transient, cache_policy=NO_CACHE)
def normalize_dataset(config: RunConfig, stats: Stats, save_stats: bool) -> dict[str, Any]:
    """Write the normalized dataset atomically; returns the ``_SUCCESS`` manifest."""
    return normpipe.transform(config=config, stats=stats, client=default_client(), save_stats=save_stats)


@task(cache_policy=NO_CACHE)
def validate(output: str, config: RunConfig) -> Manifest:
    """Row counts in the Parquet footers must match ``_SUCCESS``."""
    root = current(locate(output, config.storage_options))  # a versioned output: its current version
    manifest = parse_manifest(root.child(SUCCESS).read_bytes(), f"{root.url}/{SUCCESS}")
    if manifest is None:
        raise OutputError(f"{output}: {SUCCESS} is not normpipe's manifest; rerun the job that writes it")
    for entry in manifest.files:
        part = root.child(entry.path)
        with part.fs.open(part.path, "rb") as handle:
            rows = pq.ParquetFile(handle).metadata.num_rows
        if rows != entry.rows_out or entry.rows_in != entry.rows_out:
            raise OutputError(f"{output}/{entry.path}: {rows} rows, the manifest says {entry.rows_out}")
    return manifest


@task(retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=_transient, cache_policy=NO_CACHE)
def report_beside(config: RunConfig, stats: Stats) -> str:
    """The HTML report of ``stats`` beside its artifact (``STATS.report.html``); returns where."""
    stats_path = config.stats or ""
    stem = stats_path[: -len(".json")] if stats_path.endswith(".json") else stats_path
    target = locate(stem + ".report.html", config.storage_options)
    target.write_bytes(report_html(stats).encode())
    return target.url


def _uri(location: str) -> str:
    """A link for a path or URL (object-store URLs as they are)."""
    return location if is_remote(location) else Path(location).absolute().as_uri()


def _publish(
    stats: Stats, elapsed: float, output: str | None, stats_path: str | None, report: str | None = None
) -> list[str]:
    """A markdown summary, a per-column table and links, attached to the flow run;
    returns the artifacts' keys."""
    k_error = next(iter(stats.columns.values())).summary.rank_error if stats.columns else float("nan")
    rows = []
    for name, column in stats.columns.items():
        s = column.summary
        rows.append(
            {
                "column": name,
                "method": column.scaler.method,
                "count": s.count,
                "missing": s.nulls + s.nans,
                "inf": s.posinf + s.neginf,
                "mean": s.mean,
                "std": s.std,
                "min": s.min,
                "median": s.quantiles.get(0.5),
                "max": s.max,
                **{f"param_{k}": v for k, v in column.scaler.params.items()},
            }
        )
    lines = [
        "# normpipe statistics",
        f"- rows: **{stats.rows:,}** in {len(stats.dataset.files)} files from `{stats.dataset.source}`",
        f"- columns: {len(stats.columns)}; quantiles: KLL k={stats.k}, rank error <= {k_error:.1e} (99%)",
        f"- elapsed: {elapsed:.1f} s",
    ]
    if output:
        lines.append(f"- output: `{output}`")
    if stats_path:
        lines.append(f"- stats: `{stats_path}`")
    lines += [
        "",
        "| column | method | count | missing | mean | std | median | reason | warnings |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, column), r in zip(stats.columns.items(), rows, strict=True):
        notes = "; ".join(warnings_for(name, column, stats.rows)) or "-"
        lines.append(
            f"| {name} | {r['method']} | {r['count']:,} | {r['missing']:,} | {r['mean']:.6g} | "
            f"{r['std']:.6g} | {r['median']:.6g} | {column.scaler.reason or '-'} | {notes} |"
        )
    if stats.categories:
        lines += [
            "",
            "| categorical column | values | missing | codes | most frequent | why |",
            "|---|---|---|---|---|---|",
        ]
        for name, category in stats.categories.items():
            state, fitted = category.state, category.fitted
            top = state.vocabulary().values[:3]
            codes = f"{fitted.size:,}" if fitted is not None else "left as it is"
            lines.append(
                f"| {name} | {state.total:,} | {state.nulls:,} | {codes} | "
                f"{', '.join(map(str, top)) or '-'} | {category.reason} |"
            )
    if report:
        lines.insert(4, f"- report: `{report}` (histograms, box plots, reasons)")
    create_markdown_artifact("\n".join(lines), key="normpipe-summary", description="normpipe run summary")
    create_table_artifact(rows, key="normpipe-column-stats", description="per-column statistics")
    keys = ["normpipe-summary", "normpipe-column-stats"]
    if output:
        create_link_artifact(_uri(output), link_text="normalized dataset", key="normpipe-output")
        keys.append("normpipe-output")
    if stats_path:
        create_link_artifact(_uri(stats_path), link_text="stats artifact", key="normpipe-stats")
        keys.append("normpipe-stats")
    if report:
        create_link_artifact(_uri(report), link_text="HTML report", key="normpipe-report")
        keys.append("normpipe-report")
    return keys


def _fit(config: RunConfig, refresh: bool) -> str:
    dataset = fingerprint(config)
    return analyze.with_options(refresh_cache=refresh)(config, dataset)


@task(retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=_transient, cache_policy=NO_CACHE)
def update_stats(config: RunConfig) -> str:
    """Read only the files the artifact at ``config.stats`` does not count yet, and
    merge their statistics in; returns the artifact as JSON text."""
    stats, files = normpipe.update(
        config=config.model_copy(update={"stats": None}),
        base=config.stats,
        only_new=True,
        client=default_client(),
    )
    get_run_logger().info("incremental: %d new files, %s rows in all", files, f"{stats.rows:,}")
    return stats.to_bytes().decode()


@flow(name="compute-stats")
def compute_stats(config: RunConfig | str, refresh: bool = False, incremental: bool = False) -> str:
    """Dataset -> stats artifact at ``config.stats``; returns its path.

    With ``incremental`` and an artifact already at ``config.stats``, only the files it
    does not count yet are read and merged in (append-only partitions); the columns,
    methods and sketch of that artifact are kept.
    """
    cfg = _as_config(config)
    if not cfg.stats:
        raise OutputError("compute_stats needs 'stats': where to save the stats artifact")
    started = time.perf_counter()
    with dask_client(cfg.cluster):
        previous = incremental and locate(cfg.stats, cfg.storage_options).exists()
        text = update_stats(cfg) if previous else _fit(cfg, refresh)
    stats = Stats.from_bytes(text.encode(), "stats")  # parsed once; the tasks take the object
    write_stats(stats, cfg)
    report = report_beside(cfg, stats)
    _publish(stats, time.perf_counter() - started, None, cfg.stats, report)
    get_run_logger().info("stats written to %s", cfg.stats)
    return cfg.stats


@flow(name="normalize")
def normalize(config: RunConfig | str) -> dict[str, Any]:
    """Dataset + saved stats -> normalized Parquet; returns the ``_SUCCESS`` manifest."""
    cfg = _as_config(config).model_copy(update={"report": True})
    if not cfg.stats:
        raise OutputError("normalize needs 'stats': the stats artifact to apply")
    started = time.perf_counter()
    stats = Stats.load(cfg.stats, cfg.storage_options)  # one clear line if it is not a valid artifact
    with dask_client(cfg.cluster):
        manifest = normalize_dataset(cfg, stats, save_stats=False)
    validate(manifest["output"], cfg)
    elapsed = time.perf_counter() - started
    _publish(stats, elapsed, manifest["output"], cfg.stats, manifest.get("report"))
    return manifest


def _previous_stats(cfg: RunConfig, fail_on_drift: bool) -> Stats | None:
    """The artifact of the previous run at this config's paths (``None`` on a first run).

    One that cannot be read means drift cannot be checked: with ``fail_on_drift`` the
    run fails with the reason, before anything is written; otherwise it warns and goes on.
    """
    path = (
        locate(cfg.stats, cfg.storage_options)
        if cfg.stats
        else current(locate(cfg.output or "", cfg.storage_options)).child("_stats.json")
    )
    if not path.exists():
        return None
    try:
        return Stats.load(path.url, cfg.storage_options)
    except NormpipeError as err:
        if fail_on_drift:
            raise ArtifactError(
                f"drift cannot be checked: the previous run's artifact is unreadable ({err}); "
                "remove or replace it, or run without fail_on_drift"
            ) from None
        get_run_logger().warning("drift not checked: the previous run's artifact is unreadable (%s)", err)
        return None


@task(cache_policy=NO_CACHE)
def check_drift(
    previous: Stats,
    current: Stats,
    fail: bool,
    thresholds: Thresholds | None = None,
    against: str = "the previous run",
) -> list[dict[str, Any]]:
    """Compare the new statistics with ``previous`` (the previous run's, or the frozen
    artifact); publish and warn on drift."""
    results = drift(previous, current, thresholds)
    flagged = [r for r in results if r.drifted]
    lines = ["| column | PSI | KS | mean shift (std) | drift |", "|---|---|---|---|---|"]
    for r in results:
        cells = [f"{v:.3g}" if v == v else "-" for v in (r.psi, r.ks, r.mean_shift)]
        lines.append(f"| {r.column} | {' | '.join(cells)} | {'; '.join(r.reasons) or 'no'} |")
    create_markdown_artifact(
        key="normpipe-drift",
        markdown=f"# Drift against {against}: {len(flagged)} of {len(results)} columns\n\n"
        + "\n".join(lines),
        description=f"PSI / KS / mean shift of the new statistics against {against}",
    )
    if flagged:
        message = f"drift in {len(flagged)} columns: " + "; ".join(
            f"{r.column} ({', '.join(r.reasons)})" for r in flagged[:10]
        )
        if fail:
            raise DriftError(message + "; nothing was written")
        get_run_logger().warning(message)
    return [r.to_json() for r in results]


@task(retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=_transient, cache_policy=NO_CACHE)
def new_files_statistics(config: RunConfig, frozen: Stats) -> tuple[Stats | None, int]:
    """One pass over the files the output does not hold yet: their statistics alone,
    fitted as the frozen artifact is, and their number."""
    return normpipe.fit_pending(config=config, stats=frozen, client=default_client())


@dataclass
class Refit:
    """What a scheduled run did with the statistics, and why (the ``normpipe-refit``
    artifact): ``fit`` (the whole dataset: a first run, or ``refit: always``), ``append``
    (the new files with the frozen statistics), ``refit`` (the new files drifted: refit
    and rewritten whole), or ``none`` (no new files)."""

    policy: str
    action: str
    reason: str
    new_files: int | None = None
    drifted: list[str] = field(default_factory=list)

    def publish(self, manifest: dict[str, Any]) -> None:
        lines = [
            f"# normpipe: {self.action}",
            f"- policy: `refit: {self.policy}`",
            f"- why: {self.reason}",
        ]
        if self.new_files is not None:
            lines.append(f"- new files: {self.new_files}")
        if self.drifted:
            lines.append(f"- drifted: {', '.join(self.drifted)}")
        lines.append(
            f"- output: `{manifest['output']}`: {manifest['rows_out']:,} rows in {len(manifest['files'])} "
            f"files, {manifest.get('written', len(manifest['files']))} written by this run"
        )
        create_markdown_artifact(
            "\n".join(lines), key="normpipe-refit", description="append or refit, and why"
        )


def _scheduled(cfg: RunConfig, frozen: Stats, fail_on_drift: bool) -> tuple[Refit, list[dict[str, Any]]]:
    """``refit: never | on_drift`` with a frozen artifact: what to do with the new files."""
    if cfg.refit == "never":
        return Refit(cfg.refit, "append", "refit: never keeps the statistics frozen"), []
    fresh, count = new_files_statistics(cfg, frozen)
    if fresh is None:
        return Refit(cfg.refit, "none", "no new files", 0), []
    drifts = check_drift(frozen, fresh, fail_on_drift, cfg.drift, "the frozen statistics")
    drifted = [d["column"] for d in drifts if d["drifted"]]
    if drifted:
        reason = f"the new files drifted from the frozen statistics in {len(drifted)} columns"
        return Refit(cfg.refit, "refit", reason, count, drifted), drifts
    return Refit(cfg.refit, "append", "the new files did not drift from the frozen statistics", count), drifts


@flow(name="preprocess")
def preprocess(config: RunConfig | str, refresh: bool = False, fail_on_drift: bool = False) -> dict[str, Any]:
    """Stats and normalized Parquet in one flow on one cluster.

    The artifact goes to ``config.stats`` when set, else into ``OUTPUT/_stats.json``.
    ``config.refit`` decides what a scheduled run does once an artifact exists:
    ``always`` fits the whole dataset and rewrites the output (compared with the
    previous run's artifact: the ``normpipe-drift`` artifact, a warning, or failure before
    writing with ``fail_on_drift``); ``never`` appends the files the output does not hold
    yet, normalized with the frozen artifact; ``on_drift`` compares those files' own
    statistics with the frozen artifact (``config.drift`` thresholds) and appends, or
    refits on the whole dataset and rewrites the output (a new version on an object
    store). The ``normpipe-refit`` artifact says which happened and why. Returns the
    ``_SUCCESS`` manifest with ``stats`` (the artifact's path), ``drift`` and ``refit``.
    """
    cfg = _as_config(config).model_copy(update={"report": True})
    started = time.perf_counter()
    frozen = _previous_stats(cfg, fail_on_drift)
    with dask_client(cfg.cluster):
        if cfg.refit != "always" and frozen is not None:
            decision, drifts = _scheduled(cfg, frozen, fail_on_drift)
        else:
            why = "no artifact yet: a first run" if frozen is None else "refit: always"
            decision, drifts = Refit(cfg.refit, "fit", why), []
        if frozen is not None and decision.action in ("append", "none"):
            stats = frozen
            manifest = normalize_dataset(cfg.model_copy(update={"append": True}), stats, save_stats=False)
        else:
            stats = Stats.from_bytes(_fit(cfg, refresh).encode(), "stats")  # parsed once
            if decision.action == "fit" and frozen is not None:
                drifts = check_drift(frozen, stats, fail_on_drift, cfg.drift)
            if cfg.stats:
                write_stats(stats, cfg)
            rewrite = cfg.model_copy(update={"overwrite": cfg.overwrite or decision.action == "refit"})
            manifest = normalize_dataset(rewrite, stats, save_stats=not cfg.stats)
    validate(manifest["output"], cfg)
    inside = f"{manifest['location']}/_stats.json"
    manifest["stats"] = cfg.stats or manifest.get("stats", inside)
    manifest["drift"] = drifts
    manifest["refit"] = asdict(decision)
    manifest["artifacts"] = _publish(
        stats,
        time.perf_counter() - started,
        manifest["output"],
        manifest["stats"],
        manifest.get("report"),
    )
    decision.publish(manifest)
    manifest["artifacts"].append("normpipe-refit")
    if drifts:
        manifest["artifacts"].append("normpipe-drift")
    manifest["flow_run"] = flow_run.get_name()
    get_run_logger().info(
        "%s (%s); output in %s, stats in %s",
        decision.action,
        decision.reason,
        manifest["output"],
        manifest["stats"],
    )
    return manifest


if __name__ == "__main__":
    import sys

    preprocess(sys.argv[1] if len(sys.argv) > 1 else "configs/example.yaml")
