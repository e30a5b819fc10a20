"""``infer.model``: batch prediction with a trained model, ONNX or a federated zoo model.

Inputs: ``model`` (the artefact) and ``data`` (CSV / NPZ / Parquet, read by
:mod:`quackmesh.workloads.data`; ``params.features`` picks columns, ``params.label`` leaves
one out and scores the predictions against it). Two artefact formats (``params.format``):

``onnx``
    An `ONNX <https://onnx.ai/onnx/repo-docs/IR.html>`_ model file, run with ONNX Runtime
    on its CPU provider. Exactly one graph input, float or double, shaped ``(batch, d1,
    ...)`` with fixed ``d1 ...`` (the data's feature columns, row-major); the batch dimension
    may be symbolic or fixed (fixed: the rows run in padded chunks of that size). Refused
    with a 422 at submission, from the file's protobuf alone
    (:func:`~quackmesh.workloads.onnx_proto.read_onnx`, nothing is executed on the
    coordinator): more than ``MAX_MODEL_BYTES``, tensors stored as external data (they would
    name files on the node), operators outside the ONNX, ONNX-ML and ONNX Runtime domains (no
    custom-op libraries are ever registered), a feature count that does not match the input
    shape.
``zoo``
    A model trained by an ``fl.train`` job: the safetensors weights it publishes
    (``GET /v1/fl/jobs/{id}/model``, ``quackmesh train --out FILE``) and, in
    ``params.architecture``, the ``arch``, ``n_features``, ``n_classes`` and ``hidden`` of
    its model card (``FILE.card.json``); see :mod:`quackmesh.fl.zoo`. Run with torch.

Session options (ONNX): intra-op threads from the sandbox's ``OMP_NUM_THREADS`` (default
1), one inter-op thread, sequential execution, no spinning, deterministic kernels, and
graph optimisation at ``ORT_ENABLE_BASIC`` only: the extended levels fuse nodes and change
memory layouts per CPU instruction set, so two honest nodes could round differently.

``task="classify"``: the output ``params.output`` (default: the first float output of rank
2, else the first output) is class scores ``(N, C >= 2)`` or labels ``(N,)``. Scores are
taken as probabilities when every row lies in [0, 1] and sums to 1 (``scores="auto"``),
else as logits and soft-maxed; ``classes`` is the argmax of the raw output. Zoo models give
logits. ``task="regress"``: the output as values (float32/float64 kept).

Result (plain JSON; arrays travel as base64 safetensors, as ``fl.local_train`` deltas do)::

    {"format", "task", "rows", "feature_names", "output", "scores" ("probabilities",
     "logits", "labels" or "values"), "classes": [int] (classify), "n_classes",
     "tensors": base64 safetensors ({"probabilities": float32 (N, C)} or {"values": ...}),
     "tensors_sha256", "atol", and with params.label "accuracy" or "mse"}

Cost, in compute units (one unit ~ a million parameter-rows, as for federated training)::

    units = max(1, ceil(rows * n_params / 1_000_000))

``n_params`` counts the ONNX initializers' elements, or the zoo model's parameters.

``agree()``: same format, task, rows, features, output and ``atol``; classes exactly equal;
every tensor value within ``atol * max(1, |a|, |b|)`` (``atol`` defaults to 1e-4, so for
probabilities that is plain ``atol``). A near-tie between two classes can flip an argmax on
another CPU; such rare rows make honest results disagree rather than letting wrong ones pass.

Imports stay light (numpy, safetensors): ONNX Runtime and torch load only when a task needs
them, so an ONNX job never imports torch and the coordinator never starts ONNX Runtime.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
import safetensors.numpy
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from quackmesh.core.errors import ValidationFailed
from quackmesh.workloads.base import InputSummary, Workload, ceil_div, format_loc
from quackmesh.workloads.compare import get_all, same_strings, scalar_of
from quackmesh.workloads.data import DataFormat, load_table, select_features
from quackmesh.workloads.onnx_proto import (
    ELEM_DTYPES,
    MAX_MODEL_BYTES,
    MODEL_FIELD,
    OnnxInfo,
    OnnxOutput,
    read_onnx,
)
from quackmesh.workloads.registry import register

__all__ = [
    "MAX_MODEL_BYTES",
    "MAX_OUTPUT_VALUES",
    "InferModel",
    "InferModelSpec",
    "ModelInputSummary",
    "pack_tensors",
    "unpack_tensors",
]

MAX_OUTPUT_VALUES = 8_000_000
"""Output values per job: 8M float32 is ~43 MB of base64, inside the 64 MiB result cap."""
MAX_ATOL = 0.1
_FLOAT_ELEMS = frozenset({1, 10, 11, 16})  # float, float16, double, bfloat16


class InferModelSpec(BaseModel):
    """Params of ``infer.model``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    format: Literal["onnx", "zoo"] = "onnx"
    architecture: dict[str, Any] | None = Field(
        default=None, description="zoo only: arch, n_features, n_classes, hidden (model card)"
    )
    task: Literal["classify", "regress"] = "classify"
    output: str | None = Field(default=None, min_length=1, max_length=256)
    scores: Literal["auto", "probabilities", "logits"] = "auto"
    features: list[str] | None = Field(default=None, min_length=1)
    label: str | None = Field(default=None, min_length=1, description="left out; scored on")
    batch_size: int = Field(default=1024, ge=1, le=65536)
    atol: float = Field(default=1e-4, gt=0, le=MAX_ATOL, allow_inf_nan=False)

    @field_validator("architecture")
    @classmethod
    def _zoo_spec(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        from quackmesh.fl.zoo import ModelSpec  # imports torch: only for zoo jobs

        try:
            spec = ModelSpec.model_validate(value)
        except ValidationError as exc:
            err = exc.errors(include_url=False, include_input=False)[0]
            where = format_loc(err["loc"], prefix="").lstrip(".")
            raise ValueError(f"{where}: {err['msg']}" if where else err["msg"]) from exc
        return spec.model_dump(mode="json")


@dataclass(frozen=True)
class ModelInputSummary(InputSummary):
    """An :class:`InputSummary` plus the model's parameter count, for :meth:`cost`."""

    n_params: int = 0


# --- tensors in results ----------------------------------------------------------------


def pack_tensors(tensors: Mapping[str, npt.NDArray[Any]]) -> tuple[str, str]:
    """``(base64 of safetensors bytes, sha256 hex of those bytes)``; deterministic."""
    blob = bytes(safetensors.numpy.save({k: np.ascontiguousarray(v) for k, v in tensors.items()}))
    return base64.b64encode(blob).decode("ascii"), hashlib.sha256(blob).hexdigest()


def unpack_tensors(value: Any, digest: Any) -> dict[str, npt.NDArray[Any]] | None:
    """The tensors of a result, or ``None`` if malformed or not matching ``digest``."""
    if type(value) is not str or type(digest) is not str:
        return None
    try:
        blob = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    if hashlib.sha256(blob).hexdigest() != digest:
        return None
    try:
        return dict(safetensors.numpy.load(blob))
    except Exception:  # untrusted bytes: any parse failure means "malformed"
        return None


# --- loading -----------------------------------------------------------------------------


def _pick_output(spec: InferModelSpec, info: OnnxInfo) -> OnnxOutput:
    """The output named by ``params.output``, or the default described in the module docs."""
    if spec.output is not None:
        named = [o for o in info.outputs if o.name == spec.output]
        if not named:
            raise ValidationFailed(
                f"model has no output {spec.output!r}",
                field="params.output",
                available=[o.name for o in info.outputs],
            )
        out = named[0]
    else:
        floats = [o for o in info.outputs if o.elem in _FLOAT_ELEMS]
        if spec.task == "classify":  # class scores (N, C) before labels (skl2onnx: both)
            floats = [o for o in floats if o.shape is None or len(o.shape) == 2] or floats
        out = (floats or list(info.outputs))[0]
    if out.elem in (0, 8):  # a sequence or map (ZipMap), or strings
        raise ValidationFailed(
            f"model output {out.name!r} is not a numeric tensor; name another with params.output",
            field="params.output",
            available=[o.name for o in info.outputs],
        )
    return out


@dataclass(frozen=True)
class _Loaded:
    blob: bytes
    x: npt.NDArray[np.float64]  # (n_rows, n_features)
    names: tuple[str, ...]
    y: npt.NDArray[np.float64] | None  # the label column, when params.label is set
    n_params: int
    format: DataFormat
    onnx: OnnxInfo | None
    output: OnnxOutput | None
    weights: Mapping[str, npt.NDArray[np.float32]] | None  # zoo: the checked tensors


def _read_blob(path: Path, cap: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            blob = fh.read(cap + 1)  # one byte past the cap is enough to refuse it
    except OSError as exc:
        raise ValidationFailed(f"cannot read model file: {exc}", field=MODEL_FIELD) from exc
    if not blob:
        raise ValidationFailed("model file is empty", field=MODEL_FIELD)
    return blob


def _load(spec: InferModelSpec, inputs: Mapping[str, Path]) -> _Loaded:
    """The checked model bytes and data; every mismatch is a 422 naming the field."""
    table = load_table(inputs["data"])
    y = None
    if spec.label is not None:
        if spec.label not in table.columns:
            raise ValidationFailed(
                f"label column {spec.label!r} not found in data",
                field="params.label",
                available=list(table.columns),
            )
        y = np.asarray(table.values[:, table.columns.index(spec.label)])
    x, names = select_features(table, spec.features, exclude=spec.label)
    info, output, weights = None, None, None
    if spec.format == "onnx":
        blob = _read_blob(inputs["model"], MAX_MODEL_BYTES)
        info = read_onnx(blob)
        output = _pick_output(spec, info)
        expected, n_params = info.n_features, info.n_params
        width = output.shape[1] if output.shape and len(output.shape) == 2 else 1
    else:
        from quackmesh.fl.zoo import (
            ModelSpec,
            count_params,
            max_model_bytes,
            weights_from_safetensors,
        )

        arch = ModelSpec.model_validate(spec.architecture)
        blob = _read_blob(inputs["model"], max_model_bytes(arch))
        weights = weights_from_safetensors(blob, arch, field=MODEL_FIELD)
        expected, n_params, width = arch.n_features, count_params(arch), arch.n_classes
    if x.shape[1] != expected:
        raise ValidationFailed(
            f"data has {x.shape[1]} feature columns, the model takes {expected}",
            field="params.features" if spec.features is not None else "inputs.data",
            expected=expected,
            actual=int(x.shape[1]),
            feature_names=list(names),
        )
    if x.shape[0] * (width or 1) > MAX_OUTPUT_VALUES:
        raise _too_many_outputs(x.shape[0] * (width or 1))
    return _Loaded(blob, x, names, y, n_params, table.format, info, output, weights)


def _too_many_outputs(count: int) -> ValidationFailed:
    return ValidationFailed(
        f"predictions would hold {count} values, more than the limit of {MAX_OUTPUT_VALUES}: "
        "split the data",
        field="inputs.data",
        max_values=MAX_OUTPUT_VALUES,
    )


def _env_threads() -> int:
    raw = os.environ.get("OMP_NUM_THREADS", "")
    return int(raw) if raw.isdigit() and int(raw) >= 1 else 1


# --- running -----------------------------------------------------------------------------


def _run_onnx(spec: InferModelSpec, loaded: _Loaded) -> npt.NDArray[Any]:
    """The chosen output for every row; ``(n_rows, ...)``."""
    import onnxruntime as ort

    info, output = loaded.onnx, loaded.output
    if info is None or output is None:
        raise ValueError("not an ONNX job")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = _env_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.use_deterministic_compute = True
    opts.log_severity_level = 3  # errors reach us as exceptions; no warnings on stderr
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(
            loaded.blob, sess_options=opts, providers=["CPUExecutionProvider"]
        )
    except MemoryError:
        raise
    except Exception as exc:  # ONNX Runtime's errors are plain Exception subclasses
        raise ValidationFailed(
            f"model does not load in ONNX Runtime: {exc}", field=MODEL_FIELD
        ) from exc
    n = loaded.x.shape[0]
    step = info.batch or spec.batch_size
    x = loaded.x.astype(ELEM_DTYPES[info.input_elem]).reshape(n, *info.input_shape[1:])
    parts = []
    for start in range(0, n, step):
        chunk = x[start : start + step]
        rows = chunk.shape[0]
        if info.batch is not None and rows < step:  # a fixed batch size: pad with zeros
            chunk = np.concatenate([chunk, np.zeros((step - rows, *chunk.shape[1:]), x.dtype)])
        try:
            (out,) = session.run([output.name], {info.input_name: chunk})
        except MemoryError:
            raise
        except Exception as exc:
            raise ValidationFailed(f"model failed on the data: {exc}", field=MODEL_FIELD) from exc
        out = np.asarray(out)
        if out.ndim == 0 or out.shape[0] != chunk.shape[0]:
            raise ValidationFailed(
                f"model output {output.name!r} has shape {out.shape}, not one row per input",
                field="params.output",
            )
        parts.append(out[:rows])
    return np.concatenate(parts)


def _run_zoo(spec: InferModelSpec, loaded: _Loaded) -> npt.NDArray[np.float32]:
    """Logits ``(n_rows, n_classes)`` of the zoo model, in float32 batches."""
    import torch

    from quackmesh.fl.train import set_threads
    from quackmesh.fl.zoo import ModelSpec, build

    if loaded.weights is None:
        raise ValueError("not a zoo job")
    if "OMP_NUM_THREADS" in os.environ:
        set_threads(_env_threads())
    module = build(ModelSpec.model_validate(spec.architecture))
    state = {k: torch.from_numpy(v) for k, v in loaded.weights.items()}
    module.load_state_dict(state, strict=True)
    module.eval()
    x = torch.from_numpy(np.array(loaded.x, dtype=np.float32, order="C"))
    with torch.inference_mode():
        parts = [
            module(x[i : i + spec.batch_size]).numpy()
            for i in range(0, x.shape[0], spec.batch_size)
        ]
    return np.concatenate(parts).astype(np.float32)


def _softmax(z: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    out: npt.NDArray[np.float64] = e / e.sum(axis=1, keepdims=True)
    return out


def _is_probabilities(p: npt.NDArray[Any]) -> bool:
    return bool(
        np.all(p >= -1e-6) and np.all(p <= 1 + 1e-6) and np.allclose(p.sum(axis=1), 1, atol=1e-4)
    )


def _finite(arr: npt.NDArray[Any], what: str) -> None:
    if not np.all(np.isfinite(arr)):
        raise ValidationFailed(f"model {what} has NaN or infinite values", field=MODEL_FIELD)


def _classify(spec: InferModelSpec, raw: npt.NDArray[Any], name: str) -> dict[str, Any]:
    """classes, n_classes, scores kind and the probabilities tensor from the raw output."""
    n = raw.shape[0]
    if raw.dtype.kind in "iu" and raw.size == n:  # labels (N,) or (N, 1)
        return {"classes": [int(v) for v in raw.reshape(n).tolist()], "n_classes": None,
                "scores": "labels", "_tensors": {}}  # fmt: skip
    if raw.dtype.kind != "f" or raw.ndim != 2 or raw.shape[1] < 2:
        raise ValidationFailed(
            f"model output {name!r} ({raw.dtype}, shape {raw.shape}) is neither class scores "
            "(N, C >= 2) nor labels (N,): name another with params.output or use task=regress",
            field="params.output",
        )
    _finite(raw, f"output {name!r}")
    kind = spec.scores
    if kind == "auto":
        kind = "probabilities" if _is_probabilities(raw) else "logits"
    probs = raw if kind == "probabilities" else _softmax(raw)
    return {
        "classes": [int(v) for v in np.argmax(raw, axis=1).tolist()],
        "n_classes": int(raw.shape[1]),
        "scores": kind,
        "_tensors": {"probabilities": np.asarray(probs, dtype=np.float32)},
    }


def _regress(raw: npt.NDArray[Any], name: str) -> dict[str, Any]:
    if raw.dtype.kind not in "fiu":
        raise ValidationFailed(f"model output {name!r} is not numeric", field="params.output")
    values = raw if raw.dtype in (np.float32, np.float64) else raw.astype(np.float64)
    _finite(values, f"output {name!r}")
    return {"scores": "values", "_tensors": {"values": values}}


def _score(spec: InferModelSpec, out: dict[str, Any], y: npt.NDArray[np.float64]) -> None:
    """Add ``accuracy`` (classify) or ``mse`` (regress, one value per row) against ``y``."""
    if spec.task == "classify":
        hits = np.asarray(out["classes"], dtype=np.float64) == y
        out["accuracy"] = float(hits.mean())
        return
    values = out["_tensors"]["values"]
    if values.size == y.shape[0]:
        diff = values.reshape(-1).astype(np.float64) - y
        out["mse"] = float(np.mean(diff * diff))


@register
class InferModel(Workload[InferModelSpec]):
    kind: ClassVar[str] = "infer.model"
    spec_model: ClassVar[type[BaseModel]] = InferModelSpec
    input_names: ClassVar[tuple[str, ...]] = ("model", "data")
    description: ClassVar[str] = "Batch prediction with an ONNX model or a federated zoo model"

    def parse_spec(self, params: Mapping[str, Any]) -> InferModelSpec:
        spec = super().parse_spec(params)
        zoo = spec.format == "zoo"
        problems = [
            (zoo and spec.architecture is None, "architecture", "is required with format 'zoo'"),
            (not zoo and spec.architecture is not None, "architecture", "applies to 'zoo' only"),
            (zoo and spec.task != "classify", "task", "zoo models are classifiers"),
            (zoo and spec.output is not None, "output", "applies to format 'onnx' only"),
            (zoo and spec.scores == "probabilities", "scores", "zoo models output logits"),
        ]
        for bad, name, message in problems:
            if bad:
                raise ValidationFailed(f"params.{name}: {message}", field=f"params.{name}")
        return spec

    def check_inputs(self, spec: InferModelSpec, inputs: Mapping[str, Path]) -> InputSummary:
        self.check_input_names(inputs)
        loaded = _load(spec, inputs)
        return ModelInputSummary(
            rows=int(loaded.x.shape[0]),
            columns=len(loaded.names),
            feature_names=loaded.names,
            format=loaded.format,
            n_params=loaded.n_params,
        )

    def cost(self, spec: InferModelSpec, summary: InputSummary) -> int:
        n_params = summary.n_params if isinstance(summary, ModelInputSummary) else 0
        return max(1, ceil_div(summary.rows * max(n_params, summary.columns), 1_000_000))

    def run(self, spec: InferModelSpec, inputs: Mapping[str, Path]) -> dict[str, Any]:
        self.check_input_names(inputs)
        loaded = _load(spec, inputs)
        if spec.format == "onnx":
            raw, name = _run_onnx(spec, loaded), (loaded.output.name if loaded.output else "")
        else:
            raw, name = _run_zoo(spec, loaded), "logits"
        if raw.size > MAX_OUTPUT_VALUES:
            raise _too_many_outputs(int(raw.size))
        out = _classify(spec, raw, name) if spec.task == "classify" else _regress(raw, name)
        if loaded.y is not None:
            _score(spec, out, loaded.y)
        tensors, digest = pack_tensors(out.pop("_tensors"))
        return {
            "format": spec.format,
            "task": spec.task,
            "rows": int(loaded.x.shape[0]),
            "feature_names": list(loaded.names),
            "output": name,
            **out,
            "tensors": tensors,
            "tensors_sha256": digest,
            "atol": spec.atol,
        }

    def agree(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
        keys = ("format", "task", "rows", "feature_names", "output", "scores", "atol")
        ra, rb = get_all(a, (*keys, "tensors", "tensors_sha256")), get_all(b, keys)
        if ra is None or rb is None or any(ra[k] != rb[k] for k in keys):
            return False
        atol, rows = scalar_of(ra["atol"]), ra["rows"]
        if atol is None or not 0 < atol <= MAX_ATOL or type(rows) is not int:
            return False
        if not same_strings(ra["feature_names"], rb["feature_names"]):
            return False
        if ra["task"] == "classify" and not _same_classes(a.get("classes"), b.get("classes"), rows):
            return False
        ta = unpack_tensors(a["tensors"], a["tensors_sha256"])
        tb = unpack_tensors(b.get("tensors"), b.get("tensors_sha256"))
        if ta is None or tb is None or sorted(ta) != sorted(tb):
            return False
        return all(_close(ta[k], tb[k], atol, rows) for k in ta)


def _same_classes(a: Any, b: Any, rows: int) -> bool:
    return (
        type(a) is list
        and type(b) is list
        and len(a) == rows
        and all(type(v) is int for v in (*a, *b))
        and a == b
    )


def _close(a: npt.NDArray[Any], b: npt.NDArray[Any], atol: float, rows: int) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype or a.dtype.kind != "f" or a.shape[:1] != (rows,):
        return False
    x, y = a.astype(np.float64), b.astype(np.float64)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return False
    bound = atol * np.maximum(1.0, np.maximum(np.abs(x), np.abs(y)))
    return bool(np.all(np.abs(x - y) <= bound))
