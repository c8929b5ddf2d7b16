"""The fitted transform as a PyTorch module, so that serving computes what training saw.

:class:`ColumnMaps` holds each column's fitted parameters as buffers and maps a
``(rows, columns)`` float64 tensor forward (raw -> normalized) or inverse; it is built
from each method's :class:`~normpipe.methods.Form`, with the same operations in the
same order as the numpy maps, so the two agree to the last bit in float64 (the
quantile map to rounding: its interpolation is written out). Nothing but tensors runs
at call time, so the module scripts (TorchScript), exports (``torch.export``) and
converts to ONNX. :class:`ServingModel` chains the features' maps, a trained network
and the target's inverse: raw features in, predictions in the target's units out.

NaN stays NaN, +/-inf follow the map, as in the Parquet path. Per-group parameters
take a second input, each row's group position (:func:`group_ids`); a row of a group
unseen at fit time (``-1``) uses the global parameters.
"""

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import torch
from torch import nn

from normpipe.commit import local_path
from normpipe.errors import ArtifactError, ConfigError
from normpipe.fitted import unknown_column
from normpipe.mappers import GroupedScalers
from normpipe.methods import FittedScaler, Form

if TYPE_CHECKING:
    from normpipe.stats import Stats

__all__ = [
    "ColumnMaps",
    "ServingModel",
    "column_maps",
    "export_model",
    "group_ids",
    "load_serving",
    "ndtr",
    "ndtri",
]

_PRE = {"identity": 0, "log1p": 1, "signed_log": 2}
_is_scripting = torch.jit.is_scripting  # type: ignore[attr-defined]  # not re-exported in the stubs


#: Wichura's AS241 in float64 (numerators a, c and denominators b, d, highest power
#: first; then 0.180625, 1.6 and 0.425). They reach the maps as a buffer: the ONNX
#: exporter stores Python floats in float32, and TorchScript's ``torch.tensor`` of a
#: list passes through float32, either of which costs a float64 map its last 8 digits.
AS241 = torch.tensor(
    [
        2.5090809287301226727e3,
        3.3430575583588128105e4,
        6.7265770927008700853e4,
        4.5921953931549871457e4,
        1.3731693765509461125e4,
        1.9715909503065514427e3,
        1.3314166789178437745e2,
        3.3871328727963666080,
        5.2264952788528545610e3,
        2.8729085735721942674e4,
        3.9307895800092710610e4,
        2.1213794301586595867e4,
        5.3941960214247511077e3,
        6.8718700749205790830e2,
        4.2313330701600911252e1,
        1.0,
        7.74545014278341407640e-4,
        2.27238449892691845833e-2,
        2.41780725177450611770e-1,
        1.27045825245236838258,
        3.64784832476320460504,
        5.76949722146069140550,
        4.63033784615654529590,
        1.42343711074968357734,
        1.05075007164441684324e-9,
        5.47593808499534494600e-4,
        1.51986665636164571966e-2,
        1.48103976427480074590e-1,
        6.89767334985100004550e-1,
        1.67638483018380384940,
        2.05319162663775882187,
        1.0,
        0.180625,
        1.6,
        0.425,
    ],
    dtype=torch.float64,
)


def _polynomial(r: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Horner's rule, highest coefficient first."""
    value = torch.zeros_like(r) + k[0]
    for i in range(1, k.shape[0]):
        value = value * r + k[i]
    return value


def ndtri(p: torch.Tensor, k: torch.Tensor = AS241) -> torch.Tensor:
    """The standard normal quantile of ``p`` in ``[1e-7, 1 - 1e-7]`` (Wichura's AS241 with
    the coefficients ``k``, as in Python's ``statistics.NormalDist.inv_cdf``; about
    1e-16 relative), in elementary operations, since ONNX has no inverse error function."""
    q = p - 0.5
    r = k[32] - q * q
    central = q * _polynomial(r, k[0:8]) / _polynomial(r, k[8:16])
    s = torch.sqrt(-torch.log(torch.where(q <= 0.0, p, 1.0 - p))) - k[33]
    tail = _polynomial(s, k[16:24]) / _polynomial(s, k[24:32])
    return torch.where(torch.abs(q) <= k[34], central, torch.where(q < 0.0, -tail, tail))


def ndtr(z: torch.Tensor) -> torch.Tensor:
    """The standard normal CDF. While exporting (ONNX Runtime has no float64 ``Erf``) the
    error function runs in float32: about 1e-7 absolute."""
    if not _is_scripting():  # noqa: SIM102  # TorchScript skips this block whole
        if torch.compiler.is_exporting():
            return torch.erf(z.float() * 0.7071067811865476).add(1.0).mul(0.5).to(z.dtype)
    return torch.erfc(-z * 0.7071067811865476).mul(0.5)  # accurate in the lower tail too


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """``np.interp`` for each column: ``x`` (rows, columns), ``xp`` and ``fp`` (columns,
    points), ``xp`` non-decreasing. The interval is found by counting the points at or
    below each value (ONNX has no ``searchsorted``): ``points`` comparisons a value."""
    rows, points = x.shape[0], xp.shape[1]
    below = (x.unsqueeze(-1) >= xp).sum(-1) - 1
    j = torch.clamp(below, 0, points - 2).unsqueeze(-1)
    xs, fs = xp.expand(rows, -1, -1), fp.expand(rows, -1, -1)
    x0, x1 = torch.gather(xs, 2, j).squeeze(-1), torch.gather(xs, 2, j + 1).squeeze(-1)
    f0, f1 = torch.gather(fs, 2, j).squeeze(-1), torch.gather(fs, 2, j + 1).squeeze(-1)
    y = (f1 - f0) / (x1 - x0) * (x - x0) + f0
    y = torch.where(x < xp[:, 0], fp[:, 0], y)
    return torch.where(x >= xp[:, -1], fp[:, -1], y)


class _Closed(nn.Module):
    """The closed-form maps (every method but ``quantile``) of some columns; parameter
    tables have one row per group and a last row of global parameters."""

    pre: torch.Tensor
    out_low: torch.Tensor
    out_high: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    center: torch.Tensor
    scale: torch.Tensor
    mul: torch.Tensor
    add: torch.Tensor

    def __init__(self, overall: Sequence[Form], by_group: Sequence[Form], groups: int, inverse: bool) -> None:
        super().__init__()
        self.inverse = inverse
        self.grouped = groups > 0
        # the method (and so ``pre`` and the output range) is the groups' too
        self.register_buffer("pre", torch.tensor([_PRE[f.pre] for f in overall], dtype=torch.int64))
        self.register_buffer("out_low", torch.tensor([f.out_low for f in overall], dtype=torch.float64))
        self.register_buffer("out_high", torch.tensor([f.out_high for f in overall], dtype=torch.float64))
        for field in ("low", "high", "center", "scale", "mul", "add"):
            # (groups + 1, columns): one row per group (array fields), then the global row
            columns = [
                np.append(
                    np.broadcast_to(np.asarray(getattr(g, field), dtype=np.float64), groups),
                    getattr(o, field),
                )
                for g, o in zip(by_group, overall, strict=True)
            ]
            self.register_buffer(field, torch.from_numpy(np.stack(columns, axis=1)))

    def _pick(self, table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        if not self.grouped:
            return table[0]
        return table[torch.where(ids < 0, table.shape[0] - 1, ids)]

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        low, high = self._pick(self.low, ids), self._pick(self.high, ids)
        center, scale = self._pick(self.center, ids), self._pick(self.scale, ids)
        mul, add = self._pick(self.mul, ids), self._pick(self.add, ids)
        if self.inverse:
            v = (x - add) / mul * scale + center
            v = torch.where(self.pre == 1, torch.expm1(v), v)
            v = torch.where(self.pre == 2, torch.sign(v) * torch.expm1(torch.abs(v)), v)
            return torch.where(torch.isnan(x), x, v)
        v = torch.minimum(torch.maximum(x, low), high)
        logged = torch.log1p(v)
        v = torch.where(self.pre == 1, torch.where(logged == -math.inf, math.nan, logged), v)
        v = torch.where(self.pre == 2, torch.sign(v) * torch.log1p(torch.abs(v)), v)
        y = (v - center) / scale * mul + add
        y = torch.minimum(torch.maximum(y, self.out_low), self.out_high)
        return torch.where(torch.isnan(x), x, y)


class _Quantile(nn.Module):
    """The ``quantile`` maps of columns whose tables have the same length."""

    table: torch.Tensor
    refs: torch.Tensor
    normal: torch.Tensor
    as241: torch.Tensor
    bounds: torch.Tensor

    def __init__(self, forms: Sequence[Form], inverse: bool) -> None:
        super().__init__()
        self.inverse = inverse
        points = len(forms[0].table)
        self.register_buffer("table", torch.tensor([f.table for f in forms], dtype=torch.float64))
        self.register_buffer("refs", torch.from_numpy(np.linspace(0.0, 1.0, points)).repeat(len(forms), 1))
        self.register_buffer("normal", torch.tensor([f.normal for f in forms]))
        self.register_buffer("as241", AS241.clone())
        self.register_buffer("bounds", torch.tensor([1e-7, 1.0 - 1e-7], dtype=torch.float64))

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        if self.inverse:
            u = torch.where(self.normal, ndtr(x), x)
            return torch.where(torch.isnan(x), x, _interp(u, self.refs, self.table))
        # scikit-learn's rule for ties: the mean of interpolating upwards and downwards
        up = _interp(x, self.table, self.refs)
        down = _interp(-x, -self.table.flip(1), -self.refs.flip(1))
        u = 0.5 * (up - down)
        bounded = torch.minimum(torch.maximum(u, self.bounds[0]), self.bounds[1])  # methods._NORMAL_BOUND
        return torch.where(torch.isnan(x), x, torch.where(self.normal, ndtri(bounded, self.as241), u))


class ColumnMaps(nn.Module):
    """The fitted maps of some columns, forward or inverse, on a float64 tensor
    ``(rows, columns)`` in the order given at construction; ``groups`` (int64, one per
    row: a position from :func:`group_ids`, ``-1`` for unseen) for per-group artifacts.

    Build it with :meth:`normpipe.Stats.to_torch`.
    """

    order: torch.Tensor
    positions: torch.Tensor

    def __init__(
        self, columns: Sequence[str], parts: Sequence[tuple[list[int], nn.Module]], grouped: bool
    ) -> None:
        super().__init__()
        self.columns = list(columns)
        self.grouped = grouped
        self.parts = nn.ModuleList([module for _, module in parts])
        order = [i for positions, _ in parts for i in positions]
        self.register_buffer("order", torch.tensor(np.argsort(order, kind="stable"), dtype=torch.int64))
        self.register_buffer("positions", torch.tensor(order, dtype=torch.int64))
        self.sizes = [len(positions) for positions, _ in parts]
        self.eval()  # no training behaviour: evaluation mode, as exporters expect

    def forward(self, x: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        ids = groups if groups is not None else torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        x = x.to(torch.float64)
        picked = torch.split(x.index_select(1, self.positions), self.sizes, dim=1)
        mapped = [part(picked[i], ids) for i, part in enumerate(self.parts)]
        return torch.cat(mapped, dim=1).index_select(1, self.order)


def column_maps(
    scalers: Mapping[str, FittedScaler],
    columns: Sequence[str],
    inverse: bool = False,
    groups: GroupedScalers | None = None,
) -> ColumnMaps:
    """The :class:`ColumnMaps` of ``columns``; a column without a scaler passes through.
    With ``groups``, its columns take each group's parameters (a :class:`Form` of arrays)."""
    forms = {name: scalers[name].form() if name in scalers else Form() for name in columns}
    closed = [i for i, name in enumerate(columns) if not forms[name].table]
    tables: dict[int, list[int]] = {}
    for i, name in enumerate(columns):
        if forms[name].table:
            tables.setdefault(len(forms[name].table), []).append(i)
    count = len(groups.keys) if groups is not None else 0
    parts: list[tuple[list[int], nn.Module]] = []
    if closed:
        overall = [forms[columns[i]] for i in closed]
        by_group = [
            groups.specs[columns[i]].form(groups.params[columns[i]])
            if groups is not None and columns[i] in groups.params
            else forms[columns[i]]
            for i in closed
        ]
        parts.append((closed, _Closed(overall, by_group, count, inverse)))
    for positions in tables.values():
        parts.append((positions, _Quantile([forms[columns[i]] for i in positions], inverse)))
    return ColumnMaps(columns, parts, count > 0)


def _positions(stats: "Stats | None", names: Sequence[str]) -> tuple[list[str], dict[str, FittedScaler]]:
    """The flat positions of ``names`` (a tensor column spreads over its ``size``
    values, named ``column[i]``) and each one's scaler: a tensor's per-slot parameters
    become each position's own, so the closed-form maps serve tensors unchanged."""
    scalers: dict[str, FittedScaler] = dict(stats.fitted.scalers) if stats is not None else {}
    flat: list[str] = []
    for name in names:
        tensor = stats.tensors.get(name) if stats is not None else None
        if tensor is None:
            flat.append(name)
            continue
        fitted = tensor.fitted
        if fitted.scaler is None:
            raise ArtifactError(f"tensor column '{name}': l2 normalization cannot be exported yet")
        if fitted.layout.shape is None:
            raise ArtifactError(
                f"tensor column '{name}' holds variable-length lists; a model input has a fixed shape"
            )
        size = fitted.layout.size
        spread = {k: np.broadcast_to(fitted.layout.expand(v), size) for k, v in fitted.scaler.params.items()}
        for i in range(size):
            position = f"{name}[{i}]"
            params = type(fitted.scaler.params).of({key: float(v[i]) for key, v in spread.items()})
            scalers[position] = FittedScaler(fitted.scaler.spec, params)
            flat.append(position)
    return flat, scalers


def maps_of(stats: "Stats", columns: Sequence[str] | None, inverse: bool) -> ColumnMaps:
    """:meth:`normpipe.Stats.to_torch`."""
    names = [*stats.columns, *stats.tensors] if columns is None else list(columns)
    for name in names:
        if name not in stats.columns and name not in stats.tensors:
            raise unknown_column(name, [*stats.columns, *stats.tensors])
    flat, scalers = _positions(stats, names)
    return column_maps(scalers, flat, inverse, stats.fitted.groups)


def group_ids(stats: "Stats", keys: npt.ArrayLike) -> torch.Tensor:
    """Each key's group position for a per-group :class:`ColumnMaps` (``-1``: a group
    unseen at fit time, or a null key, mapped with the global parameters; with the
    artifact's ``unseen: error`` rule such a key raises instead)."""
    grouped = stats.fitted.groups
    if grouped is None:
        raise ArtifactError("the stats artifact is not per group; call the module without groups")
    at, known = grouped.rows(pa.array(np.asarray(keys), from_pandas=True), "the keys")
    return torch.from_numpy(np.where(known, at, -1).astype(np.int64))


class ServingModel(nn.Module):
    """Raw features ``(rows, features)`` -> predictions ``(rows,)`` in the target's units:
    the features' imputation (``fills``: each position's fill value, NaN for none), their
    fitted maps, the network (float32, as in training), the target's inverse map. A row
    with a missing or infinite normalized feature predicts NaN (the Parquet path writes
    null). A tensor feature (an image) takes its ``size`` raw values in its stored layout
    (decoded pixels for encoded images), as in :mod:`normpipe.train.features`. A
    categorical feature takes its code (NaN: missing, the embedding's last index,
    ``missing``); the ONNX export takes its raw values instead (:func:`export_model`)."""

    fills: torch.Tensor
    missing: torch.Tensor

    def __init__(
        self,
        features: ColumnMaps,
        network: nn.Module,
        target: ColumnMaps,
        fills: Sequence[float] | None = None,
        missing: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.features = features
        self.network = network.eval()
        self.network.requires_grad_(False)  # serving: no autograd graph, plain tensors out
        self.target = target
        width = len(features.columns)
        nothing = [math.nan] * width
        self.register_buffer(
            "fills", torch.tensor(list(fills or nothing), dtype=torch.float64).reshape(1, width)
        )
        self.register_buffer(
            "missing", torch.tensor(list(missing or nothing), dtype=torch.float64).reshape(1, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float64)
        x = torch.where(torch.isnan(x), self.fills, x)  # imputation (NaN fills: none)
        z = self.features(x)
        z = torch.where(torch.isnan(z), self.missing, z)  # a category's missing index
        ok = torch.isfinite(z).all(dim=1)
        raw = self.network(z.to(torch.float32)).to(torch.float64)
        y = self.target(raw).squeeze(1)
        return torch.where(ok, y, torch.full_like(y, math.nan))


def serving_model(network: nn.Module, card: Mapping[str, Any], stats: "Stats | None") -> ServingModel:
    """The :class:`ServingModel` of a trained model (its card and its stats artifact)."""
    if card["architecture"]["kind"] == "sequence" and card["train_config"].get("time"):
        raise ArtifactError(
            "a sequence model on rows ordered by time cannot be exported: it needs windows of past "
            "rows, which 'normpipe predict' builds from the Parquet data (a model on a window tensor "
            "column can)"
        )
    if stats is not None and stats.fitted.groups is not None:
        raise ArtifactError("a model trained on per-group statistics cannot be exported yet")
    flat, scalers = _positions(stats, card["features"])
    features = column_maps(scalers, flat)
    fills, missing = [math.nan] * len(flat), [math.nan] * len(flat)
    for i, name in enumerate(flat):
        if stats is None:
            break
        column, category = stats.columns.get(name), stats.categories.get(name)
        if column is not None and column.fill is not None:
            fills[i] = column.fill
        if category is not None and category.fitted is not None:
            missing[i] = float(category.fitted.size)
            if category.fill is not None:
                fills[i] = float(category.fitted.codes(pa.array([category.fill])).to_pylist()[0])
    target = column_maps(scalers, [card["target"]], inverse=True)
    return ServingModel(features, network, target, fills, missing)


def load_serving(model_dir: str | os.PathLike[str]) -> ServingModel:
    """The :class:`ServingModel` of a ``normpipe train`` directory (weights, card and
    stats artifact, all read as data)."""
    from normpipe.train.loop import load_model

    network, card, stats = load_model(model_dir)
    return serving_model(network, card, stats)


def export_model(
    model_dir: str | os.PathLike[str], output: str | os.PathLike[str], format: Literal["onnx", "torchscript"]
) -> Path:
    """Write the :class:`ServingModel` of ``model_dir`` to ``output`` as an ONNX model
    (input ``features``: float64 ``(rows, features)`` in the card's order; output
    ``prediction``: float64 ``(rows,)``) or a TorchScript archive; the file appears
    whole (written beside it, then renamed).

    A categorical feature is one more ONNX input of its own name, ``(rows,)`` of its raw
    values (strings; int64 for integer and boolean columns), coded inside the model by an
    ``ai.onnx.ml.LabelEncoder`` holding the vocabulary (unseen values: the
    out-of-vocabulary code; the empty string: missing); its position in ``features`` is
    ignored. TorchScript takes its code in ``features`` (NaN: missing), the vocabulary
    being in the model directory's ``stats.json``."""
    from normpipe.train.loop import load_model

    network, card, stats = load_model(model_dir)
    model = serving_model(network, card, stats)
    dest = local_path(output, "the exported model")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        if format == "torchscript":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is in maintenance
                torch.jit.script(model).save(str(tmp))  # type: ignore[no-untyped-call]
        else:
            _to_onnx(model, tmp)
            coded = [
                (i, name, stats.categories[name].fitted)
                for i, name in enumerate(model.features.columns)
                if stats is not None
                and name in stats.categories
                and stats.categories[name].fitted is not None
            ]
            if coded:
                _categorical_inputs(tmp, coded, len(model.features.columns))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _to_onnx(model: ServingModel, path: Path) -> None:
    import importlib.util
    import logging

    if importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxscript") is None:
        raise ConfigError(
            "exporting to ONNX needs the onnx and onnxscript packages: pip install 'normpipe[train]'"
        )
    example = torch.zeros((2, len(model.features.columns)), dtype=torch.float64)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the exporter logs each step and every optional op it skips
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=["features"],
                output_names=["prediction"],
                dynamic_shapes=({0: torch.export.Dim("rows")},),
                dynamo=True,
                verbose=False,
                external_data=False,
            )
    finally:
        quiet.setLevel(level)


def _categorical_inputs(path: Path, coded: Sequence[tuple[int, str, Any]], width: int) -> None:
    """Give the ONNX model at ``path`` one input per categorical feature (its raw values)
    whose codes, from an ``ai.onnx.ml.LabelEncoder``, replace that feature's column of
    ``features`` before anything else runs."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    graph = model.graph
    current = "features"
    nodes, inputs = [], []
    for position, name, fitted in coded:
        values = fitted.values.to_pylist()
        kind = fitted.kind
        codes = list(range(len(values)))
        missing = fitted.size  # the embedding's "missing" index
        keys: dict[str, Any] = (
            {"keys_strings": [*values, ""], "values_int64s": [*codes, missing]}  # "": missing
            if kind == "string"
            else {"keys_int64s": [int(v) for v in values], "values_int64s": codes}
        )
        elem = TensorProto.STRING if kind == "string" else TensorProto.INT64
        encoder = helper.make_node(
            "LabelEncoder", [name], [f"{name}__code"], domain="ai.onnx.ml", default_int64=fitted.oov, **keys
        )
        mask = [i == position for i in range(width)]
        nodes += [
            encoder,
            helper.make_node("Cast", [f"{name}__code"], [f"{name}__float"], to=TensorProto.DOUBLE),
            helper.make_node("Unsqueeze", [f"{name}__float", f"{name}__axis"], [f"{name}__column"]),
            helper.make_node("Where", [f"{name}__mask", f"{name}__column", current], [f"{name}__features"]),
        ]
        graph.initializer.extend(
            [
                helper.make_tensor(f"{name}__axis", TensorProto.INT64, [1], [1]),
                helper.make_tensor(f"{name}__mask", TensorProto.BOOL, [1, width], mask),
            ]
        )
        inputs.append(helper.make_tensor_value_info(name, elem, ["rows"]))
        current = f"{name}__features"
    for node in graph.node:  # the network reads the coded features
        node.input[:] = [current if i == "features" else i for i in node.input]
    old = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *old])
    graph.input.extend(inputs)
    if not any(o.domain == "ai.onnx.ml" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 2))
    onnx.save(model, str(path))
