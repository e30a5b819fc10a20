"""The workload contract: a small ABC with four hooks and one concrete driver.

Shaped like Flower's ``Strategy`` (a few abstract hooks, one concrete method that runs the
flow). A workload is registered under a dotted ``kind`` and is used in two places:

* the coordinator, at submission: :meth:`Workload.parse_spec` (a bad spec is a 422 naming
  the field), :meth:`Workload.check_inputs` (the data must fit the params) and
  :meth:`Workload.cost` (compute units, for pricing);
* the provider node, inside the sandbox: :meth:`Workload.execute`, which re-checks
  everything and calls :meth:`Workload.run`; verification then compares two results
  with :meth:`Workload.agree`.

Shared parameter docs live here, once:

``spec``
    The validated params model (``spec_model``: ``extra="forbid"``, frozen, strict types).
``inputs``
    Input name -> local file path; the names must be exactly ``input_names``.
``summary``
    What :meth:`Workload.check_inputs` learnt about the data (an :class:`InputSummary`).

Workloads are pure compute: they set no global state (threads, RNG, warnings); the
sandbox decides thread counts through environment variables.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, cast

from pydantic import BaseModel, ValidationError

from quackmesh.core.errors import ValidationFailed
from quackmesh.workloads.data import DataFormat
from quackmesh.workloads.results import check_result

__all__ = ["InputSummary", "SpecT", "Workload", "ceil_div", "format_loc", "params_error"]

SpecT = TypeVar("SpecT", bound=BaseModel)


@dataclass(frozen=True)
class InputSummary:
    """What a workload read from its input, enough to price it.

    ``rows``: data rows; ``columns``: columns the workload uses (features, plus the target
    for supervised kinds); ``feature_names``: the feature columns, in order; ``format``:
    ``csv``, ``npz`` or ``parquet`` as sniffed from the bytes.
    """

    rows: int
    columns: int
    feature_names: tuple[str, ...]
    format: DataFormat


def ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` in exact integer arithmetic (for cost formulas)."""
    return -(-a // b)


def format_loc(loc: tuple[int | str, ...], *, prefix: str = "params") -> str:
    """``("features", 0)`` -> ``"params.features[0]"``, the field name users see."""
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def params_error(exc: ValidationError) -> ValidationFailed:
    """A pydantic error on job params as the 422 users see: every error as ``params.<field>``,
    the first one in the message."""
    errors = [
        {"field": format_loc(err["loc"]), "message": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return ValidationFailed(
        f"{first['field']}: {first['message']}{more}", field=first["field"], errors=errors
    )


class Workload(ABC, Generic[SpecT]):
    """One job kind: params model, input checks, pricing, compute and result comparison."""

    kind: ClassVar[str]
    """Dotted registry name such as ``ml.kmeans``."""
    spec_model: ClassVar[type[BaseModel]]
    """The params model; must be ``SpecT`` (a ClassVar cannot name a type variable)."""
    input_names: ClassVar[tuple[str, ...]] = ("data",)
    description: ClassVar[str]

    def parse_spec(self, params: Mapping[str, Any]) -> SpecT:
        """Validate ``params``; every pydantic error is reported as ``params.<field>``."""
        if not isinstance(params, Mapping):
            raise ValidationFailed("params must be a JSON object", field="params")
        try:
            spec = self.spec_model.model_validate(dict(params))
        except ValidationError as exc:
            raise params_error(exc) from exc
        return cast(SpecT, spec)

    def check_input_names(self, inputs: Mapping[str, Path]) -> None:
        """Refuse missing or unexpected input names (the same rule for every workload)."""
        expected = set(self.input_names)
        missing = sorted(expected - set(inputs))
        extra = sorted(set(inputs) - expected)
        if missing:
            raise ValidationFailed(
                f"missing input {missing[0]!r} for workload {self.kind!r}",
                field=f"inputs.{missing[0]}",
                expected=list(self.input_names),
            )
        if extra:
            raise ValidationFailed(
                f"unexpected input {extra[0]!r} for workload {self.kind!r}",
                field=f"inputs.{extra[0]}",
                expected=list(self.input_names),
            )

    @abstractmethod
    def check_inputs(self, spec: SpecT, inputs: Mapping[str, Path]) -> InputSummary:
        """Parse the input files and check that the data fits ``spec``.

        Raises ``ValidationFailed`` (field named) for missing or extra input names, files
        that do not parse and data that does not fit the params.
        """

    @abstractmethod
    def cost(self, spec: SpecT, summary: InputSummary) -> int:
        """Compute units (>= 1); each workload documents its formula in its module."""

    @abstractmethod
    def run(self, spec: SpecT, inputs: Mapping[str, Path]) -> dict[str, Any]:
        """Compute the result: plain JSON (dict/list/str/int/float, no NaN, no numpy)."""

    @abstractmethod
    def agree(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
        """Whether two results are equivalent, with a tolerance for float differences.

        Never raises: malformed results, missing keys and shape mismatches give ``False``.
        """

    def execute(self, params: Mapping[str, Any], inputs: Mapping[str, Path]) -> dict[str, Any]:
        """The node-side driver: parse, check, run, and check the result is plain JSON.

        A result that is not plain, finite JSON is a bug in the workload and raises
        ``ValueError``.
        """
        spec = self.parse_spec(params)
        self.check_inputs(spec, inputs)
        result = self.run(spec, inputs)
        check_result(result, kind=self.kind)
        return result
