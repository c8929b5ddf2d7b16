"""The benchmark harness runs end to end on a tiny dataset, and checks every tool's output.

No timing is asserted: the machines are shared. The harness itself verifies each
output (row count, z-scores of the first rows against exact statistics) and the
quantiles against exact ones; this test checks that it did, for every tool.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def harness(script: str, tmp_path: Path, *options: str) -> tuple[str, dict[str, Any]]:
    """Run ``benchmarks/<script>`` on small data in ``tmp_path``: its table and its JSON."""
    out = subprocess.run(
        [
            sys.executable,
            f"benchmarks/{script}",
            *options,
            "--dir",
            str(tmp_path),
            "--json",
            str(tmp_path / "m.json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout, json.loads((tmp_path / "m.json").read_text())


def test_anchor_harness_quick(tmp_path: Path) -> None:
    table, measured = harness("anchors.py", tmp_path, "--quick", "--rows", "40000", "--files", "4")
    assert measured["rows"] == 40_000
    tools = measured["tools"]
    assert set(tools) == {
        "pyarrow read (floor)",
        "pyarrow read+write (floor)",
        "normpipe run",
        "normpipe fit, robust",
        "normpipe run, robust",
        "normpipe, exact quantiles",
        "normpipe, per key group",
        "DuckDB approx quantiles",
        "Polars exact quantiles",
        "dask-ml StandardScaler",
        "scikit-learn partial_fit",
    }
    assert all(m["verified"] == "ok" for m in tools.values()), tools
    # normpipe states a 7.2e-4 rank error bound; exact tools are near zero
    assert tools["normpipe run"]["rank_error"] <= 7.2e-4
    assert tools["Polars exact quantiles"]["rank_error"] < 1e-4
    assert tools["normpipe, exact quantiles"]["rank_error"] < 1e-4  # numpy's, interpolated
    assert table.count("\n| ") == 1 + len(tools)  # header + one row per tool
    assert "| normpipe run |" in table
    assert "1.00x" in table


def test_shapes_harness_quick(tmp_path: Path) -> None:
    """The shapes benchmark runs every tool on one file of many row groups and on the same
    rows in many files, and names the CPU its figures hold for."""
    table, measured = harness("shapes.py", tmp_path, "--shapes", "big", "split", "--scale", "0.002")
    assert measured["cpu"] in table
    assert "cores" in measured["cpu"]
    assert set(measured["shapes"]) == {"big", "split"}
    for shape in measured["shapes"].values():
        assert set(shape) == {"pyarrow read", "pyarrow read+write", "normpipe fit", "normpipe run", "DuckDB"}
        assert all(m["wall"] > 0 and m["peak"] > 0 for m in shape.values())
    assert table.count("| normpipe run |") == 2


def test_images_harness_quick(tmp_path: Path) -> None:
    table, measured = harness("images.py", tmp_path, "--rows", "300", "--size", "16", "--files", "2")
    tools = measured["tools"]
    assert len(tools) == 8
    assert all(m["images"] == 300 for m in tools.values()), tools
    # normpipe's per-channel std equals the exact one; the usual loop's does not
    fit = next(m for name, m in tools.items() if name.startswith("normpipe fit"))
    assert fit["std_error"] < 1e-12
    assert "images/s" in table


def test_categories_harness_quick(tmp_path: Path) -> None:
    """The vocabulary benchmark runs every tool and checks their counts against DuckDB's
    (the sketch's within its stated error)."""
    table, measured = harness(
        "categories.py", tmp_path, "--rows", "60000", "--files", "2", "--users", "120000"
    )
    tools = measured["tools"]
    assert len(tools) == 7
    assert all(m["verified"] == "ok" for m in tools.values()), tools
    assert measured["cpu"] in table
    assert "| normpipe fit, + user (sketch) |" in table


def test_nightly_harness_quick(tmp_path: Path) -> None:
    """The nightly benchmark appends the new day, rewrites every day, and checks each
    tool's output of the new day against the append's."""
    table, measured = harness("nightly.py", tmp_path, "--days", "3", "--rows", "2000", "--workers", "1")
    tools = measured["tools"]
    assert len(tools) == 7
    append = tools["normpipe transform --append (new day)"]
    rewrite = tools["normpipe transform --overwrite (every day)"]
    assert append["files"] == 2
    assert rewrite["files"] == 8
    assert append["read"] < rewrite["read"] / 3  # the held days are not read
    assert all(t["verified"] in ("ok", "reference", "refit: other parameters") for t in tools.values()), tools
    assert measured["cpu"] in table
