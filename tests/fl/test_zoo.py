"""The model zoo: declared shapes, deterministic init, and safetensors that are checked."""

from __future__ import annotations

import importlib
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.numpy
import torch
from pydantic import ValidationError

from quackmesh.core.errors import ValidationFailed
from quackmesh.fl.zoo import (
    MAX_PARAMS,
    ModelError,
    ModelSpec,
    build,
    count_params,
    init_weights,
    max_model_bytes,
    model_card,
    param_shapes,
    weights_from_safetensors,
    weights_to_safetensors,
)

SPECS = {
    "logreg": ModelSpec(arch="logreg", n_features=64, n_classes=10),
    "mlp": ModelSpec(arch="mlp", n_features=64, n_classes=10, hidden=(32, 16)),
    "cnn28": ModelSpec(arch="cnn28", n_features=784, n_classes=10),
    "cnn1d": ModelSpec(arch="cnn1d", n_features=40, n_classes=3),
}


def _isort_key(name: str) -> tuple[int, str]:
    # ruff's RUF022 order: SCREAMING_CASE, then CamelCase, then everything else.
    group = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return group, name


@pytest.mark.parametrize("module", ["zoo", "data", "train", "workload"])
def test_all_is_sorted_and_every_name_exists(module: str) -> None:
    mod = importlib.import_module(f"quackmesh.fl.{module}")
    assert list(mod.__all__) == sorted(mod.__all__, key=_isort_key)
    assert len(set(mod.__all__)) == len(mod.__all__)
    assert all(hasattr(mod, name) for name in mod.__all__)


def test_param_shapes_per_arch() -> None:
    assert param_shapes(SPECS["logreg"]) == {"out.weight": (10, 64), "out.bias": (10,)}
    assert param_shapes(SPECS["mlp"]) == {
        "fc1.weight": (32, 64),
        "fc1.bias": (32,),
        "fc2.weight": (16, 32),
        "fc2.bias": (16,),
        "out.weight": (10, 16),
        "out.bias": (10,),
    }
    cnn28 = param_shapes(SPECS["cnn28"])
    assert cnn28["conv1.weight"] == (8, 1, 5, 5)
    assert cnn28["conv2.weight"] == (16, 8, 3, 3)
    assert cnn28["fc.weight"] == (32, 16 * 7 * 7)
    assert cnn28["out.weight"] == (10, 32)
    assert param_shapes(SPECS["cnn1d"])["conv1.weight"] == (8, 1, 5)
    assert 10_000 < count_params(SPECS["cnn28"]) < 100_000
    assert count_params(SPECS["cnn1d"]) < 20_000


@pytest.mark.parametrize("arch", sorted(SPECS))
def test_build_matches_declared_shapes_and_maps_features_to_logits(arch: str) -> None:
    spec = SPECS[arch]
    module = build(spec)
    state = module.state_dict()
    assert list(state) == list(param_shapes(spec))
    assert {k: tuple(v.shape) for k, v in state.items()} == param_shapes(spec)
    assert count_params(spec) == sum(p.numel() for p in module.parameters())
    out = module(torch.zeros(3, spec.n_features))
    assert tuple(out.shape) == (3, spec.n_classes)


def test_init_weights_is_deterministic_and_leaves_global_rng_alone() -> None:
    spec = SPECS["mlp"]
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = init_weights(spec, seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = init_weights(spec, seed=7)
    c = init_weights(spec, seed=8)
    assert all(v.dtype == np.float32 for v in a.values())
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["fc1.weight"], c["fc1.weight"])


@pytest.mark.parametrize("arch", sorted(SPECS))
def test_safetensors_round_trip(arch: str) -> None:
    spec = SPECS[arch]
    weights = init_weights(spec, seed=1)
    data = weights_to_safetensors(weights)
    assert data == weights_to_safetensors(weights)  # deterministic bytes
    back = weights_from_safetensors(data, spec)
    assert list(back) == list(param_shapes(spec))
    for name, arr in weights.items():
        np.testing.assert_array_equal(back[name], arr)


def _error(data: bytes, spec: ModelSpec = SPECS["logreg"]) -> ModelError:
    with pytest.raises(ModelError) as info:
        weights_from_safetensors(data, spec)
    assert isinstance(info.value, ValidationFailed)
    assert info.value.context["field"] == "model"
    return info.value


def test_rejects_extra_and_missing_tensor_names() -> None:
    weights = init_weights(SPECS["logreg"], seed=0)
    extra = {**weights, "backdoor.weight": np.zeros(3, dtype=np.float32)}
    assert "backdoor.weight" in _error(weights_to_safetensors(extra)).context["unexpected"]
    missing = {"out.weight": weights["out.weight"]}
    assert _error(weights_to_safetensors(missing)).context["missing"] == ["out.bias"]


def test_rejects_wrong_shape_float64_and_nan() -> None:
    weights = init_weights(SPECS["logreg"], seed=0)
    wrong_shape = {**weights, "out.bias": np.zeros(11, dtype=np.float32)}
    assert "shape" in _error(weights_to_safetensors(wrong_shape)).detail
    as_f64 = {k: v.astype(np.float64) for k, v in weights.items()}
    assert "float32" in _error(weights_to_safetensors(as_f64)).detail
    nan = {k: v.copy() for k, v in weights.items()}
    nan["out.weight"][0, 0] = np.nan
    assert "NaN" in _error(weights_to_safetensors(nan)).detail


class _Boom:
    """Unpickling this writes a marker file: proof that the loader ran pickle."""

    marker: Path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "unpickled!"))


def test_pickle_disguised_as_model_is_refused_and_never_unpickled(tmp_path: Path) -> None:
    boom = _Boom()
    boom.marker = tmp_path / "pwned"
    payload = pickle.dumps({"out.weight": boom})
    torch_style = tmp_path / "model.pt"
    torch.save({"out.weight": torch.zeros(10, 64)}, torch_style)
    for data in (payload, torch_style.read_bytes(), b"", b"\x08" + b"\x00" * 7 + b"{}"):
        _error(data)
    assert not boom.marker.exists()


def test_oversized_file_is_refused_before_parsing() -> None:
    spec = SPECS["logreg"]
    data = b"\x00" * (max_model_bytes(spec) + 1)
    assert "bytes" in _error(data, spec).detail


def test_spec_validation() -> None:
    with pytest.raises(ValidationError, match="784"):
        ModelSpec(arch="cnn28", n_features=64, n_classes=10)
    with pytest.raises(ValidationError, match="only to arch 'mlp'"):
        ModelSpec.model_validate({"arch": "logreg", "n_features": 4, "n_classes": 2, "hidden": [8]})
    with pytest.raises(ValidationError, match="limit"):
        ModelSpec(arch="mlp", n_features=100_000, n_classes=10, hidden=(4096,))
    with pytest.raises(ValidationError):
        ModelSpec.model_validate({"arch": "mlp", "n_features": "64", "n_classes": 10})
    with pytest.raises(ValidationError):
        ModelSpec.model_validate({"arch": "rnn", "n_features": 4, "n_classes": 2})
    with pytest.raises(ValidationError):
        ModelSpec(arch="mlp", n_features=4, n_classes=2, hidden=(8, 8, 8, 8, 8))
    ok = ModelSpec.model_validate({"arch": "mlp", "n_features": 4, "n_classes": 2, "hidden": [8]})
    assert ok.hidden == (8,)
    # A dumped spec validates again (the default hidden is accepted for every arch).
    logreg = SPECS["logreg"]
    assert ModelSpec.model_validate(logreg.model_dump()) == logreg
    assert count_params(ModelSpec(arch="mlp", n_features=4096, n_classes=10)) < MAX_PARAMS


def test_model_card_is_json() -> None:
    card = model_card(SPECS["cnn28"], extra={"dataset": "mnist"})
    assert json.loads(json.dumps(card)) == card
    assert card["n_params"] == count_params(SPECS["cnn28"])
    assert card["param_shapes"]["conv1.weight"] == [8, 1, 5, 5]
    assert "(N, 1, 28, 28)" in card["input"]
    assert card["extra"] == {"dataset": "mnist"}


def test_weights_to_safetensors_is_plain_safetensors() -> None:
    weights = init_weights(SPECS["logreg"], seed=0)
    loaded = safetensors.numpy.load(weights_to_safetensors(weights))
    assert sorted(loaded) == sorted(weights)
