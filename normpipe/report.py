"""The HTML report of a stats artifact: per column, what the data looks like and what
the fitted method does to it.

Everything is read from the artifact (the quantile sketch, the moments, the fitted
map): no pass over the data. Per column: a histogram before and after normalization,
a box plot, the statistics, the method and the reason, and warnings. The page is one
self-contained file (images inlined as PNG data); the same figures can be written as
one PNG per column.

Histograms come from the sketch: each bar's share is within twice the sketch's rank
error of the exact share. They span the 0.1% to 99.9% quantiles, so one extreme value
cannot squash the picture; the share of values outside that range is written under
the plot. The histogram after normalization maps the bins through the fitted
(monotone) map: bins of equal width in the output, shares read at their preimages.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from normpipe.errors import ConfigError
from normpipe.stats import ColumnStats, Stats
from normpipe.storage import locate

__all__ = ["ColumnReport", "column_reports", "report_html", "warnings_for", "write_report"]

_LOW, _HIGH = 0.001, 0.999  # the range the histograms show
_BINS = 30
#: A column is "mostly missing" above this share of null / NaN values.
MOSTLY_MISSING = 0.5
#: Extreme outliers: more than this share beyond Tukey's fences, or an extreme value
#: more than ``EXTREME_IQRS`` interquartile ranges beyond the quartiles.
OUTLIER_SHARE = 0.05
EXTREME_IQRS = 10.0
#: Mass at a bound worth a warning.
BOUND_SHARE = 0.2


def warnings_for(name: str, column: ColumnStats, rows: int) -> list[str]:
    """Plain-language warnings about a column (constant, mostly missing, outliers, ...)."""
    s = column.summary
    notes = []
    missing = s.nulls + s.nans
    if s.count == 0:
        notes.append("no finite value: the map is the identity")
    elif s.min == s.max:
        notes.append(f"constant column: every finite value is {s.min:.6g}")
    if rows and missing / rows > MOSTLY_MISSING:
        notes.append(f"mostly missing: {missing / rows:.1%} of values are null or NaN")
    if s.posinf + s.neginf:
        notes.append(f"{s.posinf + s.neginf:,} infinite values (left out of the statistics, kept as ±inf)")
    if s.count and s.min != s.max:
        q1, q3 = column.state.sketch.quantiles([0.25, 0.75])
        iqr = q3 - q1
        far = []
        if iqr > 0 and s.max > q3 + EXTREME_IQRS * iqr:
            far.append(f"max {s.max:.6g} is {(s.max - q3) / iqr:.0f} IQRs above q3")
        if iqr > 0 and s.min < q1 - EXTREME_IQRS * iqr:
            far.append(f"min {s.min:.6g} is {(q1 - s.min) / iqr:.0f} IQRs below q1")
        if s.outside_fences > OUTLIER_SHARE or far:
            beyond = f"{s.outside_fences:.1%} of values beyond Tukey fences"
            notes.append("extreme outliers: " + "; ".join([beyond, *far]))
        for label, share in (("minimum", s.min_share), ("maximum", s.max_share)):
            if share > BOUND_SHARE:
                notes.append(f"{share:.1%} of values sit at the {label}")
    return notes


@dataclass(frozen=True, slots=True)
class ColumnReport:
    """What the report shows for one column."""

    name: str
    method: str
    reason: str
    warnings: list[str]
    table: list[tuple[str, str]]
    png: bytes


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.6g}"


def _shares(column: ColumnStats, edges: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Share of finite values in each bin of ``edges``, and below / above them."""
    cdf = np.asarray(column.state.sketch.cdf(list(edges), inclusive=False))
    cdf[-1] = column.state.sketch.cdf([float(edges[-1])], inclusive=True)[0]
    return np.clip(np.diff(cdf), 0.0, None), float(cdf[0]), float(1.0 - cdf[-1])


def _histograms(column: ColumnStats) -> tuple[Any, Any]:
    """(edges, shares, below, above) before and after the map, or ``None`` when empty."""
    s, scaler = column.summary, column.scaler
    if s.count == 0 or s.min == s.max:
        return None, None
    low, high = column.state.sketch.quantiles([_LOW, _HIGH])
    if not low < high:
        low, high = s.min, s.max
    edges = np.linspace(low, high, _BINS + 1)
    before = (edges, *_shares(column, edges))
    out_low, out_high = scaler.apply(np.array([low, high], dtype=np.float64))
    if not (np.isfinite(out_low) and np.isfinite(out_high) and out_low < out_high):
        return before, None
    out_edges = np.linspace(out_low, out_high, _BINS + 1)
    preimages = scaler.invert(out_edges.copy())
    preimages[0], preimages[-1] = low, high  # exact ends (no round-trip rounding)
    shares, below, above = _shares(column, np.maximum.accumulate(preimages))
    clipping = scaler.spec.clips
    if clipping:  # clipped values pile up at the ends of the output range
        shares[0] += below
        shares[-1] += above
        below = above = 0.0
    return before, (out_edges, shares, below, above)


def _box_stats(column: ColumnStats) -> dict[str, Any]:
    sketch, s = column.state.sketch, column.summary
    q1, median, q3 = sketch.quantiles([0.25, 0.5, 0.75])
    iqr = q3 - q1
    low_fence, high_fence = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    # whiskers: the most extreme values inside the fences (from the sketch)
    below, upto = sketch.cdf([low_fence], inclusive=False)[0], sketch.cdf([high_fence], inclusive=True)[0]
    whislo, whishi = sketch.quantiles([min(max(below, 0.0), 1.0), min(max(upto, 0.0), 1.0)])
    whislo, whishi = max(min(whislo, q1), s.min), min(max(whishi, q3), s.max)
    fliers = [v for v in (s.min, s.max) if v < whislo or v > whishi]
    return {"med": median, "q1": q1, "q3": q3, "whislo": whislo, "whishi": whishi, "fliers": fliers}


def _figure(name: str, column: ColumnStats) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 2.8), dpi=80, layout="constrained")
    axes = fig.subplots(1, 3, width_ratios=[2.2, 2.2, 1.3])
    before, after = _histograms(column)
    titles = (f"{name}: before", f"after {column.scaler.method}")
    for ax, hist, title in zip(axes[:2], (before, after), titles, strict=True):
        ax.set_title(title, fontsize=10)
        if hist is None:
            ax.text(0.5, 0.5, "no spread to show", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        edges, shares, below, above = hist
        ax.stairs(shares, edges, fill=True, color="#4c78a8" if ax is axes[0] else "#f58518")
        ax.set_ylabel("share of values", fontsize=8)
        ax.tick_params(labelsize=8)
        if below > 0.0005 or above > 0.0005:
            ax.set_xlabel(f"outside the range shown: {below:.1%} below, {above:.1%} above", fontsize=8)
    box = axes[2]
    box.set_title("box plot (Tukey fences)", fontsize=10)
    if column.summary.count and column.summary.min != column.summary.max:
        box.bxp([_box_stats(column)], orientation="horizontal", showfliers=True, widths=0.5)
        box.set_yticks([])
        box.tick_params(labelsize=8)
    else:
        box.set_axis_off()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _table(column: ColumnStats) -> list[tuple[str, str]]:
    s = column.summary
    q = column.state.sketch.quantiles([0.01, 0.25, 0.5, 0.75, 0.99])
    rows: list[tuple[str, str]] = [
        ("count (finite)", _fmt(s.count)),
        ("null / NaN", f"{s.nulls:,} / {s.nans:,}"),
        ("missing share", _missing(s.nulls + s.nans, s.count + s.nulls + s.nans + s.posinf + s.neginf)),
        ("+inf / -inf", f"{s.posinf:,} / {s.neginf:,}"),
        ("mean", _fmt(s.mean)),
        ("std (ddof=0)", _fmt(s.std)),
        ("min", _fmt(s.min)),
        ("q01 / q25", f"{_fmt(q[0])} / {_fmt(q[1])}"),
        ("median", _fmt(q[2])),
        ("q75 / q99", f"{_fmt(q[3])} / {_fmt(q[4])}"),
        ("max", _fmt(s.max)),
        ("skewness", _fmt(s.skewness)),
        ("excess kurtosis", _fmt(s.kurtosis)),
        ("beyond Tukey fences", f"{s.outside_fences:.2%}" if s.outside_fences == s.outside_fences else "–"),
        ("zeros", f"{s.zero_share:.2%}" if s.zero_share == s.zero_share else "–"),
        ("at min / at max", f"{s.min_share:.2%} / {s.max_share:.2%}" if s.min_share == s.min_share else "–"),
        ("distinct (HLL)", _fmt(round(s.distinct)) if s.distinct == s.distinct else "not estimated"),
    ]
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in column.scaler.params.items())
    if column.scaler.table:
        params = f"{len(column.scaler.table)} quantiles"
    rows.append(("fitted", params or "–"))
    if column.impute.active:
        fill = f" ({_fmt(column.fill)})" if column.fill is not None else ""
        flag = ", with a missing indicator" if column.impute.missing_indicator else ""
        rows.append(("missing values", f"imputed: {column.impute.strategy}{fill}{flag}"))
    return rows


def _missing(missing: int, total: int) -> str:
    return f"{missing / total:.2%}" if total else "–"


def column_reports(stats: Stats, columns: Sequence[str] | None = None) -> list[ColumnReport]:
    """The report's content for ``columns`` (default: every column of the artifact)."""
    names = list(stats.columns) if columns is None else list(columns)
    for name in names:
        if name not in stats.columns:
            raise ConfigError(f"column '{name}' is not in the stats artifact; leave it out of --columns")
    reports = []
    for name in names:
        column = stats.columns[name]
        reports.append(
            ColumnReport(
                name,
                column.scaler.method,
                column.scaler.reason,
                warnings_for(name, column, stats.rows),
                _table(column),
                _figure(name, column),
            )
        )
    return reports


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em;color:#222;max-width:1200px}
h1{font-size:1.5em} h2{font-size:1.2em;margin-bottom:.2em}
section.column{border-top:1px solid #ddd;padding:.8em 0}
.method{font-family:monospace;background:#eef;padding:0 .3em;border-radius:3px}
.reason{color:#555;margin:.2em 0} .warning{color:#a15c00;margin:.1em 0}
table.stats{border-collapse:collapse;font-size:.85em;margin-top:.4em}
table.stats td{padding:.1em .8em;border-bottom:1px solid #eee}
table.stats td:first-child{color:#555} img{max-width:100%}
nav a{margin-right:.8em;font-size:.9em} .meta{color:#555;font-size:.9em}
"""


def _anchor(name: str, index: int) -> str:
    return f"col-{index}-" + re.sub(r"[^A-Za-z0-9_-]", "_", name)[:40]


def render_html(stats: Stats, reports: Sequence[ColumnReport], title: str) -> str:
    """The report page as one self-contained HTML string."""
    e = html.escape
    dataset = stats.dataset
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f'<p class="meta">{stats.rows:,} rows, {len(dataset.files)} files from '
        f"<code>{e(dataset.source)}</code>; created {e(stats.created)}; quantiles "
        f"from a KLL sketch (k={stats.k}), histogram shares within twice its rank error "
        f"{max((stats.columns[r.name].summary.rank_error for r in reports), default=math.nan):.1e}.</p>",
        "<nav>" + "".join(f'<a href="#{_anchor(r.name, i)}">{e(r.name)}</a>' for i, r in enumerate(reports)),
        "</nav>",
    ]
    for index, report in enumerate(reports):
        png = base64.b64encode(report.png).decode("ascii")
        parts += [
            f'<section class="column" id="{_anchor(report.name, index)}" data-column="{e(report.name)}">',
            f'<h2>{e(report.name)} <span class="method">{e(report.method)}</span></h2>',
        ]
        if report.reason:
            parts.append(f'<p class="reason">{e(report.reason)}</p>')
        parts += [f'<p class="warning">⚠ {e(w)}</p>' for w in report.warnings]
        alt = f"histograms and box plot of {e(report.name)}"
        parts.append(f'<img alt="{alt}" src="data:image/png;base64,{png}">')
        parts.append('<table class="stats">')
        parts += [f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in report.table]
        parts += ["</table>", "</section>"]
    parts += _tensor_sections(stats)
    parts += _category_sections(stats)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


#: Tensor columns with up to this many slots get a row per slot; others one of ranges.
TENSOR_ROWS = 64


def _tensor_sections(stats: Stats) -> list[str]:
    """A section per tensor column: its layout and counts, and per slot the moments,
    range and fitted parameters."""
    e = html.escape
    parts = []
    for name, tensor in stats.tensors.items():
        state, scaler = tensor.state, tensor.fitted.scaler
        m, std = state.moments, state.std
        method = f"{tensor.spec.method_name} per {state.layout.per}"
        parts += [
            f'<section class="tensor" data-column="{e(name)}">',
            f'<h2>{e(name)} <span class="method">{e(method)}</span></h2>',
            f'<p class="meta">{e(state.layout.describe())}; {state.rows:,} rows, {state.nulls:,} null '
            f"({state.skipped:,} undecodable images skipped), {state.nans:,} NaN, "
            f"{state.posinf + state.neginf:,} ±inf; {state.slots:,} slots</p>",
            '<table class="stats"><tr><th>slot</th><th>count</th><th>mean</th><th>std</th>'
            "<th>min</th><th>max</th><th>params</th></tr>",
        ]
        for slot in range(min(state.slots, TENSOR_ROWS)):
            params = (
                ", ".join(f"{k}={_fmt(float(v[slot]))}" for k, v in scaler.params.items()) if scaler else ""
            )
            empty = m.count[slot] == 0
            cells = [
                str(slot),
                f"{int(m.count[slot]):,}",
                *(_fmt(None if empty else float(v[slot])) for v in (m.mean, std, m.min, m.max)),
                params,
            ]
            parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
        if state.slots > TENSOR_ROWS:
            parts.append(f'<tr><td colspan="7">… {state.slots - TENSOR_ROWS:,} more slots</td></tr>')
        parts += ["</table>", "</section>"]
    return parts


#: A categorical column's section lists this many values.
CATEGORY_ROWS = 30


def _category_sections(stats: Stats) -> list[str]:
    """A section per categorical column: counts, missing share, why it is (not) coded,
    and its most frequent values with their codes and shares."""
    e = html.escape
    parts = []
    for name, category in stats.categories.items():
        state, fitted = category.state, category.fitted
        vocabulary = state.vocabulary()
        distinct = (
            f"{state.distinct:,} distinct"
            if state.distinct is not None
            else (
                f"more than {state.limit:,} distinct (counts from a sketch, each within ±{state.max_error:,})"
            )
        )
        coded = f"{fitted.size:,} codes" if fitted is not None else "left as it is"
        parts += [
            f'<section class="category" data-column="{e(name)}">',
            f'<h2>{e(name)} <span class="method">{e(coded)}</span></h2>',
            f'<p class="reason">{e(category.reason)}</p>',
            f'<p class="meta">{state.total:,} values, {state.nulls:,} missing '
            f"({_missing(state.nulls, state.nulls + state.total)}); {e(distinct)}; "
            f"imputation: {e(category.impute.strategy)}</p>",
            '<table class="stats"><tr><th>value</th><th>code</th><th>count</th><th>share</th></tr>',
        ]
        codes = {v: i for i, v in enumerate(fitted.values.to_pylist())} if fitted is not None else {}
        for value, count in zip(
            vocabulary.values[:CATEGORY_ROWS], vocabulary.counts[:CATEGORY_ROWS], strict=True
        ):
            code = codes.get(value, fitted.oov if fitted is not None else None)
            cells = [
                str(value),
                "–" if code is None else str(code),
                f"{count:,}",
                f"{count / state.total:.2%}",
            ]
            parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
        if len(vocabulary.values) > CATEGORY_ROWS:
            parts.append(
                f'<tr><td colspan="4">… {len(vocabulary.values) - CATEGORY_ROWS:,} more values</td></tr>'
            )
        parts += ["</table>", "</section>"]
    return parts


def png_name(name: str) -> str:
    """A safe file name for a column's PNG."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".png"


def report_html(stats: Stats, columns: Sequence[str] | None = None, title: str | None = None) -> str:
    """The report page of ``stats`` as one HTML string."""
    reports = column_reports(stats, columns)
    return render_html(stats, reports, title or f"normpipe report: {stats.dataset.source}")


def write_report(
    stats: Stats,
    output: str | os.PathLike[str],
    png_dir: str | os.PathLike[str] | None = None,
    columns: Sequence[str] | None = None,
    title: str | None = None,
) -> str:
    """Write the HTML report and, with ``png_dir``, one PNG per column; each file appears
    whole (a temporary file then rename locally, one object on a store; both may be
    fsspec URLs). Returns where the report is."""
    target = locate(output)
    if target.is_local and Path(target.path).is_dir():
        raise ConfigError(f"{target}: is a directory; pass the report's file name, e.g. -o report.html")
    reports = column_reports(stats, columns)
    page = render_html(stats, reports, title or f"normpipe report: {stats.dataset.source}")
    if png_dir is not None:
        folder = locate(png_dir)
        used: set[str] = set()
        for index, report in enumerate(reports):
            file = png_name(report.name)
            if file in used:  # two names that differ only in unsafe characters
                file = f"{file[:-4]}-{index}.png"
            used.add(file)
            folder.child(file).write_bytes(report.png)
    target.write_bytes(page.encode())
    return target.url
