"""Drift between two artifacts, from their sketches: oracles are exact KS and PSI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from normpipe.artifact import Stats
from normpipe.core.column import TableState
from normpipe.drift import Thresholds, drift
from normpipe.scalers import parse_scaler
from tests.test_cli import invoke


def stats_of(**columns: np.ndarray) -> Stats:
    table = pa.table(columns)
    state = TableState.from_block(table, list(columns), 4000)
    specs = {name: parse_scaler("zscore") for name in columns}
    dataset = {"source": "mem", "root": "mem", "files": [], "sha256": "0" * 64}
    return Stats.from_state(state, specs, dict.fromkeys(columns, "double"), 4000, dataset)


def exact_ks(a: np.ndarray, b: np.ndarray) -> float:
    grid = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(np.sort(a), grid, side="right") / a.size
    fb = np.searchsorted(np.sort(b), grid, side="right") / b.size
    return float(np.max(np.abs(fa - fb)))


def exact_psi(a: np.ndarray, b: np.ndarray) -> float:
    edges = np.quantile(a, np.arange(1, 10) / 10)
    ra = np.maximum(np.bincount(np.searchsorted(edges, a, side="right"), minlength=10) / a.size, 1e-4)
    rb = np.maximum(np.bincount(np.searchsorted(edges, b, side="right"), minlength=10) / b.size, 1e-4)
    return float(np.sum((rb - ra) * np.log(rb / ra)))


@pytest.fixture(scope="module")
def samples() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    return {
        "ref": rng.normal(size=100_000),
        "same": rng.normal(size=100_000),
        "shifted": rng.normal(0.5, 1.0, size=100_000),
        "wider": rng.normal(0.0, 2.0, size=100_000),
    }


def test_identical_data_shows_no_drift(samples: dict[str, np.ndarray]) -> None:
    ref = stats_of(x=samples["ref"])
    (result,) = drift(ref, ref)
    assert result.psi == pytest.approx(0.0, abs=1e-9)
    assert result.ks == pytest.approx(0.0, abs=1e-9)
    assert not result.drifted
    (again,) = drift(ref, stats_of(x=samples["same"]))  # a new sample of the same law
    assert again.psi < 0.01
    assert not again.drifted


@pytest.mark.parametrize("kind", ["shifted", "wider"])
def test_changed_data_is_flagged_and_matches_exact_measures(
    samples: dict[str, np.ndarray], kind: str
) -> None:
    ref, cur = samples["ref"], samples[kind]
    (result,) = drift(stats_of(x=ref), stats_of(x=cur))
    assert result.drifted
    assert abs(result.ks - exact_ks(ref, cur)) <= result.ks_error_bound
    assert result.psi == pytest.approx(exact_psi(ref, cur), rel=0.05)
    assert result.mean_shift == pytest.approx(abs(cur.mean() - ref.mean()) / ref.std(), rel=1e-9)
    assert result.std_ratio == pytest.approx(cur.std() / ref.std(), rel=1e-9)


def test_thresholds_are_respected(samples: dict[str, np.ndarray]) -> None:
    ref, cur = stats_of(x=samples["ref"]), stats_of(x=samples["shifted"])
    lenient = Thresholds(psi=10, ks=1, mean_shift=10, missing=1)
    assert not drift(ref, cur, lenient)[0].drifted
    only_mean = Thresholds(psi=10, ks=1, mean_shift=0.4, missing=1)
    reasons = drift(ref, cur, only_mean)[0].reasons
    assert len(reasons) == 1
    assert reasons[0].startswith("mean shift 0.")
    assert reasons[0].endswith("> 0.4")


def test_missing_columns_and_missing_values() -> None:
    x = np.arange(1000.0)
    holes = x.copy()
    holes[::5] = np.nan
    results = {r.column: r for r in drift(stats_of(a=x, b=x), stats_of(a=holes, c=x))}
    assert results["a"].missing_change == pytest.approx(0.2)
    assert "missing share change 0.2 > 0.05" in results["a"].reasons
    assert results["b"].reasons == ["column missing from the current artifact"]
    assert results["c"].reasons == ["column missing from the reference artifact"]


def test_drift_command_exit_status(samples: dict[str, np.ndarray], tmp_path: Path) -> None:
    stats_of(x=samples["ref"]).save(tmp_path / "ref.json")
    stats_of(x=samples["same"]).save(tmp_path / "same.json")
    stats_of(x=samples["shifted"]).save(tmp_path / "shifted.json")
    code, out, _ = invoke("drift", tmp_path / "ref.json", tmp_path / "same.json")
    assert code == 0
    assert "x" in out
    code, out, err = invoke("drift", tmp_path / "ref.json", tmp_path / "shifted.json", "--json")
    assert code == 1
    assert json.loads(out)[0]["drifted"] is True
    assert "drift in 1 of 1 columns: x" in err
    code, _, _ = invoke(
        "drift",
        tmp_path / "ref.json",
        tmp_path / "shifted.json",
        "--ks",
        "1",
        "--psi",
        "9",
        "--mean-shift",
        "9",
    )
    assert code == 0
    code, _, err = invoke("drift", tmp_path / "ref.json", tmp_path / "nope.json")
    assert code == 2
    assert "nope.json" in err


def test_drift_command_takes_outputs_for_their_artifacts(tmp_path: Path) -> None:
    """An output written by run stands for its _stats.json, as in inspect and report."""
    import normpipe
    from normpipe.datagen import generate

    generate(tmp_path / "data", 2_000, 2, seed=1, features=["normal"])
    for name in ("a", "b"):
        normpipe.run(tmp_path / "data", tmp_path / name, exclude=["id"], cluster={"processes": False})
    code, out, _ = invoke("drift", tmp_path / "a", tmp_path / "b", "--json")
    assert code == 0
    assert [r["column"] for r in json.loads(out)] == ["normal"]
