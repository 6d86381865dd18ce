"""Commands that call no model import neither litellm nor tau2's registry (nor tau2 at all, when they read no
tau2 file), so they start in well under a second and print nothing of tau2's or litellm's.

Checked on the import graph of real CLI subprocesses (``python -X importtime``, which lists every module a
process imported), not on wall time: ``benchmarks/startup.py`` measures the times.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripted import cli_env
from tau2_results import Conv, write

IDS = [f"t{i:02d}" for i in range(20)]
HEAVY = ("litellm", "tau2.registry", "tau2.utils.llm_utils", "tau2.agent.llm_agent")


def _modules(stderr: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)\s*$", stderr, re.M)}


def _cli(*args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "moodbench.cli", *args],
        capture_output=True,
        text=True,
        env=cli_env({"COLUMNS": "200"}),
        timeout=180,
    )
    return res, _modules(res.stderr)


def _printed(res: subprocess.CompletedProcess[str]) -> str:
    """What the command printed, without -X importtime's lines."""
    return res.stdout + "\n".join(ln for ln in res.stderr.splitlines() if not ln.startswith("import time:"))


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str], str]:
    root = tmp_path_factory.mktemp("startup")
    base = write(root / "control.json", [Conv(t, j, float((i + j) % 3 != 0)) for i, t in enumerate(IDS) for j in range(2)], IDS)
    angry = write(
        root / "anger.json",
        [Conv(t, j, float((i + j) % 2 != 0), opening="This is outrageous! ") for i, t in enumerate(IDS) for j in range(2)],
        IDS,
    )
    run = root / "run"
    res, modules = _cli("import", "--format", "tau2", "--out", str(run), f"{base}=control", f"{angry}=anger")
    assert res.returncode == 0, _printed(res)
    return run, modules, _printed(res)


def test_import_reads_results_with_tau2s_data_models_only(imported: tuple[Path, set[str], str]) -> None:
    _, modules, printed = imported
    assert "tau2.data_model.simulation" in modules  # the file is parsed with tau2's own schema
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))
    assert not any(m.startswith("scipy") or m.startswith("matplotlib") for m in modules)
    assert "imported 80 simulation(s)" in printed
    assert "LiteLLM" not in printed and "tau2." not in printed and ".env" not in printed  # nothing of tau2's logging


@pytest.mark.parametrize("command", [["summary"], ["report", "--json"]])
def test_reading_commands_import_no_tau2(imported: tuple[Path, set[str], str], command: list[str]) -> None:
    run = imported[0]
    res, modules = _cli(*command, str(run))
    assert res.returncode == 0, _printed(res)
    assert not any(m == "tau2" or m.startswith("tau2.") or m == "litellm" for m in modules), sorted(
        m for m in modules if m.startswith(("tau2", "litellm"))
    )
    if command == ["summary"]:
        assert not any(m.startswith(("scipy", "statsmodels", "matplotlib")) for m in modules)
    else:
        assert not any(m.startswith("matplotlib") for m in modules)  # --json draws nothing


def test_view_of_a_built_report_imports_no_statistics(imported: tuple[Path, set[str], str]) -> None:
    run = imported[0]
    res, _ = _cli("report", str(run))  # builds run/report once
    assert res.returncode == 0, _printed(res)
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "moodbench.cli", "view", str(run), "--port", "0", "--no-open"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        deadline = time.monotonic() + 120
        stdout = ""
        while "press Ctrl-C" not in stdout and time.monotonic() < deadline and proc.poll() is None:
            stdout += proc.stdout.readline()
        assert "press Ctrl-C" in stdout, stdout
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    modules = _modules(err)
    assert "moodbench.report._viewer" in modules
    assert not any(m.startswith(("tau2", "litellm", "scipy", "statsmodels", "matplotlib")) for m in modules), sorted(
        m for m in modules if m.startswith(("tau2", "litellm", "scipy", "statsmodels", "matplotlib"))
    )


# --------------------------------------------------------------------------- real tau2 files, no network, -v

REAL = Path(__file__).parent / "data" / "tau2"
REAL_ITEMS = [  # real tau2 Results files (tests/data/tau2); the adaptive-agent one carries no tasks
    ("gpt-4.1_airline_1trial", "control"),
    ("gpt-4.1_telecom_1trial", "control"),
    ("ft-gpt-4.1_airline_1trial", "ft"),
    ("ft-gpt-4.1_telecom_1trial", "ft"),
    ("adaptive-agent_airline_no-info", "adaptive"),
    ("whissle_airline_tau3", "whissle"),
]
STATS = ("scipy.stats", "statsmodels", "pandas", "matplotlib")

# Runs the CLI under an audit hook (PEP 578) that records every attempt to reach the network: a DNS look-up or a
# connect() to anything but this machine's loopback, a connect() to the dead proxy port below, any urllib request.
# The records go to the file named by argv[1] when the process ends, however it ends.
_AUDITED = r"""
import atexit, json, runpy, sys
seen, out = [], sys.argv[1]
LOOPBACK = ("127.", "::1", "localhost", "0.0.0.0")
def hook(event, args):
    if event == "socket.connect":
        addr = args[1]
        if isinstance(addr, tuple) and (not str(addr[0]).startswith(LOOPBACK) or addr[1] == DEAD_PORT):
            seen.append([event, repr(addr)])
    elif event in ("socket.getaddrinfo", "socket.gethostbyname") and not str(args[0]).startswith(LOOPBACK):
        seen.append([event, repr(args[0])])
    elif event == "urllib.Request":
        seen.append([event, repr(args[0])])
DEAD_PORT = int(sys.argv[2])
sys.addaudithook(hook)
atexit.register(lambda: open(out, "w").write(json.dumps(seen)))
module, rest = "moodbench.cli", sys.argv[3:]
if rest[:1] == ["--code"]:
    module, rest = rest[1], rest[2:]
sys.argv = ["moodbench", *rest]
runpy.run_module(module, run_name="__main__")
"""


def _dead_port() -> int:
    """A local port nothing listens on (bound, then closed): a proxy there refuses every connection."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _offline_env(cwd: Path) -> dict[str, str]:
    """A user's environment on a machine without internet: no cost-map switch of ours set, every proxy variable
    pointing to a closed local port (a fetch through a proxy fails fast and is recorded), litellm asked for debug."""
    env = cli_env({"LITELLM_LOG": "DEBUG", "COLUMNS": "200"})
    env.pop("LITELLM_LOCAL_MODEL_COST_MAP", None)
    proxy = f"http://127.0.0.1:{_DEAD}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env[name] = proxy
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    env["HOME"] = str(cwd)
    return env


_DEAD = _dead_port()


def _audited(tmp: Path, *args: str, module: str | None = None) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    record = tmp / f"net-{time.monotonic_ns()}.json"
    argv = ["--code", module] if module else []
    res = subprocess.run(
        [sys.executable, "-c", _AUDITED, str(record), str(_DEAD), *argv, *args],
        capture_output=True,
        text=True,
        env=_offline_env(tmp),
        cwd=tmp,
        timeout=300,
    )
    return res, json.loads(record.read_text()) if record.exists() else [["no record", res.stderr[-2000:]]]


@pytest.fixture(scope="module")
def real_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("real")
    items = []
    for name, variant in REAL_ITEMS:
        path = root / f"{name}.json"
        path.write_bytes(gzip.decompress((REAL / f"{name}.json.gz").read_bytes()))
        items.append(f"{path}={variant}")
    return items


def test_the_audit_sees_a_connection_attempt(tmp_path: Path) -> None:
    """The audit below is not blind: a process that tries to reach a (non-routable) address is recorded."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import socket\ntry:\n    socket.create_connection(('192.0.2.1', 80), timeout=0.05)\nexcept OSError:\n    pass\n"
    )
    sys_path = f"import sys; sys.path.insert(0, {str(tmp_path)!r})"
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            _AUDITED.replace("import atexit", sys_path + "\nimport atexit", 1),
            str(tmp_path / "r.json"),
            str(_DEAD),
            "--code",
            "probe",
        ],
        capture_output=True,
        text=True,
        env=_offline_env(tmp_path),
        cwd=tmp_path,
        timeout=60,
    )
    seen = json.loads((tmp_path / "r.json").read_text())
    assert ["socket.connect", "('192.0.2.1', 80)"] in seen, (seen, res.stderr)


def test_commands_that_call_no_model_never_reach_the_network_and_print_nothing_of_tau2(
    real_files: list[str], tmp_path: Path
) -> None:
    """import (real files, one without tasks), summary, report --json, report, export, power and `variants --show` (which
    imports tau2's registry and so litellm) on a machine without internet: no connection attempted, no
    look-up, nothing of tau2's or litellm's logging printed (LITELLM_LOG=DEBUG notwithstanding)."""
    run = tmp_path / "run"
    commands = [
        ["import", "--format", "tau2", "--out", str(run), *real_files],
        ["summary", str(run)],
        ["report", "--json", str(run)],
        ["report", str(run)],
        ["export", "--variant", "ft", "--out", str(tmp_path / "ft.json"), str(run)],
        ["power", "--tasks", "20,40", "--trials", "1,3"],
        ["variants", "--show", "frustration", "--domain", "mock"],
    ]
    for args in commands:
        res, seen = _audited(tmp_path, *args)
        assert res.returncode == 0, (args, res.stdout[-2000:], res.stderr[-3000:])
        assert seen == [], (args, seen)
        printed = res.stdout + res.stderr
        assert "| tau2." not in printed and "LiteLLM" not in printed and "No .env file" not in printed, (args, printed[-3000:])


def test_view_never_reaches_the_network(real_files: list[str], tmp_path: Path) -> None:
    run = tmp_path / "run"
    res, _ = _audited(tmp_path, "import", "--format", "tau2", "--out", str(run), *real_files[:4])
    assert res.returncode == 0, res.stderr[-3000:]
    record = tmp_path / "view-net.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", _AUDITED, str(record), str(_DEAD), "view", str(run), "--port", "0", "--no-open"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_offline_env(tmp_path),
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        deadline, stdout = time.monotonic() + 180, ""
        while "press Ctrl-C" not in stdout and time.monotonic() < deadline and proc.poll() is None:
            stdout += proc.stdout.readline()
        assert "press Ctrl-C" in stdout, stdout
        import urllib.request

        url = re.search(r"transcripts: (http://127\.0\.0\.1:\d+/\S+)", stdout)
        assert url, stdout
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url.group(1), timeout=180) as resp:  # the view builds the report (plots) under the audit
            assert resp.status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert json.loads(record.read_text()) == [], err[-2000:]
    assert "| tau2." not in err and "LiteLLM" not in err


def test_verbose_shows_tau2s_logs(real_files: list[str], tmp_path: Path) -> None:
    """`moodbench -v` passes the choice down: tau2's own log lines appear (here its warning about a missing .env,
    logged when its data models are imported), and without -v the same command prints none of them."""
    quiet, _ = _audited(tmp_path, "import", "--format", "tau2", "--out", str(tmp_path / "a"), *real_files[:2])
    loud, seen = _audited(tmp_path, "-v", "import", "--format", "tau2", "--out", str(tmp_path / "b"), *real_files[:2])
    assert quiet.returncode == 0 and loud.returncode == 0, loud.stderr[-2000:]
    assert "tau2.utils" in loud.stderr and "No .env file found" in loud.stderr, loud.stderr[-2000:]
    assert "tau2.utils" not in quiet.stderr and "No .env" not in quiet.stderr
    assert seen == []


def test_real_files_import_without_registry_or_litellm(real_files: list[str], tmp_path: Path) -> None:
    """Real Results files, one carrying no tasks (matched against tau2's airline tasks, read from tau2's domain
    module rather than its registry): neither the registry nor litellm nor any statistics package is imported."""
    res, modules = _cli("import", "--format", "tau2", "--out", str(tmp_path / "run"), *real_files)
    assert res.returncode == 0, _printed(res)
    assert "matched against the installed tau2's 'airline' tasks" in _printed(res)
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))
    assert not any(m.startswith(("scipy", "statsmodels", "matplotlib")) for m in modules)


def test_report_json_with_claims_imports_no_scipy_stats_statsmodels_or_pandas(
    imported: tuple[Path, set[str], str], tmp_path: Path
) -> None:
    """20 tasks x 2 trials: claimable comparisons, so the report computes p-values, Holm and the MDE (power) on
    scipy.special and scipy.optimize alone; scipy.stats, statsmodels and pandas (~0.5 s of CPU) stay unimported."""
    run = tmp_path / "run"
    shutil.copytree(imported[0], run, ignore=shutil.ignore_patterns("report"))  # not a report built by another test
    res, modules = _cli("report", "--json", str(run))
    assert res.returncode == 0, _printed(res)
    data = json.loads(res.stdout)
    assert "scipy.optimize" in modules  # the MDE was solved (brentq)
    assert any(c.get("mde") is not None for c in _comparisons(data)), "no MDE computed"
    assert not any(m == s or m.startswith(s + ".") for m in modules for s in STATS), sorted(
        m for m in modules if m.startswith(STATS)
    )


def _comparisons(data: dict) -> list[dict]:
    """Every dict in report.json that carries an "mde" key."""
    found: list[dict] = []

    def walk(x: object) -> None:
        if isinstance(x, dict):
            if "mde" in x:
                found.append(x)
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(data)
    return found


def test_tau2s_registry_loads_its_own_domains_tasks_from_their_domain_modules() -> None:
    """moodbench reads tau2's built-in domains' tasks from ``tau2.domains.<name>.environment.get_tasks`` without
    importing the registry: that holds only while the registry registers exactly those functions."""
    import importlib

    from moodbench.sim import _tasks
    from moodbench.sim._tau2 import registry

    for domain in _tasks._TAU2_DOMAINS:
        assert registry.get_tasks_loader(domain) is importlib.import_module(f"tau2.domains.{domain}.environment").get_tasks


def test_verbose_reaches_run_workers(tmp_path: Path) -> None:
    """`moodbench -v run --executor process`: tau2's orchestrator logs each step inside the worker processes (which
    are forked from a forkserver that never saw the command line), so its lines prove the choice was passed down;
    without -v the same run prints none of tau2's lines."""
    from moodbench.testing.scripts import mock_example_script
    from scripted import mock_run_args, start_scripted_server

    with start_scripted_server(mock_example_script(), tmp_path / "server") as srv:
        outs = {}
        for flag in ([], ["-v"]):
            args = mock_run_args(
                srv.base_url, tmp_path / f"run{len(flag)}", "--executor", "process", tasks="create_task_1", variants="control"
            )
            res = subprocess.run(
                [sys.executable, "-m", "moodbench.cli", *flag, *map(str, args)],
                capture_output=True,
                text=True,
                env=cli_env(),
                timeout=300,
            )
            assert res.returncode == 0, res.stderr[-3000:]
            outs[bool(flag)] = res.stdout + res.stderr
    assert "tau2.orchestrator.orchestrator:step" in outs[True], outs[True][-3000:]
    assert "| tau2." not in outs[False] and "tau2.orchestrator" not in outs[False], outs[False][-3000:]


def test_view_listens_before_it_builds_and_serves_only_the_built_pages(real_files: list[str], tmp_path: Path) -> None:
    """`view` of an imported run whose report is not built yet: it prints its URLs before building (so it starts
    without statistics or plots), and a page asked for meanwhile waits for the build: 200 with the new pages,
    never a 404 or a half-written page."""
    import urllib.request

    run = tmp_path / "run"
    res, _ = _cli("import", "--format", "tau2", "--out", str(run), *real_files[:4])
    assert res.returncode == 0, _printed(res)
    proc = subprocess.Popen(
        [sys.executable, "-m", "moodbench.cli", "view", str(run), "--port", "0", "--no-open"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cli_env({"COLUMNS": "250"}),
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not any("press Ctrl-C" in x for x in lines) and proc.poll() is None:
            lines.append(proc.stdout.readline())
        text = "".join(lines)
        assert "press Ctrl-C" in text and "building" not in text, text  # listening first, the build comes after
        url = re.search(r"transcripts: (http://127\.0\.0\.1:\d+/transcripts/index\.html)", text)
        assert url, text
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url.group(1), timeout=120) as resp:  # waits for the build
            assert resp.status == 200 and "simulation(s)" in resp.read().decode()
        with opener.open(url.group(1).replace("transcripts/index.html", "report.html"), timeout=60) as resp:
            assert resp.status == 200
        assert (run / "report" / "report.json").is_file()
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert "report built" in out, out
