"""The task sandbox, end to end: real child processes, real workloads, real limits.

Misbehaving workloads live in ``misbehaving_workloads.py`` next to this file; the child
imports them through ``PYTHONPATH`` + ``QUACKMESH_WORKLOAD_MODULES`` passed in
``extra_env`` (the test process itself never registers them).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LinearRegression

from quackmesh.core.canon import canonical_json
from quackmesh.core.schemas import TaskLimits
from quackmesh.node import sandbox
from quackmesh.node.sandbox import (
    DETAIL_MAX_CHARS,
    FSIZE_LIMIT_BYTES,
    NOFILE_LIMIT,
    OUTPUT_NAME,
    SandboxError,
    SandboxOutcome,
    network_isolation_available,
    run_task,
)
from quackmesh.node.task_main import EXIT_CODE_HELP, ExitCode, main
from quackmesh.workloads import get_workload

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
MIB = 1024 * 1024
LIMITS = TaskLimits(wall_s=60, cpu_s=60, memory_mb=2048)  # the default job memory limit
SERVICE_LIBRARIES = ("httpx", "fastapi", "starlette", "sqlalchemy", "alembic", "uvicorn")


@pytest.fixture
def test_env() -> dict[str, str]:
    """extra_env that makes the misbehaving workloads importable in the child."""
    paths = [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {
        "PYTHONPATH": os.pathsep.join(paths),
        "QUACKMESH_WORKLOAD_MODULES": "misbehaving_workloads",
    }


@pytest.fixture
def iris_csv(tmp_path: Path) -> Path:
    path = tmp_path / "iris.csv"
    load_iris(as_frame=True).frame.drop(columns=["target"]).to_csv(path, index=False)
    return path


@pytest.fixture
def diabetes_csv(tmp_path: Path) -> Path:
    path = tmp_path / "diabetes.csv"
    load_diabetes(as_frame=True).frame.to_csv(path, index=False)
    return path


def run_test_workload(
    kind: str,
    params: dict[str, Any],
    tmp_path: Path,
    env: dict[str, str],
    limits: TaskLimits = LIMITS,
    **kwargs: Any,
) -> SandboxOutcome:
    return run_task(
        kind=kind,
        params=params,
        inputs={},
        workdir=tmp_path / "work",
        limits=limits,
        extra_env=env,
        **kwargs,
    )


def wait_until_gone(pid: int, timeout_s: float = 5.0) -> bool:
    """True once ``pid`` no longer runs (a zombie awaiting its new parent counts as gone)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def processes_in(directory: Path, timeout_s: float = 5.0) -> list[int]:
    """Live processes whose cwd is ``directory`` (the child and anything it started),
    after giving killed ones ``timeout_s`` to die."""
    target = str(directory.resolve())
    deadline = time.monotonic() + timeout_s
    while True:
        found = []
        for proc in psutil.process_iter():
            try:
                if proc.cwd() == target and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc.pid)
            except psutil.Error:  # gone, a zombie, or not ours to inspect
                continue
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.05)


def assert_failed(outcome: SandboxOutcome, reason: str) -> None:
    assert outcome.reason == reason, outcome
    assert not outcome.ok
    assert not outcome.cancelled
    assert outcome.output_path is None
    assert len(outcome.detail) <= DETAIL_MAX_CHARS


# --- real workloads --------------------------------------------------------------------


def test_kmeans_on_iris_writes_the_same_result_as_an_in_process_run(
    tmp_path: Path, iris_csv: Path
) -> None:
    params = {"n_clusters": 3, "seed": 0}
    outcome = run_task(
        kind="ml.kmeans",
        params=params,
        inputs={"data": iris_csv},
        workdir=tmp_path / "work",
        limits=LIMITS,
    )
    assert outcome.ok, outcome
    assert outcome.reason is None and not outcome.cancelled and outcome.detail == ""
    assert outcome.output_path == (tmp_path / "work" / OUTPUT_NAME).resolve()
    assert outcome.cpu_s > 0 and outcome.elapsed_s > 0
    raw = outcome.output_path.read_bytes()
    result = json.loads(raw)
    assert raw == canonical_json(result)
    assert result["feature_names"] == [
        "sepal length (cm)",
        "sepal width (cm)",
        "petal length (cm)",
        "petal width (cm)",
    ]
    assert len(result["labels"]) == 150 and set(result["labels"]) == {0, 1, 2}
    assert np.asarray(result["centers"]).shape == (3, 4)
    workload = get_workload("ml.kmeans")
    assert workload.agree(result, workload.execute(params, {"data": iris_csv}))


def test_linear_regression_on_diabetes_matches_scikit_learn(
    tmp_path: Path, diabetes_csv: Path
) -> None:
    outcome = run_task(
        kind="ml.linear_regression",
        params={"target": "target"},
        inputs={"data": diabetes_csv},
        workdir=tmp_path / "work",
        limits=LIMITS,
        threads=2,
    )
    assert outcome.ok, outcome
    assert outcome.output_path is not None
    result = json.loads(outcome.output_path.read_bytes())
    data = load_diabetes(as_frame=True).frame
    x, y = data.drop(columns=["target"]).to_numpy(), data["target"].to_numpy()
    expected = LinearRegression().fit(x, y)
    assert result["target"] == "target"
    assert result["n_samples"] == 442
    np.testing.assert_allclose(result["coefficients"], expected.coef_, rtol=1e-7)
    assert result["intercept"] == pytest.approx(expected.intercept_, rel=1e-9)
    assert result["r2"] == pytest.approx(expected.score(x, y), rel=1e-9)


# --- the child's environment -----------------------------------------------------------


def test_child_runs_in_its_own_session_with_minimal_env_and_limits(
    tmp_path: Path, test_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUACKMESH_TEST_SECRET", "must-not-leak")
    limits = TaskLimits(wall_s=60, cpu_s=7.2, memory_mb=1500)
    params = {"libraries": list(SERVICE_LIBRARIES)}
    outcome = run_test_workload("test.inspect", params, tmp_path, test_env, limits, threads=3)
    assert outcome.ok, outcome
    assert outcome.output_path is not None
    info = json.loads(outcome.output_path.read_bytes())
    env = info["env"]
    workdir = str((tmp_path / "work").resolve())
    assert "QUACKMESH_TEST_SECRET" not in env
    assert env["HOME"] == workdir and info["cwd"] == workdir
    assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"
    assert env["PYTHONNOUSERSITE"] == "1"
    assert env["QUACKMESH_WORKLOAD_MODULES"] == "misbehaving_workloads"
    assert env["PYTHONPATH"] == test_env["PYTHONPATH"]
    assert info["is_session_leader"] is True
    assert info["sys_path_has_cwd"] is False
    # task_main and the workload registry keep the child lean: no HTTP or database stack.
    assert info["loaded"] == []
    assert info["limits"] == {
        "RLIMIT_AS": [1500 * MIB, 1500 * MIB],
        "RLIMIT_CPU": [8, 10],
        "RLIMIT_FSIZE": [FSIZE_LIMIT_BYTES, FSIZE_LIMIT_BYTES],
        "RLIMIT_CORE": [0, 0],
        "RLIMIT_NOFILE": [NOFILE_LIMIT, NOFILE_LIMIT],
    }


# --- limits ----------------------------------------------------------------------------


def test_wall_clock_timeout_kills_the_whole_process_group(
    tmp_path: Path, test_env: dict[str, str]
) -> None:
    pid_file = tmp_path / "grandchild.pid"
    params = {"seconds": 60, "pid_file": str(pid_file)}
    limits = TaskLimits(wall_s=5, cpu_s=60, memory_mb=2048)
    outcome = run_test_workload("test.sleep", params, tmp_path, test_env, limits)
    assert_failed(outcome, "timeout")
    assert outcome.elapsed_s < 30  # far below the 60 s the workload wanted
    # Everything the task started ran in its work directory; none of it may survive.
    assert processes_in(tmp_path / "work") == []
    # On a very loaded machine the imports alone can outlast wall_s; the grandchild is
    # then never started (the cancel test covers grandchildren without that race).
    if pid_file.exists():
        assert wait_until_gone(int(pid_file.read_text()))


def test_processes_left_behind_by_a_finished_task_are_killed(
    tmp_path: Path, test_env: dict[str, str]
) -> None:
    pid_file = tmp_path / "grandchild.pid"
    outcome = run_test_workload(
        "test.sleep", {"seconds": 0, "pid_file": str(pid_file)}, tmp_path, test_env
    )
    assert outcome.ok, outcome
    assert wait_until_gone(int(pid_file.read_text()))


def test_cpu_limit_stops_a_busy_loop(tmp_path: Path, test_env: dict[str, str]) -> None:
    # A generous wall limit: on a loaded CI machine the busy loop may get little CPU, and
    # it must hit the CPU limit (what this test is about) before the wall-clock one.
    limits = TaskLimits(wall_s=90, cpu_s=1, memory_mb=2048)
    outcome = run_test_workload("test.busy", {}, tmp_path, test_env, limits)
    assert_failed(outcome, "cpu_limit")
    assert "SIGXCPU" in outcome.detail
    # rusage can read below the kernel's RLIMIT_CPU accounting on a busy machine (see
    # sandbox.py); the signal is the proof, this only checks the loop really ran.
    assert outcome.cpu_s >= 0.5


def test_cpu_limit_holds_when_the_child_ignores_sigxcpu(
    tmp_path: Path, test_env: dict[str, str]
) -> None:
    # cpu_s leaves room for the imports, so SIGXCPU arrives after the handler is ignored
    # and only the hard limit (soft + 2 s) stops the loop, with SIGKILL.
    limits = TaskLimits(wall_s=30, cpu_s=3, memory_mb=2048)
    outcome = run_test_workload("test.busy", {"ignore_sigxcpu": True}, tmp_path, test_env, limits)
    assert_failed(outcome, "cpu_limit")
    assert "SIGKILL" in outcome.detail
    # Past the soft limit (3 s): only the hard limit (soft + 2 s) stopped it. rusage reads
    # a little below the kernel's own accounting on a busy machine (4.46 s seen in CI).
    assert outcome.cpu_s >= 4.0


def test_memory_limit_stops_a_big_allocation(tmp_path: Path, test_env: dict[str, str]) -> None:
    # RLIMIT_AS counts address space, and numpy/scikit-learn/pyarrow reserve ~0.5-0.7 GiB
    # just by being imported, so the limit here is 1 GiB rather than a few hundred MB.
    limits = TaskLimits(wall_s=30, cpu_s=30, memory_mb=1024)
    outcome = run_test_workload("test.alloc", {"mb": 1536}, tmp_path, test_env, limits)
    assert_failed(outcome, "memory_limit")
    assert "MemoryError" in outcome.detail


# --- failures --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("exit", "exit code 7"), ("abort", "SIGABRT"), ("chatty", "deliberate failure")],
)
def test_crash_is_reported_with_detail(
    tmp_path: Path, test_env: dict[str, str], mode: str, expected: str
) -> None:
    outcome = run_test_workload("test.crash", {"mode": mode}, tmp_path, test_env)
    assert_failed(outcome, "crash")
    assert expected in outcome.detail


def test_bad_params_are_an_input_error(tmp_path: Path, test_env: dict[str, str]) -> None:
    outcome = run_test_workload("test.sleep", {"seconds": "long"}, tmp_path, test_env)
    assert_failed(outcome, "input_error")
    assert "params.seconds" in outcome.detail


def test_missing_input_file_is_an_input_error(tmp_path: Path) -> None:
    outcome = run_task(
        kind="ml.kmeans",
        params={"n_clusters": 2},
        inputs={"data": tmp_path / "absent.csv"},
        workdir=tmp_path / "work",
        limits=LIMITS,
    )
    assert_failed(outcome, "input_error")
    assert "absent.csv" in outcome.detail


@pytest.mark.parametrize("mode", ["missing", "garbage"])
def test_exit_zero_without_valid_output_is_an_output_error(
    tmp_path: Path, test_env: dict[str, str], mode: str
) -> None:
    outcome = run_test_workload("test.no_output", {"mode": mode}, tmp_path, test_env)
    assert_failed(outcome, "output_error")


# --- cancel ----------------------------------------------------------------------------


def test_cancel_kills_the_task_and_its_children_promptly(
    tmp_path: Path, test_env: dict[str, str]
) -> None:
    pid_file = tmp_path / "grandchild.pid"
    cancel = threading.Event()
    outcomes: list[SandboxOutcome] = []

    def target() -> None:
        params = {"seconds": 60, "pid_file": str(pid_file)}
        outcomes.append(run_test_workload("test.sleep", params, tmp_path, test_env, cancel=cancel))

    thread = threading.Thread(target=target)
    thread.start()
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pid_file.exists()
    cancel.set()
    thread.join(timeout=10)  # the task wanted 60 s: returning at all means it was stopped
    assert not thread.is_alive()
    (outcome,) = outcomes
    assert outcome.cancelled and not outcome.ok
    assert outcome.reason is None and outcome.output_path is None
    assert wait_until_gone(int(pid_file.read_text()))
    assert processes_in(tmp_path / "work") == []


def test_cancel_set_before_the_start_returns_cancelled(
    tmp_path: Path, test_env: dict[str, str]
) -> None:
    cancel = threading.Event()
    cancel.set()
    outcome = run_test_workload("test.sleep", {"seconds": 60}, tmp_path, test_env, cancel=cancel)
    assert outcome.cancelled and outcome.reason is None


# --- network isolation -----------------------------------------------------------------


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


@pytest.mark.netns
@pytest.mark.skipif(not network_isolation_available(), reason="needs root and unshare --net")
def test_isolated_child_cannot_reach_the_network(
    tmp_path: Path, test_env: dict[str, str], listening_port: int
) -> None:
    params = {"port": listening_port}
    open_run = run_test_workload("test.connect", params, tmp_path / "open", test_env)
    assert open_run.ok and open_run.output_path is not None
    assert json.loads(open_run.output_path.read_bytes())["connected"] is True

    isolated = run_test_workload(
        "test.connect", params, tmp_path / "isolated", test_env, isolate_network=True
    )
    assert isolated.ok, isolated
    assert isolated.output_path is not None
    assert json.loads(isolated.output_path.read_bytes())["connected"] is False


def test_isolation_that_is_unavailable_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "network_isolation_available", lambda: False)
    with pytest.raises(SandboxError):
        run_task(
            kind="ml.kmeans",
            params={},
            inputs={},
            workdir=tmp_path,
            limits=LIMITS,
            isolate_network=True,
        )


# --- task_main in process --------------------------------------------------------------


def test_every_exit_code_is_documented() -> None:
    assert set(EXIT_CODE_HELP) == set(ExitCode)
    assert all(text.strip() for text in EXIT_CODE_HELP.values())


def test_task_main_writes_canonical_json(tmp_path: Path, iris_csv: Path) -> None:
    params_file = tmp_path / "params.json"
    params_file.write_text('{"n_clusters": 3, "seed": 1}')
    out = tmp_path / "out.json"
    argv = ["--kind", "ml.kmeans", "--params-file", str(params_file)]
    argv += ["--input", f"data={iris_csv}", "--output", str(out)]
    assert main(argv) == ExitCode.OK
    raw = out.read_bytes()
    assert raw == canonical_json(json.loads(raw))
    assert not out.with_name(out.name + ".tmp").exists()


@pytest.mark.parametrize(
    ("params_text", "inputs", "message"),
    [
        ("[1, 2]", [], "params must be a JSON object"),
        ("{not json", [], "cannot read params file"),
        ('{"n_clusters": 2}', ["data"], "must be NAME=PATH"),
        ('{"n_clusters": "two"}', ["data=IRIS"], "params.n_clusters"),
        ('{"n_clusters": 2}', ["other=IRIS"], "missing input 'data'"),
        ('{"n_clusters": 2}', ["data=BAD"], "input_error"),
        ('{"n_clusters": 2}', ["data=ABSENT"], "is not a readable file"),
    ],
)
def test_task_main_bad_input_exits_2_with_one_line(
    tmp_path: Path,
    iris_csv: Path,
    capsys: pytest.CaptureFixture[str],
    params_text: str,
    inputs: list[str],
    message: str,
) -> None:
    params_file = tmp_path / "params.json"
    params_file.write_text(params_text)
    argv = ["--kind=ml.kmeans", f"--params-file={params_file}", f"--output={tmp_path / 'o'}"]
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2,3,4\nx\n")
    files = {"IRIS": str(iris_csv), "BAD": str(bad), "ABSENT": str(tmp_path / "absent.csv")}
    for item in inputs:
        name, _, key = item.partition("=")
        argv.append(f"--input={name}={files.get(key, key)}")
    assert main(argv) == ExitCode.BAD_INPUT
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_task_main_unknown_kind_exits_2(
    tmp_path: Path, iris_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params_file = tmp_path / "params.json"
    params_file.write_text("{}")
    argv = ["--kind=ml.no_such_kind", f"--params-file={params_file}", f"--input=data={iris_csv}"]
    assert main([*argv, f"--output={tmp_path / 'o'}"]) == ExitCode.BAD_INPUT
    assert "unknown workload kind 'ml.no_such_kind'" in capsys.readouterr().err
