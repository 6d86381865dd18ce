"""Conversations in worker processes on this machine: ``moodbench run --executor process``.

Each worker process runs up to ``ceil(concurrency / workers)`` conversations in threads (they
spend most of their time waiting for the model), and the workers together use every core instead
of the one a single interpreter's GIL allows. One worker (the *leader*) is forked from a
``forkserver`` that has already imported tau2 and moodbench; it rebuilds the run's settings, builds
every domain's template (``sim.prepare_process``), and only then forks the other workers from
itself, before any thread starts. So the templates are built once, not once per worker, and the
workers share their pages: 256 airline conversations in flight in 8 workers peaked at 1.0 GiB
instead of 2.2 GiB with a template per worker (benchmarks/memory.py).

Cells go out on one shared queue (a worker thread takes a cell only when it is free, which
balances the load); answers come back pickled on another and are turned into the runner's
``(cell, result, exception)`` triples by a reader thread. A worker that dies (out of memory,
killed) fails its in-flight cells as ``harness_error`` instead of hanging the run: the leader is
the runner's ``multiprocessing`` child, the others are the leader's children, which it reaps and
reports (``died``); if the leader itself is gone, the runner probes the others by pid.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing as mp
import os
import pickle
import queue
import signal
import threading
import time
import traceback
from typing import Any

from moodbench._util.cores import usable_cores
from moodbench._util.proc import pid_alive
from moodbench.experiment._plan import Cell
from moodbench.experiment.executors._portable import RemoteError, merge_health, portable, rebuild, run_one, to_result
from moodbench.llm import EndpointHealth
from moodbench.sim import ConversationSettings, prepare_process


def default_workers(concurrency: int) -> int:
    """Four worker processes per usable core, one per 8 conversations in flight at most.

    More processes than cores because a process with many conversation threads loses time to its
    GIL (a reply waits for the lock before it is handled). On 2 quiet cores at 64 in flight
    against a 200 ms server (benchmarks/throughput.py, 512 conversations, six runs each), 8 workers
    reached 0.894-0.913 of the ideal rate over the whole run where 4 reached 0.872-0.910; at 256
    in flight 8 workers hold 1.0 GiB of airline conversations (benchmarks/memory.py), because they share
    the leader's templates. Each worker still adds some memory, hence the cap for small runs.
    ``--workers`` (``RunConfig.workers``) chooses another number.
    """
    return max(1, min(4 * usable_cores(), math.ceil(concurrency / 8)))


_PRELOAD = ["moodbench.experiment.executors._portable"]


def start_forkserver() -> None:
    """Start multiprocessing's forkserver with moodbench and tau2 preloaded, without waiting for it.

    Workers are forked from it (milliseconds each) once its imports are done; ``ensure_running``
    returns at once, so the caller goes on with its own work meanwhile.
    """
    from multiprocessing import forkserver

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    forkserver.ensure_running()


def _watch_parent(parent_pid: int, every_s: float = 0.5) -> None:
    """End this worker as soon as the run's main process is gone, however it went (SIGKILL too).

    Workers are children of multiprocessing's forkserver, not of the main process, so neither the
    kernel's parent-death signal nor daemon flags reach them when the main process is killed; an
    orphaned pool would sit idle holding ~0.3 GB per worker.
    """
    while True:
        time.sleep(every_s)
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:  # alive, owned by someone else (cannot happen for our parent, but never exit on it)
            pass


def _worker_main(blob: bytes, jobs: Any, out: Any, threads: int, share: int, parent_pid: int) -> None:
    """The leader: settings and templates once, then ``share - 1`` forks, then every process serves cells."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C and SIGTERM are the main process's to handle
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    settings, health = rebuild(blob, share)
    try:
        prepare_process(settings)
    except Exception:  # noqa: BLE001 - each conversation meets the same error itself and reports it as its own
        pass
    children: list[int] = []
    for _ in range(share - 1):  # no thread runs yet: forking here is safe
        child = os.fork()
        if child == 0:
            children = []
            break
        children.append(child)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="moodbench-parent-watch", daemon=True).start()
    if share > 1 and not children:  # a forked worker: serve, flush, and end without the leader's exit handlers
        code = 1
        try:
            _serve(settings, health, jobs, out, threads)
            out.close()
            out.join_thread()  # every answer is in the pipe before this process ends
            code = 0
        finally:
            os._exit(code)
    reaper = None
    if children:
        out.put(pickle.dumps(("forked", children)))
        reaper = threading.Thread(target=_reap_children, args=(children, out), name="moodbench-reaper", daemon=True)
        reaper.start()
    _serve(settings, health, jobs, out, threads)
    if reaper is not None:
        reaper.join()  # the runner's join on the leader covers the workers it forked


def _serve(settings: ConversationSettings, health: EndpointHealth, jobs: Any, out: Any, threads: int) -> None:
    pid = os.getpid()

    def loop() -> None:
        while True:
            item = jobs.get()
            if item is None:
                return
            idx, cell = item
            out.put(pickle.dumps(("take", idx, pid)))
            status, payload, snapshot = run_one(cell, settings, health)
            try:
                data = pickle.dumps(("done", idx, status, payload, snapshot), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:  # noqa: BLE001 - an unpicklable record must still come back as an error
                data = pickle.dumps(("done", idx, "error", traceback.format_exc(), snapshot))
            out.put(data)

    workers = [threading.Thread(target=loop, name=f"moodbench-w{i}", daemon=True) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()


def _reap_children(children: list[int], out: Any) -> None:
    """In the leader: wait for each forked worker and tell the runner when one ends (exit code, as ``Process``)."""
    left = set(children)
    while left:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return
        if pid in left:
            left.discard(pid)
            out.put(pickle.dumps(("died", pid, os.waitstatus_to_exitcode(status))))


class ProcessExecutor:
    """The runner's worker interface over a pool of worker processes (see module docstring)."""

    def __init__(self, settings: ConversationSettings, *, concurrency: int, health: EndpointHealth, workers: int | None = None):
        self.results: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._health = health
        n = max(1, min(workers, concurrency)) if workers else default_workers(concurrency)
        self._workers = n
        self._threads_per_worker = math.ceil(concurrency / n)
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
        self._jobs = ctx.Queue()
        self._out = ctx.Queue()
        blob = portable(settings, health.max_consecutive_failures)
        self._procs = [  # the leader; it forks the other n - 1 workers itself (module docstring)
            ctx.Process(
                target=_worker_main,
                args=(blob, self._jobs, self._out, self._threads_per_worker, n, os.getpid()),
                name="moodbench-worker-0",
                daemon=True,
            )
        ]
        # Starting a worker waits for the forkserver's imports (seconds on first use): done on a thread,
        # so a caller that creates the executor early (during preflight) is not held up. Cells
        # submitted meanwhile wait in the queue.
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._starter = threading.Thread(target=self._start_workers, name="moodbench-worker-start", daemon=True)
        self._starter.start()
        self._ids = itertools.count()
        self._cells: dict[int, Cell] = {}
        self._owner: dict[int, int] = {}  # cell id -> worker pid that took it
        self._lock = threading.Lock()
        self._children: list[int] = []  # the workers the leader forked (pids)
        self._ended: dict[int, int | None] = {}  # those it saw end: pid -> exit code
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, name="moodbench-results", daemon=True)
        self._reader.start()

    def _start_workers(self) -> None:
        try:
            for p in self._procs:
                p.start()
        except BaseException as exc:  # noqa: BLE001 - reported as every cell's error by the reader
            self._start_error = exc
        finally:
            self._started.set()

    def submit(self, cell: Cell) -> None:
        idx = next(self._ids)
        with self._lock:
            self._cells[idx] = cell
        self._jobs.put((idx, cell))

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._out.get(timeout=0.5)
            except queue.Empty:
                self._reap_dead()
                continue
            if data is None:
                return
            msg = pickle.loads(data)
            if msg[0] in ("forked", "died"):
                with self._lock:
                    if msg[0] == "forked":
                        self._children = list(msg[1])
                    else:
                        self._ended[msg[1]] = msg[2]
                self._reap_dead()
                continue
            if msg[0] == "take":
                with self._lock:
                    self._owner[msg[1]] = msg[2]
                continue
            _, idx, status, payload, snapshot = msg
            with self._lock:
                cell = self._cells.pop(idx, None)
                self._owner.pop(idx, None)
            if cell is None:
                continue
            merge_health(self._health, snapshot)
            self.results.put(to_result(cell, status, payload))

    def _reap_dead(self) -> None:
        if not self._started.is_set():
            return
        if self._start_error is not None:
            with self._lock:
                failed = list(self._cells.values())
                self._cells.clear()
            for lost_cell in failed:
                self.results.put((lost_cell, None, RemoteError(f"worker processes could not start: {self._start_error!r}")))
            return
        dead: dict[int, int | None] = {p.pid: p.exitcode for p in self._procs if p.exitcode is not None and p.pid is not None}
        with self._lock:
            dead.update(self._ended)
            children = list(self._children)
        if len(dead) >= len(self._procs):  # the leader is gone: nobody reaps its workers, so ask for each by pid
            dead.update({pid: None for pid in children if pid not in dead and not pid_alive(pid)})
        if not dead:
            return
        with self._lock:
            lost = [(i, self._owner.pop(i)) for i, pid in list(self._owner.items()) if pid in dead]
            cells = [(self._cells.pop(i, None), pid) for i, pid in lost]
        for cell, pid in cells:
            if cell is not None:
                self.results.put(
                    (
                        cell,
                        None,
                        RemoteError(
                            f"worker process {pid} died (exit code {'unknown' if dead[pid] is None else dead[pid]}) "
                            "while running this conversation"
                        ),
                    )
                )
        if all(p.exitcode is not None for p in self._procs) and all(pid in dead for pid in children):
            with self._lock:
                orphans = list(self._cells.items())
                self._cells.clear()
            for _, cell in orphans:
                self.results.put((cell, None, RemoteError("every worker process has exited")))

    def _kill_all(self) -> None:
        with self._lock:
            children = list(self._children)
        for p in self._procs:
            if p.pid is not None:
                p.kill()
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def close(self) -> None:
        """Stop the workers: at once if the run was abandoned, else after their current cells."""
        self._started.wait(timeout=0 if self._health.cancelled else 120)  # a worker still starting watches our pid
        if self._health.cancelled:
            self._kill_all()
        else:
            for _ in range(self._workers * self._threads_per_worker):
                self._jobs.put(None)
            for p in self._procs:
                if p.pid is None:
                    continue
                p.join(timeout=10)  # the leader ends after the workers it forked
                if p.exitcode is None:
                    self._kill_all()
        self._closed.set()
        self._out.put(None)
        self._reader.join(timeout=5)
        for q in (self._jobs, self._out):
            q.close()
            q.cancel_join_thread()
