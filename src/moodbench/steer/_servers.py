"""The llama-servers of one calibration: a steered server per scale while it is measured, an unsteered scorer
per lane, and what they cost (wall seconds to start, CPU seconds used).

Why a scorer per lane: each lane scores its replies' perplexity under the unsteered model on its own
single-thread server, so scoring uses every core. With one shared scorer, both lanes' perplexity phases ran on
one core while the other idled, about 30% of a calibration's wall time on 2 cores. Scale 0's conversations run
on a scorer (it is the unsteered model).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from moodbench.steer._errors import SteeringRunError

if TYPE_CHECKING:
    from moodbench.serve.llamacpp import LlamaCppServer
    from moodbench.steer._vector import SteeringVector

__all__ = ["CalibrationServers"]

Scorer = tuple["LlamaCppServer", "queue.Queue[int]"]


class CalibrationServers:
    """Starts, lends and stops the servers, and keeps the calibration's seconds per phase (:meth:`add`; the
    servers add ``server_start``, wall, and ``server_cpu``, CPU)."""

    def __init__(self, vec: SteeringVector, *, slots: int, threads: int, logs: Path, phases: dict[str, float]) -> None:
        self.vec, self.slots, self.threads, self.logs, self.phases = vec, slots, threads, logs, phases
        self._lock = threading.Lock()  # guards phases: the lanes add to it from their threads
        self._starting = threading.Lock()
        self._scorers: queue.Queue[Scorer] = queue.Queue()
        self._unsteered: list[LlamaCppServer] = []

    def _make(self, scale: float, tag: str) -> LlamaCppServer:
        from moodbench.serve.llamacpp import LlamaCppServer

        vec, slots = self.vec, self.slots
        cv = [(vec.vector, scale)] if scale != 0 else []
        # --no-cache-idle-slots: idle slots keep their cache (a conversation's next turn, a reply's next forced
        # token) instead of being saved to RAM and cleared at every new request
        return LlamaCppServer(vec.model_path, ctx=max(4096, 1024 * slots), parallel=slots, threads=self.threads,
                              control_vectors=cv, control_vector_layers=vec.layers if cv else None,
                              extra_args=["--no-cache-idle-slots"],
                              log_path=self.logs / f"calibrate-{vec.vector.stem}-s{scale:g}{tag}.log")  # fmt: skip

    def start(self, scale: float, tag: str = "") -> LlamaCppServer:
        """A started server for ``scale``. One start at a time: a server picks its port when it is made and binds
        it when it starts, so two lanes starting at once could pick the same one (measured: "Address already in
        use"); a port another process took in between is retried with a new server."""
        from moodbench.serve.llamacpp import LlamaCppServerError

        t = time.monotonic()
        with self._starting:
            for attempt in range(3):
                srv = self._make(scale, tag)
                try:
                    srv.start()
                    break
                except OSError as exc:
                    if attempt == 2:
                        raise SteeringRunError(f"llama-server for scale {scale:g} could not bind a port: {exc}") from None
                except LlamaCppServerError as exc:
                    raise SteeringRunError(str(exc)) from None
        self.add(server_start=time.monotonic() - t)
        return srv

    def add(self, **seconds: float) -> None:
        """Add ``seconds`` to their phases (thread-safe)."""
        with self._lock:
            for phase, value in seconds.items():
                self.phases[phase] += value

    def stop(self, srv: LlamaCppServer) -> None:
        """Stop ``srv`` after adding the CPU seconds it used to ``server_cpu``."""
        self._add_cpu(srv)
        srv.stop()

    def open_scorers(self, lanes: int) -> None:
        """Start one unsteered scorer per lane, each with its own pool of slot ids."""
        for lane in range(lanes):
            srv = self.start(0.0, "" if lane == 0 else f"-scorer{lane}")
            self._unsteered.append(srv)
            free: queue.Queue[int] = queue.Queue()  # each reply scored at once pins its own slot
            for i in range(self.slots):
                free.put(i)
            self._scorers.put((srv, free))

    @contextlib.contextmanager
    def scorer(self) -> Iterator[Scorer]:
        """A scorer and its free slot ids for the length of one scale (as many scorers as lanes: never waits)."""
        got = self._scorers.get()
        try:
            yield got
        finally:
            self._scorers.put(got)

    def close(self) -> None:
        for srv in self._unsteered:
            self.stop(srv)
        self._unsteered.clear()

    def _add_cpu(self, srv: LlamaCppServer) -> None:
        """CPU seconds (user + system) ``srv``'s process used so far (Linux ``/proc``; elsewhere nothing): the
        cost of a calibration that does not depend on the load."""
        try:
            fields = Path(f"/proc/{int(srv.pid)}/stat").read_text().rsplit(")", 1)[1].split()  # type: ignore[arg-type]
            cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, TypeError, IndexError):
            return
        self.add(server_cpu=cpu)
