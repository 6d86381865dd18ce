"""``--executor ray`` on a local Ray instance: same rows as threads, resume and sharding unchanged.

One Ray instance is started with ``ray start --head`` (a subprocess, 2 CPUs) and joined by every
run with ``--ray-address``, the way a cluster is used; it is stopped at the end. Starting Ray costs
tens of seconds on a small machine, so the test is marked slow.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from executor_helpers import SCRIPT, forget, rows, run
from scripted import start_scripted_server

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'moodbench[ray]')")

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    assert ray_bin, "ray CLI not found next to the interpreter"
    port = _free_port()
    temp = tmp_path_factory.mktemp("ray")
    # a throwaway single-machine cluster: no token authentication (Ray enables it for clusters it
    # starts with `ray start` unless told otherwise); drivers then connect without a token
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    start = subprocess.run(
        [
            ray_bin,
            "start",
            "--head",
            "--node-ip-address=127.0.0.2",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            f"--temp-dir={temp}",
            "--disable-usage-stats",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert start.returncode == 0, start.stdout[-2000:] + start.stderr[-3000:]
    try:
        yield f"127.0.0.2:{port}"  # loopback; Ray rewrites 127.0.0.1 to the network address
    finally:
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True, text=True, timeout=120, env=env)


def test_ray_matches_threads_resumes_and_shards(tmp_path: Path, moodbench_bin: list[str], ray_address: str) -> None:
    with start_scripted_server(SCRIPT, tmp_path) as srv:
        run(moodbench_bin, srv.base_url, tmp_path / "threads")
        expected = rows(tmp_path / "threads")
        assert len(expected) == 8

        ray_args = ("--executor", "ray", "--ray-address", ray_address)
        run(moodbench_bin, srv.base_url, tmp_path / "ray", *ray_args)
        assert rows(tmp_path / "ray") == expected

        lost = sorted(expected)[-3:]
        forget(tmp_path / "ray", lost)
        res = run(moodbench_bin, srv.base_url, tmp_path / "ray", *ray_args)
        assert "3 conversation(s) to run" in res.stderr + res.stdout
        assert rows(tmp_path / "ray") == expected

        run(moodbench_bin, srv.base_url, tmp_path / "shard", *ray_args, "--shard", "1/2")
        run(moodbench_bin, srv.base_url, tmp_path / "shard_t", "--shard", "1/2")
        shard = rows(tmp_path / "shard")
        assert shard == rows(tmp_path / "shard_t") and len(shard) == 4
        assert all(expected[k] == v for k, v in shard.items())


def test_ray_private_local_instance(tmp_path: Path, moodbench_bin: list[str]) -> None:
    """Without --ray-address the run starts (and stops) its own Ray instance."""
    with start_scripted_server(SCRIPT, tmp_path) as srv:
        res = run(
            moodbench_bin,
            srv.base_url,
            tmp_path / "ray",
            "--executor",
            "ray",
            "--task-ids",
            "create_task_1",
            "--variants",
            "control",
        )
        got = rows(tmp_path / "ray")
        assert len(got) == 2 and {v[0] for v in got.values()} == {"success"}, res.stderr[-2000:]
