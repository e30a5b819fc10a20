"""Registry, extra workload modules, the shared Workload driver and the package surface."""

from __future__ import annotations

import contextlib
import importlib
import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from pydantic import BaseModel, ConfigDict

import quackmesh.workloads as workloads
from quackmesh.core.errors import ValidationFailed
from quackmesh.workloads import (
    MODULES_ENV,
    InputSummary,
    Workload,
    get_workload,
    list_kinds,
    load_extra_modules,
    register,
    unregister,
)
from quackmesh.workloads.results import check_result, float_list, int_list

WriteData = Callable[..., Path]
BUILT_IN = ["ml.kmeans", "ml.linear_regression", "ml.pca"]
MODULES = [
    "base",
    "compare",
    "data",
    "kmeans",
    "linear_regression",
    "npz",
    "pca",
    "registry",
    "results",
]


def _isort_key(name: str) -> tuple[int, str]:
    # ruff's RUF022 order: SCREAMING_CASE, then CamelCase, then everything else.
    group = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return group, name


@pytest.mark.parametrize("module", ["", *MODULES])
def test_all_is_sorted_and_every_name_exists(module: str) -> None:
    mod = importlib.import_module(f"quackmesh.workloads{'.' if module else ''}{module}")
    assert mod.__all__ == sorted(mod.__all__, key=_isort_key)
    assert len(set(mod.__all__)) == len(mod.__all__)
    for name in mod.__all__:
        assert hasattr(mod, name), name


def test_package_imports_nothing_above_its_layer() -> None:
    code = (
        "import sys, quackmesh.workloads\n"
        "bad = [m for m in sys.modules if m.split('.')[:2] in "
        "(['quackmesh', 'coordinator'], ['quackmesh', 'node'], ['quackmesh', 'sdk'], "
        "['quackmesh', 'cli'], ['quackmesh', 'ledger'], ['quackmesh', 'fl'])]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_built_in_kinds_are_registered() -> None:
    assert list_kinds() == sorted(list_kinds())
    assert set(BUILT_IN) <= set(list_kinds())
    for kind in BUILT_IN:
        workload = get_workload(kind)
        assert workload.kind == kind
        assert workload.input_names == ("data",)
        assert workload.description


def test_unknown_kind_is_a_validation_error_listing_known_kinds() -> None:
    with pytest.raises(ValidationFailed, match=r"unknown workload kind 'ml\.nope'") as info:
        get_workload("ml.nope")
    assert info.value.status == 422
    assert info.value.context["field"] == "kind"
    assert info.value.context["known"] == sorted(info.value.context["known"])
    assert set(BUILT_IN) <= set(info.value.context["known"])


def test_duplicate_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register(type(get_workload("ml.pca")))


def test_malformed_kind_is_refused() -> None:
    class Bad(Workload[BaseModel]):
        kind = "Not A Kind"
        spec_model = BaseModel

    with pytest.raises(ValueError, match="kind must match"):
        register(Bad)


# --- extra modules -----------------------------------------------------------------------

EXTRA_MODULE = '''
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from quackmesh.workloads import InputSummary, Workload, load_table, register


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    mode: str = "ok"


@register
class Echo(Workload[Spec]):
    """Sums the data; ``mode`` makes it misbehave (for sandbox tests)."""

    kind: ClassVar[str] = "{kind}"
    spec_model: ClassVar[type[BaseModel]] = Spec
    description: ClassVar[str] = "test workload"

    def check_inputs(self, spec, inputs):
        self.check_input_names(inputs)
        table = load_table(inputs["data"])
        return InputSummary(
            rows=table.rows, columns=len(table.columns), feature_names=table.columns,
            format=table.format,
        )

    def cost(self, spec, summary):
        return 1

    def run(self, spec, inputs) -> dict[str, Any]:
        total = load_table(inputs["data"]).values.sum()
        if spec.mode == "numpy":
            return {{"sum": np.float64(total), "n": np.int64(3)}}
        if spec.mode == "nan":
            return {{"sum": float("nan")}}
        if spec.mode == "list":
            return [float(total)]
        return {{"sum": float(total)}}

    def agree(self, a, b):
        return a == b
'''


@pytest.fixture
def extra_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An extra workload module on sys.path, named in QUACKMESH_WORKLOAD_MODULES."""
    suffix = uuid.uuid4().hex[:8]
    module, kind = f"qm_extra_{suffix}", f"test.echo_{suffix}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(EXTRA_MODULE.format(kind=kind)))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert kind not in list_kinds()
    monkeypatch.setenv(MODULES_ENV, f" {module} , ")
    yield kind
    with contextlib.suppress(KeyError):  # the import may have failed
        unregister(kind)
    sys.modules.pop(module, None)


def test_env_var_registers_extra_modules_lazily(extra_kind: str) -> None:
    assert extra_kind in list_kinds()
    assert get_workload(extra_kind).kind == extra_kind


def test_load_extra_modules_is_idempotent(extra_kind: str) -> None:
    first = load_extra_modules()
    assert load_extra_modules() == first
    assert list_kinds().count(extra_kind) == 1


def test_unimportable_extra_module_is_an_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MODULES_ENV, "qm_no_such_module_anywhere")
    with pytest.raises(ImportError, match="qm_no_such_module_anywhere"):
        list_kinds()


def test_execute_runs_an_extra_workload(extra_kind: str, write_data: WriteData) -> None:
    path = write_data(pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]}))
    assert get_workload(extra_kind).execute({}, {"data": path}) == {"sum": 10.0}


@pytest.mark.parametrize(
    ("mode", "match"),
    [("numpy", "float64 is not a plain JSON type"), ("nan", "not finite"), ("list", "not a dict")],
)
def test_execute_refuses_results_that_are_not_plain_json(
    extra_kind: str, write_data: WriteData, mode: str, match: str
) -> None:
    path = write_data(pd.DataFrame({"a": [1.0, 2.0]}))
    with pytest.raises(ValueError, match=match):
        get_workload(extra_kind).execute({"mode": mode}, {"data": path})


# --- the shared driver -------------------------------------------------------------------


def test_params_must_be_an_object() -> None:
    with pytest.raises(ValidationFailed, match="params must be a JSON object") as info:
        get_workload("ml.pca").parse_spec([1, 2])  # type: ignore[arg-type]
    assert info.value.context["field"] == "params"


def test_every_spec_error_is_listed() -> None:
    with pytest.raises(ValidationFailed, match=r"\(and 2 more\)") as info:
        get_workload("ml.kmeans").parse_spec({"n_clusters": -1, "n_init": 0, "colour": "red"})
    errors = info.value.context["errors"]
    assert [e["field"] for e in errors] == ["params.n_clusters", "params.n_init", "params.colour"]
    assert errors[2]["message"] == "Extra inputs are not permitted"
    json.dumps(info.value.to_problem())  # the problem body is JSON


def test_spec_is_frozen_and_parse_does_not_mutate_params() -> None:
    params = {"target": "y", "features": ["a"]}
    spec = get_workload("ml.linear_regression").parse_spec(params)
    with pytest.raises(ValueError):
        spec.target = "z"
    assert params == {"target": "y", "features": ["a"]}


@pytest.mark.parametrize("kind", BUILT_IN)
def test_missing_and_extra_input_names_are_refused(
    kind: str, iris: pd.DataFrame, write_data: WriteData
) -> None:
    workload = get_workload(kind)
    params = {"ml.kmeans": {"n_clusters": 2}, "ml.pca": {"n_components": 2}}.get(
        kind, {"target": "target"}
    )
    spec = workload.parse_spec(params)
    path = write_data(iris)
    with pytest.raises(ValidationFailed, match="missing input 'data'") as info:
        workload.check_inputs(spec, {})
    assert info.value.context["field"] == "inputs.data"
    with pytest.raises(ValidationFailed, match="unexpected input 'extra'") as info:
        workload.check_inputs(spec, {"data": path, "extra": path})
    assert info.value.context["field"] == "inputs.extra"
    with pytest.raises(ValidationFailed, match="missing input 'data'"):
        workload.run(spec, {"other": path})


@pytest.mark.parametrize("kind", BUILT_IN)
def test_cost_is_at_least_one(kind: str) -> None:
    workload = get_workload(kind)
    params = {"ml.kmeans": {"n_clusters": 1, "n_init": 1}, "ml.pca": {"n_components": 1}}.get(
        kind, {"target": "y"}
    )
    tiny = InputSummary(rows=1, columns=1, feature_names=("x",), format="csv")
    assert workload.cost(workload.parse_spec(params), tiny) == 1


def test_results_helpers_produce_plain_types() -> None:
    assert [type(v) for v in float_list(np.array([1, 2], dtype=np.float32), what="x")] == [
        float,
        float,
    ]
    assert [type(v) for v in int_list(np.array([1, 2], dtype=np.int64))] == [int, int]
    assert check_result({"a": [1, 2.5, "s", None, True]}, kind="k") == (
        b'{"a":[1,2.5,"s",null,true]}'
    )
    with pytest.raises(ValueError, match="key 1 is not a str"):
        check_result({1: 2}, kind="k")


def test_public_names_are_reexported() -> None:
    assert workloads.Workload is Workload
    assert isinstance(get_workload("ml.kmeans"), workloads.KMeans)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def test_workload_is_abstract() -> None:
    class Half(Workload[_Spec]):
        kind: ClassVar[str] = "test.half"
        spec_model: ClassVar[type[BaseModel]] = _Spec

        def cost(self, spec: _Spec, summary: InputSummary) -> int:
            return 1

    with pytest.raises(TypeError):
        Half()  # type: ignore[abstract]
