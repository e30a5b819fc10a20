"""infer.generate as a workload: params, prompts, pricing, result assembly and agreement.

The model side (greedy decoding in a serving process) is covered by
tests/inference/test_serving.py and end to end by tests/e2e/test_inference_e2e.py; here the
completer is a plain function so that every branch of the workload itself is exercised.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quackmesh.core.errors import ValidationFailed
from quackmesh.workloads import get_workload, list_kinds
from quackmesh.workloads.infer_generate import (
    MAX_PROMPT_CHARS,
    Completion,
    InferGenerate,
    InferGenerateSpec,
    request_for,
)
from quackmesh.workloads.registry import SERVED_KINDS, required_model

W = InferGenerate()


def spec(**params: Any) -> InferGenerateSpec:
    return W.parse_spec({"model": "tiny", **params})


def write(tmp_path: Path, text: str, name: str = "prompts.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def echo(op: str, data: dict[str, Any]) -> Completion:
    """Answers with the request echoed back, so the test sees what was asked."""
    body = (
        data["prompt"] if op == "complete" else " | ".join(m["content"] for m in data["messages"])
    )
    ids = tuple(ord(c) for c in body[: data["max_tokens"]])
    reason = "length" if len(body) > data["max_tokens"] else "stop"
    return Completion(f"{op}:{body}", ids, reason, len(body), len(ids))


def test_registered_as_a_served_kind() -> None:
    assert "infer.generate" in list_kinds()
    assert isinstance(get_workload("infer.generate"), InferGenerate)
    assert SERVED_KINDS["infer.generate"] == "generate"
    assert required_model("infer.generate", {"model": "tiny"}) == "tiny"
    assert required_model("infer.embed", {"model": "tiny"}) is None
    assert required_model("infer.generate", {}) is None


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "params.model"),
        ({"model": "bad name!"}, "params.model"),
        ({"model": "tiny", "max_tokens": 0}, "params.max_tokens"),
        ({"model": "tiny", "max_tokens": 4097}, "params.max_tokens"),
        ({"model": "tiny", "mode": "sample"}, "params.mode"),
        ({"model": "tiny", "temperature": 0.7}, "params.temperature"),
    ],
)
def test_bad_params_name_the_field(params: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        W.parse_spec(params)
    assert caught.value.context["field"] == field


def test_prompts_from_text_csv_and_parquet(tmp_path: Path) -> None:
    text = write(tmp_path, "first prompt\r\nsecond prompt\n")
    summary = W.check_inputs(spec(), {"data": text})
    assert (summary.rows, summary.feature_names) == (2, ("prompt",))
    csv = write(tmp_path, "id,q\n1,why ducks\n2,how ponds\n3,what bread\n", "p.csv")
    assert W.check_inputs(spec(column="q"), {"data": csv}).rows == 3
    parquet = tmp_path / "p.parquet"
    pq.write_table(pa.table({"q": ["a", "b"]}), parquet)
    assert W.check_inputs(spec(column="q"), {"data": parquet}).format == "parquet"


def test_empty_and_oversized_prompts_are_refused_with_their_row(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed) as empty:
        W.check_inputs(spec(), {"data": write(tmp_path, "fine\n   \nalso fine\n")})
    assert empty.value.context == {"field": "inputs.data", "row": 1}
    big = "x" * (MAX_PROMPT_CHARS + 1)
    with pytest.raises(ValidationFailed) as long:
        W.check_inputs(spec(), {"data": write(tmp_path, f"ok\n{big}\n")})
    assert long.value.context["row"] == 1
    with pytest.raises(ValidationFailed) as missing:
        W.check_inputs(spec(), {})
    assert missing.value.context["field"] == "inputs.data"


def test_cost_is_an_upper_bound_on_tokens(tmp_path: Path) -> None:
    data = write(tmp_path, "a\nb\nc\n")
    assert W.cost(spec(max_tokens=100), W.check_inputs(spec(), {"data": data})) == 1
    summary = W.check_inputs(spec(), {"data": write(tmp_path, "p\n" * 30)})
    assert W.cost(spec(max_tokens=100), summary) == 3  # 30 prompts x 100 tokens / 1000
    assert W.cost(spec(max_tokens=101), summary) == 4


def test_requests_for_complete_and_chat() -> None:
    assert request_for(spec(max_tokens=5), "hi") == (
        "complete",
        {"prompt": "hi", "max_tokens": 5},
    )
    op, data = request_for(spec(mode="chat", system="be brief"), "hi")
    assert op == "chat"
    assert data["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert request_for(spec(mode="chat"), "hi")[1]["messages"] == [
        {"role": "user", "content": "hi"}
    ]


def test_generate_answers_every_prompt_in_order(tmp_path: Path) -> None:
    data = write(tmp_path, "one duck\ntwo ducks swimming\n")
    seen: list[tuple[int, int]] = []
    result = W.generate(
        spec(max_tokens=8), {"data": data}, echo, progress=lambda d, t: seen.append((d, t))
    )
    assert seen == [(1, 2), (2, 2)]
    assert result["rows"] == 2 and result["model"] == "tiny" and result["mode"] == "complete"
    first, second = result["completions"]
    assert first == {
        "text": "complete:one duck",
        "token_ids": [ord(c) for c in "one duck"],
        "finish_reason": "stop",
    }
    assert second["finish_reason"] == "length" and len(second["token_ids"]) == 8
    assert result["prompt_tokens"] == len("one duck") + len("two ducks swimming")
    assert result["completion_tokens"] == 16
    assert W.agree(result, copy.deepcopy(result))


def test_a_failing_completer_fails_the_whole_task(tmp_path: Path) -> None:
    def broken(op: str, data: dict[str, Any]) -> Completion:
        raise RuntimeError("model crashed")

    with pytest.raises(RuntimeError, match="model crashed"):
        W.generate(spec(), {"data": write(tmp_path, "hi\n")}, broken)


def test_the_sandbox_refuses_to_run_it(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="--serve"):
        W.run(spec(), {"data": write(tmp_path, "hi\n")})


def _result(tmp_path: Path) -> dict[str, Any]:
    return W.generate(spec(max_tokens=8), {"data": write(tmp_path, "a duck\nthe pond\n")}, echo)


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r["completions"][1]["token_ids"].__setitem__(0, 1),  # one token differs
        lambda r: r["completions"][0].__setitem__("text", "complete:a dock"),
        lambda r: r["completions"][0].__setitem__("finish_reason", "length"),
        lambda r: r.__setitem__("model", "other"),
        lambda r: r.__setitem__("max_tokens", 9),
        lambda r: r.__setitem__("mode", "chat"),
        lambda r: r["completions"].pop(),  # a row missing
        lambda r: r.__setitem__("completions", "nope"),
        lambda r: r["completions"].__setitem__(0, None),
        lambda r: r["completions"][0].pop("token_ids"),
        lambda r: r.pop("rows"),
    ],
)
def test_agree_needs_the_same_tokens_for_every_row(tmp_path: Path, change: Any) -> None:
    honest = _result(tmp_path)
    other = copy.deepcopy(honest)
    change(other)
    assert not W.agree(honest, other)
    assert not W.agree(other, honest)


def test_usage_counts_do_not_decide_agreement(tmp_path: Path) -> None:
    honest = _result(tmp_path)
    other = copy.deepcopy(honest) | {"prompt_tokens": 0, "completion_tokens": 0}
    assert W.agree(honest, other)
