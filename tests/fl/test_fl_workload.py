"""``fl.local_train`` end to end on real files: safetensors model in, checked delta out."""

from __future__ import annotations

import base64
import hashlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from quackmesh.core.errors import ValidationFailed
from quackmesh.fl.data import Dataset, load_builtin, subset, write_csv
from quackmesh.fl.workload import FlLocalTrain
from quackmesh.fl.zoo import (
    ModelSpec,
    init_weights,
    weights_from_safetensors,
    weights_to_safetensors,
)
from quackmesh.workloads.registry import get_workload
from quackmesh.workloads.results import check_result

SPEC = ModelSpec(arch="logreg", n_features=64, n_classes=10)
PARAMS: dict[str, Any] = {
    "model": {"arch": "logreg", "n_features": 64, "n_classes": 10},
    "epochs": 1,
    "lr": 0.1,
    "seed": 5,
}


@pytest.fixture(autouse=True)
def _sandbox_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    # The sandbox sets OMP_NUM_THREADS; keep torch's current count so other tests see no change.
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))


@pytest.fixture(scope="module")
def part() -> Dataset:
    return subset(load_builtin("digits"), np.arange(400))


@pytest.fixture
def inputs(tmp_path: Path, part: Dataset) -> dict[str, Path]:
    model = tmp_path / "model"
    model.write_bytes(weights_to_safetensors(init_weights(SPEC, seed=0)))
    data = tmp_path / "data"
    write_csv(part, data)
    return {"model": model, "data": data}


def _delta(result: dict[str, Any]) -> dict[str, np.ndarray]:
    blob = base64.b64decode(result["delta"])
    assert hashlib.sha256(blob).hexdigest() == result["delta_sha256"]
    return weights_from_safetensors(blob, SPEC)


def test_registered_under_its_kind() -> None:
    workload = get_workload("fl.local_train")
    assert isinstance(workload, FlLocalTrain)
    assert workload.input_names == ("model", "data")


def test_execute_end_to_end_returns_a_plain_json_delta(inputs: dict[str, Path]) -> None:
    workload = FlLocalTrain()
    result = workload.execute(PARAMS, inputs)
    check_result(result, kind=workload.kind)
    assert set(result) == {"delta", "delta_sha256", "delta_norm", "n_examples", "loss", "accuracy"}
    assert result["n_examples"] == 400
    delta = _delta(result)
    norm = float(np.sqrt(sum(np.sum(v.astype(np.float64) ** 2) for v in delta.values())))
    assert result["delta_norm"] == pytest.approx(norm)
    assert result["accuracy"] > 0.5
    assert workload.agree(result, workload.execute(PARAMS, inputs))


def test_clip_norm_max_rows_and_summary(inputs: dict[str, Path]) -> None:
    workload = FlLocalTrain()
    params = {**PARAMS, "clip_norm": 0.25, "max_rows": 100}
    result = workload.execute(params, inputs)
    assert result["n_examples"] == 100
    assert result["delta_norm"] <= 0.25
    spec = workload.parse_spec(params)
    summary = workload.check_inputs(spec, inputs)
    assert (summary.rows, summary.columns, summary.format) == (100, 65, "csv")
    # 100 rows x 650 params x 1 epoch = 65,000 -> 1 unit; 400 x 650 x 10 -> 3 units.
    assert workload.cost(spec, summary) == 1
    big = workload.parse_spec({**PARAMS, "epochs": 10})
    assert workload.cost(big, workload.check_inputs(big, inputs)) == 3


def test_evaluate_only_returns_scores_without_delta(inputs: dict[str, Path]) -> None:
    workload = FlLocalTrain()
    result = workload.execute({**PARAMS, "evaluate_only": True}, inputs)
    assert set(result) == {"n_examples", "loss", "accuracy"}
    assert result["loss"] > 1.5  # an untrained model is near log(10) = 2.3
    assert workload.agree(result, dict(result))
    assert not workload.agree(result, {**result, "accuracy": result["accuracy"] + 0.1})


def test_agree_refuses_tampered_or_malformed_results(inputs: dict[str, Path]) -> None:
    workload = FlLocalTrain()
    result = workload.execute(PARAMS, inputs)
    other = workload.execute({**PARAMS, "seed": 6}, inputs)
    assert not workload.agree(result, other)
    assert not workload.agree(result, {**result, "n_examples": 399})
    assert not workload.agree(result, {**result, "delta_sha256": "0" * 64})
    delta = _delta(result)
    delta["out.bias"] = delta["out.bias"] + 0.01
    blob = weights_to_safetensors(delta)
    forged = {
        **result,
        "delta": base64.b64encode(blob).decode(),
        "delta_sha256": hashlib.sha256(blob).hexdigest(),
    }
    assert not workload.agree(result, forged)
    junk = base64.b64encode(b"not safetensors").decode()
    malformed: list[Any] = [
        {},
        {**result, "delta": 5},
        {**result, "delta": "!!"},
        {**result, "delta": junk, "delta_sha256": hashlib.sha256(b"not safetensors").hexdigest()},
        {**result, "n_examples": True},
        [],
    ]
    for bad in malformed:
        assert not workload.agree(result, bad)
        assert not workload.agree(bad, result)


def test_wrong_feature_count_is_refused(tmp_path: Path, inputs: dict[str, Path]) -> None:
    frame = pd.read_csv(inputs["data"]).iloc[:, 1:]  # 63 features + label
    short = tmp_path / "short.csv"
    frame.to_csv(short, index=False)
    with pytest.raises(ValidationFailed, match="63 feature columns") as info:
        FlLocalTrain().execute(PARAMS, {**inputs, "data": short})
    assert info.value.context["field"] == "inputs.data"


def test_label_out_of_range_is_refused(inputs: dict[str, Path]) -> None:
    params = {**PARAMS, "model": {**PARAMS["model"], "n_classes": 5}}
    weights = init_weights(ModelSpec(arch="logreg", n_features=64, n_classes=5), seed=0)
    inputs["model"].write_bytes(weights_to_safetensors(weights))
    with pytest.raises(ValidationFailed, match="out of range") as info:
        FlLocalTrain().execute(params, inputs)
    assert info.value.context == {"field": "inputs.data", "column": "label"}


def test_model_that_does_not_fit_or_is_a_pickle_is_refused(
    tmp_path: Path, inputs: dict[str, Path]
) -> None:
    other = init_weights(ModelSpec(arch="mlp", n_features=64, n_classes=10), seed=0)
    inputs["model"].write_bytes(weights_to_safetensors(other))
    with pytest.raises(ValidationFailed) as info:
        FlLocalTrain().execute(PARAMS, inputs)
    assert info.value.context["field"] == "inputs.model"
    inputs["model"].write_bytes(pickle.dumps({"out.weight": np.zeros((10, 64), np.float32)}))
    with pytest.raises(ValidationFailed, match="safetensors"):
        FlLocalTrain().execute(PARAMS, inputs)


def test_bad_params_name_the_field(inputs: dict[str, Path]) -> None:
    workload = FlLocalTrain()
    for params, field in [
        ({**PARAMS, "lr": "0.1"}, "params.lr"),
        ({**PARAMS, "unknown": 1}, "params.unknown"),
        ({**PARAMS, "model": {"arch": "cnn28", "n_features": 64, "n_classes": 10}}, "params.model"),
        ({**PARAMS, "label": "missing"}, "params.label"),
    ]:
        with pytest.raises(ValidationFailed) as info:
            workload.execute(params, inputs)
        assert info.value.context["field"] == field
