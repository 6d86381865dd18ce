"""Stopping server process groups and reading the end of their logs (llama.cpp and vLLM servers)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists (zombies of our own children count as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited; it only waits to be reaped
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().split(b")")[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def killpg(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def terminate_group(pid: int, pgid: int | None = None, proc: subprocess.Popen[bytes] | None = None, grace: float = 10.0) -> None:
    """SIGTERM the process group, wait up to ``grace`` s for its leader, then SIGKILL the group.

    The SIGKILL also reaches children that outlived their leader (vLLM's engine workers hold GPU
    memory when left behind; llama.cpp has none, but the rule costs nothing there).
    """
    pgid = pgid or pid
    killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                break
        elif not pid_alive(pid):
            break
        time.sleep(0.1)
    killpg(pgid, signal.SIGKILL)
    if proc is not None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a (possibly huge) log file, read from its last 64 KiB."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(could not read {path}: {exc})"
    return "\n".join(data.splitlines()[-lines:])
