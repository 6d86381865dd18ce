"""Run settings that cross a process boundary, and the worker side of running one cell.

``ConversationSettings`` holds live model clients (HTTP pools, a health tracker with locks and
events) that cannot be pickled and must not be shared between processes anyway. What travels is
every other field as it is and, for each client, its :class:`ModelSpec`; the worker builds fresh
clients around one :class:`EndpointHealth` of its own, exactly as the runner does.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import traceback
from typing import Any

from moodbench.experiment._plan import Cell
from moodbench.llm import EndpointHealth, ModelClient, ModelSpec
from moodbench.sim import ConversationSettings, run_cell


@dataclasses.dataclass(frozen=True)
class _Client:
    spec: ModelSpec


def portable(settings: ConversationSettings, max_consecutive_failures: int) -> bytes:
    """Pickled description of ``settings`` (clients replaced by their specs)."""

    def describe(value: Any) -> Any:
        if isinstance(value, ModelClient):
            return _Client(value.spec)
        if isinstance(value, dict) and value and all(isinstance(v, ModelClient) for v in value.values()):
            return {k: _Client(v.spec) for k, v in value.items()}  # steered customers' clients, by variant
        return value

    fields = {f.name: describe(getattr(settings, f.name)) for f in dataclasses.fields(settings)}
    return pickle.dumps((fields, max_consecutive_failures), protocol=pickle.HIGHEST_PROTOCOL)


def rebuild(blob: bytes, share: int = 1) -> tuple[ConversationSettings, EndpointHealth]:
    """Settings for this process, with fresh clients sharing one health tracker.

    ``share``: how many worker processes split the run; a per-endpoint request limit is divided
    among them so the endpoints see the limit the user gave, not ``share`` times it.
    """
    fields, max_failures = pickle.loads(blob)
    health = EndpointHealth(max_failures)

    def client(spec: ModelSpec) -> ModelClient:
        limit = getattr(spec, "max_in_flight_per_endpoint", None)
        if limit and share > 1:
            spec = dataclasses.replace(spec, max_in_flight_per_endpoint=max(1, math.ceil(limit / share)))
        return ModelClient(spec, health)

    def live(value: Any) -> Any:
        if isinstance(value, _Client):
            return client(value.spec)
        if isinstance(value, dict) and value and all(isinstance(v, _Client) for v in value.values()):
            return {k: client(v.spec) for k, v in value.items()}
        return value

    values: dict[str, Any] = {k: live(v) for k, v in fields.items()}
    settings = ConversationSettings(**values)
    if settings.library_logs is not None:  # the run's explicit choice (moodbench -v), made again in this process
        from moodbench._util.liblogs import library_logs

        clients = [settings.agent_client, settings.user_client, settings.judge_client, *settings.user_clients.values()]
        names = {c.spec.api_key_env for c in clients if c is not None and c.spec.api_key_env}
        library_logs(settings.library_logs, secret_env=sorted(names))  # tau2's lines masked here too
    return settings, health


class RemoteError(RuntimeError):
    """A cell raised past ``run_cell``'s own handlers in a worker; carries the worker's traceback."""


def run_one(cell: Cell, settings: ConversationSettings, health: EndpointHealth) -> tuple[str, Any, dict[str, Any]]:
    """Run a cell in a worker: ``("ok", (record, prompts), health)`` or ``("error", traceback, health)``."""
    try:
        result: tuple[str, Any] = ("ok", run_cell(cell, settings))
    except BaseException:  # noqa: BLE001 - reported to the runner, which records a harness_error
        result = ("error", f"in worker pid {os.getpid()}:\n" + traceback.format_exc())
    return result[0], result[1], {"down": health.down, "last_error": health.last_error}


def merge_health(main: EndpointHealth, snapshot: dict[str, Any]) -> None:
    """Carry a worker's "endpoint down" verdict to the runner's tracker (which stops new cells)."""
    if snapshot.get("down") and main.down is None:
        main.last_error = snapshot.get("last_error")
        main.down = snapshot["down"]


def to_result(cell: Cell, status: str, payload: Any) -> tuple[Cell, Any, BaseException | None]:
    """The runner's ``(cell, result, exception)`` triple for a worker's answer."""
    if status == "ok":
        return cell, payload, None
    return cell, None, RemoteError(payload)
