"""Shared pieces of the benchmarks: scripted conversations, the scripted server, CPU accounting.

The benchmarks drive moodbench and tau2 against the same scripted OpenAI-compatible server
(``moodbench.testing.scripted_server``) so that both harnesses hold exactly the same conversations:
the server picks each reply from the caller's role (agent or simulated user, recognised from tau2's
own system prompts) and turn number, never from which harness asked.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"

# One retail customer with a pending order (looked up once in tau2's retail DB).
RETAIL_USER = {
    "first_name": "Sofia",
    "last_name": "Rossi",
    "zip": "78784",
    "user_id": "sofia_rossi_8776",
    "order_id": "#W5918442",
}
# One airline customer and reservation.
AIRLINE_USER = {"user_id": "chen_jackson_3290", "reservation_id": "4WQ150"}


def _call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


def retail_script(flow: str = "write", latency_ms: float = 0.0) -> dict[str, Any]:
    """A 9-model-call retail conversation: 3 customer turns, 6 agent turns (4 tool calls).

    ``flow="write"`` cancels a pending order (the agent's DB then differs from both the initial and
    the gold DB: the most expensive case for scoring); ``flow="read"`` only reads.
    """
    u = RETAIL_USER
    last = (
        _call("cancel_pending_order", order_id=u["order_id"], reason="no longer needed")
        if flow == "write"
        else _call("get_product_details", product_id="6086499569")
    )
    return {
        "latency_ms": latency_ms,
        "roles": {
            "agent": {
                "turns": [
                    {"content": "unused (tau2 sends a fixed greeting)"},
                    _call("find_user_id_by_name_zip", first_name=u["first_name"], last_name=u["last_name"], zip=u["zip"]),
                    _call("get_user_details", user_id=u["user_id"]),
                    _call("get_order_details", order_id=u["order_id"]),
                    {"content": f"Your order {u['order_id']} is still pending. Shall I cancel it because you no longer need it?"},
                    last,
                    {"content": "Done. Is there anything else I can help you with?"},
                ],
                "after": {"content": "Is there anything else I can help you with?"},
            },
            "user": {
                "turns": [
                    {
                        "content": f"Hi, I'm {u['first_name']} {u['last_name']}, zip {u['zip']}. I want to cancel order {u['order_id']}."
                    },
                    {"content": "Yes, please cancel it, I no longer need it."},
                    {"content": "No, that's all. Thanks! ###STOP###"},
                ],
                "after": {"content": "###STOP###"},
            },
        },
    }


def airline_script(latency_ms: float = 0.0) -> dict[str, Any]:
    """A 9-model-call airline conversation that reads a reservation and adds a checked bag."""
    u = AIRLINE_USER
    return {
        "latency_ms": latency_ms,
        "roles": {
            "agent": {
                "turns": [
                    {"content": "unused (tau2 sends a fixed greeting)"},
                    _call("get_user_details", user_id=u["user_id"]),
                    _call("get_reservation_details", reservation_id=u["reservation_id"]),
                    _call("get_flight_status", flight_number="HAT170", date="2024-05-22"),
                    {"content": "I can see your reservation. Do you want to change the number of bags?"},
                    _call(
                        "update_reservation_baggages",
                        reservation_id=u["reservation_id"],
                        total_baggages=3,
                        nonfree_baggages=0,
                        payment_id="gift_card_3576581",
                    ),
                    {"content": "Done. Anything else?"},
                ],
                "after": {"content": "Anything else?"},
            },
            "user": {
                "turns": [
                    {"content": f"Hi, my user id is {u['user_id']}, reservation {u['reservation_id']}."},
                    {"content": "Yes, three bags in total please."},
                    {"content": "Thanks! ###STOP###"},
                ],
                "after": {"content": "###STOP###"},
            },
        },
    }


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    root_url: str

    def stats(self) -> dict[str, Any]:
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{self.root_url}/stats", timeout=10) as resp:
            return json.loads(resp.read())

    def cpu_seconds(self) -> float:
        import psutil

        t = psutil.Process(self.process.pid).cpu_times()
        return t.user + t.system

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_server(script: dict[str, Any], workdir: Path) -> Server:
    """The scripted server as a subprocess, without a request log (it would cost the server CPU)."""
    workdir.mkdir(parents=True, exist_ok=True)
    tag = f"srv-{os.getpid()}-{time.monotonic_ns()}"
    script_path, port_file = workdir / f"{tag}.json", workdir / f"{tag}.port"
    script_path.write_text(json.dumps(script))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "moodbench.testing.scripted_server",
            "--script",
            str(script_path),
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--exit-with-parent",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            port = int(port_file.read_text())
            return Server(proc, f"http://127.0.0.1:{port}/v1", f"http://127.0.0.1:{port}")
        if proc.poll() is not None:
            raise RuntimeError("scripted server exited before listening")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("scripted server did not start")


def run_child(args: list[str], timeout: float = 1800) -> tuple[dict[str, Any], float]:
    """Run ``python SCRIPT args`` and return (its JSON result, CPU seconds of it and all its children).

    CPU comes from ``RUSAGE_CHILDREN`` of this process, which includes every descendant the child
    waited for (worker processes of a process pool included), so no executor can hide CPU.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1"}
    res = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise RuntimeError(f"child {args} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}")
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads(line[len("RESULT ") :]), cpu


def machine() -> str:
    """One line describing where a benchmark ran (cores, memory, CPU model, Python)."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()[0]
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Python {platform.python_version()}, load avg {load:.1f} at start"


def steady_rate(finish_times: list[float], lo: float = 0.1, hi: float = 0.9) -> float | None:
    """Completions per second between the lo and hi quantiles of finish times (no ramp-up/drain)."""
    ts = sorted(finish_times)
    if len(ts) < 10:
        return None
    i, j = int(len(ts) * lo), int(len(ts) * hi) - 1
    if ts[j] <= ts[i]:
        return None
    return (j - i) / (ts[j] - ts[i])


def write_shipped_calibration(data: dict[str, Any], directory: Path) -> Path:
    """Write ``data`` (a calibration in the shipped format) as ``<model>-<emotion>-<format>.calibration.json`` in
    ``directory``, strict JSON: the one writer of ``steering.py`` and ``calibration_stability.py``, whose files
    ``tests/test_steering_bench.py`` compares byte for byte with ``src/moodbench/steer/data``."""
    from moodbench.steer._calibrate import _finite

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{data['model']}-{data['emotion']}-{data['format']}.calibration.json"
    path.write_text(json.dumps(_finite(data), indent=1) + "\n")
    print(f"shipped-format calibration: {path}", flush=True)
    return path
