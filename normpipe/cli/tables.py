"""The statistics as a table on the console (a screenful at most, past 30 columns)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from rich.table import Table

from normpipe.cli.app import console


def fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.5g}"


def stats_table(stats: Any, names: list[str]) -> Table:
    """The statistics and fitted parameters of the columns ``names``, a row each."""
    from normpipe.core.sketch import rank_error_bound

    bound = max((c.summary.rank_error for c in stats.columns.values()), default=rank_error_bound(stats.k))
    table = Table(title=f"{stats.rows:,} rows · quantiles: KLL k={stats.k}, rank error ≤ {bound:.1e}")
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
        params = ", ".join(f"{k}={fmt(v)}" for k, v in column.scaler.params.items())
        if column.scaler.table:
            params = f"{len(column.scaler.table)} quantiles"
        table.add_row(
            name,
            column.scaler.method,
            f"{s.count:,}",
            f"{s.nulls + s.nans:,}",
            f"{s.posinf + s.neginf:,}",
            fmt(s.mean),
            fmt(s.std),
            fmt(s.min),
            fmt(q.get(0.25)),
            fmt(q.get(0.5)),
            fmt(q.get(0.75)),
            fmt(s.max),
            params,
        )
    return table


#: Tensor columns with up to this many slots show a row per slot; others one row of ranges.
SLOT_ROWS = 8


def _span(values: Any) -> str:
    import numpy as np

    finite = np.asarray(values)[np.isfinite(values)]
    return "-" if not finite.size else f"{fmt(float(finite.min()))} .. {fmt(float(finite.max()))}"


def tensor_table(stats: Any) -> Table:
    """Each tensor column's per-slot statistics and parameters: a row per slot (up to
    :data:`SLOT_ROWS`), else one row of the ranges over its slots."""
    table = Table(title="tensor columns")
    headers = (
        "column",
        "layout",
        "method",
        "rows",
        "null rows",
        "NaN/±inf",
        "mean",
        "std",
        "min",
        "max",
        "params",
    )
    for header in headers:
        table.add_column(
            header, justify="left" if header in ("column", "layout", "method", "params") else "right"
        )
    for name, tensor in stats.tensors.items():
        state, layout = tensor.state, tensor.state.layout
        m, scaler = state.moments, tensor.fitted.scaler
        method = tensor.spec.method_name + (" (range)" if tensor.spec.range is not None else "")
        head = (
            layout.describe(),
            method,
            f"{state.rows:,}",
            f"{state.nulls:,}",
            f"{state.nans + state.posinf + state.neginf:,}",
        )
        if state.slots > SLOT_ROWS:
            params = ", ".join(f"{k}={_span(v)}" for k, v in scaler.params.items()) if scaler else ""
            table.add_row(
                f"{name} ({state.slots:,} slots)",
                *head,
                _span(m.mean),
                _span(state.std),
                _span(m.min),
                _span(m.max),
                params,
            )
            continue
        for slot in range(state.slots):
            params = ", ".join(f"{k}={fmt(v[slot])}" for k, v in scaler.params.items()) if scaler else ""
            label = f"{name}[{slot}]" if state.slots > 1 else name
            first = head if slot == 0 else ("", "", "", "", "")
            empty = m.count[slot] == 0
            table.add_row(
                label,
                *first,
                fmt(None if empty else m.mean[slot]),
                fmt(None if empty else state.std[slot]),
                fmt(None if empty else m.min[slot]),
                fmt(None if empty else m.max[slot]),
                params,
            )
    return table


def _shown(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= 16 else text[:15] + "…"


def category_table(stats: Any) -> Table:
    """Each categorical column: its counts, vocabulary, top values and imputation."""
    table = Table(title="categorical columns (codes by frequency, then value)")
    headers = ("column", "values", "missing", "distinct", "codes", "top values", "impute", "why")
    for header in headers:
        table.add_column(
            header, justify="right" if header in ("values", "missing", "distinct", "codes") else "left"
        )
    for name, category in stats.categories.items():
        state, fitted = category.state, category.fitted
        missing = state.nulls / (state.nulls + state.total) if state.nulls + state.total else float("nan")
        distinct = (
            f"{state.distinct:,}"
            if state.distinct is not None
            else f"> {state.limit:,} (±{state.max_error:,})"
        )
        vocabulary = state.vocabulary()
        top = ", ".join(
            f"{_shown(v)} {c / max(state.total, 1):.1%}"
            for v, c in zip(vocabulary.values[:3], vocabulary.counts[:3], strict=False)
        )
        impute = category.impute.strategy + (" + indicator" if category.impute.missing_indicator else "")
        table.add_row(
            name,
            f"{state.total:,}",
            f"{missing:.2%}",
            distinct,
            f"{fitted.size:,}" if fitted is not None else "left as is",
            top,
            impute,
            category.reason,
        )
    return table


#: Past this many columns the commands that compute statistics print the first ones
#: and a summary; ``normpipe inspect`` prints every column.
SCREENFUL = 30


def print_stats(stats: Any, where: str | None = None) -> None:
    """The stats table, then the reason for each method chosen by ``auto``.

    With ``where`` (the artifact's path or URL) and more than :data:`SCREENFUL`
    columns, only the first ones are shown, followed by a count of methods and the
    ``inspect`` command that shows them all.
    """
    names = list(stats.columns)
    shown = names if where is None or len(names) <= SCREENFUL else names[:SCREENFUL]
    if names or not stats.tensors:
        console.print(stats_table(stats, shown))
    if stats.tensors:
        console.print(tensor_table(stats))
    if stats.categories:
        console.print(category_table(stats))
    imputed = {name: c for name, c in stats.columns.items() if c.impute.active}
    for name, column in imputed.items():
        fill = f" with {fmt(column.fill)}" if column.fill is not None else ""
        flag = f"; indicator {name}_missing" if column.impute.missing_indicator else ""
        console.print(
            f"  {name}: missing values imputed ({column.impute.strategy}){fill}{flag}", highlight=False
        )
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
