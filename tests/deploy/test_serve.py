"""A real Prefect server and `normpipe serve`: a run triggered through the API and one
fired by its interval schedule both complete with the output on disk."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from normpipe.datagen import generate

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except httpx.HTTPError:
            result = None
        if result:
            return result
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "prefect-results"),
        "DASK_LOGGING__DISTRIBUTED": "warning",
    }
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: httpx.get(f"{api}/health", timeout=2).status_code == 200, 120, "the Prefect server")
        yield api, env
    finally:
        stop(proc)
        log.close()


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def flow_runs(api: str, deployment_id: str) -> list[dict]:  # type: ignore[type-arg]
    body = {"deployments": {"id": {"any_": [deployment_id]}}}
    response = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10)
    response.raise_for_status()
    return list(response.json())


def test_serve_runs_on_demand_and_on_schedule(server: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    api, env = server
    generate(tmp_path / "data", 5_000, 2, seed=9, features=["normal", "uniform"])
    config = tmp_path / "nightly.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "source": str(tmp_path / "data"),
                "output": str(tmp_path / "out"),
                "exclude": ["id"],
                "overwrite": True,
                "cluster": {"processes": False, "workers": 1},
            }
        )
    )
    log = (tmp_path / "serve.log").open("w")
    serving = subprocess.Popen(
        [BIN / "normpipe", "serve", config, "--interval", "20", "--name", "test"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deployment = wait_for(
            lambda: (
                (r := httpx.get(f"{api}/deployments/name/preprocess/test", timeout=5)).status_code == 200
                and r.json()
            ),
            120,
            "the deployment",
        )
        # SQLite answers 503 while the scheduler holds its write lock; that is retryable.
        triggered = wait_for(
            lambda: (
                (
                    r := httpx.post(
                        f"{api}/deployments/{deployment['id']}/create_flow_run", json={}, timeout=10
                    )
                ).status_code
                != 503
                and [r]
            ),
            60,
            "the server to accept a flow run",
        )[0]
        triggered.raise_for_status()
        run_id = triggered.json()["id"]

        def state_of(run: str) -> str | None:
            response = httpx.get(f"{api}/flow_runs/{run}", timeout=5)
            state = response.json().get("state") or {}
            return state.get("type")

        final = wait_for(
            lambda: state_of(run_id) in ("COMPLETED", "FAILED", "CRASHED") and state_of(run_id),
            240,
            "the triggered run",
        )
        assert final == "COMPLETED", (tmp_path / "serve.log").read_text()[-3000:]
        assert (tmp_path / "out" / "_SUCCESS").is_file()
        assert (tmp_path / "out" / "_stats.json").is_file()
        scheduled = wait_for(
            lambda: [
                r
                for r in flow_runs(api, deployment["id"])
                if r["id"] != run_id and (r.get("state") or {}).get("type") == "COMPLETED"
            ],
            240,
            "a scheduled run",
        )
        assert scheduled
    finally:
        stop(serving)
        log.close()
