"""The attack table: what a hostile model, a crafted file or a careless user sent moodbench, and what must hold.

Every row of ``ATTACKS`` is one attack from the adversarial passes (issue "Hardening, round 2" and its
continuation, plus the NaN-reward point of the "answer under real conditions" issue). A row has:

* ``id``: a short name, ``i20-09-...`` for issue 20 item 9 (pytest shows it);
* ``item``: where the attack was reported;
* ``what``: the attack in one sentence;
* ``reproduce(ctx)``: runs it through the real CLI (``python -m moodbench.cli`` subprocesses) against the
  real scripted server (``moodbench.testing``) or :class:`HostileServer` below, with real files, and
  returns what the last command did (a :class:`Done`);
* ``holds``: what must hold, in words, and ``check(ctx, done)``: the assertions that say so. The common
  ones (no traceback, the expected exit code, a message naming the problem) are checked for every row by
  :func:`test_attack`.

To add an attack: write its reproduction and check as two small functions (or reuse a helper), add an
``Attack(...)`` row, run ``pytest tests/test_attacks_input.py -k YOUR-ID``, and confirm it fails on the
code before the fix. Keep timings generous (a loaded 2-core machine runs these): bound what used to take
minutes by tens of seconds, never by the time the fixed code happens to take here.

Every row failed before the fix it guards: a traceback (exit 1), a hang, a MemoryError, or a run that died
without its summary. Attacks on locks, secrets, symlinks and the viewer live with their own tests.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from moodbench.testing.scripts import mock_example_script
from scripted import ScriptedServer, cli_env, mock_run_args, start_scripted_server

MOODBENCH = [sys.executable, "-m", "moodbench.cli"]


# --------------------------------------------------------------------------- what a row runs against


@dataclass
class Done:
    """What the attack's last command did."""

    rc: int
    out: str
    err: str
    seconds: float

    @property
    def text(self) -> str:
        return " ".join((self.out + self.err).split())  # rich wraps long lines on a terminal


class HostileServer:
    """An OpenAI-compatible endpoint on 127.0.0.1 that answers every chat request with one fixed reply
    (status 200, the given bytes and headers): usage counts no real server sends, lone surrogates,
    a gzip bomb. Runs in a thread of the test process; the CLI talks to it over real HTTP."""

    def __init__(self, body: bytes, headers: dict[str, str] | None = None):
        reply_headers = {"Content-Type": "application/json", **(headers or {})}

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                for k, v in reply_headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:  # the client hung up (a size limit doing its job)
                    pass

            def do_GET(self) -> None:
                data = json.dumps({"object": "list", "data": [{"id": "hostile", "object": "model"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def chat_reply(content: str = "Hello there, how can I help?", *, usage: dict[str, Any] | None = None) -> bytes:
    """A chat completion as a server sends it (``json.dumps`` escapes a lone surrogate as ``\\ud800``)."""
    return json.dumps(
        {
            "id": "chatcmpl-hostile",
            "object": "chat.completion",
            "created": 0,
            "model": "hostile",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": usage or {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
    ).encode()


def gzip_bomb(inflated_bytes: int) -> bytes:
    """A gzip-encoded chat completion whose content inflates to ``inflated_bytes`` (about 1000:1)."""
    head, tail = chat_reply("@@").split(b"@@")
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [z.compress(head)]
    block = b"x" * (1024 * 1024)
    for _ in range(inflated_bytes // len(block)):
        parts.append(z.compress(block))
    parts += [z.compress(tail), z.flush()]
    return b"".join(parts)


@dataclass
class Ctx:
    """One row's working place: a temporary directory, the CLI, servers (stopped after the row)."""

    tmp: Path
    shared: dict[str, Any]
    cleanups: list[Callable[[], object]] = field(default_factory=list)

    def cli(
        self, *args: Any, env: dict[str, str] | None = None, timeout: float = 240, preexec_fn: Callable[[], None] | None = None
    ) -> Done:
        t0 = time.monotonic()
        try:
            res = subprocess.run(
                [*MOODBENCH, *[str(a) for a in args]],
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                preexec_fn=preexec_fn,
                env=cli_env({"MOODBENCH_BACKOFF_BASE_S": "0.01", "MOODBENCH_BACKOFF_MAX_S": "0.05", **(env or {})}),
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(
                f"moodbench {' '.join(map(str, args))[:300]} still running after {timeout} s (a hang)\n"
                f"{(exc.stderr or b'')[-2000:]!r}"
            )
        return Done(res.returncode, res.stdout, res.stderr, time.monotonic() - t0)

    def scripted(self, script: dict[str, Any]) -> ScriptedServer:
        srv = start_scripted_server(script, self.tmp / "servers")
        self.cleanups.append(srv.stop)
        return srv

    def hostile(self, body: bytes, headers: dict[str, str] | None = None) -> HostileServer:
        srv = HostileServer(body, headers)
        self.cleanups.append(srv.close)
        return srv

    def finished_run(self) -> Path:
        """One finished run (control, create_task_1: one successful conversation), made once per module
        and copied, so rows that read or import a run do not pay for a run each."""
        if "run" not in self.shared:
            base = Path(self.shared["dir"]) / "finished"
            with start_scripted_server(mock_example_script(), Path(self.shared["dir"]) / "srv") as srv:
                done = self.cli(*run_args(srv.base_url, base, variants="control"))
            assert done.rc == 0, done.text[-2000:]
            self.shared["run"] = base
        copy = self.tmp / "run"
        shutil.copytree(self.shared["run"], copy, ignore=shutil.ignore_patterns(".moodbench.lock"))
        return copy

    def tau2_file(self) -> dict[str, Any]:
        """The finished run exported as tau2 Results JSON (a real file tau2 itself can load)."""
        if "tau2" not in self.shared:
            out = Path(self.shared["dir"]) / "export.json"
            done = self.cli("export", self.finished_run(), "--out", out)
            assert done.rc == 0, done.text[-2000:]
            self.shared["tau2"] = json.loads(out.read_text())
        return json.loads(json.dumps(self.shared["tau2"]))


def run_args(url: str, out: Path, *extra: Any, tasks: str = "create_task_1", variants: str = "control") -> list[Any]:
    return mock_run_args(url, out, "--max-retries", "0", *extra, tasks=tasks, variants=variants)


def hostile_run(
    ctx: Ctx,
    body: bytes,
    *extra: Any,
    headers: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 240,
) -> Done:
    """A run whose agent is the hostile server and whose customer is the scripted one."""
    agent = ctx.hostile(body, headers)
    user = ctx.scripted(mock_example_script())
    args = run_args(agent.base_url, ctx.tmp / "run", "--user-model", "openai/scripted", "--user-base-url", user.base_url, *extra)
    return ctx.cli(*args, env=env, timeout=timeout)


def rows(run_dir: Path) -> list[dict[str, Any]]:
    con = sqlite3.connect(run_dir / "results.sqlite")
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("SELECT * FROM simulations ORDER BY id")]
    finally:
        con.close()


def manifest(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "manifest.json").read_text())


def write(ctx: Ctx, name: str, text: str) -> Path:
    path = ctx.tmp / name
    path.write_text(text)
    return path


def file_limit(nbytes: int) -> Callable[[], None]:
    """For preexec_fn: no file of this process may grow past ``nbytes`` (a full disk, deterministically:
    writes past it fail with EFBIG as they would with ENOSPC)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return apply


# --------------------------------------------------------------------------- reproductions and checks


def deep_tool_args(ctx: Ctx) -> Done:
    script = mock_example_script()
    deep = '{"a":' * 255 + "1" + "}" * 255
    script["roles"]["agent"]["turns"][1] = {"tool_calls": [{"name": "create_task", "arguments": deep}]}
    return ctx.cli(*run_args(ctx.scripted(script).base_url, ctx.tmp / "run"))


def stored_one(expected_reason: str | None = None) -> Callable[[Ctx, Done], None]:
    def check(ctx: Ctx, done: Done) -> None:
        got = rows(ctx.tmp / "run")
        assert len(got) == 1, got
        if expected_reason:
            assert got[0]["exit_reason"] == expected_reason, (got[0]["exit_reason"], got[0]["error"])
        assert (ctx.tmp / "run" / "summary.json").is_file()
        assert manifest(ctx.tmp / "run")["exit_code"] == done.rc

    return check


def huge_tokens(ctx: Ctx) -> Done:
    return hostile_run(ctx, chat_reply(usage={"prompt_tokens": 10**23, "completion_tokens": 1, "total_tokens": 10**23}))


def negative_tokens(ctx: Ctx) -> Done:
    return hostile_run(ctx, chat_reply(usage={"prompt_tokens": -5, "completion_tokens": -1, "total_tokens": -6}))


def llm_error_saying(*words: str) -> Callable[[Ctx, Done], None]:
    def check(ctx: Ctx, done: Done) -> None:
        stored_one("llm_error")(ctx, done)
        error = rows(ctx.tmp / "run")[0]["error"] or ""
        for w in words:
            assert w in error, error[-1000:]

    return check


def huge_seed(ctx: Ctx) -> Done:
    srv = ctx.scripted(mock_example_script())
    done = ctx.cli(*run_args(srv.base_url, ctx.tmp / "run", "--seed", "99999999999999999999"))
    ctx.shared["requests"] = len(srv.requests())
    return done


def nothing_called(ctx: Ctx, done: Done) -> None:
    assert ctx.shared.pop("requests", 0) == 0
    assert not (ctx.tmp / "run" / "results.sqlite").exists()


BIG_REPLY = {"content": "y" * 400_000}


def disk_full_in_loop(ctx: Ctx) -> Done:
    script = mock_example_script()
    script["roles"]["agent"]["turns"][2] = BIG_REPLY  # the transcript outgrows the file-size limit at the INSERT
    srv = ctx.scripted(script)
    ctx.shared["url"] = srv.base_url
    return ctx.cli(*run_args(srv.base_url, ctx.tmp / "run"), preexec_fn=file_limit(300_000))


def resumes_after_space_is_freed(ctx: Ctx, done: Done) -> None:
    assert rows(ctx.tmp / "run") == []
    again = ctx.cli(*run_args(ctx.shared.pop("url"), ctx.tmp / "run"))
    assert again.rc == 0, again.text[-2000:]
    assert [r["exit_reason"] for r in rows(ctx.tmp / "run")] == ["success"]


def disk_full_at_start(ctx: Ctx) -> Done:
    return ctx.cli(*run_args(ctx.scripted(mock_example_script()).base_url, ctx.tmp / "run"), preexec_fn=file_limit(3000))


def think_bomb(ctx: Ctx) -> Done:
    script = mock_example_script()
    script["roles"]["agent"]["turns"][1] = {"content": "<think>" * 60_000}  # 420 KB, under the size limit
    return ctx.cli(*run_args(ctx.scripted(script).base_url, ctx.tmp / "run", "--timeout", "5"), timeout=300)


def within(seconds: float, then: Callable[[Ctx, Done], None] | None = None) -> Callable[[Ctx, Done], None]:
    def check(ctx: Ctx, done: Done) -> None:
        assert done.seconds < seconds, f"took {done.seconds:.0f} s"
        if then is not None:
            then(ctx, done)

    return check


# Nine levels of ten aliases each: under 1 KB of YAML, 10^9 values once expanded.
ALIAS_BOMB = "".join(
    f"  {name}: &{name} [{', '.join([f'*{below}' if below else 'x'] * 10)}]\n"
    for below, name in zip(["", "a", "b", "c", "d", "e", "f", "g", "h"], "abcdefghi")
)


def config_alias_bomb(ctx: Ctx) -> Done:
    config = write(ctx, "bomb.yaml", "domain: mock\nagent_args:\n" + ALIAS_BOMB)
    return ctx.cli(*run_args("http://127.0.0.1:9/v1", ctx.tmp / "run", "--config", config), timeout=120)


def variants_mapping_bomb(ctx: Ctx) -> Done:
    variants = write(ctx, "bomb-variants.yaml", "variants:\n" + ALIAS_BOMB)
    return ctx.cli(*run_args("http://127.0.0.1:9/v1", ctx.tmp / "run", "--variants-file", variants), timeout=120)


def huge_trials(ctx: Ctx) -> Done:
    return ctx.cli(*run_args("http://127.0.0.1:9/v1", ctx.tmp / "run", "--trials", "100000000", "--dry-run"), timeout=120)


def gzip_bomb_litellm(ctx: Ctx) -> Done:
    body = gzip_bomb(100 * 1024 * 1024)  # ~100 KB on the wire, 100 MB inflated; the limit is 4 MiB
    return hostile_run(ctx, body, headers={"Content-Encoding": "gzip"}, env={"MOODBENCH_LITELLM": "1"})


def markup_variant(ctx: Ctx) -> Done:
    return ctx.cli(*run_args("http://127.0.0.1:9/v1", ctx.tmp / "run", variants="control,[/x]"), timeout=120)


def lone_surrogate(ctx: Ctx) -> Done:
    done = hostile_run(ctx, chat_reply("I can help \ud800 with that."))
    assert done.rc == 0, done.text[-2000:]
    ctx.shared["report-json"] = ctx.cli("report", ctx.tmp / "run", "--json")
    ctx.shared["export"] = ctx.cli("export", ctx.tmp / "run", "--out", ctx.tmp / "export.json")
    return ctx.cli("report", ctx.tmp / "run", "--out", ctx.tmp / "report")


def still_reportable(ctx: Ctx, done: Done) -> None:
    for name in ("report-json", "export"):
        other = ctx.shared.pop(name)
        assert other.rc == 0 and "Traceback" not in other.err, (name, other.text[-2000:])
    assert (ctx.tmp / "report" / "report.html").is_file()
    stored = rows(ctx.tmp / "run")[0]["simulation"] or ""  # JSON text: non-ASCII is escaped
    assert "\\ufffd" in stored and "\\ud800" not in stored


def long_out_name(ctx: Ctx) -> Done:
    return ctx.cli(*run_args("http://127.0.0.1:9/v1", ctx.tmp / ("r" * 300)), timeout=120)


def export_to_directory(ctx: Ctx) -> Done:
    return ctx.cli("export", ctx.finished_run(), "--out", ctx.tmp)


def export_to_proc(ctx: Ctx) -> Done:
    return ctx.cli("export", ctx.finished_run(), "--out", "/proc/x/y.json")


def report_to_existing_file(ctx: Ctx) -> Done:
    target = write(ctx, "existing.txt", "keep me")
    return ctx.cli("report", ctx.finished_run(), "--out", target)


def file_untouched(ctx: Ctx, done: Done) -> None:
    assert (ctx.tmp / "existing.txt").read_text() == "keep me"


def report_bad_judge_url(ctx: Ctx) -> Done:
    return ctx.cli("report", ctx.finished_run(), "--judge-base-url", "http://[::1")


def echo_30kb(ctx: Ctx) -> Done:
    big = " ".join(f"word{i % 997}" for i in range(5000))  # ~40 KB of text
    script = {
        "roles": {
            "agent": {"turns": [{"content": "unused"}, {"content": big}, {"content": big}], "after": {"content": big}},
            "user": {
                "turns": [
                    {"content": "Please create a task called 'Important Meeting' for user_1."},
                    {"echo_last": True},
                    {"echo_last": True},
                ],
                "after": {"content": "###STOP###"},
            },
        }
    }
    return ctx.cli(*run_args(ctx.scripted(script).base_url, ctx.tmp / "run"), timeout=400)


def echo_flagged(ctx: Ctx, done: Done) -> None:
    got = rows(ctx.tmp / "run")
    assert len(got) == 1
    assert json.loads(got[0]["flags"])["user_echo"] is True


def config_dev_zero(ctx: Ctx) -> Done:
    return ctx.cli(*run_args("http://127.0.0.1:9/v1", ctx.tmp / "run", "--config", "/dev/zero"), timeout=120)


def variants_dev_zero(ctx: Ctx) -> Done:
    return ctx.cli(*run_args("http://127.0.0.1:9/v1", ctx.tmp / "run", "--variants-file", "/dev/zero"), timeout=120)


def config_fifo(ctx: Ctx) -> Done:
    fifo = ctx.tmp / "config.yaml"
    os.mkfifo(fifo)
    return ctx.cli(*run_args("http://127.0.0.1:9/v1", ctx.tmp / "run", "--config", fifo), timeout=120)


def deep_agent_args(ctx: Ctx) -> Done:
    deep = '{"a":' * 5000 + "1" + "}" * 5000
    return ctx.cli(*run_args("http://127.0.0.1:9/v1", ctx.tmp / "run", "--agent-args", deep), timeout=120)


def duplicate_yaml_key(ctx: Ctx) -> Done:
    config = write(ctx, "twice.yaml", "domain: mock\ntrials: 1\ntrials: 3\n")
    return ctx.cli(*run_args("http://127.0.0.1:9/v1", ctx.tmp / "run", "--config", config), timeout=120)


def crafted_import(edit: Callable[[dict[str, Any]], None]) -> Callable[[Ctx], Done]:
    def reproduce(ctx: Ctx) -> Done:
        data = ctx.tau2_file()
        edit(data)
        path = ctx.tmp / "crafted.json"
        path.write_text(json.dumps(data))  # NaN and Infinity are written as tau2's JSON would hold them
        return ctx.cli("import", "--out", ctx.tmp / "imported", f"{path}=control")

    return reproduce


def set_sim(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        data["simulations"][0][key] = value

    return edit


def set_reward(value: float) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        data["simulations"][0]["reward_info"]["reward"] = value

    return edit


def set_num_trials(data: dict[str, Any]) -> None:
    data["info"]["num_trials"] = 10**9


def nothing_imported(ctx: Ctx, done: Done) -> None:
    assert not (ctx.tmp / "imported").exists()


def excluded_with_reason(ctx: Ctx, done: Done) -> None:
    got = rows(ctx.tmp / "imported")
    assert [r["exit_reason"] for r in got] == ["harness_error"], got
    assert got[0]["reward"] is None and "not a finite number" in (got[0]["error"] or "")
    report = ctx.cli("report", ctx.tmp / "imported", "--json")
    assert report.rc == 0 and "Traceback" not in report.err, report.text[-2000:]
    summary = ctx.cli("summary", ctx.tmp / "imported", "--json")
    assert summary.rc == 0, summary.text[-2000:]


def power_huge_tasks(ctx: Ctx) -> Done:
    return ctx.cli("power", "--tasks", "99999999999999999999", timeout=120)


def power_one_conversation_pilot(ctx: Ctx) -> Done:
    return ctx.cli("power", "--pilot", ctx.finished_run())


def names_no_option_not_given(ctx: Ctx, done: Done) -> None:
    assert "--baseline-success must" not in done.text


def ray_unreachable(ctx: Ctx) -> Done:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'moodbench[ray]')")
    srv = ctx.scripted(mock_example_script())
    return ctx.cli(*run_args(srv.base_url, ctx.tmp / "run", "--executor", "ray", "--ray-address", "127.0.0.2:9"), timeout=200)


def ray_local_start_fails(ctx: Ctx) -> Done:
    """A local Ray node that cannot start (its session directory cannot be made: RAY_TMPDIR lies under a file),
    the way a node that does not come up in time fails: an exception out of ray.init."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'moodbench[ray]')")
    srv = ctx.scripted(mock_example_script())
    blocker = ctx.tmp / "a-file"
    blocker.write_text("not a directory")
    return ctx.cli(
        *run_args(srv.base_url, ctx.tmp / "run", "--executor", "ray"), env={"RAY_TMPDIR": str(blocker / "ray")}, timeout=200
    )


def summary_and_manifest_closed(ctx: Ctx, done: Done) -> None:
    assert (ctx.tmp / "run" / "summary.json").is_file()
    assert manifest(ctx.tmp / "run")["exit_code"] == 2


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Attack:
    id: str
    item: str
    what: str
    reproduce: Callable[[Ctx], Done]
    holds: str
    rc: int = 2  # the exit code that must come back
    says: tuple[str, ...] = ()  # words the message must hold (it names the problem and the fix)
    check: Callable[[Ctx, Done], None] | None = None


ATTACKS: list[Attack] = [
    Attack(
        "i20-09-deep-tool-args",
        "issue 20 item 9",
        "the agent calls a tool with arguments nested 255 deep",
        deep_tool_args,
        "the call is an invalid tool call; the run stores it and finishes",
        rc=0,
        check=stored_one("invalid_tool_call"),
    ),
    Attack(
        "i20-10-huge-token-count",
        "issue 20 item 10",
        "the endpoint reports usage.prompt_tokens = 10^23",
        huge_tokens,
        "that conversation ends as llm_error naming the usage; the run finishes",
        rc=0,
        check=llm_error_saying("usage.prompt_tokens"),
    ),
    Attack(
        "i20-10-negative-token-count",
        "issue 20 item 10 (and issue 24 item 8)",
        "the endpoint reports negative token counts",
        negative_tokens,
        "that conversation ends as llm_error; no negative count is stored",
        rc=0,
        check=llm_error_saying("usage.prompt_tokens"),
    ),
    Attack(
        "i20-11-huge-seed",
        "issue 20 item 11",
        "run --seed 99999999999999999999",
        huge_seed,
        "exit 2 naming the seed before any model call",
        says=("seed",),
        check=nothing_called,
    ),
    Attack(
        "i20-12-disk-full-in-loop",
        "issue 20 item 12",
        "the disk fills up while a conversation is stored",
        disk_full_in_loop,
        "exit 2 saying the run directory cannot be written and how to resume; resuming works",
        says=("cannot write the run directory", "re-run the same command"),
        check=resumes_after_space_is_freed,
    ),
    Attack(
        "i20-12-disk-full-at-start",
        "issue 20 item 12",
        "the disk is full before the first conversation",
        disk_full_at_start,
        "exit 2 saying the directory cannot be written (not 'restore it from a backup')",
        says=("cannot write",),
    ),
    Attack(
        "i20-13-think-bomb",
        "issue 20 item 13",
        "the agent replies '<think>' x 60,000 (420 KB) with --timeout 5",
        think_bomb,
        "the conversation ends and the run finishes within 90 s (it took minutes)",
        rc=0,
        check=within(90, stored_one()),
    ),
    Attack(
        "i20-14-config-alias-bomb",
        "issue 20 item 14",
        "a YAML config whose agent_args is an alias bomb",
        config_alias_bomb,
        "exit 2 within 60 s naming the expansion",
        says=("values", "aliases"),
        check=within(60),
    ),
    Attack(
        "i20-14-variants-mapping-bomb",
        "issue 20 item 14",
        "a variants file whose 'variants:' is a mapping bomb",
        variants_mapping_bomb,
        "exit 2 within 60 s naming the expansion",
        says=("values",),
        check=within(60),
    ),
    Attack(
        "i20-15-huge-trials",
        "issue 20 item 15",
        "run --dry-run --trials 100000000",
        huge_trials,
        "exit 2 naming trials, no plan built",
        says=("trials",),
        check=within(60),
    ),
    Attack(
        "i20-16-gzip-bomb-litellm",
        "issue 20 item 16",
        "a 100 KB gzip reply inflating to 100 MB on the litellm transport",
        gzip_bomb_litellm,
        "the reply ends at the size limit, counted inflated: llm_error",
        rc=0,
        check=llm_error_saying("larger than"),
    ),
    Attack(
        "i20-17-markup-in-variant",
        "issue 20 item 17",
        "a variant named '[/x]' (rich markup) in an error message",
        markup_variant,
        "exit 2 quoting the name as written",
        says=("[/x]",),
    ),
    Attack(
        "i20-18-lone-surrogate",
        "issue 20 item 18",
        "a reply holding a lone surrogate (\\ud800)",
        lone_surrogate,
        "report, report --json and export of the run work (the surrogate stored as U+FFFD)",
        rc=0,
        check=still_reportable,
    ),
    Attack(
        "i20-19-long-out-name",
        "issue 20 item 19",
        "run --out with a 300-character name",
        long_out_name,
        "exit 2 saying the name is too long",
        says=("too long",),
    ),
    Attack(
        "i20-19-export-to-directory",
        "issue 20 item 19",
        "export --out DIRECTORY",
        export_to_directory,
        "exit 2 saying it is a directory",
        says=("is a directory",),
    ),
    Attack(
        "i20-19-export-to-proc",
        "issue 20 item 19",
        "export --out /proc/x/y.json",
        export_to_proc,
        "exit 2 saying it cannot be written",
        says=("cannot write",),
    ),
    Attack(
        "i20-19-report-to-existing-file",
        "issue 20 item 19",
        "report --out EXISTING_FILE",
        report_to_existing_file,
        "exit 2, the file untouched",
        says=("is a file",),
        check=file_untouched,
    ),
    Attack(
        "i20-19-report-bad-judge-url",
        "issue 20 item 19",
        "report --judge-base-url 'http://[::1'",
        report_bad_judge_url,
        "exit 2 saying the URL is not usable",
        says=("--judge-base-url", "not a usable base URL"),
    ),
    Attack(
        "i24-02-echo-40kb",
        "issue 24 item 2",
        "the customer echoes 40 KB agent turns (the echo rule was quadratic)",
        echo_30kb,
        "the run finishes within 90 s (minutes before) and the echo is still flagged",
        rc=0,
        check=within(90, echo_flagged),
    ),
    Attack(
        "i24-03-config-dev-zero",
        "issue 24 item 3",
        "run --config /dev/zero",
        config_dev_zero,
        "exit 2 at once: not a regular file",
        says=("not a regular file",),
        check=within(60),
    ),
    Attack(
        "i24-03-variants-dev-zero",
        "issue 24 item 3",
        "run --variants-file /dev/zero",
        variants_dev_zero,
        "exit 2 at once: not a regular file",
        says=("not a regular file",),
        check=within(60),
    ),
    Attack(
        "i24-03-config-fifo",
        "issue 24 item 3",
        "a FIFO as --config (nothing ever writes to it)",
        config_fifo,
        "exit 2 at once instead of blocking forever",
        says=("not a regular file",),
        check=within(60),
    ),
    Attack(
        "i24-03-deep-agent-args",
        "issue 24 item 3",
        "--agent-args nested 5,000 deep",
        deep_agent_args,
        "exit 2 naming the nesting",
        says=("agent_args", "nested too deep"),
    ),
    Attack(
        "i24-03-duplicate-yaml-key",
        "issue 24 item 3",
        "a YAML config giving 'trials' twice",
        duplicate_yaml_key,
        "exit 2 naming the key (as TOML does)",
        says=("trials", "twice"),
    ),
    Attack(
        "i24-04-import-huge-trial",
        "issue 24 item 4",
        "a tau2 Results file with trial 10^20",
        crafted_import(set_sim("trial", 10**20)),
        "exit 2 naming the simulation's trial; nothing imported",
        says=("simulation 0: trial",),
        check=nothing_imported,
    ),
    Attack(
        "i24-04-import-huge-seed",
        "issue 24 item 4",
        "a tau2 Results file with seed 10^20",
        crafted_import(set_sim("seed", 10**20)),
        "exit 2 naming the seed; nothing imported",
        says=("simulation 0: seed",),
        check=nothing_imported,
    ),
    Attack(
        "i24-04-import-num-trials",
        "issue 24 item 4",
        "a tau2 Results file with num_trials 10^9",
        crafted_import(set_num_trials),
        "exit 2 naming num_trials; nothing imported",
        says=("num_trials",),
        check=nothing_imported,
    ),
    Attack(
        "i24-04-import-nan-reward",
        "issue 24 item 4; issue 18 point 7",
        "a tau2 Results file with a NaN reward",
        crafted_import(set_reward(math.nan)),
        "imported, the conversation excluded with the reason stated; report and summary work",
        rc=0,
        check=excluded_with_reason,
    ),
    Attack(
        "i24-04-import-infinite-reward",
        "issue 24 item 4; issue 18 point 7",
        "a tau2 Results file with an Infinity reward",
        crafted_import(set_reward(math.inf)),
        "imported, the conversation excluded with the reason stated; report and summary work",
        rc=0,
        check=excluded_with_reason,
    ),
    Attack(
        "i24-06-power-huge-tasks",
        "issue 24 item 6",
        "power --tasks 99999999999999999999",
        power_huge_tasks,
        "exit 2 naming --tasks",
        says=("--tasks",),
    ),
    Attack(
        "i24-06-power-one-conversation-pilot",
        "issue 24 item 6",
        "power --pilot on a run of one conversation",
        power_one_conversation_pilot,
        "exit 2 explaining the pilot cannot estimate success (no option blamed)",
        says=("pilot",),
        check=names_no_option_not_given,
    ),
    Attack(
        "i24-06-ray-local-start-fails",
        "issue 24 item 6",
        "run --executor ray when the local Ray node cannot start",
        ray_local_start_fails,
        "exit 2 naming Ray and what to do; summary and manifest written",
        says=("could not start a local Ray instance", "--executor process"),
        check=summary_and_manifest_closed,
    ),
    Attack(
        "i24-06-ray-unreachable",
        "issue 24 item 6",
        "run --executor ray when the Ray cluster cannot be reached",
        ray_unreachable,
        "exit 2 naming Ray and what to do; summary and manifest written",
        says=("--executor ray", "--executor process"),
        check=summary_and_manifest_closed,
    ),
]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    yield {"dir": tmp_path_factory.mktemp("attacks-shared")}


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.id for a in ATTACKS])
def test_attack(attack: Attack, tmp_path: Path, shared: dict[str, Any]) -> None:
    ctx = Ctx(tmp_path, shared)
    try:
        done = attack.reproduce(ctx)
        explain = f"{attack.id} ({attack.item}): {attack.holds}\nexit {done.rc}\n{done.err[-3000:]}"
        assert "Traceback" not in done.err, explain
        assert done.rc == attack.rc, explain
        missing = [w for w in attack.says if w not in done.text]
        assert not missing, f"{missing} not in the message; {explain}"
        if attack.check is not None:
            attack.check(ctx, done)
    finally:
        for stop in reversed(ctx.cleanups):
            stop()


def test_table_rows_are_unique_and_described() -> None:
    ids = [a.id for a in ATTACKS]
    assert len(ids) == len(set(ids))
    assert all(a.item and a.what and a.holds for a in ATTACKS)
