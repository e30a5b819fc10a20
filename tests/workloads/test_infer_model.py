"""``infer.model``: ONNX graphs built here with fixed weights against numpy, a federated zoo
model against torch, agree(), and the 422s at submission."""

from __future__ import annotations

import copy
import importlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import pandas as pd
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import convert_model_to_external_data

from quackmesh.core.errors import ValidationFailed
from quackmesh.fl.zoo import ModelSpec, build, init_weights, model_card, weights_to_safetensors
from quackmesh.workloads import get_workload, onnx_proto
from quackmesh.workloads.infer_model import ModelInputSummary, pack_tensors, unpack_tensors
from quackmesh.workloads.onnx_proto import OnnxInfo, OnnxOutput, read_onnx

WriteData = Callable[..., Path]
WL = get_workload("infer.model")

# A 2-feature, 3-class logistic regression: probabilities = softmax(x @ W + b).
W = np.array([[1.0, -1.0, 0.5], [0.5, 2.0, -1.0]], dtype=np.float32)  # (n_features, n_classes)
B = np.array([0.1, 0.0, -0.1], dtype=np.float32)


def _model(
    nodes: list[onnx.NodeProto],
    *,
    inputs: list[onnx.ValueInfoProto] | None = None,
    outputs: list[onnx.ValueInfoProto] | None = None,
    initializers: list[onnx.TensorProto] | None = None,
    opsets: list[onnx.OperatorSetIdProto] | None = None,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "test",
        inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        outputs or [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])],
        initializer=initializers
        if initializers is not None
        else [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "b")],
    )
    model = helper.make_model(graph, opset_imports=opsets or [helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def logreg(*, softmax: bool = True, batch: int | str = "N") -> onnx.ModelProto:
    out = "probabilities" if softmax else "logits"
    nodes = [helper.make_node("MatMul", ["x", "W"], ["z"])]
    nodes.append(helper.make_node("Add", ["z", "b"], ["l" if softmax else out]))
    if softmax:
        nodes.append(helper.make_node("Softmax", ["l"], [out], axis=1))
    model = _model(
        nodes,
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 2])],
        outputs=[helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, 3])],
    )
    onnx.checker.check_model(model)
    return model


def save(model: onnx.ModelProto, folder: Path, name: str = "model.onnx") -> Path:
    path = folder / name
    path.write_bytes(model.SerializeToString())
    return path


def reference(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    z = x.astype(np.float32) @ W + B  # (n, 3)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    out: npt.NDArray[np.float64] = (e / e.sum(axis=1, keepdims=True)).astype(np.float64)
    return out


@pytest.fixture
def rows() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(rng.normal(scale=2.0, size=(200, 2)), columns=["a", "b"])


def run(params: dict[str, Any], model: Path, data: Path) -> dict[str, Any]:
    return WL.execute(params, {"model": model, "data": data})


def arrays(result: dict[str, Any]) -> dict[str, npt.NDArray[Any]]:
    out = unpack_tensors(result["tensors"], result["tensors_sha256"])
    assert out is not None
    return out


def refused(params: dict[str, Any], model: Path, data: Path) -> ValidationFailed:
    """The 422 that submission (parse_spec, then check_inputs) raises."""
    with pytest.raises(ValidationFailed) as info:
        WL.check_inputs(WL.parse_spec(params), {"model": model, "data": data})
    return info.value


# --- ONNX --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "npz", "parquet"])
def test_onnx_logreg_predicts_like_numpy(
    fmt: str, rows: pd.DataFrame, write_data: WriteData, tmp_path: Path
) -> None:
    result = run({}, save(logreg(), tmp_path), write_data(rows, fmt))
    expected = reference(rows.to_numpy())
    probs = arrays(result)["probabilities"]
    assert probs.dtype == np.float32 and probs.shape == (200, 3)
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    assert result["classes"] == expected.argmax(axis=1).tolist()
    assert len(set(result["classes"])) == 3  # the data reaches every class
    assert result["scores"] == "probabilities" and result["output"] == "probabilities"
    assert result["rows"] == 200 and result["n_classes"] == 3
    assert result["feature_names"] == ["a", "b"] and result["atol"] == 1e-4


def test_logits_output_is_soft_maxed(
    rows: pd.DataFrame, write_data: WriteData, tmp_path: Path
) -> None:
    result = run({}, save(logreg(softmax=False), tmp_path), write_data(rows))
    assert result["scores"] == "logits"
    np.testing.assert_allclose(
        arrays(result)["probabilities"], reference(rows.to_numpy()), atol=1e-6
    )
    assert result["classes"] == reference(rows.to_numpy()).argmax(axis=1).tolist()


def test_fixed_batch_size_runs_in_padded_chunks(
    rows: pd.DataFrame, write_data: WriteData, tmp_path: Path
) -> None:
    data = write_data(rows.iloc[:10])  # 10 rows in batches of 4: the last one padded
    fixed = run({}, save(logreg(batch=4), tmp_path, "fixed.onnx"), data)
    dynamic = run({}, save(logreg(), tmp_path), data)
    assert fixed["rows"] == 10 and fixed["classes"] == dynamic["classes"]
    assert WL.agree(fixed, dynamic)


def test_multi_dimensional_input_takes_row_major_features(
    write_data: WriteData, tmp_path: Path
) -> None:
    # Input (N, 2, 2) flattened back to (N, 4), then summed: the value is the row's sum.
    shape = numpy_helper.from_array(np.array([-1, 4], dtype=np.int64), "shape")
    ones = numpy_helper.from_array(np.ones((4, 1), dtype=np.float32), "ones")
    model = _model(
        [helper.make_node("Reshape", ["x", "shape"], ["flat"]),
         helper.make_node("MatMul", ["flat", "ones"], ["y"])],
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 2])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        initializers=[shape, ones],
    )  # fmt: skip
    frame = pd.DataFrame({"p": [1.0, 2.0], "q": [3.0, 4.0], "r": [5.0, 6.0], "s": [7.0, 8.0]})
    result = run({"task": "regress"}, save(model, tmp_path), write_data(frame))
    assert arrays(result)["values"].reshape(-1).tolist() == [16.0, 20.0]
    assert result["scores"] == "values" and "classes" not in result


def test_regression_on_double_input_keeps_float64_and_scores_mse(
    write_data: WriteData, tmp_path: Path
) -> None:
    coef = numpy_helper.from_array(np.array([[2.0], [-1.0]]), "coef")  # float64
    model = _model(
        [helper.make_node("MatMul", ["x", "coef"], ["y"])],
        inputs=[helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["N", 2])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["N", 1])],
        initializers=[coef],
    )
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0.5, 0.25, 1e-9], "t": [1.5, 3.75, 7.0]})
    result = run({"task": "regress", "label": "t"}, save(model, tmp_path), write_data(frame))
    values = arrays(result)["values"]
    assert values.dtype == np.float64
    np.testing.assert_array_equal(values[:, 0], [1.5, 3.75, 6.0 - 1e-9])
    assert result["feature_names"] == ["a", "b"]
    assert result["mse"] == pytest.approx(1.0 / 3.0)


def test_label_is_left_out_and_scored(
    rows: pd.DataFrame, write_data: WriteData, tmp_path: Path
) -> None:
    expected = reference(rows.to_numpy()).argmax(axis=1)
    labelled = rows.assign(label=np.where(np.arange(200) < 150, expected, (expected + 1) % 3))
    result = run({"label": "label"}, save(logreg(), tmp_path), write_data(labelled))
    assert result["feature_names"] == ["a", "b"] and result["accuracy"] == 0.75


def test_labels_output_is_taken_as_classes(write_data: WriteData, tmp_path: Path) -> None:
    # skl2onnx-style: an int64 "label" output only; classes are the labels themselves.
    model = _model(
        [helper.make_node("MatMul", ["x", "W"], ["z"]),
         helper.make_node("ArgMax", ["z"], ["label"], axis=1, keepdims=0)],
        outputs=[helper.make_tensor_value_info("label", TensorProto.INT64, ["N"])],
        initializers=[numpy_helper.from_array(W, "W")],
    )  # fmt: skip
    frame = pd.DataFrame({"a": [1.0, 0.0, 2.0], "b": [0.0, 1.0, -1.0]})  # argmax 0, 1, 2
    result = run({}, save(model, tmp_path), write_data(frame))
    assert result["classes"] == [0, 1, 2] and result["scores"] == "labels"
    assert arrays(result) == {} and result["n_classes"] is None


def test_default_output_prefers_scores_over_labels(write_data: WriteData, tmp_path: Path) -> None:
    model = _model(
        [helper.make_node("MatMul", ["x", "W"], ["z"]),
         helper.make_node("Add", ["z", "b"], ["l"]),
         helper.make_node("ArgMax", ["l"], ["label"], axis=1, keepdims=0),
         helper.make_node("Softmax", ["l"], ["probabilities"], axis=1)],
        outputs=[helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
                 helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])],
    )  # fmt: skip
    data = write_data(pd.DataFrame({"a": [1.0, -2.0], "b": [0.0, 1.0]}))
    path = save(model, tmp_path)
    assert run({}, path, data)["output"] == "probabilities"
    named = run({"output": "label"}, path, data)
    assert named["scores"] == "labels" and named["classes"] == run({}, path, data)["classes"]


# --- federated zoo models --------------------------------------------------------------


def test_zoo_model_saved_as_fl_saves_it_predicts_like_torch(
    write_data: WriteData, tmp_path: Path
) -> None:
    spec = ModelSpec(arch="mlp", n_features=6, n_classes=4, hidden=(16, 8))
    weights = init_weights(spec, seed=3)
    model = tmp_path / "model.safetensors"  # what GET /v1/fl/jobs/{id}/model serves
    model.write_bytes(weights_to_safetensors(weights))
    card = json.loads(json.dumps(model_card(spec, extra={})))  # the card, as JSON
    arch = {k: card[k] for k in ("arch", "n_features", "n_classes", "hidden")}
    x = np.random.default_rng(1).normal(size=(64, 6))
    data = write_data(pd.DataFrame(x, columns=[f"f{i}" for i in range(6)]))
    result = run({"format": "zoo", "architecture": arch, "batch_size": 10}, model, data)

    module = build(spec)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    with torch.inference_mode():
        expected = torch.softmax(module(torch.from_numpy(x.astype(np.float32))), dim=1).numpy()
    np.testing.assert_allclose(arrays(result)["probabilities"], expected, atol=1e-6)
    assert result["classes"] == expected.argmax(axis=1).tolist()
    assert result["scores"] == "logits" and result["output"] == "logits"
    spec_params = WL.parse_spec({"format": "zoo", "architecture": arch})
    summary = WL.check_inputs(spec_params, {"model": model, "data": data})
    assert (
        isinstance(summary, ModelInputSummary)
        and summary.n_params == 6 * 16 + 16 + 16 * 8 + 8 + 8 * 4 + 4
    )
    assert WL.cost(spec_params, summary) == 1


def test_zoo_weights_that_do_not_match_the_card_are_refused(
    rows: pd.DataFrame, write_data: WriteData, tmp_path: Path
) -> None:
    model = tmp_path / "model.safetensors"
    model.write_bytes(
        weights_to_safetensors(
            init_weights(ModelSpec(arch="logreg", n_features=2, n_classes=5), seed=0)
        )
    )
    arch = {"arch": "logreg", "n_features": 2, "n_classes": 3}
    exc = refused({"format": "zoo", "architecture": arch}, model, write_data(rows))
    assert exc.context["field"] == "inputs.model"


# --- agree() ------------------------------------------------------------------------------


@pytest.fixture
def result(rows: pd.DataFrame, write_data: WriteData, tmp_path: Path) -> dict[str, Any]:
    return run({}, save(logreg(), tmp_path), write_data(rows))


def _with_probs(result: dict[str, Any], probs: npt.NDArray[Any]) -> dict[str, Any]:
    out = copy.deepcopy(result)
    out["tensors"], out["tensors_sha256"] = pack_tensors({"probabilities": probs})
    return out


def test_agree_accepts_equal_results_and_noise_within_atol(result: dict[str, Any]) -> None:
    assert WL.agree(result, copy.deepcopy(result))
    probs = arrays(result)["probabilities"]
    assert WL.agree(result, _with_probs(result, probs + np.float32(5e-5)))


def test_agree_rejects_a_wrong_test_nodes_perturbed_result(result: dict[str, Any]) -> None:
    from quackmesh.node.agent import perturb

    assert not WL.agree(result, perturb(result, 0.3)) and not WL.agree(perturb(result, 0.3), result)


def test_agree_rejects_a_changed_class(result: dict[str, Any]) -> None:
    other = copy.deepcopy(result)
    other["classes"][7] = (other["classes"][7] + 1) % 3
    assert not WL.agree(result, other)


def test_agree_rejects_probabilities_beyond_atol(result: dict[str, Any]) -> None:
    probs = arrays(result)["probabilities"].copy()
    probs[3, 0] += 1e-3
    assert not WL.agree(result, _with_probs(result, probs))
    looser = _with_probs(result, probs) | {"atol": 1e-2}
    assert not WL.agree(result, looser)  # one side cannot loosen the tolerance alone


@pytest.mark.parametrize(
    "damage",
    [
        lambda r: r.pop("classes"),
        lambda r: r.update(tensors_sha256="0" * 64),
        lambda r: r.update(tensors="not base64!"),
        lambda r: r.update(rows=r["rows"] + 1),
        lambda r: r.update(feature_names=["b", "a"]),
        lambda r: r.update(classes=[float(c) for c in r["classes"]]),
        lambda r: r.update(atol=0.5),
    ],
)
def test_agree_rejects_malformed_results(
    result: dict[str, Any], damage: Callable[[dict[str, Any]], Any]
) -> None:
    other = copy.deepcopy(result)
    damage(other)
    assert not WL.agree(result, other) and not WL.agree(other, result)


# --- refusals at submission (422 naming the field) ---------------------------------------


def test_feature_count_mismatch_is_refused_naming_the_data(
    write_data: WriteData, tmp_path: Path
) -> None:
    data = write_data(pd.DataFrame({"a": [1.0], "b": [2.0], "c": [3.0]}))
    exc = refused({}, save(logreg(), tmp_path), data)
    assert exc.context["field"] == "inputs.data"
    assert "3 feature columns, the model takes 2" in exc.detail
    exc = refused({"features": ["a"]}, save(logreg(), tmp_path), data)
    assert exc.context["field"] == "params.features"


def test_external_data_is_refused(
    rows: pd.DataFrame, write_data: WriteData, tmp_path: Path
) -> None:
    model = logreg()
    convert_model_to_external_data(model, location="weights.bin", size_threshold=0)
    exc = refused({}, save(model, tmp_path), write_data(rows))
    assert exc.context["field"] == "inputs.model" and "external data" in exc.detail


def test_custom_op_domains_are_refused(
    rows: pd.DataFrame, write_data: WriteData, tmp_path: Path
) -> None:
    model = _model(
        [helper.make_node("MyOp", ["x"], ["probabilities"], domain="com.example.ops")],
        initializers=[],
        opsets=[helper.make_opsetid("", 17), helper.make_opsetid("com.example.ops", 1)],
    )
    exc = refused({}, save(model, tmp_path), write_data(rows))
    assert exc.context["field"] == "inputs.model" and "com.example.ops" in exc.detail


def test_oversized_models_are_refused(
    rows: pd.DataFrame, write_data: WriteData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_proto, "MAX_MODEL_BYTES", 100)
    exc = refused({}, save(logreg(), tmp_path), write_data(rows))
    assert exc.context["field"] == "inputs.model" and "more than the limit" in exc.detail


@pytest.mark.parametrize(
    "blob",
    [b"a,b\n1,2\n", b"\x08\x09", b"\xff" * 64, b"\x80\x04\x95cos\nsystem\n"],
    ids=["csv", "truncated", "garbage", "pickle"],
)
def test_files_that_are_not_onnx_are_refused(
    blob: bytes, rows: pd.DataFrame, write_data: WriteData, tmp_path: Path
) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(blob)
    exc = refused({}, path, write_data(rows))
    assert exc.context["field"] == "inputs.model"


def test_read_onnx_reports_the_input_outputs_and_parameter_count() -> None:
    info = read_onnx(logreg(batch=8).SerializeToString())
    assert info == OnnxInfo(
        input_name="x",
        input_elem=TensorProto.FLOAT,
        input_shape=(8, 2),
        outputs=(OnnxOutput(name="probabilities", elem=TensorProto.FLOAT, shape=(8, 3)),),
        n_params=9,  # W (2, 3) and b (3,)
    )
    assert info.n_features == 2 and info.batch == 8
    assert read_onnx(logreg().SerializeToString()).batch is None  # symbolic "N"


def test_models_with_two_inputs_or_symbolic_features_are_refused(
    rows: pd.DataFrame, write_data: WriteData, tmp_path: Path
) -> None:
    two = _model(
        [helper.make_node("Add", ["x", "y"], ["probabilities"])],
        inputs=[helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 2]) for n in "xy"],
        initializers=[],
    )
    assert "exactly one" in refused({}, save(two, tmp_path), write_data(rows)).detail
    wide = _model(
        [helper.make_node("Identity", ["x"], ["probabilities"])],
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "F"])],
        initializers=[],
    )
    assert "fixed sizes" in refused({}, save(wide, tmp_path), write_data(rows)).detail


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"format": "zoo"}, "params.architecture"),
        ({"architecture": {"arch": "logreg", "n_features": 2, "n_classes": 3}}, "params.architecture"),
        ({"format": "zoo", "architecture": {"arch": "logreg", "n_features": 0, "n_classes": 3}},
         "params.architecture"),
        ({"format": "zoo", "architecture": {"arch": "logreg", "n_features": 2, "n_classes": 3},
          "task": "regress"}, "params.task"),
        ({"output": "nope"}, "params.output"),
        ({"label": "nope"}, "params.label"),
        ({"atol": 0.5}, "params.atol"),
        ({"format": "pickle"}, "params.format"),
    ],
)  # fmt: skip
def test_bad_params_are_refused_naming_the_field(
    params: dict[str, Any], field: str, rows: pd.DataFrame, write_data: WriteData, tmp_path: Path
) -> None:
    exc = refused(params, save(logreg(), tmp_path), write_data(rows))
    assert exc.context["field"] == field, exc.detail


def test_cost_is_parameter_rows_over_a_million(
    rows: pd.DataFrame, write_data: WriteData, tmp_path: Path
) -> None:
    spec = WL.parse_spec({})
    summary = WL.check_inputs(spec, {"model": save(logreg(), tmp_path), "data": write_data(rows)})
    assert isinstance(summary, ModelInputSummary) and summary.n_params == 9 and summary.rows == 200
    assert WL.cost(spec, summary) == 1
    big = ModelInputSummary(
        rows=400_000, columns=2, feature_names=("a", "b"), format="csv", n_params=9
    )
    assert WL.cost(spec, big) == 4  # ceil(3.6)


def test_submission_checks_never_start_onnxruntime_or_torch(tmp_path: Path) -> None:
    model = save(logreg(), tmp_path)
    data = tmp_path / "x.csv"
    data.write_text("a,b\n1,2\n")
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from quackmesh.workloads import get_workload\n"
        "wl = get_workload('infer.model')\n"
        f"s = wl.check_inputs(wl.parse_spec({{}}), {{'model': Path({str(model)!r}), "
        f"'data': Path({str(data)!r})}})\n"
        "print(s.rows, 'onnxruntime' in sys.modules, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "False", "False"]


def test_all_is_sorted_and_every_name_exists() -> None:
    for name in ("infer_model", "infer_embed", "onnx_proto"):
        mod = importlib.import_module(f"quackmesh.workloads.{name}")
        key = [(0 if n.isupper() else 1 if n[:1].isupper() else 2, n) for n in mod.__all__]
        assert key == sorted(key)
        assert all(hasattr(mod, n) for n in mod.__all__)
