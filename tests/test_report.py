"""`normpipe report`: warnings, histograms from the sketch, and the page in a real browser."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg
from typer.testing import CliRunner

from normpipe.cli import app
from normpipe.report import _histograms, column_reports, warnings_for, write_report
from tests.test_auto import fitted

N = 50_000


@pytest.fixture(scope="module")
def columns() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    spiky = rng.normal(0, 1, N)
    spiky[:50] = 400.0  # far beyond the quartiles
    missing = rng.normal(size=N)
    missing[rng.random(N) < 0.7] = np.nan
    with_inf = rng.normal(size=N)
    with_inf[:3] = np.inf
    return {
        "normal": rng.normal(3, 2, N),
        'skewed <&> "name"': rng.lognormal(2, 1, N),  # escaped in HTML, safe as a file name
        "constant": np.full(N, 7.0),
        "spiky": spiky,
        "missing": missing,
        "with_inf": with_inf,
        "rain": np.where(rng.random(N) < 0.8, 0.0, rng.exponential(1.0, N)),
    }


def test_warnings_name_the_problem(columns: dict[str, np.ndarray]) -> None:
    stats = fitted(columns)
    notes = {name: warnings_for(name, stats.columns[name], stats.rows) for name in columns}
    assert notes["normal"] == []
    assert notes["constant"] == ["constant column: every finite value is 7"]
    assert any(w.startswith("mostly missing: 70.") for w in notes["missing"])
    assert any("extreme outliers" in w and "IQRs above q3" in w for w in notes["spiky"])
    assert notes["with_inf"] == ["3 infinite values (left out of the statistics, kept as ±inf)"]
    share = np.mean(columns["rain"] == 0.0)
    assert f"{share:.1%} of values sit at the minimum" in notes["rain"]


@pytest.mark.parametrize("method", ["zscore", "robust", "log1p", "quantile"])
def test_histograms_before_and_after_match_numpy(columns: dict[str, np.ndarray], method: str) -> None:
    values = columns['skewed <&> "name"']
    stats = fitted({"x": values}, method=method)
    before, after = _histograms(stats.columns["x"])
    bound = 2 * stats.summary("x").rank_error + 2.0 / N
    for (edges, shares, below, above), data in (
        (before, values),
        (after, stats.transform_column("x", values)),
    ):
        counts, _ = np.histogram(data, bins=edges)
        # np.histogram's last bin is closed, like the report's
        assert np.max(np.abs(shares - counts / data.size)) <= bound
        assert below + shares.sum() + above == pytest.approx(1.0, abs=1e-9)


def test_page_is_self_contained_with_one_section_per_column(
    columns: dict[str, np.ndarray], tmp_path: Path
) -> None:
    stats = fitted(columns)
    path = Path(write_report(stats, tmp_path / "r" / "report.html", png_dir=tmp_path / "png"))
    page = path.read_text()
    assert page.count('<section class="column"') == len(columns)
    assert "skewed &lt;&amp;&gt; &quot;name&quot;" in page
    assert not re.search(r"(src|href)=\"(https?:|//)", page)  # nothing fetched from outside
    for report in column_reports(stats):
        assert report.reason in page
        picture = mpimg.imread(io.BytesIO(report.png), format="png")
        assert picture.shape[0] > 100
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == sorted(
        [re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".png" for name in columns]
    )


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


_CHECK = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  document.body.dataset.sections = document.querySelectorAll("section.column").length;
  document.body.dataset.imagesOk = images.length > 0 && images.every(i => i.complete && i.naturalWidth > 0);
});
</script></body>"""


def test_report_renders_in_headless_chromium(columns: dict[str, np.ndarray], tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs it from the system packages")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    stats = fitted(columns)
    page = Path(write_report(stats, tmp_path / "report.html")).read_text()
    checked = tmp_path / "checked.html"  # the page plus a probe that reads the DOM after load
    checked.write_text(page.replace("</body>", _CHECK))
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--dump-dom",
            checked.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
    dom = result.stdout
    assert f'data-sections="{len(columns)}"' in dom
    assert 'data-images-ok="true"' in dom
    assert dom.count('<section class="column"') == len(columns)


def test_cli_report_and_bad_input(columns: dict[str, np.ndarray], tmp_path: Path) -> None:
    stats = fitted({"normal": columns["normal"], "rain": columns["rain"]})
    stats.save(tmp_path / "stats.json")
    runner = CliRunner()
    out = tmp_path / "report.html"
    result = runner.invoke(app, ["report", str(tmp_path / "stats.json"), "-o", str(out), "--columns", "rain"])
    assert result.exit_code == 0, result.output
    assert out.read_text().count('<section class="column"') == 1
    missing = runner.invoke(app, ["report", str(tmp_path / "stats.json"), "--columns", "nope"])
    assert missing.exit_code == 2
    assert "column 'nope' is not in the stats artifact" in missing.output
    assert "Traceback" not in missing.output
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    bad = runner.invoke(app, ["report", str(broken), "-o", str(tmp_path / "x.html")])
    assert bad.exit_code == 2
    assert "not a normpipe stats file" in bad.output
    assert not (tmp_path / "x.html").exists()
