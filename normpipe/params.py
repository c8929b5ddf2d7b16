"""Fitted parameters: one typed, frozen class per shape of map.

The fields are floats for a column, or arrays (one entry per group, or per row) for
per-group normalization: every map broadcasts over either, so one expression fits and
applies both. Each is also a read-only mapping of its fields (the artifact's
``"params"`` object, and ``params["scale"]`` for callers).

>>> Affine(center=2.0, scale=4.0)["scale"]
4.0
>>> dict(Linear.of({"scale": 0.5, "min": -1.0}))
{'scale': 0.5, 'min': -1.0}
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

__all__ = ["Affine", "Clipped", "Linear", "NoParams", "Params"]

P = TypeVar("P", bound="Params")


@dataclass(frozen=True, eq=False)
class Params(Mapping[str, Any]):
    """The fitted parameters of one method; compares equal to a mapping of the same items."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def of(cls: type[P], values: Mapping[str, Any]) -> P:
        """The parameters in ``values`` (an artifact's ``"params"``), exactly these keys.

        Raises
        ------
        ValueError
            A key is missing or unknown.
        """
        if set(values) != set(cls.names()):
            raise ValueError(f"has the parameters {', '.join(cls.names()) or 'none'}")
        return cls(**values)

    def map(self: P, function: Callable[[str, Any], Any]) -> P:
        """The same parameters with ``function(name, value)`` applied to each."""
        return type(self)(**{name: function(name, value) for name, value in self.items()})

    def __getitem__(self, name: str) -> Any:
        if name not in self.names():
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


@dataclass(frozen=True, eq=False)
class NoParams(Params):
    """No parameters (``quantile`` keeps a table instead)."""


@dataclass(frozen=True, eq=False)
class Affine(Params):
    """``y = (f(x) - center) / scale``."""

    center: Any
    scale: Any


@dataclass(frozen=True, eq=False)
class Linear(Params):
    """``y = x * scale + min`` (scikit-learn's ``MinMaxScaler``: ``scale_`` and ``min_``)."""

    scale: Any
    min: Any


@dataclass(frozen=True, eq=False)
class Clipped(Params):
    """Winsorize to ``[low, high]``, then ``(x - center) / scale``."""

    low: Any
    high: Any
    center: Any
    scale: Any
