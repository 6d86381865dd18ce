"""Conversations as Ray tasks: ``moodbench run --executor ray [--ray-address ADDR]``.

With ``--ray-address`` the run joins an existing cluster (``ray start --head`` on one machine,
``ray start --address=...`` on the others; every node needs moodbench installed in the Python it
runs, and network access to the model endpoints). Without it, a private local Ray instance is
started with this machine's cores and shut down at the end.

Each cell is one task: a method call on one of a few *threaded* actors (``max_concurrency`` =
conversations per actor), because a conversation mostly waits on its model and one process per
conversation would cost hundreds of interpreters. Actors rebuild the settings once and keep
per-process caches (domain templates, gold states) warm across cells. Results stream back through
``ObjectRef.future()`` into the runner's queue as each conversation finishes; the runner's main
thread stays the only writer of the SQLite store, so resume and ``--shard`` work as with threads.
"""

from __future__ import annotations

import ipaddress
import math
import queue
import socket
import threading
from typing import Any

from moodbench.experiment._plan import Cell
from moodbench.experiment.executors import ExecutorStartError
from moodbench.experiment.executors._portable import RemoteError, merge_health, portable, rebuild, run_one, to_result
from moodbench.llm import EndpointHealth
from moodbench.sim import ConversationSettings


class _ConversationActor:
    """Holds rebuilt settings; ``run`` is called concurrently from Ray's actor threads."""

    def __init__(self, blob: bytes, share: int = 1):
        self.settings, self.health = rebuild(blob, share)

    def run(self, cell: Cell) -> tuple[str, Any, dict[str, Any]]:
        return run_one(cell, self.settings, self.health)

    def ping(self) -> int:
        import os

        return os.getpid()


def _loopback_node(address: str) -> dict[str, str]:
    """For a cluster on this machine's loopback (``ray start --head --node-ip-address=127.0.0.2``),
    the driver must say it is on that address too, or Ray picks the machine's network address.
    (Ray rewrites 127.0.0.1/localhost to the network address, so a loopback cluster uses another
    127.x address.)"""
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    try:
        return {"_node_ip_address": host} if ipaddress.ip_address(host).is_loopback else {}
    except ValueError:
        return {}


def _reachable(address: str, timeout_s: float = 10.0) -> None:
    """Fail at once when nothing listens at a ``host:port`` Ray address (``auto`` and URLs are left to Ray)."""
    host, sep, port = address.split("://")[-1].rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ExecutorStartError(
            f"--executor ray: nothing answers at --ray-address {address} ({exc.strerror or exc}); start "
            "the cluster there first (`ray start --head --port PORT`), or use --executor process on "
            "one machine"
        ) from None


class RayExecutor:
    """The runner's worker interface over Ray actors (see module docstring)."""

    def __init__(
        self,
        settings: ConversationSettings,
        *,
        concurrency: int,
        health: EndpointHealth,
        address: str | None = None,
        workers: int | None = None,
    ):
        try:
            import ray
        except ImportError:
            raise RuntimeError("--executor ray needs Ray: pip install 'moodbench[ray]' (or 'ray[default]')") from None
        self._ray = ray
        self.results: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._health = health
        self._owns_ray = False
        if not ray.is_initialized():
            try:
                if address:
                    _reachable(address)  # Ray itself retries an absent cluster for minutes
                    ray.init(address=address, log_to_driver=False, logging_level="ERROR", **_loopback_node(address))
                else:
                    # a private instance talks over loopback only
                    ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR", _node_ip_address="127.0.0.1")
                    self._owns_ray = True
            except ExecutorStartError:
                raise
            except Exception as exc:  # noqa: BLE001 - Ray raises many kinds (timeouts, ConnectionError, RuntimeError)
                where = f"join the Ray cluster at {address}" if address else "start a local Ray instance"
                raise ExecutorStartError(
                    f"--executor ray: could not {where} ({type(exc).__name__}: {str(exc)[:300]}); check that Ray runs there "
                    "(`ray status`), or use --executor process on one machine"
                ) from None
        cpus = int(ray.cluster_resources().get("CPU", 1)) or 1
        n = max(1, min(workers or cpus, concurrency))
        per_actor = math.ceil(concurrency / n)
        blob_ref = ray.put(portable(settings, health.max_consecutive_failures))
        actor_cls = ray.remote(_ConversationActor).options(max_concurrency=per_actor, num_cpus=min(1.0, cpus / n))
        self._actors = [actor_cls.remote(blob_ref, n) for _ in range(n)]
        ray.get([a.ping.remote() for a in self._actors])  # fail here, not per cell, if workers cannot start
        self._load = [0] * n
        self._lock = threading.Lock()

    def submit(self, cell: Cell) -> None:
        with self._lock:
            i = min(range(len(self._actors)), key=self._load.__getitem__)
            self._load[i] += 1
        ref = self._actors[i].run.remote(cell)
        ref.future().add_done_callback(lambda fut, cell=cell, i=i: self._done(cell, i, fut))

    def _done(self, cell: Cell, i: int, fut: Any) -> None:
        with self._lock:
            self._load[i] -= 1
        try:
            status, payload, snapshot = fut.result()
        except BaseException as exc:  # noqa: BLE001 - actor died, task failed: the cell is a harness_error
            self.results.put((cell, None, RemoteError(f"Ray task failed: {type(exc).__name__}: {exc}")))
            return
        merge_health(self._health, snapshot)
        self.results.put(to_result(cell, status, payload))

    def close(self) -> None:
        for a in self._actors:
            try:
                self._ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if self._owns_ray:
            self._ray.shutdown()
