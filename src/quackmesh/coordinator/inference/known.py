"""Known answers for the gateway's honeypots (:mod:`.honeypots`), kept in memory.

Its own module, free of runtime imports, so that :class:`~.state.InferenceState` can own
the pool without importing the gateway's machinery.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from quackmesh.coordinator.inference.dispatch import Output, Spec
    from quackmesh.coordinator.inference.verify import Meter

__all__ = ["KNOWN_PER_MODEL", "Known", "KnownAnswers"]

KNOWN_PER_MODEL = 64


@dataclass(frozen=True)
class Known:
    """A request whose answer two or more nodes agreed on."""

    request_id: str
    spec: Spec
    answer: Output
    meter: Meter
    answered_by: frozenset[str]


@dataclass
class KnownAnswers:
    """Known answers per model, in memory (see the module docs)."""

    per_model: int = KNOWN_PER_MODEL
    _by_model: dict[str, deque[Known]] = field(default_factory=dict)

    def remember(self, known: Known) -> None:
        entries = self._by_model.setdefault(known.spec.model, deque(maxlen=self.per_model))
        entries.append(known)

    def pick(self, model: str, node: str) -> Known | None:
        """The oldest known answer of ``model`` that ``node`` had no part in; it moves to
        the back, so the next pick is another."""
        entries = self._by_model.get(model)
        if not entries:
            return None
        for known in list(entries):
            if node not in known.answered_by:
                entries.remove(known)
                entries.append(known)
                return known
        return None

    def count(self, model: str) -> int:
        return len(self._by_model.get(model, ()))
