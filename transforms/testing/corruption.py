"""Shared behaviour of the test-data generators' per-kind corruption settings.

:class:`CorruptionRates` is a mixin for a frozen dataclass that holds one probability field per
corruption kind plus ``min_per_record`` and ``max_per_record``; the subclass names its kinds, in the
order they are applied, in the class attribute ``KINDS``. The mixin checks the values on
construction and gives :meth:`~CorruptionRates.probabilities`, :meth:`~CorruptionRates.scaled` and
:meth:`~CorruptionRates.only`. It is used by ``Corruption`` of :mod:`transforms.testing.people` and
of :mod:`transforms.testing.organisations`.

It does not declare fields, defaults or docs of the kinds (each generator's ``Corruption`` does), does
not apply any corruption and draws nothing at random; FEBRL-style corruption
(``transforms.testing.people.FebrlCorruption``) works differently and does not use it.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Self

import numpy as np

__all__ = ["CorruptionRates"]


class CorruptionRates:
    """Mixin for a frozen dataclass of per-kind corruption probabilities and per-record bounds.

    The subclass is a dataclass with a ``float`` field for every name in ``KINDS`` and ``int`` fields
    ``min_per_record`` and ``max_per_record``, and sets ``KINDS`` (a ``ClassVar``, not a field).
    Error messages name the class ``Corruption``, as both generators call theirs.
    """

    KINDS: ClassVar[tuple[str, ...]]
    min_per_record: int
    max_per_record: int

    def __post_init__(self) -> None:
        for kind in self.KINDS:
            p = getattr(self, kind)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"Corruption.{kind} must be a probability in [0, 1], got {p!r}")
        if not 0 <= self.min_per_record <= self.max_per_record:
            raise ValueError(f"need 0 <= min_per_record <= max_per_record, got {self.min_per_record}, "
                             f"{self.max_per_record}")

    def probabilities(self) -> np.ndarray:
        """The per-kind probabilities in ``KINDS`` order."""
        return np.array([getattr(self, k) for k in self.KINDS], dtype=np.float64)

    def scaled(self, factor: float, *, min_per_record: int | None = None) -> Self:
        """A copy with every probability multiplied by ``factor`` (clipped to 1)."""
        values = {k: min(1.0, getattr(self, k) * factor) for k in self.KINDS}
        if min_per_record is not None:
            values["min_per_record"] = min_per_record
        return dataclasses.replace(self, **values)

    @classmethod
    def only(cls, kind: str, probability: float = 1.0) -> Self:
        """A corruption that applies one kind (with ``probability``) and nothing else."""
        kinds = cls.KINDS
        if kind not in kinds:
            raise ValueError(f"unknown corruption kind {kind!r}; kinds: {', '.join(kinds)}")
        values = {k: 0.0 for k in kinds}
        values[kind] = probability
        return cls(**values, min_per_record=0, max_per_record=len(kinds))
