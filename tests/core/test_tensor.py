"""Tensor column statistics against numpy over the whole array: per element, per channel
(CHW and HWC) and pooled; split invariance; sketch quantiles within their bound; the
fitted maps and their inverses; bad shapes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from normpipe.core.tensor import TensorLayout, TensorState, tensor_block
from normpipe.errors import InputError
from normpipe.tensors import TensorSpec, fit_tensor, resolve_layout


def _images(rng: np.random.Generator, rows: int = 240, layout: str = "CHW") -> np.ndarray:
    """Colour images with per-channel offsets and scales (a large common offset in
    channel 1), some NaN and +inf pixels."""
    shape = (rows, 3, 6, 5) if layout == "CHW" else (rows, 6, 5, 3)
    axis = 1 if layout == "CHW" else 3
    offsets = np.array([10.0, 300.0, -3.0]).reshape([3 if a == axis else 1 for a in range(4)])
    scales = np.array([2.0, 0.01, 40.0]).reshape(offsets.shape)
    x = offsets + scales * rng.standard_normal(shape)
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, 30, replace=False)] = np.nan
    flat[rng.choice(flat.size, 3, replace=False)] = np.inf
    return x


def _fixed(x: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    size = int(np.prod(x.shape[1:]))
    mask = pa.array(~valid) if valid is not None else None
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), size, mask=mask)


def _state(column: pa.Array, layout: TensorLayout, k: int = 400) -> TensorState:
    return TensorState.from_block(tensor_block(column, layout, "test"), layout, k)


def _slot_values(x: np.ndarray, layout: TensorLayout) -> list[np.ndarray]:
    """Each slot's finite values, straight from numpy (the oracle)."""
    rows = x.shape[0]
    if layout.per == "all":
        groups = [x.reshape(-1)]
    elif layout.per == "element":
        groups = list(x.reshape(rows, -1).T)
    else:
        axis = 1 if layout.layout == "CHW" else x.ndim - 1
        groups = [np.take(x, c, axis=axis).reshape(-1) for c in range(x.shape[axis])]
    return [g[np.isfinite(g)] for g in groups]


@pytest.mark.parametrize(
    ("per", "layout"), [("channel", "CHW"), ("channel", "HWC"), ("element", "CHW"), ("all", "CHW")]
)
def test_moments_equal_numpy_and_any_split(rng: np.random.Generator, per: str, layout: str) -> None:
    x = _images(rng, layout=layout)
    tensor = TensorLayout(x.shape[1:], layout, per)  # type: ignore[arg-type]
    valid = rng.random(x.shape[0]) > 0.1
    whole = _state(_fixed(x, valid), tensor)
    kept = x[valid]
    for slot, values in enumerate(_slot_values(kept, tensor)):
        m = whole.moments
        assert m.count[slot] == values.size
        assert m.mean[slot] == pytest.approx(values.mean(), rel=1e-12, abs=1e-300)
        assert m.m2[slot] / values.size == pytest.approx(values.var(), rel=1e-10)
        assert (m.min[slot], m.max[slot]) == (values.min(), values.max())
    assert whole.nulls == int((~valid).sum())
    assert whole.nans == int(np.isnan(kept).sum())
    assert whole.posinf == int(np.isposinf(kept).sum())
    # any split into blocks merges to the same statistics
    cuts = np.sort(rng.choice(np.arange(1, x.shape[0]), 6, replace=False))
    parts = [
        _state(_fixed(x[a:b], valid[a:b]), tensor)
        for a, b in zip([0, *cuts], [*cuts, x.shape[0]], strict=True)
    ]
    merged = TensorState.merge_all(parts)
    np.testing.assert_array_equal(merged.moments.count, whole.moments.count)
    np.testing.assert_allclose(merged.moments.mean, whole.moments.mean, rtol=1e-12)
    np.testing.assert_allclose(merged.moments.m2, whole.moments.m2, rtol=1e-10)
    np.testing.assert_array_equal(merged.moments.min, whole.moments.min)
    assert (merged.rows, merged.nulls, merged.nans) == (whole.rows, whole.nulls, whole.nans)


@pytest.mark.parametrize("layout", ["CHW", "HWC"])
def test_channel_quantiles_within_the_sketch_bound(rng: np.random.Generator, layout: str) -> None:
    x = _images(rng, rows=3000, layout=layout)  # 90,000 values a channel: compacted sketches
    tensor = TensorLayout(x.shape[1:], layout, "channel")  # type: ignore[arg-type]
    parts = [_state(_fixed(x[i : i + 700]), tensor, k=200) for i in range(0, 3000, 700)]
    state = TensorState.merge_all(parts)
    for slot, values in enumerate(_slot_values(x, tensor)):
        ordered = np.sort(values)
        sketch = state.sketches[slot]
        assert sketch.n == values.size
        for p, q in zip(
            [0.01, 0.25, 0.5, 0.75, 0.99], sketch.quantiles([0.01, 0.25, 0.5, 0.75, 0.99]), strict=True
        ):
            rank = np.searchsorted(ordered, q, "right") / values.size
            assert abs(rank - p) <= sketch.rank_error, (slot, p, rank)


def test_variable_lists_pooled_equal_numpy(rng: np.random.Generator) -> None:
    lengths = rng.integers(0, 7, size=400)
    values = rng.exponential(3.0, size=int(lengths.sum()))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    valid = rng.random(400) > 0.2
    column = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values), mask=pa.array(~valid))
    layout = TensorLayout(None, "CHW", "all")
    state = _state(column, layout)
    kept = np.concatenate([values[offsets[i] : offsets[i + 1]] for i in range(400) if valid[i]])
    assert state.moments.count[0] == kept.size
    assert state.moments.mean[0] == pytest.approx(kept.mean(), rel=1e-12)
    assert state.std[0] == pytest.approx(kept.std(), rel=1e-12)
    # the pooled map keeps every row's length and null rows
    fitted = fit_tensor("seq", TensorSpec(per="all", method="zscore"), state)
    out = fitted.map_column(column, "test")
    assert out.type == pa.list_(pa.field("item", pa.float32()))
    assert out.null_count == int((~valid).sum())
    assert [len(v) if v is not None else None for v in out.to_pylist()] == [
        int(n) if ok else None for n, ok in zip(lengths, valid, strict=True)
    ]
    np.testing.assert_allclose(
        np.asarray(out.values), ((kept - kept.mean()) / kept.std()).astype(np.float32), rtol=1e-6, atol=1e-6
    )


def _numpy_zscore(x: np.ndarray, layout: TensorLayout) -> np.ndarray:
    axis = 1 if layout.layout == "CHW" else x.ndim - 1
    axes = tuple(a for a in range(x.ndim) if a != axis)
    mean = np.nanmean(np.where(np.isinf(x), np.nan, x), axis=axes, keepdims=True)
    std = np.nanstd(np.where(np.isinf(x), np.nan, x), axis=axes, keepdims=True)
    return (x - mean) / std


@pytest.mark.parametrize("layout", ["CHW", "HWC"])
def test_channel_zscore_equals_numpy_and_inverts(rng: np.random.Generator, layout: str) -> None:
    x = _images(rng, layout=layout)
    spec = TensorSpec(shape=x.shape[1:], layout=layout, per="channel", method="zscore", dtype="float64")
    column = _fixed(x)
    tensor = resolve_layout("px", pa.field("px", column.type), spec, "test")
    fitted = fit_tensor("px", spec, _state(column, tensor))
    out = fitted.map_column(column, "test")
    assert out.type == pa.list_(pa.field("item", pa.float64()), column.type.list_size)
    mapped = np.asarray(out.values).reshape(x.shape)
    # z units: x - mean cancels for values near the mean, so compare absolutely too
    np.testing.assert_allclose(mapped, _numpy_zscore(x, tensor), rtol=1e-9, atol=1e-9, equal_nan=True)
    back = np.asarray(fitted.map_column(out, "test", inverse=True).values).reshape(x.shape)
    np.testing.assert_allclose(back, x, rtol=1e-12, equal_nan=True)


def test_per_element_minmax_robust_range_and_l2(rng: np.random.Generator) -> None:
    x = rng.uniform(-5, 5, size=(500, 8)) * np.arange(1, 9)
    x[:, 3] = 7.0  # a constant element: scale 1
    column = _fixed(x)
    element = TensorLayout((8,), "CHW", "element")
    minmax = fit_tensor(
        "e", TensorSpec(per="element", method="minmax", dtype="float64"), _state(column, element)
    )
    mapped = np.asarray(minmax.map_column(column, "t").values).reshape(x.shape)
    span = np.where(x.max(0) > x.min(0), x.max(0) - x.min(0), 1.0)
    np.testing.assert_allclose(mapped, (x - x.min(0)) / span, rtol=1e-12, atol=1e-15)
    # robust on the pooled values: the sketch's median and IQR, within its rank bound
    pooled = TensorLayout((8,), "CHW", "all")
    state = _state(column, pooled, k=200)
    robust = fit_tensor("e", TensorSpec(per="all", method="robust"), state)
    assert robust.scaler is not None
    center, scale = robust.scaler.params["center"][0], robust.scaler.params["scale"][0]
    ordered = np.sort(x.reshape(-1))
    bound = state.sketches[0].rank_error
    assert abs(np.searchsorted(ordered, center, "right") / ordered.size - 0.5) <= bound
    q1, q3 = state.sketches[0].quantiles([0.25, 0.75])
    assert scale == q3 - q1
    for q, p in ((q1, 0.25), (q3, 0.75)):
        assert abs(np.searchsorted(ordered, q, "right") / ordered.size - p) <= bound
    # a declared pixel range: no statistics, [0, 255] onto [-1, 1]
    pixels = rng.integers(0, 256, size=(50, 3, 4, 4)).astype(np.uint8)
    spec = TensorSpec(shape=(3, 4, 4), method={"method": "minmax", "feature_range": [-1, 1]}, range=(0, 255))
    layout = TensorLayout((3, 4, 4), "CHW", "channel")
    scaled = fit_tensor("px", spec, TensorState.empty(layout)).map_column(_fixed(pixels), "t")
    np.testing.assert_allclose(np.asarray(scaled.values), pixels.reshape(-1) / 127.5 - 1.0, rtol=1e-6)
    # l2: each row onto the unit sphere, a zero row stays zero
    x[0] = 0.0
    l2 = fit_tensor("e", TensorSpec(per="all", method="l2", dtype="float64"), _state(column, pooled))
    rows = np.asarray(l2.map_column(_fixed(x), "t").values).reshape(x.shape)
    np.testing.assert_allclose(np.linalg.norm(rows[1:], axis=1), 1.0, rtol=1e-12)
    assert not rows[0].any()


def test_types_are_kept(rng: np.random.Generator) -> None:
    x = rng.normal(size=(20, 2, 3)).astype(np.float32)
    storage = _fixed(x)
    extension = pa.ExtensionArray.from_storage(pa.fixed_shape_tensor(pa.float32(), [2, 3]), storage)
    listed = pa.ListArray.from_arrays(pa.array(np.arange(21, dtype=np.int32) * 6), pa.array(x.reshape(-1)))
    spec = TensorSpec(shape=(2, 3), per="element")
    layout = TensorLayout((2, 3), "CHW", "element")
    fitted = fit_tensor("t", spec, _state(storage, layout))
    outs = [fitted.map_column(c, "t") for c in (storage, extension, listed)]
    assert isinstance(outs[1].type, pa.FixedShapeTensorType)
    assert outs[1].type.shape == [2, 3]
    assert pa.types.is_list(outs[2].type)
    for out in outs[1:]:
        np.testing.assert_array_equal(
            np.asarray(out.storage.values if isinstance(out, pa.ExtensionArray) else out.values),
            np.asarray(outs[0].values),
        )


def test_bad_shapes_are_one_line(rng: np.random.Generator) -> None:
    ragged = pa.array([[1.0, 2.0, 3.0], [1.0, 2.0], None])
    layout = TensorLayout((3,), "CHW", "element")
    with pytest.raises(InputError, match=r"row 1 holds 2 values, the shape \[3\] needs 3 \(ragged lists\)"):
        tensor_block(ragged, layout, "f.parquet: column 'v'")
    fixed = _fixed(rng.normal(size=(4, 6)))
    with pytest.raises(InputError, match=r"column 'v' holds 6 values a row, the shape \[4, 2\] needs 8"):
        resolve_layout("v", pa.field("v", fixed.type), TensorSpec(shape=(4, 2)), "f.parquet")
    with pytest.raises(InputError, match="not a list of numbers"):
        resolve_layout("v", pa.field("v", pa.list_(pa.string())), TensorSpec(), "f.parquet")
    with pytest.raises(InputError, match="variable-length list; declare its shape"):
        resolve_layout("v", pa.field("v", pa.list_(pa.float64())), TensorSpec(per="channel"), "f.parquet")
    with pytest.raises(ValueError, match="robust per element"):
        TensorSpec(per="element", method="robust")
    with pytest.raises(ValueError, match="tensor columns take one of"):
        TensorSpec(method="quantile")


def test_variable_lists_per_position_equal_numpy(rng: np.random.Generator) -> None:
    """Position p pools the p-th value of every list that long: the moments equal numpy's
    per position, any split merges to them, and each value maps with its position's
    parameters; a longer list than any seen at fit time is one line."""
    lengths = rng.integers(0, 9, size=600)
    values = rng.normal(size=int(lengths.sum())) * 3 + np.concatenate([np.arange(n) * 10.0 for n in lengths])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    valid = rng.random(600) > 0.1
    column = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values), mask=pa.array(~valid))
    layout = TensorLayout(None, "CHW", "element")
    state = _state(column, layout)
    by_position = [
        np.array([values[offsets[i] + p] for i in range(600) if valid[i] and lengths[i] > p])
        for p in range(8)
    ]
    assert state.slots == 8
    for p, expected in enumerate(by_position):
        assert state.moments.count[p] == expected.size
        assert state.moments.mean[p] == pytest.approx(expected.mean(), rel=1e-12)
        assert state.std[p] == pytest.approx(expected.std(), rel=1e-12)
    parts = [_state(column.slice(a, 150), layout) for a in range(0, 600, 150)]
    merged = TensorState.merge_all(parts)
    np.testing.assert_allclose(merged.moments.mean, state.moments.mean, rtol=1e-12)
    np.testing.assert_allclose(merged.moments.m2, state.moments.m2, rtol=1e-12)
    fitted = fit_tensor("seq", TensorSpec(per="element", method="zscore", dtype="float64"), state)
    out = fitted.map_column(column, "t").to_pylist()
    for i in np.flatnonzero(valid)[:50]:
        row = values[offsets[i] : offsets[i + 1]]
        expected = [(v - state.moments.mean[p]) / state.std[p] for p, v in enumerate(row)]
        np.testing.assert_allclose(out[i], expected, rtol=1e-12)
    longer = pa.array([[1.0] * 9])
    with pytest.raises(InputError, match=r"a list holds 9 values, longer than any seen at fit time \(8\)"):
        fitted.map_column(longer, "t")
